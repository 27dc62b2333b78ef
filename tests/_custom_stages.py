"""Stages written as a user of the library would write their own (tests/test_custom_stages.py):
in a module, so that spawned worker processes can import them by name."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa

from refinery.stages.base import Stage, with_decision


class Shouting(Stage):
    """Removes documents whose letters are more than ``max_upper`` upper case."""

    kind = "shouting"

    def __init__(self, name: str | None = None, max_upper: float = 0.2) -> None:
        super().__init__(name)
        self.max_upper = max_upper

    def metric_columns(self) -> list[str]:
        return ["upper_frac"]

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        fracs = []
        for text in batch.column("text").to_pylist():
            letters = [c for c in text or "" if c.isalpha()]
            fracs.append(sum(c.isupper() for c in letters) / len(letters) if letters else 0.0)
        reasons = ["too_shouty" if f > self.max_upper else None for f in fracs]
        metrics = [f if r else None for f, r in zip(fracs, reasons)]
        return with_decision(batch, reasons, metrics, extra={"upper_frac": pa.array(fracs, pa.float64())})


class RemoveAll(Stage):
    kind = "remove_all"

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return with_decision(batch, ["all_gone"] * batch.num_rows)


class BreaksContract(Stage):
    """Returns what a stage must not: the ways a first custom stage goes wrong."""

    kind = "breaks_contract"

    def __init__(self, name: str | None = None,
                 mode: Literal["no_reason", "int_reason", "drops_text", "table", "text_metric"] = "no_reason") -> None:
        super().__init__(name)
        self.mode = mode

    def process(self, batch: pa.RecordBatch):  # noqa: ANN201 - deliberately not always a batch
        kept = [None] * batch.num_rows
        if self.mode == "no_reason":
            return batch
        if self.mode == "int_reason":
            return batch.append_column("_reason", pa.array([0] * batch.num_rows))
        if self.mode == "drops_text":
            return with_decision(batch, kept).drop_columns(["text"])
        if self.mode == "table":
            return pa.Table.from_batches([with_decision(batch, kept)])
        return with_decision(batch, kept).append_column("_metric", pa.array(["high"] * batch.num_rows))


_batches_seen = 0


class Stalls(Stage):
    """Keeps every document; while ``REFINERY_TEST_STALL`` names a file, creates it and stalls
    (after ``REFINERY_TEST_STALL_AFTER`` batches of this process) for ``REFINERY_TEST_STALL_SECONDS``
    (600 unless given): a run caught in the middle, to be refused beside, killed or stopped
    (tests/test_runlock.py)."""

    kind = "stalls"

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import os
        import time

        global _batches_seen
        _batches_seen += 1
        marker = os.environ.get("REFINERY_TEST_STALL")
        if marker and _batches_seen > int(os.environ.get("REFINERY_TEST_STALL_AFTER", "0")):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))  # the worker process: a Ray worker is not in the driver's group
            time.sleep(float(os.environ.get("REFINERY_TEST_STALL_SECONDS", "600")))
        return with_decision(batch, [None] * batch.num_rows)


class AllocatorProbe(Stage):
    """Removes nothing; writes, per process it runs in, whether that process maps mimalloc, its
    ``LD_PRELOAD``, and whether a process it starts maps it (tests/test_allocator.py)."""

    kind = "allocator_probe"

    def __init__(self, name: str | None = None, record_dir: str = "") -> None:
        super().__init__(name)
        self.record_dir = record_dir

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import json
        import os
        import subprocess
        from pathlib import Path

        child = subprocess.run(["cat", "/proc/self/maps"], capture_output=True, text=True, check=True).stdout
        record = {"pid": os.getpid(), "mimalloc": "libmimalloc" in Path("/proc/self/maps").read_text(),
                  "LD_PRELOAD": os.environ.get("LD_PRELOAD"), "THP": os.environ.get("MIMALLOC_ALLOW_THP"),
                  "child_mimalloc": "libmimalloc" in child}
        (Path(self.record_dir) / f"{os.getpid()}.json").write_text(json.dumps(record))
        return with_decision(batch, [None] * batch.num_rows)


class _Phrase:
    """A compiled phrase rule, as a user keeps their own helper objects (no ``repr`` of its own)."""

    def __init__(self, phrase: str) -> None:
        self.words = phrase.lower().split()


class Phrases(Stage):
    """Removes documents holding one of ``phrases``; keeps them as its own rule objects under the
    param's name, the way a user's stage may (tests/test_stage_fingerprint.py)."""

    kind = "phrases"

    def __init__(self, name: str | None = None, phrases: list[str] | None = None) -> None:
        super().__init__(name)
        self.phrases = [_Phrase(p) for p in phrases or ["buy now"]]

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        reasons = []
        for text in batch.column("text").to_pylist():
            words = " ".join((text or "").lower().split())
            reasons.append("phrase" if any(" ".join(p.words) in words for p in self.phrases) else None)
        return with_decision(batch, reasons)
