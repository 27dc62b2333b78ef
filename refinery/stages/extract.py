"""Main-content extraction with trafilatura (or Resiliparse), RefinedWeb style (paper section 3.1 / G.1).

RefinedWeb extracts text from raw HTML (not Common Crawl's WET files, which keep menus and
boilerplate) with trafilatura tuned for precision, without comments or tables; then it caps runs
of new lines at two and removes URLs from the text.

Our defaults differ (issue 13, docs/extraction.md): precision mode *without* tables empties
table-layout pages (forums, catalogues: half of older gold pages) and cuts in-article tables, so
the first pass keeps tables and skips trafilatura's readability/justext comparison (``fast``);
when it returns little (< ``fallback_below_chars``), a second pass in trafilatura's recall mode
(``fallback_mode``) is kept if it is more than ``fallback_min_gain`` times longer; when both are
empty, trafilatura's ``baseline``. The path that produced each text is recorded in the
``extract_path`` column (``precision``/``balanced``, ``fallback``, ``baseline``, ``main_content``
for Resiliparse, ``input`` for text that arrived extracted) and as a number in ``extract_pass``
(1, 2, 3; 0 = input) so the stats histogram counts them. ``quote_lines`` names the lines of the
text that came from a ``<blockquote>`` (trafilatura with ``join_source_lines``; null otherwise), for
``gopher_repetition``, and ``code_lines`` those that are code (a ``<pre>``'s or ``<code>``'s text
alone on its line), for ``line_corrections``: :func:`line_marks`, :data:`refinery.schema.QUOTE_LINES`,
:data:`refinery.schema.CODE_LINES`.

Per row: decode the HTTP body (BOM, then the HTTP ``charset``, then ``<meta charset>``, then
UTF-8, then damaged UTF-8 if mostly valid, then a charset-normalizer guess, finally UTF-8 with
replacement characters), extract, post-process. The ``html`` column is replaced by nulls for
*every* row (kept or removed) so that no shard carries raw HTML past this stage; the column
itself stays so the schema is stable.

A row with both ``text`` and ``html`` (Parquet or JSONL input) is extracted from its ``html``, like
every page: the recipe's extraction decides every document's text, whichever way the page came,
and a provider's text of unknown make does not pass unextracted. Its input text is replaced, and
is lost with the row when the html yields nothing (``no_text_extracted``); the stage counts such
rows (``input_text_replaced``, in stats.json's named counters). To keep given texts, leave
``extract`` out, or drop the ``html`` column.

Reasons: ``empty_html``, ``empty_text`` (already-extracted input whose text is empty), ``html_too_large`` (metric: bytes), ``undecodable`` (metric: share of
replacement/control characters), ``html_too_many_attributes`` (metric: attributes of the worst
tag), ``html_too_many_tags`` (metric: start tags), ``extraction_timeout`` (metric: seconds),
``extraction_failed`` (the extractor raised, or its helper process died), ``no_text_extracted``
(metric: characters left).

Backends (``backend=``): ``"trafilatura"`` (default, what RefinedWeb used), ``"resiliparse"``
(``resiliparse.extract.html2text.extract_plain_text(main_content=True)``, a C++ heuristic over a
lexbor DOM, ~5x faster than the default but with less precise boilerplate removal: see
docs/benchmarks.md, "Extraction backends") or ``"learned"`` (:mod:`refinery.extract_fast`: a
lexbor DOM cut into blocks and a fastText block classifier taught by trafilatura; a prototype,
between the two in boilerplate leakage and no faster than the default since its trafilatura calls
became lean: docs/extraction.md, "Fast learned extractor"). Everything around the HTML->text call
(decoding, size limits, reasons, timeout, URL removal, new-line capping) is shared. ``favor_precision``, ``fast`` and ``include_tables`` are
trafilatura's options; Resiliparse honours ``include_comments`` only. It keeps tables: it has no
table-aware mode, and skipping every ``<table>`` empties layout-table pages (measured on
trafilatura's evaluation set: -2.3 points of wanted snippets for -0.8 points of leaked boilerplate).

Time limit: one pathological page must not stall a shard. With ``timeout_s > 0`` (default 5)
every page is extracted in a helper process (``_extract_helper.py``: the backend imported once,
kept warm, shared by the stages of one process with the same settings); the stage waits at most
``timeout_s`` for its answer, then kills it (SIGKILL) and removes the page as
``extraction_timeout``. That bounds time spent inside lxml's or Resiliparse's native code, which no
signal can interrupt, from any thread. A fresh helper is started at once for the next page (its
start-up, ~0.2-1 s, is not counted against that page). A helper that crashes (segfault, OOM kill)
costs only its page (``extraction_failed``). ``timeout_s: 0`` extracts in this process, without
any limit. The helper calls trafilatura through a leaner path with the same text (C element-class
lookup, settings built once, scripts/styles cut before parsing, memoised pruning, its XPaths run as
Python selections of the same elements: docs/extraction.md, "CPU per page"). Before that, a cheap
pre-screen (:func:`pathological_html`, ``prescreen=False`` turns it off) removes pages shaped to blow up the parser (thousands of attributes in one tag, 100k+ tags)
in milliseconds instead of letting each burn ``timeout_s``.
"""

from __future__ import annotations

import atexit
import codecs
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Collection
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from refinery import allocator
from refinery.allocator import Allocator
from refinery.stages import _extract_helper, _trafilatura_rules, text_urls
from refinery.schema import CODE_LINES, LINE_MARKS_TYPE, QUOTE_LINES
from refinery.stages.base import Stage, with_decision
from refinery.stages.table_text import dissolve_layout_rows

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
BAD_SAMPLE_CHARS = 100_000
#: U+FFFD in UTF-8: what a decoder puts for bytes it cannot read
REPLACEMENT_UTF8 = "\ufffd".encode()
_MAX_BAD_FRAC = 0.05

# RefinedWeb post-processing: URLs removed (with one leading space so "see URL here" reads
# "see here"), then at most one blank line in a row
# (a URL's trailing "." or "," is sentence punctuation and stays); what ends a URL:
# refinery.stages.text_urls.URL_STOP
_URL_STOP = text_urls.URL_STOP
_url_pattern = text_urls.url_pattern


#: a URL with the space before it
_URL = re.compile(rf"[ \t]?{_url_pattern(_URL_STOP)}", re.IGNORECASE)
#: a URL starting a line with the spaces after it (searched in "\n" + text: a literal start): the
#: line's text starts after them ("http://wakenews.net/radio.html Wake News Radio" read " Wake
#: News Radio", _URL taking the space before a URL only)
_LINE_START_URL = re.compile(rf"\n(?:(?:https?|ftp)://|www\.)[^{_URL_STOP}]*[^{_URL_STOP}.,;:!?][ \t]+",
                             re.IGNORECASE)
#: the same on a line starting with marks (:func:`line_marks`): the marks stay, the URL and its
#: spaces go, as from the line without them
_MARKED_LINE_START_URL = re.compile(rf"\n([{_extract_helper.LINE_MARKS}]*)(?:(?:https?|ftp)://|www\.)"
                                    rf"[^{_URL_STOP}]*[^{_URL_STOP}.,;:!?][ \t]+", re.IGNORECASE)
