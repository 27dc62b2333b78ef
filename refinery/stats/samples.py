"""Sampled removed documents: a reservoir per (stage, reason) per shard, and a run-wide merged view.

Every shard keeps a uniform random sample of at most ``k`` removed documents per (stage, reason)
(Vitter's algorithm R), seeded from the shard, stage and reason names so a re-run picks the same
documents, whatever the batch size. The sample goes to ``<run>/samples/<shard>.parquet``
(``removed/<shard>.parquet`` already holds *every* removed document; the sample is the small,
readable view: id, url, stage, reason, the metric that triggered the removal, the stage's metric
columns, the removal's evidence (what in the document decided it, when the stage says), a text
snippet and, when the stage says where its evidence sits in the text, an excerpt around it).

:func:`load_samples` merges the shards' samples into one uniform sample per reason across the
run: each sampled row stands for ``population / sampled`` removed documents of its shard, and a
weighted sample without replacement (Efraimidis-Spirakis) picks rows in proportion to that.
"""

from __future__ import annotations

import html as html_lib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import xxhash

from refinery.io import fs, parquet
from refinery.io.readahead import read_ahead
from refinery.rundir import PassDir, PassFiles, RunDir

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("shard", pa.string()),
        pa.field("id", pa.string()),
        pa.field("url", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("metric", pa.float64()),  # the value that triggered the removal (stage's _metric)
        pa.field("metrics", pa.string()),  # JSON: the row's metric columns (language_score, gopher_*, ...)
        pa.field("evidence", pa.string()),  # what decided the removal (the stage's _evidence), or null
        pa.field("language", pa.string()),
        pa.field("chars", pa.int64()),  # length of the text the stage saw
        pa.field("snippet", pa.string()),
        pa.field("snippet_source", pa.string()),  # "text", "html" (tags stripped) or "" (nothing to show)
        pa.field("excerpt", pa.string()),  # JSON: the text around the removal's evidence (excerpt()), or null
        pa.field("population", pa.int64()),  # documents removed for this (stage, reason) in this shard
    ]
)


def seed_for(*names: str) -> int:
    """A stable 64-bit seed from names (xxhash, not Python's salted ``hash``)."""
    return xxhash.xxh64_intdigest("\0".join(names).encode("utf-8"))


class Reservoir:
    """Algorithm R over a stream offered in batches. Random draws happen only for items past the
    first ``k``, one per item in stream order, so the result does not depend on batch sizes."""

    def __init__(self, k: int, seed: int) -> None:
        self.k = k
        self.seen = 0
        self.items: list[dict[str, Any]] = []
        self.rng = np.random.default_rng(seed)

    def offer(self, n: int, make_item: Callable[[int], dict[str, Any]]) -> None:
        """Offer ``n`` items; ``make_item(i)`` builds item ``i`` of this batch, only if it is picked."""
        if n <= 0 or self.k <= 0:
            self.seen += max(n, 0)
            return
        fill = min(max(self.k - self.seen, 0), n)
        # slot -> item of this batch that ends there: an item replaced later in the same batch is
        # never built (building one decodes an HTML page for its snippet)
        picked = {len(self.items) + i: i for i in range(fill)}
        self.items.extend([None] * fill)  # type: ignore[list-item]  # filled below
        rest = n - fill
        if rest:
            t = self.seen + fill + np.arange(rest)  # 0-based stream index of each remaining item
            j = np.floor(self.rng.random(rest) * (t + 1)).astype(np.int64)
            for off in np.flatnonzero(j < self.k):
                picked[int(j[off])] = fill + int(off)
        for slot, i in picked.items():
            self.items[slot] = make_item(i)
        self.seen += n


