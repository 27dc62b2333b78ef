"""Progress for long runs: a tqdm bar over shards with docs/s and ETA, plus periodic log lines."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

from refinery.executors import ShardOutcome

log = logging.getLogger("refinery.progress")


class ShardProgress:
    def __init__(self, total: int, enabled: bool = True, label: str = "", log_every_s: float = 30.0) -> None:
        self.total = total
        self.started = time.time()
        self.docs = 0
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.label = label
        self.log_every_s = log_every_s
        self._last_log = self.started
        self.bar = tqdm(total=total, unit="shard", desc=f"refinery[{label}]", disable=not enabled or not sys.stderr.isatty(),
                        dynamic_ncols=True)

    def update(self, outcome: ShardOutcome) -> None:
        self.counts[outcome.status] += 1
        if outcome.status == "done":
            self.docs += int(outcome.stats.get("docs_read", 0))
        elapsed = max(time.time() - self.started, 1e-9)
        self.bar.set_postfix(docs=self.docs, docs_s=f"{self.docs / elapsed:.0f}", failed=self.counts["failed"])
        self.bar.update(1)
        finished = sum(self.counts.values())
        now = time.time()
        if now - self._last_log >= self.log_every_s or finished == self.total or outcome.status == "failed":
            eta = (self.total - finished) * elapsed / finished if finished else float("nan")
            log.info(
                "[%s] shard %s %s: %d/%d shards (%d skipped, %d failed), %d docs, %.1f docs/s, ETA %.0fs",
                self.label, outcome.shard, outcome.status, finished, self.total, self.counts["skipped"],
                self.counts["failed"], self.docs, self.docs / elapsed, eta,
            )
            self._last_log = now

    def close(self) -> None:
        self.bar.close()
