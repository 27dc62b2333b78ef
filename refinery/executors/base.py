"""The one executor contract every pass runs on: map a task function over small task dicts.

A *task function* is a plain top-level function taking keyword arguments (small, picklable) and
returning a small dict of counters; it reads its inputs from storage and writes its outputs there,
so nothing large travels through the executor. ``Executor.map(fn, tasks, shared=...)`` calls
``fn(**shared, **task)`` once per task and returns one :class:`TaskOutcome` per task, in task
order. The same loop serves every executor, so there is one retry policy and one progress display:

- a task that raises is reported as a failed outcome (with its traceback text: exceptions do not
  always survive pickling); if the error may be transient (I/O, network, storage: see
  :func:`transient`) it is resubmitted up to ``max_retries`` times, keeping the last error;
- a worker that dies (OOM kill, segfault) fails its task the same way, and is retried the same way;
- a task result with ``skipped: True`` is a task that found its output already finished;
- a task that finds its disk full (``ENOSPC``, ``EDQUOT``) or its file system read-only
  (``EROFS``: Linux remounts a file system read-only after a disk error) stops the pass: every
  task after it would do its whole work and then fail on the same write, three times over. The
  finished tasks' outputs stay; :class:`StorageFull` / :class:`StorageReadOnly` name the task and
  what to do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
from abc import ABC, abstractmethod
import resource
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from refinery import interrupts
from refinery.io import fs, parquet
from refinery.io.fs import InputChangedError, MissingCredentials, StorageError, explain_s3_failure
from refinery.io.runlock import FENCE_KEY, ClaimLost, adopt_fence, fence_token
from refinery.executors.progress import TaskProgress

log = logging.getLogger("refinery.executors")

TaskStatus = Literal["done", "skipped", "failed"]

#: ``extra=`` of a task's one closing line ("[shard x] done: ...") and of its "[x] attempt N" line:
#: an executor whose workers' own lines may never reach the log (Ray drops those in flight when the
#: driver shuts down, and prefixes the others with "(refinery-task pid=...)") carries these records
#: back with the task's result, and the driver logs them (:data:`RELAYED_LOG_KEY`)
TASK_SUMMARY: dict[str, bool] = {"task_summary": True}
#: the result key under which a task's closing log records travel back to the driver
RELAYED_LOG_KEY = "_log_records"
#: a pass of more tasks than this logs their closing lines at DEBUG (``-v`` shows them): one INFO
#: line per task was ~8 lines per shard over the recipe's passes (32,000 at 4,000 shards; session
#: 43, h130). The pass's progress line every 30 s says how far it is; failures and retries still log.
SUMMARY_LINES_MAX_TASKS = 200
#: the key of ``shared`` that tells a task its pass has that many (:func:`call_task` pops it)
QUIET_SUMMARIES_KEY = "_quiet_task_summaries"
_quiet_summaries = False


def summary_level() -> int:
    """The level of a task's closing line (:data:`TASK_SUMMARY`): INFO, DEBUG in a large pass."""
    return logging.DEBUG if _quiet_summaries else logging.INFO
TaskFn = Callable[..., dict[str, Any]]


@dataclass
class TaskOutcome:
    name: str
    status: TaskStatus
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    attempts: int = 1
    node: str | None = None  # where the last attempt ran (Ray node id, or "pid:<n>")
    executor: str = ""  # the kind of executor that ran it ("local", "ray"): whose credentials an S3 refusal is about
    index: int = 0  # its place in the tasks given to map()

    # shard tasks: the outcome of one shard (its name and its stats)
    @property
    def shard(self) -> str:
        return self.name

    @property
    def stats(self) -> dict[str, Any]:
        return self.result

    @property
    def first_error_line(self) -> str:
        return (self.error or "").strip().splitlines()[0] if self.error else ""

    @property
    def error_line(self) -> str:
        """:attr:`first_error_line` as the user is shown it: a raw S3 refusal said as what it means
        (:func:`said_error`); the raw text stays in :attr:`error` (``failed/<shard>.json``) and in
        ``-v``'s log."""
        return said_error(self.first_error_line, self.executor)


