"""Your own stage, as the library's user writes one (refinery/stages/registry.py): registered in the
driver, run by spawned worker processes, its removals and metric in the stats; a stage that breaks
the contract fails its shard with an error naming the stage and the shard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from _custom_stages import BreaksContract, RemoveAll, Shouting
from refinery.config import parse_config
from refinery.pipeline import run_pipeline
from refinery.stages.registry import register_stage

ROOT = Path(__file__).resolve().parents[1]
SMALL = sorted((ROOT / "data" / "sample" / "cc_docs").glob("multiple_files_cc_en_head-*.jsonl.gz"))


@pytest.fixture
def corpus(tmp_path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for f in SMALL:
        (src / f.name).write_bytes(f.read_bytes())
    return src


pytestmark = pytest.mark.usefixtures("registry_restored")


def test_a_stage_registered_in_the_driver_runs_in_spawned_workers(corpus, tmp_path):
    """A stage added to the registry in the driver was unknown in the spawned workers: every shard
    failed on "unknown stage type" after the config had validated (found as a library user)."""
    register_stage("shouting", Shouting)
    config = parse_config({"stages": [{"type": "shouting", "params": {"max_upper": 0.06}}]})
    out = tmp_path / "run"
    summary = run_pipeline(config, str(corpus), str(out), workers=2, progress=False)
    assert not summary.failed and summary.passes == {"filter": "done"}
    stats = json.loads((out / "stats.json").read_text())
    stage = next(s for s in stats["stages"] if s["stage"] == "shouting")
    removed = ds.dataset(str(out / "removed")).to_table()
    assert set(removed.column("removed_reason").to_pylist()) == {"too_shouty"}
    assert stage["removed"] == {"too_shouty": removed.num_rows} and 0 < removed.num_rows < stage["docs_in"]
    assert all(m > 0.06 for m in removed.column("removed_metric").to_pylist())
    histogram = stats["histograms"]["shouting"]["upper_frac"]
    assert sum(histogram["counts"]["removed"]) + histogram["over"]["removed"] == removed.num_rows


def test_a_stage_registered_again_replaces_the_one_built_before(corpus, tmp_path):
    """A notebook that re-registers a type (edited cell) ran the pipeline built with the old class:
    in-process (workers=1) pipelines were cached by config alone."""
    register_stage("mine", Shouting)
    config = parse_config({"stages": [{"type": "mine"}]})
    first = run_pipeline(config, str(corpus), str(tmp_path / "a"), workers=1, progress=False)
    register_stage("mine", RemoveAll)
    second = run_pipeline(config, str(corpus), str(tmp_path / "b"), workers=1, progress=False)
    assert first.stats["docs_kept"] == 20
    assert second.stats["docs_kept"] == 0 and second.stats["docs_removed"] == 20


def test_a_class_of_an_interactive_session_is_refused_before_the_run(corpus, tmp_path):
    """A class defined in a notebook (``__main__`` without a file) cannot be imported by a spawned
    worker: one line before the run, not every shard failing; ``workers=1`` runs it."""
    script = textwrap.dedent(f"""
        import pyarrow as pa
        from refinery.config import ConfigError, parse_config
        from refinery.pipeline import run_pipeline
        from refinery.stages.base import Stage, with_decision
        from refinery.stages.registry import register_stage

        class Mine(Stage):
            def process(self, batch):
                return with_decision(batch, [None] * batch.num_rows)

        register_stage("mine", Mine)
        config = parse_config({{"stages": [{{"type": "mine"}}]}})
        try:
            run_pipeline(config, {str(corpus)!r}, {str(tmp_path / "two")!r}, workers=2, progress=False)
        except ConfigError as exc:
            print("refused:", exc)
        print("inline:", run_pipeline(config, {str(corpus)!r}, {str(tmp_path / "one")!r}, workers=1, progress=False).passes)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == ("refused: stage type(s) ['mine'] are classes of this interactive session (__main__), which "
                        "worker processes cannot import: define them in a module (a .py file on sys.path) and "
                        "register that, or run with workers=1")
    assert lines[1] == "inline: {'filter': 'done'}"


