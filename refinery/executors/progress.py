"""One progress display for every pass: a tqdm bar (on a terminal) plus periodic log lines that
name the pass, the task that just finished, counts, throughput and an ETA.

While the bar is shown, log records that would go to the terminal go through ``tqdm.write``
(:class:`TqdmLogHandler`), which clears the bar, prints the line and redraws the bar below it:
log lines and the bar never overwrite each other. Off a terminal there is no bar."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

if TYPE_CHECKING:
    from refinery.executors.base import TaskOutcome

log = logging.getLogger("refinery.progress")


class TqdmLogHandler(logging.Handler):
    """Writes records with ``tqdm.write`` to ``stream``, so a progress bar on that stream is
    cleared first and redrawn after the line. Takes over the level, formatter and filters (the
    credential redaction) of the handler it stands in for."""

    def __init__(self, stream: object = None, like: logging.Handler | None = None) -> None:
        super().__init__(level=like.level if like is not None else logging.NOTSET)
        self.stream = stream if stream is not None else sys.stderr
        if like is not None:
            self.setFormatter(like.formatter)
            for f in like.filters:
                self.addFilter(f)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _is_terminal_handler(handler: logging.Handler, stream: object) -> bool:
    return type(handler) is logging.StreamHandler and getattr(handler, "stream", None) is stream


class bar_logging:  # noqa: N801 - used like a function: ``with bar_logging(): ...`` or start()/stop()
    """Swap the root logger's handlers that write to ``stream`` (stderr) for :class:`TqdmLogHandler`
    while a bar is shown there; :meth:`stop` puts them back."""

    def __init__(self, stream: object = None, logger: logging.Logger | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.logger = logger or logging.getLogger()
        self.swapped: list[tuple[logging.Handler, logging.Handler]] = []

    def start(self) -> "bar_logging":
        for handler in list(self.logger.handlers):
            if _is_terminal_handler(handler, self.stream):
                replacement = TqdmLogHandler(self.stream, like=handler)
                self.logger.removeHandler(handler)
                self.logger.addHandler(replacement)
                self.swapped.append((handler, replacement))
        return self

    def stop(self) -> None:
        for handler, replacement in self.swapped:
            self.logger.removeHandler(replacement)
            self.logger.addHandler(handler)
        self.swapped = []

    def __enter__(self) -> "bar_logging":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ProcessProgress:
    """What this process's task maps have done so far: per label (a pass), the tasks it was given,
    done and failed, and the documents read; and when a task last finished. A job's heartbeat carries
    it (``snapshot``), so the watchdog judges progress from a few heartbeat objects instead of
    listing the whole run output on every poll (~4,000 LIST pages per poll for a 90k-file crawl,
    against a 300 s Lambda timeout: found by adversarial testing)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._labels: dict[str, dict[str, int]] = {}
        self._last: float | None = None

    def reset(self) -> None:
        with self._lock:
            self._labels, self._last = {}, None

    def _entry(self, label: str) -> dict[str, int]:
        return self._labels.setdefault(label, {"tasks": 0, "done": 0, "failed": 0, "docs": 0})

    def started(self, label: str, tasks: int) -> None:
        with self._lock:
            self._entry(label)["tasks"] += tasks
            self._last = time.time()  # a pass under way is progress: its first shard may take long

    def finished(self, label: str, status: str, docs: int) -> None:
        with self._lock:
            entry = self._entry(label)
            if status in ("done", "failed"):
                entry[status] += 1
            entry["docs"] += docs
            self._last = time.time()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            last = (datetime.fromtimestamp(self._last, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                    if self._last is not None else None)
            return {"last_progress": last, "passes": {k: dict(v) for k, v in self._labels.items()}}


#: this process's progress (the driver's: the task maps run there)
PROCESS_PROGRESS = ProcessProgress()


#: seconds between a pass's progress lines (a task finished, or the heartbeat while none did),
#: unless ``REFINERY_PROGRESS_LOG_EVERY_S`` says otherwise
PROGRESS_LOG_EVERY_S = 30.0


#: seconds between two heartbeat lines at least, whatever ``REFINERY_PROGRESS_LOG_EVERY_S`` says: at
#: 0 (a line for every task) the wait woke every 50 ms and logged "still working" 20 times a second
#: while a long task ran (h162)
HEARTBEAT_MIN_S = 1.0


def progress_log_every_s() -> float:
    from refinery.executors.base import env_seconds  # base imports this module

    seconds = env_seconds("REFINERY_PROGRESS_LOG_EVERY_S")
    return PROGRESS_LOG_EVERY_S if seconds is None else seconds


#: the bar's (columns, rows) where the terminal reports none: a pseudo-terminal of 0 x 0 (`script`
#: without a terminal of its own, some `docker exec -t`). tqdm took 0 rows for "no room" and drew
#: nothing, and 0 columns for a width of -1 (a bar one character wide, its line's end cut: h170)
DEFAULT_TERMINAL = (80, 24)


def _bar_shape(stream: Any) -> dict[str, Any]:
    """tqdm's size settings for a bar on ``stream``: following the terminal's size, or a fixed
    :data:`DEFAULT_TERMINAL` one where the terminal reports 0 columns or rows."""
    try:
        columns, rows = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no terminal to ask: tqdm's own guess
        return {"dynamic_ncols": True}
    if columns > 0 and rows > 0:
        return {"dynamic_ncols": True}
    return {"ncols": (columns or DEFAULT_TERMINAL[0]) - 1, "nrows": rows or DEFAULT_TERMINAL[1]}


class TaskProgress:
    def __init__(self, total: int, label: str, units: str = "docs", enabled: bool = True,
                 log_every_s: float | None = None) -> None:
        self.total = total
        self.label = label
        self.units = units
        self.started = time.time()
        self.amount = 0
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.log_every_s = progress_log_every_s() if log_every_s is None else log_every_s
        self._last_log = self.started
        #: task name -> when it was submitted: the heartbeat names the oldest running one
        self._running: dict[str, float] = {}
        shown = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, unit="task", desc=label, disable=not shown, leave=False,
                        **(_bar_shape(sys.stderr) if shown else {}))
        # log lines above the bar, never through it
        self._logging = bar_logging(sys.stderr)
        if not self.bar.disable:
            self._logging.start()
        PROCESS_PROGRESS.started(label, total)

    def submitted(self, name: str) -> None:
        """A task of the pass was handed to a worker (the heartbeat says which run, since when)."""
        self._running[name] = time.time()  # a retry starts its clock again

    def heartbeat_in(self) -> float:
        """Seconds until the next heartbeat is due: how long the executor may wait for a task."""
        return max(self._last_log + self._heartbeat_every_s() - time.time(), 0.05)

    def _heartbeat_every_s(self) -> float:
        return max(self.log_every_s, HEARTBEAT_MIN_S)

    def heartbeat(self) -> None:
        """A line when no task finished for ``log_every_s``: a pass of few long tasks (a suffix
        array over a partition, a cluster step) was silent until its first task ended -- minutes on
        a log without a terminal (CloudWatch). Says which tasks run and for how long."""
        now = time.time()
        if now - self._last_log < self._heartbeat_every_s():
            return
        finished = sum(self.counts.values())
        elapsed = max(now - self.started, 1e-9)
        running = sorted(self._running.items(), key=lambda item: item[1])
        oldest = (f"; {len(running)} in flight, the oldest {running[0][0]} for {now - running[0][1]:.0f}s"
                  if running else "")
        log.info("[%s] still working: %d/%d tasks (%d skipped, %d failed), %d %s, %.1f %s/s, ETA %s%s",
                 self.label, finished, self.total, self.counts["skipped"], self.counts["failed"], self.amount,
                 self.units, self.amount / elapsed, self.units, self._eta(finished, elapsed), oldest)
        self._last_log = now

    def _eta(self, finished: int, elapsed: float) -> str:
        # from finished tasks only: before the first one, unknown (not a made-up 0s)
        return f"{(self.total - finished) * elapsed / finished:.0f}s" if finished else "unknown"

    def update(self, outcome: "TaskOutcome") -> None:
        self._running.pop(outcome.name, None)
        self.counts[outcome.status] += 1
        amount = int(outcome.result.get(self.units, 0) or 0) if outcome.status == "done" else 0
        self.amount += amount
        PROCESS_PROGRESS.finished(self.label, outcome.status, amount if self.units == "docs_read" else 0)
        elapsed = max(time.time() - self.started, 1e-9)
        rate = self.amount / elapsed
        self.bar.set_postfix({self.units: self.amount, "per_s": f"{rate:.0f}", "failed": self.counts["failed"]})
        self.bar.update(1)
        finished = sum(self.counts.values())
        now = time.time()
        if now - self._last_log >= self.log_every_s or finished == self.total or outcome.status == "failed":
            msg = (f"[{self.label}] {outcome.name} {outcome.status}: {finished}/{self.total} tasks "
                   f"({self.counts['skipped']} skipped, {self.counts['failed']} failed), {self.amount} {self.units}, "
                   f"{rate:.1f} {self.units}/s, ETA {self._eta(finished, elapsed)}")
            log.info(msg)
            self._last_log = now

    def close(self) -> None:
        self.bar.close()
        self._logging.stop()


