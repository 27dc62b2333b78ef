"""Pipeline throughput: docs/s per core for each stage and end to end, and peak RSS.

    python benchmarks/pipeline.py [--repeat 4] [--config configs/refinedweb.yaml]

Runs the config on the bundled real WARC sample (copied ``--repeat`` times as separate shards)
in one process (workers=1, so figures are per core), after a warm-up shard that loads models and
the blocklist. Per-stage figures come from the runner's per-stage timers.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refinery.config import load_config  # noqa: E402
from refinery.pipeline import run_pipeline  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "refinedweb.yaml"))
    parser.add_argument("--input", default=str(ROOT / "data" / "sample" / "warc"))
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()

    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        warm_in, data_in = Path(tmp, "warm"), Path(tmp, "in")
        warm_in.mkdir()
        data_in.mkdir()
        files = sorted(Path(args.input).glob("*.warc*"))
        shutil.copy(files[0], warm_in / files[0].name)
        for i in range(args.repeat):
            for f in files:
                shutil.copy(f, data_in / f"r{i}-{f.name}")
        run_pipeline(config, str(warm_in), str(Path(tmp, "warm-out")), workers=1, progress=False)
        rss_after_warmup = peak_rss_mb()
        t0 = time.perf_counter()
        summary = run_pipeline(config, str(data_in), str(Path(tmp, "out")), workers=1, progress=False)
        elapsed = time.perf_counter() - t0
    stats = summary.stats
    print(f"input: {len(files)} WARC files x {args.repeat} = {stats['shards']} shards, {stats['docs_read']} documents")
    print(f"{'stage':<20} {'docs in':>8} {'seconds':>8} {'docs/s/core':>12}")
    for s in stats["stages"]:
        rate = s["docs_in"] / s["seconds"] if s["seconds"] else float("nan")
        print(f"{s['stage']:<20} {s['docs_in']:>8} {s['seconds']:>8.2f} {rate:>12.0f}")
    print(f"{'end to end':<20} {stats['docs_read']:>8} {elapsed:>8.2f} {stats['docs_read'] / elapsed:>12.0f}")
    print(f"kept {stats['docs_kept']} of {stats['docs_read']} documents")
    print(f"peak RSS: {peak_rss_mb():.0f} MB (after warm-up: {rss_after_warmup:.0f} MB)")
    print(json.dumps({"docs_per_s_per_core": stats["docs_read"] / elapsed, "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
