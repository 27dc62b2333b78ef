"""Language pre-screen: kept-set agreement with the plain chain, and the time it saves.

    python benchmarks/prescreen.py [--mixes all,0.5] [--min-score 0.3] [--backend selectolax|resiliparse] [--main-content]

For each input mix of real pages packed as WARCs (benchmarks/real_pages.py: ``all`` = every page,
~80% non-English; ``0.5`` = half English), runs the recipe's filter chain (url_filter -> extract
-> language_id -> gopher_repetition -> gopher_quality, params from configs/refinedweb.yaml) with
and without ``prescreen`` before ``extract``, one worker each (per-core figures), and compares the
kept documents by id and text. Prints: pages in, extract calls, kept, agreement (kept documents
identical / kept by the plain chain), documents only one chain kept (with their prescreen
score), wall seconds, docs/s/core. Other work on the machine changes the seconds, not the sets.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_pages import pages, write_warcs  # noqa: E402

from refinery.config import load_config  # noqa: E402
from refinery.pipeline import run_pipeline  # noqa: E402

CHAIN = ("url_filter", "extract", "language_id", "gopher_repetition", "gopher_quality")


def chain_config(prescreen: dict | None):
    base = load_config(ROOT / "configs" / "refinedweb.yaml")
    stages = [s for s in base.stages if s.type in CHAIN]
    if prescreen is not None:
        from refinery.config import StageConfig

        at = [s.type for s in stages].index("extract")
        stages.insert(at, StageConfig(type="prescreen", params=prescreen))
    return base.model_copy(update={"stages": stages, "dedup": [], "tokenize": None})


def kept(run_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(run_dir.rglob("kept/*.parquet")):
        t = pq.read_table(path, columns=["id", "text"])
        out.update(zip(t.column("id").to_pylist(), t.column("text").to_pylist()))
    return out


def removed_scores(run_dir: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for path in sorted(run_dir.rglob("removed/*.parquet")):
        t = pq.read_table(path, columns=["id", "removed_stage", "removed_metric"])
        for i, stage, metric in zip(*(t.column(c).to_pylist() for c in ("id", "removed_stage", "removed_metric"))):
            if stage == "prescreen":
                out[i] = metric
    return out


def run(config, warcs: Path, out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    summary = run_pipeline(config, str(warcs), str(out), workers=1, progress=False)
    return time.perf_counter() - t0, summary.stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixes", default="all,0.5", help="comma list: 'all' or an English share such as 0.5")
    parser.add_argument("--min-score", type=float, default=0.3)
    parser.add_argument("--min-chars", type=int, default=200)
    parser.add_argument("--backend", default="selectolax", choices=["selectolax", "resiliparse"],
                        help="the pre-screen's text (whole page)")
    parser.add_argument("--main-content", action="store_true", help="prescreen on Resiliparse main content")
    args = parser.parse_args()
    params = {"languages": ["en"], "min_score": args.min_score, "min_chars": args.min_chars,
              "main_content": args.main_content,
              "backend": "resiliparse" if args.main_content else args.backend}
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: models, blocklist cache, trafilatura helper start-up are not counted
        warm = Path(tmp, "warm")
        write_warcs(pages()[:20], warm)
        run(chain_config(params), warm, Path(tmp, "warm-out"))
        for mix in args.mixes.split(","):
            share = None if mix == "all" else float(mix)
            items = pages(share)
            warcs = Path(tmp, f"in-{mix}")
            write_warcs(items, warcs)
            plain_s, plain_stats = run(chain_config(None), warcs, Path(tmp, f"plain-{mix}"))
            pre_s, pre_stats = run(chain_config(params), warcs, Path(tmp, f"pre-{mix}"))
            a, b = kept(Path(tmp, f"plain-{mix}")), kept(Path(tmp, f"pre-{mix}"))
            same = sum(1 for i, text in a.items() if b.get(i) == text)
            scores = removed_scores(Path(tmp, f"pre-{mix}"))
            calls = {name: next(s["docs_in"] for s in st["stages"] if s["stage"] == "extract")
                     for name, st in (("plain", plain_stats), ("prescreen", pre_stats))}
            n = plain_stats["docs_read"]
            print(f"== mix {mix}: {n} pages ({len(items)} packed), params {params}")
            print(f"   plain    : extract calls {calls['plain']:>5}, kept {len(a):>4}, {plain_s:6.1f} s, "
                  f"{n / plain_s:6.1f} docs/s/core")
            print(f"   prescreen: extract calls {calls['prescreen']:>5}, kept {len(b):>4}, {pre_s:6.1f} s, "
                  f"{n / pre_s:6.1f} docs/s/core  (x{plain_s / pre_s:.2f})")
            print(f"   agreement: {same}/{len(a)} plain-kept documents identical ({100 * same / max(len(a), 1):.1f}%)")
            for i in sorted(set(a) - set(b)):
                print(f"   only plain kept {i}: prescreen score {scores.get(i)}")
            for i in sorted(set(b) - set(a)):
                print(f"   only prescreen kept {i}")
            for i in sorted(k for k in set(a) & set(b) if a[k] != b[k]):
                print(f"   text differs {i}")


if __name__ == "__main__":
    main()
