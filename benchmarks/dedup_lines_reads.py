"""What the repeated-line dedup pass (``method: lines``) reads: old vs new source trees, interleaved.

    python benchmarks/dedup_lines_reads.py INPUT [--trees OLD,NEW] [--rounds 3] [--recipe] [--s3]

INPUT: Parquet shards with ``id``, ``url``, ``text`` (e.g. ``benchmarks/corpus.py OUT --docs 20000
--docs-per-shard 2500``, then ``OUT/docs``). Each round runs ``run_dedup(method=lines)`` once per
tree (``--trees``: source trees, the PYTHONPATH of each; default this checkout), each in a fresh
process with one worker (tasks run in it, so its CPU is the pass's), and prints per run: CPU and wall
seconds, each step's task seconds, and a digest of the outputs (every kept/removed table, row by
row, and ``dedup_stats.json`` less its timings): the trees must print the same digest. With
``--s3`` the input and the output are on a moto S3 server on 127.0.0.1 behind a counting proxy:
GETs and bytes of the input shards, and of everything else. ``--recipe``: the lines settings of
``configs/refinedweb.yaml`` plus its ``min_words_after_cuts`` (50), else the pass's defaults.
Then, locally, each tree's ``line_counts`` and ``line_holders`` task on the first shard, each in a
fresh process: its peak RSS over the process's after imports.

Figures: docs/dedup.md, "Each shard's text is read twice, not three times".
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE_LINES = {"min_docs": 3, "min_domains": 2, "min_site_docs": 5, "min_chars": 10, "min_words": 2,
                "max_words": 30, "max_removed_word_frac": 0.2, "exact_dates": True, "min_words_after_cuts": 50}
#: what differs between two runs of the same input (timings, memory, where the task ran)
_VARYING = {"wall_seconds", "task_seconds", "peak_rss", "peak_rss_max", "seconds", "started", "finished",
            "worker_baseline_bytes", "created", "elapsed_seconds", "worker_pids", "output", "work_dir"}


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VARYING}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _cpu() -> float:
    """CPU seconds of this process and of its children that ended (the removal run's workers)."""
    own, ended = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime


def child_run(src: str, out: str, recipe: bool) -> None:
    """One dedup run (in this process: the tree on PYTHONPATH), then its figures as one JSON line."""
    from refinery.dedup.config import DedupConfig
    from refinery.dedup.driver import run_dedup
    from refinery.executors import make_executor
    from refinery.io import fs, parquet

    started, cpu = time.perf_counter(), _cpu()
    with make_executor("local", 1) as ex:
        stats = run_dedup(src, out, DedupConfig(method="lines", lines=RECIPE_LINES if recipe else {}), ex)
    wall, cpu = time.perf_counter() - started, _cpu() - cpu
    digest = hashlib.sha256()
    for sub in ("kept", "removed"):
        for uri in sorted(fs.list_files_if_any(fs.join(out, sub), (".parquet",))):
            table = parquet.read_table(uri)
            digest.update(f"{sub}/{fs.basename(uri)} {table.schema}".encode())
            digest.update(json.dumps(table.to_pylist(), sort_keys=True, default=str).encode())
    lines = {k: v for k, v in stats.items() if k != "passes" and not isinstance(v, dict)}
    digest.update(json.dumps(_stable({"figures": lines, "passes": stats["passes"]}), sort_keys=True,
                             default=str).encode())
    print(json.dumps({"cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                      "task_s": {k: round(v.get("task_seconds", v.get("wall_seconds", 0)), 2)
                                 for k, v in stats["passes"].items()},
                      "holders": {k: stats["passes"]["line_holders"].get(k) for k in ("holders", "rows")},
                      "lines_cut": stats.get("lines_cut"), "docs_removed": stats.get("docs_removed"),
                      "output": digest.hexdigest()[:12]}))