#: :data:`_URL` in a marked text: the marks between the space and the URL stay (inline code holding
#: a URL: "e.g. <code>http://...</code>"), a mark ends it (a code run's end mark follows a URL)
_MARKED_URL = re.compile(rf"[ \t]?([{_extract_helper.LINE_MARKS}]*)"
                         rf"{_url_pattern(_URL_STOP + _extract_helper.LINE_MARKS)}", re.IGNORECASE)
_BLANK_RUNS = re.compile(r"\n(?:[ \t]*\n){2,}")
#: a list item's marker on a line of its own (trafilatura writes "- " and then the item's text
#: from a new line when the item's text starts with the page source's line break)
#: (searched in "\n" + text: a pattern starting with a literal is ~7x faster than a ^ in MULTILINE)
_BARE_MARKER = re.compile(r"\n[ \t\u00a0]*-[ \t\u00a0]*(?:\n|\Z)")
#: what a line's end loses: trailing spaces, tabs and no-break spaces (a whitespace-only line empties)
_TRAILING_SPACE = " \t\u00a0"
_WWW = re.compile(r"[wW][wW][wW]\.")  # what _URL's case-insensitive "www\." can match


_HELPER_SCRIPT = str(Path(__file__).with_name("_extract_helper.py"))
#: seconds a fresh helper process may take to import its backend and say it is ready
HELPER_START_TIMEOUT_S = 120.0


class ExtractionHelperError(RuntimeError):
    """The extraction helper process could not be started (not a problem of any one page)."""


