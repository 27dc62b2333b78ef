"""S3 requests of the whole recipe, by kind and object, on moto: which grow per shard.

    python benchmarks/recipe_requests.py CORPUS/docs OUT.json [--tree SRC] [--workers 2] [--dump DIR]

Uploads the Parquet shards of ``CORPUS/docs`` (``benchmarks/corpus.py OUT --docs-per-shard 4``) to a
moto S3 server on 127.0.0.1, runs ``refinery run`` of configs/refinedweb.yaml without its HTML
stages (as benchmarks/scale_curve.py) into the same bucket, then the same command again (a no-op
rerun), through a proxy that records every request (method, key with shard names and digits
folded, ``Range``). ``OUT.json``: per run the totals by kind (GET, HEAD, PUT, LIST, DELETE,
multipart) and by kind and object; ``OUT.json.<run>.calls`` every request in order. Run it at two
sizes: (count at N2 - count at N1) / (N2 - N1) is the cost per shard. ``--tree``: the source tree
to run (PYTHONPATH), so old and new code are measured alike; ``--dump``: copy the run directory
here to compare the outputs. ``--stop PASS:N`` (repeatable): the first run is stopped (SIGINT,
as Ctrl-C) once N shard markers of PASS were written, and the next run resumes it (stopped in
turn at the next ``--stop``), before the last one runs to the end: ``stopped-1``, ...,
``resumed``, then the no-op ``rerun``. Figures: docs/reliability.md, "Session 48 (h186)" and
"Session 50 (h210)" (resumed runs).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

ap = argparse.ArgumentParser()
ap.add_argument("docs")
ap.add_argument("out")
ap.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]))
ap.add_argument("--workers", default="2")
ap.add_argument("--dump", default=None)
ap.add_argument("--stop", action="append", default=[], metavar="PASS:N",
                help="stop a run once N shard markers of PASS were written (SIGINT); the next run resumes")
args = ap.parse_args()
stops = [(name, int(n)) for name, _, n in (s.rpartition(":") for s in args.stop)]

sys.path.insert(0, args.tree)
sys.path.insert(0, args.tree + "/tests")
sys.path.insert(0, args.tree + "/benchmarks")
import boto3  # noqa: E402
import yaml  # noqa: E402
from _fault_fixtures import FaultPolicy, FaultProxy  # noqa: E402
from _s3_fixtures import moto_s3  # noqa: E402
from scale_curve import recipe_spec  # noqa: E402

SHARD = re.compile(r"part-\d{5}")


def kind_of(method: str, path: str) -> tuple[str, str]:
    parts = urlsplit(path)
    q = parse_qs(parts.query, keep_blank_values=True)
    key = unquote(parts.path.lstrip("/"))
    bucket, _, key = key.partition("/")
    if method == "GET" and ("list-type" in q or ("prefix" in q) or not key):
        return "LIST", unquote(q.get("prefix", [""])[0])
    if method == "POST" and "delete" in q:
        return "DELETEOBJECTS", key
    if method == "POST" and "uploads" in q:
        return "MPU_CREATE", key
    if method == "POST" and "uploadId" in q:
        return "MPU_COMPLETE", key
    if method == "PUT" and "uploadId" in q:
        return "MPU_PART", key
    return method, key


def area(key: str) -> str:
    key = SHARD.sub("SHARD", key)
    key = re.sub(r"\.tmp-[^/]*", ".tmp-X", key)
    key = re.sub(r"/[0-9a-f]{16,}", "/HASH", key)
    key = re.sub(r"\d{3,}", "N", key)
    return key


calls: list[tuple[float, str, str]] = []
lock = threading.Lock()
#: the run to stop (its process) once ``stop_at[1]`` markers of the pass ``stop_at[0]`` were written
running: list[subprocess.Popen] = []
stop_at: list[tuple[str, int] | None] = [None]
marked: list[int] = [0]


def decide(method: str, path: str) -> None:
    h = sys._getframe(1).f_locals["self"].headers  # the proxy handler calling us: its request headers (Range)
    extra = f"{h.get('Range', '')} {'IM' if h.get('If-Match') else ''}"
    with lock:
        calls.append((time.time(), method, path + " " + extra))
        if stop_at[0] is not None and method == "PUT" and f"/run/{stop_at[0][0]}/stats/" in path:
            marked[0] += 1
            if marked[0] == stop_at[0][1] and running:
                running[0].send_signal(signal.SIGINT)


with moto_s3() as (endpoint, bucket), tempfile.TemporaryDirectory() as scratch:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    for f in sorted(Path(args.docs).glob("*.parquet")):
        s3.upload_file(str(f), bucket[5:], f"in/{f.name}")
    recipe = Path(scratch) / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(recipe_spec("scale-requests", "local")))
    policy = FaultPolicy()
    policy.decide = decide
    results = {}
    with FaultProxy(endpoint, policy) as proxy:
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy, "PYTHONPATH": args.tree}
        labels = ([f"stopped-{k + 1}" for k in range(len(stops))] + ["resumed"]) if stops else ["run"]
        for k, label in enumerate(labels + ["rerun"]):
            calls.clear()
            stop_at[0], marked[0] = (stops[k] if k < len(stops) else None), 0
            t0 = time.time()
            proc = subprocess.Popen([sys.executable, "-m", "refinery", "run", str(recipe), "-i", f"{bucket}/in",
                                     "-o", f"{bucket}/run", "--workers", args.workers],
                                    env=env, cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            running[:] = [proc]
            _, stderr = proc.communicate()
            running.clear()
            wall = time.time() - t0
            if proc.returncode and stop_at[0] is None:
                print(stderr[-3000:])
                raise SystemExit(proc.returncode)
            by = collections.Counter()
            by_kind = collections.Counter()
            for _, m, p in calls:
                kind, key = kind_of(m, p.split(" ")[0])
                by[(kind, area(key))] += 1
                by_kind[kind] += 1
            Path(args.out + f".{label}.calls").write_text("\n".join(f"{t:.3f} {m} {p}" for t, m, p in calls))
            results[label] = {"wall_s": round(wall, 1), "total": len(calls), "by_kind": dict(by_kind),
                              "by_area": {f"{k} {a}": n for (k, a), n in sorted(by.items())}}
            print(label, round(wall, 1), len(calls), dict(by_kind), flush=True)
        if args.dump:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket[5:], Prefix="run/"):
                for o in page.get("Contents", []):
                    dest = Path(args.dump) / o["Key"]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket[5:], o["Key"], str(dest))
    Path(args.out).write_text(json.dumps(results, indent=1))
