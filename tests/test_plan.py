"""The recipe as one job: a plan of passes over one run directory, resumable per pass, refusing
reruns that would mix configs or inputs, and giving every pass's shards one schema."""

from __future__ import annotations

import inspect
import json
import logging
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _fault_fixtures import FaultPolicy, through_proxy, write_parquet_with_a_damaged_page  # noqa: F401 - fixture
from _procs import assert_group_gone
import yaml
from _scale_fixtures import write_dedup_input

from refinery.config import ConfigError, load_config, parse_config
from refinery.io.runlock import LOCK_FILE
from refinery.pipeline import run_pipeline
from refinery.plan import RerunError, plan_run
from refinery.rundir import RunDir
from refinery.status import run_status

from tests._tokens_fixtures import LLAMA_JSON, cc_documents, needs_llama

ROOT = Path(__file__).resolve().parents[1]

#: a quick recipe over already-extracted text: cheap stages, every dedup method, tokens
RECIPE = {
    "name": "recipe-test",
    "reader": {"batch_size": 100},
    "stages": [{"type": "gopher_quality", "params": {"min_words": 20}}],
    "dedup": [{"method": "url"}, {"method": "minhash"}, {"method": "exact"},
              {"method": "substring", "substring": {"min_tokens": 50, "min_words": 20}}],
    "tokenize": {"tokenizer": "gpt2"},
}
PASSES = ["filter", "url_dedup", "minhash_dedup", "exact_dedup", "substring_dedup", "tokens"]


def _recipe(**changes) -> dict:
    spec = json.loads(json.dumps(RECIPE))
    spec.update(changes)
    return spec


@pytest.fixture()
def dup_input(tmp_path) -> Path:
    # 150 documents a shard (+25 planted copies): every pass removes some, and the ~25 runs of
    # the recipe over it here take a third less time than over the whole sample file
    src = tmp_path / "in"
    write_dedup_input(src, copies=25, per_shard=150)
    return src


def _kept_rows(out: Path) -> list[dict]:
    rows = []
    for f in sorted((out / "kept").glob("*.parquet")):
        rows.extend(pq.read_table(f, columns=["id", "text"]).to_pylist())
    return sorted(rows, key=lambda r: r["id"])


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()
            and p.name not in ("run.json", "stats.json", "input_files.json", LOCK_FILE) and "failed" not in p.parts}


def test_the_bundled_recipe_plans_every_pass():
    plan = plan_run(load_config(ROOT / "configs" / "refinedweb.yaml"), str(ROOT / "data/sample/warc"), "/tmp/x-out")
    names = [p.name for p in plan.passes]
    assert names == ["filter", "url_dedup", "minhash_dedup", "lines_dedup", "substring_dedup", "tokens"]
    assert [p.shuffles for p in plan.passes] == [False, True, True, True, True, False]
    stages = [s["type"] for s in plan.passes[0].params["stages"]]
    assert {"url_filter", "extract", "language_id", "toxicity", "quality"} <= set(stages)
    # one pass directory each; the last document pass keeps into OUT/kept, the corpus
    assert plan.pass_dir("url_dedup").kept_dir == "/tmp/x-out/url_dedup/kept"
    assert plan.pass_dir("substring_dedup").kept_dir == "/tmp/x-out/kept"


def _check_dedup_pairs(out: Path, copies: set[str], cli) -> None:
    """`stats --pairs` and the report show each removed duplicate beside the document its cluster
    kept, reading only the shards of the pairs shown (nothing showed a pair before; session 45, h152)."""
    from refinery.io import fs
    from refinery.stats.pairs import dedup_pairs
    from refinery.stats.report import build_report

    opened: list[str] = []
    real_open = fs.open_input

    def counting_open(uri, *args, **kwargs):
        opened.append(str(uri))
        return real_open(uri, *args, **kwargs)

    fs.open_input = counting_open
    try:
        one = dedup_pairs(str(out), "url_dedup", show=1)
    finally:
        fs.open_input = real_open
    # one pair: one removed shard and one kept shard opened, not the pass's two of each
    assert sorted(u.split(str(out))[1] for u in opened if u.endswith(".parquet") and "/samples/" not in u) == [
        "/url_dedup/kept/part-a.parquet", "/url_dedup/removed/part-b.parquet"], opened
    assert one["read"] == {"removed_shards": 1, "kept_shards": 1}
    pairs = dedup_pairs(str(out), "url_dedup", show=3)
    assert pairs["removed"] == len(copies) and len(pairs["pairs"]) == 3
    for p in pairs["pairs"]:  # a planted copy (part-b) beside its original (part-a), which the cluster kept
        assert p["removed"]["id"] in copies and p["removed"]["id"] == "copy-" + p["kept"]["id"], p
        assert (p["removed"]["shard"], p["kept"]["shard"]) == ("part-b", "part-a") and p["kept"]["where"] == "kept"
        assert p["removed"]["url"] == p["kept"]["url"] and p["identical"] and p["jaccard"] == 1.0 and not p["diff"]
        assert p["removed"]["head"] == p["kept"]["head"] and p["cluster_id"] >> 32 == 0
    from refinery.stages.dedup import ExactDuplicateFilter, MinhashDuplicateFilter, UrlDuplicateFilter
    from refinery.stats.pairs import CLUSTER_COLUMNS  # stats keeps its own copy (it never imports stages)

    assert CLUSTER_COLUMNS == {c.kind: (c.cluster_column, c.method)
                               for c in (MinhashDuplicateFilter, ExactDuplicateFilter, UrlDuplicateFilter)}
    near = dedup_pairs(str(out), "minhash_dedup", show=3)["pairs"]  # a near-copy the sample holds
    assert near and all(p["kept"] and p["kept"]["id"] != p["removed"]["id"] for p in near), near
    # the MinHash estimate the stage removed it for (>= its threshold, 0.7) beside the true Jaccard
    assert all(p["estimated_jaccard"] >= 0.7 and abs(p["jaccard"] - p["estimated_jaccard"]) < 0.15 for p in near)
    assert all(p["diff"] and not p["identical"] for p in near)
    html = build_report(str(out))
    section = html[html.index('<section id="pairs"'):]
    section = section[:section.index("</section>")]
    assert section.count('class="pair" data-stage="url_dedup"') == 3 and "copy-" in section
    assert 'href="#pairs"' in html
    from refinery.stats.report import _pair_side  # the data of a pair is shown as text, escaped

    hostile = {"shard": "s", "id": "<img src=x onerror=alert(1)>", "url": "https://x/<script>", "chars": 9,
               "head": "</div><script>alert(1)</script>", "where": "kept by d, removed later by <b>"}
    side = _pair_side("kept", hostile)
    assert "<script>" not in side and "<img" not in side and "<b>" not in side and "&lt;script&gt;" in side
    code, text, err = cli("stats", out, "--pairs", "url_dedup", "--show", "2")
    assert code == 0 and text.count("true Jaccard 1.000  same words") == 2 and "copy-" in text, (text, err)
    code, text, err = cli("stats", out, "--pairs", "gopher_quality")
    assert code == 2 and "'gopher_quality' is no url / exact / minhash dedup stage" in err + text, (text, err)


def test_fingerprints_chain_from_the_changed_pass_on(dup_input, tmp_path):
    base = plan_run(parse_config(_recipe()), str(dup_input), str(tmp_path / "o"))
    changed = _recipe()
    changed["dedup"][1]["minhash"] = {"bands": 10, "rows": 8}
    other = plan_run(parse_config(changed), str(dup_input), str(tmp_path / "o"))
    same = [a.fingerprint == b.fingerprint for a, b in zip(base.passes, other.passes)]
    assert same == [True, True, False, False, False, False]


def test_whole_recipe_runs_as_one_job_and_reruns_skip_every_pass(dup_input, tmp_path, cli):
    out = tmp_path / "run"
    summary = run_pipeline(parse_config(_recipe()), str(dup_input), str(out), workers=2, progress=False)
    assert summary.passes == {p: "done" for p in PASSES}
    run = RunDir(str(out))
    for name in PASSES[:-1]:
        assert (out / name / "stats.json").exists() and (out / "passes" / f"{name}.json").exists()
    # the planted copies that passed the filters are removed by URL dedup (they share their
    # originals' URLs), with the reason recorded; the originals stay
    copies = {i for f in (out / "filter" / "kept").glob("*.parquet")
              for i in pq.read_table(f, columns=["id"]).column("id").to_pylist() if i.startswith("copy-")}
    url_removed = pq.read_table(out / "url_dedup" / "removed", columns=["id", "removed_reason"]).to_pylist()
    assert copies and {r["id"] for r in url_removed} == copies
    assert {r["removed_reason"] for r in url_removed} == {"duplicate_url"}
    stats = json.loads(Path(run.stats_json).read_text())
    assert stats["docs_read"] == stats["docs_kept"] + stats["docs_removed"]
    assert [s["stage"] for s in stats["stages"]] == ["parquet_reader", "gopher_quality", "url_dedup", "minhash_dedup",
                                                    "exact_dedup", "substring_dedup"]
    assert stats["docs_kept"] == len(_kept_rows(out))
    # token shards that verify-tokens accepts, holding exactly the kept documents (the command in
    # this process: the README demo's test runs it as a process of its own)
    code, verified, err = cli("verify-tokens", out / "tokens")
    assert code == 0, err
    # the run directory itself is accepted too (its token pass writes tokens/)
    from typer.testing import CliRunner

    from refinery.cli import app

    by_run = CliRunner().invoke(app, ["verify-tokens", str(out)])
    assert by_run.exit_code == 0 and by_run.output.startswith("ok: ") and by_run.output == verified, by_run.output
    from refinery.loader import TokenDataset

    by_dir, by_tokens = TokenDataset(str(out)), TokenDataset(str(out / "tokens"))  # the training loader too
    assert by_dir.uri == by_tokens.uri and by_dir.n_tokens == by_tokens.n_tokens > 0
    assert (by_dir.read(0, by_dir.n_tokens) == by_tokens.read(0, by_tokens.n_tokens)).all()
    by_dir.close(), by_tokens.close()
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    assert manifest["totals"]["n_docs"] == sum(1 for r in _kept_rows(out) if r["text"])
    # the manifest names the run, whose kept/ holds the shards read (it had named the last pass's
    # directory, RUN/substring_dedup, which holds no kept/: found by a trial)
    source = manifest["source"]
    assert source["run_dir"] == str(out.resolve())
    assert all((out / "kept" / f"{name}.parquet").exists() for name in source["kept_shards"])
    # every kept/ and removed/ of the run reads as one dataset, passes that removed nothing included
    import duckdb
    import pyarrow.dataset as ds

    for directory in ["kept", *(f"{p}/{sub}" for p in PASSES[:-1] for sub in ("removed",)), "filter/kept"]:
        files = sorted((out / directory).glob("*.parquet"))
        assert len(files) == 2 and len({pq.read_schema(f) for f in files}) == 1, directory
        n = duckdb.sql(f"SELECT count(*) FROM '{out / directory}/*.parquet'").fetchall()[0][0]
        assert n == ds.dataset(str(out / directory)).count_rows() == sum(pq.read_metadata(f).num_rows for f in files)
    status = run_status(str(out))
    assert status.complete and [p["name"] for p in status.passes] == PASSES
    assert all(p["state"] == "finished" for p in status.passes)
    _check_dedup_pairs(out, copies, cli)

    before = _mtimes(out)
    again = run_pipeline(parse_config(_recipe()), str(dup_input), str(out), workers=2, progress=False)
    assert again.passes == {p: "skipped" for p in PASSES}
    assert _mtimes(out) == before  # nothing rewritten