_SCRIPT_STYLE = re.compile(r"<(script|style|noscript)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def html_snippet(body: bytes, chars: int, content_type: str | None = None) -> str:
    """Readable text from the start of an HTML body (for documents removed before extraction),
    decoded like the extractor does (BOM, HTTP charset, ``<meta charset>``, UTF-8, a guess)."""
    head = body[: max(chars * 40, 65536)]
    try:
        from refinery.stages.extract import decode_html

        text = decode_html(head, content_type)[0]
    except ImportError:  # pragma: no cover - extraction is an optional stage module
        text = head.decode("utf-8", errors="replace")
    text = _TAG.sub(" ", _SCRIPT_STYLE.sub(" ", text))
    return _SPACE.sub(" ", html_lib.unescape(text)).strip()[:chars]


def text_snippet(text: str, chars: int) -> str:
    snippet = text[:chars]
    return snippet + "…" if len(text) > chars else snippet


#: an excerpt's size: the document's start, the characters either side of a marked span, the
#: longest marked span shown whole and the most characters of text in all (a card stays small)
EXCERPT_START = 160
EXCERPT_CONTEXT = 100
EXCERPT_MARK = 300
EXCERPT_CHARS = 900
#: a window edge moves at most this far to fall between words
_SNAP = 24


def _snap_start(text: str, at: int, limit: int) -> int:
    """``at`` moved forward (not past ``limit``) to the start of a word or line."""
    if at <= 0:
        return 0
    for i in range(at, min(at + _SNAP, limit)):
        if text[i - 1].isspace() and not text[i].isspace():
            return i
    return at


def _snap_end(text: str, at: int, floor: int) -> int:
    """``at`` moved back (not before ``floor``) to the end of a word or line."""
    if at >= len(text):
        return len(text)
    for i in range(at, max(at - _SNAP, floor), -1):
        if text[i].isspace() and not text[i - 1].isspace():
            return i
    return at


def excerpt(text: str, spans: list[tuple[int, int]], start: int = EXCERPT_START, context: int = EXCERPT_CONTEXT,
            mark: int = EXCERPT_MARK, budget: int = EXCERPT_CHARS) -> str | None:
    """The parts of ``text`` a reader needs to see what decided a removal, as JSON: the document's
    start (``start`` characters), then a window of ``context`` characters either side of each of
    the first ``spans`` (``[start, end)`` offsets: the repeated line's first places, the lines
    cut), windows that touch merged, at most ``budget`` characters in all and a span over ``mark``
    shown by its start: ``{"chars", "spans", "shown", "segments": [{"at", "text", "marks":
    [[start, end], ...]}]}`` (``at``: the segment's offset in the text; marks relative to the
    segment). None without a span inside the text (the card shows the snippet, as before)."""
    spans = _merged(spans, len(text))
    if not spans:
        return None
    if len(text) <= budget:  # a short text whole: nothing to leave out
        windows = [_Window(0, len(text), spans)]
    else:
        windows = _windows_around(spans, len(text), context, mark, budget)
    windows = _with_the_start(text, windows, start, context)
    segments = _segments(text, windows, mark, budget + start)
    shown = sum(len(segment["marks"]) for segment in segments)
    return json.dumps({"chars": len(text), "spans": len(spans), "shown": shown, "segments": segments},
                      ensure_ascii=False)


@dataclass
class _Window:
    """A part of the text to show, ``[begin, end)``, and the spans in it, in order."""

    begin: int
    end: int
    spans: list[tuple[int, int]] = field(default_factory=list)


def _merged(spans: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """The spans that hold some of a text of ``length`` characters, cut to it, in order, overlapping
    ones as one (overlapping n-grams, "a a a": one mark)."""
    merged: list[tuple[int, int]] = []
    for s, e in sorted((max(s, 0), min(e, length)) for s, e in spans if e > s and s < length):
        if merged and s < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


def _shown_end(span: tuple[int, int], mark: int) -> int:
    """Where the shown part of a span ends: one over ``mark`` characters is shown by its start."""
    return min(span[1], span[0] + mark)


def _windows_around(spans: list[tuple[int, int]], length: int, context: int, mark: int,
                    budget: int) -> list[_Window]:
    """A window of ``context`` characters either side of each span's shown part, in order, one that
    touches the window before joined to it, while they hold at most ``budget`` characters (the
    first window always)."""
    windows: list[_Window] = []
    used = 0
    for span in spans:
        begin, end = max(0, span[0] - context), min(length, _shown_end(span, mark) + context)
        joins = bool(windows) and begin <= windows[-1].end
        cost = max(end - windows[-1].end, 0) if joins else end - begin
        if windows and used + cost > budget:
            break
        used += cost
        if joins:
            windows[-1].end = max(windows[-1].end, end)
            windows[-1].spans.append(span)
        else:
            windows.append(_Window(begin, end, [span]))
    return windows


def _with_the_start(text: str, windows: list[_Window], start: int, context: int) -> list[_Window]:
    """The windows from the document's start: the first stretched to the top when it begins near it
    (within ``start + context // 2`` characters), else the first ``start`` characters before it."""
    if windows[0].begin <= start + context // 2:
        windows[0].begin = 0
        return windows
    return [_Window(0, _snap_end(text, start, start // 2))] + windows


def _segments(text: str, windows: list[_Window], mark: int, budget: int) -> list[dict[str, Any]]:
    """The windows as the excerpt's segments: edges between words, the spans marked, and past
    ``budget`` characters in all a window cut short (never inside its first span's shown part)."""
    segments: list[dict[str, Any]] = []
    total = 0
    for window in windows:
        begin, end = _between_words(text, window)
        if total + (end - begin) > budget:
            end = max(begin + budget - total, _shown_end(window.spans[0], mark) if window.spans else begin)
        total += end - begin
        marks = [[max(s, begin) - begin, min(e, end) - begin] for s, e in window.spans if s < end]
        segments.append({"at": begin, "text": text[begin:end], "marks": marks})
    return segments


def _between_words(text: str, window: _Window) -> tuple[int, int]:
    """A window's edges moved (a little) to fall between words: the start never past its first
    span's, the end never before its last span's first character."""
    first, last = (window.spans[0][0], window.spans[-1][0] + 1) if window.spans else (window.begin, window.begin)
    begin = _snap_start(text, window.begin, first)
    return begin, _snap_end(text, window.end, max(begin, last))


def empty_samples() -> pa.Table:
    return SAMPLE_SCHEMA.empty_table()


def load_samples(run_dir: str, per_reason: int | None = None, seed: int = 0,
                 passes: list[PassDir] | None = None, files: PassFiles | None = None) -> pa.Table:
    """All shards' samples; with ``per_reason``, a run-wide weighted sample of at most that many
    rows per (stage, reason). Rows come back sorted by stage order of appearance, reason, id.
    ``passes``: only these passes' samples (a (stage, reason)'s pick is the same either way).
    ``files``: the command's listings (`report`'s: `status` listed samples/ already)."""
    directories = [d.samples_dir for d in (passes if passes is not None else RunDir(run_dir).document_pass_dirs())]
    # one LIST a directory on S3 (a look first was a HEAD and a LIST more; h156)
    files = files or PassFiles()
    uris = [uri for directory in directories for uri in files.files(directory, (".parquet",))]
    # a file a shard per pass: read ahead, not one after another (a request each on S3)
    tables = [_conform(t) for t in read_ahead(parquet.read_table, uris) if t.num_rows]
    if not tables:
        return empty_samples()
    table = pa.concat_tables(tables)
    return table if per_reason is None else pick_per_reason(table, per_reason, seed)


def pick_per_reason(table: pa.Table, per_reason: int, seed: int = 0) -> pa.Table:
    """Of every shard's samples (:func:`load_samples` without ``per_reason``), a run-wide weighted
    sample of at most ``per_reason`` rows per (stage, reason) (see :func:`load_samples`)."""
    rows = table.to_pylist()
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    sampled_per_shard: dict[tuple[str, str, str], int] = {}
    for r in rows:
        groups.setdefault((r["stage"], r["reason"]), []).append(r)
        key = (r["stage"], r["reason"], r["shard"])
        sampled_per_shard[key] = sampled_per_shard.get(key, 0) + 1
    picked: list[dict[str, Any]] = []
    for (stage, reason), members in groups.items():
        if len(members) > per_reason:
            rng = np.random.default_rng(seed_for(str(seed), stage, reason))
            members = sorted(members, key=lambda r: (r["shard"], r["id"]))  # order-independent input
            u = rng.random(len(members))
            weights = [max(r["population"], 1) / sampled_per_shard[(stage, reason, r["shard"])] for r in members]
            keys = [math.log(x) / w for x, w in zip(u, weights)]  # log(u^(1/w)): larger is better
            order = sorted(range(len(members)), key=lambda i: -keys[i])[:per_reason]
            members = [members[i] for i in order]
        picked.extend(sorted(members, key=lambda r: r["id"] or ""))
    return pa.Table.from_pylist(picked, schema=SAMPLE_SCHEMA)


def _conform(table: pa.Table) -> pa.Table:
    """A shard's samples in :data:`SAMPLE_SCHEMA`: samples written before a column existed
    (``evidence``, session 48) get it as nulls, so a report reads a run made before it."""
    for field in SAMPLE_SCHEMA:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(SAMPLE_SCHEMA.names).cast(SAMPLE_SCHEMA)


def metrics_json(values: dict[str, Any]) -> str:
    clean = {}
    for k, v in values.items():
        if isinstance(v, float):
            v = None if math.isnan(v) or math.isinf(v) else float(f"{v:.6g}")  # float32 noise off
        clean[k] = v
    return json.dumps(clean, sort_keys=True, default=str)