def said_error(line: str, executor: str = "") -> str:
    """A task's error ``line`` with pyarrow's or botocore's S3 refusal said as what it means
    (``S3 refused access to s3://b/k (GetObject: 403 Access Denied): the AWS credentials ... are
    wrong, or may not use bucket b; check ...``), whose credentials by the ``executor`` that ran
    the task (its kind: ``"ray"``, the Ray workers'; else this run's); any other line as it is. A
    worker with wrong credentials showed pyarrow's raw text in every shard's line and the summary.
    (Guessed from the task's node id before h124: a local pool in a process that had called
    ``ray.init()``, a notebook's, got the Ray wording.)"""
    whose = "the Ray workers use (each node's own: refinery sends none)" if executor == "ray" else "this run uses"
    return explain_s3_failure(line, whose) or line


class TaskError(RuntimeError):
    """A task of a pass failed after its retries; the message names the pass and the task."""


class ClusterLost(TaskError):
    """The cluster the tasks run on went away (a Ray driver's raylet died): the pass stops there,
    and the finished tasks' outputs stay for a rerun."""


class StorageFull(StorageError):
    """A task found no space left on the device (or its quota) it writes to: the pass stops."""


class StorageReadOnly(StorageError):
    """A task found the file system it writes to read-only: the pass stops."""


#: storage states no retry can change, by errno and by the text pyarrow's errors carry instead
_STOP_ERRNOS = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EROFS: "read_only"}
_STOP_TEXT = {"No space left on device": "full", "Disk quota exceeded": "full", "Read-only file system": "read_only"}
_STOP_ERRORS: dict[str, tuple[type[StorageError], str]] = {
    "full": (StorageFull, "the disk (or quota) it writes to is full; the pass stopped there. Free space, "
                          "then run the same command again: finished shards are kept"),
    "read_only": (StorageReadOnly, "the file system it writes to is read-only (Linux remounts a file system so "
                                   "after a disk error); the pass stopped there. Make it writable, then run the "
                                   "same command again: finished shards are kept"),
}


def storage_stop(exc: BaseException) -> str | None:
    """``"full"`` (disk or quota) or ``"read_only"`` when ``exc`` or anything in its cause chain is
    an ``OSError`` with that errno or text (pyarrow's filesystem errors carry it in text); else None."""
    seen: BaseException | None = exc
    hops = 0
    while seen is not None and hops < 20:
        if isinstance(seen, OSError):
            if seen.errno in _STOP_ERRNOS:
                return _STOP_ERRNOS[seen.errno]
            text = str(seen)
            for phrase, kind in _STOP_TEXT.items():
                if phrase in text:
                    return kind
        seen = seen.__cause__ or seen.__context__
        hops += 1
    return None


def storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything in its cause chain) is a full disk or quota."""
    return storage_stop(exc) == "full"


def _status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``) in bytes; None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident set of this process. Linux: ``VmHWM`` of the current address space --
    ``ru_maxrss`` would carry a parent's peak over into a spawned worker."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def resident_bytes() -> int:
    """Current resident set of this process (Linux ``VmRSS``; 0 where unknown)."""
    return _status_bytes("VmRSS") or 0


def _where() -> str:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            return ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - the driver process, or a Ray version without it
            pass
    return f"pid:{os.getpid()}"


def transient(exc: BaseException) -> bool:
    """Whether an error may go away on a retry: I/O, network and storage errors (anywhere in its
    cause chain). Bad input and bugs fail the same way every time: retrying them only delays the
    report."""
    if permission_denied(exc):
        return False  # a read-only bucket or directory stays read-only: retrying only delays the report
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 50:
        chain.append(seen)
        # ``raise ... from None`` says the error below is not the cause: a truncated zstd file's
        # decoder OSError made its JsonlReadError "transient", retried 3 times (found by adversarial testing)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    if any(isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, InputChangedError)) for e in chain):
        return False  # a missing file does not appear on a retry, nor the version a run listed
    if any(isinstance(e, MissingCredentials) for e in chain):
        return False  # nor credentials in a process started without them (3 attempts per shard on Ray)
    if any(parquet.damaged(e) for e in chain):
        return False  # a damaged Parquet footer (an OSError) reads the same on every attempt
    return any(isinstance(e, (OSError, StorageError, TimeoutError, ConnectionError, MemoryError)) for e in chain)


#: S3 / AWS error codes that mean "you may not", which no retry changes
DENIED_CODES = frozenset({
    "AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId",
    "SignatureDoesNotMatch", "InvalidObjectState", "UnauthorizedOperation", "ExpiredToken", "InvalidToken",
    "AccessDeniedException",
})
_DENIED_TEXT = ("AccessDenied", "Access Denied", "ACCESS_DENIED", "HTTP response code: 403", "(403)",
                "status code: 403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken")


def permission_denied(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything in its cause chain) is a permission error: a 403 AccessDenied
    from S3 (botocore ``ClientError``, or pyarrow's ``OSError`` text), a local ``PermissionError``."""
    seen: BaseException | None = exc
    hops = 0
    while seen is not None and hops < 20:
        if isinstance(seen, PermissionError):
            return True
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            error = response.get("Error") or {}
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if str(error.get("Code", "")) in DENIED_CODES or status == 403:
                return True
        if isinstance(seen, OSError) or type(seen).__name__ in ("StorageError", "S3UploadFailedError"):
            text = str(seen)
            if any(marker in text for marker in _DENIED_TEXT):
                return True
        seen = seen.__cause__ or seen.__context__
        hops += 1
    return False


