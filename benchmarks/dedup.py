"""Dedup memory and time per pass for 1M synthetic MinHash signatures:

    python benchmarks/dedup.py [--docs 1000000] [--shards 20] [--budget 512MiB] [--workers 2]

Signatures are generated directly (not by hashing 1M documents): 90% unique random signatures and
10% near-copies of 20,000 templates (each slot re-drawn with probability 0.05, J ~ 0.9), spread over
all shards. They go through the real passes -- buckets, candidates, connected components, removal
lists -- with every task in a *fresh* worker process, so each task's peak RSS is its own. The run is
repeated with the memory budget (partitions derived from it) and with everything forced into one
partition, to show that streaming partitions is what keeps the bucket / cluster passes within the
budget. A last section measures the suffix-array pass (EXACTSUBSTR) per token.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import pyarrow as pa

from refinery.dedup.config import DedupConfig, parse_size
from refinery.dedup.driver import Shard, WorkDir, build_index
from refinery.dedup.minhash import LshParams, MinHasher
from refinery.executors.local import LocalExecutor
from refinery.io import parquet

PASSES = ("buckets", "candidates", "verify_attach", "verify", "components", "root_check", "removal_lists")


def write_signatures(root: Path, docs: int, shards: int, seed: int = 0) -> tuple[list[Shard], list[dict], int]:
    params = LshParams()
    hasher = MinHasher(params)
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 2**32, size=(20_000, params.num_perm), dtype=np.uint32)
    per_shard = docs // shards
    out, meta = [], []
    for s in range(shards):
        sig = rng.integers(0, 2**32, size=(per_shard, params.num_perm), dtype=np.uint32)
        copies = rng.random(per_shard) < 0.10
        which = rng.integers(0, len(templates), size=int(copies.sum()))
        near = templates[which].copy()
        redraw = rng.random(near.shape) < 0.05
        near[redraw] = rng.integers(0, 2**32, size=int(redraw.sum()), dtype=np.uint32)
        sig[copies] = near
        keys = hasher.band_keys(sig)
        name = f"shard-{s:04d}"
        table = pa.table({
            "row": pa.array(np.arange(per_shard, dtype=np.uint32)),
            "id": pa.array([f"{name}/{i}" for i in range(per_shard)]),
            "has_key": pa.array(np.ones(per_shard, dtype=bool)),
            "keys": pa.FixedSizeListArray.from_arrays(pa.array(keys.reshape(-1)), params.bands),
            # the stored slots that candidate verification compares (MinhashConfig.verify_slots)
            "sig": pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1)), params.num_perm),
        })
        parquet.write_table(table, str(root / "signatures" / f"{name}.parquet"), row_group_size=100_000)
        out.append(Shard(name, "", s))
        meta.append({"docs": per_shard, "sources": None, "width": params.bands})
    return out, meta, per_shard * shards


def run(root: Path, shards: list[Shard], meta: list[dict], n: int, config: DedupConfig, workers: int) -> dict:
    for sub in ("buckets", "candidates", "verify", "components", "root_check", "removals", "passes"):
        shutil.rmtree(root / sub, ignore_errors=True)
    passes: dict = {}
    started = time.time()
    with LocalExecutor(workers, fresh_process=True, progress=False) as ex:
        result = build_index(WorkDir(str(root), "bench", force=True, method=config.method), shards, config, ex, passes, meta, n)
    result["wall"] = time.time() - started
    result["passes"] = passes
    return result


def report(title: str, result: dict, budget: int | None) -> bool:
    print(f"\n{title}")
    print(f"{'pass':<15}{'tasks':>6}{'partitions':>11}{'wall s':>8}{'peak RSS/task':>15}{'within budget':>15}")
    ok = True
    for name in PASSES:
        p = result["passes"][name]
        peak = p.get("peak_rss_max", 0)
        inside = budget is None or peak <= budget
        ok &= inside
        tasks = p.get("tasks") or sum(s.get("tasks", 0) for s in p.get("steps", []))
        parts = p.get("partitions", "")
        print(f"{name:<15}{tasks:>6}{parts!s:>11}{p.get('wall_seconds', 0):>8.1f}{peak / 2**20:>12.0f} MiB"
              f"{('yes' if inside else 'NO') if budget else '-':>15}")
    print(f"clusters {result['clusters']:,}, docs in clusters {result['docs_in_clusters']:,}, to remove "
          f"{result['docs_to_remove']:,}, CC rounds {result['passes']['components']['rounds']}, total {result['wall']:.0f}s")
    return ok


SUBSTRING_PROBE = """
import sys, tracemalloc, numpy as np
sys.path.insert(0, {root!r})
from refinery.dedup.substring import duplicated_tokens
T = {tokens}
rng = np.random.default_rng(0)
ids = rng.zipf(1.3, T).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # word-like frequencies
for k in range(200):  # repeated 80-token spans
    a, b = rng.integers(0, T - 80, 2)
    ids[b:b + 80] = ids[a:a + 80]
offsets = np.arange(0, T + 1, 1000, dtype=np.int64)
tracemalloc.start()  # numpy reports its buffers to tracemalloc: the peak of the arrays themselves
covered, stats = duplicated_tokens(ids, offsets, 50)
peak = tracemalloc.get_traced_memory()[1]
print(peak / T, int(covered.sum()))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--budget", default="512MiB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--substring-tokens", type=int, default=4_000_000)
    parser.add_argument("--keep", help="keep the work directory here")
    args = parser.parse_args()
    budget = parse_size(args.budget)

    root = Path(args.keep or tempfile.mkdtemp(prefix="refinery-dedup-bench-"))
    t0 = time.time()
    shards, meta, n = write_signatures(root, args.docs, args.shards)
    print(f"{n:,} synthetic signatures (128 perms -> 14 bands x 8 rows) in {args.shards} shards, "
          f"written in {time.time() - t0:.0f}s; {args.workers} workers, a fresh process per task")

    streamed = run(root, shards, meta, n, DedupConfig(memory_budget=budget), args.workers)
    ok = report(f"memory budget {budget / 2**20:.0f} MiB (partitions derived from it):", streamed, budget)
    single = run(root, shards, meta, n, DedupConfig(memory_budget=budget, partitions=1), args.workers)
    report("everything in one partition (no streaming), for comparison:", single, None)
    same = streamed["clusters"] == single["clusters"] and streamed["docs_to_remove"] == single["docs_to_remove"]
    print(f"same clusters either way: {same}")

    out = subprocess.run([sys.executable, "-c", SUBSTRING_PROBE.format(root=str(ROOT), tokens=args.substring_tokens)],
                         capture_output=True, text=True, check=True)
    per_token, cut = out.stdout.split()
    print(f"\nsuffix array (EXACTSUBSTR, 50-token windows): {float(per_token):.0f} bytes/token (peak numpy arrays) over "
          f"{args.substring_tokens:,} tokens ({int(cut):,} tokens in repeated spans)")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if ok and same else 1)


if __name__ == "__main__":
    main()
