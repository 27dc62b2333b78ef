"""`refinery status`: a run's progress from its directory alone."""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from _fault_fixtures import FaultPolicy, through_proxy, write_parquet_with_a_damaged_page  # noqa: F401 - fixture
from refinery.cli import app
from refinery.config import parse_config
from refinery.io.runlock import run_dir_lock
from refinery.pipeline import run_pipeline
from refinery.status import run_status

ROOT = Path(__file__).resolve().parents[1]


def _input(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    docs = [json.loads(line) for line in gzip.open(ROOT / "data/sample/cc_docs/multiple_files_cc_en_head-0091.jsonl.gz", "rt")]
    for i in range(3):
        part = docs[i::3]
        pq.write_table(pa.table({"id": [d["id"] for d in part], "text": [d["text"] for d in part]}), src / f"p{i}.parquet")
    return src


def test_status_tracks_finished_failed_and_pending_shards(tmp_path):
    src = _input(tmp_path)
    out = tmp_path / "out"
    config = parse_config({"name": "st", "stages": [{"type": "gopher_quality"}]})
    run_pipeline(config, str(src), str(out), workers=1, progress=False)
    st = run_status(str(out))
    assert (st.shards_planned, st.shards_finished, st.shards_failed, st.shards_pending) == (3, 3, 0, 0)
    assert st.complete and st.docs_read == 10

    # Simulate a run in progress: one shard not finished yet, then one failed.
    (out / "stats" / "p2.json").unlink()
    result = CliRunner().invoke(app, ["status", str(out)])
    assert result.exit_code == 3 and "2/3 shards finished" in result.output and "1 pending" in result.output
    # no run holds the directory: the pass is not "running" but stopped (a killed run said running)
    assert [p["state"] for p in run_status(str(out)).passes] == ["stopped"]
    with run_dir_lock(str(out)):
        assert [p["state"] for p in run_status(str(out)).passes] == ["running"]
    with run_dir_lock(str(out), shared=True):  # one instance's share of a multi-instance job
        assert [p["state"] for p in run_status(str(out)).passes] == ["running"]
    for name in ("p0", "p1"):  # no shard of the pass finished yet
        (out / "stats" / f"{name}.json").rename(out / f"{name}.json.aside")
    with run_dir_lock(str(out)):  # the first unfinished pass of a run at work is running, not pending
        assert [p["state"] for p in run_status(str(out)).passes] == ["running"]
    # nobody holds it: begun (run.json) and stopped before any shard finished, not "pending" as if never begun
    assert [p["state"] for p in run_status(str(out)).passes] == ["stopped"]
    shown = CliRunner().invoke(app, ["status", str(out)])
    assert "stopped" in shown.output and "0/3 shards finished" in shown.output, shown.output
    for name in ("p0", "p1"):
        (out / f"{name}.json.aside").rename(out / "stats" / f"{name}.json")
    (out / "failed").mkdir()
    (out / "failed" / "p2.json").write_text(json.dumps({"shard": "p2", "error": "unreadable Parquet shard x\ntrace"}))
    result = CliRunner().invoke(app, ["status", str(out), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["shards_failed"] == 1 and data["failed"] == {"p2": "unreadable Parquet shard x"}

    # A re-run finishes the shard; the stale failure no longer counts.
    run_pipeline(config, str(src), str(out), workers=1, progress=False)
    assert CliRunner().invoke(app, ["status", str(out)]).exit_code == 0


def test_status_of_a_non_run_directory_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 2 and "no run.json" in result.output


def test_status_of_a_run_made_with_a_relative_output_from_another_directory(tmp_path, monkeypatch):
    """run.json spells a relative --output as given; status read from elsewhere still finds every pass."""
    src = _input(tmp_path)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    config = parse_config({"name": "st", "stages": [{"type": "gopher_quality"}], "dedup": [{"method": "url"}]})
    run_pipeline(config, str(src), "out", workers=1, progress=False)
    assert json.loads(Path("out/run.json").read_text())["passes"][0]["dir"] == "out/filter"  # relative
    monkeypatch.chdir(tmp_path)
    st = run_status(str(tmp_path / "here" / "out"))
    assert st.complete and [p["state"] for p in st.passes] == ["finished", "finished"]
    result = CliRunner().invoke(app, ["status", "here/out"])
    lines = [ln.split() for ln in result.output.splitlines() if ln.strip().startswith("pass ")]
    assert result.exit_code == 0 and [ln[2] for ln in lines] == ["finished", "finished"], result.output
    # a pass's directory is not a run: status, stats and report name the run to give, one line, exit 2
    # (report wrote a report.html of that pass alone into it, without thresholds; status refused it)
    for command in (["status", "here/out/filter"], ["stats", "here/out/filter"], ["stats", "--json", "here/out/url_dedup/"],
                    ["report", "here/out/filter"], ["report", "here/out/url_dedup"], ["report", "here/out", "--compare", "here/out/filter"]):
        result = CliRunner().invoke(app, command)
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and "pass of the refinery run here/out, not a run: give the run directory, here/out" in said, (
            command, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not list((tmp_path / "here" / "out").glob("*/report.html"))


def test_a_damaged_json_file_in_a_run_directory_is_named(tmp_path, capsys):
    """A truncated stats marker gave "error: Expecting property name enclosed in double quotes"
    in status, stats and report, naming no file (found by adversarial testing)."""
    import pytest

    from refinery.cli import main

    src = _input(tmp_path)
    out = tmp_path / "out"
    run_pipeline(parse_config({"name": "st", "stages": [{"type": "gopher_quality"}]}), str(src), str(out), workers=1,
                 progress=False)
    marker = out / "stats" / "p1.json"
    good = marker.read_text()
    marker.write_text(good[:25])
    (out / "stats.json").unlink()
    try:
        for command in ("status", "stats"):
            with pytest.raises(SystemExit) as exit_:
                main([command, str(out)])
            err = capsys.readouterr().err
            assert exit_.value.code == 2 and f"{marker} is damaged (not valid JSON" in err, err
        # valid JSON that is no object: "unexpected AttributeError", naming no file (found by review)
        run_json = out / "run.json"
        good_run = run_json.read_text()
        for junk, kind in (("[]", "an array"), ("null", "null"), ('"x"', "a string")):
            run_json.write_text(junk)
            for command in ("status", "stats", "report"):
                with pytest.raises(SystemExit) as exit_:
                    main([command, str(out)])
                err = capsys.readouterr().err
                assert exit_.value.code == 2 and f"{run_json} is damaged ({kind}, not a JSON object)" in err, err
        run_json.write_text(good_run)
    finally:
        marker.write_text(good)  # the run directory's invariants are checked after the test


def test_an_unfinished_run_says_so_in_status_stats_and_report(tmp_path):
    """Found by adversarial testing: between passes, status read "3/3 shards finished ... 0 kept"
    (as if done, keeping nothing), and stats and the report showed an interrupted run's funnel
    as final."""
    from refinery.stats.report import build_report

    src = _input(tmp_path)
    out = tmp_path / "out"
    config = parse_config({"name": "st", "stages": [{"type": "gopher_quality", "params": {"min_words": 5}}],
                           "dedup": [{"method": "exact"}]})
    run_pipeline(config, str(src), str(out), workers=1, progress=False)
    finished = CliRunner().invoke(app, ["stats", str(out)])
    assert finished.exit_code == 0 and "has not finished" not in finished.output
    # stopped after the filter pass: the dedup pass and the run's summary are not there
    (out / "passes" / "exact_dedup.json").unlink()
    # the run's stats.json of an earlier state (a --force rerun under way) is not shown as final
    stale = CliRunner().invoke(app, ["stats", str(out)])
    assert "has not finished" in " ".join(stale.output.split())
    (out / "stats.json").unlink()
    for f in (out / "kept").glob("*.parquet"):
        f.unlink()
    for f in (out / "exact_dedup" / "stats").glob("*.json"):
        f.unlink()
    status = CliRunner().invoke(app, ["status", str(out)])
    assert status.exit_code == 3
    assert "3/3 shards of filter finished" in status.output and "in the corpus so far (1 of 2 passes finished)" in status.output
    stats = CliRunner().invoke(app, ["stats", str(out)])
    assert stats.exit_code == 0 and "the run has not finished (3 of 3 shards of its first pass; not finished: " \
        "exact_dedup" in " ".join(stats.output.split())
    assert 'id="partial"' in build_report(str(out)) and "Unfinished run" in build_report(str(out))
    _what_if_counts_what_the_funnel_counts(out, shards=3)
    # its dedup pass, not finished: said so (was "no stage 'exact_dedup' ... (it has none)")
    for option in (["--what-if", "exact_dedup.x=1"], ["--pairs", "exact_dedup"]):
        waiting = CliRunner().invoke(app, ["stats", str(out), *option])
        assert waiting.exit_code == 2 and "its pass exact_dedup has not finished (" in waiting.output, waiting.output
    # the first pass under way (one shard not finished): the what-if reads its finished shards only
    (out / "filter" / "stats" / "p2.json").unlink()
    _what_if_counts_what_the_funnel_counts(out, shards=2)
    # nothing finished yet: said so, not "is it a refinery run directory?"
    for f in (out / "filter" / "stats").glob("*.json"):
        f.unlink()
    empty = CliRunner().invoke(app, ["stats", str(out)])
    assert empty.exit_code == 2 and "no shard of" in empty.output and "has finished yet" in empty.output


def _what_if_counts_what_the_funnel_counts(out: Path, shards: int) -> None:
    """`stats --what-if` and the report's threshold curves on an unfinished run count the documents
    its funnel counts: they read the plan's last kept/ (absent until the run ends) and every pass's
    removed/, so a run under way counted its removed documents alone (session 48, h180)."""
    from refinery.stats.funnel import load_run_stats
    from refinery.stats.whatif import render_what_if, what_if
    from refinery.stats.whatif_report import load_outputs

    stats = load_run_stats(str(out))
    row = next(s for s in stats["stages"] if s["stage"] == "gopher_quality")
    assert stats["partial"] and stats["shards"] == shards
    w = what_if(str(out), "gopher_quality", "min_words", 50)
    assert (w["reached_stage"], w["corpus_docs"]) == (row["docs_in"], stats["docs_kept"]) and stats["docs_kept"] > 0
    assert any(line.startswith("  note: the run has not finished") for line in render_what_if(w))
    read = load_outputs(str(out), ["gopher_word_count"], stats)
    assert (read.kept.num_rows, read.removed.num_rows) == (stats["docs_kept"], stats["docs_removed"])
    import importlib.util  # and scripts/check_report.py, which audits the report against those rows

    spec = importlib.util.spec_from_file_location("check_report", ROOT / "scripts" / "check_report.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    removed, kept, _ = check.load_outputs(str(out))
    assert (len(kept), len(removed)) == (stats["docs_kept"], stats["docs_removed"])


def test_the_comparison_of_an_unfinished_run_says_so(tmp_path):
    """Found by adversarial testing: `refinery report A --compare B` showed a stopped run's funnel
    as final (no word of it), while `stats --compare` and the run's own report said it was
    unfinished. Each side now carries the notes `stats --compare` prints."""
    from refinery.stats.report import build_compare_report

    src = _input(tmp_path)
    config = parse_config({"name": "st", "stages": [{"type": "gopher_quality", "params": {"min_words": 5}}],
                           "dedup": [{"method": "exact"}]})
    done, stopped = tmp_path / "done", tmp_path / "stopped"
    for out in (done, stopped):
        run_pipeline(config, str(src), str(out), workers=1, progress=False)
    # stopped after the filter pass, as in the test above
    for gone in ("stats.json", "passes/exact_dedup.json", *(str(f.relative_to(stopped)) for f in (stopped / "kept").glob("*"))):
        (stopped / gone).unlink()
    html = build_compare_report(str(stopped), str(done))
    sides = html.split('data-run="b"')[0]  # run A's side of the funnels
    assert "Unfinished run" in sides and "exact_dedup" in sides.split("Unfinished run")[1].split("</p>")[0]
    assert "Unfinished run" not in build_compare_report(str(done), str(done))


def test_stats_and_report_of_a_run_stopped_inside_a_dedup_pass_show_the_passes_finished(tmp_path):
    """Found by adversarial testing: a run killed (or still running) inside a dedup pass made
    `stats` and `report` fail ("run totals do not reconcile": the first pass's documents against
    the dedup pass's few shards so far). The funnel now ends at the last finished pass, with the
    note naming the one under way; a damaged run.json is named, not "no shard has finished"."""
    from typer.testing import CliRunner

    from refinery.cli import app
    from refinery.stats.funnel import load_run_stats
    from refinery.stats.report import build_report

    src = _input(tmp_path)
    out = tmp_path / "out"
    config = parse_config({"name": "st", "stages": [{"type": "gopher_quality", "params": {"min_words": 5}}],
                           "dedup": [{"method": "exact"}, {"method": "url"}]})
    run_pipeline(config, str(src), str(out), workers=1, progress=False)
    filter_pass = json.loads((out / "filter" / "stats.json").read_text())
    # what a kill -9 inside exact_dedup leaves: one shard of it finished, no marker, no run stats
    for gone in ("stats.json", "passes/exact_dedup.json", "passes/url_dedup.json", "exact_dedup/stats.json",
                 "exact_dedup/stats/p0.json", "exact_dedup/stats/p1.json"):
        (out / gone).unlink()
    import shutil

    shutil.rmtree(out / "url_dedup")
    stats = load_run_stats(str(out))
    assert stats["docs_read"] == filter_pass["docs_read"] and stats["docs_kept"] == filter_pass["docs_kept"]
    assert stats.get("passes", [stats.get("pass")]) == ["filter"] and "exact_dedup" in stats["partial"]["note"]
    shown = CliRunner().invoke(app, ["stats", str(out)])
    assert shown.exit_code == 0 and "has not finished" in " ".join(shown.output.split())
    assert "Unfinished run" in build_report(str(out))
    (out / "run.json").write_text('{"passes": [')
    damaged = CliRunner().invoke(app, ["stats", str(out)])
    assert damaged.exit_code == 2 and "run.json is damaged" in damaged.output


def test_the_report_of_a_run_stopped_by_a_failed_shard_names_it(tmp_path):
    """Found by adversarial testing: a run stopped by a failed shard showed no "failed shards"
    card, only "filter (failed)" in the banner."""
    from refinery.stats.funnel import load_run_stats
    from refinery.stats.report import build_report

    src = _input(tmp_path)
    write_parquet_with_a_damaged_page(src / "zz-broken.parquet")  # fails its shard (a cut .jsonl.gz no longer does)
    out = tmp_path / "out"
    config = parse_config({"name": "st", "stages": [{"type": "gopher_quality", "params": {"min_words": 5}}],
                           "dedup": [{"method": "exact"}]})
    summary = run_pipeline(config, str(src), str(out), workers=1, progress=False)
    assert [o.shard for o in summary.failed] == ["zz-broken"]
    assert load_run_stats(str(out))["failed_shards"] == ["zz-broken"]
    html = build_report(str(out))
    assert 'data-card="failed shards"' in html and "zz-broken" in html
    # and why: a table with its pass, the stage (none: its input could not be read), the attempts
    # and the error line, from its failed/ record (the card had its name alone; session 45, h152)
    record = json.loads((out / "filter" / "failed" / "zz-broken.json").read_text())
    assert (record["pass"], record["stage"], record["attempts"]) == ("filter", None, 1)
    row = html[html.index('<tr data-shard="zz-broken">'):]
    row = row[:row.index("</tr>")]
    assert "<td>filter</td>" in row and "none named" in row and '<td class="num" data-field="attempts">1</td>' in row
    assert "damaged Parquet file" in row and "zz-broken.parquet" in row and 'href="#failed"' in html


def test_status_stats_and_report_name_a_missing_bucket_or_directory(s3_bucket):
    """`run` said "the bucket ... does not exist"; the views said only "no run.json under ...:
    is it a refinery run directory?" (found by adversarial testing)."""
    missing = "s3://refinery-no-such-bucket-e7/runs/x"
    for command in (["status", missing], ["stats", missing], ["report", missing]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code != 0 and "the bucket refinery-no-such-bucket-e7 does not exist" in result.output, (
            command, result.output)
    # a local path that does not exist (a typo) is said so too (review h111)
    for command in ("status", "stats", "report"):
        result = CliRunner().invoke(app, [command, "no/such/run"])
        assert result.exit_code == 2 and "under no/such/run (no such directory)" in result.output, (command, result.output)


def test_status_counts_only_the_shards_whose_files_are_there(tmp_path, caplog):
    """Found by trials: with half of OUT/kept deleted, status still counted every shard marker
    ("178 in the corpus so far", and "3/3 shards finished" for a one-pass run) and did not say a
    file was gone. It names them, counts them as pending, and the same command redoes them."""
    src = _input(tmp_path)
    for i, (spec, kept_dir) in enumerate((({"name": "st", "stages": [{"type": "gopher_quality"}]}, "kept"),
                           ({"name": "st", "stages": [{"type": "gopher_quality"}], "dedup": [{"method": "url"}]},
                            "kept"),
                           ({"name": "st", "stages": [{"type": "gopher_quality"}], "dedup": [{"method": "url"}]},
                            "filter/kept"))):
        out = tmp_path / f"out{i}"
        config = parse_config(spec)
        run_pipeline(config, str(src), str(out), workers=1, progress=False)
        whole = run_status(str(out))
        lost = pq.read_metadata(out / kept_dir / "p1.parquet").num_rows
        (out / kept_dir / "p1.parquet").unlink()
        st = run_status(str(out))
        pass_name = "url_dedup" if kept_dir == "kept" and "dedup" in spec else "filter"
        assert st.outputs_missing == {pass_name: ["p1"]} and not st.complete
        if pass_name == "filter":
            assert (st.shards_finished, st.shards_pending) == (2, 1)
            assert st.docs_read < whole.docs_read
        if kept_dir == "kept":  # the corpus's own file: its documents are not in the corpus any more
            assert st.docs_kept == whole.docs_kept - lost
        result = CliRunner().invoke(app, ["status", str(out)])
        assert result.exit_code == 3, result.output
        assert (f"missing: 1 finished shard(s) of pass {pass_name} lost their kept or removed file (p1); "
                "run the same command again to redo them") in result.output, result.output
        run_pipeline(config, str(src), str(out), workers=1, progress=False)
        again = run_status(str(out))
        assert again.complete and again.outputs_missing == {} and again.docs_kept == whole.docs_kept
        assert (out / kept_dir / "p1.parquet").exists()
        _cut_short_is_named_and_redone(out, kept_dir, pass_name, config, src, whole, caplog)


def _parquet_files(out: Path) -> dict[str, bytes]:
    return {str(f.relative_to(out)): f.read_bytes() for f in sorted(out.rglob("*.parquet"))}


def _cut_short_is_named_and_redone(out, kept_dir, pass_name, config, src, whole, caplog):
    """Review h111: a finished shard's file cut short in place (a partial sync, a copy of a
    directory being written) was skipped by a rerun, which checked only that it existed. The
    sizes its pass marker records name it in `status`; the rerun warns, redoes it, and the
    output is the clean run's again."""
    clean = _parquet_files(out)
    victim = out / kept_dir / "p2.parquet"
    size = victim.stat().st_size
    victim.write_bytes(clean[f"{kept_dir}/p2.parquet"][: size // 2])
    problem = f"{victim} has {size // 2:,} bytes, not the {size:,} recorded when its pass finished"
    st = run_status(str(out))
    assert st.outputs_damaged == {pass_name: [problem]} and st.outputs_missing == {} and not st.complete
    if kept_dir == "kept":  # its documents are not counted in the corpus
        assert st.docs_kept == whole.docs_kept - pq.read_metadata(pa.BufferReader(clean["kept/p2.parquet"])).num_rows
    result = CliRunner().invoke(app, ["status", str(out)])
    assert result.exit_code == 3 and (f"damaged: 1 finished shard(s) of pass {pass_name} changed ({problem}); run the "
                                      "same command again to redo them") in result.output, result.output
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="refinery.pipeline"):
        summary = run_pipeline(config, str(src), str(out), workers=1, progress=False)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"[{pass_name}] {problem}: redoing shard p2"]
    assert summary.passes[pass_name] == "done" and _parquet_files(out) == clean
    assert run_status(str(out)).complete


def test_a_dedup_pass_stopped_while_it_built_its_index_reads_stopped(tmp_path):
    """Found by the session-39 trial: a run killed (kill -9) inside a dedup pass before it wrote a
    shard (its index's first steps done, which a rerun skips) showed the pass as "pending 0/3 shards
    finished", as if it had not started. Here the files the kill leaves: the exact pass's
    signatures step, nothing after it."""
    import shutil

    src = _input(tmp_path)
    out = tmp_path / "out"
    config = parse_config({"name": "st", "stages": [{"type": "gopher_quality"}], "dedup": [{"method": "exact"}]})
    run_pipeline(config, str(src), str(out), workers=1, progress=False)
    (out / "stats.json").unlink()
    (out / "passes" / "exact_dedup.json").unlink()
    for p in (out / "exact_dedup").iterdir():
        if p.name != "index":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    steps = out / "exact_dedup" / "index" / "passes"
    for p in steps.iterdir():
        if p.name != "signatures.json":
            p.unlink()
    (state,) = [p for p in run_status(str(out)).passes if p["name"] == "exact_dedup"]
    assert state == {"name": "exact_dedup", "kind": "dedup", "state": "stopped",
                     "detail": "0/3 shards finished, index steps finished: signatures"}
    result = CliRunner().invoke(app, ["status", str(out)])
    assert "exact_dedup      stopped   0/3 shards finished, index steps finished: signatures" in result.output, \
        result.output


def test_a_shard_cut_short_on_s3_is_found_by_its_listing_and_redone(tmp_path, s3_bucket, monkeypatch, caplog,
                                                                    through_proxy):
    """The sizes come from the listing (S3 lists sizes), not from a read per shard: a finished
    shard overwritten with half its bytes (a partial sync) is named by `status`, which opens no
    shard file, and redone by the rerun."""
    from refinery.io import fs

    src = _input(tmp_path)
    out = f"{s3_bucket}/run"
    config = parse_config({"name": "st", "stages": [{"type": "gopher_quality"}]})
    run_pipeline(config, str(src), out, workers=1, progress=False)
    _status_and_a_no_op_rerun_read_records_without_a_look_first(config, src, out, through_proxy)
    victim = f"{out}/kept/p1.parquet"
    whole = fs.read_bytes(victim)
    fs.write_bytes(victim, whole[: len(whole) // 2])
    problem = f"{victim} has {len(whole) // 2:,} bytes, not the {len(whole):,} recorded when its pass finished"
    opened, real_open, real_read = [], fs.open_input, fs.read_bytes
    with monkeypatch.context() as patched:
        patched.setattr(fs, "open_input", lambda uri, *a, **k: opened.append(uri) or real_open(uri, *a, **k))
        patched.setattr(fs, "read_bytes", lambda uri: opened.append(uri) or real_read(uri))  # one GET, no open (h139)
        assert run_status(out).outputs_damaged == {"filter": [problem]}
    assert opened and not [u for u in opened if u.endswith(".parquet")], opened  # records read, no shard
    with caplog.at_level(logging.WARNING, logger="refinery.pipeline"):
        again = run_pipeline(config, str(src), out, workers=1, progress=False)
    assert f"[filter] {problem}: redoing shard p1" in caplog.messages
    assert again.passes == {"filter": "done"} and fs.read_bytes(victim) == whole
    _a_failed_listing_is_no_empty_directory(config, src, out, through_proxy, caplog)


def _status_and_a_no_op_rerun_read_records_without_a_look_first(config, src, out, through_proxy):
    """Requests of `status` and of a rerun that redoes nothing, on S3: a record (run.json, a pass
    marker, stats.json) was a HEAD, and a LIST when absent, before its GET; a pass's stats/ and
    failed/ a HEAD and a LIST before their listing (h141: status 39 -> 25 requests, the rerun 45 -> 31 here)."""
    requests: list[tuple[str, str]] = []
    through_proxy(FaultPolicy(when=lambda method, path: requests.append((method, path)) or False))
    assert run_status(out).complete
    status = [m for m, _ in requests]
    status_requests = list(requests)
    requests.clear()
    assert run_pipeline(config, str(src), out, workers=1, progress=False).passes == {"filter": "skipped"}
    rerun = [m for m, _ in requests]
    heads = [p.rsplit("/", 1)[-1] for m, p in requests if m == "HEAD"]
    # left: the .claim's existence (status), the ETag of run.json for its conditional write, and
    # pass_finished's look at stats.json (twice): checks, none before a read of the same record
    assert status.count("HEAD") <= 1 and len(heads) <= 3, (status, heads)
    assert len(status) <= 25 + 2 and len(rerun) <= 31 + 3, (len(status), len(rerun))
    # each directory of the pass listed once by `status` (kept/ and removed/ were listed three
    # times, stats/ and failed/ twice: 12 LISTs here, now 5), and kept/ and removed/ once by the
    # no-op rerun (three times each: h156); run.json read once by `status` (four times)
    listed = [re.search(r"prefix=([^&]+)", p).group(1) for m, p in status_requests if "prefix=" in p]
    listed = [prefix for prefix in listed if prefix.endswith("%2F")]  # directories (not the claim's look)
    assert sorted(listed) == sorted(set(listed)) and len(listed) == 5, listed
    reread = [p for m, p in requests if "prefix=" in p and re.search(r"prefix=run%2F(kept|removed)%2F", p)]
    assert len(reread) == 2, reread
    # and stats/ once: the input check at planning and the finished check each listed it (h165)
    rerun_listed = [re.search(r"prefix=([^&]+)", p).group(1) for m, p in requests if "prefix=" in p]
    rerun_listed = [prefix for prefix in rerun_listed if prefix.endswith("%2F")]
    assert sorted(rerun_listed) == sorted(set(rerun_listed)) and "run%2Fstats%2F" in rerun_listed, rerun_listed
    assert [p for m, p in status_requests if m == "GET" and p.endswith("/run.json")] == [f"/{out[5:]}/run.json"]


def _a_failed_listing_is_no_empty_directory(config, src, out, through_proxy, caplog):
    """A listing of kept/ that S3 refuses (403) was read as an empty directory: with the pass
    unfinished (its marker gone, as after a kill), `status` said every finished shard had lost its
    kept file and the rerun redid every shard. Both now stop on the listing's error, nothing redone."""
    from refinery.io import fs

    fs.delete(f"{out}/passes/filter.json")
    policy = FaultPolicy(always=True, kinds=("403",),
                         when=lambda method, path: method == "GET" and "prefix=run%2Fkept%2F" in path
                         and "max-keys" not in path)  # boto3's listing, not pyarrow's existence check
    through_proxy(policy)
    with pytest.raises(fs.StorageError, match=f"cannot list the files under {out}/kept: .*AccessDenied"):
        run_status(out)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="refinery.pipeline"), \
            pytest.raises(fs.StorageError, match=f"cannot list the files under {out}/kept"):
        run_pipeline(config, str(src), out, workers=1, progress=False)
    assert policy.faults and not [m for m in caplog.messages if "to run" in m], caplog.messages  # no shard redone


def test_a_pass_funnel_and_status_hold_a_chunk_of_shard_markers_not_all(tmp_path, monkeypatch):
    """A shard's marker carries ~30 KB of histograms: merging a pass's funnel from every marker
    held at once took 1.6 GB in the driver at 4,000 shards (~35 GB at 90,000), and `refinery
    status` (so `stats`, `report`) held them all too (session 43, h130). The funnel is merged a
    chunk of markers at a time, and status keeps five fields of each (the input file: a removed one is
    named by it, h216)."""
    from refinery.io import fs
    from refinery.stats import funnel
    from refinery.status import _shards
    from refinery.rundir import PassDir

    src = tmp_path / "in"
    src.mkdir()
    for i in range(10):
        pq.write_table(pa.table({"id": [f"d{i}"], "text": [f"document {i} " * (20 + 10 * i)]}), src / f"p{i}.parquet")
    out = tmp_path / "out"
    config = parse_config({"name": "m", "stages": [{"type": "gopher_quality"}]})
    ran = run_pipeline(config, str(src), str(out), workers=1, progress=False)
    # the driver holds every outcome of a pass: not with each marker's histograms (~1 GB at 4,000)
    (out / "kept" / "p0.parquet").unlink()
    again = run_pipeline(config, str(src), str(out), workers=1, progress=False)  # p0 redone, 9 skipped
    assert [o.status for o in again.outcomes].count("skipped") == 9
    for summary in (ran, again):
        assert all(o.result["docs_read"] == 1 and "histograms" not in o.result for o in summary.outcomes)
    markers = funnel.load_shard_stats(str(out))
    whole = funnel.merge_shard_stats(markers)
    assert whole["shards"] == 10 and whole["docs_read"] == 10
    assert funnel.merge_shard_stats(iter(markers)) == whole  # an iterator, consumed once
    finished, _ = _shards(PassDir(str(out)))
    assert len(finished) == 10 and all(set(s) == {"shard", "docs_read", "docs_kept", "seconds", "input"} for s in finished)
    reads = []
    real_read = fs.read_json
    monkeypatch.setattr(fs, "read_json", lambda uri: reads.append(uri) or real_read(uri))
    monkeypatch.setattr(funnel, "STATS_READ_CHUNK", 4, raising=False)
    lazily = funnel.iter_shard_stats(str(out))
    next(lazily)
    assert 1 <= len(reads) <= 4  # a chunk read (in parallel), not the pass
    assert funnel.merge_shard_stats(lazily)["docs_read"] == 9
    reads.clear()
    assert run_status(str(out)).docs_read == 10
    # each marker read once, for the counts; a pass's state comes from the listing (each pass's
    # markers read again took 9 of status's 13 s at 4,000 shards)
    assert len([u for u in reads if "/stats/" in u]) == 10
    # `stats` and `report` of a finished run read its stats.json, and whether it finished from
    # the listings: they read every marker of the first and last pass too (session 45, h145)
    reads.clear()
    assert funnel.load_run_stats(str(out))["docs_read"] == 10 and funnel.partial_note(str(out))["unfinished"] is False
    assert [u for u in reads if "/stats/" in u] == []


def test_a_recipe_on_s3_makes_no_request_per_shard_that_the_pass_already_answered(tmp_path, s3_bucket, through_proxy):
    """Requests that grew with the shards and answered nothing new (session 48, h186; measured at
    20 and 200 shards of the recipe on moto): a DELETE of each succeeded shard's failure record
    that the pass's listing of failed/ had shown absent, and each removal task's HEAD of its
    index manifest, whose version the driver now takes once per pass."""
    src = tmp_path / "in"
    src.mkdir()
    docs = [json.loads(line) for line in gzip.open(ROOT / "data/sample/cc_docs/multiple_files_cc_en_head-0091.jsonl.gz", "rt")]
    for i in range(3):
        part = docs[i::3]
        pq.write_table(pa.table({"id": [d["id"] for d in part], "text": [d["text"] for d in part],
                                 "url": [f"https://site{j % 2}.example/{j}" for j in range(len(part))]}), src / f"p{i}.parquet")
    config = parse_config({"name": "st", "stages": [{"type": "gopher_quality"}], "dedup": [{"method": "url"}]})
    requests: list[tuple[str, str]] = []
    through_proxy(FaultPolicy(when=lambda method, path: requests.append((method, path)) or False))
    out = f"{s3_bucket}/run"
    assert run_pipeline(config, str(src), out, workers=1, progress=False).passes == {"filter": "done", "url_dedup": "done"}
    deletes = [p for m, p in requests if m == "DELETE" and "/failed/" in p]
    assert not deletes, deletes  # one per shard before: 3
    manifest_heads = [p for m, p in requests if m == "HEAD" and p.endswith("/index/manifest.json")]
    assert len(manifest_heads) == 1, manifest_heads  # the driver's, once; one per shard before: 3
    # a shard read by a task is opened once: the removal run's html-only check is made on the
    # footer its reader opens, and a signature task takes the columns from the bytes it reads
    # (each read the footer on its own first: a GET per shard per task). filter/kept/p0 is read
    # by the URL signature task and by the URL removal task: 2 GETs, 5 before (the filter pass's
    # close took its footer from the task's outcome since session 49, h194)
    reads = [p for m, p in requests if m == "GET" and p.endswith("/run/filter/kept/p0.parquet")]
    assert len(reads) == 2, reads
    # a task of a shard that the pass's listing showed without a stats marker does not look for
    # one (a GET, a 404, per shard per pass before): in a fresh run no marker is read before written
    for marker in ("filter/stats/p0.json", "url_dedup/stats/p0.json"):
        seen = [m for m, p in requests if p.endswith(f"/run/{marker}")]
        assert seen[0] == "PUT", (marker, seen)
    # the tokens pass's digest of each kept shard (its size and footer) is one suffix-range GET,
    # the same as of the file on disk: pyarrow's file made a HEAD per shard first
    from refinery.io import fs
    from refinery.tokens.writer import source_digest

    local = tmp_path / "p0.parquet"
    local.write_bytes(fs.read_bytes(f"{out}/kept/p0.parquet"))
    requests.clear()
    assert source_digest(f"{out}/kept/p0.parquet") == source_digest(str(local))
    assert [m for m, _ in requests] == ["GET"], requests


def _shards_of_three_schemas(src: Path) -> list[dict]:
    """p0 and p2 of the sample's documents, p1 with a column of its own (its kept and removed
    shards have it: the others' get it at the pass's close), p3 empty."""
    src.mkdir()
    docs = [json.loads(line) for line in gzip.open(ROOT / "data/sample/cc_docs/multiple_files_cc_en_head-0091.jsonl.gz", "rt")]
    for i in range(3):
        part = docs[i::3]
        columns = {"id": [d["id"] for d in part], "text": [d["text"] for d in part],
                   "url": [f"https://site{j % 2}.example/{j}" for j in range(len(part))]}
        pq.write_table(pa.table(columns | ({"crawl": ["CC-2024"] * len(part)} if i == 1 else {})), src / f"p{i}.parquet")
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), src / "p3.parquet")
    return docs


def _one_schema_and_the_funnel_of_every_marker(out: str, passes: tuple[str, ...]) -> None:
    """Every kept and removed shard of each pass in one schema (the crawl column in all: p1's),
    and each pass's stats.json the funnel of its markers read back."""
    from refinery.io import fs
    from refinery.io.dataset import read_footer
    from refinery.rundir import PassDir
    from refinery.stats.funnel import iter_shard_stats, merge_shard_stats

    for name in passes:
        d = PassDir(f"{out}/{name}", kept_root=f"{out}/kept" if name == passes[-1] else None)
        for directory in (d.kept_dir, d.removed_dir):
            footers = [read_footer(u) for u in fs.list_files(directory, (".parquet",))]
            assert len(footers) == 4 and "crawl" in footers[0].schema.names, directory
            assert all(f.agrees_with(footers[0].schema) for f in footers), [(f.uri, f.schema.names) for f in footers]
        merged = json.loads(fs.read_bytes(d.stats_json))
        again = merge_shard_stats(iter_shard_stats(d))
        assert {k: merged[k] for k in again if k != "stages"} == {k: v for k, v in again.items() if k != "stages"}
        assert [(s["stage"], s["docs_in"], s["removed"]) for s in merged["stages"]] == \
            [(s["stage"], s["docs_in"], s["removed"]) for s in again["stages"]]


def test_a_pass_closes_on_what_its_tasks_wrote_without_reading_it_back(tmp_path, s3_bucket, through_proxy):
    """Closing a pass read back every kept and removed footer (one schema for the pass) and every
    stats marker (its funnel) of the shards it had just written: 3 GETs a shard a pass on S3, 15 a
    shard of the recipe (session 49, h194). The tasks' outcomes carry them now: on a fresh run no
    marker and no removed shard is ever read, yet the shards whose schema differs (p1 has a column
    of its own, p3 is empty) are rewritten to the union and the funnel is every marker's."""
    _shards_of_three_schemas(tmp_path / "in")
    config = parse_config({"name": "st", "stages": [{"type": "gopher_quality"}], "dedup": [{"method": "url"}]})
    requests: list[tuple[str, str]] = []
    through_proxy(FaultPolicy(when=lambda method, path: requests.append((method, path)) or False))
    out = f"{s3_bucket}/run"
    assert run_pipeline(config, str(tmp_path / "in"), out, workers=1, progress=False).passes == \
        {"filter": "done", "url_dedup": "done"}
    marker_reads = [p for m, p in requests if m == "GET" and "/stats/" in p]
    assert not marker_reads, marker_reads  # 8 before: each of the 4 shards' 2 markers
    removed_reads = [p for m, p in requests if m == "GET" and "/removed/" in p]
    # each shard's footer at each pass's close and the shards rewritten to the union before (12);
    # now only the rewrites, read whole: the filter pass's (p0, p2, p3 lack p1's column, which p1
    # has before the stages' columns, the union after them)
    assert sorted(removed_reads) == [f"/{s3_bucket[5:]}/run/filter/removed/p{i}.parquet" for i in range(4)], removed_reads
    _one_schema_and_the_funnel_of_every_marker(out, ("filter", "url_dedup"))


def test_a_pass_rerun_after_a_failure_closes_on_what_it_ran_and_reads_the_rest(tmp_path, monkeypatch):
    """A pass that stopped with a shard failed, rerun: the shards finished before are skipped and
    their footers read at the close, their markers taken from the driver's read that skipped them,
    the one run now taken from its outcome; in listing order (p0 given, p1 run, p2 and p3 given),
    the same funnel, one schema though only the shard run now has the new column (its shards had
    another schema when the first run closed)."""
    import refinery.pipeline as pipeline
    from refinery.io import dataset, fs

    _shards_of_three_schemas(tmp_path / "in")
    config = parse_config({"name": "st", "stages": [{"type": "gopher_quality"}], "dedup": [{"method": "url"}]})
    run_shard_task = pipeline.run_shard_task

    def p1_fails(task, **kwargs):
        if task.shard == "p1":
            raise ValueError("p1 fails")
        return run_shard_task(task=task, **kwargs)

    monkeypatch.setattr(pipeline, "run_shard_task", p1_fails)
    out = str(tmp_path / "run")
    assert run_pipeline(config, str(tmp_path / "in"), out, workers=1, progress=False).passes["filter"] == "failed"
    monkeypatch.setattr(pipeline, "run_shard_task", run_shard_task)
    footers, markers = [], []
    monkeypatch.setattr(dataset, "read_footer", lambda u, read=dataset.read_footer: footers.append(u) or read(u))
    monkeypatch.setattr(fs, "read_bytes", lambda u, read=fs.read_bytes: markers.append(u) or read(u))
    assert run_pipeline(config, str(tmp_path / "in"), out, workers=1, progress=False).passes == \
        {"filter": "done", "url_dedup": "done"}
    filter_dir = tmp_path / "run" / "filter"
    assert sorted(u for u in footers if "/filter/" in u) == \
        [str(filter_dir / d / f"p{i}.parquet") for d in ("kept", "removed") for i in (0, 2, 3)]
    # each marker of a shard finished before read once, by the driver to skip it (twice before h210:
    # again at the close)
    assert [u for u in markers if "/filter/stats/" in u] == [str(filter_dir / "stats" / f"p{i}.json") for i in (0, 2, 3)]
    # the URL pass ran every shard now: nothing of its shards is read back
    assert not [u for u in footers + markers if re.search(r"/(url_dedup/stats|url_dedup/removed|run/kept)/", u)]
    _one_schema_and_the_funnel_of_every_marker(out, ("filter", "url_dedup"))


def test_a_pass_funnel_streamed_out_of_order_is_the_funnel_read_in_listing_order(tmp_path, monkeypatch):
    """:class:`StreamedShardStats`: markers given out of order are merged in the listing's order
    (the same funnel, key order included), one held past ``held_max`` is set aside in a local file,
    not read again at the close (it was before h210), and a listed marker no task wrote before the
    ones merged (another instance's) makes it merge every listed marker anew, read back."""
    from refinery.io import fs
    from refinery.rundir import PassDir
    from refinery.stats.funnel import StreamedShardStats, iter_shard_stats, merge_shard_stats

    _shards_of_three_schemas(tmp_path / "in")
    config = parse_config({"name": "st", "stages": [{"type": "gopher_quality"}]})
    run_pipeline(config, str(tmp_path / "in"), str(tmp_path / "run"), workers=1, progress=False)
    d = PassDir(str(tmp_path / "run"))
    listed = fs.list_files(d.stats_dir, (".json",))
    assert [fs.basename(u) for u in listed] == ["p0.json", "p1.json", "p2.json", "p3.json"]
    expected = json.dumps(merge_shard_stats(iter_shard_stats(d)))
    reads: list[str] = []
    monkeypatch.setattr(fs, "read_json", lambda u, read=fs.read_json: reads.append(u) or read(u))
    streamed = StreamedShardStats(listed, held_max=1)
    for i in (2, 3, 0, 1):  # p2 waits for p0 and p1; p3, held past held_max, is set aside
        streamed.wrote(listed[i], fs.read_bytes(listed[i]))
    assert json.dumps(streamed.result(listed)) == expected and reads == []
    streamed = StreamedShardStats(listed, held_max=0)  # p1, p2, p3 set aside, merged as p0 comes
    for i in (3, 1, 2):
        streamed.wrote(listed[i], fs.read_bytes(listed[i]))
    assert streamed._merged == 0 and sorted(streamed._aside) == listed[1:]
    streamed.wrote(listed[0], fs.read_bytes(listed[0]))
    assert streamed._merged == 4 and json.dumps(streamed.result(listed)) == expected and reads == []
    reads.clear()
    streamed = StreamedShardStats(listed[1:])  # p0 is no shard of this command's
    for u in listed[1:]:
        streamed.wrote(u, fs.read_bytes(u))
    assert json.dumps(streamed.result(listed)) == expected and reads == listed


def _run_files(out: Path) -> dict[str, object]:
    """Every file of a run directory but its plan, dedup index and run records: Parquet as its
    schema and rows, JSON (markers, funnels) as text without timings or the run's place, key
    order kept."""
    def timeless(obj):
        if isinstance(obj, dict):
            return {k: timeless(v) for k, v in obj.items() if "seconds" not in k}
        if isinstance(obj, str):
            return obj.replace(str(out), "OUT")
        return [timeless(v) for v in obj] if isinstance(obj, list) else obj

    files: dict[str, object] = {}
    for f in sorted(out.rglob("*")):
        rel = f.relative_to(out).as_posix()
        if not f.is_file() or rel.startswith(("index/", "url_dedup/index/", "passes/", ".")) or "/." in rel \
                or rel in ("run.json", "input_files.json") or rel.endswith("dedup_stats.json"):
            continue
        if f.suffix == ".parquet":
            table = pq.read_table(f)
            files[rel] = (table.schema, table.to_pylist())
        elif f.suffix == ".json":
            files[rel] = json.dumps(timeless(json.loads(f.read_text())))
    return files


def test_a_resumed_run_reads_each_marker_finished_before_once_and_ends_as_an_uninterrupted_run(tmp_path, monkeypatch):
    """A run stopped by a failed shard in its filter pass, rerun and stopped by one in its URL
    dedup's removal, rerun again: each marker of a shard finished before is read once, by whatever
    skips the shard (the driver in a document pass, the removal task in a dedup pass), and handed
    to the pass's close, which read it a second time before (session 50, h210); the shards run now
    are not read back at all. Every kept, removed and sample shard, marker and funnel is the
    uninterrupted run's (funnels as text: key order too)."""
    import refinery.dedup.driver as driver
    import refinery.pipeline as pipeline
    from refinery.executors.base import TaskError
    from refinery.io import fs

    _shards_of_three_schemas(tmp_path / "in")
    config = parse_config({"name": "st", "stages": [{"type": "gopher_quality"}], "dedup": [{"method": "url"}]})
    src, out = str(tmp_path / "in"), tmp_path / "run"
    run_pipeline(config, src, str(tmp_path / "whole"), workers=1, progress=False)

    def failing(fn, shard):
        def task(**kwargs):
            if (kwargs.get("task").shard if "task" in kwargs else kwargs["shard"]) == shard:
                raise ValueError(f"{shard} fails")
            return fn(**kwargs)
        return task

    reads: list[str] = []
    monkeypatch.setattr(fs, "read_bytes", lambda u, read=fs.read_bytes: reads.append(u) or read(u))

    def marker_reads(pass_name: str) -> list[str]:
        return [fs.basename(u) for u in reads if f"/run/{pass_name}/stats/" in u]

    with monkeypatch.context() as m:
        m.setattr(pipeline, "run_shard_task", failing(pipeline.run_shard_task, "p1"))
        assert run_pipeline(config, src, str(out), workers=1, progress=False).passes["filter"] == "failed"
    assert marker_reads("filter") == []  # a fresh pass reads none (h194)
    reads.clear()
    with monkeypatch.context() as m, pytest.raises(TaskError, match="task p2 failed"):
        m.setattr(driver, "removal_run_task", failing(driver.removal_run_task, "p2"))
        run_pipeline(config, src, str(out), workers=1, progress=False)
    # p0, p2 and p3 finished before: read by the driver to skip them, not again at the close
    # (["p0", "p2", "p3"] * 2 before); p1 ran now: its marker came with its outcome
    assert marker_reads("filter") == ["p0.json", "p2.json", "p3.json"]
    reads.clear()
    assert run_pipeline(config, src, str(out), workers=1, progress=False).passes == \
        {"filter": "skipped", "url_dedup": "done"}
    # the removal tasks of p0, p1 and p3 read their markers to skip them and return them with their
    # outcome, the close reads none (twice each before); p2, unmarked, is run without a look
    assert sorted(marker_reads("url_dedup")) == ["p0.json", "p1.json", "p3.json"]
    assert marker_reads("filter") == []  # a pass finished before is skipped whole
    assert _run_files(out) == _run_files(tmp_path / "whole")


def test_the_share_that_closes_a_pass_reads_the_other_shares_markers_once(tmp_path, monkeypatch):
    """Shares of a multi-instance job (SageMaker): the last one to finish reads the other shares'
    markers to check they finished for this pass, and hands them to its close, which read them a
    second time before (session 50, h210); its own shards' come with their outcomes. The pass is
    the one a single run makes."""
    from refinery.io import fs

    _shards_of_three_schemas(tmp_path / "in")
    config = parse_config({"name": "st", "stages": [{"type": "gopher_quality"}]})
    src, out = str(tmp_path / "in"), tmp_path / "run"
    run_pipeline(config, src, str(tmp_path / "whole"), workers=1, progress=False)
    first = run_pipeline(config, src, str(out), workers=1, progress=False, only_shards={"p0", "p2"})
    assert first.passes["filter"] == "partial"
    reads: list[str] = []
    monkeypatch.setattr(fs, "read_bytes", lambda u, read=fs.read_bytes: reads.append(u) or read(u))
    second = run_pipeline(config, src, str(out), workers=1, progress=False, only_shards={"p1", "p3"})
    assert second.passes["filter"] == "done"
    assert [fs.basename(u) for u in reads if "/run/stats/" in u] == ["p0.json", "p2.json"]
    monkeypatch.undo()
    assert _run_files(out) == _run_files(tmp_path / "whole")