#: the shared key of the directory where each task notes what it is doing (:func:`note_phase`)
TASK_STATUS_KEY = "__refinery_task_status_dir"
#: bytes of a task's status record at most (rewritten in place: no truncate, one pwrite, ended by a
#: NUL); room for a stage name of ~1,000 non-Latin characters (256 cut a 120-letter Cyrillic name)
_STATUS_BYTES = 4096
_status_fd: int | None = None  # the running task's status file, in a worker process


def task_status_file(directory: str, name: str, attempt: int) -> str:
    """Where the task ``name``'s ``attempt`` notes what it is doing (its name hashed: any characters)."""
    return os.path.join(directory, f"{hashlib.sha1(name.encode()).hexdigest()[:20]}.{attempt}")


def note_phase(text: str) -> None:
    """Note what the running task is doing now (``in stage 'gopher_quality' (gopher_quality)``),
    so the driver can say it if the worker process dies (killed, segfault, OOM) and no error
    comes back. One ``pwrite`` of a page-cache file (~1-2 us); nothing when no executor asked."""
    if _status_fd is not None:
        try:
            os.pwrite(_status_fd, _status_record(text), 0)
        except OSError:  # best effort: the note only names a phase for an error message
            pass


def _status_record(text: str) -> bytes:
    """``text`` as UTF-8, cut at a character's boundary to fit the record, then a NUL (what a
    longer earlier note left after it is not read). A cut in the middle of a character read as
    U+FFFD, and without the stage's closing quote the ``failed/`` record's stage was null."""
    data = text.encode()
    if len(data) >= _STATUS_BYTES:
        data = data[:_STATUS_BYTES - 1].decode(errors="ignore").encode()
    return data + b"\0"


def read_phase(directory: str | None, name: str, attempt: int) -> str:
    """What the task noted last (:func:`note_phase`), or "" (none, or no status directory)."""
    if not directory:
        return ""
    try:
        with open(task_status_file(directory, name, attempt), "rb") as f:
            return f.read(_STATUS_BYTES).split(b"\0", 1)[0].decode(errors="replace").strip()
    except OSError:
        return ""


@contextmanager
def _task_status(directory: str | None, name: str, attempt: int) -> Iterator[None]:
    """The running task's status file, removed when it ends (a dead worker's stays for the driver)."""
    global _status_fd
    if not directory:
        yield
        return
    path = task_status_file(directory, name, attempt)
    try:
        _status_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        _status_fd = None
    try:
        yield
    finally:
        if _status_fd is not None:
            os.close(_status_fd)
            _status_fd = None
            with contextlib.suppress(OSError):
                os.unlink(path)


