"""A document that passed the recipe's ``gopher_quality`` ``min_words`` and is then cut below it --
by ``line_corrections`` or by the repeated-line dedup pass -- is removed as ``too_short_after_cuts``
(probe h89: 53 -> 49 and 55 -> 49 words, left in the corpus). The minimum is gopher_quality's,
written into each such step of a recipe that does not set its own."""

from __future__ import annotations

import functools
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from refinery.config import load_config, parse_config
from refinery.dedup.config import DedupConfig
from refinery.dedup.driver import run_dedup
from refinery.executors import make_executor
from refinery.stages.base import METRIC, REASON
from refinery.stages.gopher import quality_stats
from refinery.stages.line_corrections import LineCorrections
from tests._dedup_fixtures import load_cc_docs, write_inputs

ROOT = Path(__file__).resolve().parents[1]
# real chrome lines of the sample (StackExchange, DokuWiki): 10 and 2 Gopher words
QA_LINE = "Not the answer you're looking for? Browse other questions tagged ."
TOOLS_LINE = "Site Tools"


@functools.cache
def _words() -> tuple[str, ...]:
    return tuple(w for d in load_cc_docs() if d["text"].isascii() for w in d["text"].split() if w.isalpha())


def _prose(n: int, start: int) -> str:
    """``n`` words of real Common Crawl text (letters only, so Gopher counts each)."""
    assert len(_words()) >= start + n
    return " ".join(_words()[start:start + n])


def word_count(text: str) -> int:
    """Words as gopher_quality's min_words counts them."""
    return int(quality_stats(text)["words"])


