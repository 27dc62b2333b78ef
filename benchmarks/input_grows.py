"""A file added to a finished run's input, then ``refinery run ... --force``: what it redoes and costs.

    python benchmarks/input_grows.py [--input DIR] [--config YAML] [--add NAME] [--tree SRC ...] [--rounds N]

As a user does it (CLI subprocesses, docs/plan.md "An input that grows"): the recipe (default
``configs/refinedweb.yaml``) runs on INPUT (default the bundled ``data/sample/warc``) without the file
NAME (default ``cc_whirlwind_whirlwind.warc.gz``), NAME is added, the plain rerun is refused, and the
rerun with ``--force`` is timed; then a clean run over the grown input, whose corpus (``kept/`` ids
and texts) and funnel (``stats.json`` counts) the forced rerun must equal. Each ``--tree`` (a
refinery source tree, e.g. main's, taken with ``git archive``) is run the same way, interleaved, so
the code of before and after are compared on the same busy machine. Reported per tree: the filter
shards the forced rerun ran, its CPU time (user + system of the command and its workers) and wall
time, and whether its outputs equal the clean run's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def _cli(tree: Path, *args: str, ok: bool = True) -> tuple[subprocess.CompletedProcess, float, float]:
    """``refinery ARGS`` with ``tree`` imported; (result, CPU seconds of it and its children, wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    env = os.environ | {"PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-m", "refinery", *args], capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir())
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if ok and done.returncode != 0:
        raise SystemExit(f"refinery {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done, cpu, wall


def _corpus(out: Path) -> list[tuple[str, str]]:
    rows = [r for f in sorted((out / "kept").glob("*.parquet")) for r in pq.read_table(f, columns=["id", "text"]).to_pylist()]
    return sorted((r["id"], r["text"]) for r in rows)


def _funnel(out: Path) -> list[tuple]:
    stats = json.loads((out / "stats.json").read_text())
    return [(s["stage"], s["docs_in"], s["docs_out"], s["removed"]) for s in stats["stages"]] + [
        (stats["docs_read"], stats["docs_kept"], stats["docs_removed"])]


def _shards_run(stderr: str) -> str:
    line = next((ln for ln in stderr.splitlines() if "[filter]" in ln and "shard(s) to run" in ln), "")
    return line.split("[filter] ", 1)[-1] if line else "every shard skipped"


def forced_rounds(trees: list[Path], rounds: int, config: Path, src: Path, clean: Path, work: Path,
                  first: Callable[[], object], change: Callable[[], object], refused_says: str) -> None:
    """Per round, each tree in turn: ``first()`` sets the input up, a run over it, ``change()``
    changes it, the plain rerun is refused (saying ``refused_says``), the rerun with ``--force`` is
    timed and its corpus and funnel compared with the clean run's (``clean``): one line each."""
    print(f"{'tree':<40} {'round':>5}  {'filter shards run by --force':<34} {'CPU s':>7} {'wall s':>7}  equal")
    for r in range(rounds):
        for tree in trees:
            out = work / f"run-{r}-{trees.index(tree)}"
            first()
            _cli(tree, "run", str(config), "-i", str(src), "-o", str(out))
            change()
            refused, _, _ = _cli(tree, "run", str(config), "-i", str(src), "-o", str(out), ok=False)
            assert refused.returncode != 0 and refused_says in refused.stderr, refused.stderr[-500:]
            forced, cpu, wall = _cli(tree, "run", str(config), "-i", str(src), "-o", str(out), "--force")
            equal = _corpus(out) == _corpus(clean) and _funnel(out) == _funnel(clean)
            print(f"{str(tree)[-40:]:<40} {r:>5}  {_shards_run(forced.stderr):<34} {cpu:>7.1f} {wall:>7.1f}  {equal}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=ROOT / "data/sample/warc")
    ap.add_argument("--config", type=Path, default=ROOT / "configs/refinedweb.yaml")
    ap.add_argument("--add", default="cc_whirlwind_whirlwind.warc.gz")
    ap.add_argument("--tree", type=Path, action="append", help="a refinery source tree to compare (repeatable)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    trees = [ROOT] + [t.resolve() for t in args.tree or []]
    work = Path(tempfile.mkdtemp(prefix="input-grows-"))
    try:
        src = work / "in"
        shutil.copytree(args.input, src)
        aside = work / args.add
        clean = work / "clean"
        _cli(ROOT, "run", str(args.config), "-i", str(src), "-o", str(clean))  # over the grown input
        (src / args.add).rename(aside)

        def first() -> None:
            if (src / args.add).exists():
                (src / args.add).rename(aside)

        forced_rounds(trees, args.rounds, args.config, src, clean, work, first,
                      lambda: aside.rename(src / args.add), "added")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
