"""Pipeline throughput: docs/s per core for each stage and end to end, and peak RSS.

    python benchmarks/pipeline.py [--repeat 4] [--config configs/refinedweb.yaml]

Runs the config on the bundled real WARC sample (copied ``--repeat`` times as separate shards)
in one process (workers=1, so figures are per core), after a warm-up shard that loads models and
the blocklist. Per-stage figures come from the runner's per-stage timers.
"""

from __future__ import annotations

import argparse
import json
import os
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


def parquet_write_cost(run_dir: Path, scratch: Path) -> dict:
    """Time refinery's shard writer (zstd, atomic publish) on the run's own output tables: read
    every Parquet file the run wrote, write it again, sum the write times only."""
    import pyarrow.parquet as pq

    from refinery.io import parquet

    scratch.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    rows = files = size = 0
    for k, path in enumerate(sorted(run_dir.rglob("*.parquet"))):
        table = pq.read_table(path)
        t0 = time.perf_counter()
        parquet.write_table(table, str(scratch / f"{k}.parquet"))
        seconds += time.perf_counter() - t0
        rows += table.num_rows
        files += 1
        size += (scratch / f"{k}.parquet").stat().st_size
    return {"seconds": seconds, "rows": rows, "files": files, "mb": size / 1e6}


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
        writes = parquet_write_cost(Path(tmp, "out"), Path(tmp, "rewrite"))
    stats = summary.stats
    print(f"input: {len(files)} WARC files x {args.repeat} = {stats['shards']} shards, {stats['docs_read']} documents")
    print(f"{'stage':<20} {'docs in':>8} {'seconds':>8} {'docs/s/core':>12}")
    for s in stats["stages"]:
        rate = s["docs_in"] / s["seconds"] if s["seconds"] else float("nan")
        print(f"{s['stage']:<20} {s['docs_in']:>8} {s['seconds']:>8.2f} {rate:>12.0f}")
    print(f"{'end to end':<20} {stats['docs_read']:>8} {elapsed:>8.2f} {stats['docs_read'] / elapsed:>12.0f}")
    print(f"kept {stats['docs_kept']} of {stats['docs_read']} documents")
    print(f"Parquet writes (kept + removed + samples shards of the run, rewritten with refinery.io.parquet): "
          f"{writes['files']} files, {writes['rows']} rows, {writes['mb']:.1f} MB in {writes['seconds']:.2f} s = "
          f"{100 * writes['seconds'] / elapsed:.1f}% of the run ({writes['rows'] / max(writes['seconds'], 1e-9):,.0f} rows/s)")
    print(f"peak RSS: {peak_rss_mb():.0f} MB (after warm-up: {rss_after_warmup:.0f} MB)")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end (other work shares it)")
    print(json.dumps({"docs_per_s_per_core": stats["docs_read"] / elapsed, "peak_rss_mb": peak_rss_mb(),
                      "parquet_write_s": writes["seconds"]}))


if __name__ == "__main__":
    main()
