"""Reading a many-shard run's statistics: wall time and S3 requests of `status`, `stats`, `report`.

    python benchmarks/many_shards_reads.py local RUN_DIR [--trees A,B]
    python benchmarks/many_shards_reads.py s3 --input DIR [--delay-ms 20] [--trees A,B]

``local`` times each command (a subprocess each, like a user's) on an existing local run.
``s3`` runs a cheap recipe (language ID, Gopher quality, URL dedup, gpt2 tokens: no extraction)
over the Parquet shards in ``--input`` into a moto S3 server on 127.0.0.1, then times the same
commands through a proxy in front of it that holds each request ``--delay-ms`` (a real S3 round
trip is ~20-100 ms; moto on loopback answers in ~2 ms) and counts the requests and the most in
flight at once. ``--trees``: source trees to time (PYTHONPATH of each; default this checkout), so
the code before and after a change is timed on the same run. Each command's output is hashed
(a report's generation time line left out): the trees must print the same.

Input: e.g. ``benchmarks/corpus.py OUT --docs 1200 --docs-per-shard 4`` (300 shards). Figures:
docs/reliability.md, "Session 44, reading many shards' statistics (h132)".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

RECIPE = """name: many-shards
stats: {samples_per_reason: 20}
executor: {type: local, workers: 2}
stages:
  - {type: language_id, params: {languages: [en], min_score: 0.65}}
  - {type: gopher_quality, params: {min_words: 50, max_words: 100000}}
dedup:
  - method: url
tokenize: {tokenizer: gpt2}
"""
COMMANDS = (("status",), ("stats",), ("report", "-o", "{out}"))


def run_cli(tree: str, args: list[str], env: dict[str, str]) -> tuple[float, bytes]:
    """(wall seconds, stdout) of ``python -m refinery ARGS`` with ``tree`` first on the path."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "refinery", *args], env={**env, "PYTHONPATH": tree},
                          capture_output=True, cwd=tempfile.gettempdir(), check=True)
    return time.perf_counter() - started, done.stdout


def digest(data: bytes) -> str:
    data = re.sub(rb"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", b"", data)  # the report's clock
    data = re.sub(rb"\d+(\.\d+)? s\b", b"", data)  # status's timings
    return hashlib.sha256(data).hexdigest()[:12]


def time_commands(run_dir: str, trees: list[str], env: dict[str, str], counter=None) -> None:
    for tree in trees:
        for command in COMMANDS:
            out = os.path.join(tempfile.gettempdir(), f"many-shards-report-{os.getpid()}.html")
            args = [a.format(out=out) for a in (command[0], run_dir, *command[1:])]
            if counter:
                counter.reset()
            wall, stdout = run_cli(tree, args, env)
            shown = Path(out).read_bytes() if command[0] == "report" else stdout
            row = {"tree": tree, "command": command[0], "wall_s": round(wall, 2), "output": digest(shown)}
            if counter:
                row |= {"requests": counter.requests, "most_in_flight": counter.most}
            print(json.dumps(row), flush=True)


class Counter:
    """Requests through the proxy and the most in flight at once; each held ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay, self.lock = delay, threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests = self.in_flight = self.most = 0

    def decide(self, method: str, path: str) -> None:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(self.delay)
        with self.lock:
            self.in_flight -= 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("where", choices=("local", "s3"))
    ap.add_argument("run_dir", nargs="?")
    ap.add_argument("--input", help="Parquet shards to run the recipe over (s3)")
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--trees", default=str(ROOT))
    args = ap.parse_args()
    trees = args.trees.split(",")
    if args.where == "local":
        time_commands(args.run_dir, trees, dict(os.environ))
        return
    from _fault_fixtures import FaultPolicy, FaultProxy
    from _s3_fixtures import moto_s3

    with moto_s3() as (endpoint, bucket), tempfile.TemporaryDirectory() as scratch:
        recipe = Path(scratch) / "recipe.yaml"
        recipe.write_text(RECIPE)
        run_dir = f"{bucket}/run"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "refinery", "run", str(recipe), "-i", args.input, "-o", run_dir],
                       env={**os.environ, "PYTHONPATH": trees[0]}, cwd=scratch, check=True, capture_output=True)
        print(json.dumps({"run_s": round(time.perf_counter() - started, 1)}), flush=True)
        counter = Counter(args.delay_ms / 1000)
        policy = FaultPolicy()
        policy.decide = counter.decide  # count and delay; fail nothing
        with FaultProxy(endpoint, policy) as proxy:
            time_commands(run_dir, trees, {**os.environ, "AWS_ENDPOINT_URL": proxy}, counter)


if __name__ == "__main__":
    main()
