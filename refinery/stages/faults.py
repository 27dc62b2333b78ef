"""Fault injection for reliability tests and chaos drills: a pass-through stage that kills its
worker process (or raises) the first time it sees a matching shard.

Never put it in a production config. It exists so the fault tests (tests/test_faults.py) and
anyone chaos-testing a cluster can kill a worker *mid-shard* deterministically, through the same
config -> executor -> worker path as a real run: a stage registered only inside the test process
would not exist in the executor's spawned workers or Ray workers.

"First time" is tracked by a marker file per shard source in ``marker_dir``, created (and
fsynced) just before the fault fires, so the re-run of the same shard passes through.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from typing import Literal

import pyarrow as pa

from refinery.stages.base import Stage, with_decision


class FaultInjection(Stage):
    kind = "fault_injection"
    reads_text = False

    def __init__(
        self,
        name: str | None = None,
        marker_dir: str = "",
        match: str = "",
        mode: Literal["exit", "sigkill", "raise", "hang"] = "exit",
        after_batches: int = 1,
        exit_code: int = 137,
    ) -> None:
        super().__init__(name)
        if not marker_dir:
            raise ValueError("marker_dir is required (where 'already failed once' markers go)")
        self.marker_dir = marker_dir
        self.match = match
        self.mode = mode
        self.after_batches = int(after_batches)
        self.exit_code = int(exit_code)
        self._seen: dict[str, int] = {}

    def _marker(self, source: str) -> str:
        return os.path.join(self.marker_dir, hashlib.sha1(source.encode()).hexdigest()[:16] + ".fault")

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        sources = batch.column("source").to_pylist() if "source" in batch.schema.names else []
        source = next((s for s in sources if s), "")
        if source and self.match in source:
            self._seen[source] = self._seen.get(source, 0) + 1
            marker = self._marker(source)
            if self._seen[source] > self.after_batches and not os.path.exists(marker):
                os.makedirs(self.marker_dir, exist_ok=True)
                with open(marker, "w") as f:
                    f.write(f"{source}\npid={os.getpid()}\n")
                    f.flush()
                    os.fsync(f.fileno())
                if self.mode == "hang":  # a worker stuck for good (a C call, a dead mount) that SIGTERM cannot stop
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                    while True:
                        time.sleep(3600)
                if self.mode == "raise":
                    raise RuntimeError(f"injected fault in {source}")
                if self.mode == "sigkill":
                    os.kill(os.getpid(), signal.SIGKILL)
                os._exit(self.exit_code)  # like the OOM killer: no cleanup, no finally blocks
        return with_decision(batch, [None] * batch.num_rows)
