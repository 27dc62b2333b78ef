"""Issue 13 item 4 (every edit counted), stage counters, and the vectorized word count.

A run with line corrections and exact-substring dedup over real Common Crawl documents: the text
cut from *kept* documents shows per stage in every pass's and the run's stats.json, the funnel,
the HTML report and ``stats --compare``; kept + removed = read and the words reconcile
(in - removed - cut = out); every document carries what was cut from it."""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from _dedup_fixtures import load_cc_docs, write_inputs
from rich.console import Console

from refinery.config import parse_config
from refinery.pipeline import run_pipeline
from refinery.runner import ReaderOptions, ShardRunner, ShardTask
from refinery.stages.base import Stage, with_decision
from refinery.stages.gopher import GopherRepetition
from refinery.stages.line_corrections import LineCorrections
from refinery.stats.compare import compare_counter_rows, compare_rows, render_compare
from refinery.stats.funnel import load_run_stats, render_funnel
from refinery.stats.report import build_compare_report, build_report
from refinery.stats.wordcount import word_counts

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SPAN = " ".join(f"boiler{i}plate" for i in range(60))  # 60 tokens: every copy after the first is cut


def _regex_words(values) -> np.ndarray:
    return pc.fill_null(pc.count_substring_regex(values, r"\S+"), 0).to_numpy(zero_copy_only=False)


