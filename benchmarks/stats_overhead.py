"""Cost of run statistics: time spent collecting histograms, languages, removed domains and
removed samples, against the stages' own time, per core; report rendering time; peak RSS.

    python benchmarks/stats_overhead.py [--repeat 10]

Input: the bundled real CC documents (data/sample/cc_docs, 717 docs in 53 languages) repeated
``--repeat`` times into one Parquet shard (fresh ids), run in one process through URL filter,
language ID, Gopher repetition/quality and line corrections. The collector's calls are timed
directly (wrapped with a perf counter), so the figure is the overhead, not a difference of noisy
end-to-end timings.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refinery.config import parse_config  # noqa: E402
from refinery.runner import ShardRunner, ShardTask  # noqa: E402
from refinery.stats import collector as collector_mod  # noqa: E402
from refinery.stats.report import build_report  # noqa: E402

STAGES = [
    {"type": "url_filter"},
    {"type": "language_id", "params": {"languages": ["en"], "min_score": 0.65}},
    {"type": "gopher_repetition"},
    {"type": "gopher_quality"},
    {"type": "line_corrections"},
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cc_docs_table(repeat: int) -> pa.Table:
    rows = []
    for f in sorted((ROOT / "data" / "sample" / "cc_docs").glob("*.jsonl.gz")):
        for line in gzip.open(f, "rt"):
            d = json.loads(line)
            rows.append({"url": (d.get("metadata") or {}).get("url"), "text": d["text"], "id": d["id"]})
    out = []
    for r in range(repeat):
        out.extend({"id": f"{d['id']}-{r}", "url": d["url"], "text": d["text"]} for d in rows)
    return pa.Table.from_pylist(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    spent = {"seconds": 0.0}
    for name in ("observe", "observe_kept", "write_samples", "to_dict"):
        original = getattr(collector_mod.ShardStatsCollector, name)

        def timed(self, *a, _original=original, **kw):
            t0 = time.perf_counter()
            try:
                return _original(self, *a, **kw)
            finally:
                spent["seconds"] += time.perf_counter() - t0

        setattr(collector_mod.ShardStatsCollector, name, timed)

    stages = parse_config({"name": "bench", "stages": STAGES}).build_stages()
    runner = ShardRunner(stages)
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(cc_docs_table(1), Path(tmp, "warm.parquet"))
        runner.run(ShardTask(str(Path(tmp, "warm.parquet")), str(Path(tmp, "warm-out")), "warm"))  # load models
        spent["seconds"] = 0.0
        data = Path(tmp, "docs.parquet")
        pq.write_table(cc_docs_table(args.repeat), data)
        t0 = time.perf_counter()
        stats = runner.run(ShardTask(str(data), str(Path(tmp, "out")), "docs")).stats
        elapsed = time.perf_counter() - t0
        Path(tmp, "out", "stats.json").write_text(json.dumps({**stats, "shards": 1}))
        t1 = time.perf_counter()
        html = build_report(str(Path(tmp, "out")))
        report_s = time.perf_counter() - t1
    stage_s = sum(s["seconds"] for s in stats["stages"])
    n = stats["docs_read"]
    print(f"input: cc_docs x {args.repeat} = {n} documents in one shard, one core")
    print(f"end to end:          {elapsed:7.2f} s   {n / elapsed:8.0f} docs/s/core")
    print(f"stages:              {stage_s:7.2f} s   {n / stage_s:8.0f} docs/s/core")
    print(f"stats collection:    {spent['seconds']:7.2f} s   {n / spent['seconds']:8.0f} docs/s/core   "
          f"({100 * spent['seconds'] / elapsed:.1f}% of the shard's time)")
    print(f"report (HTML):       {report_s:7.2f} s   {len(html) / 1024:.0f} KiB")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    print(json.dumps({"docs": n, "stats_overhead_pct": round(100 * spent["seconds"] / elapsed, 2),
                      "stats_docs_per_s_per_core": round(n / spent["seconds"]), "docs_per_s_per_core": round(n / elapsed),
                      "peak_rss_mb": round(peak_rss_mb())}))


if __name__ == "__main__":
    main()
