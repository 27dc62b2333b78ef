"""The fast learned extractor (refinery/extract_fast.py) and its training recipe
(classifiers/extractor.py): real pages of the bundled sample WARCs, the packaged model, a real
fastText training run on a few pages. Quality and speed figures: benchmarks/fast_extract.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refinery.extract_fast import DEFAULT_MODEL, FastExtractor, block_features, blocks_of, teacher_labels

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "warc"
PAGE = "https://www.houstonpress.com/music/a-humble-chance-the-rapper-leads-a-spiritual-awakening-at-revention-8866723"


@pytest.fixture(scope="module")
def sample_pages():
    from classifiers.extractor import warc_pages

    return warc_pages([SAMPLE])


HAND_DOM = """<html><head><title>t</title><style>p{}</style></head><body>
<nav class="mainNav"><ul><li><a href="/">Home</a></li><li><a href="/x">About us</a></li></ul></nav>
<article class="post-content"><h1>Title here</h1>
<p>First paragraph with <a href="#">a link</a> and more words. End.</p>
<table><tr><td>a cell</td><td>b cell</td></tr></table>
<p>Line one<br>line two</p><script>var hidden = "script text";</script>
<form><select><option>Option text</option></select><button>Press</button></form></article>
<footer id="site-footer">Copyright 2020</footer></body></html>"""


def test_blocks_and_features_of_a_hand_made_dom() -> None:
    blocks = blocks_of(HAND_DOM)
    assert [b.text for b in blocks] == ["Home", "About us", "Title here",
                                        "First paragraph with a link and more words. End.",
                                        "| a cell | b cell |", "Line one", "line two", "Copyright 2020"]
    home, _, title, para, row, _, _, foot = blocks
    assert (home.tag, home.ancestors, home.ancestor_classes) == ("li", ("ul", "nav", "body"), ("main", "nav"))
    assert home.link_chars == home.chars == 4 and para.link_chars == len("a link") and para.chars == len(para.text)
    assert row.is_row and row.tag == "tr" and foot.classes == ("site", "footer")
    lines = [set(line.split()) for line in block_features(blocks)]
    assert {"t_li", "a2_nav", "at_nav", "ac_nav", "ld_8", "out_main", "pos_0", "pv_none"} <= lines[0]
    assert {"t_h1", "a1_article", "at_article", "ac_post", "ac_content", "in_main", "end_o", "title", "here"} <= lines[2]
    # 9 words (bucket 6: 8 < 9 <= 12), 2 end a sentence ("words." "End."): 0.22 -> bucket 4 of
    # (0, .05, .1, .2, .4); link share 6/48 = 0.125 -> bucket 2 of (0, .1, .2, ...)
    assert {"wc_6", "se_4", "end_p", "ld_2", "in_main", "pv_wc_2", "nx_wc_4"} <= lines[3]
    assert {"t_footer", "c_site", "c_footer", "end_d", "nx_none", "out_main"} <= lines[7]
    assert not any("script" in line or "option" in line or "press" in line for line in lines)


def test_teacher_labels_match_word_sequences_and_whole_lines_for_short_blocks() -> None:
    blocks = blocks_of(HAND_DOM)
    teacher = ("Title here\nFirst paragraph with a link and more words. End.\n| a cell | b cell | \n"
               "Line one\nline two\nWe are at home here")  # "Home" only inside a sentence
    assert teacher_labels(blocks, teacher) == [0, 0, 1, 1, 1, 1, 1, 0]
    assert teacher_labels(blocks, None) == [0] * len(blocks)


def test_packaged_model_extracts_main_text_and_drops_navigation(sample_pages) -> None:
    from selectolax.lexbor import LexborHTMLParser

    from classifiers.extractor import teacher
    from refinery.eval_extract import token_score

    meta = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert DEFAULT_MODEL.stat().st_size < 2_000_000 and meta["model_sha256"]
    page = next(p for p in sample_pages if p.url and p.url.split("://")[1] == PAGE.split("://")[1])
    fx = FastExtractor()
    text = fx.extract(page.html, page.url)
    assert text is not None
    reference = teacher()(page.html, page.url)
    assert token_score(text, reference).f1 > 0.95  # what trafilatura keeps of this article
    nav = {n.text(strip=True) for n in LexborHTMLParser(page.html).css("nav a, header a, footer a")}
    nav = {t for t in nav if len(t) >= 4}
    assert len(nav) > 20
    assert not nav & set(text.split("\n"))  # no menu entry survives as a line
    # bad input: no page, or no HTML at all, is no text (not an exception)
    assert fx.extract("") is None and fx.extract("\x00\x01 not html") in (None, "\x01 not html")


def test_missing_model_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="extractor model not found: .*nope.ftz"):
        FastExtractor(tmp_path / "nope.ftz")


def test_training_recipe_runs_on_a_few_pages_and_gives_a_model_that_loads(sample_pages, tmp_path: Path) -> None:
    from dataclasses import replace

    from classifiers.extractor import PARAMS, train

    pages = [p for p in sample_pages if len(p.html) > 5000][:20]
    out = tmp_path / "extractor.bin"
    # the recipe's code path with a tiny model (quantizing 200k buckets takes ~10 s of CPU)
    meta = train(pages, out, quantize=False, params=replace(PARAMS, bucket=5_000, dim=8, epoch=2, lr=0.1))
    assert out.is_file() and meta["data"]["train_pages"] == {"eval_half0": 0, "warc": 20}
    assert meta["data"]["labels"]["1"] > 0 and meta["data"]["labels"]["0"] > 0
    assert json.loads(out.with_suffix(".json").read_text())["model_sha256"] == meta["model_sha256"]
    fx = FastExtractor(out)
    assert fx.threshold == meta["threshold"]
    scores = fx.scores(blocks_of(pages[0].html))
    assert scores and all(0.0 <= s <= 1.0 for s in scores)


def test_deeply_nested_page_is_walked_without_recursion() -> None:
    n = 3000  # far past Python's recursion limit; the block frames kept per block are bounded
    html = "<html><body>" + "".join(f"<div>text {i} here." for i in range(n)) + "</div>" * n + "</body></html>"
    blocks = blocks_of(html)
    assert len(blocks) == n and blocks[-1].text == f"text {n - 1} here."
    assert max(len(b.frames) for b in blocks) <= 64 and len(block_features(blocks)) == n


def test_the_extract_stage_runs_it_as_backend_learned_in_its_helper_process() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_extract import load_warc_records

    from refinery.stages.extract import TrafilaturaExtractor, clean_text, decode_html

    batch = load_warc_records().slice(0, 12)
    stage = TrafilaturaExtractor(backend="learned")  # helper process, with its deadline
    out = stage(batch)
    assert set(out.column("extract_path").to_pylist()) == {"learned"}
    assert stage.take_counters()["path_learned"] == sum(t is not None for t in out.column("text").to_pylist())
    fast = FastExtractor()
    compared = 0
    bodies, urls = batch.column("html").to_pylist(), batch.column("url").to_pylist()
    for body, url, text in zip(bodies, urls, out.column("text").to_pylist()):
        direct = fast.extract(decode_html(body, None)[0], url)
        if text is not None and direct is not None:  # the stage's post-processing on the same text
            assert text == clean_text(direct)
            compared += 1
    assert compared >= 8


def test_learned_veto_benchmark_rules_on_a_hand_made_page() -> None:
    """benchmarks/learned_veto.py: output lines find their block's score (exact, inside a block,
    holding blocks, or none), the veto drops only short low-scored lines, adds only long high-scored
    blocks between the first and last block trafilatura kept."""
    import sys

    sys.path.append(str(ROOT / "benchmarks"))  # last: benchmarks/classifiers.py must not shadow the package
    from learned_veto import Page

    html = ("<html><body><p>Menu</p><p>Read more: other story</p>"
            "<p>The first paragraph of the article has enough words to be kept by anyone.</p>"
            "<p>A dropped paragraph in the middle of the article, with twenty-one words that the model likes a lot here.</p>"
            "<p>The last paragraph of the article.</p><p>Footer text never kept</p></body></html>")
    blocks = blocks_of(html)
    assert [b.text for b in blocks][:2] == ["Menu", "Read more: other story"]
    scores = [0.9, 0.01, 0.99, 0.95, 0.98, 0.97]
    text = ("Read more: other story\nThe first paragraph of the article has enough words to be kept by anyone.\n"
            "The last paragraph of the article.\nunmatched line")
    page = Page(text, blocks, scores)
    assert [(s, w) for _, s, w in page.lines] == [(0.01, 4), (0.99, 14), (0.98, 6), (None, 2)]
    assert [t for t, _, _ in page.dropped] == [blocks[3].text]  # between first and last kept; footer outside
    assert page.text((-1.0, 0), (2.0, 0)) == text
    assert page.text((0.05, 6), (2.0, 0)).split("\n") == text.split("\n")[1:]  # the teaser goes, the unmatched line stays
    assert page.text((0.05, 3), (2.0, 0)) == text  # 4 words > 3: kept
    assert page.text((-1.0, 0), (0.9, 20)).endswith(blocks[3].text)
    assert page.text((-1.0, 0), (0.96, 20)) == text  # scored under the add threshold
    assert page.text((-1.0, 0), (0.9, 22)) == text  # shorter than 22 words


def test_text_only_line_model_of_the_veto_benchmark(sample_pages, tmp_path: Path) -> None:
    """benchmarks/learned_veto.py --text-only: a line's features are its word-count bucket, last
    character and first words; the model, trained on teacher-labelled blocks of real pages, scores
    the blocks the teacher kept above those it dropped."""
    import sys

    sys.path.append(str(ROOT / "benchmarks"))  # last: benchmarks/classifiers.py must not shadow the package
    from learned_veto import TextLineModel, line_features

    from classifiers.extractor import teacher

    assert line_features("Read more: the whole Story!") == "wc_5 e_stop read more the whole story"
    assert line_features("Lesen Sie auch:") == "wc_3 e_colon lesen sie auch"
    assert line_features(" ".join(["w"] * 30) + " end") == "wc_20 e_alnum " + " ".join(["w"] * 10)
    assert line_features("") == "wc_0 e_none "

    pages = [p for p in sample_pages if len(p.html) > 5000][:12]
    traf = teacher()
    texts = [traf(p.html, p.url) or "" for p in pages]
    model = TextLineModel(pages, texts, tmp_path / "m")
    kept, dropped = [], []
    for page, text in zip(pages, texts):
        blocks = blocks_of(page.html)
        for block, label in zip(blocks, teacher_labels(blocks, text)):
            (kept if label else dropped).append(model.score(block.text))
    assert kept and dropped and all(0.0 <= s <= 1.0 for s in kept + dropped)
    assert sum(kept) / len(kept) > sum(dropped) / len(dropped) + 0.2