def test_changed_threshold_is_refused_naming_the_key_and_force_redoes_from_there(dup_input, tmp_path):
    out = tmp_path / "run"
    run_pipeline(parse_config(_recipe()), str(dup_input), str(out), workers=1, progress=False)
    changed = _recipe()
    changed["dedup"][3]["substring"]["min_words"] = 30
    with pytest.raises(RerunError, match=r"'substring_dedup' pass: substring\.min_words 20 -> 30.*--force"):
        run_pipeline(parse_config(changed), str(dup_input), str(out), workers=1, progress=False)
    stricter = _recipe(stages=[{"type": "gopher_quality", "params": {"min_words": 40}}])
    with pytest.raises(RerunError, match=r"'filter' pass: stages\.gopher_quality\.params\.min_words 20 -> 40"):
        run_pipeline(parse_config(stricter), str(dup_input), str(out), workers=1, progress=False)
    # a number written otherwise is the value the stage runs with (an int param's 20.0 is 20): the
    # same plan; stages reordered are named as such (it said "input files changed")
    as_float = _recipe(stages=[{"type": "gopher_quality", "params": {"min_words": 20.0}}])
    assert [p.fingerprint for p in plan_run(parse_config(as_float), str(dup_input), str(out)).passes] \
        == [p.fingerprint for p in plan_run(parse_config(_recipe()), str(dup_input), str(out)).passes]
    two = [{"type": "gopher_quality", "params": {"min_words": 20}}, {"type": "line_corrections"}]
    reordered = tmp_path / "other"
    run_pipeline(parse_config(_recipe(stages=two, dedup=[], tokenize=None)), str(dup_input), str(reordered),
                 workers=1, progress=False)
    with pytest.raises(RerunError, match=r"the order of its stages \['gopher_quality', 'line_corrections'\] -> "
                                         r"\['line_corrections', 'gopher_quality'\]"):
        run_pipeline(parse_config(_recipe(stages=two[::-1], dedup=[], tokenize=None)), str(dup_input), str(reordered),
                     workers=1, progress=False)
    # a stage added or taken out is named as such (it read as each of its params "'<unset>' -> ...")
    with pytest.raises(RerunError, match=r"'filter' pass: stage 'line_corrections' removed; rerun"):
        run_pipeline(parse_config(_recipe(stages=two[:1], dedup=[], tokenize=None)), str(dup_input), str(reordered),
                     workers=1, progress=False)
    added = two + [{"type": "gopher_quality", "name": "stricter", "params": {"min_words": 40}}]
    with pytest.raises(RerunError, match=r"'filter' pass: stage 'stricter' \(gopher_quality\) added; rerun"):
        run_pipeline(parse_config(_recipe(stages=added, dedup=[], tokenize=None)), str(dup_input), str(reordered),
                     workers=1, progress=False)
    grown = _recipe()
    grown["dedup"].insert(1, {"method": "lines"})
    with pytest.raises(RerunError, match=r"'minhash_dedup' pass: the passes before it changed: \['filter', 'url_dedup', "
                                         r"'minhash_dedup'.* -> \['filter', 'url_dedup', 'lines_dedup', 'minhash_dedup'"):
        run_pipeline(parse_config(grown), str(dup_input), str(out), workers=1, progress=False)
    # nothing was touched by the refused runs: run.json still records the first config
    assert json.loads((out / "run.json").read_text())["config"]["dedup"][3]["substring"]["min_words"] == 20

    before = _mtimes(out)
    forced = run_pipeline(parse_config(changed), str(dup_input), str(out), workers=1, progress=False, force=True)
    assert forced.passes == {**{p: "skipped" for p in PASSES[:4]}, "substring_dedup": "done", "tokens": "done"}
    after = _mtimes(out)
    untouched = [k for k in before if k.startswith(("filter/", "url_dedup/", "minhash_dedup/", "exact_dedup/"))]
    assert untouched and all(after[k] == before[k] for k in untouched)
    assert after["passes/substring_dedup.json"] != before["passes/substring_dedup.json"]
    assert json.loads((out / "substring_dedup" / "dedup_stats.json").read_text())["params"]["min_words"] == 30
    assert json.loads((out / "run.json").read_text())["config"]["dedup"][3]["substring"]["min_words"] == 30


def test_cli_refusal_is_one_line_naming_the_key(dup_input, tmp_path, cli):
    # the CLI's entry point in this process (conftest's `cli`): two interpreters started for it
    # spent ~4 s importing; the exit code and stderr are the command's all the same
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(_recipe(dedup=[], tokenize=None)))
    args = ["run", config, "-i", dup_input, "-o", tmp_path / "run"]
    code, _, err = cli(*args)
    assert code == 0, err[-2000:]
    config.write_text(yaml.safe_dump(_recipe(dedup=[], tokenize=None,
                                             stages=[{"type": "gopher_quality", "params": {"min_words": 25}}])))
    code, _, err = cli(*args)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "min_words 20 -> 25" in errors[0] and "Traceback" not in err, err


def test_other_input_or_overlapping_directories_are_refused(dup_input, tmp_path):
    out = tmp_path / "run"
    spec = _recipe(dedup=[], tokenize=None)
    run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    other = tmp_path / "other"
    write_dedup_input(other, copies=3)
    with pytest.raises(RerunError, match="input changed"):
        run_pipeline(parse_config(spec), str(other), str(out), workers=1, progress=False)
    with pytest.raises(ConfigError, match="inside input"):
        run_pipeline(parse_config(spec), str(dup_input), str(dup_input / "out"), workers=1, progress=False)
    with pytest.raises(ConfigError, match="inside output"):
        run_pipeline(parse_config(spec), str(out / "kept"), str(out), workers=1, progress=False)


def test_a_stage_added_or_taken_out_is_named_without_the_libraries_it_brings(dup_input, tmp_path):
    """A review: a stage added read "stage 'pii' added; code.phonenumbers '<unset>' -> '9.0.43'",
    as if a library had been upgraded; the library came with the stage. An upgrade stays named."""
    from refinery.plan import describe_change

    out = tmp_path / "run"
    gopher = [{"type": "gopher_quality"}]
    run_pipeline(parse_config(_recipe(stages=gopher, dedup=[], tokenize=None)), str(dup_input), str(out), workers=1,
                 progress=False)
    with_pii = _recipe(stages=gopher + [{"type": "pii"}], dedup=[], tokenize=None)
    with pytest.raises(RerunError, match=r"'filter' pass: stage 'pii' added; rerun with --force"):
        run_pipeline(parse_config(with_pii), str(dup_input), str(out), workers=1, progress=False)
    old, new = (plan_run(parse_config(_recipe(stages=s, dedup=[], tokenize=None)), str(dup_input), str(out)).passes[0]
                .params for s in (gopher + [{"type": "pii"}], gopher))
    assert describe_change(old, new) == "stage 'pii' removed"
    upgraded = json.loads(json.dumps(old))
    upgraded["code"]["phonenumbers"] = "0.0.1"
    assert describe_change(upgraded, old) == "code.phonenumbers '0.0.1' -> " + repr(old["code"]["phonenumbers"])


def test_a_stage_named_as_its_default_is_the_same_stage(dup_input, tmp_path):
    """Found by adversarial testing: the same recipe with `name: gopher_quality` written out on
    its gopher_quality stage was refused as "its input changed" (the fingerprint held the name as
    written), later as "stages.gopher_quality.name '<unset>' -> 'gopher_quality'" (session 49,
    h197). Its outputs name it alike: it is the same plan (tests/test_stage_fingerprint.py)."""
    old, new = (plan_run(parse_config(_recipe(stages=s, dedup=[], tokenize=None)), str(dup_input),
                         str(tmp_path / "run")).passes[0]
                for s in ([{"type": "gopher_quality"}], [{"type": "gopher_quality", "name": "gopher_quality"}]))
    assert old.fingerprint == new.fingerprint and old.params == new.params


def test_an_output_that_is_not_a_run_or_whose_run_json_is_damaged_is_refused(dup_input, tmp_path, monkeypatch):
    """Found by adversarial testing: a run into a directory holding another team's files (no
    run.json) deleted its kept/ and tokens/ files, and a damaged run.json let a rerun with another
    config redo every pass without a word."""
    spec = _recipe(dedup=[{"method": "url"}], tokenize=None)
    shared = tmp_path / "shared"
    (shared / "kept").mkdir(parents=True)
    (shared / "kept" / "other_team.parquet").write_bytes(b"PAR1 not ours PAR1")
    (shared / "notes.txt").write_text("ours")
    with pytest.raises(RerunError, match=r"is not empty and is not a refinery run \(no run.json\): it holds .*other_team"):
        run_pipeline(parse_config(spec), str(dup_input), str(shared), workers=1, progress=False)
    assert (shared / "kept" / "other_team.parquet").read_bytes() == b"PAR1 not ours PAR1"
    assert sorted(p.name for p in shared.rglob("*")) == ["kept", "notes.txt", "other_team.parquet"]
    # what refinery itself leaves before run.json (a launch's _jobs/, temporaries) is no obstacle
    launched = tmp_path / "launched"
    (launched / "_jobs" / "job-1").mkdir(parents=True)
    (launched / "_jobs" / "job-1" / "config.yaml").write_text("stages: []")
    run_pipeline(parse_config(spec), str(dup_input), str(launched), workers=1, progress=False)

    # a run killed between the plan's two writes left only its input record: still ours (a review)
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "input_files.json").write_text('{"files": {}}')
    run_pipeline(parse_config(spec), str(dup_input), str(killed), workers=1, progress=False)
    # spelled relative too: a local listing is absolute (found by review: it was "someone else's file")
    relative = tmp_path / "killed-relative"
    relative.mkdir()
    (relative / "input_files.json").write_text('{"files": {}}')
    monkeypatch.chdir(tmp_path)
    run_pipeline(parse_config(spec), str(dup_input), "killed-relative", workers=1, progress=False)
    assert (relative / "run.json").exists()

    out = tmp_path / "run"
    run_pipeline(parse_config(_recipe(dedup=[{"method": "url"}])), str(dup_input), str(out), workers=1, progress=False)
    assert (out / "tokens" / "manifest.json").exists()
    (out / "run.json").write_text("{not json")
    other = _recipe(dedup=[{"method": "url"}], tokenize=None, stages=[{"type": "gopher_quality", "params": {"min_words": 30}}])
    with pytest.raises(RerunError, match=r"run.json is damaged \(not JSON .*pass --force to `refinery run` to redo"):
        run_pipeline(parse_config(other), str(dup_input), str(out), workers=1, progress=False)
    from refinery.io.runlock import RunDirBusy, run_dir_lock

    with run_dir_lock(str(out)), pytest.raises(RunDirBusy):  # another run holds it: nothing is cleared
        run_pipeline(parse_config(other), str(dup_input), str(out), workers=1, progress=False, force=True)
    assert (out / "tokens" / "manifest.json").exists() and (out / "kept").is_dir()
    summary = run_pipeline(parse_config(other), str(dup_input), str(out), workers=1, progress=False, force=True)
    assert set(summary.passes.values()) == {"done"} and json.loads((out / "run.json").read_text())["passes"]
    # the old run's tokens went with it: nothing records them, and the loader served them (a review)
    assert not (out / "tokens").exists()

    # run.json deleted (found by adversarial testing): refused as "not a refinery run", --force
    # too, so only deleting the whole directory went on; now named, and --force redoes it
    (out / "run.json").unlink()
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(RerunError, match=r"is a refinery run without its run.json \(it holds .*passes/.*pass --force"):
        run_pipeline(parse_config(other), str(dup_input), str(out), workers=1, progress=False)
    summary = run_pipeline(parse_config(other), str(dup_input), str(out), workers=1, progress=False, force=True)
    assert set(summary.passes.values()) == {"done"} and json.loads((out / "run.json").read_text())["passes"]
    assert (out / "notes.txt").read_text() == "the user's"


def test_force_into_a_run_without_its_run_json_removes_the_old_passes_directories(dup_input, tmp_path, monkeypatch):
    """A review: a recipe run whose run.json was deleted, redone with --force by a one-pass config,
    kept the recipe's filter/ and url_dedup/ (their removed documents, another config's) beside
    the new corpus; its pass markers name them. A user's directory beside them stays. Its funnel
    (OUT/stats.json) went too: it stayed over the new outputs until the forced run's end, and a run
    stopped before it left the old funnel beside a new corpus (a review, h226)."""
    from refinery.io import fs

    out = tmp_path / "run"
    recipe = _recipe(dedup=[{"method": "url"}], tokenize=None)
    run_pipeline(parse_config(recipe), str(dup_input), str(out), workers=1, progress=False)
    assert (out / "filter" / "removed").is_dir() and (out / "url_dedup").is_dir()
    (out / "run.json").unlink()
    (out / "notes").mkdir()
    (out / "notes" / "a.txt").write_text("the user's")
    one = _recipe(dedup=[], tokenize=None)
    with monkeypatch.context() as patched:
        real = fs.atomic_output

        def stopped(uri, *args, **kw):  # Ctrl-C as the first shard's corpus file is written
            if str(uri).startswith(str(out / "kept")):
                raise KeyboardInterrupt
            return real(uri, *args, **kw)

        patched.setattr(fs, "atomic_output", stopped)
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(parse_config(one), str(dup_input), str(out), workers=1, progress=False, force=True)
    assert not (out / "stats.json").exists()
    summary = run_pipeline(parse_config(one), str(dup_input), str(out), workers=1, progress=False, force=True)
    assert set(summary.passes.values()) == {"done"}
    assert not (out / "filter").exists() and not (out / "url_dedup").exists()
    assert (out / "notes" / "a.txt").read_text() == "the user's"