@pytest.mark.parametrize("mode, problem", [
    ("no_reason", "returned no '_reason' column (build the output with refinery.stages.base.with_decision)"),
    ("int_reason", "returned a '_reason' column of type int64, not string (null = kept)"),
    ("drops_text", "dropped the column(s) ['text']: a stage returns every column it was given (rewritten or not)"),
    ("table", "returned a pyarrow.lib.Table, not a pyarrow.RecordBatch"),
    ("text_metric", "returned a '_metric' column of type string, not a number"),
])
def test_a_stage_breaking_the_contract_is_named_with_its_shard(corpus, tmp_path, mode, problem):
    """Each failed with an error naming no stage ("KeyError: 'Field "_reason" does not exist'",
    "TypeError: sequence item 2", "'ChunkedArray' object has no attribute 'offset'"), and a stage
    that dropped ``text`` finished: every kept document had null text (found as a library user)."""
    register_stage("breaks_contract", BreaksContract)
    config = parse_config({"stages": [{"type": "breaks_contract", "name": "mine", "params": {"mode": mode}}]})
    config.executor.max_retries = 0
    summary = run_pipeline(config, str(corpus), str(tmp_path / "run"), workers=1, progress=False)
    assert sorted(o.name for o in summary.failed) == ["multiple_files_cc_en_head-0091", "multiple_files_cc_en_head-0174"]
    for o in summary.failed:
        assert o.error.splitlines()[0] == (f"refinery.runner.StageContractError: stage 'mine' (breaks_contract) "
                                           f"{problem} (shard {o.name})")
    assert not list((tmp_path / "run" / "kept").glob("*.parquet"))


def test_register_stage_refuses_what_cannot_work():
    class Local(Shouting):
        pass

    with pytest.raises(ValueError, match="'gopher_quality' is a built-in stage"):
        register_stage("gopher_quality", Shouting)
    with pytest.raises(ValueError, match="defined inside a function"):
        register_stage("local", Local)
    with pytest.raises(ValueError, match="must be a subclass of refinery.stages.base.Stage"):
        register_stage("plain", dict)
    register_stage("missing", "no_such_module:Stage")
    with pytest.raises(Exception, match="stage type 'missing' is registered as 'no_such_module:Stage', which this "
                                        "process cannot import"):
        parse_config({"stages": [{"type": "missing"}]})


def test_a_run_summary_prints_short(corpus, tmp_path):
    """A notebook cell ending with run_pipeline(...) printed the dataclass repr: every shard's stats
    and histograms (160 KB for the 6-file WARC sample)."""
    register_stage("shouting", Shouting)
    summary = run_pipeline(parse_config({"stages": [{"type": "shouting", "params": {"max_upper": 0.06}}]}),
                           str(corpus), str(tmp_path / "run"), workers=1, progress=False)
    kept, removed = summary.stats["docs_kept"], summary.stats["docs_removed"]
    assert repr(summary) == (f"RunSummary(output={str(tmp_path / 'run')!r}, passes={{'filter': 'done'}}, "
                             f"shards={{'done': 2}}, {{'docs_read': 20, 'docs_kept': {kept}, 'docs_removed': {removed}}})")


def test_a_script_without_a_main_guard_is_told_why_its_workers_die(corpus, tmp_path):
    """A script calling run_pipeline at its top level: each spawned worker imports it again, runs it
    while starting up and dies of the bootstrapping error, which only stderr shows; every shard was
    "OOM-killed or crashed" (found as a library user). The error now names the script and the guard."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        from refinery.config import parse_config
        from refinery.pipeline import run_pipeline
        config = parse_config({{"stages": [{{"type": "gopher_quality"}}]}})
        summary = run_pipeline(config, {str(corpus)!r}, {str(tmp_path / "out")!r}, workers=2, progress=False)
        print("\\n".join(sorted({{t.error for t in summary.failed}})))
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith(f'{script} has no `if __name__ == "__main__":` guard: worker processes '
                                        "import it again and run its code while starting up, so put the call to "
                                        "run_pipeline under one"), done.stdout
