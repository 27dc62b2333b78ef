"""Dedup removal stages: apply a dedup index (built by ``refinery dedup`` / :mod:`refinery.dedup`)
to the shards it was built from, through the normal shard runner -- so the kept / removed / stats
layout and "kept + removed = read" come for free.

- ``minhash_dedup`` (:class:`MinhashDuplicateFilter`): removes fuzzy duplicates, reason
  ``minhash_duplicate``, and records the cluster in ``dedup_cluster_id``;
- ``exact_dedup`` (:class:`ExactDuplicateFilter`): same normalized text, ``exact_duplicate``,
  column ``exact_cluster_id``;
- ``url_dedup`` (:class:`UrlDuplicateFilter`): same normalized URL, ``duplicate_url``, column
  ``url_cluster_id``;
- ``substring_dedup`` (:class:`ExactSubstringCut`): cuts duplicated spans out of the text and
  removes documents left with fewer than ``min_words`` words (``exact_substring_too_short``);
  records ``substring_cut_chars`` and, with ``min_words`` above 0, ``substring_words_after_cuts``
  (int32: the words a cut document has left, as ``min_words`` counts them; null on the others).

The cluster id is the doc key of the document each cluster keeps, ``(shard index << 32) | row``
(shard index in the dedup manifest's shard list): the kept representative carries it too, so a
removed document's twin is ``kept`` filtered on the same id. Documents in no cluster get null.

Finding a document: the index is per shard and keyed by document id. The stage learns which shard
it is processing from ``shard=`` (the dedup driver passes it) or, in a YAML pipeline, from the
rows' ``source`` column (the manifest maps each shard's sources to it). Without either it falls
back to one index over all shards, which assumes ids are unique across the whole run.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from refinery.io import fs, parquet
from refinery.stages.base import Stage, with_decision
from refinery.stages.line_corrections import count_words

_CACHE_SHARDS = 2
#: the words a document the substring pass cut has left, which ``min_words`` judges (its histogram)
SUBSTRING_WORDS_AFTER_CUTS = "substring_words_after_cuts"


class DedupIndexError(RuntimeError):
    """The dedup index does not fit the data being processed (the message says how)."""


class _IndexedStage(Stage):
    """Shared plumbing: the manifest, per-shard index tables, shard inference."""

    method: ClassVar[str] = ""
    index_dir: ClassVar[str] = "removals"
    #: columns of the stage's per-shard index; an empty table of it stands for "no entries"
    index_schema: ClassVar[pa.Schema]

    def __init__(self, dedup_dir: str, shard: str | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.dedup_dir = fs.validate_uri(dedup_dir)
        self.shard = shard

    # lazily loaded (dropped when pickled)
    def _manifest(self) -> dict[str, Any]:
        manifest = self.__dict__.get("_lazy_manifest")
        if manifest is None:
            uri = fs.join(self.dedup_dir, "manifest.json")
            data = fs.read_bytes_if_any(uri)  # one GET (a look, then the read, was two requests)
            if data is None:
                raise DedupIndexError(f"{self.name}: no dedup index at {self.dedup_dir} (manifest.json missing)")
            manifest = json.loads(data)
            if manifest.get("method") != self.method:
                raise DedupIndexError(f"{self.name}: {self.dedup_dir} holds a {manifest.get('method')!r} index, "
                                      f"this stage applies {self.method!r}")
            sources: dict[str, str | None] = {}
            for s in manifest.get("shards", []):  # corpus-wide indexes (lines) name no shards
                for src in s.get("sources") or []:
                    sources[src] = s["name"] if src not in sources else None  # None: ambiguous
            manifest["_sources"] = sources
            manifest["_names"] = {s["name"] for s in manifest.get("shards", [])}
            self._lazy_manifest = manifest
        return manifest

    def _table(self, shard: str) -> tuple[pa.Table, dict[str, int]]:
        """The shard's index table and ``id -> row of the table`` (built once per shard)."""
        cache: dict[str, tuple[pa.Table, dict[str, int]]] = self.__dict__.setdefault("_lazy_tables", {})
        entry = cache.get(shard)
        if entry is None:
            if shard not in self._manifest()["_names"]:
                raise DedupIndexError(f"{self.name}: shard {shard!r} is not in the dedup index at {self.dedup_dir}")
            uri = fs.join(self.dedup_dir, self.index_dir, f"{shard}.parquet")
            table = parquet.read_table_if_any(uri)  # one GET on S3: a missing table is an empty one
            table = self.index_schema.empty_table() if table is None else table
            entry = (table, {doc_id: i for i, doc_id in enumerate(table.column("id").to_pylist())})
            while len(cache) >= _CACHE_SHARDS:
                cache.pop(next(iter(cache)))
            cache[shard] = entry
        return entry

    def _global(self) -> tuple[pa.Table, dict[str, int]]:
        entry = self.__dict__.get("_lazy_global")
        if entry is None:
            tables = [self._table(s["name"])[0] for s in self._manifest()["shards"]]
            table = parquet.concat(tables) if tables else self.index_schema.empty_table()
            ids = table.column("id").to_pylist()
            index = {doc_id: i for i, doc_id in enumerate(ids)}
            if len(index) != len(ids):
                raise DedupIndexError(f"{self.name}: document ids repeat across shards, so rows cannot be matched "
                                      f"without knowing the shard; pass shard= or keep a 'source' column")
            entry = self._lazy_global = (table, index)
        return entry

    def _row_tables(self, batch: pa.RecordBatch) -> list[tuple[list[bool] | None, tuple[pa.Table, dict[str, int]]]]:
        """``(row mask or None for all rows, index)`` pairs covering the batch."""
        if self.shard is not None:
            return [(None, self._table(self.shard))]
        manifest = self._manifest()
        if "source" in batch.schema.names:
            sources = pc.unique(batch.column("source")).to_pylist()
            shards = [manifest["_sources"].get(s) if s is not None else None for s in sources]
            if all(shards):
                if len(sources) == 1:
                    return [(None, self._table(shards[0]))]
                column = batch.column("source").to_pylist()
                return [([v == src for v in column], self._table(sh)) for src, sh in zip(sources, shards)]
        return [(None, self._global())]

    def _lookup(self, batch: pa.RecordBatch, columns: list[str]) -> dict[str, pa.Array]:
        """Index columns for each row of the batch (null where the index has no row)."""
        ids = batch.column("id").cast(pa.string()).to_pylist()
        out: dict[str, pa.Array] = {}
        for mask, (table, index) in self._row_tables(batch):
            positions = [index.get(i) if mask is None or mask[k] else None for k, i in enumerate(ids)]
            # a column an older index lacks reads as nulls
            found = {c: (table.column(c).take(pa.array(positions, pa.int64())) if c in table.column_names
                         else pa.nulls(len(positions), self.index_schema.field(c).type)) for c in columns}
            out = found if not out else {c: pc.coalesce(out[c], found[c]) for c in columns}
        return {c: (v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v) for c, v in out.items()}


