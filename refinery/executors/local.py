"""The embedded default executor: a process pool on this machine (one worker runs inline)."""

from __future__ import annotations

import functools
import io
import logging
import multiprocessing
import multiprocessing.context
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from logging.handlers import QueueHandler, QueueListener
from multiprocessing import popen_spawn_posix
from pathlib import Path
from typing import Any

from refinery import allocator as allocators, interrupts
from refinery.allocator import Allocator
from refinery.executors.base import Executor, TaskFn, call_task, env_seconds, relay_record
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
                        claim_renewal: Any = None, environment: dict[str, str | None] | None = None) -> None:
    """A pool worker's logging: straight to stderr, or (``queue``) back to the parent process,
    whose handlers then print it, so worker lines never break into the parent's progress bar and
    pass the parent's filters (credential redaction). ``claim_renewal``: the parent's shared stamp
    of its S3 claim's renewals (:func:`refinery.io.runlock.shared_renewal`). ``environment``: the
    variables the worker was started with on top of the parent's (its allocator's preload), with
    the parent's values, put back first: what the worker starts (a helper with ``helper_allocator:
    system``, a stage's own subprocess) sees the parent's environment."""
    if environment:
        allocators.restore_environment(environment)
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


class _PreloadPopen(popen_spawn_posix.Popen):
    """multiprocessing's spawn launcher, but the child is started through ``env VAR=VALUE ...``
    with its allocator's variables (``_variables``, set by the subclass): ``spawnv_passfds`` passes
    no environment, so the only other ways were this process's ``os.environ`` (seen by every
    thread's subprocesses while it is changed: racy, as the pool spawns from its manager thread) or
    ``set_executable`` (global: a library caller's own pools too). A copy of CPython 3.11-3.13's
    ``_launch`` (Lib/multiprocessing/popen_spawn_posix.py), the spawn call its one change."""

    def _launch(self, process_obj: Any) -> None:
        from multiprocessing import reduction, resource_tracker, spawn, util
        from multiprocessing.context import set_spawning_popen

        tracker_fd = resource_tracker.getfd()
        self._fds.append(tracker_fd)
        prep_data = spawn.get_preparation_data(process_obj._name)
        fp = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, fp)
            reduction.dump(process_obj, fp)
        finally:
            set_spawning_popen(None)

        parent_r = child_w = child_r = parent_w = None
        try:
            parent_r, child_w = os.pipe()
            child_r, parent_w = os.pipe()
            cmd = spawn.get_command_line(tracker_fd=tracker_fd,
                                         pipe_handle=child_r)
            self._fds.extend([child_r, child_w])
            # the change: env(1) sets the variables and execs the interpreter, so the loader
            # preloads from the interpreter's first instruction
            assignments = [f"{name}={value}" for name, value in process_obj._variables.items()]
            self.pid = util.spawnv_passfds(_ENV, ["env", *assignments, *cmd], self._fds)
            self.sentinel = parent_r
            with open(parent_w, "wb", closefd=False) as f:
                f.write(fp.getbuffer())
        finally:
            fds_to_close = [fd for fd in (parent_r, parent_w) if fd is not None]
            self.finalizer = util.Finalize(self, util.close_fds, fds_to_close)
            for fd in (child_r, child_w):
                if fd is not None:
                    os.close(fd)


#: coreutils' (or busybox's) env: Linux only, as is the preload
_ENV = b"/usr/bin/env"  # bytes: the path spawnv_passfds execs (the interpreter's is, too)
#: sha256 of CPython's ``popen_spawn_posix.Popen._launch`` that :class:`_PreloadPopen` copies (the
#: same source in 3.8-3.13): under another, the workers start as multiprocessing starts them
_LAUNCH_SHA256 = "3fd508aa79b8aba6267e28e79b08be8985f36a5a389a1da3c39ba4259f515510"


@functools.cache
def preload_launcher_usable() -> bool:
    """Whether :class:`_PreloadPopen` may stand in for multiprocessing's spawn launcher here: the
    launcher it copies is the one of this Python, and ``env`` is there to exec."""
    import hashlib
    import inspect

    try:
        source = inspect.getsource(popen_spawn_posix.Popen._launch)
    except (OSError, TypeError):  # no source (a frozen or stripped install): cannot tell
        return False
    same = hashlib.sha256(source.encode()).hexdigest() == _LAUNCH_SHA256
    if not same:
        log.debug("this Python's multiprocessing launcher is not the one refinery's preloading copy mirrors: "
                     "the pool's workers start on the system's malloc")
    from multiprocessing import spawn

    # env(1) takes any argument holding "=" for one more assignment, not for the interpreter
    return same and os.access(_ENV, os.X_OK) and b"=" not in os.fsencode(spawn.get_executable())


class _PreloadProcess(multiprocessing.context.SpawnProcess):
    """A spawned process started with ``_variables`` on top of this process's environment."""

    _variables: dict[str, str]

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _PreloadPopen(process_obj)


class _PreloadContext(multiprocessing.context.SpawnContext):
    """A spawn context of its own whose processes start with ``variables`` on top of this
    process's environment (one pool's workers: the global spawn context is left alone)."""

    def __init__(self, variables: dict[str, str]) -> None:
        super().__init__()
        self.variables = dict(variables)

    def Process(self, *args: Any, **kwargs: Any) -> _PreloadProcess:  # type: ignore[override]  # noqa: N802
        process = _PreloadProcess(*args, **kwargs)
        process._variables = self.variables
        return process


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
            log.warning("worker pid %s still running %g s after SIGTERM: killed", process.pid, grace_s)
            process.kill()


