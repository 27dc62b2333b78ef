"""Run a pass's tasks: in this process, in a local process pool, or as Ray tasks -- the same
task functions in every case (each reads its inputs from storage and writes its outputs there, so
nothing large travels through the executor).

A task function takes keyword arguments (small, picklable) and returns a small dict of counters;
:func:`run_tasks` adds ``seconds`` and ``peak_rss`` (the worker's peak resident set, bytes).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Literal, Self

from tqdm import tqdm

log = logging.getLogger("refinery.dedup")

ExecutorKind = Literal["inline", "local", "ray"]


class DedupTaskError(RuntimeError):
    """A dedup task failed; the message names the pass and the task."""


@dataclass
class Executor:
    """Where tasks run. ``local`` with one worker runs inline (in this process)."""

    kind: ExecutorKind = "local"
    workers: int | None = None
    ray_address: str | None = None
    object_store_memory: int | None = None
    #: a fresh process per task (local only): peak RSS is then measured per task (benchmarks)
    fresh_process: bool = False
    max_retries: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def pool(self) -> ProcessPoolExecutor:
        """The local process pool, started once and reused by every pass (spawning workers
        costs ~1 s each: numpy, pyarrow and refinery imports)."""
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # fork after pyarrow threads can deadlock
            kwargs: dict[str, Any] = {"mp_context": context, "initializer": _init_worker}
            if self.fresh_process:
                kwargs["max_tasks_per_child"] = 1
            self._pool = ProcessPoolExecutor(self.num_workers, **kwargs)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_pool"} | {"_pool": None}

    @property
    def num_workers(self) -> int:
        if self.workers:
            return self.workers
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def peak_rss_bytes() -> int:
    """Peak resident set of this process. Linux: ``VmHWM`` of the current address space --
    ``ru_maxrss`` would carry over the parent's peak into a spawned (fork + exec) worker."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def _measured(fn: Callable[..., dict[str, Any]], kwargs: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    result = dict(fn(**kwargs) or {})
    result.setdefault("seconds", round(time.perf_counter() - started, 4))
    result["peak_rss"] = peak_rss_bytes()
    result["pid"] = os.getpid()
    return result


def _init_worker() -> None:
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s pid=%(process)d %(name)s: %(message)s")


def init_ray(executor: Executor) -> None:
    """Connect to ``executor.ray_address``, or start a local Ray cluster (one CPU per worker)."""
    import ray

    if ray.is_initialized():
        return
    # Ray 2.60 turns token auth on by default and would ask for a token on a local cluster.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "runtime_env": {"env_vars": {"RAYON_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}}}
    if executor.ray_address:
        ray.init(address=executor.ray_address, **kwargs)
    else:
        ray.init(num_cpus=executor.num_workers, object_store_memory=executor.object_store_memory or 256 * 2**20, **kwargs)


def run_tasks(
    fn: Callable[..., dict[str, Any]],
    tasks: list[dict[str, Any]],
    executor: Executor,
    label: str,
    names: list[str] | None = None,
    units: str = "docs",
) -> list[dict[str, Any]]:
    """Run ``fn(**task)`` for every task; results in task order. Raises :class:`DedupTaskError`
    naming the first failed task (after the others finished, so their outputs are kept)."""
    names = names or [str(i) for i in range(len(tasks))]
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    started = time.time()
    done_units = 0
    last_log = started
    bar = tqdm(total=len(tasks), desc=f"dedup[{label}]", unit="task", disable=not executor.progress or not sys.stderr.isatty())

    def record(i: int, result: dict[str, Any]) -> None:
        nonlocal done_units, last_log
        results[i] = result
        done_units += int(result.get(units, 0) or 0)
        bar.update(1)
        now = time.time()
        finished = sum(r is not None for r in results)
        if now - last_log >= 10 or finished == len(tasks):
            log.info("[%s] %s done (%d/%d tasks), %d %s, %.0f %s/s", label, names[i], finished, len(tasks),
                     done_units, units, done_units / max(now - started, 1e-9), units)
            last_log = now

    errors: list[tuple[int, BaseException | str]] = []
    kind = executor.kind
    if kind == "local" and executor.num_workers == 1 and not executor.fresh_process:
        kind = "inline"
    try:
        if kind == "inline" or not tasks:
            for i, task in enumerate(tasks):
                try:
                    record(i, _measured(fn, task))
                except Exception as exc:  # noqa: BLE001 - re-raised below with the task's name
                    errors.append((i, exc))
                    break
        elif kind == "local":
            pool = executor.pool()
            futures = {pool.submit(_measured, fn, task): i for i, task in enumerate(tasks)}
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = futures[future]
                    try:
                        record(i, future.result())
                    except BrokenProcessPool as exc:  # a worker died (OOM?): the pool is unusable
                        executor._pool = None
                        errors.append((i, exc))
                    except Exception as exc:  # noqa: BLE001
                        errors.append((i, exc))
        elif kind == "ray":
            import ray

            init_ray(executor)
            remote = ray.remote(num_cpus=1, max_retries=executor.max_retries)(_measured)
            refs = {remote.remote(fn, task): i for i, task in enumerate(tasks)}
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    i = refs[ref]
                    try:
                        record(i, ray.get(ref))
                    except Exception as exc:  # noqa: BLE001
                        errors.append((i, exc))
        else:
            raise ValueError(f"unknown executor {kind!r}: use inline, local or ray")
    finally:
        bar.close()
    if errors:
        i, exc = min(errors, key=lambda e: e[0])
        raise DedupTaskError(f"[{label}] task {names[i]} failed: {exc}") from (exc if isinstance(exc, BaseException) else None)
    return [r for r in results if r is not None]
