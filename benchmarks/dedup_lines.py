"""Repeated-line removal (``refinery dedup --method lines``): throughput, memory, what it cuts.

    .venv/bin/python benchmarks/dedup_lines.py [--copies 4] [--workers 1] [--ray] [--rows 4000000]

1. The bundled sample's 717 real Common Crawl documents (data/sample/cc_docs), repeated
   ``--copies`` times under new ids (the same sites, so counts scale and domains do not), in 4
   shards, through the real driver: docs/s per core of each pass, peak RSS, the figures of the cut.
   With ``--ray`` the same run on a local Ray cluster must give identical kept/removed shards.
2. The boilerplate task's peak memory per (line, domain, docs, first, first_id) row on ``--rows`` synthetic rows
   (tracemalloc sees numpy's buffers): checks ``LINE_BYTES_PER_ROW``.

Prints the machine's conditions (cores, load average): figures taken while other work runs on the
machine are lower bounds of throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refinery.dedup.config import DedupConfig  # noqa: E402
from refinery.dedup.driver import run_dedup  # noqa: E402
from refinery.dedup.lines import LINE_BYTES_PER_ROW, aggregate_pairs  # noqa: E402
from refinery.executors import make_executor  # noqa: E402
from tests._dedup_fixtures import load_cc_docs  # noqa: E402


def _write_shards(root: Path, copies: int, n_shards: int = 4) -> int:
    docs = load_cc_docs()
    rows = [{"id": f"{c}-{d['id']}", "url": d["url"], "text": d["text"]} for c in range(copies) for d in docs]
    root.mkdir(parents=True)
    schema = pa.schema([("id", pa.string()), ("url", pa.string()), ("text", pa.string())])
    for s in range(n_shards):
        part = rows[s::n_shards]
        pq.write_table(pa.table({k: [r[k] for r in part] for k in schema.names}, schema=schema), root / f"s{s}.parquet")
    return len(rows)


def _outputs(out: Path) -> dict[str, bytes]:
    return {f"{sub}/{f.name}": pq.read_table(f).to_pandas().to_json().encode()
            for sub in ("kept", "removed") for f in sorted((out / sub).glob("*.parquet"))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--ray", action="store_true")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
          f"(other engineers' work was running; throughput is a lower bound)")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        n = _write_shards(src, args.copies)
        with make_executor("local", args.workers) as ex:
            t0 = time.time()
            stats = run_dedup(str(src), str(Path(tmp) / "out"), DedupConfig(method="lines"), ex)
            wall = time.time() - t0
        p = stats["passes"]
        print(f"{n} docs, {args.workers} worker(s): {wall:.1f}s wall")
        for name in ("line_counts", "boilerplate", "line_holders", "keepers", "remove"):
            if name not in p:
                continue
            secs = p[name].get("task_seconds", p[name].get("wall_seconds"))
            print(f"  {name:12s} {secs:6.2f} task-s  {n / max(secs, 1e-9):8.0f} docs/s per core  "
                  f"peak RSS {p[name].get('peak_rss_max', 0) / 2**20:.0f} MiB")
        print("  cut:", json.dumps({k: stats[k] for k in ("distinct_lines", "boilerplate_lines", "docs_edited", "lines_cut",
                                                           "chars_cut", "docs_removed", "docs_kept")}))
        if args.ray:
            from refinery.executors.ray import RayExecutor

            t0 = time.time()
            with RayExecutor(2, object_store_memory=200 * 2**20) as ex:
                run_dedup(str(src), str(Path(tmp) / "ray"), DedupConfig(method="lines", partitions=3), ex)
            same = _outputs(Path(tmp) / "ray") == _outputs(Path(tmp) / "out")
            print(f"  ray (2 workers, 3 partitions): {time.time() - t0:.1f}s wall, same kept/removed as local: {same}")
            if not same:
                raise SystemExit("ray output differs")

    rng = np.random.default_rng(0)
    rows = args.rows
    line = rng.integers(0, 2**63, rows // 4, dtype=np.uint64)[rng.integers(0, rows // 4, rows)]  # lines repeat
    domain = rng.integers(1, 2**63, 5000, dtype=np.uint64)[rng.integers(0, 5000, rows)]
    docs = rng.integers(1, 5, rows, dtype=np.uint32)
    first = rng.permutation(rows).astype(np.uint64)  # doc keys are unique
    first_id = rng.integers(0, 2**63, rows, dtype=np.uint64)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    aggregate_pairs(line, domain, docs, first, first_id)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    held = line.nbytes + domain.nbytes + docs.nbytes + first.nbytes + first_id.nbytes
    print(f"boilerplate task on {rows:,} rows: {(peak + held) / rows:.0f} bytes/row at peak incl. the read arrays "
          f"(LINE_BYTES_PER_ROW = {LINE_BYTES_PER_ROW})")


if __name__ == "__main__":
    main()
