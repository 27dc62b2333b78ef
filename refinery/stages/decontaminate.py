"""The ``decontaminate`` stage: apply a decontamination index (built by the ``decontaminate``
dedup pass, :mod:`refinery.dedup.decontaminate`) to the shards it was built from.

Every document gets three columns, null unless it shares n-grams with a benchmark item:
``contamination_benchmark`` (the benchmark's configured name), ``contamination_item`` (the item's
id) and ``contamination_ngrams`` (distinct n-grams of the document the item shares; the item
sharing most is the one recorded). In ``remove`` mode those documents are removed with reason
``benchmark_contamination``; in ``flag`` mode they are kept, with the columns, for training
code or a later filter to decide.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from refinery.stages.base import with_decision
from refinery.stages.dedup import _IndexedStage

REASON = "benchmark_contamination"


class BenchmarkDecontamination(_IndexedStage):
    kind = "decontaminate"
    method = "decontaminate"
    index_dir = "contaminated"
    index_schema = pa.schema([("id", pa.string()), ("benchmark", pa.string()), ("item", pa.string()),
                              ("ngrams", pa.int32())])

    def __init__(self, dedup_dir: str, mode: str | None = None, shard: str | None = None, name: str | None = None) -> None:
        super().__init__(dedup_dir, shard=shard, name=name)
        if mode not in (None, "remove", "flag"):
            raise ValueError(f"mode must be 'remove' or 'flag', got {mode!r}")
        self.mode = mode

    def metric_columns(self) -> list[str]:
        return ["contamination_ngrams"]

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        mode = self.mode or self._manifest().get("mode", "remove")  # the index records the pass's mode
        found = self._lookup(batch, ["benchmark", "item", "ngrams"])
        ngrams = found["ngrams"].cast(pa.int64())
        extra = {"contamination_benchmark": found["benchmark"].cast(pa.string()),
                 "contamination_item": found["item"].cast(pa.string()),
                 "contamination_ngrams": ngrams}
        if mode == "flag":
            return with_decision(batch, [None] * batch.num_rows, extra=extra)
        hit = pc.is_valid(ngrams)
        reasons = pc.if_else(hit, pa.scalar(REASON), pa.scalar(None, pa.string())).to_pylist()
        metrics = ngrams.cast(pa.float64()).to_pylist()
        return with_decision(batch, reasons, metrics, extra=extra)
