"""Ray executor vs local process pool: docs/s per core on the same input, and what Ray costs.

    python benchmarks/scale.py [--repeat 8] [--workers 2]

Input: the 717 bundled Common Crawl documents (data/sample/cc_docs, 3 files) copied ``--repeat``
times as separate shards, through the RefinedWeb document stages that apply to extracted text
(URL words, fastText LID, Gopher repetition + quality, line corrections). Each executor runs the
same shards with ``--workers`` processes after a warm-up run; docs/s per core = docs / wall
seconds / workers. Peak RSS is the whole process tree (driver, pool or Ray processes), sampled.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _scale_fixtures import CC_DOCS, cc_spec  # noqa: E402
from refinery.config import parse_config  # noqa: E402
from refinery.pipeline import run_pipeline  # noqa: E402


class TreeRss:
    """Peak summed RSS of this process and all its descendants, sampled every 0.1 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.1)

    def __enter__(self) -> "TreeRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp, "in")
        data.mkdir()
        for i in range(args.repeat):
            for f in sorted(CC_DOCS.glob("*.jsonl.gz")):
                shutil.copy(f, data / f"r{i}-{f.name}")
        for kind in ("local", "ray"):
            config = parse_config(cc_spec(name=f"bench-{kind}", type=kind, object_store_memory=256 * 2**20))
            started_ray = False
            with TreeRss() as rss:
                t0 = time.perf_counter()
                if kind == "ray":
                    from refinery.executors.ray_cluster import ensure_ray

                    started_ray = ensure_ray(num_cpus=args.workers, object_store_memory=256 * 2**20,
                                             log_to_driver=False)
                startup = time.perf_counter() - t0
                # warm-up: worker processes start and load models (not counted)
                run_pipeline(config, str(data), str(Path(tmp, f"warm-{kind}")), workers=args.workers, progress=False)
                t1 = time.perf_counter()
                summary = run_pipeline(config, str(data), str(Path(tmp, f"out-{kind}")), workers=args.workers,
                                       progress=False)
                wall = time.perf_counter() - t1
            if started_ray:
                import ray

                ray.shutdown()
            docs = summary.stats["docs_read"]
            results[kind] = {"shards": len(summary.outcomes), "docs": docs, "wall_s": round(wall, 2),
                             "docs_per_s_per_core": round(docs / wall / args.workers, 1),
                             "startup_s": round(startup, 2), "peak_rss_mb": round(rss.peak / 2**20)}
            print(f"{kind:>5}: {docs} docs in {len(summary.outcomes)} shards, {wall:.2f} s with {args.workers} "
                  f"workers -> {docs / wall / args.workers:,.0f} docs/s/core; cluster start {startup:.1f} s; "
                  f"peak RSS (process tree) {rss.peak / 2**20:,.0f} MB")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
