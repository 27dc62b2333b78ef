"""What `refinery run`'s plan costs with every Parquet input footer checked up front (session 49, h198).

    python benchmarks/plan_footers.py [--files 1000] [--rounds 3] [--trees OLD,NEW] [--where s3,local]

Writes ``--files`` small Parquet files (one document each) into a moto S3 server on 127.0.0.1 and
into a local directory, then times ``plan_run`` over them (listing, the footer check, fingerprints)
in a fresh process per tree and round, the trees interleaved: a first start (nothing recorded),
then, once ``write_plan`` has recorded the plan and ``input_files.json``, a rerun's plan. Prints
wall and CPU seconds (the child's own: moto's server threads are in this process) per tree, and
the listing alone for scale. ``--trees``: source trees (PYTHONPATH of each; default this checkout).
Figures: docs/reliability.md, "Session 49 (h198)".
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CHILD = r"""
import json, sys, time
from refinery.config import parse_config
from refinery.io import fs
from refinery.plan import plan_run, write_plan

inp, out = sys.argv[1], sys.argv[2]
config = parse_config({"name": "footers", "stages": [{"type": "gopher_quality"}]})

def timed(f):
    wall, cpu = time.perf_counter(), time.process_time()
    value = f()
    return value, time.perf_counter() - wall, time.process_time() - cpu

_, list_wall, list_cpu = timed(lambda: fs.list_file_versions(inp, (".parquet",)))
plan, first_wall, first_cpu = timed(lambda: plan_run(config, inp, out))
write_plan(plan)
_, rerun_wall, rerun_cpu = timed(lambda: plan_run(config, inp, out))
fs.delete_tree(out)
print(json.dumps({"listing": [list_wall, list_cpu], "first": [first_wall, first_cpu], "rerun": [rerun_wall, rerun_cpu]}))
"""


def write_inputs(root: str, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refinery.io import fs

    for i in range(n):
        buf = io.BytesIO()
        pq.write_table(pa.table({"id": [f"d{i}"], "text": [f"document {i} " * 40]}), buf)
        fs.write_bytes(fs.join(root, "in", f"part-{i:05d}.parquet"), buf.getvalue())


def measure(trees: list[str], root: str, rounds: int) -> dict[str, list[dict]]:
    from refinery.io import fs

    results: dict[str, list[dict]] = {t: [] for t in trees}
    for _ in range(rounds):
        for tree in trees:
            done = subprocess.run([sys.executable, "-c", CHILD, fs.join(root, "in"), fs.join(root, "out")],
                                  env={**os.environ, "PYTHONPATH": tree}, capture_output=True, text=True,
                                  cwd=tempfile.gettempdir())
            if done.returncode:
                raise SystemExit(done.stderr)
            results[tree].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def report(where: str, n: int, results: dict[str, list[dict]]) -> None:
    for tree, rows in results.items():
        for key in ("listing", "first", "rerun"):
            walls = ", ".join(f"{r[key][0]:.2f}" for r in rows)
            cpus = ", ".join(f"{r[key][1]:.2f}" for r in rows)
            print(f"{where} {n} files  {tree:28s} {key:8s} wall {walls} s   cpu {cpus} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trees", default=str(ROOT))
    parser.add_argument("--where", default="s3,local")
    args = parser.parse_args()
    trees = args.trees.split(",")
    wheres = args.where.split(",")
    if "local" in wheres:
        with tempfile.TemporaryDirectory() as tmp:
            write_inputs(tmp, args.files)
            report("local", args.files, measure(trees, tmp, args.rounds))
    if "s3" in wheres:
        from _s3_fixtures import moto_s3

        with moto_s3() as (_, bucket):
            started = time.perf_counter()
            write_inputs(f"{bucket}/footers", args.files)
            print(f"(wrote {args.files} objects in {time.perf_counter() - started:.1f} s)")
            report("s3", args.files, measure(trees, f"{bucket}/footers", args.rounds))


if __name__ == "__main__":
    main()
