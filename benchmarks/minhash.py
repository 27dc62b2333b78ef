"""MinHash signature speed per core on the real sample texts, at 128 permutations, measured in one run:

    python benchmarks/minhash.py [--repeat 5] [--num-perm 128]

- ``refinery/rensa``: our path end to end (normalize + word 5-grams + hash, all vectorized with
  numpy, then rensa's R-MinHash over the shingle hashes in one call per batch of 1000 documents);
- ``refinery/numpy``: the same with our numpy k-permutation MinHash (no compiled dependency);
- ``datasketch update``: ``MinHash.update`` per shingle (the usual loop);
- ``datasketch bulk``: ``MinHash.bulk`` (numpy permutations over sha1 shingle hashes).

datasketch gets the *same* shingles (our normalization), prepared before its clock starts, so its
figures exclude normalization and shingling while ours include them: the comparison favours
datasketch. The process is pinned to one CPU and Rayon to one thread, so figures are per core.
Targets (issue 3): >= 20x ``update`` and >= 4x ``bulk``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refinery.dedup.minhash import LshParams, MinHasher
from refinery.dedup.text import fold_table, reference_shingles


def load_texts() -> list[str]:
    texts = []
    for path in sorted((ROOT / "data" / "sample" / "cc_docs").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts.extend(json.loads(line)["text"] for line in f)
    return texts


def best_of(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    texts = load_texts()
    n = len(texts)
    fold_table()  # built/cached once per machine; not part of the per-document cost
    shingles = [[" ".join(s).encode() for s in reference_shingles(t)] for t in texts]
    n_shingles = sum(len(s) for s in shingles)
    print(f"{n} real Common Crawl documents ({sum(len(t) for t in texts) / n:.0f} chars, "
          f"{n_shingles / n:.0f} word 5-grams on average), {args.num_perm} permutations, 1 core\n")

    results: dict[str, float] = {}
    for backend in ("rensa", "numpy"):
        hasher = MinHasher(LshParams(num_perm=args.num_perm, bands=1, rows=1, backend=backend))
        hasher.signatures(texts[:10])  # warm-up

        def ours(h=hasher) -> None:
            for lo in range(0, n, args.batch):
                h.signatures(texts[lo : lo + args.batch])

        results[f"refinery/{backend} (end to end)"] = n / best_of(args.repeat, ours)

    from datasketch import MinHash

    def update() -> None:
        for doc in shingles:
            m = MinHash(num_perm=args.num_perm)
            for s in doc:
                m.update(s)

    def bulk() -> None:
        MinHash.bulk(shingles, num_perm=args.num_perm)

    results["datasketch update (hashing only)"] = n / best_of(max(1, args.repeat // 2), update)
    results["datasketch bulk (hashing only)"] = n / best_of(args.repeat, bulk)

    update_rate = results["datasketch update (hashing only)"]
    bulk_rate = results["datasketch bulk (hashing only)"]
    print(f"{'method':<36}{'docs/s/core':>12}{'vs update':>11}{'vs bulk':>9}")
    for name, rate in results.items():
        print(f"{name:<36}{rate:>12,.0f}{rate / update_rate:>10.1f}x{rate / bulk_rate:>8.1f}x")
    ours_rate = results["refinery/rensa (end to end)"]
    ok_update, ok_bulk = ours_rate >= 20 * update_rate, ours_rate >= 4 * bulk_rate
    print(f"\ntargets: >= 20x update: {'PASS' if ok_update else 'FAIL'} ({ours_rate / update_rate:.1f}x); "
          f">= 4x bulk: {'PASS' if ok_bulk else 'FAIL'} ({ours_rate / bulk_rate:.1f}x)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    sys.exit(0 if ok_update and ok_bulk else 1)


if __name__ == "__main__":
    main()