class DuplicateFilter(_IndexedStage):
    """Removes the documents a cluster-based dedup index marks as removed."""

    reason: ClassVar[str] = ""
    cluster_column: ClassVar[str] = ""

    index_schema = pa.schema([("id", pa.string()), ("row", pa.uint32()), ("cluster_id", pa.int64()),
                              ("removed", pa.bool_()), ("similarity", pa.float32())])

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        found = self._lookup(batch, ["cluster_id", "removed", "similarity"])
        removed = pc.fill_null(found["removed"], False)
        reasons = pc.if_else(removed, pa.scalar(self.reason), pa.scalar(None, pa.string()))
        # MinHash: the estimated Jaccard with the kept copy (null for exact and URL duplicates)
        metrics = pc.if_else(removed, found["similarity"].cast(pa.float64()), pa.scalar(None, pa.float64()))
        return with_decision(batch, reasons.to_pylist(), metrics.to_pylist(),
                             extra={self.cluster_column: found["cluster_id"].cast(pa.int64())})


class MinhashDuplicateFilter(DuplicateFilter):
    kind = "minhash_dedup"
    method = "minhash"
    reason = "minhash_duplicate"
    cluster_column = "dedup_cluster_id"


class ExactDuplicateFilter(DuplicateFilter):
    kind = "exact_dedup"
    method = "exact"
    reason = "exact_duplicate"
    cluster_column = "exact_cluster_id"


class UrlDuplicateFilter(DuplicateFilter):
    kind = "url_dedup"
    method = "url"
    reason = "duplicate_url"
    cluster_column = "url_cluster_id"


