"""The conservation checker in tests/_invariants.py catches broken runs and passes real ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from _invariants import check_run_dir
from refinery.runner import ShardRunner, ShardTask
from refinery.stages.gopher import GopherQuality

CC = Path(__file__).resolve().parents[1] / "data" / "sample" / "cc_docs" / "multiple_files_cc_en_head-0091.jsonl.gz"


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    out = tmp_path / "run"
    ShardRunner([GopherQuality(min_words=50)]).run(ShardTask(str(CC), str(out), "a"))
    ShardRunner([GopherQuality(min_words=50)]).run(ShardTask(str(CC), str(out), "b"))
    return out


def test_real_run_passes(run_dir):
    assert check_run_dir(run_dir) == 2


@pytest.mark.no_invariants
@pytest.mark.parametrize("breakage", ["stage_leak", "shard_total", "kept_file", "summary"])
def test_broken_runs_are_caught(run_dir, breakage):
    path = run_dir / "stats" / "a.json"
    s = json.loads(path.read_text())
    if breakage == "stage_leak":
        s["stages"][-1]["docs_out"] -= 1  # a stage lost a document
        s["docs_kept"] -= 1
    elif breakage == "shard_total":
        s["docs_removed"] += 1
    elif breakage == "kept_file":
        shutil.copy(run_dir / "removed" / "a.parquet", run_dir / "kept" / "a.parquet")
    else:
        summary = {"shards": 2, "docs_read": 999, "docs_kept": 0, "docs_removed": 999, "stages": []}
        (run_dir / "stats.json").write_text(json.dumps(summary))
    path.write_text(json.dumps(s))
    with pytest.raises(AssertionError):
        check_run_dir(run_dir)
