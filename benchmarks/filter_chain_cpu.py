"""Where the filter chain's CPU goes, stage by stage (issue 17): the chain of
``benchmarks/vs_datatrove_filter.py`` (url_filter -> prescreen -> extract -> language_id ->
gopher_repetition -> gopher_quality, ``run_pipeline(workers=1)``) on the same real pages, after the
same warm-up, with the CPU seconds of

- the process tree (this process + the extraction helper), this process, and the helper (the
  difference: trafilatura's own extraction);
- each stage in this process and the WARC reader (the runner's per-stage timers read
  ``time.process_time`` here instead of ``time.perf_counter``: CPU, not wall, on a shared machine);
- the runner's own rest (statistics, kept/removed splits, spooling, Parquet writes).

    python benchmarks/filter_chain_cpu.py [--repeats 3] [--work DIR]

The input is built as the comparison builds it (``real_pages.write_warcs``) unless ``--input`` names
a directory of such WARCs (e.g. a kept ``/tmp/vs-datatrove-filter/input``).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import shutil
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default="/tmp/filter-chain-cpu")
    ap.add_argument("--input", help="a directory of the benchmark's WARCs (default: built in --work)")
    args = ap.parse_args(argv)

    from vs_datatrove_filter import WARM_PAGES, _warm_extract_helper, refinery_chain, tree_cpu_seconds

    import refinery.runner as runner
    from refinery.io.arrow_rows import skip_pandas_probe
    from refinery.pipeline import run_pipeline, skip_exit_gc

    skip_exit_gc()
    skip_pandas_probe()
    work = Path(args.work)
    shutil.rmtree(work / "out", ignore_errors=True)
    if args.input:
        data = Path(args.input)
        warm = work / "warm"
        if not warm.exists():
            from real_pages import pages, write_warcs

            write_warcs(pages()[::-1][:WARM_PAGES], warm, prefix="warm")
    else:
        from real_pages import pages, write_warcs

        data, warm = work / "input", work / "warm"
        if not data.exists():
            items = pages()
            write_warcs(items, data, prefix="pages")
            write_warcs(items[::-1][:WARM_PAGES], warm, prefix="warm")
    config = refinery_chain(True)
    run_pipeline(config, str(warm), str(work / "out" / "warm"), workers=1, progress=False)
    _warm_extract_helper(config, warm)
    # the runner's stage timers (time.perf_counter) read CPU time in this run
    runner.time = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    runner.time.perf_counter = time.process_time
    for rep in range(args.repeats):
        out = work / "out" / f"run-{rep}"
        c0, p0 = tree_cpu_seconds(), time.process_time()
        run_pipeline(config, str(data), str(out), workers=1, progress=False)
        tree, main_cpu = tree_cpu_seconds() - c0, time.process_time() - p0
        stages: collections.Counter[str] = collections.Counter()
        docs = 0
        for path in glob.glob(str(out / "stats" / "*.json")):
            stats = json.loads(Path(path).read_text())
            docs += stats["docs_read"]
            for stage in stats["stages"]:
                stages[stage["stage"]] += stage.get("seconds", 0.0)  # markers leave out zero counters
        parts = {**stages, "runner rest": main_cpu - sum(stages.values()), "extraction helper": tree - main_cpu}
        print(f"repeat {rep}: {docs} pages, process tree {tree:.3f} CPU-s ({1000 * tree / docs:.2f} ms/page), "
              f"this process {main_cpu:.3f}", flush=True)
        for name, seconds in parts.items():
            print(f"  {name:<20} {seconds:6.3f} s  {100 * seconds / tree:5.1f}%")
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