def call_task(fn: TaskFn, shared: dict[str, Any], task: dict[str, Any], attempt: int,
              name: str = "") -> tuple[str, dict[str, Any], str | None, str]:
    """Run one task where it was sent; never raises (the error text travels back as a string).

    Returns ``(status, result, error, node)``; ``result`` gets ``seconds``, ``peak_rss``, ``pid``.
    A failure that cannot go away on a retry has status ``failed_permanently``; a full disk,
    ``storage_full``; a read-only file system, ``storage_read_only``.
    """
    global _quiet_summaries
    started = time.perf_counter()
    shared = dict(shared)  # the driver's own dict when run inline
    adopt_fence(shared.pop(FENCE_KEY, None))  # this process's writes, fenced as the driver's
    _quiet_summaries = bool(shared.pop(QUIET_SUMMARIES_KEY, False))
    status_dir = shared.pop(TASK_STATUS_KEY, None)
    try:
        with _task_status(status_dir, name, attempt):
            return _call_noted(fn, shared, task, attempt, name, started)
    finally:
        _quiet_summaries = False  # (run inline, the driver's own lines after the task are not a task's)


def _call_noted(fn: TaskFn, shared: dict[str, Any], task: dict[str, Any], attempt: int, name: str,
                started: float) -> tuple[str, dict[str, Any], str | None, str]:
    try:
        if attempt > 1:  # with the attempt's result, as the closing line (TASK_SUMMARY)
            log.info("[%s] attempt %d", name or fn.__name__, attempt, extra=TASK_SUMMARY)
        result = dict(fn(**shared, **task) or {})
    except ClaimLost as exc:  # another command holds the output now: nothing to retry, the pass stops
        return "claim_lost", {}, str(exc), _where()
    except Exception as exc:  # noqa: BLE001 - reported per task, with its traceback
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        stop = storage_stop(exc)
        status = f"storage_{stop}" if stop else "failed" if transient(exc) else "failed_permanently"
        return status, {}, f"{detail}\n{traceback.format_exc(limit=6)}", _where()
    result.setdefault("seconds", round(time.perf_counter() - started, 4))
    result["peak_rss"] = peak_rss_bytes()
    result["pid"] = os.getpid()
    return ("skipped" if result.get("skipped") else "done"), result, None, _where()


