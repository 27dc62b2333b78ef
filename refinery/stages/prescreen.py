"""Language pre-screen: drop pages that cannot survive language ID *before* paying for extraction.

Trafilatura is most of the filter chain's time, and on a crawl most pages are not in the wanted
languages: extracting them only for ``language_id`` to throw them away is wasted work. This stage
runs before ``extract`` on the raw HTML: it gets a cheap plain text of the whole page (default
``backend: selectolax``: lexbor's C parser and its text of ``<body>`` without scripts/styles, white
space collapsed, ~1 ms per real page, ~1.5x cheaper than Resiliparse's text and ~15x cheaper than
trafilatura; ``backend: resiliparse`` for Resiliparse's text, optionally its main content), scores
it with the same fastText LID-176 model as :mod:`refinery.stages.language_id` (same model
loading and batching; one ``predict`` call per batch), and removes a page only when

- the cheap text is substantial (``min_chars`` characters or more: a short or empty cheap text
  says nothing reliable about the page, so it passes), and
- the best probability of any of ``languages`` is below ``min_score`` (deliberately low, 0.3 by
  default, against ``language_id``'s 0.65 on the final text: only clear non-matches go).

The score is the wanted languages' probability (fastText's full distribution, summed over them),
not only the top label's: of the page as one sample (start, middle and end, 2,000 characters), or
of its best window of ~400 characters (:func:`sample_windows`) when that window reads as the
language at 0.65 or more: an English article whose site's menus, sidebar and footer are German
is kept for the final decision.

Reason: ``prescreen_language`` (metric: that best score, also in column
``prescreen_language_score``; null for pages not screened). Everything else passes untouched --
empty, oversized (``max_html_bytes``, or more than ``max_tags`` "<": deep nesting makes the
parser quadratic), undecodable or parser-hostile pages (``extract`` removes those with its own
reasons and time limit), and the ``html`` column is left for ``extract``. The final
``language_id`` still decides on the extracted text; this stage only saves work. Measured
agreement with the plain chain: docs/benchmarks.md, "Language pre-screen".

Pages read as UTF-8 (declared so, or undeclared: ~97% of real pages) are parsed from their
bytes: lexbor parses UTF-8 bytes as they are, and the tag count and parser-bomb check run on
the bytes, ~30% of the stage's CPU saved with identical text; other pages, and bytes that turn
out not to be UTF-8, are decoded first.

The parser runs in this process without ``extract``'s helper-process time limit, so the pages
that make HTML parsers super-linear are not parsed here; they pass to ``extract``: more than
``max_tags`` "<" (nesting depth), tags with more than 1,000 attributes as an HTML tokenizer reads
them (:func:`refinery.stages.extract.tokenizer_attribute_bomb_utf8`: extract's quicker check can
be fooled by quoted "<"s, and lexbor needs ~6 s for such a 40k-attribute tag), and pages over
``max_html_bytes``.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from refinery.stages import checks
from refinery.stages.base import Stage, with_decision
from refinery.stages.extract import (
    BAD_SAMPLE_CHARS,
    REPLACEMENT_UTF8,
    bad_chars_utf8,
    codec_candidates,
    decode_html,
    tag_starts,
    tokenizer_attribute_bomb,
    tokenizer_attribute_bomb_utf8,
)
from refinery.stages.language_id import LanguageId, lid_model_path

__all__ = ["LanguagePrescreen"]

_RESILIPARSE_MISSING = "stage 'prescreen' with backend 'resiliparse' needs the resiliparse package: pip install 'resiliparse>=2.0'"
PRESCREEN_BACKENDS: tuple[str, ...] = ("selectolax", "resiliparse")
#: elements whose content is not page text (selectolax's ``text()`` would return it)
_NOT_TEXT = ["script", "style", "noscript", "template"]
# share of replacement/control characters above which extract calls a page undecodable
_MAX_BAD_FRAC = 0.05


#: characters of one window the pre-screen scores on its own (~70 words: enough for fastText)
WINDOW_CHARS = 400
#: a window counts when it reads as the language this surely (language_id's default threshold):
#: an English article's windows do (~0.9); a citation or an embedded tweet on a German page mostly
#: does not, and 101 pages more went to extraction when any window at 0.3 counted
WINDOW_MIN_SCORE = 0.65
#: characters of the page's one-sample score (start, middle and end joined)
SAMPLE_CHARS = 2_000


def _spaced_slices(text: str, max_chars: int, count: int) -> list[str]:
    """``count`` evenly spaced slices of ``text`` (the first at its start, the last at its end),
    ``max_chars`` characters in all."""
    width = max_chars // count
    step = (len(text) - width) / (count - 1) if count > 1 else 0
    return [text[int(k * step) : int(k * step) + width] for k in range(count)]


def sample_text(text: str, max_chars: int, windows: int = 3) -> str:
    """``text`` if it fits ``max_chars``, else ``windows`` evenly spaced slices of it joined by a
    space, ``max_chars`` characters in all."""
    return text if len(text) <= max_chars else " ".join(_spaced_slices(text, max_chars, windows))



def sample_windows(text: str, max_chars: int, window_chars: int = WINDOW_CHARS) -> list[str]:
    """``text`` as windows to score one by one: all of it in windows of ``window_chars`` if it
    fits ``max_chars``, else ``max_chars // window_chars`` evenly spaced windows (the first at the
    start, the last at the end).

    Scored one by one, not joined: an English article on a site whose menus, sidebar and footer
    are German was one mixed sample in which German won, and 183 of 208 real English articles
    placed in a real German blog template were removed before extraction, which keeps them
    (found by adversarial testing). The page's best window counts when it reads as the language
    at :data:`WINDOW_MIN_SCORE`."""
    if not text:
        return []
    if len(text) <= max_chars:
        return [text[i : i + window_chars] for i in range(0, len(text), window_chars)]
    return _spaced_slices(text, max_chars, max(1, max_chars // window_chars))


#: UTF-8 continuation bytes (10xxxxxx): a character count is the byte count minus these
_CONTINUATION_BYTES = bytes(range(0x80, 0xC0))


def _selectolax_text(html: str | bytes) -> str:
    """The text of ``<body>`` (lexbor's parse, as browsers build it) without script, style,
    noscript and template content, white space collapsed: indentation must not fill the LID
    windows (with it, windows land elsewhere and a borderline page flipped)."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    tree.strip_tags(_NOT_TEXT)
    body = tree.body
    # not strip=True (a Python str per text node): the split() below drops the same white space,
    # and white-space-only nodes (skip_empty) hold no word; the same text, ~18% cheaper
    return " ".join(body.text(separator=" ", skip_empty=True).split()) if body is not None else ""


class LanguagePrescreen(Stage):
    """Remove pages whose cheap (whole-page) text is clearly not in ``languages``."""

    kind = "prescreen"
    libraries = ("fasttext-numpy2", "resiliparse", "selectolax")
    reads_text = False
    reads_html = True
    threshold_params = {"prescreen_language_score": ["min_score"]}
    reason_metrics = {"prescreen_language": "prescreen_language_score"}

    def __init__(
        self,
        languages: list[str] | None = None,
        min_score: float = 0.3,
        min_chars: int = 200,
        max_chars: int = 16_000,
        max_html_bytes: int = 2_000_000,
        max_tags: int = 20_000,
        main_content: bool = False,
        backend: str = "selectolax",
        model_path: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        checks.one_of("backend", backend, PRESCREEN_BACKENDS)
        if main_content and backend != "resiliparse":
            raise ValueError("main_content: needs backend 'resiliparse' (selectolax reads the whole page)")
        checks.fraction("min_score", min_score)
        checks.at_least("min_chars", min_chars, 1)
        checks.at_least("max_chars", max_chars, WINDOW_CHARS)  # one window at least: fewer says nothing
        checks.at_least("max_html_bytes", max_html_bytes, 1)
        checks.at_least("max_tags", max_tags, 1)
        # a set (sorted): their probabilities pool, in no order
        self.languages = ["en"] if languages is None else sorted({str(lang) for lang in languages})
        self.min_score = float(min_score)
        # why: a few words of cheap text (a title, a cookie banner) do not identify a page
        self.min_chars = int(min_chars)
        # why 16,000: the page's text in windows of 400 characters, scored one by one
        # (:func:`sample_windows`), so a short English article among a long German sidebar is
        # seen: 2,000 (five windows) lost 68 of 208 real English articles placed in a real German
        # blog template, 16,000 none; fastText's cost is linear in the characters, 1.5 -> 2.2 ms
        # a page for the whole stage (docs/benchmarks.md, "Trust fixes measured, session 27")
        self.max_chars = int(max_chars)
        self.max_html_bytes = int(max_html_bytes)
        # why: lexbor's tree builder is quadratic in nesting depth (20k nested <div>: 0.5 s, 100k:
        # 23 s) and this stage has no deadline; depth needs as many tags, and the real pages we
        # measured have at most 19.6k "<" (docs/reliability.md). Bigger pages pass to extract.
        self.max_tags = int(max_tags)
        # why: the whole-page text (main_content=False) is ~1.6x cheaper than Resiliparse's
        # main-content heuristic and, at this low threshold, agrees as well (docs/benchmarks.md);
        # selectolax's whole-page text is ~1.5x cheaper again, same kept sets (docs/benchmarks.md,
        # "Filter chain CPU, session 10")
        self.main_content = bool(main_content)
        self.backend = backend
        self.model_path = model_path
        # the shared LID code (model cache, input cleaning, batching); its thresholds are unused
        self._lid = LanguageId(languages=self.languages, min_score=0.0, max_chars=max_chars, model_path=model_path)
        if model_path is None and self.languages:
            lid_model_path()  # a missing model fails at config time, not mid-run

    def metric_columns(self) -> list[str]:
        return ["prescreen_language_score"]

    def model_files(self) -> list[Path]:
        return self._lid.model_files() if self.languages else []

    def _html2text(self) -> Callable[[str], str]:
        fn = self.__dict__.get("_lazy_html2text")
        if fn is None and self.backend == "selectolax":
            fn = self._lazy_html2text = _selectolax_text
        if fn is None:
            try:
                from resiliparse.extract.html2text import extract_plain_text
            except ImportError as exc:  # optional dependency (the `extract` extra)
                raise ImportError(_RESILIPARSE_MISSING) from exc
            # as the extract stage's resiliparse backend: no alt texts, link targets, form fields
            kwargs: dict[str, Any] = {"main_content": self.main_content, "alt_texts": False, "links": False,
                                      "form_fields": False, "noscript": False}
            fn = self._lazy_html2text = lambda html: extract_plain_text(html, **kwargs)
        return fn

    def cheap_text(self, body: bytes | None, content_type: str | None) -> str | None:
        """Plain text of an HTTP body (selectolax or Resiliparse), or None where this stage does not look
        (empty, oversized, undecodable, compressed, parser-hostile: ``extract`` decides those)."""
        if not body or len(body) > self.max_html_bytes:
            return None
        if self.backend == "selectolax" and codec_candidates(body, content_type)[0] in ("utf-8", "utf-8-sig"):
            text = self._utf8_text(body[3:] if body.startswith(codecs.BOM_UTF8) else body)
            if text is not False:
                return text
        return self._decoded_text(body, content_type)

    def _decoded_text(self, body: bytes, content_type: str | None) -> str | None:
        """:meth:`cheap_text` through :func:`decode_html` (every page whose bytes are not read as
        UTF-8, and the Resiliparse backend)."""
        html, bad = decode_html(body, content_type)
        if bad > _MAX_BAD_FRAC or html.count("<") > self.max_tags or tokenizer_attribute_bomb(html):
            return None
        try:
            return self._html2text()(html)
        except ImportError:
            raise
        except Exception:  # noqa: BLE001 - a page the parser cannot read is extract's to judge
            return None

    def _utf8_text(self, raw: bytes) -> str | None | bool:
        """:meth:`cheap_text` of a page read as UTF-8 first, without decoding it in Python: lexbor
        takes UTF-8 bytes as they are (selectolax encodes a ``str`` to UTF-8 for it anyway), and
        the tag counts and parser-bomb check run on the bytes. False when the bytes are not valid
        UTF-8 where it shows (replacement characters the page does not hold): then
        :func:`decode_html` decides the codec as before."""
        lt = tag_starts(raw)
        if len(lt) > self.max_tags or tokenizer_attribute_bomb_utf8(raw, lt):
            return None
        sample = raw[:BAD_SAMPLE_CHARS]  # the first 100k bytes: at most 100k characters
        bad = bad_chars_utf8(sample)
        if bad and bad > _MAX_BAD_FRAC * len(sample.translate(None, _CONTINUATION_BYTES)):  # characters
            return None
        try:
            text = _selectolax_text(raw)
        except Exception:  # noqa: BLE001 - a page the parser cannot read is extract's to judge
            return None
        if "\ufffd" in text and REPLACEMENT_UTF8 not in raw:
            return False
        return text

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        n = batch.num_rows
        reasons: list[str | None] = [None] * n
        metrics: list[float | None] = [None] * n
        scores = np.full(n, np.nan, dtype=np.float32)
        names = batch.schema.names
        if self.languages and "html" in names:  # no html (text input) or every language wanted: pass all
            htmls = batch.column("html")
            ctypes = batch.column("content_type").to_pylist() if "content_type" in names else [None] * n
            rows: list[int] = []
            texts: list[str] = []
            for i in range(n):
                scalar = htmls[i]
                text = self.cheap_text(scalar.as_py() if scalar.is_valid else None, ctypes[i])
                if text is not None and len(text.strip()) >= self.min_chars:
                    rows.append(i)
                    texts.append(text)
            if rows:
                # selectolax's text is collapsed (_selectolax_text), so are its windows and samples
                collapsed = self.backend == "selectolax"
                # the page as one sample (start, middle and end: what most pages are judged on) ...
                whole = self._lid.wanted_scores([sample_text(t, SAMPLE_CHARS) for t in texts], collapsed=collapsed)
                # ... or one of its windows, read as surely as language_id wants the final text
                windows = [sample_windows(t, self.max_chars) for t in texts]
                flat = self._lid.wanted_scores([w for ws in windows for w in ws], collapsed=collapsed)
                starts = np.cumsum([0] + [len(ws) for ws in windows[:-1]])
                best_window = np.maximum.reduceat(flat, starts) if len(flat) else flat
                best = np.where(best_window >= WINDOW_MIN_SCORE, np.maximum(whole, best_window), whole)
                scores[rows] = best
                for i, score in zip(rows, best.tolist()):
                    if score < self.min_score:
                        reasons[i], metrics[i] = "prescreen_language", score
        score_array = pa.array(scores, type=pa.float32(), mask=np.isnan(scores))
        return with_decision(batch, reasons, metrics, extra={"prescreen_language_score": score_array})