def child_task(step: str, out: str, src_shard: str, shard: str, recipe: bool) -> None:
    """``step``'s task on one shard of the finished index under ``out`` (its own tree's), in a fresh
    process: peak RSS over the RSS after imports, as one JSON line."""
    import numpy  # noqa: F401  (imports first: the baseline holds them)
    import pyarrow.parquet  # noqa: F401

    from refinery.dedup import lines
    from refinery.dedup.config import DedupConfig
    from refinery.io import fs

    config = DedupConfig(method="lines", lines=RECIPE_LINES if recipe else {})
    rule = {k: getattr(config.lines, k) for k in ("min_chars", "min_words", "max_words", "fold_digits", "exact_dates")}
    index = fs.join(out, "dedup")
    with tempfile.TemporaryDirectory() as tmp:
        args = {"input_uri": src_shard, "shard": shard, "rule": rule, "batch_size": config.batch_size,
                "shard_index": 0, "gopher_words": config.lines.min_words_after_cuts is not None,
                "doc_lines_uri": fs.join(tmp, "doc_lines.parquet")}
        if step == "line_counts":
            fn = lines.line_count_task
            args |= {"output_uri": fs.join(tmp, "counts.parquet"), "num_parts": 1}
        else:
            fn = lines.line_holders_task
            args |= {"output_uri": fs.join(tmp, "holders.parquet"), "doc_lines_uri": fs.join(index, "doc_lines", f"{shard}.parquet"),
                     "boilerplate_uris": sorted(fs.list_files(fs.join(index, "boilerplate"), (".parquet",)))}
        accepted = inspect.signature(fn).parameters
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.process_time()
        fn(**{k: v for k, v in args.items() if k in accepted})
        cpu = time.process_time() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"step": step, "cpu_s": round(cpu, 2), "base_mib": round(base / 1024),
                      "task_peak_mib": round((peak - base) / 1024, 1)}))


def _child(tree: str, args: list[str], env: dict[str, str] | None = None) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], env={**(env or os.environ), "PYTHONPATH": tree},
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode:
        raise SystemExit(f"{tree}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Reads:
    """GETs and reply bytes through the proxy: of the input shards, and of everything else."""

    def __init__(self, input_prefix: str) -> None:
        self.prefix, self.lock = input_prefix, threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.counts = {"input_gets": 0, "input_mb": 0.0, "other_gets": 0, "other_mb": 0.0, "puts": 0}

    def answered(self, method: str, path: str, nbytes: int) -> None:
        with self.lock:
            if method == "PUT":
                self.counts["puts"] += 1
            if method != "GET":
                return
            where = "input" if path.split("?")[0].startswith(self.prefix) else "other"
            self.counts[f"{where}_gets"] += 1
            self.counts[f"{where}_mb"] = round(self.counts[f"{where}_mb"] + nbytes / 1e6, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("--trees", default=str(ROOT))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--recipe", action="store_true")
    ap.add_argument("--s3", action="store_true")
    args = ap.parse_args()
    trees = args.trees.split(",")
    recipe = ["--recipe"] if args.recipe else []
    shards = sorted(Path(args.input).glob("*.parquet"))
    print(json.dumps({"cores": os.cpu_count(), "load": round(os.getloadavg()[0], 1), "shards": len(shards),
                      "input_mb": round(sum(p.stat().st_size for p in shards) / 1e6, 1), "recipe": args.recipe}))
    with tempfile.TemporaryDirectory() as scratch:
        outs = {}
        for r in range(args.rounds):
            for t, tree in enumerate(trees):
                out = outs[tree] = os.path.join(scratch, f"out-{t}-{r}")
                row = _child(tree, ["run", args.input, out, *recipe])
                print(json.dumps({"where": "local", "round": r, "tree": tree} | row), flush=True)
        for tree in trees:
            for step in ("line_counts", "line_holders"):
                row = _child(tree, ["task", step, outs[tree], str(shards[0]), shards[0].stem, *recipe])
                print(json.dumps({"tree": tree} | row), flush=True)
    if args.s3:
        sys.path.insert(0, str(ROOT / "tests"))
        from _fault_fixtures import FaultPolicy, FaultProxy
        from _s3_fixtures import moto_s3

        import boto3

        with moto_s3() as (endpoint, bucket):
            name = bucket.removeprefix("s3://")
            client = boto3.client("s3", endpoint_url=endpoint)
            for p in shards:
                client.upload_file(str(p), name, f"in/{p.name}")
            reads = Reads(f"/{name}/in/")
            policy = FaultPolicy(answered=reads.answered)
            policy.decide = lambda method, path: None  # count; fail nothing
            with FaultProxy(endpoint, policy) as proxy:
                for r in range(args.rounds):
                    for t, tree in enumerate(trees):
                        reads.reset()
                        row = _child(tree, ["run", f"{bucket}/in", f"{bucket}/out-{t}-{r}", *recipe],
                                     {**os.environ, "AWS_ENDPOINT_URL": proxy})
                        print(json.dumps({"where": "s3", "round": r, "tree": tree} | row | reads.counts), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        kind, rest = sys.argv[2], sys.argv[3:]
        recipe = "--recipe" in rest
        rest = [a for a in rest if a != "--recipe"]
        child_run(*rest, recipe) if kind == "run" else child_task(*rest, recipe)
    else:
        main()
