"""Main-content extraction with trafilatura (or Resiliparse), RefinedWeb style (paper section 3.1 / G.1).

RefinedWeb extracts text from raw HTML (not Common Crawl's WET files, which keep menus and
boilerplate) with trafilatura tuned for precision, without comments or tables; then it caps runs
of new lines at two and removes URLs from the text.

Per row: decode the HTTP body (BOM, then the HTTP ``charset``, then ``<meta charset>``, then
UTF-8, then damaged UTF-8 if mostly valid, then a charset-normalizer guess, finally UTF-8 with
replacement characters), extract, post-process. The ``html`` column is replaced by nulls for
*every* row (kept or removed) so that no shard carries raw HTML past this stage; the column
itself stays so the schema is stable.

Reasons: ``empty_html``, ``html_too_large`` (metric: bytes), ``undecodable`` (metric: share of
replacement/control characters), ``extraction_timeout`` (metric: seconds), ``extraction_failed``
(the extractor raised), ``no_text_extracted`` (metric: characters left).

Backends (``backend=``): ``"trafilatura"`` (default, what RefinedWeb used) or ``"resiliparse"``
(``resiliparse.extract.html2text.extract_plain_text(main_content=True)``, a Rust DOM heuristic,
~10x faster but with less precise boilerplate removal: see docs/benchmarks.md, "Extraction
backends"). Everything around the HTML->text call (decoding, size limits, reasons, timeout, URL
removal, new-line capping) is shared. ``favor_precision``, ``fast`` and ``include_tables`` are
trafilatura's options; Resiliparse honours ``include_comments`` only. It keeps tables: it has no
table-aware mode, and skipping every ``<table>`` empties layout-table pages (measured on
trafilatura's evaluation set: -2.3 points of wanted snippets for -0.8 points of leaked boilerplate).

Time limit: one pathological page must not stall a shard. In the main thread a ``SIGALRM``
interval timer interrupts trafilatura after ``timeout_s``. Signals can only be handled by the
main thread, so when ``process`` runs elsewhere (e.g. a threaded executor or a Ray actor with
concurrency) there is no interruption: the worst case is then bounded by ``max_html_bytes`` only,
and documents that overrun are kept (their text is already there). Note that a signal is
handled between Python bytecodes: a single long C call inside lxml finishes before the timer
fires, which ``max_html_bytes`` also bounds. Resiliparse's extraction is one such native call:
a page that overruns is still removed as ``extraction_timeout`` (the handler runs as soon as the
call returns) but the time is not cut short.
"""

from __future__ import annotations

import codecs
import logging
import re
import signal
import threading
import time
import zlib
from collections.abc import Callable
from types import FrameType
from typing import Any, Literal

import pyarrow as pa

from refinery.stages.base import Stage, with_decision

# BOMs win over any declaration (WHATWG encoding sniffing)
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_HTTP_CHARSET = re.compile(r"charset\s*=\s*[\"']?\s*([\w.:\-]+)", re.IGNORECASE)
# covers <meta charset="x"> and <meta http-equiv="Content-Type" content="text/html; charset=x">
_META_CHARSET = re.compile(rb"<meta[^>]{0,512}?charset\s*=\s*[\"']?\s*([\w.:\-]+)", re.IGNORECASE)
_META_SCAN_BYTES = 4096
# labels that browsers map to a superset; decoding with the superset loses nothing (WHATWG)
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
    "ascii": "cp1252", "us-ascii": "cp1252", "l1": "cp1252",
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030",
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932",
    "euc-kr": "cp949", "ks_c_5601-1987": "cp949",
    "tis-620": "cp874", "iso-8859-11": "cp874",
    # a meta tag cannot really declare UTF-16 (the tag itself would be unreadable): WHATWG says utf-8
    "utf-16": "utf-8", "utf-16le": "utf-8", "utf-16be": "utf-8",
}
# characters that do not occur in real text: replacement char and C0 controls other than whitespace
_BAD_CHARS = re.compile("[\ufffd\x00-\x08\x0e-\x1f]")
_BAD_SAMPLE_CHARS = 100_000
_MAX_BAD_FRAC = 0.05

# RefinedWeb post-processing: URLs removed (with one leading space so "see URL here" reads
# "see here"), then at most one blank line in a row
# (a URL's trailing "." or "," is sentence punctuation and stays)
_URL = re.compile(r"[ \t]?(?:\b(?:https?|ftp)://|\bwww\.)[^\s<>\"'\])]*[^\s<>\"'\]).,;:!?]", re.IGNORECASE)
_BLANK_RUNS = re.compile(r"\n(?:[ \t]*\n){2,}")


class _ExtractionTimeout(BaseException):
    """Raised by the SIGALRM handler. A BaseException so trafilatura's ``except Exception``
    blocks cannot swallow it."""


