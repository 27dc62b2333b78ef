"""Dedup partitions are sized above what the workers already hold (issue 17: recipe workers keep
the filter models, ~300 MB, so a fixed fresh-worker baseline let a MinHash task outgrow its budget)."""
from __future__ import annotations

from typing import Any

from refinery.dedup.driver import (
    CANDIDATE_BYTES_PER_ROW,
    TASK_BASELINE_BYTES,
    partitions_for,
    worker_baseline_bytes,
)
from refinery.executors.base import resident_bytes
from refinery.executors.local import LocalExecutor

_HELD: list[bytes] = []


def _hold_memory_task(mib: int) -> dict[str, Any]:
    # what a filter pass leaves in a long-lived worker: models kept for the next shard
    _HELD.append(b"\1" * (mib * 2**20))
    return {"resident": resident_bytes()}


def test_the_baseline_is_what_the_workers_hold_and_shrinks_the_partitions():
    with LocalExecutor(2, progress=False) as executor:
        fresh = worker_baseline_bytes(executor)
        assert fresh >= TASK_BASELINE_BYTES
        # every worker takes a 400 MiB "model"
        executor.run(_hold_memory_task, [{"mib": 400}] * 2, label="t", names=["t0", "t1"])
        loaded = worker_baseline_bytes(executor)
    assert loaded >= 400 * 2**20 > fresh
    budget = 1 * 2**30
    rows = 7_000_000  # ~500k documents x 14 bands
    assert partitions_for(rows, CANDIDATE_BYTES_PER_ROW, budget) == 1  # the old fixed-baseline plan
    assert partitions_for(rows, CANDIDATE_BYTES_PER_ROW, budget, loaded) >= 2
    # never below the fresh-worker floor
    assert partitions_for(rows, CANDIDATE_BYTES_PER_ROW, budget, 0) == partitions_for(rows, CANDIDATE_BYTES_PER_ROW, budget)