# -- the word count ------------------------------------------------------------------------------
def _real_texts() -> list[str]:
    texts = [d["text"] for d in load_cc_docs()]  # data/sample/cc_docs: 53 languages
    for path in sorted((SHARED / "cc_docs").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts.extend(json.loads(line)["text"] for line in f)
    for path in sorted((SHARED / "langid" / "lingua-testdata" / "sentences").glob("*.txt")):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        texts.append("".join(lines[:100]))  # 75 languages, every script: 100 sentences each
    return texts


def test_word_count_equals_arrow_regex_on_real_multilingual_text():
    texts = _real_texts()
    assert len(texts) > 700
    arr = pa.array(texts)
    assert np.array_equal(word_counts(arr), _regex_words(arr))
    for piece in (arr.slice(1, 50), arr.slice(len(arr) - 3), pa.chunked_array([arr.slice(0, 5), arr.slice(5, 9)])):
        assert np.array_equal(word_counts(piece), _regex_words(piece))
    large = arr.slice(0, 200).cast(pa.large_string())
    assert np.array_equal(word_counts(large), _regex_words(large))


def test_word_count_edge_cases_match_the_regex():
    # RE2's \s is ASCII: NBSP, U+3000, vertical tab and other Unicode spaces are word characters
    cases = [None, "", " ", "   \t\n\r\f ", "a", " a", "a ", "a b", "\xa0", "a\xa0b", "a\u3000b", "\u3000",
             "x\x0by", "\x0b", "a\u2028b", "é à  ü", "日本語 テキスト", "tab\tsep\nnew\rline\fform", None, "end "]
    arr = pa.array(cases, pa.string())
    assert word_counts(arr).tolist() == _regex_words(arr).tolist()
    assert word_counts(arr).tolist()[:4] == [0, 0, 0, 0]
    for start in range(len(cases)):  # every slice offset, so string starts are found from offsets
        piece = arr.slice(start, 5)
        assert word_counts(piece).tolist() == _regex_words(piece).tolist()
    assert word_counts(pa.array([], pa.string())).tolist() == []
    assert word_counts(pa.nulls(3)).tolist() == [0, 0, 0]


# -- a run with edits ----------------------------------------------------------------------------
def _inputs(tmp: Path) -> tuple[Path, dict[str, str]]:
    docs = [d for d in load_cc_docs() if 300 <= len(d["text"].split()) <= 1500][:8]
    shards: dict[str, list[dict]] = {"a": [], "b": [], "empty": []}
    for k, d in enumerate(docs):
        words = d["text"].split(" ")
        mid = len(words) // 2
        # a repeated span (substring dedup cuts it from all but the first) and a debris line
        text = " ".join(words[:mid]) + f"\n{SPAN}\nShare on Facebook\n" + " ".join(words[mid:])
        shards["ab"[k % 2]].append({"id": d["id"], "text": text, "url": d["url"]})
    shards["b"].append({"id": "mostly-span", "text": SPAN + " and a few own words", "url": None})
    originals = {d["id"]: d["text"] for docs_ in shards.values() for d in docs_}
    return write_inputs(tmp / "in", shards), originals


def _run(inputs: Path, out: Path, dedup: bool):
    spec = {"name": "edits" if dedup else "lines-only", "executor": {"workers": 1}, "reader": {"batch_size": 3},
            "stages": [{"type": "line_corrections"}]}
    if dedup:
        spec["dedup"] = [{"method": "substring", "substring": {"min_tokens": 50, "min_words": 20}}]
    summary = run_pipeline(parse_config(spec), str(inputs), str(out), progress=False)
    assert not summary.failed
    return load_run_stats(str(out))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edits")
    inputs, originals = _inputs(tmp)
    return {"edits": _run(inputs, tmp / "edits", True), "lines": _run(inputs, tmp / "lines", False),
            "dir": tmp / "edits", "lines_dir": tmp / "lines", "originals": originals}


def _stage(stats: dict, name: str) -> dict:
    return next(s for s in stats["stages"] if s["stage"] == name)


def test_edits_are_counted_per_stage_and_reconcile(runs):
    stats = runs["edits"]
    assert stats["docs_read"] == stats["docs_kept"] + stats["docs_removed"] == 9
    lines, cut = _stage(stats, "line_corrections"), _stage(stats, "substring_dedup")
    # the debris line ("Share on Facebook", 3 words) went from all 8 long documents
    assert lines["docs_edited"] == 8 and lines["words_cut"] >= 8 * 3 and lines["docs_removed"] == 0
    # the span (60 words) was cut from the 7 kept documents with a later copy; one document removed
    assert cut["docs_edited"] == 7 and cut["words_cut"] == 7 * 60 and cut["docs_removed"] == 1
    assert cut["chars_cut"] >= 7 * len(SPAN)
    for s in stats["stages"]:
        assert s["docs_out"] + s["docs_removed"] == s["docs_in"]
        # words and characters reconcile: what came in = removed with documents + cut + kept
        assert s["words_in"] == sum(s["removed_words"].values()) + s["words_cut"] + s["words_out"]
        assert s["chars_in"] == sum(s["removed_chars"].values()) + s["chars_cut"] + s["chars_out"]
    for before, after in zip(stats["stages"], stats["stages"][1:]):
        assert after["words_in"] == before["words_out"]  # the words kept are not overstated
    # the per-pass stats.json say the same as the run's
    for name, stage in (("filter", lines), ("substring_dedup", cut)):
        pass_stats = json.loads((runs["dir"] / name / "stats.json").read_text())
        assert {k: _stage(pass_stats, stage["stage"])[k] for k in ("docs_edited", "words_cut", "chars_cut")} == \
            {k: stage[k] for k in ("docs_edited", "words_cut", "chars_cut")}


def test_documents_carry_what_was_cut_from_them(runs):
    kept = ds.dataset(str(runs["dir"] / "kept")).to_table()
    originals = runs["originals"]
    assert kept.num_rows == 8
    texts = kept.column("text")
    regex = _regex_words(texts)
    for i, row in enumerate(kept.select(["id", "text", "chars_cut", "words_cut"]).to_pylist()):
        original = originals[row["id"]]
        assert row["chars_cut"] == len(original) - len(row["text"]) > 0
        assert row["words_cut"] == int(_regex_words(pa.array([original]))[0]) - int(regex[i])
    assert sum(kept.column("words_cut").to_pylist()) == sum(_stage(runs["edits"], s)["words_cut"]
                                                            for s in ("line_corrections", "substring_dedup"))
    # removed documents carry the cuts made before their removal; every shard has the columns,
    # the empty input shard's too, with one type
    removed = ds.dataset(str(runs["dir"] / "substring_dedup" / "removed")).to_table()
    assert removed.column("id").to_pylist() == ["mostly-span"] and removed.column("chars_cut").to_pylist() == [0]
    for directory in (runs["dir"] / "kept", runs["dir"] / "filter" / "kept", runs["dir"] / "filter" / "removed"):
        for f in sorted(directory.glob("*.parquet")):
            schema = ds.dataset(str(f)).schema
            assert schema.field("chars_cut").type == schema.field("words_cut").type == pa.int64(), f


def test_funnel_report_and_compare_show_the_cuts_and_counters(runs, tmp_path):
    stats = runs["edits"]
    lines, cut = _stage(stats, "line_corrections"), _stage(stats, "substring_dedup")
    console = Console(width=160, file=io.StringIO(), markup=False, highlight=False, color_system=None)
    console.print(render_funnel(stats))
    text = console.file.getvalue()
    assert "words cut" in text and "edited" in text and "stage counters" in text
    row = next(ln for ln in text.splitlines() if ln.strip().startswith("substring_dedup"))
    assert row.split()[-2:] == ["7", f"{cut['words_cut']:,}"]
    assert re.search(rf"line_corrections\s+lines_dropped\s+{lines['counters']['lines_dropped']:,}", text)
    assert re.search(rf"substring_dedup\s+spans_cut\s+7\b", text)

    html = build_report(str(runs["dir"]))
    assert re.search(r'data-stage="substring_dedup" data-reason="">.*?data-field="words_cut">420<', html)
    assert 'data-stage="line_corrections" data-counter="lines_dropped"' in html
    # "words kept" is what the kept documents hold (it used to be words in minus words removed)
    kept_words = int(_regex_words(ds.dataset(str(runs["dir"] / "kept")).to_table().column("text")).sum())
    card = re.search(r'data-card="words kept">.*?class="v">([\d,]+)<.*?class="d">([^<]*)<', html)
    assert card.group(1) == f"{kept_words:,}"
    assert f"{lines['words_cut'] + cut['words_cut']:,} words cut by edits (net; some from documents removed later)" in card.group(2)

    # compare: run B = line corrections only (no substring dedup)
    rows = {(r["stage"], r["reason"]): r for r in compare_rows(runs["lines"], stats)}
    assert rows[("substring_dedup", "")]["words_cut_a"] is None
    assert rows[("substring_dedup", "")]["words_cut_b"] == 420
    assert rows[("line_corrections", "")]["words_cut_delta"] == 0
    counters = {(r["stage"], r["counter"]): r for r in compare_counter_rows(runs["lines"], stats)}
    assert counters[("substring_dedup", "spans_cut")] == {"stage": "substring_dedup", "counter": "spans_cut",
                                                          "count_a": None, "count_b": 7, "delta": None}
    console = Console(width=220, file=io.StringIO(), markup=False, highlight=False, color_system=None)
    console.print(render_compare(runs["lines"], stats))
    text = console.file.getvalue()
    assert "words cut (net) B" in text and "420" in text and "spans_cut" in text
    html = build_compare_report(str(runs["lines_dir"]), str(runs["dir"]))
    assert 'data-field="words_cut_b">420<' in html and 'id="compare-counters"' in html


# -- counters -----------------------------------------------------------------------------------
def test_stage_counters_are_taken_per_batch_and_summed_over_batches(tmp_path):
    debris = "Share on Facebook\n12 comments\n"
    prose = " ".join(load_cc_docs()[0]["text"].split()[:200])
    texts = [prose + "\n" + debris, prose, debris + "Short text"]  # kept (2 lines dropped), kept, removed
    stage = LineCorrections()
    out = stage(pa.RecordBatch.from_pydict({"text": texts}))
    assert out.column("_reason").to_pylist() == [None, None, "too_many_lines_corrected"]
    assert stage.take_counters() == {"lines_dropped": 2}  # only in documents the stage kept
    assert stage.take_counters() == {}  # taken: reset

    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "text": texts[i % 3]}) + "\n" for i in range(9)))
    runner = ShardRunner([LineCorrections()], ReaderOptions(batch_size=2))  # 5 batches
    stats = runner.run(ShardTask(str(path), str(tmp_path / "out"), "docs")).stats
    lc = _stage(stats, "line_corrections")
    assert lc["counters"] == {"lines_dropped": 6} and lc["docs_edited"] == 3