def _rows(directory: Path) -> list[dict]:
    return [r for f in sorted(directory.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_the_recipe_takes_the_minimum_from_gopher_quality():
    """One place: gopher_quality's min_words reaches every step after it that cuts text, unless
    that step sets its own (null switches it off); without gopher_quality nothing is set."""
    config = load_config(ROOT / "configs" / "refinedweb.yaml")
    lc = next(s for s in config.stages if s.type == "line_corrections")
    by_method = {d.method: d for d in config.dedup}
    assert lc.params["min_words_after_cuts"] == 50 and lc.build().min_words_after_cuts == 50
    assert by_method["lines"].lines.min_words_after_cuts == 50 and by_method["substring"].substring.min_words == 50
    spec = yaml.safe_load((ROOT / "configs" / "refinedweb.yaml").read_text())
    next(s for s in spec["stages"] if s["type"] == "gopher_quality")["params"]["min_words"] = 80
    next(s for s in spec["stages"] if s["type"] == "line_corrections")["params"]["min_words_after_cuts"] = None
    next(d for d in spec["dedup"] if d["method"] == "lines")["lines"]["min_words_after_cuts"] = 30
    config = parse_config(spec)
    by_method = {d.method: d for d in config.dedup}
    assert next(s for s in config.stages if s.type == "line_corrections").params["min_words_after_cuts"] is None
    assert by_method["lines"].lines.min_words_after_cuts == 30 and by_method["substring"].substring.min_words == 80
    bare = parse_config({"stages": [{"type": "line_corrections"}], "dedup": [{"method": "lines"}, {"method": "substring"}]})
    assert "min_words_after_cuts" not in bare.stages[0].params and bare.dedup[0].lines.min_words_after_cuts is None
    assert bare.dedup[1].substring.min_words == 50  # the pass's own default, as before


def test_line_corrections_removes_a_document_it_cuts_below_the_minimum():
    """49 words of prose and a counter line pass Gopher (51 words); line corrections drop the
    counter (2 of 51 words, within its 5%) and left 49."""
    short, long = _prose(49, 0) + "\n12 comments", _prose(60, 100) + "\n12 comments"
    assert word_count(short) == 51
    batch = pa.record_batch({"id": ["short", "long"], "text": [short, long]})
    out = LineCorrections(min_words_after_cuts=50)(batch)
    assert out.column(REASON).to_pylist() == ["too_short_after_cuts", None]
    assert out.column(METRIC).to_pylist()[0] == 49.0
    assert out.column("text").to_pylist() == [short, _prose(60, 100)]  # a removed document keeps its text
    assert LineCorrections()(batch).column(REASON).to_pylist() == [None, None]  # off: as before
    # the words left, the floor's metric, for its histogram (it had none): on every edited document
    assert out.column("line_corrections_words_after_cuts").to_pylist() == [49, 60]
    assert "line_corrections_words_after_cuts" in LineCorrections(min_words_after_cuts=50).metric_columns()
    plain = pa.record_batch({"id": ["plain"], "text": [_prose(60, 100)]})
    assert LineCorrections(min_words_after_cuts=50)(plain).column("line_corrections_words_after_cuts").to_pylist() == [None]
    assert "line_corrections_words_after_cuts" not in LineCorrections()(batch).schema.names  # off: no column of nulls


def _lines_corpus() -> dict[str, list[dict]]:
    """``d1`` holds both chrome lines and comes first for TOOLS_LINE; the QA line it loses to ``d0``
    (11 of its 60 words, 13 with TOOLS_LINE: within a 25% rule) leaves it under 50 Gopher words."""
    return {"a": [{"id": "d0", "url": "https://site-a.org/0", "text": _prose(80, 200) + "\n" + QA_LINE},
                  {"id": "d1", "url": "https://site-b.org/1", "text": _prose(47, 300) + "\n" + QA_LINE + "\n" + TOOLS_LINE}],
            "b": [{"id": "d2", "url": "https://site-a.org/2", "text": _prose(80, 400) + "\n" + TOOLS_LINE},
                  {"id": "d3", "url": "https://site-b.org/3", "text": _prose(80, 500) + "\n" + QA_LINE + "\n" + TOOLS_LINE}]}


def test_the_lines_pass_removes_a_document_its_cuts_leave_short_and_its_line_moves_on(tmp_path):
    """The keeper walk sees d1 go (49 words once d0 keeps the QA line), so TOOLS_LINE, whose first
    holder was d1, stays in d2, the next holder that stays; the stage cuts both lines from d1 and
    removes it (47 words left). Without the walk's part the line survived nowhere."""
    shards = _lines_corpus()
    src = tmp_path / "in"
    src.mkdir()
    for name, docs in shards.items():
        pq.write_table(pa.table({k: [d[k] for d in docs] for k in ("id", "url", "text")}), src / f"{name}.parquet")
    ex = make_executor("local", 1)
    try:
        stats = run_dedup(str(src), str(tmp_path / "out"), DedupConfig(method="lines", lines={
            "max_removed_word_frac": 0.25, "min_words_after_cuts": 50}), ex)
    finally:
        ex.close()
    kept = {r["id"]: r["text"] for r in _rows(tmp_path / "out" / "kept")}
    removed = {r["id"]: r for r in _rows(tmp_path / "out" / "removed")}
    assert sorted(removed) == ["d1"] and sorted(kept) == ["d0", "d2", "d3"]
    assert removed["d1"]["removed_reason"] == "too_short_after_cuts" and removed["d1"]["removed_metric"] == 47.0
    assert removed["d1"]["text"] == shards["a"][1]["text"]
    assert QA_LINE in kept["d0"] and TOOLS_LINE in kept["d2"] and kept["d3"] == _prose(80, 500)
    assert stats["docs_removed_too_short"] == 1 and stats["docs_removed_for_lines"] == 0
    assert all(word_count(t) >= 50 for t in kept.values())


def test_a_recipe_run_removes_what_its_cuts_leave_under_gopher_min_words(tmp_path):
    """Through ``refinery run``'s plan: gopher_quality's min_words alone set; line corrections and
    the lines pass each remove the document they cut under it, and the funnel counts both."""
    from refinery.pipeline import run_pipeline
    from refinery.stats.funnel import load_run_stats

    docs = [d for shard in _lines_corpus().values() for d in shard]
    docs.append({"id": "c1", "url": "https://site-c.org/c", "text": _prose(49, 600) + "\n12 comments"})
    src = write_inputs(tmp_path / "in", {"a": docs})
    config = parse_config({"name": "short", "stages": [{"type": "gopher_quality", "params": {"min_words": 50}},
                                                       {"type": "line_corrections"}],
                           "dedup": [{"method": "lines", "lines": {"max_removed_word_frac": 0.25}}]})
    run_pipeline(config, str(src), str(tmp_path / "run"), workers=1, progress=False)
    kept = {r["id"]: r["text"] for r in _rows(tmp_path / "run" / "kept")}
    removed = {(r["removed_stage"], r["id"]): r["removed_reason"]
               for sub in ("filter", "lines_dedup") for r in _rows(tmp_path / "run" / sub / "removed")}
    assert removed == {("line_corrections", "c1"): "too_short_after_cuts",
                       ("lines_dedup", "d1"): "too_short_after_cuts"}
    assert sorted(kept) == ["d0", "d2", "d3"] and all(word_count(t) >= 50 for t in kept.values())
    summary = load_run_stats(str(tmp_path / "run"))
    funnel = {s["stage"]: s for s in summary["stages"]}
    assert funnel["line_corrections"]["removed"] == {"too_short_after_cuts": 1}
    assert funnel["lines_dedup"]["removed"] == {"too_short_after_cuts": 1}
    # each removal has a histogram of the words left, with gopher_quality's min_words drawn on it
    # (there was none, though the funnel and the samples showed the removals: session 42, h117)
    from refinery.stats.histograms import Histogram
    from refinery.stats.thresholds import load_run_manifest, run_thresholds

    thresholds = run_thresholds(load_run_manifest(str(tmp_path / "run")), summary["histograms"])
    # kept: line corrections cut none (4 without a value); the lines pass cut d3 (80 words left),
    # and d0 and d2 keep their line
    for stage, kept_cut, kept_uncut, lo, hi in (("line_corrections", 0, 4, 49, 49), ("lines_dedup", 1, 2, 47, 80)):
        column = f"{stage}_words_after_cuts"
        h = Histogram.from_dict(summary["histograms"][stage][column])
        assert sum(h.by_reason["too_short_after_cuts"]) == 1 and h.n("removed") == 1 and (h.lo, h.hi) == (lo, hi)
        assert (sum(h.counts["kept"]), h.null["kept"]) == (kept_cut, kept_uncut)
        assert [t["value"] for t in thresholds[stage][column]] == [50.0]
    assert thresholds["lines_dedup"]["lines_dedup_removed_frac"] == [{"param": "lines.max_removed_word_frac", "value": 0.25}]
    # the what-if judges a dedup pass's removals by its rules as it does a stage's: the pass's stage
    # type (lines_dedup) names their columns; without it "would pass this rule: 0 of the 0" where a
    # rerun kept them (benchmarks/whatif_vs_rerun.py, h176). d1 has 47 words left, d3 80
    from refinery.stats.whatif import render_what_if, what_if

    for stage, param, value, removed, passing in (("lines_dedup", "lines.min_words_after_cuts", 45, [], ["d1"]),
                                                  ("lines_dedup", "lines.min_words_after_cuts", 81, ["d3"], []),
                                                  ("line_corrections", "min_words_after_cuts", 45, [], ["c1"]),
                                                  # the floor off, as a rerun takes it (0 or null: session 48)
                                                  ("lines_dedup", "lines.min_words_after_cuts", 0, [], ["d1"]),
                                                  ("lines_dedup", "lines.min_words_after_cuts", None, [], ["d1"]),
                                                  ("line_corrections", "min_words_after_cuts", None, [], ["c1"])):
        w = what_if(str(tmp_path / "run"), stage, param, value)
        by_change = {c: sorted(d["id"] for d in w["documents"] if d["change"] == c)
                     for c in ("would be removed", "would pass this rule")}
        assert (by_change["would be removed"], by_change["would pass this rule"], w["removed_for_column"]) == (
            removed, passing, 1), (stage, value, w)
        # the lines pass's keepers move with its value (a rerun removed 19 of 20 counted): said, not hidden
        assert any("keepers move" in line for line in render_what_if(w)) == (stage == "lines_dedup")
    # a pass's value a rerun would refuse is refused as the recipe's entry would be, in one line (it
    # was answered: h173 checked stages only; h177); one it takes is answered
    from typer.testing import CliRunner

    from refinery.cli import app

    for spec, why in (("lines_dedup.lines.max_removed_word_frac=1.5", "dedup[0].lines.max_removed_word_frac: must be <= 1.0, got 1.5"),
                      ("lines_dedup.min_words_after_cuts=-3", "dedup[0].lines.min_words_after_cuts: must be >= 0, got -3"),
                      ("lines_dedup.lines.max_removed_word_frac=1", None),
                      # "nothing removed for being short after cuts": 0 was refused (the pass took >= 1
                      # only), null was not a number; a rerun takes both (session 48)
                      ("lines_dedup.lines.min_words_after_cuts=0", None),
                      ("lines_dedup.lines.min_words_after_cuts=null", None),
                      ("line_corrections.min_words_after_cuts=None", None),
                      ("gopher_quality.min_words=off", "stage gopher_quality.min_words: must be a whole number, got nothing (null)")):
        out = CliRunner().invoke(app, ["stats", str(tmp_path / "run"), "--what-if", spec])
        if why is None:
            assert out.exit_code == 0 and f"what if {spec.split('.')[0]}" in out.output, out.output
            assert "min_words_after_cuts" not in spec or "would pass this rule: 1 of the 1" in out.output, out.output
        else:
            assert out.exit_code == 2 and f"a rerun would refuse it: {why}" in out.output, out.output
            assert len(out.output.strip().splitlines()) == 1, out.output
    # several at once (h193): stricter document stages' values are counted, the lines pass after them
    # named (a copy it removed may take a lost one's place); its own value is refused (keepers move)
    two = CliRunner().invoke(app, ["stats", str(tmp_path / "run"), "--what-if", "gopher_quality.min_words=60",
                                   "--what-if", "line_corrections.min_words_after_cuts=60"])
    assert two.exit_code == 0 and "after them lines_dedup: a copy they removed" in two.output, two.output
    keepers = CliRunner().invoke(app, ["stats", str(tmp_path / "run"), "--what-if", "gopher_quality.min_words=60",
                                       "--what-if", "lines_dedup.lines.min_words_after_cuts=81"])
    assert keepers.exit_code == 2 and "the pass's fractions move with the documents it keeps" in keepers.output
    # benchmarks/whatif_vs_rerun.py (reruns: not run here) imports and reads every threshold from a run,
    # a dedup pass's as one (rerun on a copy of the run with --force)
    import sys

    sys.path.append(str(ROOT / "benchmarks"))  # last: benchmarks/classifiers.py must not shadow the package
    import whatif_vs_rerun

    found = {(t.stage, t.param): t.dedup for t in whatif_vs_rerun.thresholds_of(tmp_path / "run")}
    assert found[("lines_dedup", "lines.min_words_after_cuts")] and not found[("line_corrections", "min_words_after_cuts")]
    # ...and checks each floor off against a rerun, as null and as 0 (session 48)
    manifest = load_run_manifest(str(tmp_path / "run"))
    offs = {(t.stage, t.param): whatif_vs_rerun.off_values(t, manifest) for t in whatif_vs_rerun.thresholds_of(tmp_path / "run")}
    assert offs[("lines_dedup", "lines.min_words_after_cuts")] == [("looser", None), ("looser", 0.0)]
    assert offs[("line_corrections", "min_words_after_cuts")] == [("looser", None), ("looser", 0.0)]
    assert offs[("gopher_quality", "min_words")] == []
    # ...and several together in one rerun, up to the last of their stages (h193)
    moved = [(t, 60.0) for t in whatif_vs_rerun.thresholds_of(tmp_path / "run")
             if (t.stage, t.param) in {("gopher_quality", "min_words"), ("line_corrections", "min_words_after_cuts")}]
    rerun = whatif_vs_rerun.together_config(manifest["config"], moved)
    assert [s["type"] for s in rerun["stages"]] == ["gopher_quality", "line_corrections"] and rerun["dedup"] == []
    assert rerun["stages"][0]["params"]["min_words"] == 60 and rerun["stages"][1]["params"]["min_words_after_cuts"] == 60
    # a YAML pipeline's lines_dedup stage applying that index draws the same two lines: its params
    # leave both to the index, and its histograms had none (session 42 h117 left it; h124)
    from refinery.stages.line_dedup import FRAC, WORDS_AFTER_CUTS

    yaml = parse_config({"stages": [{"type": "lines_dedup", "params": {"dedup_dir": str(tmp_path / "run" / "lines_dedup" / "index")}}]})
    run_pipeline(yaml, str(tmp_path / "run" / "filter" / "kept"), str(tmp_path / "yaml"), workers=1, progress=False)
    histograms = load_run_stats(str(tmp_path / "yaml"))["histograms"]
    assert run_thresholds(load_run_manifest(str(tmp_path / "yaml")), histograms)["lines_dedup"] == {
        FRAC: [{"param": "max_removed_word_frac", "value": 0.25}],
        WORDS_AFTER_CUTS: [{"param": "min_words_after_cuts", "value": 50.0}]}


@pytest.mark.parametrize("section", ["lines"])
def test_unset_it_leaves_old_fingerprints_alone_and_set_it_changes_them(section):
    """Off (null, the old behaviour) it is left out of the pass's fingerprint, so a standalone
    ``refinery dedup`` made before it resumes; on, the fingerprint changes and a rerun is refused."""
    from refinery.plan import _dedup_params

    now = DedupConfig(method=section).model_dump(mode="json")
    before = {**now, section: {k: v for k, v in now[section].items() if k != "min_words_after_cuts"}}
    assert _dedup_params(now) == _dedup_params(before)
    now[section]["min_words_after_cuts"] = 50
    assert _dedup_params(now) != _dedup_params(before)


def test_two_gopher_quality_stages_hold_the_larger_minimum():
    """A document after two gopher_quality stages passed both: the floor is the larger min_words
    (the later stage's alone was taken: a later 20 lowered 80 to 20, a later 0 switched the floor
    off for the dedup passes, whose documents had all passed 80)."""
    strict = {"type": "gopher_quality", "params": {"min_words": 80}}
    dedup = [{"method": "lines"}, {"method": "substring"}]

    def floors(*stages: dict) -> tuple:
        config = parse_config({"stages": list(stages), "dedup": dedup})
        lc = [s.params.get("min_words_after_cuts") for s in config.stages if s.type == "line_corrections"]
        return lc, config.dedup[0].lines.min_words_after_cuts, config.dedup[1].substring.min_words

    for second in (20, 0):
        loose = {"type": "gopher_quality", "name": "loose", "params": {"min_words": second}}
        assert floors(strict, loose, {"type": "line_corrections"}) == ([80], 80, 80)
        assert floors(strict, {"type": "line_corrections"}, loose) == ([80], 80, 80)
    later = {"type": "gopher_quality", "name": "later", "params": {"min_words": 90}}
    assert floors(strict, {"type": "line_corrections"}, later) == ([80], 90, 90)  # line_corrections ran before it
