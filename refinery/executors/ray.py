"""The Ray executor: the same task functions as the local pool, as Ray tasks on a real cluster
(a local one we start, or the one at ``address`` / ``RAY_ADDRESS``; see :mod:`ray_cluster` for the
one place Ray is initialised).

A dead worker (OOM kill, node loss) and an exception inside a task are retried by the shared
retry loop alone, up to ``max_retries`` times: Ray's own task retries inside each of the loop's
attempts ran a task that kills its worker every time (1 + max_retries)² times, 9 by default
(found by adversarial testing). An exception comes back as a failed outcome with its traceback.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any

from refinery import interrupts
from refinery.executors.base import Executor, TaskFn, call_task
from refinery.executors.local import WORKER_LOG_FORMAT
from refinery.executors.ray_cluster import cluster_cpus, ensure_ray

log = logging.getLogger("refinery.executors.ray")


def ray_task(fn: TaskFn, shared: Any, task: dict[str, Any], attempt: int, name: str = "") -> tuple:
    """:func:`call_task` in a Ray worker, whose logging nobody configured: the per-shard lines
    ("[shard x] done: ...", retries) were lost on Ray, where the pool's workers print them (found by
    adversarial testing). Ray forwards the worker's stderr to the driver."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format=WORKER_LOG_FORMAT)
    return call_task(fn, shared, task, attempt, name)


class RayExecutor(Executor):
    kind = "ray"
    # a 6-shard run on a local cluster logged 4 of its 6 "[shard x] done" lines: Ray forwards a
    # worker's lines asynchronously and drops those still in flight when the driver shuts down
    # (found by a new user's trial); the driver's own line per shard always reaches the log
    log_each_task = True

    def __init__(self, workers: int | None = None, max_retries: int = 2, progress: bool = True,
                 address: str | None = None, object_store_memory: int | None = None) -> None:
        super().__init__(workers, max_retries, progress)
        self.address = address
        self.object_store_memory = object_store_memory
        self._owns_ray = False
        self._remote: Any = None
        self._remote_fresh: Any = None
        self._refs: list[Any] = []

    def _connect(self) -> None:
        if self._remote is None:
            self._owns_ray = ensure_ray(self.address, num_cpus=self.workers, object_store_memory=self.object_store_memory)
            import ray

            options = dict(
                num_cpus=1,
                max_retries=0,  # a dead worker is the shared loop's to retry (see the module doc)
                retry_exceptions=False,  # call_task never raises: failures are outcomes
                scheduling_strategy="SPREAD",  # share-nothing tasks: spread the load over the nodes
                name="refinery-task",
            )
            self._remote = ray.remote(ray_task).options(**options)
            # fresh_workers: max_calls=1 makes the worker exit after the task (it is not an
            # .options() key), and a runtime env of their own keeps Ray from leasing these tasks
            # to workers that ran others (env_vars merge with the job's runtime env)
            self._remote_fresh = ray.remote(max_calls=1)(ray_task).options(
                **options, runtime_env={"env_vars": {"REFINERY_FRESH_WORKER": "1"}})

    @property
    def capacity(self) -> int:
        self._connect()
        return max(1, min(self.workers or cluster_cpus(), cluster_cpus()))

    def max_in_flight(self) -> int:
        # Ray runs every submitted task a free CPU can take: with fewer workers asked for than the
        # cluster has CPUs, submitting twice as many ran twice as many at once (found by
        # adversarial testing on an existing cluster: --workers 1 ran 2 tasks)
        if self.workers and self.workers < cluster_cpus():
            return self.capacity
        return 2 * self.capacity

    def _prepare_shared(self, shared: dict[str, Any]) -> Any:
        import ray

        self._connect()
        return ray.put(shared)  # shipped once per pass, not once per task

    def _submit(self, fn: TaskFn, shared: Any, task: dict[str, Any], attempt: int, name: str,
                fresh_worker: bool = False) -> Future:
        self._connect()
        ref = (self._remote_fresh if fresh_worker else self._remote).remote(fn, shared, task, attempt, name)
        self._refs.append(ref)
        return ref.future()

    def _worker_died(self, exc: BaseException) -> str:
        return f"ray task failed: its worker died (OOM kill, lost node?); retries: {self.max_retries}: {exc}"

    def _cancel_pending(self) -> None:
        import ray

        for ref in self._refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished
                pass
        self._refs.clear()

    def close(self) -> None:
        self._refs.clear()  # an ObjectRef freed after ray.shutdown() ends the process (exit 1, no message)
        if self._owns_ray:
            import signal
            import threading

            import ray

            # a Ctrl-C inside ray.shutdown() left it half done, and the process then exited with
            # code 1 and no message (found by adversarial testing): note it, finish the shutdown,
            # then raise it, so the command line prints its one line
            caught: list[int] = []
            previous = None
            if signal.getsignal(signal.SIGINT) is interrupts._on_sigint:
                # the command line's handler: it holds the Ctrl-C as well, and a third one still
                # quits a shutdown that hangs (this handler swallowed every one)
                with interrupts.deferred():
                    try:
                        ray.shutdown()
                    finally:
                        self._owns_ray = False
            elif threading.current_thread() is threading.main_thread():
                previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
            if self._owns_ray:
                try:
                    ray.shutdown()
                finally:
                    self._owns_ray = False
                    if previous is not None:
                        signal.signal(signal.SIGINT, previous)
            if caught:
                raise KeyboardInterrupt
        self._remote = self._remote_fresh = None
