"""Per-task resume inside a dedup index step: the driver records the tasks that finished.

A step stopped after 4 of 6 tasks runs the other 2 on a rerun, and its summary adds up the 4
recorded results with the 2 new ones, as an uninterrupted run's (session 48, h190). The records
are the driver's, written in batches, ``<index>/tasks/<step>/records-<n>.json``: the results that
came back since the last batch, every :data:`RECORDS_EVERY_S` seconds while the step runs and once
more when it stops short (Ctrl-C, SIGTERM, a failed task, a lost cluster). A step that finishes
writes none: its marker (``passes/<step>.json``) stands for them all (a component round, whose
marker is the whole ``components`` step's, writes one batch as it ends). Each task had written its own
record, one PUT a task on S3 (~11 a shard of the recipe; session 49, h205); now a step costs one
PUT per :data:`RECORDS_EVERY_S` at most. A driver killed outright (``kill -9``, a lost host) loses
at most the last seconds' records: those tasks run again, to the same outputs (every write is
atomic), as a task stopped midway always did. A record is written after its task's outputs (the
result comes back once they are), so a record never stands for outputs not all there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from refinery.executors import Executor
from refinery.executors.base import TaskOutcome
from refinery.io import fs
from refinery.io.readahead import read_ahead

if TYPE_CHECKING:
    from refinery.dedup.driver import WorkDir

log = logging.getLogger("refinery.dedup")

#: how often a running step's finished tasks are recorded (one PUT on S3): what a driver killed
#: outright can lose is at most this long a while of finished tasks, a rerun redoes them
RECORDS_EVERY_S = 30.0
_PREFIX = "records-"
#: the step's plan (:meth:`WorkDir.planned`), beside its records
PLAN_FILE = "plan.json"


@contextmanager
def resumable_step(work: WorkDir, step: str, fn: Callable[..., dict[str, Any]], tasks: list[dict[str, Any]],
                   executor: Executor, names: list[str], label: str, units: str = "docs",
                   fresh_workers: bool = False, marked: bool = True) -> Iterator[list[dict[str, Any]]]:
    """Gives the results of ``fn`` over ``tasks``, in task order, running only the tasks without a
    record of a finished run under this fingerprint and with these arguments. ``marked``: the
    caller writes the step's marker inside the ``with``, so a step run to its end writes no
    records; if anything stops it before (a task failed, Ctrl-C, the marker's own write) the
    records of the tasks that finished are written on the way out."""
    records = StepRecords(work, step, [task_digest(work, fn, t) for t in tasks])
    recorded = records.finished()
    todo = [k for k in range(len(tasks)) if k not in recorded]
    if recorded:
        log.info("[dedup %s] %s: %d of %d tasks finished before, running %d", work.method, step, len(recorded),
                 len(tasks), len(todo))

    def finished(outcome: TaskOutcome) -> None:
        if outcome.status != "failed":
            # as a rerun reads it from its record, once: the record and the step's result alike
            outcome.result = as_read(outcome.result)
            records.add(todo[outcome.index], outcome.result)

    try:
        # (every result came through ``finished``: run() raises on a failed task)
        fresh = executor.run(fn, [tasks[k] for k in todo], label=label, names=[names[k] for k in todo],
                             units=units, fresh_workers=fresh_workers, on_outcome=finished)
        by_task = recorded | dict(zip(todo, fresh))
        yield [by_task[k] for k in range(len(tasks))]
    except BaseException:
        records.save(stopping=True)  # what finished before the stop is not redone
        raise
    if not marked:
        records.save()


def task_digest(work: WorkDir, fn: Callable[..., Any], task: dict[str, Any]) -> str:
    """What a task's record must match to stand for it: its function and arguments (the partition
    counts among them), with the index's own paths relative to it (a moved index is the same)."""
    top = work.root.rstrip("/") + "/"

    def relative(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(top):
            return "$index/" + value[len(top):]
        if isinstance(value, (list, tuple)):
            return [relative(v) for v in value]
        if isinstance(value, dict):
            return {k: relative(v) for k, v in value.items()}
        return value

    blob = json.dumps([f"{fn.__module__}.{fn.__qualname__}", relative(task)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class StepRecords:
    """The records of one step's finished tasks: each ``{"k", "fingerprint", "task", "result"}``
    (the task's place, the index's fingerprint, :func:`task_digest`, its result as
    ``_summarize`` adds it up: counts, files per partition, sources, seconds, peak RSS)."""

    def __init__(self, work: WorkDir, step: str, digests: list[str]) -> None:
        self.work, self.step, self.digests = work, step, digests
        self.dir = work.path("tasks", step)
        self._unsaved: list[dict[str, Any]] = []
        self._saved_at = time.monotonic()
        self._next = 0  # the number of the next batch file

    def finished(self) -> dict[int, dict[str, Any]]:
        """The results recorded for these very tasks under this fingerprint, by task (one listing;
        on S3 a GET a batch file, 16 at a time). Records that stand for nothing (another
        fingerprint's, other arguments', a damaged file, everything with ``--force``) are removed
        before any task runs, so a stop midway never leaves one beside outputs rewritten since (a
        shared ``--work-dir`` used by two configs): the matching ones are written anew in one
        batch, then the old files go."""
        # every file but the step's plan: a record file of refinery 0.8.10 (one a task) is stale too
        listed = sorted(uri for uri in fs.list_files_if_any(self.dir, (".json",)) if fs.basename(uri) != PLAN_FILE)
        self._next = 1 + max((_number(uri) for uri in listed), default=-1)
        found: dict[int, dict[str, Any]] = {}
        stale = False
        for batch in read_ahead(_read_batch, [] if self.work.force else listed):
            for record in batch if batch is not None else [None]:
                if self._matches(record):
                    found.setdefault(record["k"], record["result"])
                else:
                    stale = True
        if self.work.force or stale:
            self._unsaved = [{"k": k, "fingerprint": self.work.fingerprint, "task": self.digests[k], "result": r}
                             for k, r in sorted(found.items())]
            self.save()
            for uri in listed:
                fs.delete(uri)
        return found

    def add(self, k: int, result: dict[str, Any]) -> None:
        """Record task ``k``'s result (:func:`as_read`); the batch is written once the last is
        :data:`RECORDS_EVERY_S` old."""
        self._unsaved.append({"k": k, "fingerprint": self.work.fingerprint, "task": self.digests[k],
                              "result": result})
        if time.monotonic() - self._saved_at >= RECORDS_EVERY_S:
            try:
                self.save()
            except Exception as exc:  # noqa: BLE001 - the step goes on; these records wait for the next write
                self._not_saved(exc, "tried again later")

    def save(self, stopping: bool = False) -> None:
        """Write the records not written yet, as one batch file (atomically: a local rename, an S3
        PUT). ``stopping``: on the way out of a stopped step, where a failed write is said and the
        stop goes on (those tasks run again)."""
        self._saved_at = time.monotonic()
        if not self._unsaved:
            return
        uri = fs.join(self.dir, f"{_PREFIX}{self._next:06d}.json")
        try:
            fs.write_bytes(uri, json.dumps({"records": self._unsaved}).encode())
        except Exception as exc:
            if not stopping:
                raise
            self._not_saved(exc, "a rerun runs them again")
            return
        self._next += 1
        self._unsaved = []

    def _not_saved(self, exc: Exception, then: str) -> None:
        log.warning("[dedup %s] %s: %d finished task(s) not recorded (%s): %s", self.work.method, self.step,
                    len(self._unsaved), exc, then)

    def _matches(self, record: Any) -> bool:
        if not isinstance(record, dict):
            return False
        k = record.get("k")
        return (isinstance(k, int) and 0 <= k < len(self.digests) and record.get("fingerprint") == self.work.fingerprint
                and record.get("task") == self.digests[k] and isinstance(record.get("result"), dict))


def as_read(result: dict[str, Any]) -> dict[str, Any]:
    """A fresh result as a rerun reads it from its record (numpy scalars as JSON holds them): the same sums."""
    return json.loads(json.dumps(result, default=_plain))


def _read_batch(uri: str) -> list[Any] | None:
    try:
        batch = json.loads(fs.read_bytes(uri))
    except (ValueError, fs.StorageError):  # damaged, or gone since the listing: nothing finished
        return None
    records = batch.get("records") if isinstance(batch, dict) else None
    return records if isinstance(records, list) else None


def _number(uri: str) -> int:
    digits = fs.basename(uri)[len(_PREFIX):-len(".json")]
    return int(digits) if digits.isdigit() else -1


def _plain(value: Any) -> Any:
    """A numpy scalar or array in a task's result, as JSON holds it."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} in a task result is not JSON")
