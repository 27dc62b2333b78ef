"""The embedded default executor: a process pool on this machine (one worker runs inline)."""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from typing import Any

from refinery import interrupts
from refinery.executors.base import Executor, TaskFn, call_task, relay_record
from refinery.io.arrow_rows import skip_pandas_probe
from refinery.io.runlock import adopt_renewal, shared_renewal
from refinery.noisy_loggers import quiet_noisy_loggers

log = logging.getLogger("refinery.executors.local")


def _quiet_cancelled_future_race(args: threading.ExceptHookArgs, _previous: Any = threading.excepthook) -> None:
    """A pool whose workers were terminated on Ctrl-C: its manager thread may see them die after
    the run cancelled their futures, and CPython 3.11's ``terminate_broken`` then fails setting an
    exception on a cancelled future (``InvalidStateError``), a traceback after "interrupted" (1 in
    ~12 double Ctrl-Cs in CI). Only that exception of that thread is quieted; the futures were
    cancelled on purpose."""
    from concurrent.futures import InvalidStateError
    from concurrent.futures.process import _ExecutorManagerThread  # type: ignore[attr-defined]

    if isinstance(args.thread, _ExecutorManagerThread) and issubclass(args.exc_type, InvalidStateError):
        log.debug("process pool manager after Ctrl-C: %s", args.exc_value)
        return
    _previous(args)


threading.excepthook = _quiet_cancelled_future_race


#: how a worker process's own log lines look (pool workers writing to stderr, Ray workers)
WORKER_LOG_FORMAT = "%(asctime)s %(levelname)s pid=%(process)d %(name)s: %(message)s"


def worker_log_level() -> int:
    """The level the workers log at: what this process would let through for refinery's loggers
    (INFO from the command line, DEBUG with -v). Workers logged INFO whatever the caller chose, so
    a program or notebook that calls ``run_pipeline`` with logging at WARNING (or unconfigured) got
    a line per shard and per dedup step from every worker (found as a library user)."""
    level = logging.getLogger("refinery").getEffectiveLevel()
    # logging.disable(INFO), a library caller's way to silence everything up to a level, is not
    # in the effective level: workers printed their per-shard lines through it (adversarial review)
    disabled = logging.root.manager.disable
    return max(level, disabled + 1) if disabled else level


def init_worker_logging(level: int = logging.INFO, queue: Any = None, parent_pid: int | None = None,
                        claim_renewal: Any = None) -> None:
    """A pool worker's logging: straight to stderr, or (``queue``) back to the parent process,
    whose handlers then print it, so worker lines never break into the parent's progress bar and
    pass the parent's filters (credential redaction). ``claim_renewal``: the parent's shared stamp
    of its S3 claim's renewals (:func:`refinery.io.runlock.shared_renewal`)."""
    if claim_renewal is not None:
        adopt_renewal(claim_renewal)
    # rensa's Rust thread pool: one thread per worker process, the pool gives the parallelism
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    # Ctrl-C reaches every process of the terminal's group: the parent alone handles it (it stops
    # the workers and prints one line), instead of each worker printing a KeyboardInterrupt traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # blocked since the spawn (_QuietSpawnPool): a Ctrl-C that came while this process started
    # up was held, and the ignore above just discarded it
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    _exit_with_parent(parent_pid)
    skip_pandas_probe()  # a worker runs refinery's stages only: none gives pyarrow pandas objects
    quiet_noisy_loggers(level)
    if queue is None:
        logging.basicConfig(level=level, format=WORKER_LOG_FORMAT)
        return
    root = logging.getLogger()
    root.handlers[:] = [QueueHandler(queue)]
    root.setLevel(level)