class _Helper:
    """One extraction helper process (``_extract_helper.py``) and the socket to it."""

    def __init__(self, config: dict[str, Any]) -> None:
        ours, theirs = socket.socketpair()
        try:
            config = {**config, "pdeathsig": threading.current_thread() is threading.main_thread()}
            self.proc = subprocess.Popen(
                [sys.executable, _HELPER_SCRIPT, str(theirs.fileno()), str(os.getpid()), json.dumps(config)],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                env=allocator.helper_environment(config.get("allocator", "system")),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        self.ready = False
        self.busy = False  # a request sent, its answer not read: the protocol is out of step

    def wait_ready(self) -> None:
        if self.ready:
            return
        try:
            if not self.conn.poll(HELPER_START_TIMEOUT_S):
                raise ExtractionHelperError(f"extraction helper not ready after {HELPER_START_TIMEOUT_S:.0f} s")
            status, value = self.conn.recv()
        except (EOFError, OSError) as exc:
            self.close(kill=True)
            code = self.proc.returncode
            raise ExtractionHelperError(f"extraction helper exited at start-up (exit code {code})") from exc
        except ExtractionHelperError:
            self.close(kill=True)
            raise
        if status != "ready":
            self.close(kill=True)
            if value.startswith(("ImportError", "ModuleNotFoundError")):
                raise ImportError(value)
            raise ExtractionHelperError(f"extraction helper failed to start: {value}")
        self.ready = True

    def extract(self, html: str, url: str | None, timeout_s: float) -> tuple[str, Any]:
        """``("ok", text)``, ``("failed", message)``, ``("timeout", None)`` (the helper was
        killed) or ``("died", exit code)`` (it crashed: segfault, OOM kill...)."""
        try:
            self.busy = True
            self.conn.send((html, url))
            if not self.conn.poll(timeout_s):
                self.close(kill=True)
                return "timeout", None
            reply = self.conn.recv()
            self.busy = False
            return reply
        except (EOFError, OSError):
            self.close(kill=True)
            return "died", self.proc.returncode

    @property
    def alive(self) -> bool:
        return not self.busy and not self.conn.closed and self.proc.poll() is None

    def close(self, kill: bool = False) -> None:
        if not self.conn.closed:
            self.conn.close()  # an idle helper exits on EOF
        # a helper not yet ready is still importing: it would only meet the closed socket (a
        # BrokenPipeError traceback on the run's stderr), and it has nothing to finish
        if (kill or not self.ready) and self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=None if kill else 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _HelperPool:
    """Idle helpers of this process, by extractor configuration: stage objects with the same
    settings (e.g. one per shard) share one warm helper; each batch takes one for itself."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.idle: dict[str, list[_Helper]] = {}

    def acquire(self, key: str) -> _Helper:
        with self.lock:
            if self.pid != os.getpid():  # a forked child: the parent's helpers are not ours
                self.pid, self.idle = os.getpid(), {}
            helpers = self.idle.get(key)
            while helpers:
                helper = helpers.pop()
                if helper.alive:
                    return helper
                helper.close()
        return _Helper(json.loads(key))

    def start_idle(self, key: str) -> None:
        """Start a helper for ``key`` unless one is idle: it imports its backend in the
        background and waits in the pool (:meth:`TrafilaturaExtractor.warm_up`)."""
        with self.lock:
            if self.pid != os.getpid():
                self.pid, self.idle = os.getpid(), {}
            if any(h.alive for h in self.idle.get(key, [])):
                return
        self.release(key, _Helper(json.loads(key)))

    def release(self, key: str, helper: _Helper) -> None:
        if not helper.alive:
            helper.close(kill=True)
            return
        with self.lock:
            if self.pid == os.getpid() and len(self.idle.setdefault(key, [])) < 4:
                self.idle[key].append(helper)
                return
        helper.close()

    def close_all(self) -> None:
        with self.lock:
            helpers = [h for hs in self.idle.values() for h in hs] if self.pid == os.getpid() else []
            self.idle = {}
        for helper in helpers:
            helper.close()


_HELPERS = _HelperPool()
atexit.register(_HELPERS.close_all)


def _normalize_charset(label: str, http: bool = False) -> str | None:
    label = label.strip().strip("\"'").lower()
    # a meta tag cannot really declare UTF-16 (its own bytes would be unreadable), an HTTP
    # header can: WHATWG honours it there (found by adversarial testing: such pages were removed
    # as undecodable)
    if not (http and label.startswith("utf-16")):
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


def codec_candidates(body: bytes, content_type: str | None) -> list[str]:
    """The codecs :func:`decode_html` tries, in order: the BOM's, the HTTP header's, the
    ``<meta>`` tag's, then UTF-8 (normalized Python codec names)."""
    candidates: list[str] = []
    for bom, codec in _BOMS:
        if body.startswith(bom):
            candidates.append(codec)
            break
    if content_type:
        m = _HTTP_CHARSET.search(content_type)
        if m and (codec := _normalize_charset(m.group(1), http=True)):
            candidates.append(codec)
    m = _META_CHARSET.search(body, 0, _META_SCAN_BYTES)
    if m and (codec := _normalize_charset(m.group(1).decode("ascii", "ignore"))):
        candidates.append(codec)
    candidates.append("utf-8")
    return candidates


def decode_html(body: bytes, content_type: str | None) -> tuple[str, float]:
    """Decode an HTTP body to text; returns (text, share of bad characters in its first 100k)."""
    candidates = codec_candidates(body, content_type)
    text = None
    seen: set[str] = set()
    for codec in candidates:
        if codec in seen:
            continue
        seen.add(codec)
        if codec.startswith("utf-16") and body.count(b"\x00") * 8 < len(body):
            continue  # declared UTF-16 but no NUL bytes between the ASCII of its markup: it is not
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
    sample = text[:BAD_SAMPLE_CHARS]
    bad = _bad_chars(sample) / len(sample) if sample else 0.0
    return text, bad


def _bad_chars(sample: str) -> int:
    """``len(_BAD_CHARS.findall(sample))``, ~5x cheaper: a C0 control is one byte < 0x20 in UTF-8
    and no other character's encoding holds such a byte, so bytes.translate counts them in C."""
    return bad_chars_utf8(sample.encode("utf-8", "surrogatepass"))


def bad_chars_utf8(raw: bytes) -> int:
    """:func:`_bad_chars` of UTF-8 bytes: C0 control bytes plus encoded replacement characters."""
    # _BAD_CHARS' C0 controls are exactly the UTF-8 bytes under 0x20 but 0x09-0x0D (\t \n \v \f
    # \r; byte - 9 wraps past 4 below them), counted by numpy ~2x cheaper than bytes.translate
    view = np.frombuffer(raw, dtype=np.uint8)
    c0 = int(np.count_nonzero(view < 0x20)) - int(np.count_nonzero((view - np.uint8(9)) < 5))
    # U+FFFD starts with the byte 0xEF, absent from ~92% of real pages: a memchr-fast test first
    return c0 + (raw.count(REPLACEMENT_UTF8) if b"\xef" in raw else 0)


_NON_ASCII_BYTE = re.compile(rb"[\x80-\xff]")


def _guess_decode(body: bytes) -> str | None:
    """Statistical guess for undeclared non-UTF-8 pages (charset-normalizer ships with
    requests/trafilatura), on the head and tail of big pages to stay cheap -- or, when those are
    all ASCII, on the 10 kB from the first non-ASCII byte: head and tail alone made pages whose
    accents sit in the middle look ASCII, and they went through as UTF-8 with replacement
    characters (found by adversarial testing). The first guess that decodes the whole body wins."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - optional
        return None
    sample = body if len(body) <= 20_000 else body[:10_000] + body[-10_000:]
    if sample.isascii():
        first = _NON_ASCII_BYTE.search(body)
        if first is None:
            return None
        sample = body[max(0, first.start() - 1_000): first.start() + 9_000]
    matches = [m for m in from_bytes(sample) if m.encoding]
    if matches:
        # WHATWG's default for an undeclared page is windows-1252: prefer it over another
        # single-byte guess that reads the sample no better (cp852 for German made "ü" "Ř")
        western = next((m for m in matches if m.encoding == "cp1252"), None)
        if western is not None and western.chaos <= matches[0].chaos:
            matches.insert(0, western)
    for match in matches:
        try:
            return body.decode(match.encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return None


# Pre-screen: page shapes that make the HTML parser super-linear, caught on the decoded HTML in
# ~0.3 ms per 150 KB page. lxml (libxml2) and Resiliparse's parser slow down roughly cubically
# with the attributes of one tag: 10k valueless attributes take ~0.8 s, 20k ~3.4 s, 200k would take
# hours; trafilatura needs ~60 us per element, so 200k tiny tags take ~12 s. The real pages of
# trafilatura's evaluation archive (1,032 HTML files) and the sample WARCs (84 responses) have at
# most 72 attributes in one tag and 10,126 tags: the thresholds are 14x and 10x that
# (docs/reliability.md).
# Deep nesting needs no check: libxml2 stops at depth 256 (100k nested divs take ~1 s). This is a
# fast path, not the bound: a page it misses (or an attacker evades, e.g. with "<" inside quoted
# values) is still killed at timeout_s in the helper process. Stages without that deadline use
# tokenizer_attribute_bomb_utf8 below.
MAX_ATTRIBUTES_PER_TAG = 1_000
MAX_TAGS = 100_000
# a tag with MAX_ATTRIBUTES_PER_TAG attributes spans at least 2 characters per attribute ("a "):
# only tag starts followed by that many characters without "<" are parsed
_LONG_TAG = re.compile(r"<[A-Za-z][^<]{%d}" % (2 * MAX_ATTRIBUTES_PER_TAG - 1))
_TAG_ATTRS = re.compile(
    r"""<[A-Za-z][^\s/>]*((?:\s*(?:[^\s"'<>/=]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'<>]*))?|/))*)""")
_ATTR = re.compile(r"""[^\s"'<>/=]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'<>]*))?""")
_TAG_START = re.compile(r"<[A-Za-z]")


def pathological_html(html: str) -> tuple[str, float] | None:
    """``(reason, metric)`` for a page shaped to blow up the parser, else None:
    ``html_too_many_attributes`` (metric: attributes of the worst tag) or ``html_too_many_tags``
    (metric: start tags)."""
    worst = 0
    for m in _LONG_TAG.finditer(html):
        tag = _TAG_ATTRS.match(html, m.start())
        if tag is not None and len(tag.group(1)) >= 2 * MAX_ATTRIBUTES_PER_TAG - 1:
            worst = max(worst, len(_ATTR.findall(tag.group(1))))
    if worst > MAX_ATTRIBUTES_PER_TAG:
        return "html_too_many_attributes", float(worst)
    if html.count("<") > MAX_TAGS:
        tags = len(_TAG_START.findall(html))
        if tags > MAX_TAGS:
            return "html_too_many_tags", float(tags)
    return None


#: bytes after "<" + letter that ``_LONG_TAG`` needs before the next "<"
_LONG_TAG_BYTES = 2 * MAX_ATTRIBUTES_PER_TAG
_TAG_ATTRS_BYTES = re.compile(_TAG_ATTRS.pattern.encode())
_ATTR_BYTES = re.compile(_ATTR.pattern.encode())
_ASCII_LETTERS = np.zeros(256, dtype=bool)
_ASCII_LETTERS[list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")] = True


def tag_starts(raw: bytes) -> np.ndarray:
    """Offsets of every "<" in an ASCII-compatible body (UTF-8 never has 0x3C inside a character)."""
    return np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == 0x3C)


def pathological_utf8(raw: bytes, lt: np.ndarray) -> tuple[str, float] | None:
    """:func:`pathological_html` on UTF-8 bytes without decoding them, given ``lt`` =
    :func:`tag_starts`: the tags long enough to hold ``MAX_ATTRIBUTES_PER_TAG`` attributes are
    found from the gaps between "<"s (a gap in bytes is at least as long as in characters) and
    only those are matched. Attributes are split on ASCII white space, as HTML tokenizers do."""
    worst = 0
    view = np.frombuffer(raw, dtype=np.uint8)
    if len(lt):
        gaps = np.diff(np.append(lt, len(raw))) - 1  # bytes from each "<" to the next
        long_starts = lt[gaps >= _LONG_TAG_BYTES]
        for pos in long_starts[_ASCII_LETTERS[view[long_starts + 1]]].tolist():
            tag = _TAG_ATTRS_BYTES.match(raw, pos)
            if tag is not None and len(tag.group(1)) >= _LONG_TAG_BYTES - 1:
                worst = max(worst, len(_ATTR_BYTES.findall(tag.group(1))))
    if worst > MAX_ATTRIBUTES_PER_TAG:
        return "html_too_many_attributes", float(worst)
    if len(lt) > MAX_TAGS:
        inside = lt[lt + 1 < len(raw)]
        tags = int(_ASCII_LETTERS[view[inside + 1]].sum())
        if tags > MAX_TAGS:
            return "html_too_many_tags", float(tags)
    return None


# Where an HTML tokenizer (WHATWG 13.2.5) puts a start tag's attributes, for stages that parse
# pages without the helper process's time limit (the language pre-screen). The checks above
# find tags from the gaps between "<"s and read attribute names without quotes or "<": cheap and
# exact on real pages, but an attacker hides a 40k-attribute tag from them with a quoted "<"
# every 300 attributes (lexbor then takes 6.5 s, 80k in 551 KB 32 s). To a tokenizer a name runs to
# white space, "/", ">" or "=" (quotes and "<" in it are parse errors, not ends), a value is
# quoted (anything but its quote inside) or runs to white space or ">", and a tag ends at the
# first ">" outside a quoted value.
_HTML_WS = "\t\n\f\r "
_ATTR_NAME = f"[^{_HTML_WS}/>][^{_HTML_WS}/>=]*+"
_ATTR_VALUE = f"""(?:"[^"]*+"?|'[^']*+'?|[^{_HTML_WS}>]++)"""
_ATTR_TOKEN = f"(?>{_ATTR_NAME}(?:[{_HTML_WS}]*+=[{_HTML_WS}]*+{_ATTR_VALUE}?)?+)"
_TAG_HEAD = f"</?[A-Za-z][^{_HTML_WS}/>]*+"
# possessive throughout: a tag fails where it ends, without backtracking
_WHOLE_TAG_BYTES = re.compile(f"{_TAG_HEAD}(?>[{_HTML_WS}/]*+{_ATTR_TOKEN})*+".encode())
_MANY_ATTRIBUTES_BYTES = re.compile(
    f"{_TAG_HEAD}(?>[{_HTML_WS}/]*+{_ATTR_TOKEN}){{{MAX_ATTRIBUTES_PER_TAG + 1},}}+".encode())
_HTML_WS_BYTES = np.zeros(256, dtype=bool)
_HTML_WS_BYTES[list(_HTML_WS.encode())] = True


def _opens_a_value(view: np.ndarray, quotes: np.ndarray) -> np.ndarray:
    """Whether each quote at ``quotes`` (positions > 0) follows "=", perhaps across white space
    (stepped over a few bytes at a time; a run of over 64 counts as "=")."""
    pos = quotes - 1
    before = view[pos]
    opening = before == 0x3D
    spaced = _HTML_WS_BYTES[before]
    if not spaced.any():
        return opening
    spaced_at = np.flatnonzero(spaced)  # few: step back over those only
    opening[spaced_at] = _opens_a_value_spaced(view, pos[spaced_at])
    return opening


def _opens_a_value_spaced(view: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """:func:`_opens_a_value` for quotes after white space (``pos``: the white space before each)."""
    opening = np.zeros(len(pos), dtype=bool)
    spaced = np.ones(len(pos), dtype=bool)
    for _ in range(64):
        if not spaced.any():
            return opening
        pos = np.where(spaced, pos - 1, pos)
        spaced &= pos >= 0
        before = view[np.maximum(pos, 0)]
        opening |= spaced & (before == 0x3D)
        spaced &= _HTML_WS_BYTES[before]
    return opening | spaced


def tokenizer_attribute_bomb_utf8(raw: bytes, lt: np.ndarray) -> bool:
    """Whether a tag of these UTF-8 bytes may hold more than ``MAX_ATTRIBUTES_PER_TAG``
    attributes as an HTML tokenizer reads them (``lt`` = :func:`tag_starts`), quotes and all.

    Call the bytes between two ">"s a gap. A real tag starts at its gap's first tag start:
    anything before it there (a comment, a script, an earlier tag) would have ended in a ">".
    It ends at the gap's ">" unless that ">" is inside a quoted value (then the last quote of
    its kind before it follows "="), and it spans 2 bytes per attribute. So only the first tag
    start of a long gap, or of a gap that ends at such a ">", is tokenized. A page that makes
    that cost more than a few passes over it is answered "yes" (a "yes" only costs a shortcut)."""
    view = np.frombuffer(raw, dtype=np.uint8)
    lt = lt[lt + 2 < len(view)]  # a tag start needs a letter (or "/" and a letter) after it
    if not len(lt):
        return False
    starts = lt[_ASCII_LETTERS[view[lt + 1]] | ((view[lt + 1] == 0x2F) & _ASCII_LETTERS[view[lt + 2]])]
    if not len(starts):
        return False
    # one scan for ">" and both quotes (numpy's nonzero costs more than its comparisons)
    mask = view == 0x3E
    mask |= view == 0x22
    mask |= view == 0x27
    marks = np.flatnonzero(mask)
    kinds = view[marks]
    is_gt = kinds == 0x3E
    gt = marks[is_gt]
    stretch = np.searchsorted(gt, starts)  # index of the ">" that ends each start's gap
    first = np.ones(len(starts), dtype=bool)
    first[1:] = stretch[1:] != stretch[:-1]
    ends = np.append(gt, len(raw))[stretch]
    wanted = ends - starts >= _LONG_TAG_BYTES
    closed = np.flatnonzero(first & (stretch < len(gt)))  # first starts of gaps that end at a ">"
    if len(closed):
        # the last quote of each kind before each of those ">"s (-1: none), both kinds at once
        ends_at = stretch[closed]
        last = np.concatenate([np.maximum.accumulate(np.where(kinds == quote, marks, -1))[is_gt][ends_at]
                               for quote in (0x22, 0x27)])
        # a quote before the tag's start cannot open one of its values (most end tags, <p>...)
        has = np.flatnonzero(last > np.tile(starts[closed], 2))
        quoted = has[_opens_a_value(view, last[has])] % len(closed)
        wanted[closed[quoted]] = True
    budget = 4 * len(raw) + 100_000  # bytes tokenized before the page counts as built to do this
    for pos in starts[first & wanted].tolist():
        end = _WHOLE_TAG_BYTES.match(raw, pos).end()  # type: ignore[union-attr] - always matches
        budget -= end - pos
        if budget < 0 or (end - pos >= _LONG_TAG_BYTES and _MANY_ATTRIBUTES_BYTES.match(raw, pos) is not None):
            return True
    return False


def tokenizer_attribute_bomb(html: str) -> bool:
    """:func:`tokenizer_attribute_bomb_utf8` of decoded HTML (its UTF-8 bytes: the tokenizer's
    characters are ASCII, and ASCII bytes never occur inside a UTF-8 character)."""
    raw = html.encode("utf-8", "replace")
    return tokenizer_attribute_bomb_utf8(raw, tag_starts(raw))


def clean_text(text: str, needed_urls: bool = False, url_lines: Collection[int] = ()) -> str:
    """RefinedWeb post-processing: drop URLs (with a space before them, or after them at a line's
    start), cap runs of new lines at two. With ``needed_urls`` (the stage's ``keep_needed_urls``)
    a URL whose removal would leave a hole in its sentence stays and a bracketed one goes with its
    brackets (:mod:`refinery.stages.text_urls`), and the lines numbered in ``url_lines`` (code)
    keep their URLs. Also: a list marker
    left on a line of its own is joined to its item's text (an empty item's marker is dropped),
    and trailing spaces, tabs and no-break spaces are cut from every line (a line of only those
    empties). That is the page source's indentation: every bare "-" line was a duplicate line for
    Gopher's ``dup_line_frac``, which removed a real publication list for them. Table rows that
    are page layout (spacer rows, a cell of prose, a lone cell) are written as the text they hold
    (:mod:`refinery.stages.table_text`)."""
    # every URL this drops holds "://" or "www." in some case: ~8x cheaper to look for those first
    # (the URL regex, case-insensitive and without a literal start, steps through every character)
    if needed_urls:
        text = text_urls.cut_urls(text, url_lines)
    elif "://" in text or _WWW.search(text) is not None:
        text = _URL.sub("", _LINE_START_URL.sub("\n", "\n" + text)[1:])
    return _clean_after_urls(text)


def _clean_after_urls(text: str) -> str:
    """:func:`clean_text` after the URLs are cut."""
    if _BARE_MARKER.search("\n" + text) is not None:
        text = join_bare_list_markers(text)
    text = dissolve_layout_rows(text)
    # ~10 us per document: cheaper than a regex, which has no literal to start from
    text = "\n".join(line.rstrip(_TRAILING_SPACE) for line in text.split("\n"))
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


def line_marks(text: str, marked: str, needed_urls: bool = False) -> tuple[list[int] | None, list[int] | None]:
    """The numbers (from 0) of the lines of ``text`` (an extract after :func:`clean_text`) that came
    from a ``<blockquote>`` and of those that are code (a ``<pre>``'s or ``<code>``'s text alone),
    each None for none, read from ``marked`` (the extract before it, its quotes' lines carrying
    :data:`~refinery.stages._extract_helper.QUOTE_MARK`, its code's text between
    :data:`~refinery.stages._extract_helper.CODE_OPEN` and ``CODE_CLOSE``). Cleaned the same way,
    the marked text must give ``text`` exactly once the marks are gone, line for line; else (a mark
    changed what the cleaning did: a code line "-" is no list marker) no line is marked, so a mark
    never names a line that is not the quote's or code's; where the code marks did that, the
    quote marks are read alone. A URL starting a marked line is cut with the spaces after it
    first, as :func:`clean_text` cuts it from the line without its mark (session 48: the mark
    before it stopped that, and the document lost every mark), and a mark ends a URL. With
    ``needed_urls``, URLs are judged as :func:`clean_text` judges them, each line without its marks,
    and code lines (:func:`code_line_numbers`) keep theirs."""
    helper = _extract_helper
    keep = code_line_numbers(marked) if needed_urls else None
    cleaned = _clean_marked(marked, keep)
    if helper.without_marks(cleaned) != text:
        if helper.QUOTE_MARK not in marked:
            return None, None
        cleaned = _clean_marked(marked.replace(helper.CODE_OPEN, "").replace(helper.CODE_CLOSE, ""), keep)
        if cleaned.replace(helper.QUOTE_MARK, "") != text:
            return None, None
    quotes: list[int] = []
    code: list[int] = []
    for i, line in enumerate(cleaned.split("\n")):
        if helper.QUOTE_MARK in line and helper.without_marks(line).strip():
            quotes.append(i)
        if helper.CODE_OPEN in line and _is_code_line(line.replace(helper.QUOTE_MARK, "")):
            code.append(i)
    return quotes or None, code or None


#: a run of code's text on a marked line (:func:`line_marks`)
_CODE_SPAN = re.compile(f"{_extract_helper.CODE_OPEN}[^{_extract_helper.CODE_CLOSE}\n]*{_extract_helper.CODE_CLOSE}")


def _is_code_line(line: str) -> bool:
    """Whether a marked line holds code's text and nothing else but whitespace."""
    return not _CODE_SPAN.sub("", line).strip() and bool(_extract_helper.without_marks(line).strip())


def code_line_numbers(marked: str) -> frozenset[int]:
    """The numbers of the lines of a marked extract (before :func:`clean_text`: the lines of the
    extract itself) that are code, whose URLs stay with ``keep_needed_urls``: ``URL =
    f"https://..."`` lost its URL and read ``URL = f""``."""
    if _extract_helper.CODE_OPEN not in marked:
        return frozenset()
    return frozenset(i for i, line in enumerate(marked.split("\n"))
                     if _extract_helper.CODE_OPEN in line and _is_code_line(line.replace(_extract_helper.QUOTE_MARK, "")))


def _clean_marked(marked: str, url_lines: Collection[int] | None = None) -> str:
    """:func:`clean_text` of a marked extract, its URLs cut as from the text without marks;
    ``url_lines`` (not None: ``needed_urls``) the code lines whose URLs stay."""
    if url_lines is not None:
        return _clean_after_urls(text_urls.cut_marked_urls(marked, url_lines, _extract_helper.LINE_MARKS))
    if "://" in marked or _WWW.search(marked) is not None:
        marked = _MARKED_URL.sub(r"\1", _MARKED_LINE_START_URL.sub(r"\n\1", "\n" + marked)[1:])
    return clean_text(marked)


def join_bare_list_markers(text: str) -> str:
    """``"- \\n    item text"`` -> ``"- item text"`` (blank lines between them too); a marker
    followed by another marker or by nothing (an empty item) is dropped. Nesting indentation
    before the marker stays."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() != "-":
            out.append(line)
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        following = lines[j].strip() if j < len(lines) else ""
        if following and following != "-" and not following.startswith("- "):
            out.append(line[: len(line) - len(line.lstrip())] + "- " + following)
            i = j + 1
        else:
            i += 1
    return "\n".join(out)


_RESILIPARSE_MISSING = "extract backend 'resiliparse' needs the resiliparse package: pip install 'resiliparse>=2.0'"
logger = logging.getLogger(__name__)

Backend = Literal["trafilatura", "resiliparse", "learned"]
BACKENDS: tuple[str, ...] = ("trafilatura", "resiliparse", "learned")


#: the stage's params that run trafilatura as RefinedWeb did (and as the stage did before issue 13):
#: precision mode without tables, its readability/justext comparison, no fallback, trafilatura's
#: own precision-mode rules; the comparison point of the benchmarks and of docs/extraction.md
REFINEDWEB_PARAMS: dict[str, Any] = {"include_tables": False, "fast": False, "fallback": False,
                                     "join_source_lines": False, "keep_code_blocks": False,
                                     "keep_anchor_headings": False,
                                     **_trafilatura_rules.TRAFILATURA_PARAMS}


class TrafilaturaExtractor(Stage):
    """Fill ``text`` from ``html`` with trafilatura (precision mode with tables, then a fallback
    for pages it finds (nearly) empty: see the module docstring), or with Resiliparse's
    main-content extraction when ``backend="resiliparse"``."""

    kind = "extract"
    # trafilatura and its fallbacks (justext; readability is its own copy), the parser, the
    # charset guess, and the other backends
    libraries = ("trafilatura", "justext", "lxml", "lxml_html_clean", "charset-normalizer", "resiliparse", "selectolax")
    reads_text = False
    makes_text = True
    added_params = {"keep_nested_heading_text": False, "keep_wild_headings": False,
                    "keep_outside_lead": False, "keep_header_lead": False,
                    "keep_needed_urls": False, "drop_credit_blocks": False,
                    "keep_code_blocks": False, "keep_anchor_headings": False}  # runs made before it resume
    # the helper's allocator changes its speed, not its text (byte-identical: docs/extraction.md)
    neutral_params = frozenset({"helper_allocator"})

    def __init__(
        self,
        timeout_s: float = 5.0,
        max_html_bytes: int = 2_000_000,
        min_text_chars: int = 1,
        favor_precision: bool = True,
        include_comments: bool = False,
        include_tables: bool = True,
        fast: bool = True,
        backend: Backend = "trafilatura",
        name: str | None = None,
        prescreen: bool = True,
        fallback: bool = True,
        fallback_below_chars: int = 1000,
        fallback_min_gain: float = 3.0,
        fallback_mode: Literal["recall", "balanced"] = "recall",
        fallback_keeps_first: bool = False,
        fallback_judge_ratio: float = 8.0,
        recipe_cards: bool = True,
        link_teaser_share: float = 0.8,
        keep_block_tails: bool = True,
        keep_title_header: bool = True,
        drop_link_list_headings: bool = True,
        drop_labelled_links: bool = True,
        drop_orphaned_headings: bool = True,
        keep_text_with_empty_links: bool = True,
        keep_repeated_posts: bool = True,
        keep_split_bodies: bool = True,
        prune_inside_wrappers: bool = True,
        drop_related_lists: bool = False,
        join_source_lines: bool = True,
        keep_code_blocks: bool = True,
        keep_anchor_headings: bool = True,
        keep_nested_heading_text: bool = False,
        keep_wild_headings: bool = False,
        keep_outside_lead: bool = False,
        keep_header_lead: bool = False,
        keep_needed_urls: bool = False,
        drop_credit_blocks: bool = False,
        helper_allocator: Allocator = "auto",
    ) -> None:
        super().__init__(name)
        if backend not in BACKENDS:
            raise ValueError(f"extract backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        from refinery.stages import checks

        checks.at_least("timeout_s", timeout_s, 0)  # 0 disables the limit
        checks.at_least("max_html_bytes", max_html_bytes, 1)
        checks.at_least("min_text_chars", min_text_chars, 0)
        checks.at_least("fallback_below_chars", fallback_below_chars, 0)
        checks.at_least("fallback_min_gain", fallback_min_gain, 0)
        checks.at_least("fallback_judge_ratio", fallback_judge_ratio, 0)
        checks.fraction("link_teaser_share", link_teaser_share)
        if not 0 < link_teaser_share <= 0.9:
            raise ValueError(f"link_teaser_share must be above 0 and at most 0.9 (trafilatura's own), "
                             f"not {link_teaser_share}")
        allocator.check_allocator(helper_allocator)
        if fallback_mode not in ("recall", "balanced"):
            raise ValueError(f"fallback_mode must be 'recall' or 'balanced', not {fallback_mode!r}")
        self.backend = backend
        # why: one pathological page must not stall a shard; 0 disables the limit
        self.timeout_s = float(timeout_s)
        # why: huge pages are rarely prose and dominate extraction time
        self.max_html_bytes = int(max_html_bytes)
        self.min_text_chars = int(min_text_chars)
        # first pass: precision mode as RefinedWeb, but with tables (without them layout-table pages
        # come out empty and in-article tables are cut: issue 13); no comments
        self.favor_precision = favor_precision
        self.include_comments = include_comments
        self.include_tables = include_tables
        # fast=True skips trafilatura's readability/justext comparison in the first pass: ~1/3 less
        # CPU; the pages it under-extracts are what the fallback pass is for
        self.fast = fast
        # why: one setting cannot both keep boilerplate out and find table-layout pages' text;
        # the second pass costs CPU only on pages with a short first extract (15% of the
        # evaluation pages, ~half of the sample crawl pages)
        self.fallback = bool(fallback)
        self.fallback_below_chars = int(fallback_below_chars)
        self.fallback_min_gain = float(fallback_min_gain)
        # recall mode, not balanced: balanced re-extracts short pages (its recall escalation), which
        # made the stage ~2x slower on real crawl pages, half of which have a short first extract
        self.fallback_mode = fallback_mode
        # the fallback's text picked another part of the page (a Q&A page's answer, not its
        # question): keep the first pass's lines it lacks, before it (adversarial testing)
        self.fallback_keeps_first = bool(fallback_keeps_first)
        # the fallback is skipped on a page whose body text is at most this many times the first
        # text: it never gains enough there (fallback_may_win); ~1/3 of its calls, 0 disables
        self.fallback_judge_ratio = float(fallback_judge_ratio)
        # a page declaring a schema.org Recipe whose first text lacks most of its ingredients and
        # steps gets the fallback's lines holding them (precision mode pruned recipe cards)
        self.recipe_cards = bool(recipe_cards)
        # trafilatura's precision-mode rules that the stage changes (_trafilatura_rules.py; 0.9 and false
        # are trafilatura's own): "Read more: <a>title</a>" teasers go, text after an empty block
        # element stays, the <header> holding the article's <h1> (title, standfirst) stays, the
        # heading over a list of links removed for link density goes with it, so do "Label: <a>"
        # lines and short lines over content that pruning removed
        self.link_teaser_share = float(link_teaser_share)
        self.keep_block_tails = bool(keep_block_tails)
        self.keep_title_header = bool(keep_title_header)
        self.drop_link_list_headings = bool(drop_link_list_headings)
        self.drop_labelled_links = bool(drop_labelled_links)
        self.drop_orphaned_headings = bool(drop_orphaned_headings)
        self.keep_text_with_empty_links = bool(keep_text_with_empty_links)
        # a forum thread's posts are a run of sibling containers of one class; trafilatura took
        # the first (docs/extraction.md, "Forum threads")
        self.keep_repeated_posts = bool(keep_repeated_posts)
        # an article body split into sibling blocks of one class around ad slots; trafilatura took
        # the first (docs/extraction.md, "Split article bodies")
        self.keep_split_bodies = bool(keep_split_bodies)
        # boilerplate boxes inside an article wrapper that carries a boilerplate class stayed
        # (trafilatura's guard kept every match; docs/extraction.md, "Boxes inside wrappers")
        self.prune_inside_wrappers = bool(prune_inside_wrappers)
        # a list of the site's other stories (headlines linked to its pages) stayed: trafilatura
        # tests a list's link density only when short (docs/extraction.md, "Lists of other stories")
        self.drop_related_lists = bool(drop_related_lists)
        # a heading whose text sits in a block with an empty anchor (<h2><div><a name="x"></a>
        # text</div></h2>) came out empty: the block went as a link list (docs/extraction.md,
        # "Heading text in a nested block")
        self.keep_nested_heading_text = bool(keep_nested_heading_text)
        # a page trafilatura finds no content area in lost every heading: its wild-text pass takes
        # paragraphs only (docs/extraction.md, "Headings on the wild-text path")
        self.keep_wild_headings = bool(keep_wild_headings)
        # an article's standfirst written before the body container trafilatura picks (div.lead,
        # header's p.intro) was left out (docs/extraction.md, "What the extract stage misses")
        self.keep_outside_lead = bool(keep_outside_lead)
        # with it, an unclassed <p> of the title's <header> is a lead too, and a caption never is
        # (docs/extraction.md, "Leads in the title header")
        self.keep_header_lead = bool(keep_header_lead)
        # captions and picture credits in elements so named but not a <figure> stayed
        # (houstonpress' div.cred, dailymail's p.imageCaption: docs/extraction.md, session 50)
        self.drop_credit_blocks = bool(drop_credit_blocks)
        # RefinedWeb's URL removal left holes where a link's text was its URL ("Download it from
        # ."): a URL its sentence needs stays, and so do code lines' URLs; a bracketed URL goes with
        # its brackets, a label line "Source: URL" whole (refinery/stages/text_urls.py; in the
        # parent, after extraction: the helper's key does not change)
        self.keep_needed_urls = bool(keep_needed_urls)
        # the page source's line breaks inside a paragraph are spaces, as a browser shows them;
        # trafilatura kept them after a link or <code>: lines ending mid-sentence (false: as it did)
        self.join_source_lines = bool(join_source_lines)
        # code blocks trafilatura cut (Jekyll's <figure class="highlight">) or wrote on one line (a
        # code table's cell, <br> in <code>), in every pass (docs/extraction.md, "Code blocks")
        self.keep_code_blocks = bool(keep_code_blocks)
        # a heading whose text is a named anchor (<h2><a name="x">Heading</a></h2>, no href) went as a
        # link list: trafilatura takes every <a> for a link, in every pass (docs/extraction.md)
        self.keep_anchor_headings = bool(keep_anchor_headings)
        # why: pages shaped to blow up the parser (see pathological_html) are removed in
        # microseconds instead of each burning timeout_s of CPU
        self.prescreen = bool(prescreen)
        # the helper process's malloc (refinery/allocator.py): mimalloc, where installed, takes ~15%
        # off its CPU; "system" keeps glibc's. In-process extraction (timeout_s: 0) is not changed.
        self.helper_allocator = helper_allocator

    def _extract_fn(self) -> Callable[[str, str | None], tuple[str | None, str]]:
        """``fn(html, url) -> (text or None, path)`` in this process (``timeout_s: 0`` only)."""
        marked = self._marked_extract_fn()
        return lambda html, url: marked(html, url)[:2]

    def _marked_extract_fn(self) -> Callable[[str, str | None], tuple]:
        """The stage's own in-process call: ``(text or None, path)``, or ``(text or None, path, marked
        text or None)`` where trafilatura joins lines (the quote marks:
        ``_extract_helper.with_line_marks``), as the helper process answers."""
        fn = getattr(self, "_lazy_extract", None)
        if fn is None:
            fn = self._lazy_extract = (
                self._resiliparse_fn() if self.backend == "resiliparse"
                else _extract_helper.make_extract({"backend": "learned", "kwargs": {}}) if self.backend == "learned"
                else self._trafilatura_fn()
            )
        return fn

    def _fallback_config(self) -> dict[str, Any] | None:
        if self.backend != "trafilatura" or not self.fallback:
            return None
        return {"below_chars": self.fallback_below_chars, "min_gain": self.fallback_min_gain,
                "mode": self.fallback_mode, "keeps_first": self.fallback_keeps_first,
                "judge_ratio": self.fallback_judge_ratio,
                "recipe_cards": self.recipe_cards}

    def _rules_config(self) -> dict[str, Any] | None:
        if self.backend != "trafilatura" or not self.favor_precision:
            return None
        return {name: getattr(self, name) for name in _trafilatura_rules.RULE_PARAMS}

    def _trafilatura_kwargs(self) -> dict[str, Any]:
        return {
            "favor_precision": self.favor_precision,
            "include_comments": self.include_comments,
            "include_tables": self.include_tables,
            "fast": self.fast,
            "output_format": "txt",
            "with_metadata": False,
        }

    def _resiliparse_kwargs(self) -> dict[str, Any]:
        # closest to trafilatura's txt output: block structure kept, no alt texts, link targets,
        # form fields or <noscript> (trafilatura drops them too)
        return {
            "preserve_formatting": True,
            "main_content": True,
            "comments": self.include_comments,
            "alt_texts": False,
            "links": False,
            "form_fields": False,
            "noscript": False,
        }

    def _trafilatura_fn(self) -> Callable[[str, str | None], tuple[str | None, str]]:
        # trafilatura logs a WARNING for every page without content ("discarding data"),
        # i.e. millions of lines per crawl; our reason column already records it. A level set
        # explicitly by the user wins.
        tlog = logging.getLogger("trafilatura")
        if tlog.level == logging.NOTSET:
            tlog.setLevel(logging.ERROR)
        # the same cascade as in the helper process (one implementation)
        return _extract_helper.make_extract({**self._cascade_config(), "log_level": tlog.level})

    def _cascade_config(self) -> dict[str, Any]:
        """The trafilatura cascade's configuration (``_extract_helper.make_extract``) for these params,
        without the log level: what the in-process call and the benchmarks' A/B sides build on."""
        return {"backend": "trafilatura", "kwargs": self._trafilatura_kwargs(), "fallback": self._fallback_config(),
                "rules": self._rules_config(), "join_lines": self.join_source_lines,
                "code_blocks": self.keep_code_blocks, "anchor_headings": self.keep_anchor_headings}

    def _resiliparse_fn(self) -> Callable[[str, str | None], tuple[str | None, str]]:
        try:
            import resiliparse.extract.html2text  # noqa: F401
        except ImportError as exc:  # optional dependency
            raise ImportError(_RESILIPARSE_MISSING) from exc
        return _extract_helper.make_extract({"backend": "resiliparse", "kwargs": self._resiliparse_kwargs()})

    def _helper_key(self) -> str:
        """The helper process's configuration (JSON; also the key of the pool of idle helpers)."""
        if self.backend == "resiliparse":
            import importlib.util

            if importlib.util.find_spec("resiliparse") is None:  # say so here, not from the helper
                raise ImportError(_RESILIPARSE_MISSING)
            kwargs = self._resiliparse_kwargs()
        elif self.backend == "learned":
            kwargs = {}
        else:
            kwargs = self._trafilatura_kwargs()
        level = logging.getLogger("trafilatura").level  # a level the user set wins, as in-process
        return json.dumps({"backend": self.backend, "kwargs": kwargs, "fallback": self._fallback_config(),
                           "rules": self._rules_config(), "join_lines": self.join_source_lines,
                           "code_blocks": self.keep_code_blocks, "anchor_headings": self.keep_anchor_headings,
                           "log_level": level or None, "allocator": self.helper_allocator}, sort_keys=True)

    def warm_up(self, schema: pa.Schema) -> None:
        # why: a fresh helper spends ~0.5 s importing trafilatura; started here, that overlaps the
        # stages before this one and the next reads instead of delaying the first page. Text-only
        # input (no html column) is passed through and needs no helper.
        if self.timeout_s > 0 and "html" in schema.names:
            _HELPERS.start_idle(self._helper_key())

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        n = batch.num_rows
        if "html" not in batch.schema.names:
            raise ValueError(
                "extract needs an 'html' column (WARC input); for documents that already have text "
                "(Parquet/JSONL input) leave the extract stage out of the config"
            )
        htmls = batch.column("html")
        text_input = htmls.null_count == n
        prior_texts = batch.column("text").to_pylist() if "text" in batch.schema.names else [None] * n
        ctypes = batch.column("content_type").to_pylist() if "content_type" in batch.schema.names else [None] * n
        urls = batch.column("url").to_pylist() if "url" in batch.schema.names else [None] * n
        reasons: list[str | None] = [None] * n
        metrics: list[float | None] = [None] * n
        texts: list[str | None] = [None] * n
        paths: list[str | None] = [None] * n
        quotes: list[list[int] | None] = [None] * n
        code: list[list[int] | None] = [None] * n

        # timeout_s > 0: every page is extracted in a helper process that is killed at the deadline
        isolate = self.timeout_s > 0
        key = self._helper_key() if isolate else ""
        extract = None if isolate else self._marked_extract_fn()
        helper: _Helper | None = None
        try:
            for i in range(n):
                scalar = htmls[i]
                body = scalar.as_py() if scalar.is_valid else None
                if body is None and prior_texts[i]:
                    texts[i] = prior_texts[i]  # already-extracted text (JSONL/Parquet input): keep as is
                    paths[i] = "input"
                    continue
                if body is not None and prior_texts[i] is not None:
                    # text and html both given: the html is extracted, as a WARC page's would be,
                    # and the input text replaced (or lost with the page): counted, so it is seen
                    self.count("input_text_replaced")
                if not body or not body.strip():
                    # text input (a batch without any HTML: JSONL/Parquet text) has no HTML to
                    # blame, whether its text is "", null or missing
                    reasons[i] = ("empty_text" if body is None and (text_input or prior_texts[i] is not None)
                                  else "empty_html")
                    continue
                if len(body) > self.max_html_bytes:
                    reasons[i], metrics[i] = "html_too_large", float(len(body))
                    continue
                body = _maybe_gunzip(body, self.max_html_bytes)
                if len(body) > self.max_html_bytes:
                    reasons[i], metrics[i] = "html_too_large", float(len(body))
                    continue
                html, bad = decode_html(body, ctypes[i])
                del body
                if bad > _MAX_BAD_FRAC:
                    reasons[i], metrics[i] = "undecodable", bad
                    continue
                if self.prescreen:
                    shape = pathological_html(html)
                    if shape is not None:
                        reasons[i], metrics[i] = shape
                        continue
                if extract is not None:  # in process, no time limit
                    try:
                        out = extract(html, urls[i])
                    except Exception:  # noqa: BLE001 - any extractor/parser failure removes just this doc
                        reasons[i] = "extraction_failed"
                        continue
                else:
                    if helper is None:
                        helper = _HELPERS.acquire(key)
                    helper.wait_ready()  # start-up (imports) is not counted against the page
                    start = time.monotonic()
                    status, out = helper.extract(html, urls[i], self.timeout_s)
                    if status == "timeout":
                        reasons[i], metrics[i] = "extraction_timeout", time.monotonic() - start
                        helper = _Helper(json.loads(key))  # its replacement starts while we go on
                        continue
                    if status != "ok":  # the extractor raised, or its process died (e.g. segfault)
                        reasons[i] = "extraction_failed"
                        if status == "died":
                            logger.warning("extraction helper died (exit code %s) on %s", out, urls[i])
                            helper = _Helper(json.loads(key))
                        continue
                # the path is kept for no_text_extracted too: the last one tried; the marked text
                # comes with trafilatura's joined lines only (_extract_helper.with_line_marks)
                out, paths[i], marked = out if len(out) == 3 else (*out, None)
                needed = self.keep_needed_urls
                # code lines keep their URLs (their numbers are the same in the marked extract)
                url_lines = code_line_numbers(marked) if needed and marked is not None else ()
                text = clean_text(out, needed, url_lines) if out else ""
                if len(text) < max(self.min_text_chars, 1):
                    reasons[i], metrics[i] = "no_text_extracted", float(len(text))
                    continue
                texts[i] = text
                if marked is not None:
                    quotes[i], code[i] = line_marks(text, marked, needed)
        finally:
            if helper is not None:
                _HELPERS.release(key, helper)

        # named counters (Stage.count: summed into stats.json, the funnel, the report and
        # stats --compare): kept documents per extraction path, e.g. path_fallback
        count = getattr(self, "count", None)
        if count is not None:
            for path, reason in zip(paths, reasons):
                if path is not None and reason is None:
                    count(f"path_{path}")
        html_type = batch.schema.field("html").type
        names = batch.schema.names
        text_type = batch.schema.field("text").type if "text" in names else pa.string()
        return with_decision(
            batch,
            reasons,
            metrics,
            extra={
                "text": pa.array(texts, type=text_type), "html": pa.nulls(n, type=html_type),
                "extract_path": pa.array(paths, type=pa.string()),
                "extract_pass": pa.array([None if p is None else _extract_helper.PATHS[p] for p in paths],
                                         type=pa.int8()),
                QUOTE_LINES: pa.array(quotes, type=LINE_MARKS_TYPE),
                CODE_LINES: pa.array(code, type=LINE_MARKS_TYPE),
            },
        )

    def metric_columns(self) -> list[str]:
        # extract_pass gets a histogram (kept/removed per path); extract_path (a string) shows in
        # the metrics of sampled removed documents
        return ["extract_pass", "extract_path"]

    def metric_bins(self) -> dict[str, list[float]]:
        return {"extract_pass": [0.0, 1.0, 2.0, 3.0, 4.0]}  # one bin per pass: input, first, fallback, baseline
