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


def test_substring_groups_run_in_fresh_workers_only_when_the_held_memory_needs_it(tmp_path, monkeypatch):
    """The substring plan assumes a fresh worker (its grouping decides what is cut, so it cannot
    follow measured memory); when the pool's workers hold more than that leaves room for, the
    groups run in new processes instead: same cuts, and no worker start when not needed."""
    import pyarrow.parquet as pq

    from refinery.dedup.config import DedupConfig
    from refinery.dedup.driver import run_dedup
    from tests._dedup_fixtures import load_cc_docs, make_run_dir

    docs = [d for d in load_cc_docs() if 300 <= len(d["text"].split()) <= 3000][:6]
    span = " ".join(f"boiler{i}plate" for i in range(60))
    shards = {"a": [], "b": []}
    for k, d in enumerate(docs):
        shards["ab"[k % 2]].append({"id": d["id"], "text": d["text"] + f"\n{span}", "url": d["url"]})
    run = make_run_dir(tmp_path, shards)
    fresh_flags: list[bool] = []
    original = LocalExecutor.run

    def spy(self, fn, tasks, **kwargs):
        if kwargs.get("label") == "dedup/substring/suffix_arrays":
            fresh_flags.append(kwargs.get("fresh_workers", False))
        return original(self, fn, tasks, **kwargs)

    monkeypatch.setattr(LocalExecutor, "run", spy)
    texts = []
    for name, hold_mib in (("plain", 0), ("held", 400)):
        with LocalExecutor(2, progress=False) as executor:
            if hold_mib:  # every worker keeps a 400 MiB "model" from an earlier pass
                executor.run(_hold_memory_task, [{"mib": hold_mib}] * 2, label="t", names=["t0", "t1"])
            run_dedup(str(run), str(tmp_path / name), DedupConfig(method="substring", memory_budget="400MiB"), executor)
        kept = pq.read_table(tmp_path / name / "kept")
        texts.append(dict(zip(kept.column("id").to_pylist(), kept.column("text").to_pylist())))
    assert fresh_flags == [False, True]
    assert texts[0] == texts[1] and sum(span in t for t in texts[0].values()) == 1


def test_a_shard_too_large_for_the_substring_budget_is_named(tmp_path, monkeypatch, caplog):
    """A shard is the smallest unit a suffix array is built over: one over the budget runs alone
    and uses more. It used to do so without a word (3.8 GB against 1 GiB: found by adversarial
    testing); the log now names it and what to do."""
    import logging

    from refinery.dedup import driver
    from refinery.dedup.config import DedupConfig
    from refinery.dedup.driver import run_dedup
    from tests._dedup_fixtures import load_cc_docs, make_run_dir

    docs = load_cc_docs()[:40]
    run = make_run_dir(tmp_path, {"small": docs[:2], "large": docs[2:]})
    # bytes per character such that the small shard fits the plan's 16 MiB floor and the large not
    chars = {name: sum(len(d["text"].encode()) for d in part) for name, part in (("small", docs[:2]), ("large", docs[2:]))}
    per_char = 16 * 2**20 / ((chars["small"] + chars["large"]) / 2)
    monkeypatch.setattr(driver, "SUBSTRING_BYTES_PER_CHAR", per_char)
    monkeypatch.setattr(driver, "SUBSTRING_BYTES_PER_TOKEN", 0)
    budget = driver.TASK_BASELINE_BYTES + 16 * 2**20
    with caplog.at_level(logging.WARNING, logger="refinery.dedup"):
        with LocalExecutor(1, progress=False) as executor:
            run_dedup(str(run), str(tmp_path / "out"), DedupConfig(method="substring", memory_budget=budget), executor)
    warned = [r.getMessage() for r in caplog.records if "over the" in r.getMessage()]
    assert len(warned) == 1 and "shard large needs" in warned[0] and "split the input" in warned[0]