def _exit_with_parent(parent: int | None = None, poll_s: float = 0.5) -> None:
    """End this worker within ``poll_s`` of its parent's death (a SIGKILLed driver): an orphaned
    worker would otherwise finish its shard and write it over the next run's output of the same
    directory, long after that run took the directory's lock (found by adversarial testing). The
    parent's pid is polled, not PR_SET_PDEATHSIG, which fires when the *thread* that spawned the
    worker ends, and pools spawn replacement workers from their manager thread.

    ``parent``: the driver's pid as it made the pool. A worker reads ``getppid()`` only once it has
    imported everything (~0.6 s after the spawn): a driver killed in that second had already
    re-parented it, so it watched pid 1 and lived on to write the next run's output (found by
    adversarial testing). It exits at once if its parent is gone already."""
    parent = os.getppid() if parent is None else parent
    if os.getppid() != parent:
        os._exit(3)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


class _ToParentLogging(logging.Handler):
    """Hands a worker's record to the parent's logger of the same name (and so its handlers)."""

    def emit(self, record: logging.LogRecord) -> None:
        relay_record(record)


class _QuietSpawnPool(ProcessPoolExecutor):
    """A process pool whose workers start with SIGINT blocked (a blocked signal mask survives
    fork and exec), until :func:`init_worker_logging` ignores it. A Ctrl-C in the second or so a
    new worker spends importing Python would otherwise kill it with a traceback before it could
    ignore anything; pools with one task per process start workers all the time. The spawning
    thread's SIGINT is held, not lost: it arrives when the mask is restored. (The same trick as
    multiprocessing's resource tracker.)"""

    def _spawn_process(self) -> None:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
        try:
            super()._spawn_process()  # type: ignore[misc]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _kill_stragglers(processes: list[Any], grace_s: float) -> None:
    """Kill (SIGKILL) the worker processes still alive ``grace_s`` seconds after their SIGTERM: a
    worker stuck in a C call that holds SIGTERM, or that ignores it, kept the pool's shutdown, and
    so a Ctrl-C'd run, waiting for good (later Ctrl-Cs are ignored while the run stops)."""
    from multiprocessing.connection import wait as wait_for

    try:
        ended = set(wait_for([p.sentinel for p in processes], timeout=0))  # not exitcode: no reaping
    except (OSError, ValueError):  # a sentinel closed already: that pool is done
        return
    for process in processes:
        if process.sentinel not in ended:
            log.warning("worker pid %s still running %.0f s after SIGTERM: killed", process.pid, grace_s)
            process.kill()