def test_an_input_file_added_or_removed_is_named_in_the_refusal(dup_input, tmp_path):
    spec = _recipe(dedup=[], tokenize=None)
    out = tmp_path / "run"
    run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    first = sorted(dup_input.iterdir())[0]
    shutil.copy(first, dup_input / "extra.jsonl.gz")
    with pytest.raises(RerunError, match=r"input files changed since the run was made \(added extra.jsonl.gz\)"):
        run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    (dup_input / "extra.jsonl.gz").unlink()
    first.unlink()
    # the file, not its shard: "removed cc_3" for cc_3.jsonl (found by trials)
    with pytest.raises(RerunError, match=rf"\(removed {re.escape(first.name)}\)"):
        run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    # a file in a subdirectory is named from the input, as the shard is: sub/a.jsonl.gz, not sub__a
    some = sorted(dup_input.iterdir())[0]
    (dup_input / "sub").mkdir()
    shutil.copy(some, dup_input / "sub" / "a.jsonl.gz")
    out2 = tmp_path / "run2"
    run_pipeline(parse_config(spec), str(dup_input), str(out2), workers=1, progress=False)
    (dup_input / "sub" / "a.jsonl.gz").rename(dup_input / "sub" / "b.jsonl.gz")
    with pytest.raises(RerunError, match=r"\(added sub/b.jsonl.gz; removed sub/a.jsonl.gz\)"):
        run_pipeline(parse_config(spec), str(dup_input), str(out2), workers=1, progress=False)


def test_the_same_input_spelled_otherwise_resumes_and_the_same_spelling_elsewhere_is_refused(
        dup_input, tmp_path, monkeypatch):
    """run.json records where the input is: a rerun naming that place another way (relative from
    one directory, absolute from another) resumes; the same relative spelling from a directory where
    it names other files is refused as other input, even though the file names match."""
    spec = _recipe(dedup=[], tokenize=None)
    out = tmp_path / "run"
    monkeypatch.chdir(dup_input.parent)
    run_pipeline(parse_config(spec), dup_input.name, str(out), workers=1, progress=False)
    recorded = json.loads((out / "run.json").read_text())
    assert recorded["input"] == dup_input.name and recorded["input_canonical"] == str(dup_input.resolve())
    before = _mtimes(out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    assert again.passes == {"filter": "skipped"}
    assert _mtimes(out) == before  # nothing redone
    assert json.loads((out / "run.json").read_text())["input"] == dup_input.name  # the fingerprinted spelling
    # the same spelling, relative to another directory holding other files under the same names
    shutil.copytree(dup_input, elsewhere / dup_input.name)
    for f in (elsewhere / dup_input.name).iterdir():
        f.write_bytes(f.read_bytes())
    with pytest.raises(RerunError, match=f"input changed: {dup_input.name} \\({dup_input.resolve()}\\) -> "
                                         f"{dup_input.name} \\({(elsewhere / dup_input.name).resolve()}\\)"):
        run_pipeline(parse_config(spec), dup_input.name, str(out), workers=1, progress=False)
    forced = run_pipeline(parse_config(spec), dup_input.name, str(out), workers=1, progress=False, force=True)
    assert forced.passes == {"filter": "done"}


def test_a_text_stage_before_extraction_on_warc_input_is_refused(tmp_path):
    """On WARC input language_id before extract would remove every document as empty_text."""
    warcs = ROOT / "data" / "sample" / "warc"
    wrong = parse_config({"name": "x", "stages": [{"type": "url_filter"}, {"type": "language_id", "name": "lid"},
                                                  {"type": "extract"}]})
    with pytest.raises(ConfigError, match=r"^stages\[1\] 'lid' language_id: reads text, but on WARC input .*move it after 'extract'"):
        plan_run(wrong, str(warcs), str(tmp_path / "out"))
    # the same stages after extraction, or URL / HTML stages before it, are fine
    right = parse_config({"name": "x", "stages": [{"type": "url_filter"}, {"type": "prescreen"}, {"type": "extract"},
                                                  {"type": "language_id"}]})
    assert plan_run(right, str(warcs), str(tmp_path / "out")).passes
    # text input has its text already: no extract stage needed
    docs = tmp_path / "docs"
    docs.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["some text"]}), docs / "a.parquet")
    assert plan_run(parse_config({"name": "x", "stages": [{"type": "language_id"}]}), str(docs), str(tmp_path / "o2")).passes


def test_pii_before_extraction_is_refused_for_what_it_would_do_not_for_removals(tmp_path):
    """Found by adversarial testing: pii before extract was refused with "it would remove every such
    document", but pii removes nothing: it would redact nothing, and the extracted text pass unredacted."""
    warcs = ROOT / "data" / "sample" / "warc"
    wrong = parse_config({"name": "x", "stages": [{"type": "pii"}, {"type": "extract"}]})
    with pytest.raises(ConfigError) as refused:
        plan_run(wrong, str(warcs), str(tmp_path / "out"))
    message = str(refused.value)
    assert message.startswith("stages[0] pii: reads text") and "remove" not in message, message
    assert "it would change nothing, and the text 'extract' makes later would not pass through it" in message


