"""Fixtures and helpers for the scale-out tests (Ray executor, SageMaker launchers, bootstrap).

Import what you use into the test module (pytest then finds the fixtures there).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
CC_DOCS = ROOT / "data" / "sample" / "cc_docs"

#: RefinedWeb's document stages that apply to already-extracted text (the cc_docs sample):
#: everything in configs/refinedweb.yaml except extraction. The URL blocklist is off so that each
#: Ray worker does not load 4.5M domains (the URL word lists still run).
CC_STAGES: list[dict[str, Any]] = [
    {"type": "url_filter", "params": {"use_blocklist": False}},
    {"type": "language_id", "params": {"languages": ["en"], "min_score": 0.65}},
    {"type": "gopher_repetition"},
    {"type": "gopher_quality"},
    {"type": "line_corrections"},
]


def cc_spec(name: str = "scale-test", **executor: Any) -> dict[str, Any]:
    """A pipeline config dict over the cc_docs stages."""
    return {"name": name, "reader": {"batch_size": 200}, "executor": {"type": "local", **executor},
            "stages": CC_STAGES}


def copy_cc_docs(dest: Path) -> Path:
    """The 3 real cc_docs shards (717 documents), copied (data/ is read-only)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(CC_DOCS.glob("*.jsonl.gz")):
        shutil.copy(f, dest / f.name)
    return dest


def upload_dir(local: Path, s3_uri: str) -> list[str]:
    """Upload every file under ``local`` to ``s3_uri`` (keys keep the relative paths)."""
    from refinery.io import fs

    uris = []
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        uri = fs.join(s3_uri, f.relative_to(local).as_posix())
        fs.write_bytes(uri, f.read_bytes())
        uris.append(uri)
    return uris


def run_outputs(run_dir: str) -> dict[str, Any]:
    """Everything a run produced, comparable across executors and storages: per shard the kept
    and removed tables (as Python rows) and the stats without timings; plus the merged stats.
    Input locations (``source`` column, ``input`` in stats) are cut to the file name: the same
    file read from S3 or from a local copy is the same input."""
    from refinery.io import fs, parquet

    def untimed(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: (fs.basename(v) if k in ("source", "input") and isinstance(v, str) else untimed(v))
                    for k, v in obj.items() if k not in ("seconds", "index_seconds")}
        if isinstance(obj, list):
            return [untimed(v) for v in obj]
        return obj

    out: dict[str, Any] = {}
    for uri in fs.list_files(fs.join(run_dir, "stats"), (".json",)):
        shard = fs.basename(uri)[: -len(".json")]
        out[shard] = {
            "kept": untimed(parquet.read_table(fs.join(run_dir, "kept", f"{shard}.parquet")).to_pylist()),
            "removed": untimed(parquet.read_table(fs.join(run_dir, "removed", f"{shard}.parquet")).to_pylist()),
            "stats": untimed(json.loads(fs.read_bytes(uri))),
        }
    out["_run"] = untimed(json.loads(fs.read_bytes(fs.join(run_dir, "stats.json"))))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_parquet_dir(path: Path):
    return pq.read_table(path)


# -- Ray ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_local():
    """One real local Ray cluster (2 CPUs, 256 MB object store) per test module: starting Ray
    costs ~8 s on this machine, so the module's tests share it."""
    import ray

    from refinery.executors.ray_cluster import ensure_ray

    # Ray workers cannot import this test-only module: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = ensure_ray(num_cpus=2, object_store_memory=256 * 2**20, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def _attempt(attempts_dir: str, shard: str) -> int:
    """Count this attempt at ``shard`` in a file (attempts happen in other processes)."""
    marker = Path(attempts_dir, shard)
    tries = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(tries))
    return tries


def crash_always(attempts_dir: str):
    """A shard task function whose worker dies on every attempt (a page that OOMs it each time)."""

    def fn(task, **kwargs):
        _attempt(attempts_dir, task.shard)
        os._exit(1)

    return fn


def crash_once(attempts_dir: str):
    """A shard task function that kills its worker process on the first attempt per shard (like
    an OOM kill or a segfault), then runs the real shard task."""

    def fn(task, **kwargs):
        from refinery.runner import run_shard_task

        if _attempt(attempts_dir, task.shard) == 1:
            os._exit(1)
        return run_shard_task(task=task, **kwargs)

    return fn


def after_shard(marker_dir: str, first: str):
    """A shard task function that runs the real shard task, the shards other than ``first`` only
    once ``first`` finished, and leaves a marker ``marker_dir/<shard>`` when a shard is done."""

    def fn(task, **kwargs):
        import time

        from refinery.runner import run_shard_task

        while task.shard != first and not Path(marker_dir, first).exists():
            time.sleep(0.05)
        result = run_shard_task(task=task, **kwargs)
        Path(marker_dir, task.shard).write_text("done")
        return result

    return fn


def fail_first_attempts(attempts_dir: str, n_failures: int):
    """A shard task function whose first ``n_failures`` attempts of every shard raise the way a
    transient S3 error does, then run the real shard task."""

    def fn(task, **kwargs):
        from refinery.runner import run_shard_task

        tries = _attempt(attempts_dir, task.shard)
        if tries <= n_failures:
            raise OSError(f"transient failure #{tries}")
        return run_shard_task(task=task, **kwargs)

    return fn


# -- dedup input ---------------------------------------------------------------------------------
def write_dedup_input(dest: Path, copies: int = 25, per_shard: int | None = None) -> int:
    """Two Parquet shards of real cc_docs documents (id, url, text), the second also holding exact
    copies (new ids) of ``copies`` documents of the first; ``per_shard`` caps each shard's own
    documents (300 and ~420 otherwise). Returns ``copies``."""
    import gzip

    import pyarrow as pa

    rows = []
    for f in sorted(CC_DOCS.glob("*.jsonl.gz")):
        for line in gzip.open(f, "rt", encoding="utf-8"):
            doc = json.loads(line)
            rows.append({"id": str(doc["id"]), "url": (doc.get("metadata") or {}).get("url"), "text": doc["text"]})
    first, second = rows[:300], rows[300:]
    if per_shard is not None:
        first, second = first[:per_shard], second[:per_shard]
    planted = [r for r in first if r["text"].strip()][:copies]  # empty texts are never duplicates
    second = second + [{**r, "id": f"copy-{r['id']}"} for r in planted]
    dest.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(first), dest / "part-a.parquet")
    pq.write_table(pa.Table.from_pylist(second), dest / "part-b.parquet")
    return copies


def worker_pid(**_: object) -> dict:
    """A task function that reports the process it ran in."""
    return {"pid": os.getpid()}


def part_task_failing_while(output_uri: str, k: int, fail_if: str) -> dict:
    """An index-like task (a file out, counts back) whose task 4 fails while ``fail_if`` exists."""
    if k == 4 and os.path.exists(fail_if):
        raise ValueError("task 4 fails")
    Path(output_uri).parent.mkdir(parents=True, exist_ok=True)
    Path(output_uri).write_text(str(k))
    return {"rows": k}
