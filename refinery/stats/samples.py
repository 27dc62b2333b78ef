"""Sampled removed documents: a reservoir per (stage, reason) per shard, and a run-wide merged view.

Every shard keeps a uniform random sample of at most ``k`` removed documents per (stage, reason)
(Vitter's algorithm R), seeded from the shard, stage and reason names so a re-run picks the same
documents, whatever the batch size. The sample goes to ``<run>/samples/<shard>.parquet``
(``removed/<shard>.parquet`` already holds *every* removed document; the sample is the small,
readable view: id, url, stage, reason, the metric that triggered the removal, the stage's metric
columns, the removal's evidence (what in the document decided it, when the stage says) and a text
snippet).

:func:`load_samples` merges the shards' samples into one uniform sample per reason across the
run: each sampled row stands for ``population / sampled`` removed documents of its shard, and a
weighted sample without replacement (Efraimidis-Spirakis) picks rows in proportion to that.
"""

from __future__ import annotations

import html as html_lib
import json
import math
import re
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
    if per_reason is None:
        return table
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
