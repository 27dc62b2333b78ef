"""The Ray executor: shard tasks on a Ray cluster (a local one, or any cluster via ``RAY_ADDRESS``).

Each shard is one Ray task running :func:`refinery.executors.worker.run_task`, the same code the
local process pool runs, so outputs and stats are identical. Failures are retried twice over:

- a *worker crash* (OOM kill, segfault) is retried by Ray itself (``max_retries``);
- a *Python exception* inside a shard is reported by ``run_task`` as a failed outcome (never
  raised, so the error text survives); we resubmit such shards up to ``max_retries`` times
  ourselves (application-level retries), since transient S3/network errors are the usual cause.

Finished shards are skipped on re-run by the runner (their ``stats/<shard>.json`` marker), and
progress goes through :class:`refinery.progress.ShardProgress` like the local executor's.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from refinery.executors import ShardOutcome
from refinery.executors.ray_cluster import cluster_cpus, ensure_ray
from refinery.executors.worker import init_worker_logging, run_task
from refinery.progress import ShardProgress
from refinery.runner import ShardTask

if TYPE_CHECKING:
    from refinery.config import ExecutorConfig

log = logging.getLogger("refinery.executors.ray")

#: shard -> Ray node id of the last successful attempt, from the most recent run in this process
#: (the SageMaker head writes it into its job report: which node ran which shard)
_LAST_PLACEMENT: dict[str, str] = {}

TaskFn = Callable[[dict[str, Any], ShardTask, bool, int], tuple[ShardOutcome, str]]


def shard_task(spec: dict[str, Any], task: ShardTask, force: bool, attempt: int) -> tuple[ShardOutcome, str]:
    """Body of one Ray task: run the shard; return its outcome and the node it ran on."""
    import ray

    init_worker_logging()
    if attempt > 1:
        logging.getLogger("refinery.worker").info("[shard %s] attempt %d", task.shard, attempt)
    return run_task(spec, task, force), ray.get_runtime_context().get_node_id()


def placements() -> dict[str, str]:
    """Which node ran which shard in the most recent :func:`run_ray` call of this process."""
    return dict(_LAST_PLACEMENT)


def run_ray(
    spec: dict[str, Any],
    tasks: list[ShardTask],
    executor: "ExecutorConfig | None" = None,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    on_outcome: Callable[[ShardOutcome], None] | None = None,
) -> list[ShardOutcome]:
    """Run ``tasks`` as Ray tasks; at most ``workers`` in flight (default: the cluster's CPUs)."""
    from refinery.config import ExecutorConfig

    executor = executor or ExecutorConfig(type="ray")
    started = ensure_ray(executor.ray_address, num_cpus=workers, object_store_memory=executor.object_store_memory)
    try:
        return run_ray_tasks(shard_task, spec, tasks, max_retries=executor.max_retries, workers=workers,
                             force=force, progress=progress, on_outcome=on_outcome)
    finally:
        if started:
            import ray

            ray.shutdown()


def run_ray_tasks(
    fn: TaskFn,
    spec: dict[str, Any],
    tasks: list[ShardTask],
    max_retries: int = 2,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    on_outcome: Callable[[ShardOutcome], None] | None = None,
) -> list[ShardOutcome]:
    """Schedule ``fn(spec, task, force, attempt)`` per shard on the connected cluster, with
    bounded concurrency and both kinds of retries; one outcome per task, in completion order."""
    import ray
    from ray.exceptions import RayError

    remote = ray.remote(fn).options(
        num_cpus=1,
        max_retries=max_retries,  # Ray resubmits when the worker process dies
        retry_exceptions=False,  # exceptions are outcomes; retried below with the error kept
        scheduling_strategy="SPREAD",  # share-nothing shards: spread the load over the nodes
        name="refinery-shard",
    )
    limit = max(1, min(workers or cluster_cpus(), len(tasks) or 1))
    spec_ref = ray.put(spec)  # shipped once, not once per task
    queue: deque[tuple[ShardTask, int]] = deque((t, 1) for t in tasks)
    pending: dict[Any, tuple[ShardTask, int]] = {}
    outcomes: list[ShardOutcome] = []
    _LAST_PLACEMENT.clear()
    bar = ShardProgress(len(tasks), enabled=progress, label="ray")
    log.info("ray: %d shard task(s), up to %d in flight, %d retries", len(tasks), limit, max_retries)

    def record(outcome: ShardOutcome) -> None:
        outcomes.append(outcome)
        bar.update(outcome)
        if on_outcome:
            on_outcome(outcome)

    try:
        while queue or pending:
            while queue and len(pending) < limit:
                task, attempt = queue.popleft()
                pending[remote.remote(spec_ref, task, force, attempt)] = (task, attempt)
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task, attempt = pending.pop(ref)
                try:
                    outcome, node = ray.get(ref)
                except RayError as exc:
                    # The worker died max_retries + 1 times (Ray retried already), or the task
                    # could not run at all: report it; nothing was published for the shard.
                    record(ShardOutcome(task.shard, "failed",
                                        error=f"ray task failed after {max_retries} retries: {exc}"))
                    continue
                if outcome.status == "failed" and attempt <= max_retries:
                    first_line = (outcome.error or "").splitlines()[0] if outcome.error else ""
                    log.warning("[shard %s] attempt %d failed (%s); retrying", task.shard, attempt, first_line)
                    queue.append((task, attempt + 1))
                    continue
                if outcome.status != "failed":
                    _LAST_PLACEMENT[outcome.shard] = node
                record(outcome)
    except BaseException:
        for ref in pending:  # don't leave shard tasks running behind an interrupted driver
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
    return outcomes