def test_an_html_stage_after_extraction_is_refused(tmp_path):
    """Found by adversarial testing: `prescreen` after `extract` saw no HTML (extract drops it) and
    passed every page, with `languages: [de]` on English pages too, without a word."""
    warcs = ROOT / "data" / "sample" / "warc"
    wrong = parse_config({"name": "x", "stages": [{"type": "extract", "name": "ex"},
                                                  {"type": "prescreen", "name": "pre", "params": {"languages": ["de"]}}]})
    with pytest.raises(ConfigError, match=r"^stages\[1\] 'pre' prescreen: reads the page's HTML, but 'ex' \(extract\) comes "
                                          r"before it and drops the HTML: .*move it before 'ex'"):
        plan_run(wrong, str(warcs), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_two_input_files_that_would_share_a_shard_name_are_both_named(tmp_path):
    warcs = ROOT / "data" / "sample" / "warc"
    right = parse_config({"name": "x", "stages": [{"type": "extract"}]})
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.warc.gz").write_bytes((warcs / "warc_sample-0000.warc.gz").read_bytes())
    pq.write_table(pa.table({"id": ["a"], "text": ["some text"]}), mixed / "a.parquet")
    with pytest.raises(ConfigError, match=r"input files .*a\.parquet and .*a\.warc\.gz under .* map to the same shard name 'a'"):
        plan_run(right, str(mixed), str(tmp_path / "o3"))


def test_a_relative_input_names_nested_shards_by_their_paths(tmp_path, monkeypatch):
    """Partitioned datasets repeat file names (``a/part-0``, ``b/part-0``): a relative --input names
    their shards by their paths under it, as an absolute one does, instead of refusing them."""
    for d in ("a", "b"):
        (tmp_path / "in" / d).mkdir(parents=True)
        pq.write_table(pa.table({"id": [d], "text": ["the cat sat on the mat " * 20]}), tmp_path / "in" / d / "part-0.parquet")
    spec = parse_config({"name": "x", "stages": [{"type": "gopher_quality"}]})
    monkeypatch.chdir(tmp_path)
    assert plan_run(spec, "in", "out").shard_names() == ["a__part-0", "b__part-0"]
    assert plan_run(spec, "in/", "out").shard_names() == ["a__part-0", "b__part-0"]
    assert plan_run(spec, "in/a/part-0.parquet", "out").shard_names() == ["part-0"]
    # named once per input, not four times in planning and again at each of the ~11 times a run
    # asks (session 45, h145)
    import refinery.plan as planning

    named: list[str] = []
    monkeypatch.setattr(planning, "shard_name", lambda f, root, name=planning.shard_name: named.append(f) or name(f, root))
    plan = plan_run(spec, "in", "out")
    assert plan.shard_names() == plan.shard_names() == ["a__part-0", "b__part-0"] and len(named) == 2
    plan.shard_names().append("c")  # the caller's own list
    plan.input_files = plan.input_files[:1]
    assert plan.shard_names() == ["a__part-0"] and len(named) == 3
    run_pipeline(spec, "in", "out", workers=1, progress=False)
    assert sorted(p.name for p in (tmp_path / "out" / "kept").iterdir()) == ["a__part-0.parquet", "b__part-0.parquet"]


def test_an_input_rewritten_under_the_same_name_is_refused_unless_its_shard_never_finished(tmp_path):
    """The fingerprint covers the input's file names; a file rewritten in place (a re-exported
    dataset) would keep its finished shard's old results: refused, naming the file. A file whose
    shard failed may be replaced (the fix for a broken file), and --force redoes the pass."""
    import gzip

    src = tmp_path / "in"
    src.mkdir()
    docs = [json.loads(line) for line in gzip.open(ROOT / "data" / "sample" / "cc_docs" / "multiple_files_cc_en_head-0091.jsonl.gz", "rt")]
    whole = b"".join(json.dumps(d).encode() + b"\n" for d in docs)
    (src / "a.jsonl").write_bytes(whole[: len(whole) // 2].rsplit(b"\n", 1)[0] + b"\n")
    write_parquet_with_a_damaged_page(src / "b.parquet")  # its shard fails (a cut .jsonl.gz no longer does)
    config = parse_config({"name": "sizes", "stages": [{"type": "gopher_quality"}]})
    out = tmp_path / "run"
    first = run_pipeline(config, str(src), str(out), workers=1, progress=False)
    assert [o.shard for o in first.failed] == ["b"]
    assert json.loads((out / "input_files.json").read_text())["files"] == {
        "a": (src / "a.jsonl").stat().st_size, "b": (src / "b.parquet").stat().st_size}

    pq.write_table(pa.Table.from_pylist([{"id": str(d["id"]), "text": d["text"]} for d in docs]), src / "b.parquet")  # fixed: simply read
    fixed = run_pipeline(config, str(src), str(out), workers=1, progress=False)
    assert not fixed.failed and fixed.stats["docs_read"] == len(docs) + len(whole[: len(whole) // 2].split(b"\n")) - 1

    (src / "a.jsonl").write_bytes(whole)  # a finished shard's file rewritten
    size = (src / "a.jsonl").stat().st_size
    with pytest.raises(RerunError, match=rf"input file {re.escape(str(src / 'a.jsonl'))} changed since its shard was "
                                         rf"processed \([\d,]+ -> {size:,} bytes\); rerun with --force"):
        run_pipeline(config, str(src), str(out), workers=1, progress=False)
    forced = run_pipeline(config, str(src), str(out), workers=1, progress=False, force=True)
    assert forced.stats["docs_read"] == 2 * len(docs)
    assert run_pipeline(config, str(src), str(out), workers=1, progress=False).passes == {"filter": "skipped"}
    recorded = json.loads((out / "input_files.json").read_text())
    assert recorded["versions"]["a"] == str((src / "a.jsonl").stat().st_mtime_ns)

    # the same size, other documents (the kernel's file-time tick is ~4 ms: a real rewrite is later)
    time.sleep(0.05)
    at = whole.index(b'"text": "') + len(b'"text": "')
    while not whole[at:at + 1].isalpha():  # an ASCII letter: the file stays valid UTF-8
        at += 1
    (src / "a.jsonl").write_bytes(whole[:at] + (b"Q" if whole[at:at + 1] != b"Q" else b"Z") + whole[at + 1:])
    assert (src / "a.jsonl").stat().st_size == size
    with pytest.raises(RerunError, match=rf"input file {re.escape(str(src / 'a.jsonl'))} changed since its shard was "
                                         rf"processed \(rewritten with the same size, {size:,} bytes\)"):
        run_pipeline(config, str(src), str(out), workers=1, progress=False)
    with pytest.raises(RerunError, match="rewritten with the same size"):  # refused again: the record was kept
        run_pipeline(config, str(src), str(out), workers=1, progress=False)

    # a run recorded before versions were (sizes only) is compared by size: no refusal
    (out / "input_files.json").write_text(json.dumps({"files": recorded["files"]}))
    assert run_pipeline(config, str(src), str(out), workers=1, progress=False).passes == {"filter": "skipped"}


def test_forced_reruns_leave_no_output_of_another_input_or_config(tmp_path):
    """Found by adversarial testing: (1) a forced rerun after an input file was removed kept its
    old shard in the corpus and every count; (2) a shard failing in a forced rerun left its
    old-config outputs in the pass; (3) --force for another setting accepted an input rewritten in
    place, without redoing its shard; (4) temporary files of a killed run stayed, and DuckDB's
    '*.parquet' glob read them."""
    import gzip

    src = tmp_path / "in"
    src.mkdir()
    docs = [json.loads(line) for line in gzip.open(ROOT / "data" / "sample" / "cc_docs" / "multiple_files_cc_en_head-0091.jsonl.gz", "rt")]
    for k in range(3):
        (src / f"s{k}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs[k::3]))
    spec = {"name": "forced", "stages": [{"type": "gopher_quality", "params": {"min_words": 20}}],
            "dedup": [{"method": "url"}]}
    out = tmp_path / "run"

    def kept_ids() -> list[str]:
        return sorted(i for f in (out / "kept").glob("*.parquet") for i in pq.read_table(f).column("id").to_pylist())

    run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)
    # (1) an input file removed: its shard leaves every pass
    (src / "s2.jsonl").unlink()
    with pytest.raises(RerunError):
        run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)
    forced = run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False, force=True)
    assert forced.stats["docs_read"] == len(docs[0::3]) + len(docs[1::3])
    assert not [f for f in out.rglob("s2.*") if "index" not in f.parts] and run_status(str(out)).complete
    assert set(kept_ids()) <= {str(d["id"]) for d in docs[0::3] + docs[1::3]}
    # (2) a shard failing in a forced rerun with another config keeps none of the old outputs
    (src / "s1.jsonl").unlink()
    write_parquet_with_a_damaged_page(src / "s1.parquet")  # it fails (a cut .jsonl.gz no longer does)
    failed = run_pipeline(parse_config({**spec, "stages": [{"type": "gopher_quality", "params": {"min_words": 30}}]}),
                          str(src), str(out), workers=1, progress=False, force=True)
    assert [o.shard for o in failed.failed] == ["s1"]
    assert not (out / "filter" / "kept" / "s1.parquet").exists() and not (out / "filter" / "stats" / "s1.json").exists()
    # nor does the previous config's corpus stay in OUT/kept, or count as progress in status
    assert not list((out / "kept").glob("*.parquet")) and not (out / "url_dedup").exists()
    assert [p["state"] for p in run_status(str(out)).passes] == ["failed", "pending"]
    # (3) a file rewritten in place, then --force for a later pass's setting: the first pass is redone too
    (src / "s1.parquet").unlink()
    (src / "s1.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs[1::3]))
    run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False, force=True)
    (src / "s0.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs[0::3][:2]))
    other = {**spec, "dedup": [{"method": "url", "minhash": {"seed": 3}}]}
    redone = run_pipeline(parse_config(other), str(src), str(out), workers=1, progress=False, force=True)
    assert redone.passes["filter"] == "done" and redone.stats["docs_read"] == 2 + len(docs[1::3])
    # (4) temporaries a killed run left are swept when the next run takes the directory
    leftovers = [out / "filter" / "removed" / ".tmp-0f-s0.parquet.partial", out / "kept" / ".tmp-1e-s1.parquet",
                 out / "passes" / ".tmp-2d-filter.json.partial"]
    for f in leftovers:
        f.write_bytes(b"half")
    run_pipeline(parse_config(other), str(src), str(out), workers=1, progress=False)
    assert not any(f.exists() for f in leftovers)
    # (5) one pass, then (forced) several: the single pass's top-level outputs do not stay
    single = tmp_path / "single"
    run_pipeline(parse_config({**spec, "dedup": []}), str(src), str(single), workers=1, progress=False)
    assert list((single / "stats").glob("*.json")) and list((single / "removed").glob("*.parquet"))
    run_pipeline(parse_config(spec), str(src), str(single), workers=1, progress=False, force=True)
    assert not [f for d in ("stats", "removed", "samples", "failed") for f in (single / d).glob("*.*")]
    assert list((single / "filter" / "stats").glob("*.json")) and run_status(str(single)).complete
    # and back to one pass: the filter pass's own directory does not stay beside the top-level one
    run_pipeline(parse_config({**spec, "dedup": []}), str(src), str(single), workers=1, progress=False, force=True)
    assert not (single / "filter").exists() and not (single / "url_dedup").exists()
    assert list((single / "stats").glob("*.json")) and run_status(str(single)).complete


def test_limit_samples_each_shard_and_is_part_of_the_fingerprint(dup_input, tmp_path):
    out = tmp_path / "run"
    spec = _recipe(dedup=[{"method": "url"}], tokenize=None)
    run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False, limit=7)
    for f in (out / "filter" / "stats").glob("*.json"):
        assert json.loads(f.read_text())["docs_read"] == 7
    # the option, and what no --limit means (it said "limit 7 -> None"; session 49, h197)
    with pytest.raises(RerunError, match=re.escape("'filter' pass: --limit 7 -> none (the whole input); rerun with")):
        run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    with pytest.raises(RerunError, match=re.escape("'filter' pass: --limit 7 -> 50; rerun with")):
        run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False, limit=50)


def test_shares_of_the_document_pass_then_the_rest_equal_one_run(dup_input, tmp_path):
    """How a multi-instance job runs a plan: instances run disjoint shares of the document pass;
    the last share closes it; a later job runs the remaining passes."""
    spec = _recipe()
    whole = tmp_path / "whole"
    run_pipeline(parse_config(spec), str(dup_input), str(whole), workers=1, progress=False)
    split = tmp_path / "split"
    first = run_pipeline(parse_config(spec), str(dup_input), str(split), workers=1, progress=False,
                         only_passes=["filter"], only_shards={"part-a"})
    assert first.passes["filter"] == "partial" and not (split / "passes" / "filter.json").exists()
    with pytest.raises(ConfigError, match="'filter' .* has not finished"):
        run_pipeline(parse_config(spec), str(dup_input), str(split), workers=1, progress=False,
                     only_passes=PASSES[1:])
    second = run_pipeline(parse_config(spec), str(dup_input), str(split), workers=1, progress=False,
                          only_passes=["filter"], only_shards={"part-b"})
    assert second.passes["filter"] == "done"
    rest = run_pipeline(parse_config(spec), str(dup_input), str(split), workers=1, progress=False,
                        only_passes=PASSES[1:])
    assert rest.passes == {"filter": "blocked", **{p: "done" for p in PASSES[1:]}} or rest.passes["tokens"] == "done"
    assert _kept_rows(split) == _kept_rows(whole)
    assert json.loads((split / "tokens" / "manifest.json").read_text())["totals"] == \
        json.loads((whole / "tokens" / "manifest.json").read_text())["totals"]


def test_a_share_that_closes_the_document_pass_runs_no_later_pass(dup_input, tmp_path):
    """Shares run without only_passes: the one closing the document pass went on into dedup and
    tokens, and two shares finishing together could both see every shard done and both run them
    over the same output. Only a run of the whole plan runs them."""
    spec = _recipe()
    out = tmp_path / "shares"
    first = run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False,
                         only_shards={"part-a"})
    second = run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False,
                          only_shards={"part-b"})
    assert first.passes["filter"] == "partial" and second.passes["filter"] == "done"
    assert second.passes == {"filter": "done", **{p: "blocked" for p in PASSES[1:]}}
    assert not any((out / p).exists() for p in PASSES[1:])
    rest = run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    assert rest.passes == {"filter": "skipped", **{p: "done" for p in PASSES[1:]}}


def test_a_share_rerun_after_the_document_pass_closed_runs_no_later_pass(dup_input, tmp_path):
    """Found by review (h92): the share that *closes* the document pass stopped there, but a share
    run again once the pass had finished (an instance retried, the launch re-run) skipped the pass
    and went on into dedup and tokens; two such shares would both run them over one output."""
    spec = _recipe()
    out = tmp_path / "shares"
    for share in ("part-a", "part-b"):
        run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False, only_shards={share})
    again = run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False,
                         only_shards={"part-a"})
    assert again.passes == {"filter": "skipped", **{p: "blocked" for p in PASSES[1:]}}
    assert not any((out / p).exists() for p in PASSES[1:])


