"""Where a run stands: shards planned, finished, failed and pending, documents so far, throughput.

Read from the run directory alone (``run.json``, ``stats/*.json`` markers, ``failed/*.json``), so it
works for a run in progress on another machine, locally or on S3.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from refinery.io import fs


@dataclass
class RunStatus:
    run_dir: str
    name: str
    shards_planned: int
    shards_finished: int
    shards_failed: int
    docs_read: int
    docs_kept: int
    shard_seconds: float  # summed over finished shards (CPU-side time, not wall time)
    failed: dict[str, str] = field(default_factory=dict)  # shard -> first line of its error

    @property
    def shards_pending(self) -> int:
        return max(0, self.shards_planned - self.shards_finished - self.shards_failed)

    @property
    def complete(self) -> bool:
        return self.shards_finished == self.shards_planned

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"shards_pending": self.shards_pending, "complete": self.complete}


def run_status(run_dir: str) -> RunStatus:
    manifest_uri = fs.join(run_dir, "run.json")
    if not fs.exists(manifest_uri):
        raise FileNotFoundError(f"no run.json under {run_dir}: is it a refinery run directory?")
    manifest = json.loads(fs.read_bytes(manifest_uri))
    finished = []
    if fs.exists(fs.join(run_dir, "stats")):
        finished = [json.loads(fs.read_bytes(u)) for u in fs.list_files(fs.join(run_dir, "stats"), (".json",))]
    failed: dict[str, str] = {}
    if fs.exists(fs.join(run_dir, "failed")):
        for uri in fs.list_files(fs.join(run_dir, "failed"), (".json",)):
            record = json.loads(fs.read_bytes(uri))
            failed[record["shard"]] = (record.get("error") or "").strip().splitlines()[0] if record.get("error") else ""
    done = {s["shard"] for s in finished}
    failed = {k: v for k, v in failed.items() if k not in done}  # a later run finished it
    return RunStatus(
        run_dir=run_dir,
        name=manifest.get("config", {}).get("name", ""),
        shards_planned=int(manifest.get("shards", len(finished))),
        shards_finished=len(finished),
        shards_failed=len(failed),
        docs_read=sum(s["docs_read"] for s in finished),
        docs_kept=sum(s["docs_kept"] for s in finished),
        shard_seconds=round(sum(s.get("seconds", 0.0) for s in finished), 3),
        failed=failed,
    )
