"""The conservation invariant, checked after every test on every run directory it left behind.

A run directory is any directory with a ``stats/`` folder of shard stats (``stats/<shard>.json``
with ``stages``/``docs_read``). For each one:

- every shard: for every stage, kept + removed = read, and stages chain (``check_conservation``);
  read = kept + removed for the shard; the first stage read what the shard read, the last stage
  kept what the shard kept; ``kept/<shard>.parquet`` and ``removed/<shard>.parquet`` hold exactly
  that many rows (from the Parquet footers, cheap);
- the run: the shards merge (``merge_shard_stats`` re-checks conservation on the totals) and, if
  the run wrote ``stats.json``, its totals equal the merge of its finished shards.

Use from tests/conftest.py::

    pytest_plugins = ["_invariants"]      # or: from _invariants import *  # noqa

Tests that deliberately write broken stats opt out with ``@pytest.mark.no_invariants``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from refinery.stats.counters import check_conservation
from refinery.stats.funnel import merge_shard_stats

_CHECKED: set[Path] = set()
_OPTED_OUT: list[Path] = []


def _is_shard_stats(d: object) -> bool:
    return isinstance(d, dict) and {"stages", "docs_read", "docs_kept", "docs_removed", "shard"} <= set(d)


def _rows(path: Path) -> int | None:
    return pq.ParquetFile(path).metadata.num_rows if path.exists() else None


def _kept_dir(run: Path) -> Path:
    """Where a pass keeps: its own kept/, or the run's kept/ for the last pass of a plan."""
    from refinery.rundir import RunDir

    for d in RunDir(str(run.parent)).document_pass_dirs():
        if Path(d.root) == run:
            return Path(d.kept_dir)
    return run / "kept"


def check_run_dir(run: Path) -> int:
    """Check one run directory (one pass of a run); return the number of shards checked (0 if it
    is not a run)."""
    shard_stats = []
    kept_dir = _kept_dir(run)
    for p in sorted((run / "stats").glob("*.json")):
        if p.name.startswith((".", "_")):
            continue
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            raise AssertionError(f"{p}: unreadable shard stats (a half-written marker?)") from None
        if not _is_shard_stats(d):
            return 0  # some other tool's stats folder
        where = f"{run} shard {d['shard']}"
        try:
            check_conservation(d["stages"])
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from None
        assert d["docs_read"] == d["docs_kept"] + d["docs_removed"], f"{where}: read != kept + removed"
        if d["stages"]:
            assert d["stages"][0]["docs_in"] == d["docs_read"], f"{where}: first stage did not read every document"
            assert d["stages"][-1]["docs_out"] == d["docs_kept"], f"{where}: last stage's kept != shard kept"
        for sub, key in ((kept_dir, "docs_kept"), (run / "removed", "docs_removed")):
            n = _rows(sub / f"{p.stem}.parquet")
            assert n is None or n == d[key], f"{where}: {sub}/{p.stem}.parquet has {n} rows, stats say {d[key]}"
        shard_stats.append(d)
    if not shard_stats:
        return 0
    merged = merge_shard_stats(shard_stats)
    summary = run / "stats.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        if "docs_read" in s and "shards" in s:
            for key in ("docs_read", "docs_kept", "docs_removed", "shards"):
                assert s[key] == merged[key], f"{run}/stats.json: {key} {s[key]} != {merged[key]} from its shards"
            check_conservation(s["stages"])
    return len(shard_stats)


def check_tree(root: Path) -> int:
    """Check every run directory under ``root`` (once per session); return shards checked."""
    total = 0
    if not root.exists():
        return 0
    for stats_dir in root.rglob("stats"):
        run = stats_dir.parent
        if any(run.is_relative_to(r) for r in _OPTED_OUT):
            continue
        if stats_dir.is_dir() and run not in _CHECKED:
            total += check_run_dir(run)
            _CHECKED.add(run)
    return total


@pytest.fixture(autouse=True)
def _conservation_invariant(request):
    """After each test, check the run directories it wrote under its ``tmp_path``."""
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is None:
        return
    if request.node.get_closest_marker("no_invariants"):
        _OPTED_OUT.append(tmp)
        return
    check_tree(tmp)


@pytest.fixture(scope="session", autouse=True)
def _conservation_invariant_session(tmp_path_factory):
    """At the end of the session, the same over everything under pytest's base temp directory
    (module- and session-scoped runs made with ``tmp_path_factory`` included)."""
    yield
    check_tree(tmp_path_factory.getbasetemp())