def _join_at_seams(pieces: list[str]) -> str:
    """The pieces left around cut spans, joined so that a seam holds one break, not the whitespace
    of both sides (a cut left "the words  The history", two spaces: found by adversarial testing):
    up to two line breaks if the whitespace around it held any (``\r\n`` kept), then the next
    line's indentation (code and nested lists keep their structure); else one space; nothing
    between CJK pieces. The text neither starts nor ends with a seam's whitespace."""
    out = pieces[0]
    for piece in pieces[1:]:
        left, right = out.rstrip(), piece.lstrip()
        before, after = out[len(left):], piece[: len(piece) - len(right)]
        gap = before + after
        if "\n" in gap:
            newline = "\r\n" if "\r\n" in gap else "\n"
            # the indentation of the line the text after the seam starts: the right side's, when
            # the span ended a line; else that of the line the span began on
            side = after if "\n" in after else before
            indent = side[side.rindex("\n") + 1:]
            # the larger break of the two sides: a cut whole line leaves one break, not two
            sep = newline * min(max(before.count("\n"), after.count("\n")), 2) + indent
        else:
            sep = " " if gap else ""
        if not left:  # a cut at the start: the first line keeps its indentation
            out = (sep[sep.rfind("\n") + 1:] if "\n" in sep else "") + right
        elif not right:
            out = out + piece  # whitespace only: carried to the next seam (dropped at the end)
        else:
            out = left + sep + right
    return out.rstrip() if len(pieces) > 1 and not pieces[-1].strip() else out


class ExactSubstringCut(_IndexedStage):
    """Cuts the duplicated spans listed by an EXACTSUBSTR index; drops documents left short.
    Removed documents keep their original text (so the removed samples show what was there)."""

    kind = "substring_dedup"
    method = "substring"
    index_dir = "cuts"
    rewrites_text = True
    reason = "exact_substring_too_short"
    reason_metrics = {reason: SUBSTRING_WORDS_AFTER_CUTS}

    def __init__(self, dedup_dir: str, min_words: int | None = None, shard: str | None = None, name: str | None = None) -> None:
        super().__init__(dedup_dir, shard=shard, name=name)
        if min_words is not None and min_words < 0:
            raise ValueError(f"min_words must be >= 0, got {min_words}")
        self.min_words = min_words

    index_schema = pa.schema([("id", pa.string()), ("starts", pa.list_(pa.int32())),
                              ("ends", pa.list_(pa.int32())), ("cut_tokens", pa.int32())])

    def metric_columns(self) -> list[str]:
        # the words left only with a minimum: at 0 nothing is judged (no column of nulls)
        return ["substring_cut_chars"] + ([SUBSTRING_WORDS_AFTER_CUTS] if self._min_words() > 0 else [])

    def threshold_values(self) -> dict[str, Any]:
        """The minimum it applies, the index's where its params leave it (the stats draw it)."""
        return {"min_words": self._min_words()}

    def _min_words(self) -> int:
        return self.min_words if self.min_words is not None else int(self._manifest().get("min_words", 0))

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        min_words = self._min_words()
        found = self._lookup(batch, ["starts", "ends"])
        texts = batch.column("text").to_pylist()
        starts, ends = found["starts"].to_pylist(), found["ends"].to_pylist()
        new_texts: list[str | None] = []
        reasons: list[str | None] = []
        metrics: list[float | None] = []
        cut_chars: list[int] = []
        words_left: list[int | None] = []  # on the documents cut (the others are not judged)
        for text, s, e in zip(texts, starts, ends):
            if not s or text is None:
                new_texts.append(text)
                reasons.append(None)
                metrics.append(None)
                cut_chars.append(0)
                words_left.append(None)
                continue
            pieces, at = [], 0
            for a, b in zip(s, e):
                pieces.append(text[at:a])
                at = b
            pieces.append(text[at:])
            cut = _join_at_seams(pieces)
            cut_chars.append(len(text) - len(cut))
            words = count_words(cut)  # CJK characters count as words, as in every other stage
            words_left.append(words)
            if words < min_words:
                new_texts.append(text)  # removed: keep the original for inspection
                reasons.append(self.reason)
                metrics.append(float(words))
            else:
                new_texts.append(cut)
                reasons.append(None)
                metrics.append(None)
                self.count("spans_cut", len(s))  # duplicated spans cut from documents kept
        extra = {"text": pa.array(new_texts, pa.string()), "substring_cut_chars": pa.array(cut_chars, pa.int64())}
        if min_words > 0:
            extra[SUBSTRING_WORDS_AFTER_CUTS] = pa.array(words_left, pa.int32())
        return with_decision(batch, reasons, metrics, extra=extra)
