"""The extract stage with and without ``join_source_lines`` (docs/extraction.md):

* CPU per page on the filter benchmark's 1,087 real pages and the 990 evaluation pages, the two
  settings alternating page by page in one process;
* on the evaluation pages: texts that change, and what ``line_corrections`` (RefinedWeb's 5%)
  then removes: documents, words, one-word lines, with the one-word lines no longer cut (and any
  newly cut).

    python benchmarks/join_lines.py
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refinery.stages import _extract_helper  # noqa: E402
from refinery.stages.extract import TrafilaturaExtractor  # noqa: E402
from refinery.stages.line_corrections import LineCorrections  # noqa: E402


def cpu(pages: list[tuple[str, str]], rounds: int) -> dict[bool, float]:
    stage = TrafilaturaExtractor()
    fns = {join: _extract_helper.make_extract({
        "backend": "trafilatura", "kwargs": stage._trafilatura_kwargs(), "fallback": stage._fallback_config(),
        "rules": stage._rules_config(), "join_lines": join, "log_level": logging.ERROR}) for join in (False, True)}
    seconds = {False: 0.0, True: 0.0}
    for r in range(rounds):
        for i, (url, html) in enumerate(pages):
            for join in ((False, True) if (i + r) % 2 else (True, False)):
                c = time.process_time()
                fns[join](html, url)
                seconds[join] += time.process_time() - c
    return {join: 1000 * s / (rounds * len(pages)) for join, s in seconds.items()}


def line_corrections_effect(batch: pa.RecordBatch) -> None:
    lc = LineCorrections(max_removed_word_frac=0.05)
    texts = {}
    for join in (False, True):
        stage = TrafilaturaExtractor(timeout_s=0, join_source_lines=join)
        texts[join] = []
        for i in range(0, batch.num_rows, 100):
            texts[join] += stage(batch.slice(i, 100)).column("text").to_pylist()
    removed, cut = {False: 0, True: 0}, {False: 0, True: 0}
    lines: dict[bool, collections.Counter] = {False: collections.Counter(), True: collections.Counter()}
    for a, b in zip(texts[False], texts[True]):
        for join, text in ((False, a), (True, b)):
            if not text:
                continue
            corrected, words, total = lc.correct(text)
            removed[join] += bool(total) and words / total > 0.05
            cut[join] += words
            kept = set(corrected.split("\n"))
            lines[join].update(line.strip() for line in text.split("\n")
                               if line.strip() and line not in kept and len(line.split()) <= 1)
    changed = sum(a != b for a, b in zip(texts[False], texts[True]))
    print(f"evaluation pages: {batch.num_rows}, texts changed by the join: {changed}")
    print(f"line_corrections: documents removed {removed[False]} -> {removed[True]}, words cut {cut[False]:,} -> "
          f"{cut[True]:,}, one-word lines cut {sum(lines[False].values()):,} -> {sum(lines[True].values()):,}")
    print("no longer cut:", ", ".join(repr(k) for k in (lines[False] - lines[True])))
    print("newly cut:", ", ".join(repr(k) for k in (lines[True] - lines[False])) or "none")


def main() -> None:
    sys.path.append(str(ROOT / "benchmarks"))
    import extraction

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sets = extraction.ab_page_sets(argparse.Namespace(eval_tarball=str(extraction.DEFAULT_EVAL), eval_pages=0),
                                   TrafilaturaExtractor())
    pages = [p for v in sets.values() for p in v]
    ms = cpu(pages, args.rounds)
    print(f"CPU per page ({len(pages):,} pages, {args.rounds} rounds, alternating): without {ms[False]:.3f} ms, "
          f"with {ms[True]:.3f} ms ({ms[True] / ms[False] - 1:+.1%})")
    eval_batch, _ = extraction.load_eval(Path(extraction.DEFAULT_EVAL), 0)
    line_corrections_effect(eval_batch)


if __name__ == "__main__":
    main()