def _normalize_charset(label: str) -> str | None:
    label = label.strip().strip("\"'").lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _maybe_gunzip(body: bytes, limit: int) -> bytes:
    """Bodies still carrying HTTP gzip/deflate encoding (some WARC writers keep it): inflate at
    most ``limit + 1`` bytes so a decompression bomb ends as ``html_too_large``."""
    if body[:2] == b"\x1f\x8b":
        wbits = 16 + zlib.MAX_WBITS
    elif body[:1] == b"\x78" and len(body) > 1 and (body[0] * 256 + body[1]) % 31 == 0:
        wbits = zlib.MAX_WBITS
    else:
        return body
    try:
        return zlib.decompressobj(wbits).decompress(body, limit + 1)
    except zlib.error:
        return body


def decode_html(body: bytes, content_type: str | None) -> tuple[str, float]:
    """Decode an HTTP body to text; returns (text, share of bad characters in its first 100k)."""
    candidates: list[str] = []
    for bom, codec in _BOMS:
        if body.startswith(bom):
            candidates.append(codec)
            break
    if content_type:
        m = _HTTP_CHARSET.search(content_type)
        if m and (codec := _normalize_charset(m.group(1))):
            candidates.append(codec)
    m = _META_CHARSET.search(body, 0, _META_SCAN_BYTES)
    if m and (codec := _normalize_charset(m.group(1).decode("ascii", "ignore"))):
        candidates.append(codec)
    candidates.append("utf-8")
    text = None
    seen: set[str] = set()
    for codec in candidates:
        if codec in seen:
            continue
        seen.add(codec)
        try:
            text = body.decode(codec)
            break
        except (UnicodeDecodeError, LookupError):
            continue
    if text is None:
        # UTF-8 with a few damaged bytes (truncation, one pasted latin-1 character) is far more
        # common than a single-byte page that happens to contain valid UTF-8 sequences: keep
        # UTF-8 when its valid non-ASCII characters outnumber the broken ones
        replaced = body.decode("utf-8", errors="replace")
        broken = replaced.count("\ufffd")
        non_ascii = len(replaced) - len(replaced.encode("ascii", "ignore")) - broken
        if non_ascii > broken:
            text = replaced
    if text is None:
        text = _guess_decode(body)
    if text is None:  # destructive fallback: the declared (or UTF-8) codec with replacements
        text = body.decode(candidates[0], errors="replace")
    sample = text[:_BAD_SAMPLE_CHARS]
    bad = len(_BAD_CHARS.findall(sample)) / len(sample) if sample else 0.0
    return text, bad


