"""Unique document ids within a shard, decided once at read time.

Every later pass (dedup above all) relies on ``id`` being non-null and unique within its shard.
Inputs do not promise that (Parquet/JSONL with null or repeated ids, WARCs with a repeated
``WARC-Record-ID``), so the runner passes every reader's batches through :class:`UniqueIds`:

- a null id becomes ``<shard>/<row>`` (``row`` = 0-based position of the document in the shard);
- a repeated id becomes ``<id>#dup<n>`` (``n`` = 1, 2, ... in reading order; the first keeps its id).

Both are deterministic (same input, same ids, on every rerun and machine), and no document is
dropped for its id. Counts go to the shard's ``reader_notes`` (``ids_derived``, ``ids_deduplicated``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa


class UniqueIds:
    """Rewrites the ``id`` column of a shard's batches so ids are non-null and unique."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.derived = 0
        self.deduplicated = 0
        self._seen: set[str] = set()
        self._row = 0

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield self.fix(batch)

    def fix(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        column = batch.column("id")
        ids = column.to_pylist()
        start, self._row = self._row, self._row + len(ids)
        seen = self._seen
        if column.null_count == 0 and len(set(ids)) == len(ids) and seen.isdisjoint(ids):
            seen.update(ids)  # the common case: nothing to rewrite
            return batch
        out: list[str] = []
        for i, doc_id in enumerate(ids):
            if doc_id is None:
                doc_id = f"{self.prefix}/{start + i}"
                self.derived += 1
            if doc_id in seen:
                n, base = 1, doc_id
                while f"{base}#dup{n}" in seen:
                    n += 1
                doc_id = f"{base}#dup{n}"
                self.deduplicated += 1
            seen.add(doc_id)
            out.append(doc_id)
        index = batch.schema.get_field_index("id")
        return batch.set_column(index, batch.schema.field(index).with_type(pa.string()), pa.array(out, pa.string()))

    def notes(self) -> dict[str, int]:
        return {k: v for k, v in (("ids_derived", self.derived), ("ids_deduplicated", self.deduplicated)) if v}


__all__ = ["UniqueIds"]