def terminate_grace_s(default: float) -> float:
    """Seconds a worker has after SIGTERM before SIGKILL: ``REFINERY_TERMINATE_GRACE_S`` if set to
    a number >= 0, else ``default``. Read when a run stops (a bad value must not replace the
    interrupt: it is logged and the default kept)."""
    try:
        seconds = env_seconds("REFINERY_TERMINATE_GRACE_S")
    except ValueError:
        log.warning("REFINERY_TERMINATE_GRACE_S=%r is not a number of seconds >= 0: %g s used",
                    os.environ.get("REFINERY_TERMINATE_GRACE_S", "").strip(), default)
        return default
    return default if seconds is None else seconds


class LocalExecutor(Executor):
    """A pool of ``workers`` processes, started once and reused by every pass of a plan (spawning
    a worker costs ~1 s of imports, and workers keep their loaded models between passes).

    ``workers == 1`` runs tasks in this process. ``fresh_process`` gives every task a new process,
    so its peak RSS is its own (benchmarks). ``allocator``: the workers' malloc, as the extract
    stage's ``helper_allocator`` (:mod:`refinery.allocator`): ``auto`` starts them with mimalloc
    preloaded where the wheel is installed and nothing is preloaded already; this process, and
    what it or the workers start, keep their environment.
    """

    kind = "local"

    def __init__(self, workers: int | None = None, max_retries: int = 2, progress: bool = True,
                 fresh_process: bool = False, allocator: Allocator = "auto") -> None:
        allocators.check_allocator(allocator, "executor allocator")
        super().__init__(workers, max_retries, progress)
        self.fresh_process = fresh_process
        self.allocator = allocator
        self._pool: ProcessPoolExecutor | None = None
        self._fresh_pool: ProcessPoolExecutor | None = None  # one task per process (fresh_workers)
        self._listener: QueueListener | None = None
        self._status_directory: str | None = None

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
        usable = preload_launcher_usable()
        if not usable and self.allocator == "mimalloc":
            log.warning("executor allocator 'mimalloc': this Python's multiprocessing launcher is not the one "
                        "refinery knows how to preload through; the pool's workers run on the system's malloc")
        preload = allocators.preload_variables(self.allocator) if usable else None
        if self.shows_bar() and self._listener is None:  # the plain context's queue: it outlives pools
            self._listener = QueueListener(context.Queue(), _ToParentLogging())
            self._listener.start()
        queue = self._listener.queue if self.shows_bar() and self._listener is not None else None
        kwargs: dict[str, Any] = {
            "mp_context": context if preload is None else _PreloadContext(preload[0]),
            "initializer": init_worker_logging,
            "initargs": (worker_log_level(), queue, os.getpid(), shared_renewal(), preload and preload[1]),
        }
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

    def _worker_died(self, exc: BaseException, phase: str = "") -> str:
        if isinstance(exc, BrokenProcessPool):
            self._pool = self._fresh_pool = None  # unusable now; the next submission starts new ones
            return (f"worker process died (OOM-killed or crashed){' ' + phase if phase else ''}: {exc}"
                    f"{_unguarded_script_hint()}")
        return super()._worker_died(exc, phase)

    def _status_dir(self) -> str | None:
        """The tasks' status files (:func:`refinery.executors.base.note_phase`): a private
        temporary directory of this executor, removed by :meth:`close`."""
        if self.inline:  # a task run here raises its own error: nothing can die unseen
            return None
        if self._status_directory is None:
            import tempfile

            prefix = _status_dir_prefix()
            self._status_directory = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")
            _remove_orphaned_status_dirs(os.path.dirname(self._status_directory), prefix)
        return self._status_directory

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
                    grace_s = terminate_grace_s(self.TERMINATE_GRACE_S)
                    killer = threading.Timer(grace_s, _kill_stragglers, (processes, grace_s))
                    killer.daemon = True
                    killer.start()
                    try:
                        self._shut_down(pool)
                    finally:
                        killer.cancel()
            self._pool = self._fresh_pool = None

    #: how long a worker has to end after SIGTERM before it is killed (SIGKILL) on Ctrl-C
    #: (``REFINERY_TERMINATE_GRACE_S`` overrides it: the test suite waits 1 s, not 5)
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
            if self._status_directory is not None:
                import shutil

                shutil.rmtree(self._status_directory, ignore_errors=True)
                self._status_directory = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None, "_fresh_pool": None, "_listener": None}


def _status_dir_prefix() -> str:
    """``refinery-tasks-HOST-``: the tasks' status directories of this host's drivers, each then
    named by its driver's pid (a /tmp shared by containers has other hosts' pids in it)."""
    import socket

    host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"
    return f"refinery-tasks-{host}-"


def _remove_orphaned_status_dirs(parent: str, prefix: str) -> None:
    """Remove the status directories of this host's drivers that are gone: :meth:`LocalExecutor.close`
    removes its own on every exit a process sees (an error, Ctrl-C, SIGTERM), but a driver killed
    (SIGKILL, the OOM killer, a chaos drill) left its directory in /tmp for good (38 in a day of
    this project's kill tests). A pid reused since only keeps a directory longer."""
    import shutil

    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_exists(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's live process
        return True
    return True


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
