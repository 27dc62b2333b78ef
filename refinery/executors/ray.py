"""The Ray executor: the same task functions as the local pool, as Ray tasks on a real cluster
(a local one we start, or the one at ``address`` / ``RAY_ADDRESS``; see :mod:`ray_cluster` for the
one place Ray is initialised).

A dead worker (OOM kill, node loss) and an exception inside a task are retried by the shared
retry loop alone, up to ``max_retries`` times: Ray's own task retries inside each of the loop's
attempts ran a task that kills its worker every time (1 + max_retries)² times, 9 by default
(found by adversarial testing). An exception comes back as a failed outcome with its traceback.

The raylet the driver runs its tasks through dying (killed, out of memory) stops the pass with
:class:`~refinery.executors.base.ClusterLost`, one line, before Ray's C++ core ends the driver
with exit code 1 and no message (:class:`~refinery.executors.ray_cluster.RayletWatch`).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any

from refinery import interrupts
from refinery.executors.base import RELAYED_LOG_KEY, Executor, TaskFn, call_task, relay_log_records
from refinery.executors.local import WORKER_LOG_FORMAT, worker_log_level
from refinery.executors.ray_cluster import RayletWatch, cluster_address, cluster_cpus, ensure_ray
from refinery.io import fs
from refinery.noisy_loggers import quiet_noisy_loggers

log = logging.getLogger("refinery.executors.ray")


class _HeldSummaries(logging.Handler):
    """Holds a task's closing lines (:data:`TASK_SUMMARY`) for the driver instead of printing them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None  # plain text: the args may not pickle
        record.exc_info = None
        self.records.append(record)


def _not_a_summary(record: logging.LogRecord) -> bool:
    return not getattr(record, "task_summary", False)


def _worker_logging(level: int) -> _HeldSummaries:
    """A Ray worker's logging, which nobody configured: stderr (Ray forwards it to the driver) at the
    caller's ``level``, as the local pool's workers (they logged INFO whatever the caller chose),
    and the task's closing lines held for the driver: Ray drops a worker's lines still in flight
    when the driver shuts down (4 of a 6-shard run's "[shard x] done" lines came), and the driver's
    own line per task as well made two lines per shard."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=WORKER_LOG_FORMAT)
    root.setLevel(level)  # a worker of a long-lived cluster serves drivers of other levels
    quiet_noisy_loggers(level)
    held = next((h for h in root.handlers if isinstance(h, _HeldSummaries)), None)
    if held is None:
        for handler in root.handlers:
            handler.addFilter(_not_a_summary)
        held = _HeldSummaries()
        held.addFilter(lambda record: not _not_a_summary(record))
        root.addHandler(held)
    held.records.clear()
    return held


def ray_task(fn: TaskFn, shared: Any, task: dict[str, Any], attempt: int, name: str = "",
             level: int = logging.INFO) -> tuple:
    """:func:`call_task` in a Ray worker logging at ``level``; the task's closing lines travel back
    with its result (:data:`RELAYED_LOG_KEY`), and the driver logs them when the task is done."""
    held = _worker_logging(level)
    fs.executor_kind = "ray_worker"  # credentials missing here are this node's to give
    status, result, error, node = call_task(fn, shared, task, attempt, name)
    if held.records:
        result[RELAYED_LOG_KEY] = list(held.records)
        held.records.clear()
    return status, result, error, node


class RayExecutor(Executor):
    kind = "ray"

    def __init__(self, workers: int | None = None, max_retries: int = 2, progress: bool = True,
                 address: str | None = None, object_store_memory: int | None = None) -> None:
        super().__init__(workers, max_retries, progress)
        self.address = address
        self.object_store_memory = object_store_memory
        self._owns_ray = False
        self._remote: Any = None
        self._remote_fresh: Any = None
        self._refs: dict[Future, Any] = {}  # each submitted task's ObjectRef, by its future
        self._watch: RayletWatch | None = None

    def _connect(self) -> None:
        if self._remote is None:
            self._owns_ray = ensure_ray(self.address, num_cpus=self.workers, object_store_memory=self.object_store_memory)
            import ray

            # owning the connection (ray.init was ours) is not starting the cluster: one joined by
            # address is gone until its owner brings it back up, and the lost-raylet line says so
            started_here = self._owns_ray and cluster_address(self.address) is None
            self._watch = RayletWatch.of_driver(started_here=started_here)

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
        ref = (self._remote_fresh if fresh_worker else self._remote).remote(fn, shared, task, attempt, name,
                                                                               worker_log_level())
        future = ref.future()
        self._refs[future] = ref
        return future

    def _worker_died(self, exc: BaseException, phase: str = "") -> str:
        if self._watch is not None:
            self._watch.probe()  # the raylet's death fails its tasks before the watch's next look
        return f"ray task failed: its worker died (OOM kill, lost node?); retries: {self.max_retries}: {exc}"

    def _lost(self) -> Future | None:
        return self._watch.lost if self._watch is not None else None

    def _gone(self) -> bool:
        """Whether the raylet is gone: then nothing more is asked of it (the core worker may end
        the process when it touches the object store the raylet held)."""
        return self._watch is not None and self._watch.lost.done()

    def _cancel_pending(self) -> None:
        if self._gone():
            return
        import ray

        for ref in self._refs.values():
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished
                pass

    def _relay_finished(self, futures: list[Future], settle_s: float = 2.0) -> None:
        """The closing lines of the tasks that finished as the loop stopped, read from their
        ObjectRefs: the futures were cancelled, results that came after it with them (a Ctrl-C
        dropped the "[shard x] done" line of a shard that was done: 3 of 6 interrupted runs).
        Waits ``settle_s`` at most for the cancelled tasks to end."""
        import ray

        refs = [self._refs[f] for f in futures if f in self._refs]
        self._refs.clear()
        if not refs or self._gone():
            return
        try:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=settle_s)
        except Exception:  # noqa: BLE001 - the cluster is gone: no result to read
            return
        for ref in ready:
            try:
                _status, result, _error, _node = ray.get(ref, timeout=0)
            except Exception:  # noqa: BLE001 - cancelled or its worker died: nothing finished
                continue
            relay_log_records(result)

    def close(self) -> None:
        self._refs.clear()  # an ObjectRef freed after ray.shutdown() ends the process (exit 1, no message)
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if self._owns_ray:
            import signal
            import threading

            import ray

            # a Ctrl-C inside ray.shutdown() left it half done, and the process then exited with
            # code 1 and no message (found by adversarial testing): note it, finish the shutdown,
            # then raise it, so the command line prints its one line
            caught: list[int] = []
            previous = None
            if interrupts._on_sigint in (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)):
                # the command line's handler: it holds the Ctrl-C as well, and a third one still
                # quits a shutdown that hangs (this handler swallowed every one). SIGTERM's alone
                # (SIGINT ignored: a background job) raised inside ray.shutdown(), and Ray was
                # left running (found by adversarial testing)
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
