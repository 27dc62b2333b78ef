"""Soak: run the pipeline over many shards for a bounded time and watch memory.

    python benchmarks/soak.py [--minutes 3] [--config configs/refinedweb.yaml] [--max-growth-mb 150]

Copies the bundled real WARCs into ``--shards-per-round`` shards, then runs the config over a fresh
output directory again and again in this process (workers=1: the same long-lived worker process
a pool or Ray worker would be) until ``--minutes`` pass. RSS is sampled after every round. The
first round loads the blocklist and models, so growth is measured from the end of round 1 to the
end of the run; the script exits 1 if it exceeds ``--max-growth-mb`` (a leak: per-shard state
kept alive, caches without bounds). Prints docs/s per core and peak RSS like the other benchmarks.
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refinery.config import load_config  # noqa: E402
from refinery.pipeline import run_pipeline  # noqa: E402


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "refinedweb.yaml"))
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--shards-per-round", type=int, default=12)
    ap.add_argument("--max-growth-mb", type=float, default=150.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    config = load_config(args.config)
    warcs = sorted((ROOT / "data" / "sample" / "warc").glob("*.warc.gz"))
    with tempfile.TemporaryDirectory(prefix="refinery-soak-") as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i in range(args.shards_per_round):
            shutil.copy(warcs[i % len(warcs)], src / f"s{i:04d}-{warcs[i % len(warcs)].name}")
        deadline = time.time() + args.minutes * 60
        samples: list[tuple[int, float, float]] = []  # (round, seconds since start, RSS MB)
        started = time.time()
        docs = shards = rounds = 0
        busy = 0.0
        while time.time() < deadline or rounds < 2:
            out = Path(tmp) / f"out-{rounds}"
            t0 = time.time()
            summary = run_pipeline(config, str(src), str(out), workers=1, progress=False)
            busy += time.time() - t0
            if summary.failed:
                print(f"round {rounds}: {len(summary.failed)} shard(s) failed: {summary.failed[0].error}")
                return 1
            docs += summary.stats["docs_read"]
            shards += len(summary.outcomes)
            shutil.rmtree(out)
            rounds += 1
            samples.append((rounds, time.time() - started, rss_mb()))
            print(f"round {rounds:3d}  t={samples[-1][1]:6.1f}s  shards={shards:5d}  docs={docs:7d}  "
                  f"RSS={samples[-1][2]:7.1f} MB", flush=True)
    base = samples[0][2]
    growth = samples[-1][2] - base
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{rounds} rounds, {shards} shards, {docs} docs in {busy:.0f}s: {docs / busy:.0f} docs/s/core")
    print(f"RSS after round 1: {base:.0f} MB; at the end: {samples[-1][2]:.0f} MB; growth {growth:+.0f} MB "
          f"(bound {args.max_growth_mb:.0f} MB); max over rounds {max(s[2] for s in samples):.0f} MB; "
          f"peak RSS {peak:.0f} MB")
    if growth > args.max_growth_mb:
        print("FAIL: memory grows across shards")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