#: seconds between a long task's own progress lines (the filter pass's within-shard lines, which a
#: worker prints itself, on Ray through its log forwarding; a substring partition's steps), unless
#: ``REFINERY_SHARD_LOG_EVERY_S`` says otherwise (0: after every batch)
SHARD_LOG_EVERY_S = 10.0


def shard_log_every_s() -> float:
    """The within-task progress lines' interval: ``REFINERY_SHARD_LOG_EVERY_S``, else
    :data:`SHARD_LOG_EVERY_S`. Read in the worker (Ray workers get ``REFINERY_*`` from the driver)."""
    from refinery.executors.base import env_seconds  # base imports this module

    seconds = env_seconds("REFINERY_SHARD_LOG_EVERY_S")
    return SHARD_LOG_EVERY_S if seconds is None else seconds


class StepLines:
    """Progress lines from inside one long task (a worker prints them itself, as the filter pass's
    within-shard lines): ``<prefix> <stage>: n/N <units>, rate/s, ETA``, at most every
    ``every_s`` seconds. The executor's heartbeat only knows that the task still runs; this says
    where in it the task is. Costs a clock read per call."""

    def __init__(self, prefix: str, logger: logging.Logger, every_s: float | None = None) -> None:
        self.prefix, self.logger = prefix, logger
        self.every_s = shard_log_every_s() if every_s is None else every_s
        self._last = time.time()
        self._stage: str | None = None
        self._stage_started = self._last

    def __call__(self, stage: str, done: float, total: float, units: str) -> None:
        now = time.time()
        if stage != self._stage:  # rates and ETAs are per stage: a sort is not a tokenizer
            self._stage, self._stage_started = stage, now
        if now - self._last < self.every_s:
            return
        self._last = now
        elapsed = max(now - self._stage_started, 1e-9)
        if not done:  # nothing to measure a rate by yet: the stage's start
            self.logger.info("%s %s: 0/%s %s, starting", self.prefix, stage, f"{total:,.0f}", units)
            return
        self.logger.info("%s %s: %s/%s %s, %.1f %s/s, ETA %.0fs", self.prefix, stage, f"{done:,.0f}", f"{total:,.0f}",
                         units, done / elapsed, units, elapsed * (total - done) / done)