def test_an_input_column_named_like_an_edit_column_must_hold_integers(tmp_path):
    import pyarrow.parquet as pq

    from refinery.schema import InputSchemaError

    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["one two", "three"], "chars_cut": pa.array([5, None], pa.int32())}), good)
    pq.write_table(pa.table({"id": ["a"], "text": ["one two"], "words_cut": ["lots"]}), bad)
    # a previous pass's cuts are carried on (as int64, missing values as 0)
    ShardRunner([]).run(ShardTask(str(good), str(tmp_path / "out"), "good"))
    kept = ds.dataset(str(tmp_path / "out" / "kept")).to_table()
    assert kept.column("chars_cut").to_pylist() == [5, 0] and kept.schema.field("chars_cut").type == pa.int64()
    assert kept.column("words_cut").to_pylist() == [0, 0]
    with pytest.raises(InputSchemaError, match=r"bad\.parquet: column 'words_cut' is string") as info:
        ShardRunner([]).run(ShardTask(str(bad), str(tmp_path / "out"), "bad"))
    assert "\n" not in str(info.value)


# -- line marks (schema.QUOTE_LINES) ------------------------------------------------------------
class _Marks(Stage):
    """Stands in for extract (which needs pages): marks lines 0 and 1 of every text as quoted."""

    kind = "marks"

    def process(self, batch):
        return with_decision(batch, [None] * batch.num_rows,
                             extra={"quote_lines": pa.array([[0, 1]] * batch.num_rows, pa.list_(pa.int32()))})


