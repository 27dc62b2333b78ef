"""Cost of run statistics: time spent collecting histograms, languages, removed domains and
removed samples, against the stages' own time, per core; report rendering time; peak RSS.

    python benchmarks/stats_overhead.py [--repeat 10]

Also times the word count the runner's counters use (``refinery.stats.wordcount``: a numpy byte
scan over the Arrow buffers) against Arrow's ``count_substring_regex(text, r"\S+")`` on the same
documents, checking that both give identical counts; and line corrections with their shortcuts
(pattern hints, ASCII letter counts) against the plain per-line patterns, checking identical output.

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


def machine_conditions() -> str:
    """One line on the machine: cores and the 1-minute load (other work running shows here)."""
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"machine: {os.cpu_count()} cores, 1-min load {load:.2f} (other work on the machine counts against these figures)"


def word_count_figures(table: pa.Table, rounds: int = 5) -> dict[str, float]:
    """Best-of-``rounds`` seconds for the regex and the byte scan over ``table``'s text, per
    500-document batch like the runner's; raises if their counts differ."""
    import numpy as np
    import pyarrow.compute as pc

    from refinery.stats.wordcount import word_counts

    batches = table.to_batches(max_chunksize=500)
    regex = [pc.fill_null(pc.count_substring_regex(b.column("text"), r"\S+"), 0).to_numpy(zero_copy_only=False)
             for b in batches]
    scan = [word_counts(b.column("text")) for b in batches]
    if not all(np.array_equal(a, b) for a, b in zip(regex, scan)):
        raise AssertionError("the byte scan and the regex disagree")
    best = {}
    for name, count in (("regex", lambda c: pc.count_substring_regex(c, r"\S+")), ("byte scan", word_counts)):
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for b in batches:
                count(b.column("text"))
            times.append(time.perf_counter() - t0)
        best[name] = min(times)
    return best


def line_corrections_figures(table: pa.Table, rounds: int = 3) -> dict[str, float]:
    """Best-of-``rounds`` seconds of LineCorrections over ``table`` (500-document batches) with
    its shortcuts and with the plain per-line patterns; raises if their outputs differ."""
    from refinery.stages import line_corrections as lc

    batches = [pa.RecordBatch.from_pydict({"text": b.column("text")}) for b in table.to_batches(max_chunksize=500)]
    fast = (lc._may_match_patterns, lc._upper_lower)
    plain = (lambda line: True, lambda line: (len(lc._UPPER_RE.findall(line)), len(lc._LOWER_RE.findall(line))))
    best: dict[str, float] = {}
    outs: dict[str, list[pa.RecordBatch]] = {}
    try:
        for _ in range(rounds):
            for name, (may_match, upper_lower) in (("plain", plain), ("shortcuts", fast)):
                lc._may_match_patterns, lc._upper_lower = may_match, upper_lower
                stage = lc.LineCorrections()
                t0 = time.perf_counter()
                outs[name] = [stage(b) for b in batches]
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    finally:
        lc._may_match_patterns, lc._upper_lower = fast
    if not all(a.equals(b) for a, b in zip(outs["plain"], outs["shortcuts"])):
        raise AssertionError("line corrections: the shortcuts changed the output")
    return best


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
    table = cc_docs_table(args.repeat)
    words = word_count_figures(table)
    mb = sum(len(t.encode()) for t in table.column("text").to_pylist()) / 1e6
    print(machine_conditions())
    print(f"input: cc_docs x {args.repeat} = {n} documents in one shard, one core")
    for name, sec in words.items():
        print(f"word count, {name:9s}: {sec:7.3f} s   {n / sec:8.0f} docs/s/core   {mb / sec:7.1f} MB/s")
    print(f"word count speed-up: {words['regex'] / words['byte scan']:.1f}x (identical counts)")
    one = cc_docs_table(1)
    lines = line_corrections_figures(one)
    for name, sec in lines.items():
        print(f"line corrections, {name:9s}: {sec:6.2f} s   {one.num_rows / sec:6.0f} docs/s/core (cc_docs x 1, every document)")
    print(f"line corrections speed-up: {lines['plain'] / lines['shortcuts']:.2f}x (identical output)")
    print(f"end to end:          {elapsed:7.2f} s   {n / elapsed:8.0f} docs/s/core")
    print(f"stages:              {stage_s:7.2f} s   {n / stage_s:8.0f} docs/s/core")
    print(f"stats collection:    {spent['seconds']:7.2f} s   {n / spent['seconds']:8.0f} docs/s/core   "
          f"({100 * spent['seconds'] / elapsed:.1f}% of the shard's time)")
    print(f"report (HTML):       {report_s:7.2f} s   {len(html) / 1024:.0f} KiB")
    for st in stats["stages"][1:]:  # each stage's own docs/s/core on the documents that reached it
        print(f"  stage {st['stage']:18s} {st['docs_in']:6d} docs in {st['seconds']:6.2f} s   "
              f"{st['docs_in'] / max(st['seconds'], 1e-9):8.0f} docs/s/core")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    print(json.dumps({"docs": n, "stats_overhead_pct": round(100 * spent["seconds"] / elapsed, 2),
                      "stats_docs_per_s_per_core": round(n / spent["seconds"]), "docs_per_s_per_core": round(n / elapsed),
                      "peak_rss_mb": round(peak_rss_mb()),
                      "wordcount_regex_docs_per_s": round(n / words["regex"]),
                      "wordcount_scan_docs_per_s": round(n / words["byte scan"]),
                      "line_corrections_plain_docs_per_s": round(one.num_rows / lines["plain"]),
                      "line_corrections_docs_per_s": round(one.num_rows / lines["shortcuts"])}))


if __name__ == "__main__":
    main()
