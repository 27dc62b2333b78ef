"""The embedded default executor: a process pool over shards on one machine."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from refinery.executors import ShardOutcome
from refinery.executors.worker import init_worker_logging, run_task
from refinery.progress import ShardProgress
from refinery.runner import ShardTask

log = logging.getLogger("refinery.executors.local")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def run_local(
    spec: dict[str, Any],
    tasks: list[ShardTask],
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    on_outcome: Callable[[ShardOutcome], None] | None = None,
) -> list[ShardOutcome]:
    """Run ``tasks`` in a pool of ``workers`` processes (in this process when ``workers == 1``)."""
    workers = min(workers or default_workers(), max(1, len(tasks)))
    bar = ShardProgress(len(tasks), enabled=progress, label="local")
    outcomes: list[ShardOutcome] = []

    def record(outcome: ShardOutcome) -> None:
        outcomes.append(outcome)
        bar.update(outcome)
        if on_outcome:
            on_outcome(outcome)

    try:
        if workers == 1:
            for task in tasks:
                record(run_task(spec, task, force))
            return outcomes
        # "spawn": fork() after pyarrow/fastText threads exist can deadlock a child.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker_logging) as pool:
            futures = {pool.submit(run_task, spec, task, force): task for task in tasks}
            for future in as_completed(futures):
                task = futures[future]
                try:
                    record(future.result())
                except BrokenProcessPool as exc:
                    # A worker died (OOM-killed, segfault): its shard and the ones still queued are
                    # reported failed; nothing was published for them, so a re-run redoes them.
                    record(ShardOutcome(task.shard, "failed", error=f"worker process died: {exc}"))
    finally:
        bar.close()
    return outcomes