class _Probe(Stage):
    """Records the line marks it is given."""

    kind = "probe"

    def __init__(self):
        super().__init__()
        self.seen: list = []

    def process(self, batch):
        if "quote_lines" in batch.schema.names:
            self.seen += batch.column("quote_lines").to_pylist()
        return with_decision(batch, [None] * batch.num_rows)


def test_quote_marks_follow_the_text_and_never_leave_the_pass(tmp_path):
    """Line marks name lines of one text: a stage that changes a document's text (line
    corrections cut a line) nulls its marks, so none points at another line; no written shard
    carries them, empty ones included (the next pass cuts text too); an input column of that name
    is the input's (``input_quote_lines``), never marks."""
    import pyarrow.parquet as pq

    prose = " ".join(load_cc_docs()[0]["text"].split()[:200])
    texts = [prose + "\nShare on Facebook\n" + prose, prose + "\n" + prose]  # the first loses a line
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": texts,
                             "quote_lines": pa.array([[1], [1]], pa.list_(pa.int32()))}), path)
    forged = _Probe()
    ShardRunner([forged]).run(ShardTask(str(path), str(tmp_path / "forged"), "docs"))
    assert forged.seen == []  # the input's column is not marks
    assert "input_quote_lines" in ds.dataset(str(tmp_path / "forged" / "kept")).schema.names
    probe = _Probe()
    stages = [_Marks(), LineCorrections(), probe, GopherRepetition(dup_line_frac=0.01)]  # removes both
    ShardRunner(stages).run(ShardTask(str(path), str(tmp_path / "out"), "docs"))
    assert probe.seen == [None, [0, 1]]
    for part in ("kept", "removed"):
        names = ds.dataset(str(tmp_path / "out" / part)).schema.names
        assert "quote_lines" not in names and "input_quote_lines" in names
    assert ds.dataset(str(tmp_path / "out" / "removed")).count_rows() == 2
    # an extraction replacing an input text (html and text given) made its marks for its new
    # text: they stay (the runner nulled them, as for an edit: the quotes counted as repetition)
    from refinery.stages.extract import TrafilaturaExtractor

    post = prose.split(". ")
    html = ("<html><body><article><h1>Thread</h1>" + "".join(f"<p>{p}.</p>" for p in post[:6])
            + f"<blockquote><p>{post[1]}.</p></blockquote><p>Agreed, and well put.</p></article></body></html>")
    pq.write_table(pa.table({"id": ["p"], "html": [html], "text": ["an older text"]}), path)
    extracted = _Probe()
    result = ShardRunner([TrafilaturaExtractor(timeout_s=0), extracted]).run(ShardTask(str(path), str(tmp_path / "page"), "docs"))
    assert extracted.seen == [[7]]
    # and it is no edit: nothing "cut" (the page's text is longer than the given one: it went
    # negative), counted as a replacement instead (session 47, h175)
    extract = next(s for s in result.stats["stages"] if s["stage"] == "extract")
    assert [extract.get(k, 0) for k in ("docs_edited", "chars_cut", "words_cut")] == [0, 0, 0], extract
    assert extract["counters"]["input_text_replaced"] == 1
    row = pq.read_table(tmp_path / "page" / "kept").to_pylist()[0]
    assert (row["chars_cut"], row["words_cut"]) == (0, 0) and row["text"] != "an older text"
