"""The HTML report, rendered in real headless Chromium (Debian's ``chromium``; ``.ci/run`` installs
it): it loads with no console errors and no network requests, the figures it shows equal the run's
stats JSON, data is escaped, and a full-page screenshot is kept under ``test-artifacts/``."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

from types import SimpleNamespace

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from _report_fixtures import (
    ARTIFACTS,
    CC_DOCS,
    HOSTILE_ID,
    HOSTILE_TEXT,
    HOSTILE_URL,
    RUN_STAGES,
    Browser,
    browser,  # noqa: F401 - fixture
    chromium_binary,
    make_run,
    write_input,
)
from refinery import cli_report
from refinery.io import fs
from refinery.stages.classifiers import ToxicityFilter
from refinery.stages.gopher import GopherQuality, GopherRepetition
from refinery.stats.histograms import Histogram
from refinery.stats.report import _histograms, _trigger, write_report
from refinery.stats.svg import histogram_svg

FUNNEL_JS = """
Array.from(document.querySelectorAll('#funnel-table tbody tr')).map(tr => {
  const tds = tr.querySelectorAll('td');
  const cells = {};
  tr.querySelectorAll('td[data-field]').forEach(td => { cells[td.dataset.field] = td.innerText.trim(); });
  return {stage: tds[0].innerText.trim(), reason: tds[1].innerText.trim(), cells};
})
"""


def _report_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _main() -> None:  # a callback keeps "report" a sub-command, as in the real CLI
        pass

    cli_report.register(app)
    return app


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def _expected_funnel(stats: dict) -> list[dict]:
    """The funnel rows as the page should print them, computed here from the stats JSON alone."""
    first = stats["stages"][0]["docs_in"]
    rows = []
    for s in stats["stages"]:
        rows.append({"stage": s["stage"], "reason": "", "cells": {
            "docs_in": f"{s['docs_in']:,}", "docs_out": f"{s['docs_out']:,}",
            "removed": f"{s['docs_removed']:,}",
            "removed_pct_of_stage": f"{100 * s['docs_removed'] / s['docs_in']:.1f}%",
            "kept_pct_of_input": f"{100 * s['docs_out'] / first:.1f}%",
            "words_removed": f"{sum(s['removed_words'].values()):,}",
            "docs_edited": f"{s['docs_edited']:,}", "words_cut": f"{s['words_cut']:,}",
            "est_tokens_cut": f"{round(s['chars_cut'] / 4):,}"}})
        for reason, n in sorted(s["removed"].items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append({"stage": s["stage"], "reason": reason, "cells": {
                "docs_in": "", "docs_out": "", "removed": f"{n:,}",
                "removed_pct_of_stage": f"{100 * n / s['docs_in']:.1f}%", "kept_pct_of_input": "",
                "words_removed": f"{s['removed_words'][reason]:,}",
                "docs_edited": "", "words_cut": "", "est_tokens_cut": ""}})
    return rows


def _check_page(b: Browser, stats: dict) -> None:
    assert b.problems() == []
    got = b.evaluate(FUNNEL_JS)
    for row in got:
        row["cells"] = {k: v for k, v in row["cells"].items() if k != "est_tokens_removed"}
    assert got == _expected_funnel(stats)
    bars = b.evaluate("Array.from(document.querySelectorAll('g.funnel-bar')).map(g => "
                      "[g.dataset.stage, g.querySelector('text').textContent])")
    first = stats["stages"][0]["docs_in"]
    assert bars == [[s["stage"], f"{100 * s['docs_out'] / first:.1f}%"] for s in stats["stages"]]
    cards = b.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('.card')).map(c => "
                       "[c.dataset.card, c.querySelector('.v').innerText]))")
    assert cards["documents read"] == f"{stats['docs_read']:,}"
    assert cards["documents kept"] == f"{stats['docs_kept']:,}"
    assert cards["documents removed"] == f"{stats['docs_removed']:,}"


def test_report_in_chromium(tmp_path_factory, browser):  # noqa: F811
    tmp = tmp_path_factory.mktemp("report")
    run_dir, _ = make_run(tmp)
    stats = json.loads(Path(run_dir, "stats.json").read_text())
    out = write_report(run_dir, samples_per_reason=50)
    assert out == str(Path(run_dir, "report.html"))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(out, ARTIFACTS / "report.html")

    url = Path(out).as_uri()
    browser.open(url)
    _check_page(browser, stats)
    assert browser.requested_urls() == [url]  # self-contained: nothing else is fetched

    # histograms: one per metric column, thresholds from run.json drawn at their values
    figures = browser.evaluate("Array.from(document.querySelectorAll('figure')).map(f => "
                               "[f.dataset.stage, f.dataset.column, Array.from(f.querySelectorAll('line.threshold'))"
                               ".map(l => Number(l.dataset.value))])")
    assert {(s, c) for s, c, _ in figures} == {(s, c) for s, cols in stats["histograms"].items() for c in cols}
    marks = {(s, c): t for s, c, t in figures}
    assert marks[("language_id", "language_score")] == [0.65]
    assert marks[("gopher_quality", "gopher_word_count")] == [50, 100000]
    assert marks[("gopher_repetition", "gopher_top_2_gram")] == [0.2]
    assert marks[("line_corrections", "line_corrections_removed_frac")] == [0.05]
    # every Gopher threshold has its metric's histogram, with the threshold drawn
    assert marks[("gopher_repetition", "gopher_dup_9_gram")] == [0.11]
    assert marks[("gopher_repetition", "gopher_top_3_gram")] == [0.18]
    assert marks[("gopher_repetition", "gopher_dup_line_char_frac")] == [0.2]
    assert marks[("gopher_quality", "gopher_ellipsis_lines_frac")] == [0.3]
    assert marks[("gopher_quality", "gopher_bullet_lines_frac")] == [0.9]

    # languages: the page's numbers are the stats' numbers
    en = browser.evaluate("Array.from(document.querySelectorAll('#language-table tr[data-language=\"en\"] td'))"
                          ".map(td => td.innerText.trim())")
    lang = stats["languages"]["by_language"]["en"]
    assert en[0] == "en" and en[1] == f"{lang['docs_in']:,}" and f"{lang['docs_kept']:,}" in en

    # the hostile document is shown as text, never interpreted
    assert browser.evaluate("document.scripts.length") == 0
    assert browser.evaluate("document.querySelectorAll('main img, main textarea, .snippet b').length") == 0
    snippets = browser.evaluate("Array.from(document.querySelectorAll('.snippet')).map(s => s.innerText)")
    assert HOSTILE_TEXT in snippets
    links = browser.evaluate("Array.from(document.querySelectorAll('#samples a')).map(a => a.getAttribute('href'))")
    assert HOSTILE_URL in links
    assert HOSTILE_ID in browser.evaluate("document.getElementById('samples').innerText")
    sample_groups = browser.evaluate("Array.from(document.querySelectorAll('#samples details')).map(d => "
                                     "[d.dataset.stage, d.dataset.reason, d.querySelectorAll('tbody tr').length])")
    available: dict = {}  # sampled documents per (stage, reason): at most 20 per shard
    for shard_file in Path(run_dir, "stats").glob("*.json"):
        for st in json.loads(shard_file.read_text())["stages"]:
            for reason, n in st.get("removed", {}).items():  # (a marker leaves out what is 0)
                available[(st["stage"], reason)] = available.get((st["stage"], reason), 0) + min(n, 20)
    assert {(s, r) for s, r, _ in sample_groups} == set(available)
    for s, r, n in sample_groups:
        assert n == min(available[(s, r)], 50)
    # the red metric of a removed sample is the one its reason names (dup_9_gram -> gopher_dup_9_gram)
    triggers = browser.evaluate("Array.from(document.querySelectorAll('#samples details')).map(d => [d.dataset.stage, "
                                "d.dataset.reason, Array.from(d.querySelectorAll('.metric')).map(m => m.dataset.trigger)])")
    gopher = {(s, r): t for s, r, t in triggers if s.startswith("gopher_") and r != "empty_text"}
    assert ("gopher_repetition", "dup_9_gram") in gopher
    for (stage, reason), names in gopher.items():
        cls = GopherRepetition if stage == "gopher_repetition" else GopherQuality
        assert names and set(names) == {cls.reason_metrics[reason]}, (stage, reason, names)

    shot = browser.screenshot(ARTIFACTS / "report.png")
    width, height = _png_size(shot)
    assert width == 1280 and height > 3000
    browser.open((ARTIFACTS / "report.html").as_uri())  # the artifact copy renders the same
    assert browser.problems() == []


def test_report_for_an_s3_run(s3_bucket, tmp_path, browser):  # noqa: F811
    input_dir = tmp_path / "in"
    input_dir.mkdir()
    for f in sorted(CC_DOCS.glob("multiple_files_*.jsonl.gz")):
        shutil.copy(f, input_dir / f.name)
    shutil.copy(write_input(tmp_path / "full") / "hostile.jsonl", input_dir / "hostile.jsonl")
    run_dir = f"{s3_bucket}/runs/r1"
    make_run(tmp_path, output=run_dir, input_dir=input_dir)
    assert fs.exists(f"{run_dir}/samples/hostile.parquet")

    result = CliRunner().invoke(_report_app(), ["report", run_dir])
    assert result.exit_code == 0, result.output
    assert f"{run_dir}/report.html" in result.output
    local = tmp_path / "r.html"
    result = CliRunner().invoke(_report_app(), ["report", run_dir, "--out", str(local), "--samples", "3"])
    assert result.exit_code == 0, result.output
    on_s3 = fs.read_bytes(f"{run_dir}/report.html").decode()
    assert "refinery report · stats-test" in on_s3 and on_s3.count("<svg") >= 3

    stats = json.loads(fs.read_bytes(f"{run_dir}/stats.json"))
    downloaded = tmp_path / "from_s3.html"
    downloaded.write_text(on_s3)
    for page in (downloaded, local):
        browser.open(page.as_uri())
        _check_page(browser, stats)

    missing = CliRunner().invoke(_report_app(), ["report", f"{s3_bucket}/no-such-run"])
    assert missing.exit_code == 2 and "no stats" in missing.output


def test_console_error_detection_has_teeth(browser):  # noqa: F811
    """The "no console errors" assertions above would catch a broken page."""
    browser.open("data:text/html,<p>x</p><script>console.error('boom'); undefined_fn();</script>"
                 "<img src='http://127.0.0.1:9/none.png'>")
    browser.evaluate("new Promise(r => setTimeout(r, 300))")
    problems = " | ".join(browser.problems())
    assert "boom" in problems and "undefined_fn" in problems
    assert "http://127.0.0.1:9/none.png" in browser.requested_urls()


def test_missing_chromium_fails_with_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        chromium_binary()


# -- issue 15 item 7 ----------------------------------------------------------------------------
def test_sample_trigger_is_named_by_the_reason_not_by_an_equal_value():
    # a dup_9_gram removal whose fraction equals the 5-gram one: the report used to name dup_5
    metrics = {"gopher_dup_line_frac": 0.0, "gopher_dup_5_gram": 0.1185, "gopher_dup_8_gram": 0.1185,
               "gopher_dup_9_gram": 0.1185, "gopher_top_2_gram": 0.04}
    assert _trigger("gopher_repetition", "dup_9_gram", 0.1185, metrics) == "gopher_dup_9_gram"
    assert _trigger("gopher_quality", "too_few_words", 12.0, {"gopher_word_count": 12, "gopher_stop_words": 12}) \
        == "gopher_word_count"
    assert _trigger("toxicity", "profanity", 0.2, {"toxicity_score": 0.2, "profanity_word_frac": 0.2}) \
        == "profanity_word_frac"
    # an unknown stage: only an unambiguous equal value names the metric
    assert _trigger(None, "odd", 0.5, {"x_score": 0.5, "y_frac": 0.1}) == "x_score"
    assert _trigger(None, "odd", 0.5, {"x_score": 0.5, "y_frac": 0.5}) is None


def test_sample_metrics_are_shown_whole_named_for_readers_and_control_characters_visible():
    """Found by testing the stats: a 400,000-word document's trigger read "gopher_word_count =
    4e+05", a truncated WARC record's "metric = 1.307e+04" (13,068 bytes missing, unnamed), and a
    NUL in a document's text went into the page as is; a 4 MB text's snippet did not say it was
    cut, and Arabic text sat in a left-to-right box."""
    import pyarrow as pa

    from refinery.stats.report import _samples

    def row(stage: str, reason: str, metric: float, metrics: dict, snippet: str) -> dict:
        return {"shard": "s", "id": f"{stage}-{reason}", "url": "", "stage": stage, "reason": reason,
                "metric": metric, "metrics": json.dumps(metrics), "language": None, "chars": len(snippet),
                "snippet": snippet, "snippet_source": "text", "population": 1, "evidence": None}
    rows = [row("warc_reader", "truncated_record", 13068.0, {}, ""),
            row("jsonl_reader", "bad_json", 17.0, {}, ""),
            row("gopher_quality", "too_many_words", 400000.0,
                {"gopher_word_count": 400000, "gopher_mean_word_length": 5.265412, "gopher_stop_words": 8},
                "text \x00 with a nul\x07 and a tab\tthere"),
            row("quality", "low_quality", 0.00049996, {"quality_score": 0.00049996, "perplexity": 31234567.5}, "x"),
            dict(row("gopher_repetition", "dup_line_frac", 0.5, {}, "مرحبا " * 100 + "…"), chars=4_200_000,
                 evidence='6× "Share <this> post"'),
            dict(row("url_filter", "banned_word", None, {}, "x"), evidence="porn")]
    stats = {"stages": [{"stage": r["stage"], "removed": {r["reason"]: 1}} for r in rows]}
    html = _samples(stats, pa.Table.from_pylist(rows), 8, {"gopher_quality": "gopher_quality", "quality": "quality"})
    assert "bytes missing = 13,068</div>" in html and "line = 17</div>" in html
    assert "gopher_word_count = 400,000</div>" in html and "gopher_stop_words = 8</div>" in html
    assert "gopher_mean_word_length = 5.26541</div>" in html
    assert "quality_score = 0.00049996</div>" in html  # not rounded onto its 0.0005 threshold
    assert "perplexity = 31,234,567.5</div>" in html  # "3.12346e+07" (h165)
    assert "\x00" not in html and "\x07" not in html and "text \u2400 with a nul\u2407 and a tab\tthere" in html
    # a huge text says it is cut (only a "…" did) and right-to-left text gets its own direction (session 45)
    assert html.count("data-truncated>") == 1 and "first 600 of 4,200,000 characters" in html
    assert html.count('<div class="snippet" dir="auto">') == len(rows)
    # each trigger beside the run's threshold it is beyond (the value alone said nothing of the line: h188)
    marks = {"gopher_quality": {"gopher_word_count": [{"param": "min_words", "value": 50},
                                                      {"param": "max_words", "value": 100000}]},
             "quality": {"quality_score": [{"param": "threshold", "value": 0.0005}]}}
    html = _samples(stats, pa.Table.from_pylist(rows), 8, {"gopher_quality": "gopher_quality", "quality": "quality"}, marks)
    assert "<div class='beyond mono'>above max_words = 100,000</div>" in html and "below min_words" not in html
    assert "<div class='beyond mono'>below threshold = 0.0005</div>" in html  # quality's threshold is a minimum
    assert html.count("class='beyond") == 2  # none for readers and for a trigger without a line
    # the removal's evidence beside its metric, or alone (a banned word has no metric): the repeated line may
    # sit past the 500 characters shown, and a URL did not say which word matched (h191)
    evidence = re.findall(r"<div class='evidence mono'[^>]*>([^<]*)</div>", html)
    assert evidence == ["6× &quot;Share &lt;this&gt; post&quot;", "porn"], evidence
    assert html.index("metric = 0.5</div>") < html.index("6× &quot;Share")  # under the metric


def test_small_scores_get_their_own_bins():
    h = Histogram.for_column("quality_score")
    values = [0.0004, 0.004, 0.009, 0.011, 0.014, 0.019, 0.5]
    h.add(pa.array(values), "kept")
    bins = [i for i, n in enumerate(h.counts["kept"]) for _ in range(n)]
    assert len(set(bins)) == len(values)  # no two of them share a bin
    assert 0.01 in h.edges and h.edges[-1] == 1.0
    svg = histogram_svg(h.to_dict(), [{"param": "threshold", "value": 0.01}], "quality · quality_score")
    assert 'data-value="0.01"' in svg and ">0.01<" in svg  # the threshold is drawn and the axis labelled
    assert ">documents</text>" in svg  # and the y axis names its unit (h188)
    # big values: "max_chars = 1e+08" beside ticks of "100M", and "2.5e+07" on a linear axis (h165)
    big = Histogram.for_column("chars", edges=[0, 2.5e7, 5e7, 7.5e7, 1e8, 1.25e8])
    big.add(pa.array([1e6, 3e7, 9e7]), "kept")
    svg = histogram_svg(big.to_dict(), [{"param": "max_chars", "value": 1e8}], "x")
    assert ">max_chars = 100,000,000<" in svg and ">25M<" in svg and ">100M<" in svg and "e+0" not in svg, svg
    # a log axis: "0" and "1" are one bin apart and were both written, reading "01" (h188)
    cut = Histogram.for_column("substring_cut_chars")
    cut.add(pa.array([0.0] * 170 + [300.0, 4500.0]), "kept")
    svg = histogram_svg(cut.to_dict(), [], "x")
    ticks = [float(x) for x, label in re.findall(r'<text x="([\d.]+)" y="[\d.]+" font-size="11" text-anchor="middle"[^>]*>(0|1|10|100|1k)</text>', svg)]
    assert len(ticks) >= 3 and all(b - a > 12 for a, b in zip(ticks, ticks[1:])), ticks


def test_a_threshold_inside_a_log_bin_has_its_documents_on_their_sides():
    """``min_words = 50`` falls in the log bin [44.7, 50.1): the kept document at 50 was drawn left of
    the line with the removed ones (h188). Now the bin's kept documents sit on the line's passing side,
    its rule's removals on the failing side, other reasons' removals over the whole bin (h196)."""
    h = Histogram.for_column("gopher_word_count")
    h.add(pa.array([50.0, 50.0, 120.0]), "kept")
    h.add(pa.array([45.0, 47.0, 49.0, 30.0]), "removed", reason="too_few_words")
    h.add(pa.array([46.0]), "removed", reason="alpha_words")
    i = next(k for k, (a, b) in enumerate(zip(h.edges, h.edges[1:])) if a < 50 < b)
    assert h.counts["kept"][i] == 2 and h.by_reason["too_few_words"][i] == 3  # one bin, both sides of 50
    mark = {"param": "min_words", "value": 50, "lower": True, "reasons": ["too_few_words"]}
    svg = histogram_svg(h.to_dict(), [mark], "gopher_quality · gopher_word_count")
    line = float(re.search(r'<line class="threshold" data-value="50" x1="([\d.]+)"', svg).group(1))
    sides = {side: (float(x), float(w)) for x, w, side in
             re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)" height="[\d.]+" fill="[^"]+" data-side="(\w+)"', svg)}
    assert sides["pass"][0] >= line - 0.01  # the kept documents right of the line (at 50, >= 50)
    assert sides["fail"][0] + sides["fail"][1] <= line + 0.01  # too_few_words left of it
    # an upper bound: kept left, removed right; and a bin without the line is drawn whole
    upper = dict(mark, lower=False)
    svg = histogram_svg(h.to_dict(), [upper], "x")
    sides = {side: float(x) for x, side in re.findall(r'<rect x="([\d.]+)"[^>]*data-side="(\w+)"', svg)}
    assert sides["pass"] < sides["fail"]
    assert "data-side" not in histogram_svg(h.to_dict(), [dict(mark, value=1000)], "x")


def _null_histogram(column: str, n: int) -> dict:
    h = Histogram.for_column(column)
    h.add(pa.array([None] * n, type=pa.float32()), "kept")
    return h.to_dict()


def test_no_chart_is_drawn_without_data():
    assert histogram_svg(_null_histogram("toxicity_transformer_score", 5)) == ""
    full = Histogram.for_column("toxicity_score")
    full.add(pa.array([0.1, 0.9]), "kept")
    stats = {"stages": [{"stage": "toxicity"}], "histograms": {"toxicity": {
        "toxicity_score": full.to_dict(), "toxicity_transformer_score": _null_histogram("toxicity_transformer_score", 2)}}}
    html = _histograms(stats, {})
    assert html.count("<figure") == 1 and 'data-column="toxicity_score"' in html
    assert 'data-column="toxicity_transformer_score"' not in html and "toxicity_transformer_score" in html  # noted
    # values missing on the removed side: the caption said "0 removed by extract" of a stage that removed 27 (h188)
    part = Histogram.for_column("extract_pass")
    part.add(pa.array([0.0, 1.0, None]), "kept")
    part.add(pa.array([None, None], type=pa.float64()), "removed", "empty_text")
    html = _histograms({"stages": [{"stage": "extract"}], "histograms": {"extract": {"extract_pass": part.to_dict()}}}, {})
    assert "2 kept, 0 removed by extract with a value;" in html and "3 without a value (1 kept, 2 removed)" in html, html
    # the extraction path's bins are paths, not numbers: its axis read 0-4, naming none (h192)
    from refinery.stages._extract_helper import PATHS
    from refinery.stages.extract import TrafilaturaExtractor

    edges = TrafilaturaExtractor.metric_bins(None)["extract_pass"]
    passes = Histogram.for_column("extract_pass", edges=edges)
    passes.add(pa.array([PATHS["precision"]] * 5 + [PATHS["fallback"]] * 2 + [PATHS["input"]], type=pa.int8()), "kept")
    svg = histogram_svg(passes.to_dict(), [], "extract · extract_pass")
    ticks = re.findall(r'<text x="[\d.]+" y="[\d.]+" font-size="11" text-anchor="middle"[^>]*>([^<]*)</text>', svg)
    assert ticks == ["input", "first pass", "fallback", "baseline"], ticks  # "baseline" too, though empty
    assert "<title>fallback: 2 kept</title>" in svg and [PATHS[p] for p in ("input", "fallback", "baseline")] == [0, 2, 3]
    other = Histogram.for_column("extract_pass", edges=[0, 2, 4])  # binned otherwise: numbers, as any histogram
    other.add(pa.array([1, 3]), "kept")
    assert "first pass" not in histogram_svg(other.to_dict()) and ">2<" in histogram_svg(other.to_dict())
    # without the cascade the transformer column is not a metric at all
    assert "toxicity_transformer_score" not in ToxicityFilter.metric_columns(SimpleNamespace(cascade=False))
    assert "toxicity_transformer_score" in ToxicityFilter.metric_columns(SimpleNamespace(cascade=True))


COMPARE_STAGES_B = [dict(s, params={**s.get("params", {}), "min_words": 100}) if s["type"] == "gopher_quality" else s
                    for s in RUN_STAGES]


def test_compare_report_in_chromium(tmp_path, browser):  # noqa: F811
    input_dir = tmp_path / "in"
    input_dir.mkdir()
    shutil.copy(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", input_dir)
    shutil.copy(write_input(tmp_path / "full") / "hostile.jsonl", input_dir / "hostile.jsonl")
    run_a, _ = make_run(tmp_path, name="run-a", input_dir=input_dir)
    run_b, _ = make_run(tmp_path, name="run-b", stages=COMPARE_STAGES_B, input_dir=input_dir)
    out = tmp_path / "compare.html"
    result = CliRunner().invoke(_report_app(), ["report", run_a, "--compare", run_b, "--out", str(out)])
    assert result.exit_code == 0, result.output
    default = CliRunner().invoke(_report_app(), ["report", run_a, "--compare", run_b])
    assert default.exit_code == 0 and Path(run_a, "compare-run-b.html").exists(), default.output
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(out, ARTIFACTS / "compare.html")

    url = out.as_uri()
    browser.open(url)
    assert browser.problems() == []
    assert browser.requested_urls() == [url]
    assert browser.evaluate("document.scripts.length") == 0
    for side, run_dir in (("a", run_a), ("b", run_b)):  # both funnels, each equal to its run's stats
        stats = json.loads(Path(run_dir, "stats.json").read_text())
        got = browser.evaluate(FUNNEL_JS.replace("#funnel-table", f"#funnel-table-{side}"))
        for row in got:
            row["cells"] = {k: v for k, v in row["cells"].items() if k != "est_tokens_removed"}
        assert got == _expected_funnel(stats), side
        bars = browser.evaluate(f"document.querySelectorAll('.side[data-run=\"{side}\"] g.funnel-bar').length")
        assert bars == len(stats["stages"])
    # side by side: the two funnels share a row
    tops = browser.evaluate("Array.from(document.querySelectorAll('#funnel .side')).map(d => d.getBoundingClientRect().top)")
    assert len(tops) == 2 and abs(tops[0] - tops[1]) < 1
    # the config diff names the changed parameter with both values, and only what changed
    diff = browser.evaluate("Array.from(document.querySelectorAll('#config-diff tbody tr')).map(tr => [tr.dataset.stage, "
                            "tr.dataset.param, tr.querySelector('[data-side=a]').innerText, "
                            "tr.querySelector('[data-side=b]').innerText])")
    assert ["gopher_quality", "min_words", "50", "100"] in diff
    assert all(p in ("min_words", "name") or s != "gopher_quality" for s, p, _, _ in diff), diff
    # histograms side by side, each run's threshold drawn on its own chart
    marks = browser.evaluate("Array.from(document.querySelectorAll('.pair[data-column=\"gopher_word_count\"] figure'))"
                             ".map(f => Array.from(f.querySelectorAll('line.threshold')).map(l => Number(l.dataset.value)))")
    assert marks == [[50, 100000], [100, 100000]]
    assert browser.evaluate("document.querySelectorAll('.pair').length") >= 10
    assert browser.evaluate("document.querySelectorAll('#compare-table tr[data-reason=\"too_few_words\"]').length") == 1
    browser.screenshot(ARTIFACTS / "compare.png")


def test_config_diff_covers_the_dedup_and_token_passes_the_reader_and_the_run():
    """Found by adversarial testing: two runs whose MinHash bands and substring min_tokens
    differed were reported as having "the same stages and parameters", and the summary's
    configuration table showed no dedup settings at all."""
    from refinery.config import load_config
    from refinery.stats.report import config_diff, other_settings

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "refinedweb.yaml").model_dump(mode="json")
    a = {"config": config, "input": "in", "limit": None}
    changed = json.loads(json.dumps(config))
    minhash = next(d for d in changed["dedup"] if d["method"] == "minhash")
    minhash["minhash"]["bands"] = 4
    changed["reader"]["batch_size"] = 7
    b = {"config": changed, "input": "in", "limit": 100}
    differing = {(r["stage"], r["param"], r["a"], r["b"]) for r in config_diff(a, b) if r["differs"]}
    assert differing == {("minhash_dedup", "minhash.bands", str(config["dedup"][2]["minhash"]["bands"]), "4"),
                         ("reader", "batch_size", "500", "7"), ("run", "limit", "null", "100")}
    assert "executor.type" not in other_settings(a)["minhash_dedup"]
    assert set(other_settings(a)) >= {"lines_dedup", "url_dedup", "minhash_dedup", "substring_dedup", "tokens"}
    assert not [r for r in config_diff(a, a) if r["differs"]]


def test_the_summary_counts_tokens_when_the_run_made_them_and_passes_list_their_own_settings(tmp_path):
    """A newcomer's report estimated "≈ 22,586 tokens" that its tokens pass had counted (19,799),
    and the url_dedup pass listed MinHash's bands and substring's settings, which it never uses."""
    from refinery.stats.report import _counted_tokens, other_settings

    assert _counted_tokens(str(tmp_path)) is None
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "manifest.json").write_text(json.dumps({"totals": {"n_tokens": 19799},
                                                                  "tokenizer": {"id": "gpt2"}}))
    assert _counted_tokens(str(tmp_path)) == {"n_tokens": 19799, "tokenizer": "gpt2", "by_language": None}
    (tmp_path / "tokens" / "manifest.json").write_text("{damaged")
    assert _counted_tokens(str(tmp_path)) is None
    manifest = {"config": {"dedup": [
        {"method": "url", "minhash": {"seed": 1, "bands": 14}, "substring": {"min_tokens": 50}, "memory_budget": 1},
        {"method": "minhash", "minhash": {"seed": 1, "bands": 14}, "substring": {"min_tokens": 50}}]}}
    sections = other_settings(manifest)
    assert sections["url_dedup"] == {"method": "url", "minhash.seed": 1, "memory_budget": 1}
    assert sections["minhash_dedup"] == {"method": "minhash", "minhash.seed": 1, "minhash.bands": 14}


def test_the_funnel_chart_never_labels_a_removal_zero():
    """A stage that removed 1 of 4,182 documents was labelled "−0.0 pt" (found by testing the stats)."""
    from refinery.stats.svg import funnel_svg

    stages = [{"stage": "reader", "docs_in": 4182, "docs_out": 4182, "docs_removed": 0},
              {"stage": "url_dedup", "docs_in": 4182, "docs_out": 4181, "docs_removed": 1},
              {"stage": "gopher", "docs_in": 4181, "docs_out": 3000, "docs_removed": 1181}]
    svg = funnel_svg(stages)
    assert "−0.0 pt" not in svg and "&lt; −0.1 pt" in svg and "−28.2 pt" in svg


def test_a_lines_dedup_pass_chart_has_its_threshold():
    """The lines pass's histogram had no line at its max_removed_word_frac, not even in a compare
    report where that setting differed (found by testing the stats)."""
    from refinery.stats.thresholds import run_thresholds

    histograms = {"lines_dedup": {"lines_dedup_removed_frac": {}}, "boiler": {"lines_dedup_removed_frac": {}},
                  "minhash_dedup": {"x": {}}}
    manifest = {"config": {"stages": [], "dedup": [
        {"method": "lines", "lines": {"max_removed_word_frac": 0.2}},
        # the default; beside a minhash section as an older refinery dumped it (fewer keys), which
        # a config now refuses under another method: the report reads its own method's section (h170)
        {"method": "lines", "name": "boiler", "minhash": {"num_perm": 128, "bands": 14, "rows": 8, "ngram": 5, "seed": 0}},
        {"method": "minhash"}]}}
    from refinery.dedup.config import DedupConfig

    default = DedupConfig(method="lines").lines.max_removed_word_frac
    assert run_thresholds(manifest, histograms) == {
        "lines_dedup": {"lines_dedup_removed_frac": [{"param": "lines.max_removed_word_frac", "value": 0.2}]},
        "boiler": {"lines_dedup_removed_frac": [{"param": "lines.max_removed_word_frac", "value": default}]}}
    # `refinery dedup --method lines` records its settings under "dedup" (a review)
    standalone = {"kind": "dedup", "name": "lines_dedup",
                  "dedup": {"method": "lines", "config": DedupConfig(method="lines", lines={"max_removed_word_frac": 0.3})
                            .model_dump(mode="json")}}
    assert run_thresholds(standalone, {"lines_dedup": {"lines_dedup_removed_frac": {}}}) == {
        "lines_dedup": {"lines_dedup_removed_frac": [{"param": "lines.max_removed_word_frac", "value": 0.3}]}}


def test_a_language_stage_no_document_reached_is_not_called_missing(tmp_path):
    """Found by a new user's trial: a run whose prescreen (English) removed every page of a real
    Japanese WARC had a language_id stage, yet its report said "no language identification stage"."""
    from refinery.config import parse_config
    from refinery.pipeline import run_pipeline
    from refinery.stats.report import build_report

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "data/sample/warc/resiliparse_clueweb-quirk.warc.gz", src)
    config = parse_config({"stages": [{"type": "prescreen"}, {"type": "extract"}, {"type": "language_id"}]})
    out = str(tmp_path / "run")
    assert not run_pipeline(config, str(src), out, workers=1, progress=False).failed
    html = build_report(out)
    assert "no language identification stage" not in html
    assert "No document reached language_id: the stages before it removed every one" in html
    # nor is it given a removal rate: "0.0% of stage input" of no document (found by testing the stats)
    row = html.split('<tr class="stage" data-stage="language_id"')[1].split("</tr>")[0]
    assert '<td class="num" data-field="docs_in">0</td>' in row
    assert 'data-field="removed_pct_of_stage"><span title="the stage saw no document">–</span>' in row