class LocalExecutor(Executor):
    """A pool of ``workers`` processes, started once and reused by every pass of a plan (spawning
    a worker costs ~1 s of imports, and workers keep their loaded models between passes).

    ``workers == 1`` runs tasks in this process. ``fresh_process`` gives every task a new process,
    so its peak RSS is its own (benchmarks).
    """

    kind = "local"

    def __init__(self, workers: int | None = None, max_retries: int = 2, progress: bool = True,
                 fresh_process: bool = False) -> None:
        super().__init__(workers, max_retries, progress)
        self.fresh_process = fresh_process
        self._pool: ProcessPoolExecutor | None = None
        self._fresh_pool: ProcessPoolExecutor | None = None  # one task per process (fresh_workers)
        self._listener: QueueListener | None = None

    @property
    def inline(self) -> bool:
        return self.capacity == 1 and not self.fresh_process

    def shows_bar(self) -> bool:
        """Whether a progress bar will be drawn on stderr (then worker logs go through the parent)."""
        return self.progress and sys.stderr.isatty()

    def pool(self, fresh: bool = False) -> ProcessPoolExecutor:
        if fresh and not self.fresh_process:
            if self._fresh_pool is None:
                self._fresh_pool = self._new_pool(one_task_per_process=True)
            return self._fresh_pool
        if self._pool is None:
            self._pool = self._new_pool(one_task_per_process=self.fresh_process)
        return self._pool

    def _new_pool(self, one_task_per_process: bool) -> ProcessPoolExecutor:
        # "spawn": fork() after pyarrow/fastText threads exist can deadlock a child
        context = multiprocessing.get_context("spawn")
        level = worker_log_level()
        kwargs: dict[str, Any] = {"mp_context": context, "initializer": init_worker_logging,
                                  "initargs": (level, None, os.getpid(), shared_renewal())}
        if self.shows_bar():
            if self._listener is None:
                queue = context.Queue()
                self._listener = QueueListener(queue, _ToParentLogging())
                self._listener.start()
            kwargs["initargs"] = (level, self._listener.queue, os.getpid(), shared_renewal())
        if one_task_per_process:
            kwargs["max_tasks_per_child"] = 1
        return _QuietSpawnPool(self.capacity, **kwargs)

    def _submit(self, fn: TaskFn, shared: Any, task: dict[str, Any], attempt: int, name: str,
                fresh_worker: bool = False) -> Future:
        if self.inline:
            future: Future = Future()
            future.set_result(call_task(fn, shared, task, attempt, name))
            return future
        # submit() may start the pool (its workers, its manager thread): cut there by Ctrl-C, the
        # pool could not be shut down any more
        with interrupts.deferred():
            try:
                return self.pool(fresh_worker).submit(call_task, fn, shared, task, attempt, name)
            except BrokenProcessPool:
                self._pool = self._fresh_pool = None  # a worker died earlier: fresh pools for the retries
                return self.pool(fresh_worker).submit(call_task, fn, shared, task, attempt, name)

    def _worker_died(self, exc: BaseException) -> str:
        if isinstance(exc, BrokenProcessPool):
            self._pool = self._fresh_pool = None  # unusable now; the next submission starts new ones
            return f"worker process died (OOM-killed or crashed): {exc}{_unguarded_script_hint()}"
        return super()._worker_died(exc)

    def abort(self) -> None:
        with interrupts.deferred():
            for pool in (self._pool, self._fresh_pool):
                if pool is not None:
                    # the workers ignore SIGINT (init_worker_logging); without this the parent would
                    # wait for every running shard to finish. ProcessPoolExecutor has no public way
                    # to stop its processes before Python 3.14 (terminate_workers)
                    processes = list((getattr(pool, "_processes", None) or {}).values())
                    for process in processes:
                        process.terminate()
                    # the shutdown right after the SIGTERMs, as before (it wakes the pool's manager
                    # thread before it sees its workers die: else it fails the futures the run
                    # cancelled, InvalidStateError), the SIGKILLs from a timer
                    killer = threading.Timer(self.TERMINATE_GRACE_S, _kill_stragglers, (processes, self.TERMINATE_GRACE_S))
                    killer.daemon = True
                    killer.start()
                    try:
                        self._shut_down(pool)
                    finally:
                        killer.cancel()
            self._pool = self._fresh_pool = None

    #: how long a worker has to end after SIGTERM before it is killed (SIGKILL) on Ctrl-C
    TERMINATE_GRACE_S = 5.0

    @staticmethod
    def _shut_down(pool: ProcessPoolExecutor) -> None:
        """Stop a pool whose run is being interrupted: an error here must not replace the
        KeyboardInterrupt (the command line would print it instead of "interrupted")."""
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        except Exception as exc:  # noqa: BLE001 - the workers are terminated already
            log.debug("process pool shutdown after Ctrl-C: %s: %s", type(exc).__name__, exc)

    def close(self) -> None:
        with interrupts.deferred():  # a pool stopped halfway leaves its manager thread behind
            for pool in (self._pool, self._fresh_pool):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
            self._pool = self._fresh_pool = None
            if self._listener is not None:
                self._listener.stop()  # after the workers are gone: their last records are printed
                self._listener = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None, "_fresh_pool": None, "_listener": None}


@functools.cache
def _unguarded_script_hint() -> str:
    """A hint when the calling program is a script whose code has no ``if __name__ == "__main__":``:
    a spawned worker imports that script again, runs its call to ``run_pipeline`` while starting
    up, and dies of multiprocessing's bootstrapping error, which only its stderr shows (every shard
    was "OOM-killed or crashed": found as a library user). Read once: every dead worker asks."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    try:
        source = Path(path).read_text(encoding="utf-8", errors="replace") if path else ""
    except OSError:
        return ""
    if not source or re.search(r"""__name__\s*==\s*['"]__main__['"]""", source):
        return ""
    return (f"; {path} has no `if __name__ == \"__main__\":` guard: worker processes import it again and "
            "run its code while starting up, so put the call to run_pipeline under one")
