"""S3 requests of a grown input's ``--force`` rerun and of a plain resume, on moto, per tree.

    python benchmarks/input_grows_requests.py [--shards N] [--tree SRC ...] [--out OUT.json]

``N`` one-document-per-line Parquet input files (real documents of ``data/sample/cc_docs``) are
uploaded to a moto S3 server on 127.0.0.1; the recipe of ``tests/test_input_grows.py`` (a cheap
filter stage, exact dedup, tokens) runs over all but the last, which is then added, and the rerun
is made with ``--force`` (docs/plan.md "An input that grows"); then the same command again, a
plain resume of the finished run. Every request goes through a counting proxy (as
``benchmarks/recipe_requests.py``); reported per tree and command: the totals by kind (GET, PUT,
LIST, HEAD, DELETE...) and the requests on ``input_files.json`` and on the filter pass's shard
markers (``filter/stats/<shard>.json``). Each ``--tree`` (a refinery source tree, e.g. main's from
``git archive``) runs as a ``refinery`` subprocess with that tree on PYTHONPATH, the trees
interleaved. Figures: docs/plan.md, "One reader of `input_files.json`; kept shards keep their markers".
"""

from __future__ import annotations

import argparse
import collections
import gzip
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import boto3  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402
from _fault_fixtures import FaultPolicy, FaultProxy  # noqa: E402
from _s3_fixtures import moto_s3  # noqa: E402

CC_DOCS = ROOT / "data" / "sample" / "cc_docs" / "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"
SPEC = {"name": "grows", "stages": [{"type": "gopher_quality", "params": {"min_words": 20}}],
        "dedup": [{"method": "exact"}], "tokenize": {"tokenizer": "gpt2"}}


def kind_of(method: str, path: str) -> tuple[str, str]:
    parts = urlsplit(path)
    q = parse_qs(parts.query, keep_blank_values=True)
    _, _, key = unquote(parts.path.lstrip("/")).partition("/")
    if method == "GET" and ("list-type" in q or "prefix" in q or not key):
        return "LIST", unquote(q.get("prefix", [""])[0])
    if method == "POST" and "delete" in q:
        return "DELETEOBJECTS", key
    return method, key


def _parquet(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def _counts(calls: list[tuple[str, str]]) -> dict[str, object]:
    """Totals by kind; the requests on input_files.json and on the filter pass's shard markers."""
    kinds = [kind_of(m, p) for m, p in calls]
    return {"total": len(calls), "by_kind": dict(sorted(collections.Counter(k for k, _ in kinds).items())),
            "input_files.json": dict(collections.Counter(k for k, key in kinds if key.endswith("/input_files.json"))),
            "filter shard markers": dict(collections.Counter(
                k for k, key in kinds if re.search(r"/filter/stats/part-\d+\.json$", key)))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--tree", action="append", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--calls", default=None, help="write each command's requests, in order, into this directory")
    args = ap.parse_args()
    trees = args.tree or [str(ROOT)]
    docs = [json.loads(line) for line in gzip.open(CC_DOCS, "rt", encoding="utf-8")]
    rows = [{"id": str(d["id"]), "url": (d.get("metadata") or {}).get("url"), "text": d["text"]} for d in docs]
    per = max(1, len(rows) // args.shards)
    shards = [_parquet(rows[k * per:(k + 1) * per]) for k in range(args.shards)]
    calls: list[tuple[str, str]] = []
    lock = threading.Lock()

    def count(method: str, path: str) -> bool:
        with lock:
            calls.append((method, path))
        return False

    results: dict[str, dict[str, object]] = {}
    with moto_s3() as (endpoint, bucket), tempfile.TemporaryDirectory() as scratch, \
            FaultProxy(endpoint, FaultPolicy(when=count)) as proxy:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        recipe = Path(scratch) / "grows.yaml"
        recipe.write_text(yaml.safe_dump(SPEC))
        for t, tree in enumerate(trees):
            src, out = f"{bucket}/in{t}", f"{bucket}/run{t}"

            def refinery(*extra: str, tree: str = tree, src: str = src, out: str = out) -> None:
                done = subprocess.run([sys.executable, "-m", "refinery", "run", str(recipe), "-i", src, "-o", out,
                                       "--workers", "1", *extra], capture_output=True, text=True, cwd=scratch,
                                      env=os.environ | {"AWS_ENDPOINT_URL": proxy, "PYTHONPATH": tree})
                if done.returncode:
                    raise SystemExit(f"{tree}: refinery run {' '.join(extra)} failed: {done.stderr[-3000:]}")

            for k, data in enumerate(shards[:-1]):
                s3.put_object(Bucket=bucket[5:], Key=f"in{t}/part-{k:05d}.parquet", Body=data)
            refinery()
            s3.put_object(Bucket=bucket[5:], Key=f"in{t}/part-{len(shards) - 1:05d}.parquet", Body=shards[-1])
            for label, extra in (("grown --force", ("--force",)), ("resume", ())):
                calls.clear()
                refinery(*extra)
                results.setdefault(tree, {})[label] = _counts(calls)
                print(tree, label, json.dumps(results[tree][label]), flush=True)
                if args.calls:
                    Path(args.calls).mkdir(parents=True, exist_ok=True)
                    name = f"{t}-{label.split()[0]}.calls"
                    (Path(args.calls) / name).write_text("".join(f"{m} {unquote(p)}\n" for m, p in calls))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
