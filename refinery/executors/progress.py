"""One progress display for every pass: a tqdm bar (on a terminal) plus periodic log lines that
name the pass, the task that just finished, counts, throughput and an ETA."""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING

from tqdm import tqdm

if TYPE_CHECKING:
    from refinery.executors.base import TaskOutcome

log = logging.getLogger("refinery.progress")


class TaskProgress:
    def __init__(self, total: int, label: str, units: str = "docs", enabled: bool = True, log_every_s: float = 30.0) -> None:
        self.total = total
        self.label = label
        self.units = units
        self.started = time.time()
        self.amount = 0
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.log_every_s = log_every_s
        self._last_log = self.started
        self.bar = tqdm(total=total, unit="task", desc=label, disable=not enabled or not sys.stderr.isatty(),
                        dynamic_ncols=True, leave=False)

    def update(self, outcome: "TaskOutcome") -> None:
        self.counts[outcome.status] += 1
        if outcome.status == "done":
            self.amount += int(outcome.result.get(self.units, 0) or 0)
        elapsed = max(time.time() - self.started, 1e-9)
        rate = self.amount / elapsed
        self.bar.set_postfix({self.units: self.amount, "per_s": f"{rate:.0f}", "failed": self.counts["failed"]})
        self.bar.update(1)
        finished = sum(self.counts.values())
        now = time.time()
        if now - self._last_log >= self.log_every_s or finished == self.total or outcome.status == "failed":
            eta = (self.total - finished) * elapsed / finished if finished else float("nan")
            msg = (f"[{self.label}] {outcome.name} {outcome.status}: {finished}/{self.total} tasks "
                   f"({self.counts['skipped']} skipped, {self.counts['failed']} failed), {self.amount} {self.units}, "
                   f"{rate:.1f} {self.units}/s, ETA {eta:.0f}s")
            log.info(msg)
            self._last_log = now

    def close(self) -> None:
        self.bar.close()