class Executor(ABC):
    """Runs task functions; subclasses say where (:meth:`_submit`) and how many at once."""

    kind: str = ""

    def __init__(self, workers: int | None = None, max_retries: int = 2, progress: bool = True) -> None:
        self.workers = workers
        self.max_retries = max_retries
        self.progress = progress
        fs.executor_kind = self.kind  # what a missing-credentials error advises (a Ray cluster's nodes, or not)

    # -- what a subclass provides ------------------------------------------------------------
    @abstractmethod
    def _submit(self, fn: TaskFn, shared: Any, task: dict[str, Any], attempt: int, name: str,
                fresh_worker: bool = False) -> Future:
        """Start ``call_task(fn, shared, task, attempt, name)`` somewhere; its future. With
        ``fresh_worker``, in a worker process that has run nothing before (and runs nothing after)."""

    def _prepare_shared(self, shared: dict[str, Any]) -> Any:
        return shared

    def max_in_flight(self) -> int:
        """Tasks submitted at once: twice the workers, so a worker never waits for the driver (a
        pool runs only ``capacity`` of them; the rest wait in its queue)."""
        return 2 * self.capacity

    @property
    def capacity(self) -> int:
        """How many tasks run at once."""
        return max(1, self.workers or default_workers())

    @property
    def inline(self) -> bool:
        """Whether tasks run in this process as they are submitted (nothing to keep busy)."""
        return False

    def _worker_died(self, exc: BaseException, phase: str = "") -> str:
        """The error text for a future that failed outside the task function (a dead worker);
        ``phase``: what the task noted last (``in stage 'x' (kind)``), "" when not known."""
        return f"worker died{' ' + phase if phase else ''}: {type(exc).__name__}: {exc}"

    def _status_dir(self) -> str | None:
        """A directory the tasks note their phase in (:func:`note_phase`), on this host; None: none
        (the tasks may run on other hosts)."""
        return None

    def close(self) -> None:
        pass

    def _lost(self) -> Future | None:
        """A future that gets a line when the executor can run no more tasks (its cluster went
        away); the loop waits on it with the tasks. None: never."""
        return None

    def _raise_if_lost(self, label: str) -> None:
        lost = self._lost()
        if lost is not None and lost.done():
            raise ClusterLost(f"[{label}] {lost.result()}")

    def abort(self) -> None:
        """Stop the tasks still running now (the user pressed Ctrl-C); :meth:`close` follows.
        What they wrote is safe: every write is atomic, and a rerun redoes unfinished shards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.abort()
        self.close()

    # -- the one loop ------------------------------------------------------------------------
    def map(
        self,
        fn: TaskFn,
        tasks: Sequence[dict[str, Any]],
        *,
        label: str,
        names: Sequence[str] | None = None,
        units: str = "docs",
        shared: dict[str, Any] | None = None,
        on_outcome: Callable[[TaskOutcome], None] | None = None,
        fresh_workers: bool = False,
    ) -> list[TaskOutcome]:
        """Run ``fn(**shared, **task)`` for every task; one outcome per task, in task order.

        ``units`` names the result counter the progress display sums (e.g. ``docs_read``).
        ``fresh_workers``: each task in a new worker process, for passes whose memory plan assumes
        a worker that holds nothing yet (models, caches of earlier passes); costs a worker start
        per task. An executor that runs tasks in its own process (one local worker) runs them there.
        """
        names = list(names) if names is not None else [str(i) for i in range(len(tasks))]
        outcomes: list[TaskOutcome | None] = [None] * len(tasks)
        if not tasks:
            return []
        token = fence_token()  # the workers fence their writes as this process does (refinery.io.runlock)
        quiet = {QUIET_SUMMARIES_KEY: True} if len(tasks) > SUMMARY_LINES_MAX_TASKS else {}
        status_dir = self._status_dir()
        status = {TASK_STATUS_KEY: status_dir} if status_dir else {}
        shared_arg = self._prepare_shared(dict(shared or {}) | ({FENCE_KEY: token} if token else {}) | quiet | status)
        queue: deque[tuple[int, int]] = deque((i, 1) for i in range(len(tasks)))
        pending: dict[Future, tuple[int, int]] = {}
        # enough queued to keep every worker busy, not the whole pass; a task run inline is done on
        # submission, so one at a time (a stop or a Ctrl-C then comes before the next task starts)
        limit = 1 if self.inline else self.max_in_flight()
        bar = TaskProgress(len(tasks), label=label, units=units, enabled=self.progress)
        try:
            while queue or pending:
                interrupts.raise_if_requested()  # a Ctrl-C whose KeyboardInterrupt a destructor swallowed
                while queue and len(pending) < limit:
                    i, attempt = queue.popleft()
                    pending[self._submit(fn, shared_arg, tasks[i], attempt, names[i], fresh_workers)] = (i, attempt)
                    bar.submitted(names[i])
                lost = self._lost()
                # woken for the heartbeat too: a pass of few long tasks says it is still at work
                done, _ = wait([*pending, lost] if lost is not None else list(pending), timeout=bar.heartbeat_in(),
                               return_when=FIRST_COMPLETED)
                if not done:
                    bar.heartbeat()
                    continue
                interrupts.raise_if_requested()
                self._raise_if_lost(label)
                # in task order: the first stop is named
                for future in sorted((f for f in done if f in pending), key=lambda f: pending[f]):
                    i, attempt = pending.pop(future)
                    try:
                        status, result, error, node = future.result()
                    except Exception as exc:  # noqa: BLE001 - the worker, not the task, failed
                        phase = read_phase(status_dir, names[i], attempt)  # where it was when it died
                        status, result, error, node = "failed", {}, self._worker_died(exc, phase), None
                        self._raise_if_lost(label)  # not a task's failure: no retry can run
                    relay_log_records(result)
                    if status == "claim_lost":
                        raise ClaimLost(error or f"[{label}] {names[i]}: the output's claim was lost")
                    stop = status[len("storage_"):] if status.startswith("storage_") else None
                    if status == "failed_permanently" or stop:
                        status = "failed"
                    elif status == "failed" and attempt <= self.max_retries:
                        first = (error or "").strip().splitlines()[0] if error else ""
                        log.warning("[%s] %s: attempt %d failed (%s); retrying", label, names[i], attempt, first)
                        queue.append((i, attempt + 1))
                        continue
                    outcome = TaskOutcome(names[i], status, result, error, attempt, node, self.kind, i)  # type: ignore[arg-type]
                    if status == "failed":
                        log.error("[%s] %s failed after %d attempt(s): %s", label, names[i], attempt, outcome.error_line)
                        if outcome.error_line != outcome.first_error_line:  # the raw text, for -v
                            log.debug("[%s] %s: %s", label, names[i], outcome.first_error_line)
                    outcomes[i] = outcome
                    bar.update(outcome)
                    if on_outcome:
                        on_outcome(outcome)
                    if stop:
                        error_type, advice = _STOP_ERRORS[stop]
                        raise error_type(f"[{label}] {names[i]}: {outcome.first_error_line}: {advice}")
        except BaseException:
            for future in pending:  # don't leave tasks running behind an interrupted driver
                future.cancel()
            self._cancel_pending()
            self._relay_finished(list(pending))
            raise
        finally:
            bar.close()
            # an exception's traceback keeps this frame, and so these futures, alive: a Ray future
            # freed after ray.shutdown() ends the process with exit code 1 and no message
            pending.clear()
            done = ()
        return [o for o in outcomes if o is not None]

    def _cancel_pending(self) -> None:
        pass

    def _relay_finished(self, futures: list[Future]) -> None:
        """Log the closing lines of tasks that finished but were not collected when the loop
        stopped (a Ctrl-C, a storage stop): their outputs stay and a rerun skips them, so their
        line comes now or never."""
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is None:
                relay_log_records(future.result()[1])

    def run(self, fn: TaskFn, tasks: Sequence[dict[str, Any]], *, label: str, names: Sequence[str] | None = None,
            units: str = "docs", shared: dict[str, Any] | None = None, fresh_workers: bool = False,
            on_outcome: Callable[[TaskOutcome], None] | None = None) -> list[dict[str, Any]]:
        """:meth:`map`, for passes whose tasks must all succeed: their results in task order, or
        :class:`TaskError` naming the first failed task (after the others finished, so their
        outputs are kept for a resume)."""
        outcomes = self.map(fn, tasks, label=label, names=names, units=units, shared=shared, fresh_workers=fresh_workers,
                            on_outcome=on_outcome)
        failed = [o for o in outcomes if o.status == "failed"]
        if failed:
            raise TaskError(f"[{label}] task {failed[0].name} failed: {failed[0].error_line}")
        return [o.result for o in outcomes]


def relay_log_records(result: dict[str, Any]) -> None:
    """Log here the records a worker sent back with its ``result`` (:data:`TASK_SUMMARY`), through
    this process's logger of the same name and so its handlers and filters, as a pool's queue does."""
    for record in result.pop(RELAYED_LOG_KEY, None) or ():
        relay_record(record)


def relay_record(record: logging.LogRecord) -> None:
    """Log a worker's ``record`` here as this process's logger of its name would log it: only if
    that logger lets its level through (``Logger.handle`` does not ask: a library caller's
    ``getLogger("refinery.runner").setLevel(WARNING)`` let every relayed "[shard x] done" through)."""
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def make_executor(kind: str = "local", workers: int | None = None, *, ray_address: str | None = None,
                  object_store_memory: int | None = None, max_retries: int = 2, progress: bool = True,
                  allocator: str = "auto") -> Executor:
    """The executor a config or command line names: ``local`` (process pool; one worker runs in
    this process) or ``ray`` (a local Ray cluster, or the one at ``ray_address``/``RAY_ADDRESS``).
    ``allocator``: the local pool's workers' malloc (:class:`~refinery.executors.local.LocalExecutor`);
    Ray's processes are started by Ray and keep the environment they are given."""
    if kind == "local":
        from refinery.executors.local import LocalExecutor

        return LocalExecutor(workers, max_retries=max_retries, progress=progress, allocator=allocator)  # type: ignore[arg-type]
    if kind == "ray":
        from refinery.executors.ray_cluster import check_ray_installed

        check_ray_installed()
        from refinery.executors.ray import RayExecutor

        return RayExecutor(workers, max_retries=max_retries, progress=progress, address=ray_address,
                           object_store_memory=object_store_memory)
    raise ValueError(f"unknown executor {kind!r}: use 'local' or 'ray'")


def env_seconds(name: str) -> float | None:
    """The number of seconds the environment variable ``name`` gives (a number >= 0), None when it
    is unset or blank; ValueError naming it otherwise (NaN too)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # NaN too
        raise ValueError(f"{name}={text!r}: give a number of seconds, 0 or more")
    return seconds
