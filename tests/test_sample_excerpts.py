"""A removed sample's card shows the text around what decided the removal (session 49, h196): the
first places of the line a repetition rule counted, the lines the corrections cut, marked where
they are in the text, instead of the first 500 characters, which often hold neither."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from _report_fixtures import CC_DOCS, run_config
from refinery.pipeline import run_pipeline
from refinery.stages.gopher import GopherRepetition, repetition_spans, without_table_markup
from refinery.stats.report import build_report
from refinery.stats.samples import EXCERPT_CHARS, EXCERPT_START, excerpt, load_samples
from tests.test_extract import EVAL_TARBALL, load_eval_pages

REPEATED = "Subscribe <now> & save"  # markup in it: the card must escape what it marks


def _prose(chars: int) -> str:
    """The start of a real CC document (the bundled sample), whole lines, about ``chars`` long."""
    with gzip.open(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", "rt") as f:
        texts = [json.loads(line)["text"] for line in f]
    text = max(texts, key=len)
    return text[: text.index("\n", chars)] if "\n" in text[chars:] else text


def _inputs(directory: Path) -> Path:
    directory.mkdir(parents=True)
    prose = _prose(700)
    # the repeated line only after the first 500 characters, among distinct lines: dup_line_frac > 0.3
    repeated = prose + "\n" + "\n".join(REPEATED if i % 3 else f"Item number {i} of the list" for i in range(18))
    # lines the corrections cut, at the end (where RefinedWeb's boilerplate sits)
    cut = prose + "\nShare on Facebook\nShare on Twitter\nContinue reading\nAdvertisements\nRelated posts"
    docs = [{"id": "repeated", "text": repeated, "url": "https://example.org/a"},
            {"id": "cut", "text": cut, "url": "https://example.org/b"}]
    (directory / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return directory


def test_a_removed_samples_card_shows_the_text_around_its_evidence(tmp_path):
    run_dir = str(tmp_path / "run")  # one worker: inline, no pool to start
    run_pipeline(run_config("excerpts", [{"type": "gopher_repetition"}, {"type": "line_corrections"}]),
                 str(_inputs(tmp_path / "input")), run_dir, workers=1, progress=False)
    samples = {r["id"]: r for r in load_samples(run_dir).to_pylist()}
    assert samples["repeated"]["reason"] == "dup_line_frac"
    assert samples["cut"]["reason"] == "too_many_lines_corrected"
    html = build_report(run_dir)
    texts = {d["id"]: d["text"] for d in map(json.loads, (tmp_path / "input" / "docs.jsonl").read_text().splitlines())}
    for doc_id, marked in (("repeated", [REPEATED] * 12),
                           ("cut", ["Share on Facebook", "Share on Twitter", "Continue reading", "Advertisements",
                                    "Related posts"])):
        s = samples[doc_id]
        assert marked[0] not in s["snippet"]  # the first 500 characters: what the card showed before
        data = json.loads(s["excerpt"])
        text = texts[doc_id]
        assert data["chars"] == len(text) and data["spans"] == len(marked)
        shown = []
        for segment in data["segments"]:  # the real text, where it is, the marks on what decided
            assert text[segment["at"]:segment["at"] + len(segment["text"])] == segment["text"]
            shown += [segment["text"][a:b] for a, b in segment["marks"]]
        assert data["segments"][0]["at"] == 0 and shown == marked[:data["shown"]] and data["shown"] >= 1
        assert sum(len(seg["text"]) for seg in data["segments"]) <= EXCERPT_CHARS + EXCERPT_START
        assert sum(len(seg["text"]) for seg in data["segments"]) < len(text)  # the text's middle left out, said
    assert html.count(f"<mark>{REPEATED.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}</mark>") \
        == json.loads(samples["repeated"]["excerpt"])["shown"]
    assert "<mark>Share on Facebook</mark>" in html and REPEATED not in html  # escaped, never raw
    assert "characters …]" in html and "places marked" in html


def test_the_places_of_a_repeated_item_and_the_excerpt_around_them():
    text = "videodisc\nA videodisc here\n| videodisc |\n  videodisc  \nShare  this\nShare this post\n"
    # a repeated line: whole lines only (a table row's markup and the line's blanks around it)
    assert [text[a:b] for a, b in repetition_spans(text, "videodisc", whole_lines=True)] == ["videodisc"] * 3
    assert len(repetition_spans(text, "videodisc")) == 4  # an n-gram: inside lines too
    assert [text[a:b] for a, b in repetition_spans(text, "Share this", whole_lines=True)] == ["Share  this"]
    g = GopherRepetition()
    doc = "Intro.\n" + "prose " * 200 + "\n" + "\n".join(["Share this post", "one", "Share this post", "two",
                                                           "Share this post", "three", "Share this post"])
    assert g._decide(doc)[0] == "dup_line_frac"
    spans = g.evidence_spans(doc, "dup_line_frac", lambda column: None)
    assert [doc[a:b] for a, b in spans] == ["Share this post"] * 4
    assert g.evidence_spans(doc, "top_2_gram", lambda column: None) == []  # not the reason it decided
    assert g.take_counters() == {}  # reading a sample again counts nothing

    # far apart, many places: the start, then windows around the first ones, within the budget
    far = "start " * 30 + "".join(("x " * 400) + "HIT " for _ in range(40))
    hits = [(i, i + 3) for i in range(len(far)) if far.startswith("HIT", i)]
    data = json.loads(excerpt(far, hits))
    assert data["spans"] == 40 and 1 <= data["shown"] < 40
    assert data["segments"][0] == {"at": 0, "text": data["segments"][0]["text"], "marks": []}
    assert sum(len(s["text"]) for s in data["segments"]) <= EXCERPT_CHARS + EXCERPT_START
    for s in data["segments"]:
        assert far[s["at"]:s["at"] + len(s["text"])] == s["text"]
        assert all(s["text"][a:b] == "HIT" for a, b in s["marks"])
    ats = [s["at"] for s in data["segments"]]
    assert ats == sorted(ats)
    # a short text whole, overlapping spans one mark; no span inside the text: no excerpt
    short = json.loads(excerpt("a a a b", [(0, 3), (2, 5)]))
    assert short["segments"] == [{"at": 0, "text": "a a a b", "marks": [[0, 5]]}]
    assert excerpt("abc", []) is None and excerpt("abc", [(5, 9)]) is None


def test_the_documents_nearest_prescreens_threshold_show_their_page_or_why_not(tmp_path):
    """Removed before extraction, they have no text in removed/ (no HTML is kept there): the report
    showed "(no text)". Now their removed sample's snippet of the page, else why and where it is."""
    import shutil

    from refinery.stats.report import NEAR_SHOWN

    inputs = tmp_path / "warc"
    inputs.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "data" / "sample" / "warc" / "resiliparse_warcfile.warc.gz", inputs)
    run_dir = str(tmp_path / "run")
    run_pipeline(run_config("prescreen", [{"type": "prescreen"}, {"type": "extract"}]), str(inputs), run_dir,
                 workers=1, progress=False)
    samples = {r["id"]: r for r in load_samples(run_dir).to_pylist() if r["stage"] == "prescreen"}

    def nearest_removed(html: str) -> list[str]:
        block = html[html.index('data-stage="prescreen" data-column="prescreen_language_score"'):]
        side = block[block.index('<div data-side="removed">'):block.index('<div data-side="kept">')]
        return side.split('<div class="near" ')[1:]

    shown = nearest_removed(build_report(run_dir))
    assert len(shown) == NEAR_SHOWN
    for doc in shown:
        doc_id = doc.split('data-id="')[1].split('"')[0]
        assert samples[doc_id]["snippet_source"] == "html"  # every removal of the shard is sampled (< 20)
        assert "no text; the start of its page&#x27;s html, tags stripped (its removed sample)" in doc
        assert "data-no-text" not in doc
    for f in Path(run_dir, "samples").glob("*.parquet"):
        f.unlink()  # no sample holds them: why there is no text, and where the page is
    for doc in nearest_removed(build_report(run_dir)):
        doc_id = doc.split('data-id="')[1].split('"')[0]
        assert ("(no text: removed by prescreen (prescreen_language) with no text (before extraction, or extraction "
                "found none); removed/ keeps no HTML and no removed sample holds this page: WARC record "
                f"&lt;urn:uuid:{doc_id}&gt; of {inputs / 'resiliparse_warcfile.warc.gz'})") in doc


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_a_removed_pages_card_marks_only_the_lines_the_corrections_cut_not_its_kept_code(tmp_path):
    """A real page with ``<pre>`` blocks (netbits' stunnel/rsync how-to, trafilatura's evaluation
    set) removed by ``line_corrections``: its card marks the lines the stage cut (``rsync`` and
    ``su``, which extraction does not mark as code), never a code line it kept whole (``make``,
    ``rehash``; marked before): the card's spans are the stage's corrections with the document's ``code_lines``, as
    its evidence is (session 50; before, the card re-ran the corrections without them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (url, html, _), = load_eval_pages(tmp_path, ("netbits.us.stunnel_rsync.html",))
    inputs = tmp_path / "input"
    inputs.mkdir()
    pq.write_table(pa.table({"id": ["netbits"], "url": [url], "html": [html]}), inputs / "pages.parquet")
    run_dir = str(tmp_path / "run")
    # any cut removes the page: its card shows the cuts
    run_pipeline(run_config("code", [{"type": "extract", "params": {"timeout_s": 0}},
                                     {"type": "line_corrections", "params": {"max_removed_word_frac": 0.0}}]),
                 str(inputs), run_dir, workers=1, progress=False)
    (sample,) = load_samples(run_dir).to_pylist()
    assert (sample["stage"], sample["reason"]) == ("line_corrections", "too_many_lines_corrected")
    # (``su``, a <br> line of a <code>, is kept as code since h217's keep_code_blocks)
    assert sample["evidence"] == "1 lines cut or edited: rsync"
    data = json.loads(sample["excerpt"])
    marked = [seg["text"][a:b] for seg in data["segments"] for a, b in seg["marks"]]
    assert data["spans"] == data["shown"] == 1 and marked == ["rsync"]
    section = build_report(run_dir).split('<section id="samples"')[1].split("</section>")[0]
    card = section.split('data-stage="line_corrections" data-reason="too_many_lines_corrected"')[1]
    assert card.count("<mark>") == 1 and "<mark>rsync</mark>" in card and "<mark>su</mark>" not in card
    assert "<mark>make</mark>" not in card and "<mark>rehash</mark>" not in card  # kept code: never marked


def _marked_words(text: str, spans: list[tuple[int, int]]) -> list[str]:
    return [word for start, end in spans for word in text[start:end].split()]


def test_a_dup_n_gram_cards_marks_are_the_words_its_fraction_counted():
    """On the real CC documents of the bundled sample that ``dup_n_gram`` removes, the card marks the
    words the fraction counted (each n-gram occurrence that repeats an earlier one), every passage
    of them: their characters over the text's are the removal's metric. Before (session 49) it
    marked the longest repeated run, first time said included, wherever its words occurred
    (session 50)."""
    g = GopherRepetition()
    with gzip.open(CC_DOCS / "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz", "rt") as f:
        texts = [json.loads(line)["text"] for line in f]
    checked = 0
    for text in texts:
        reason, metric, _ = g.check(text)
        if not (reason or "").startswith("dup_") or not reason.endswith("_gram"):
            continue
        spans = g.evidence_spans(text, reason, lambda column: None)
        marked = _marked_words(text, spans)
        read = without_table_markup(text).split()  # the words the rule reads (its denominator)
        assert sum(map(len, marked)) / sum(map(len, read)) == pytest.approx(metric, rel=1e-9), reason
        checked += 1
        if checked == 15:  # enough (the file holds 39): the test stays fast
            break
    assert checked == 15


def test_a_dup_n_gram_cards_marks_skip_what_the_rule_does_not_read():
    """The marks are the words the rule read, where they are: a table row's ``|`` stays unmarked
    inside a marked run, and a quoted repeat of the page's own text (left out with
    ``skip_quoted_repeats``) is not marked, while the passage repeated outside quotes is."""
    prose = _prose(700).replace("|", "/")
    passage = "the committee agreed to meet again next spring to review the plan"
    row = "| the committee agreed | to meet again next spring | to review the plan |"
    quote = "a reader's quote of the first sentence of the article"
    text = (f"{quote} and more\n{prose}\nIn March {passage} said the chair.\n{quote}\nLater, {passage} "
            f"once more.\n{row}\nThe end.")
    g = GopherRepetition(skip_quoted_repeats=True, dup_n_grams={5: 0.05})
    lines = text.split("\n")
    quoted = [lines.index(quote)]
    reason = g.check(text, quoted)[0]
    assert reason == "dup_5_gram"
    spans = g.evidence_spans(text, reason, lambda column: quoted if column == "quote_lines" else None)
    assert [text[a:b] for a, b in spans] == [passage, row[2:-2]]
    assert text.index(quote, 1) not in {a for a, _ in spans}  # the quoted repeat: left out, not marked


def test_a_top_n_gram_cards_marks_are_the_words_its_fraction_counted():
    """On the real CC documents of the bundled sample that ``top_n_gram`` removes (17), the card
    marks the words the fraction counted, every occurrence of the top n-gram: their characters over
    the text's are the removal's metric. A run of the n-gram overlapping itself (``ha ha ha``) is
    marked whole: matched literally, its last word was left out (session 50, h216)."""
    g = GopherRepetition()
    checked = 0
    for path in sorted(CC_DOCS.glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            texts = [json.loads(line)["text"] for line in f]
        for text in texts:
            reason, metric, _ = g.check(text)
            if (reason or "").startswith("top_"):
                spans = g.evidence_spans(text, reason, lambda column: None)
                read = without_table_markup(text).split()
                marked = _marked_words(text, spans)
                assert sum(map(len, marked)) / sum(map(len, read)) == pytest.approx(metric, rel=1e-9), reason
                checked += 1
    assert checked == 17
    text = _prose(300) + "\n" + "\n".join(f"Post {i}: ha ha ha ha ha" for i in range(12))
    reason, metric, _ = g.check(text)
    assert reason == "top_2_gram"
    spans = g.evidence_spans(text, reason, lambda column: None)
    assert [text[a:b] for a, b in spans] == ["ha ha ha ha ha"] * 12
    assert sum(map(len, _marked_words(text, spans))) / sum(map(len, text.split())) == pytest.approx(metric, rel=1e-9)


def test_a_top_n_gram_cards_marks_skip_a_quoted_repeat_the_rule_left_out():
    """With ``skip_quoted_repeats``, a quote of the page's own line is not read by the rule: the top
    n-gram's words in it are not marked (they were, matched literally), its other occurrences are."""
    quote = "Reply to the post: click here for the original thread"
    text = f"{quote}\n{_prose(300)}\n" + "\n".join(f"Item {i}: click here" for i in range(14)) + f"\n{quote}\nThe end."
    g = GopherRepetition(skip_quoted_repeats=True)
    lines = text.split("\n")
    quoted = [len(lines) - 2]
    reason = g.check(text, quoted)[0]
    assert reason == "top_2_gram"
    spans = g.evidence_spans(text, reason, lambda column: quoted if column == "quote_lines" else None)
    assert [text[a:b] for a, b in spans] == ["click here"] * 15
    assert {text.count("\n", 0, a) for a, _ in spans} == {0, *range(3, 17)}  # not line 17, the quoted repeat