@pytest.mark.slow
def test_killed_at_any_moment_a_rerun_gives_the_same_output(tmp_path):
    """SIGKILL the whole job at several moments; rerunning finishes with the reference output."""
    import signal
    import time

    # the whole sample (not dup_input's cut): the kills land at fractions of a run's time, and a
    # shorter run would move them towards the interpreter's start
    dup_input = tmp_path / "in"
    write_dedup_input(dup_input, copies=25)

    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(_recipe()))

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "refinery.cli", "run", str(config), "-i", str(dup_input), "-o", str(out),
                "--workers", "2"]

    reference = tmp_path / "reference"
    started = time.time()
    subprocess.run(cmd(reference), check=True, capture_output=True)
    full = time.time() - started
    # one output directory killed twice: early (the filter pass), then its rerun later on (the
    # dedup / tokens passes, resumed from the first kill's leftovers), then finished
    out = tmp_path / "killed"
    for fraction in (0.3, 0.4):
        proc = subprocess.Popen(cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(full * fraction)
        if proc.poll() is None:
            import os

            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its pool workers, mid-write or not
        proc.wait()
    subprocess.run(cmd(out), check=True, capture_output=True)
    assert _kept_rows(out) == _kept_rows(reference)
    for name in PASSES[:-1]:
        a = json.loads((out / name / "stats.json").read_text())
        b = json.loads((reference / name / "stats.json").read_text())
        assert (a["docs_read"], a["docs_kept"], a["docs_removed"]) == (b["docs_read"], b["docs_kept"], b["docs_removed"])
    tokens = [json.loads((d / "tokens" / "manifest.json").read_text())["shards"] for d in (out, reference)]
    assert [s["bin_sha256"] for s in tokens[0]] == [s["bin_sha256"] for s in tokens[1]]


@pytest.mark.slow
def test_ctrl_c_stops_every_process_with_one_line_and_a_rerun_resumes(tmp_path):
    """Ctrl-C (SIGINT to the terminal's whole process group: driver, pool workers, extraction
    helpers) mid-pass: one 'interrupted' line and no worker tracebacks, exit code 130, no process
    left behind; the same command then skips the finished shards and completes."""
    import os
    import shutil
    import signal
    import time

    src = tmp_path / "in"
    src.mkdir()
    # 30 shards: the pass is still running when the first one is finished, with seconds to spare
    # (with 12 the rest took 1.8 s, and a loaded machine once delayed the Ctrl-C past the run's end)
    for k in range(5):
        for f in sorted((ROOT / "data" / "sample" / "warc").glob("*.warc.gz")):
            shutil.copy(f, src / f"r{k}-{f.name}")
    shards = len(list(src.iterdir()))
    out = tmp_path / "run"
    recipe = yaml.safe_load((ROOT / "configs" / "refinedweb.yaml").read_text())
    # the recipe's stages up to language ID (extraction helpers included), no dedup: the rerun is quick
    recipe["stages"] = recipe["stages"][:[s["type"] for s in recipe["stages"]].index("language_id") + 1]
    recipe["dedup"], recipe["tokenize"] = [], None
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    cmd = [sys.executable, "-m", "refinery", "run", str(config), "-i", str(src), "-o", str(out), "--workers", "2"]
    def as_a_foreground_job() -> None:
        # what a terminal's foreground job starts with, whatever this test process inherited or
        # was left with by earlier tests (a process started with SIGINT ignored keeps ignoring it:
        # a rerun of this test from a background shell once exited 0 here)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])

    inherited = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=as_a_foreground_job)
    deadline = time.time() + 60
    while not list(out.rglob("kept/r*.parquet")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    finished_at_kill, killed_at = len(list(out.rglob("stats/r*.json"))), time.time()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    # (a run once exited 0 here, under the full suite only: say when the Ctrl-C came)
    assert proc.returncode == 130, (f"{finished_at_kill}/{shards} shards finished at the Ctrl-C, exit "
                                    f"{time.time() - killed_at:.1f} s later; this process's SIGINT handler and "
                                    f"mask: {inherited}\n{err[:1500]}\n[...]\n{err[-1500:]}")
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == ["error: interrupted; run the same command again to resume"]
    assert_group_gone(proc.pid, "the interrupted run")  # workers terminated, helpers die with them (PR_SET_PDEATHSIG)
    finished = len(list(out.rglob("stats/r*.json")))  # a shard is finished once its stats are written
    assert finished < shards
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    skipped = re.search(r"\[filter\] (\d+) shard\(s\) to run, (\d+) already finished", again.stderr)
    assert skipped and int(skipped.group(2)) == finished and int(skipped.group(1)) + int(skipped.group(2)) == shards
    assert run_status(str(out)).complete


def _token_bytes(out: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted((out / "tokens").glob("*")) if f.suffix in (".bin", ".idx")}


def _sigint_twice_after(cmd: list[str], marker: str, offset: float, gap: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` as a terminal's foreground job would, and once ``marker`` is logged on stderr,
    wait ``offset`` seconds and press Ctrl-C twice, ``gap`` seconds apart (to the process group)."""
    import os
    import signal
    import threading

    def as_a_foreground_job() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=as_a_foreground_job)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if marker in line:
                seen.set()

    out: list[str] = []
    reader = threading.Thread(target=read)
    reader.start()
    # stdout in a thread of its own: communicate() read stderr too, racing the reader above for the
    # last lines (a fresh-clone CI run lost the "interrupted" line so, exit code 130 and all)
    out_reader = threading.Thread(target=lambda: out.append(proc.stdout.read()))
    out_reader.start()
    assert seen.wait(60), "".join(lines)[-2000:]
    time.sleep(offset)
    for _ in range(2):
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            break
        time.sleep(gap)
    proc.wait(timeout=60)
    reader.join()
    out_reader.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(out), "".join(lines))


def _demo_cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "refinery", "run", str(ROOT / "configs/refinedweb.yaml"),
            "--input", str(ROOT / "data/sample/warc"), "--output", str(out)]


@pytest.fixture(scope="module")
def uninterrupted_demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    clean = subprocess.run(_demo_cmd(out), capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("marker,offset,gap", [
    ("[tokens] pass 6/6", 0.0, 0.25),  # the second Ctrl-C in the pool's shutdown or the exit
    ("[tokens] pass 6/6", 0.05, 0.1),
    ("[filter] pass 1/6", 0.02, 0.06),  # the first one while the pool starts
    ("[url_dedup] pass 2/6", 0.05, 0.06),
])
def test_a_double_ctrl_c_prints_one_line_and_a_rerun_gives_the_uninterrupted_output(tmp_path, uninterrupted_demo,
                                                                                    marker, offset, gap):
    """Ctrl-C pressed twice (50-300 ms apart) on the README's demo, as a pass starts: one
    'interrupted' line, exit code 130, no traceback. Before, the second one landed in the process
    pool's shutdown or the interpreter's exit (killed by SIGINT after the line, or a traceback),
    and the first one inside a pool's start-up made the shutdown fail ("unexpected RuntimeError:
    cannot join thread before it is started"). The rerun then resumes and ends with the output of
    a run no one interrupted."""
    hit = _sigint_twice_after(_demo_cmd(tmp_path / "run"), marker, offset, gap)
    assert hit.returncode == 130, hit.stderr[-3000:]
    assert "Traceback" not in hit.stderr and "Exception ignored" not in hit.stderr, hit.stderr[-3000:]
    assert [ln for ln in hit.stderr.splitlines() if ln.startswith("error:")] == [
        "error: interrupted; run the same command again to resume"]
    again = subprocess.run(_demo_cmd(tmp_path / "run"), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _kept_rows(tmp_path / "run") == _kept_rows(uninterrupted_demo)
    assert _token_bytes(tmp_path / "run") == _token_bytes(uninterrupted_demo) != {}


@pytest.mark.slow
def test_the_readme_demo_runs_the_whole_recipe_on_the_bundled_sample(uninterrupted_demo, cli):
    """The README's first command (after install): every stage of the design card, classifiers
    included, every dedup pass, token shards that verify, the report; the rerun skips it all.

    The first run is the module's ``uninterrupted_demo`` (the same command, ``python -m refinery``
    as the console script runs it; run once, not twice). This test only adds report.html and a
    rerun that must skip every pass, leaving kept/ and tokens/, which the other tests compare, alone."""
    out = uninterrupted_demo
    cmd = _demo_cmd(out)
    stats = json.loads((out / "stats.json").read_text())
    stages = [s["stage"] for s in stats["stages"]]
    assert stages == ["warc_reader", "url_filter", "prescreen", "extract", "language_id", "gopher_repetition", "gopher_quality",
                      "line_corrections", "pii", "toxicity", "quality", "url_dedup", "minhash_dedup", "lines_dedup",
                      "substring_dedup"]
    assert stats["docs_read"] == 85 and 0 < stats["docs_kept"] < 85
    # issue 13's own example of a table cut out mid-article: now kept, table and header rule included
    # (Gopher's alpha_words once removed it for the table's "|" tokens)
    kept = pq.read_table(out / "kept", columns=["url", "text"]).to_pylist()
    lineage = next(r["text"] for r in kept if r["url"] == "https://soldaini.net/lineage/")
    assert "ancestors:\n|  | Name | Fields of Study |" in lineage and "\n|---|---|---|---|---|---|---|\n" in lineage
    assert "| 10 | Siméon Denis Poisson | Mathematics |" in lineage
    for name in ("filter", "url_dedup", "minhash_dedup", "lines_dedup", "substring_dedup"):
        assert (out / name / "removed").is_dir() and (out / name / "stats.json").exists()
    # the languages table covers every pass: kept = the corpus, by language (the filter pass's
    # alone counted documents dedup removed as kept)
    corpus = pq.read_table(out / "kept", columns=["language", "text"]).to_pylist()
    by_language = stats["languages"]["by_language"]
    for lang, d in by_language.items():
        rows = [r["text"] for r in corpus if r["language"] == lang]
        assert (d["docs_kept"], d["chars_kept"]) == (len(rows), sum(map(len, rows))), lang
        assert d["docs_in"] == d["docs_kept"] + sum(d["removed"].values()), lang
    assert sum(d["docs_kept"] for d in by_language.values()) == stats["docs_kept"]
    # verify-tokens and report in this process, through the real entry point (~1 s of imports each saved)
    code, verified, err = cli("verify-tokens", out / "tokens")
    assert code == 0 and verified.startswith("ok:"), err
    assert cli("report", out)[0] == 0 and "substring_dedup" in (out / "report.html").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0 and "filter skipped" in again.stdout and "tokens skipped" in again.stdout


def test_a_plan_that_loses_its_last_pass_is_refused(dup_input, tmp_path):
    """The last document pass keeps into OUT/kept: dropping a pass makes another one the last,
    whose old output lives elsewhere, so the rerun is refused instead of skipping it."""
    out = tmp_path / "run"
    spec = _recipe(dedup=[{"method": "url"}, {"method": "exact"}], tokenize=None)
    run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    shorter = _recipe(dedup=[{"method": "url"}], tokenize=None)
    with pytest.raises(RerunError, match="'url_dedup' pass: the plan's passes changed"):
        run_pipeline(parse_config(shorter), str(dup_input), str(out), workers=1, progress=False)
    longer = _recipe(dedup=[{"method": "url"}, {"method": "exact"}], tokenize={"tokenizer": "gpt2"})
    grown = run_pipeline(parse_config(longer), str(dup_input), str(out), workers=1, progress=False)
    assert grown.passes == {"filter": "skipped", "url_dedup": "skipped", "exact_dedup": "skipped", "tokens": "done"}
    # forced to the shorter plan, the dropped passes' directories and markers go (they stayed
    # beside the corpus as another config's output)
    run_pipeline(parse_config(shorter), str(dup_input), str(out), workers=1, progress=False, force=True)
    assert not (out / "exact_dedup").exists() and not (out / "tokens").exists()
    assert sorted(f.stem for f in (out / "passes").glob("*.json")) == ["filter", "url_dedup"]
    assert run_status(str(out)).complete and list((out / "url_dedup" / "stats").glob("*.json"))


def test_token_outputs_that_went_missing_are_redone_and_a_changed_tokenizer_file_is_refused(dup_input, tmp_path, caplog):
    """Found by adversarial testing: the tokens pass was skipped with its shards deleted, and a
    retrained tokenizer.json under the same path left the old tokens in place."""
    import shutil

    from tests._tokens_fixtures import GPT_NEO_JSON

    tokenizer = tmp_path / "tok.json"
    shutil.copy(GPT_NEO_JSON, tokenizer)
    spec = _recipe(dedup=[{"method": "url"}], tokenize={"tokenizer": str(tokenizer)})
    out = tmp_path / "run"
    run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    reference = (out / "tokens" / "manifest.json").read_bytes()
    # left out of the recipe by a rerun, then back with another tokenizer: refused (its tokens were
    # replaced without --force: review h111); back as it was, it resumes
    untokenized = run_pipeline(parse_config(_recipe(dedup=[{"method": "url"}], tokenize=None)), str(dup_input), str(out),
                               workers=1, progress=False)
    assert untokenized.passes == {"filter": "skipped", "url_dedup": "skipped"}
    with pytest.raises(RerunError, match=r"'tokens' pass: a rerun left it out of the recipe, and its outputs \(.*tokens\) "
                                         r"were made with other settings; rerun with --force"):
        run_pipeline(parse_config(_recipe(dedup=[{"method": "url"}], tokenize={"tokenizer": "gpt2"})), str(dup_input),
                     str(out), workers=1, progress=False)
    assert run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False).passes["tokens"] == "skipped"
    victim = sorted((out / "tokens").glob("*.bin"))[0]
    victim.unlink()
    (out / "tokens" / "manifest.json").unlink()
    again = run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    assert again.passes == {"filter": "skipped", "url_dedup": "skipped", "tokens": "done"}
    assert victim.exists() and (out / "tokens" / "manifest.json").read_bytes() == reference
    # a shard cut short (an interrupted copy) with the manifest in place: redone, not skipped; an
    # ids file too (its existence alone was checked: h124), one warning each naming the file
    whole = victim.read_bytes()
    victim.write_bytes(whole[: len(whole) // 2])
    ids = sorted((out / "tokens").glob("*.ids.parquet"))[-1]
    ids_whole = ids.read_bytes()
    ids.write_bytes(ids_whole[:-8])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="refinery.tokens"):
        again = run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    assert again.passes["tokens"] == "done" and victim.read_bytes() == whole and ids.read_bytes() == ids_whole
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"tokenize [{victim.stem}]: {victim.name} has {len(whole) // 2} bytes, not the {len(whole)} its sidecar records, redone",
        f"tokenize [{ids.name[:-len('.ids.parquet')]}]: {ids.name} has {len(ids_whole) - 8} bytes, not the {len(ids_whole)} "
        "its sidecar records, redone"]
    # a standalone tokenize into RUN/tokens: refused while a run holds RUN; afterwards, tokens made
    # with another tokenizer there are no longer the pass's, and the rerun redoes them
    from refinery.io.runlock import RunDirBusy, run_dir_lock
    from refinery.tokens.writer import tokenize_run

    with run_dir_lock(str(out)), pytest.raises(RunDirBusy):
        tokenize_run(str(out), str(out / "tokens"), "gpt2", force=True, progress=False)
    tokenize_run(str(out), str(out / "tokens"), "gpt2", force=True, progress=False)
    assert json.loads((out / "tokens" / "manifest.json").read_text())["tokenizer"]["id"] == "gpt2"
    again = run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    assert again.passes["tokens"] == "done" and (out / "tokens" / "manifest.json").read_bytes() == reference
    # the same path, another tokenizer: refused, naming what changed
    data = json.loads(tokenizer.read_text())
    data["added_tokens"].append({"id": len(data["model"]["vocab"]) + 100, "content": "<|extra|>", "single_word": False,
                                 "lstrip": False, "rstrip": False, "normalized": False, "special": True})
    tokenizer.write_text(json.dumps(data))
    with pytest.raises(RerunError, match="'tokens' pass: tokenizer_sha256"):
        run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)


def test_inputs_of_mixed_formats_make_one_funnel(tmp_path, capsys):
    """WARC, JSONL and Parquet shards in one run: their readers merge into one funnel row and an
    id+text Parquet shard gets the other document columns (as nulls) for every stage. The readers'
    removals (a clipped WARC) are in removed/ under the reader that removed them, counted under the
    merged row by the report and by scripts/check_report.py (85 mismatches on the bundled sample: h183)."""
    import gzip
    import importlib.util
    import shutil

    import pyarrow as pa

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(ROOT / "data/sample/warc/warc_sample-0000.warc.gz", src)
    shutil.copy(ROOT / "data/sample/warc/resiliparse_clipped.warc.gz", src)  # a corrupt stream, a truncated record
    shutil.copy(ROOT / "data/sample/cc_docs/multiple_files_cc_en_head-0091.jsonl.gz", src)
    docs = [json.loads(line) for line in gzip.open(ROOT / "data/sample/cc_docs/multiple_files_cc_en_head-0174.jsonl.gz", "rt")]
    pq.write_table(pa.table({"id": [d["id"] for d in docs], "text": [d["text"] for d in docs]}), src / "p.parquet")
    spec = {"name": "mixed", "stages": [{"type": "extract"}, {"type": "gopher_quality", "params": {"min_words": 20}}],
            "dedup": [{"method": "exact"}]}
    out = tmp_path / "run"
    summary = run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)
    assert not summary.failed and summary.passes == {"filter": "done", "exact_dedup": "done"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stages"][0]["stage"] == "jsonl_reader+parquet_reader+warc_reader"
    assert stats["docs_read"] == 22 + 10 + 10 + 2 == stats["docs_kept"] + stats["docs_removed"]
    readers = {"corrupt_stream": 1, "truncated_record": 1}
    assert stats["stages"][0]["removed"] == readers
    rows = pq.read_table(out / "filter" / "removed" / "resiliparse_clipped.parquet",
                         columns=["removed_stage", "removed_reason"]).to_pylist()
    assert sorted(r["removed_reason"] for r in rows if r["removed_stage"] == "warc_reader") == sorted(readers)
    from refinery.stats.report import build_report

    html = build_report(str(out), samples_per_reason=8)
    (out / "report.html").write_text(html, encoding="utf-8")
    # the samples' "k of N" and the domains section follow the merged row ("1 of 0", and no reader domains, before)
    reader = 'data-stage="jsonl_reader+parquet_reader+warc_reader"'
    assert f'{reader} data-reason="corrupt_stream"><summary>' in html and "1 of 1 removed document<" in html
    assert f'{reader}><summary>jsonl_reader+parquet_reader+warc_reader<span class="count">2 removed documents' in html
    spec = importlib.util.spec_from_file_location("check_report", ROOT / "scripts" / "check_report.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    assert check.main([str(out)]) == 0, capsys.readouterr().out
    assert check.main([str(out), "--report", str(out / "no-such.html")]) == 2  # named and missing: no silent pass
    kept = pq.read_table(out / "filter" / "kept" / "p.parquet")
    assert kept.num_rows > 0 and kept.column("source").to_pylist()[0].endswith("p.parquet")


def test_a_classifier_retrained_in_place_is_refused_on_resume(tmp_path, monkeypatch):
    """Found by adversarial testing: a run resumed after ``train-classifier`` wrote a new model
    into the models directory scored the rest of its shards with the new model, silently. The
    filter pass's fingerprint covers the content of every model file its stages load."""
    from refinery.classifiers.common import PACKAGED_MODELS, FastTextParams, train_fasttext

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(PACKAGED_MODELS / "quality.ftz", models / "quality.ftz")
    monkeypatch.setenv("REFINERY_MODELS", str(models))
    src = tmp_path / "in"
    write_dedup_input(src, copies=2, per_shard=150)
    spec = {"name": "models", "stages": [{"type": "quality", "params": {"mode": "threshold", "threshold": 0.01}}]}
    out = tmp_path / "run"
    first = run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)
    assert "quality.ftz" in json.dumps(json.loads((out / "run.json").read_text())["passes"][0]["params"]["models"])
    assert run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False).passes["filter"] == "skipped"
    # a model retrained into the same place (a tiny real one, with the quality model's labels)
    examples = [(label, f"{words} {i}") for i in range(20)
                for label, words in (("wiki", "the history of the city council"), ("web", "buy now cheap deal"))]
    trained, _, _ = train_fasttext(examples, FastTextParams(epoch=1, dim=8, bucket=1000), tmp_path)
    shutil.copy(trained, models / "quality.ftz")
    with pytest.raises(RerunError, match=r"'filter' pass: models\.quality"):
        run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)
    redone = run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False, force=True)
    assert redone.passes["filter"] == "done" and first.stats["docs_read"] == redone.stats["docs_read"]
    # without model stages the fingerprint has no models key (runs made before keep resuming)
    assert "models" not in plan_run(parse_config(RECIPE), str(src), str(tmp_path / "other")).passes[0].params
    # a run made before model files were fingerprinted resumes (unchecked) rather than being refused
    import refinery.plan as plan_module

    legacy = tmp_path / "legacy"
    _as_made_by_an_earlier_refinery(monkeypatch, frozenset({"models", "code"}),
                                    lambda: run_pipeline(parse_config(spec), str(src), str(legacy), workers=1,
                                                         progress=False))
    assert "models" not in json.loads((legacy / "run.json").read_text())["passes"][0]["params"]
    assert run_pipeline(parse_config(spec), str(src), str(legacy), workers=1, progress=False).passes["filter"] == "skipped"
    forced = run_pipeline(parse_config(spec), str(src), str(legacy), workers=1, progress=False, force=True)
    assert forced.passes["filter"] == "done"
    assert "models" in json.loads((legacy / "run.json").read_text())["passes"][0]["params"]


def _as_made_by_an_earlier_refinery(monkeypatch, without: frozenset[str], make) -> None:
    """Run ``make`` planning as a refinery whose fingerprints lacked the parts ``without``."""
    import refinery.plan as plan_module

    plan_passes = plan_module.plan_passes
    with monkeypatch.context() as m:
        m.setattr(plan_module, "plan_passes", lambda *a, **k: plan_passes(*a[:4], legacy=without))
        make()


def test_stage_defaults_and_library_versions_are_part_of_the_plan(dup_input, tmp_path, monkeypatch):
    """Found by adversarial testing: a run resumed after an upgrade of refinery (whose stage
    defaults had changed) or of trafilatura finished with shards made two ways, silently. The
    filter pass's fingerprint now covers the stages' effective params (defaults included) and
    the versions of refinery and of the libraries the stages use; a rerun names what changed."""
    import refinery.plan as plan_module
    import refinery.stages.gopher as gopher

    out = tmp_path / "run"
    spec = _recipe(stages=[{"type": "gopher_quality", "params": {"min_words": 20}}, {"type": "url_filter"}],
                   dedup=[{"method": "minhash"}], tokenize=None)
    run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    params = json.loads((out / "run.json").read_text())["passes"][0]["params"]
    quality = params["stages"][0]["params"]
    assert quality["min_words"] == 20 and quality["max_words"] == 100_000  # the default, written out
    assert quality["stop_words"][:3] == ["the", "be", "to"]  # a None default: what the stage holds
    assert params["code"]["refinery"] and params["code"]["tldextract"] == plan_module.library_version("tldextract")
    # a default written out is the same config
    same = _recipe(stages=[{"type": "gopher_quality", "params": {"min_words": 20, "max_words": 100_000}},
                           {"type": "url_filter"}], dedup=[{"method": "minhash"}], tokenize=None)
    assert set(run_pipeline(parse_config(same), str(dup_input), str(out), workers=1, progress=False).passes.values()) \
        == {"skipped"}
    # a default changed by an upgrade
    init = gopher.GopherQuality.__init__
    defaults = list(init.__defaults__)
    with monkeypatch.context() as m:
        signature = inspect.signature(init)
        names = [n for n, p in signature.parameters.items() if p.default is not inspect.Parameter.empty]
        defaults[names.index("max_words")] = 50_000
        m.setattr(init, "__defaults__", tuple(defaults))
        import refinery.config as config_module

        m.setattr(config_module, "_PARAM_MODELS", {})
        with pytest.raises(RerunError, match=r"'filter' pass: stages\.gopher_quality\.params\.max_words 100000 -> 50000"):
            run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    # a library upgraded
    real = plan_module.library_version
    with monkeypatch.context() as m:
        m.setattr(plan_module, "library_version",
                  lambda dist, pinned=None: "9.9" if dist == "tldextract" else real(dist, pinned))
        with pytest.raises(RerunError, match=r"code\.tldextract '[^']+' -> '9\.9'"):
            run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
        m.setattr(plan_module, "library_version",
                  lambda dist, pinned=None: "9.9" if dist == "rensa" else real(dist, pinned))
        with pytest.raises(RerunError, match=r"'minhash_dedup' pass: code\.rensa"):
            run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
        assert run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False,
                            force=True).passes == {"filter": "skipped", "minhash_dedup": "done"}


def test_a_run_made_before_code_was_fingerprinted_resumes_and_changes_are_named(dup_input, tmp_path, monkeypatch,
                                                                                 caplog):
    out = tmp_path / "run"
    spec = _recipe(dedup=[{"method": "minhash"}], tokenize=None)
    _as_made_by_an_earlier_refinery(monkeypatch, frozenset({"code"}), lambda: run_pipeline(
        parse_config(spec), str(dup_input), str(out), workers=1, progress=False))
    recorded = json.loads((out / "run.json").read_text())["passes"]
    assert "code" not in recorded[0]["params"] and "code" not in recorded[1]["params"]
    assert recorded[0]["params"]["stages"][0]["params"] == {"min_words": 20}  # as given, then
    with caplog.at_level(logging.INFO, logger="refinery.plan"):
        again = run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    assert set(again.passes.values()) == {"skipped"}
    assert "did not fingerprint default params and library versions" in caplog.text
    # --force after a change to a later pass redoes that pass, in the old terms, not every pass
    later = _recipe(dedup=[{"method": "minhash", "minhash": {"threshold": 0.75}}], tokenize=None)
    with pytest.raises(RerunError, match="'minhash_dedup' pass"):
        run_pipeline(parse_config(later), str(dup_input), str(out), workers=1, progress=False)
    forced = run_pipeline(parse_config(later), str(dup_input), str(out), workers=1, progress=False, force=True)
    assert forced.passes == {"filter": "skipped", "minhash_dedup": "done"}
    assert "code" not in json.loads((out / "run.json").read_text())["passes"][0]["params"]
    # a change the old fingerprints see is refused in their terms, not as every default and version
    changed = _recipe(stages=[{"type": "gopher_quality", "params": {"min_words": 30}}],
                      dedup=[{"method": "minhash"}], tokenize=None)
    with pytest.raises(RerunError) as refused:
        run_pipeline(parse_config(changed), str(dup_input), str(out), workers=1, progress=False)
    assert "min_words 20 -> 30" in str(refused.value) and "code." not in str(refused.value)
    redone = run_pipeline(parse_config(changed), str(dup_input), str(out), workers=1, progress=False, force=True)
    assert redone.passes == {"filter": "done", "minhash_dedup": "done"}
    assert "code" in json.loads((out / "run.json").read_text())["passes"][0]["params"]


def test_a_finished_shard_whose_outputs_went_missing_is_redone(dup_input, tmp_path):
    """Found by adversarial testing: with its stats marker in place, a shard whose kept file was
    deleted (by hand, an S3 lifecycle rule) was skipped, and its documents were lost while
    status and stats still counted them."""
    out = tmp_path / "run"
    spec = _recipe(dedup=[{"method": "url"}], tokenize=None)
    first = run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    kept_before = sorted(_kept_rows(out), key=lambda r: r["id"])
    victims = [sorted((out / "kept").glob("*.parquet"))[0], sorted((out / "filter" / "removed").glob("*.parquet"))[-1]]
    for f in victims:
        f.unlink()
    assert [p["state"] for p in run_status(str(out)).passes] == ["stopped", "stopped"]  # not "finished"
    again = run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    assert again.passes == {"filter": "done", "url_dedup": "done"}
    assert [o.shard for o in again.outcomes if o.status == "done"] == [victims[1].stem]  # only the one redone
    assert all(f.exists() for f in victims)
    assert sorted(_kept_rows(out), key=lambda r: r["id"]) == kept_before
    assert again.stats["docs_kept"] == first.stats["docs_kept"]
    # a pass's funnel deleted: rebuilt from its shard markers, not left out of the run's funnel
    for name in ("filter", "url_dedup"):
        (out / name / "stats.json").unlink()
    third = run_pipeline(parse_config(spec), str(dup_input), str(out), workers=1, progress=False)
    assert not [o for o in third.outcomes if o.status == "done"]  # no shard redone
    funnel = lambda st: [(s["stage"], s["docs_in"], s["docs_removed"]) for s in st["stages"]]  # noqa: E731
    assert funnel(third.stats) == funnel(again.stats) and third.stats["docs_read"] == first.stats["docs_read"]
    assert (out / "filter" / "stats.json").exists() and (out / "url_dedup" / "stats.json").exists()


def test_a_relative_output_resumes_and_loses_orphans_and_a_trailing_slash_resumes(tmp_path, monkeypatch):
    """Found by adversarial testing: the input spelled with (or without) a trailing "/" was
    refused on resume; and listings spell local paths absolute, so with a relative --output the
    check for a shard's files and for orphaned shards found none."""
    import gzip

    docs = [json.loads(line) for line in gzip.open(ROOT / "data/sample/cc_docs/multiple_files_cc_en_head-0091.jsonl.gz", "rt")]
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    for k in range(3):
        Path(f"in/s{k}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs[k::3]))
    config = parse_config({"name": "rel", "stages": [{"type": "gopher_quality", "params": {"min_words": 20}}]})
    first = run_pipeline(config, "in", "out", workers=1, progress=False)
    for spelling in ("in/", str(tmp_path / "in") + "/", "in"):
        again = run_pipeline(config, spelling, "out", workers=1, progress=False)
        assert again.passes == {"filter": "skipped"} and again.stats == first.stats, spelling
    Path("in/s2.jsonl").unlink()
    run_pipeline(config, "in/", "out", workers=1, progress=False, force=True)
    assert not list(Path("out").rglob("s2.*"))  # the orphaned shard's outputs went
    assert run_pipeline(config, "in", "out", workers=1, progress=False).passes == {"filter": "skipped"}


def test_removing_an_input_whose_shard_failed_resumes_without_redoing_the_others(tmp_path):
    """Found by adversarial testing: after one unreadable input failed its shard (blocking the
    later passes), moving it away was refused as "input files changed", and --force redid every
    healthy shard. Files whose shards never finished may leave the input; the finished shards
    stay, and the passes that never started run."""
    import gzip

    src = tmp_path / "in"
    write_dedup_input(src, copies=3, per_shard=150)
    bad = src / "zz-broken.parquet"
    write_parquet_with_a_damaged_page(bad)  # its shard fails (a cut .jsonl.gz is read up to the cut)
    out = tmp_path / "run"
    spec = _recipe(dedup=[{"method": "exact"}], tokenize=None)
    first = run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)
    assert [o.shard for o in first.failed] == ["zz-broken"] and first.passes["exact_dedup"] == "blocked"
    markers = {f.name: f.stat().st_mtime_ns for f in (out / "filter" / "stats").glob("*.json")}
    bad.rename(tmp_path / "aside.parquet")
    again = run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)
    assert again.passes == {"filter": "done", "exact_dedup": "done"} and not again.failed
    assert not [o for o in again.outcomes if o.status == "done"]  # no healthy shard redone
    assert not (out / "filter" / "failed" / "zz-broken.json").exists()
    assert set(markers) == {f.name for f in (out / "filter" / "stats").glob("*.json")}
    assert again.stats["docs_read"] == first.stats["docs_read"] > 0  # the finished shards' documents, once
    assert again.stats["docs_read"] == again.stats["docs_kept"] + again.stats["docs_removed"]
    assert set(run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False).passes.values()) \
        == {"skipped"}
    # adding a file is still a changed input
    (tmp_path / "aside.parquet").rename(src / "new.parquet")
    with pytest.raises(RerunError, match="input files changed"):
        run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)


def test_failed_shards_within_max_failed_fraction_are_set_aside_and_a_rerun_retries_them(tmp_path):
    """One unreadable input among many used to block dedup and tokens until someone moved it away
    (Hadoop's mapreduce.map.failures.maxpercent is the precedent). Within
    executor.max_failed_fraction the failed shards are set aside: the later passes run without
    them, every view names them, and a rerun retries them; once one succeeds, the passes after the
    document pass are redone over the whole input."""
    import gzip

    from typer.testing import CliRunner

    from refinery.cli import app

    src = tmp_path / "in"
    write_dedup_input(src, copies=3, per_shard=150)
    bad = src / "zz-broken.parquet"
    write_parquet_with_a_damaged_page(bad)  # its shard fails (a cut .jsonl.gz is read up to the cut)
    out = tmp_path / "run"
    spec = _recipe(dedup=[{"method": "exact"}], tokenize={"tokenizer": "gpt2"},
                   executor={"max_failed_fraction": 0.3})
    # 1 of 3 shards is over 0.3: the run stops before dedup, as without the setting
    stopped = run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)
    assert [o.shard for o in stopped.failed] == ["zz-broken"] and not stopped.set_aside
    assert stopped.passes == {"filter": "failed", "exact_dedup": "blocked", "tokens": "blocked"}

    spec["executor"]["max_failed_fraction"] = 0.34
    first = run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)
    assert [o.shard for o in first.set_aside] == ["zz-broken"] and not first.failed
    assert first.passes == {"filter": "done", "exact_dedup": "done", "tokens": "done"}
    healthy = sum(pq.read_metadata(f).num_rows for f in src.glob("*.parquet") if f != bad)
    assert first.stats["docs_read"] == first.stats["docs_kept"] + first.stats["docs_removed"] == healthy
    [aside] = first.stats["set_aside_shards"]
    assert aside["shard"] == "zz-broken" and aside["input"].endswith("zz-broken.parquet") and aside["error"]
    assert sorted(f.name for f in (out / "kept").glob("*.parquet")) == ["part-a.parquet", "part-b.parquet"]
    st = run_status(str(out))
    assert st.complete and set(st.set_aside) == {"zz-broken"} and not st.failed and st.shards_pending == 0
    shown = CliRunner().invoke(app, ["status", str(out)])
    assert shown.exit_code == 0 and "1 set aside" in shown.output and "set aside zz-broken:" in shown.output
    funnel = CliRunner().invoke(app, ["stats", str(out)])
    assert "zz-broken.parquet failed and was set aside" in funnel.output
    as_json = CliRunner().invoke(app, ["stats", "--json", str(out)])
    assert json.loads(as_json.stdout)["set_aside_shards"][0]["shard"] == "zz-broken"  # the note is on stderr

    # a rerun retries the set-aside shard only; it fails again, so the later passes stand
    later = {f: f.stat().st_mtime_ns for f in [*(out / "kept").glob("*.parquet"), *(out / "tokens").glob("*.bin")]}
    cli = CliRunner().invoke(app, ["run", "-i", str(src), "-o", str(out), "--workers", "1", str(_write_spec(tmp_path, spec))])
    assert cli.exit_code == 0, cli.output
    assert "1 of 3 shard(s) failed and were set aside" in cli.output and "zz-broken:" in cli.output
    assert later == {f: f.stat().st_mtime_ns for f in later}

    # a lower max_failed_fraction: the shard fails the run again, which is then not complete
    lower = {**spec, "executor": {"max_failed_fraction": 0.0}}
    again = run_pipeline(parse_config(lower), str(src), str(out), workers=1, progress=False)
    assert [o.shard for o in again.failed] == ["zz-broken"] and again.passes["exact_dedup"] == "blocked"
    assert not run_status(str(out)).complete and run_status(str(out)).failed == {"zz-broken": ANY_TEXT}
    assert later == {f: f.stat().st_mtime_ns for f in later}  # the corpus made without it stays
    raised = run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)
    assert raised.passes == {"filter": "done", "exact_dedup": "skipped", "tokens": "skipped"}

    # the input mended: its shard finishes, and dedup and tokens are redone over all three
    pq.write_table(pa.Table.from_pylist([{"id": f"z{i}", "url": f"https://zebra.example/{i}", "text": f"zebra number {i} " * 30}
                                         for i in range(20)]), bad)
    mended = run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)
    assert mended.passes == {"filter": "done", "exact_dedup": "done", "tokens": "done"} and not mended.set_aside
    assert [o.shard for o in mended.outcomes if o.status == "done"] == ["zz-broken"]  # the others were kept
    assert mended.stats["docs_read"] == healthy + 20 and "set_aside_shards" not in mended.stats
    assert (out / "kept" / "zz-broken.parquet").exists()
    assert json.loads((out / "tokens" / "manifest.json").read_text())["totals"]["n_docs"] == mended.stats["docs_kept"]
    assert not run_status(str(out)).set_aside
    assert set(run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False).passes.values()) \
        == {"skipped"}


def test_a_set_aside_input_moved_out_resumes_and_a_refused_rerun_changes_nothing(tmp_path):
    """Found by adversarial testing: moving a set-aside file out of the input was refused (the
    later passes' fingerprints chain from the input's), and the refused rerun had already
    re-fingerprinted the finished shards, so the next run redid them all."""
    import gzip

    src = tmp_path / "in"
    write_dedup_input(src, copies=3, per_shard=150)
    bad = src / "zz-broken.parquet"
    write_parquet_with_a_damaged_page(bad)  # its shard fails (a cut .jsonl.gz is read up to the cut)
    out = tmp_path / "run"
    spec = _recipe(dedup=[{"method": "exact"}], tokenize={"tokenizer": "gpt2"}, executor={"max_failed_fraction": 0.5})
    first = run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)
    assert [o.shard for o in first.set_aside] == ["zz-broken"]
    markers = {f: f.read_bytes() for f in (out / "filter" / "stats").glob("*.json")}
    corpus = {f: f.stat().st_mtime_ns for f in [*(out / "kept").glob("*.parquet"), *(out / "tokens").glob("*.bin")]}
    bad.rename(tmp_path / "aside.parquet")
    changed = _recipe(dedup=[{"method": "exact", "minhash": {"seed": 3}}], tokenize={"tokenizer": "gpt2"},
                      executor={"max_failed_fraction": 0.5})
    with pytest.raises(RerunError, match="exact_dedup"):
        run_pipeline(parse_config(changed), str(src), str(out), workers=1, progress=False)
    assert markers == {f: f.read_bytes() for f in (out / "filter" / "stats").glob("*.json")}  # nothing rewritten
    moved = run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)
    assert moved.passes == {"filter": "done", "exact_dedup": "skipped", "tokens": "skipped"}
    assert not [o for o in moved.outcomes if o.status == "done"] and not moved.set_aside and not moved.failed
    assert corpus == {f: f.stat().st_mtime_ns for f in corpus}
    assert "set_aside_shards" not in moved.stats and moved.stats["docs_read"] == first.stats["docs_read"]
    st = run_status(str(out))
    assert st.complete and not st.set_aside and not st.failed
    assert set(run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False).passes.values()) \
        == {"skipped"}


class _AnyText(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    __hash__ = str.__hash__


ANY_TEXT = _AnyText()


def _write_spec(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sagemaker_instances_check_stubs_in_the_terms_of_a_run_made_before(dup_input, tmp_path, monkeypatch):
    """Found by adversarial testing: a launch resuming a run made before the code was fingerprinted
    wrote stubs in that run's terms, and every Processing instance (planning in today's) refused
    its shards, blaming the image."""
    from refinery.launch import container
    from refinery.launch.recipe import stubs
    from refinery.plan import first_pass_to_redo, load_previous

    spec = _recipe(dedup=[{"method": "exact"}], tokenize=None)
    out = tmp_path / "run"
    _as_made_by_an_earlier_refinery(monkeypatch, frozenset({"code"}), lambda: run_pipeline(
        parse_config(spec), str(dup_input), str(out), workers=1, progress=False))
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(spec))
    launched = plan_run(load_config(config), str(dup_input), str(out))
    first_pass_to_redo(launched, load_previous(launched.run), force=False)  # what the launcher does
    shards_dir = tmp_path / "stubs"
    shards_dir.mkdir()
    for name, stub in stubs(launched).items():
        (shards_dir / f"{name}.json").write_text(json.dumps(stub))
    monkeypatch.setenv("REFINERY_SHARDS_DIR", str(shards_dir))
    assert container._my_shards(str(config), str(dup_input), str(out)) == set(launched.shard_names())


def test_parquet_pages_without_text_need_extract_before_text_stages(tmp_path):
    """Found by adversarial testing: Parquet input of raw pages (html, no text) through stages that
    read text, with no extract first, removed every document as empty_text."""
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": ["a"], "html": [b"<html><body><p>Some words here.</p></body></html>"],
                             "url": ["http://a.example/"]}), tmp_path / "in" / "pages.parquet")
    with pytest.raises(ConfigError, match=r"^stages\[0\] gopher_quality: reads text, but on Parquet pages without a "
                                          r"text column \(html only\) \(.*pages\.parquet\).*'extract'"):
        plan_run(parse_config(_recipe(dedup=[], tokenize=None)), str(tmp_path / "in"), str(tmp_path / "out"))
    ok = _recipe(stages=[{"type": "extract"}, {"type": "gopher_quality", "params": {"min_words": 2}}], dedup=[],
                 tokenize=None)
    assert plan_run(parse_config(ok), str(tmp_path / "in"), str(tmp_path / "out")).passes[0].name == "filter"
    # a later html-only file: refused too (every footer is read, session 49), and when shards may
    # fail, it fails its own shard, naming the file
    pq.write_table(pa.table({"id": ["t"], "text": ["Text that was already extracted. " * 10]}),
                   tmp_path / "in" / "a-text.parquet")
    with pytest.raises(ConfigError, match=r"^stages\[0\] gopher_quality: reads text, but on Parquet pages without"):
        plan_run(parse_config(_recipe(dedup=[], tokenize=None)), str(tmp_path / "in"), str(tmp_path / "out"))
    run = run_pipeline(parse_config(_recipe(dedup=[], tokenize=None, executor={"max_failed_fraction": 0.4})),
                       str(tmp_path / "in"), str(tmp_path / "out"), workers=1, progress=False)
    [failed] = run.failed
    assert failed.shard == "pages" and "pages.parquet holds pages (an 'html' column) without a 'text'" in failed.error
    assert "'gopher_quality' reads text" in failed.error


def test_a_setting_added_later_keeps_older_runs_resumable_and_equal_in_compare():
    """``lines.min_site_docs`` (session 32) is unset in run.json files written before it: at its
    old behaviour (null) the pass's fingerprint and ``stats --compare`` are as before, so such a
    run resumes and compares equal; set, it is a change like any other."""
    from refinery.dedup.config import DedupConfig
    from refinery.plan import _dedup_params
    from refinery.stats.report import config_diff

    now = DedupConfig(method="lines").model_dump(mode="json")
    before = json.loads(json.dumps(now))
    del before["lines"]["min_site_docs"]
    assert _dedup_params(now) == _dedup_params(before)
    set_ = json.loads(json.dumps(now))
    set_["lines"]["min_site_docs"] = 5
    assert _dedup_params(set_) != _dedup_params(before)
    diffs = [r for r in config_diff({"config": {"dedup": [before]}}, {"config": {"dedup": [now]}}) if r["differs"]]
    assert diffs == []
    diffs = [r for r in config_diff({"config": {"dedup": [before]}}, {"config": {"dedup": [set_]}}) if r["differs"]]
    assert [(r["param"], r["a"], r["b"]) for r in diffs] == [("lines.min_site_docs", None, "5")]


def test_stage_params_added_later_leave_the_fingerprint_while_at_their_old_behaviour(dup_input, tmp_path):
    """line_corrections' drop_credits / drop_lookalikes (off: what a run made before them did) are
    not in the filter pass's params, so such a run resumes; written out as false, the same plan;
    on, a changed pass."""
    def filter_pass(params: dict):
        spec = _recipe(stages=[{"type": "line_corrections", "params": params}])
        return plan_run(parse_config(spec), str(dup_input), str(tmp_path / "o")).passes[0]

    base = filter_pass({})
    assert not {"drop_credits", "drop_lookalikes", "drop_syndication"} & set(base.params["stages"][0]["params"])
    assert "drop_disclosures" in base.params["stages"][0]["params"]  # other defaults still there
    assert filter_pass({"drop_credits": False, "drop_lookalikes": False}).fingerprint == base.fingerprint
    on = filter_pass({"drop_credits": True})
    assert on.fingerprint != base.fingerprint and on.params["stages"][0]["params"]["drop_credits"] is True


def test_a_run_made_before_an_added_stage_param_resumes_and_setting_it_is_refused(tmp_path, monkeypatch):
    """language_id gained ``by_parts_min_share`` (off: None). A run made before it was refused on
    resume for "stages.language_id.params.by_parts_min_share '<unset>' -> None" (a review): a
    param at its old behaviour (``Stage.added_params``) is left out of the fingerprint."""
    import refinery.config as config_module

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text("".join(json.dumps({"id": str(i), "text": f"This is English sentence number {i} "
                                                     "about the weather and the sea."}) + "\n" for i in range(5)))
    spec = {"stages": [{"type": "language_id", "params": {"languages": ["en"]}}]}
    out = tmp_path / "run"
    effective = config_module.StageConfig.effective_params
    with monkeypatch.context() as m:  # the refinery before the param: its effective params lack it
        m.setattr(config_module.StageConfig, "effective_params",
                  lambda self, stage=None: {k: v for k, v in effective(self, stage).items() if k != "by_parts_min_share"})
        assert run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False).passes["filter"] == "done"
    assert run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False).passes["filter"] == "skipped"
    on = {"stages": [{"type": "language_id", "params": {"languages": ["en"], "by_parts_min_share": 0.5}}]}
    with pytest.raises(RerunError, match=r"by_parts_min_share '<unset>' -> 0\.5"):
        run_pipeline(parse_config(on), str(src), str(out), workers=1, progress=False)


def test_a_forced_rerun_of_every_pass_starts_a_new_run_and_a_resume_keeps_its_start(tmp_path):
    """Found by review (h98): run.json's started_at survived --force, so the report said a corpus
    remade from scratch was started when the first run was. Every other field of run.json is the
    new plan's anyway. A forced rerun that keeps the earlier passes (a later pass changed) is the
    same run going on: its start stands, as on a resume."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text("".join(json.dumps({"id": str(i), "url": f"https://a.example/{i}",
                                                     "text": f"document number {i}"}) + "\n" for i in range(4)))
    out = tmp_path / "run"
    spec = {"name": "t", "stages": [{"type": "url_filter", "params": {"use_blocklist": False}}],
            "dedup": [{"method": "lines", "lines": {"min_docs": 3}}]}
    long_ago = "2020-01-01T00:00:00Z"

    def run(recipe: dict, force: bool = False) -> dict:
        run_pipeline(parse_config(recipe), str(src), str(out), workers=1, progress=False, force=force)
        return json.loads((out / "run.json").read_text())

    def backdate() -> None:  # a run made long ago, not a time check on this one
        record = json.loads((out / "run.json").read_text())
        (out / "run.json").write_text(json.dumps(record | {"started_at": long_ago}))

    run(spec)
    backdate()
    assert run(spec)["started_at"] == long_ago  # resumed
    spec["dedup"] = [{"method": "lines", "lines": {"min_docs": 4}}]
    later = run(spec, force=True)
    assert later["started_at"] == long_ago and later["updated_at"] != long_ago  # the filter pass stands
    renewed = run(spec, force=True)  # nothing changed: every pass redone
    assert renewed["started_at"] != long_ago and renewed["started_at"] == renewed["updated_at"]


def test_an_output_is_refused_inside_a_refinery_run_only(tmp_path, s3_bucket, through_proxy, monkeypatch):
    """(h122) An output below a directory holding some other tool's run.json (not a refinery run's
    record) was refused as "inside the run directory"; on S3, credentials limited to a prefix (a
    HEAD of <bucket>/run.json refused, 403) failed every run and dedup into that prefix."""
    from refinery.io import fs
    from refinery.plan import check_not_inside_a_run

    (tmp_path / "run.json").write_text(json.dumps({"task": "build", "command": "make"}))  # an editor's, a CI's
    check_not_inside_a_run(str(tmp_path / "out"))
    (tmp_path / "run.json").write_text(json.dumps({"passes": [], "config": {}}))  # a refinery run's record
    with pytest.raises(ConfigError, match=f"inside the run directory {tmp_path} "):
        check_not_inside_a_run(str(tmp_path / "sub" / "out"))

    team = f"{s3_bucket}/team"
    policy = FaultPolicy(always=True, kinds=("403",), when=lambda method, path: "team" not in path)
    through_proxy(policy)
    check_not_inside_a_run(f"{team}/out")
    assert policy.faults  # the bucket's top was asked, and refused

    # (h137) any other storage error is no "no run here": a throttle or an outage went on as if the
    # output were outside every run; and a run.json that cannot be read is not "another tool's"
    monkeypatch.setenv("REFINERY_S3_MAX_ATTEMPTS", "1")
    through_proxy(FaultPolicy(always=True, kinds=("503",), when=lambda method, path: "team" not in path))
    with pytest.raises((OSError, fs.StorageError), match="SLOW_DOWN|SlowDown|503"):
        check_not_inside_a_run(f"{team}/out")
    fs.write_bytes(f"{team}/run.json", json.dumps({"passes": [], "config": {}}).encode())
    through_proxy(FaultPolicy(always=True, kinds=("500",), when=lambda method, path: method == "GET"))
    with pytest.raises(fs.StorageError, match=f"{team}/run.json"):
        check_not_inside_a_run(f"{team}/out")


@needs_llama
def test_the_tokens_pass_puts_a_bos_before_each_document_and_a_changed_bos_is_refused(tmp_path):
    """Session 44 (h140): `tokenize: {bos: auto}` puts a Llama-style tokenizer's `<s>` before each
    document; the BOS is part of the tokens pass's fingerprint (as the tokenizer file's SHA-256 is),
    so a rerun with another setting is refused naming it, and --force redoes it; `bos: true`, which
    picks the same token, resumes; gpt2 (no BOS token) is refused naming the key."""
    from refinery.plan import plan_passes
    from refinery.tokens.format import ShardFile

    src = tmp_path / "in"
    src.mkdir()
    docs = [d for d in cc_documents() if d["text"]][:40]  # small: the test is about the tokens pass
    pq.write_table(pa.Table.from_pylist(docs[:25]), src / "part-a.parquet")
    pq.write_table(pa.Table.from_pylist(docs[25:]), src / "part-b.parquet")
    llama = {"tokenizer": str(LLAMA_JSON)}
    spec = _recipe(dedup=[], tokenize=llama | {"bos": "auto"})
    out = tmp_path / "run"
    run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False)

    def firsts() -> set[int]:
        """The first token of every document of RUN/tokens."""
        manifest = json.loads((out / "tokens" / "manifest.json").read_text())
        shards = [ShardFile(str(out / "tokens"), e["name"]) for e in manifest["shards"]]
        return {int(s.document(i)[0]) for s in shards for i in range(s.header.n_docs)}

    tokenizer = json.loads((out / "tokens" / "manifest.json").read_text())["tokenizer"]
    assert (tokenizer["bos_token"], tokenizer["bos_id"]) == ("<s>", 1) and firsts() == {1}
    same = run_pipeline(parse_config(_recipe(dedup=[], tokenize=llama | {"bos": True})), str(src), str(out), workers=1,
                        progress=False)
    assert same.passes["tokens"] == "skipped"
    # session 45 (h149): `bos_token` names it (implies true), fingerprinted as the token it is: the
    # same token resumes, another is refused naming bos_token; one that is not special is one line
    named = run_pipeline(parse_config(_recipe(dedup=[], tokenize=llama | {"bos_token": "<s>"})), str(src), str(out),
                         workers=1, progress=False)
    assert named.passes["tokens"] == "skipped"
    with pytest.raises(RerunError, match=r"'tokens' pass: .*bos_token"):
        run_pipeline(parse_config(_recipe(dedup=[], tokenize=llama | {"bos_token": "<unk>"})), str(src), str(out),
                     workers=1, progress=False)
    with pytest.raises(ConfigError, match=r"^tokenize\.bos_token: bos token '\|\|\|IP_ADDRESS\|\|\|' is not a special"):
        run_pipeline(parse_config(_recipe(dedup=[], tokenize=llama | {"bos_token": "|||IP_ADDRESS|||"})), str(src),
                     str(out), workers=1, progress=False)
    with pytest.raises(ConfigError, match=r"bos_token names a BOS .* but bos is false"):
        parse_config(_recipe(dedup=[], tokenize=llama | {"bos": False, "bos_token": "<s>"}))
    without = parse_config(_recipe(dedup=[], tokenize=llama))
    with pytest.raises(RerunError, match=r"'tokens' pass: .*bos_token"):
        run_pipeline(without, str(src), str(out), workers=1, progress=False)
    assert run_pipeline(without, str(src), str(out), workers=1, progress=False, force=True).passes["tokens"] == "done"
    assert "bos_id" not in json.loads((out / "tokens" / "manifest.json").read_text())["tokenizer"] and 1 not in firsts()
    # `bos: false` plans what a recipe without the key planned: runs from before the setting resume
    off = parse_config(_recipe(dedup=[], tokenize=llama | {"bos": False}))
    assert [p.fingerprint for p in plan_passes(off, "in", ["a.jsonl"], None)] == \
        [p.fingerprint for p in plan_passes(without, "in", ["a.jsonl"], None)]
    with pytest.raises(ConfigError, match=r"^tokenize\.bos: tokenizer gpt2 has no beginning-of-document token"):
        run_pipeline(parse_config(_recipe(dedup=[], tokenize={"tokenizer": "gpt2", "bos": True})), str(src),
                     str(tmp_path / "gpt2"), workers=1, progress=False)
