"""Gopher repetition throughput on real text, this tree vs a git revision, with equal outputs.

    python benchmarks/gopher.py [--ref HEAD] [--rounds 3]

Documents: the bundled real Common Crawl documents (data/sample/cc_docs, 717, 53 languages) plus
their doubled copies (repetitive text, where the n-gram rules do their work). The revision's
``refinery/stages/gopher.py`` is read with ``git show`` (read-only) and imported as a separate
module; both run ``GopherRepetition.check`` on every document, decisions and metric columns are
compared (must be identical), and docs per CPU-second (``time.process_time``, so other work on a
shared machine distorts it less than wall time) and peak RSS are printed.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_revision(ref: str):
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:refinery/stages/gopher.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "gopher_ref.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("gopher_ref", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rate(stage, docs: list[str], rounds: int) -> float:
    t0 = time.process_time()
    for _ in range(rounds):
        for d in docs:
            stage.check(d)
    return rounds * len(docs) / (time.process_time() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="HEAD")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from refinery.stages import gopher as current

    before = load_revision(args.ref)
    docs = []
    for path in sorted((ROOT / "data" / "sample" / "cc_docs").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs += [json.loads(line)["text"] for line in f]
    docs += [d + "\n\n" + d for d in docs[:200]]
    old, new = before.GopherRepetition(), current.GopherRepetition()
    same = sum(old.check(d) == new.check(d) for d in docs)
    print(f"{len(docs)} real documents (mean {sum(map(len, docs)) / len(docs):,.0f} chars); "
          f"decisions + metrics identical: {same}/{len(docs)}")
    r_old, r_new = rate(old, docs, args.rounds), rate(new, docs, args.rounds)
    print(f"gopher_repetition {args.ref}: {r_old:,.0f} docs/CPU-s; this tree: {r_new:,.0f} docs/CPU-s "
          f"(x{r_new / r_old:.2f})")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; machine: {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} (shared with other work)")
    if same != len(docs):
        sys.exit("outputs differ")


if __name__ == "__main__":
    main()