def _guess_decode(body: bytes) -> str | None:
    """Statistical guess for undeclared non-UTF-8 pages (rare; charset-normalizer ships with
    requests/trafilatura). Detection runs on head + tail only, to stay cheap on big pages."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - optional
        return None
    sample = body if len(body) <= 20_000 else body[:10_000] + body[-10_000:]
    best = from_bytes(sample).best()
    if best is None or not best.encoding:
        return None
    try:
        return body.decode(best.encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def clean_text(text: str) -> str:
    """RefinedWeb post-processing: drop URLs, cap runs of new lines at two."""
    text = _URL.sub("", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


Backend = Literal["trafilatura", "resiliparse"]
BACKENDS: tuple[str, ...] = ("trafilatura", "resiliparse")


class TrafilaturaExtractor(Stage):
    """Fill ``text`` from ``html`` with trafilatura (precision mode, no comments, no tables), or
    with Resiliparse's main-content extraction when ``backend="resiliparse"``."""

    kind = "extract"

    def __init__(
        self,
        timeout_s: float = 5.0,
        max_html_bytes: int = 2_000_000,
        min_text_chars: int = 1,
        favor_precision: bool = True,
        include_comments: bool = False,
        include_tables: bool = False,
        fast: bool = False,
        backend: Backend = "trafilatura",
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if backend not in BACKENDS:
            raise ValueError(f"extract backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.backend = backend
        # why: one pathological page must not stall a shard; 0 disables the limit
        self.timeout_s = float(timeout_s)
        # why: huge pages are rarely prose and dominate extraction time
        self.max_html_bytes = int(max_html_bytes)
        self.min_text_chars = int(min_text_chars)
        # RefinedWeb favours precision and drops comments/tables; exposed for experiments
        self.favor_precision = favor_precision
        self.include_comments = include_comments
        self.include_tables = include_tables
        # fast=True skips trafilatura's readability/justext fallbacks: ~2x faster, a bit less recall
        self.fast = fast

    def _extract_fn(self) -> Callable[[str, str | None], str | None]:
        """``fn(html, url) -> text or None`` for the configured backend (imported on first use)."""
        fn = getattr(self, "_lazy_extract", None)
        if fn is None:
            fn = self._lazy_extract = (
                self._resiliparse_fn() if self.backend == "resiliparse" else self._trafilatura_fn()
            )
        return fn

    def _trafilatura_fn(self) -> Callable[[str, str | None], str | None]:
        import trafilatura

        # trafilatura logs a WARNING for every page without content ("discarding data"),
        # i.e. millions of lines per crawl; our reason column already records it. A level set
        # explicitly by the user wins.
        tlog = logging.getLogger("trafilatura")
        if tlog.level == logging.NOTSET:
            tlog.setLevel(logging.ERROR)
        kwargs: dict[str, Any] = {
            "favor_precision": self.favor_precision,
            "include_comments": self.include_comments,
            "include_tables": self.include_tables,
            "fast": self.fast,
            "output_format": "txt",
            "with_metadata": False,
        }
        extract = trafilatura.extract
        return lambda html, url: extract(html, url=url, **kwargs)

    def _resiliparse_fn(self) -> Callable[[str, str | None], str | None]:
        try:
            from resiliparse.extract.html2text import extract_plain_text
        except ImportError as exc:  # optional dependency
            raise ImportError(
                "extract backend 'resiliparse' needs the resiliparse package: pip install 'resiliparse>=2.0'"
            ) from exc
        # closest to trafilatura's txt output: block structure kept, no alt texts, link targets,
        # form fields or <noscript> (trafilatura drops them too)
        kwargs: dict[str, Any] = {
            "preserve_formatting": True,
            "main_content": True,
            "comments": self.include_comments,
            "alt_texts": False,
            "links": False,
            "form_fields": False,
            "noscript": False,
        }
        return lambda html, url: extract_plain_text(html, **kwargs)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        extract = self._extract_fn()
        n = batch.num_rows
        if "html" not in batch.schema.names:
            raise ValueError(
                "extract needs an 'html' column (WARC input); for documents that already have text "
                "(Parquet/JSONL input) leave the extract stage out of the config"
            )
        htmls = batch.column("html")
        prior_texts = batch.column("text").to_pylist() if "text" in batch.schema.names else [None] * n
        ctypes = batch.column("content_type").to_pylist() if "content_type" in batch.schema.names else [None] * n
        urls = batch.column("url").to_pylist() if "url" in batch.schema.names else [None] * n
        reasons: list[str | None] = [None] * n
        metrics: list[float | None] = [None] * n
        texts: list[str | None] = [None] * n

        use_alarm = (
            self.timeout_s > 0
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
        )
        fired = False

        def on_alarm(signum: int, frame: FrameType | None) -> None:
            nonlocal fired
            fired = True
            raise _ExtractionTimeout()

        if use_alarm:
            previous_handler = signal.signal(signal.SIGALRM, on_alarm)
            previous_timer = signal.setitimer(signal.ITIMER_REAL, 0)
            batch_start = time.monotonic()
        try:
            for i in range(n):
                scalar = htmls[i]
                body = scalar.as_py() if scalar.is_valid else None
                if body is None and prior_texts[i]:
                    texts[i] = prior_texts[i]  # already-extracted text (JSONL/Parquet input): keep as is
                    continue
                if not body or not body.strip():
                    reasons[i] = "empty_html"
                    continue
                if len(body) > self.max_html_bytes:
                    reasons[i], metrics[i] = "html_too_large", float(len(body))
                    continue
                body = _maybe_gunzip(body, self.max_html_bytes)
                if len(body) > self.max_html_bytes:
                    reasons[i], metrics[i] = "html_too_large", float(len(body))
                    continue
                html, bad = decode_html(body, ctypes[i])
                if bad > _MAX_BAD_FRAC:
                    reasons[i], metrics[i] = "undecodable", bad
                    continue
                fired = False
                start = time.monotonic()
                try:
                    try:
                        if use_alarm:
                            signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
                        out = extract(html, urls[i])
                    finally:
                        if use_alarm:
                            signal.setitimer(signal.ITIMER_REAL, 0)
                except _ExtractionTimeout:
                    out = None
                except Exception:  # noqa: BLE001 - any extractor/parser failure removes just this doc
                    if not fired:
                        reasons[i] = "extraction_failed"
                        continue
                    out = None
                if fired:  # also when a bare ``except:`` somewhere swallowed our exception
                    reasons[i], metrics[i] = "extraction_timeout", time.monotonic() - start
                    continue
                text = clean_text(out) if out else ""
                if len(text) < max(self.min_text_chars, 1):
                    reasons[i], metrics[i] = "no_text_extracted", float(len(text))
                    continue
                texts[i] = text
        finally:
            if use_alarm:
                signal.signal(signal.SIGALRM, previous_handler)
                if previous_timer[0] > 0:  # re-arm an outer timer with what is left of it
                    left = previous_timer[0] - (time.monotonic() - batch_start)
                    signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), previous_timer[1])

        html_type = batch.schema.field("html").type
        names = batch.schema.names
        text_type = batch.schema.field("text").type if "text" in names else pa.string()
        return with_decision(
            batch,
            reasons,
            metrics,
            extra={"text": pa.array(texts, type=text_type), "html": pa.nulls(n, type=html_type)},
        )

    def metric_columns(self) -> list[str]:
        return []  # only rewrites text/html; the removal metric lives in the _metric column
