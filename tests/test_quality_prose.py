"""The quality stage's ``exclude_code``: code lines left out of what the packaged model scores.

Real documents and the packaged model only: a programming page of trafilatura's evaluation set,
a tutorial of the bundled sample WARCs, the bundled Common Crawl documents, the Wikipedia leads.
Figures on more data: ``benchmarks/quality_code_bias.py`` (docs/classifiers.md).
"""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from refinery.classifiers.prose import is_code_line, prose_text
from refinery.stages.base import REASON
from refinery.stages.classifiers import QualityFilter
from tests.conftest import ROOT, SAMPLE_CC_DOCS, SAMPLE_WARCS, SHARED_DATA

RECIPE_THRESHOLD = 0.0005  # configs/refinedweb.yaml
EVAL_TARBALL = SHARED_DATA / "extraction" / "trafilatura_eval_e90b0ef.tar.gz"


def _scores(texts: list[str], **params: object) -> np.ndarray:
    stage = QualityFilter(threshold=RECIPE_THRESHOLD, **params)
    batch = pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(texts))], "text": texts})
    return np.array(stage.process(batch).column("quality_score").to_pylist(), dtype=np.float64)


def _recipe_text(html: bytes, url: str) -> str:
    """The page's text as the recipe's quality stage reads it: extract, then line corrections and PII."""
    from refinery.eval_extract import GoldPage, _batch, extract_stage_from_config, through_stages_from_config

    config = ROOT / "configs" / "refinedweb.yaml"
    batch = extract_stage_from_config(config)(_batch([GoldPage(name=url, html=html, url=url)]))
    for stage in through_stages_from_config(config):
        batch = stage(batch)
    assert batch.column(REASON)[0].as_py() is None, "the page must reach the quality stage"
    return batch.column("text")[0].as_py()


def _sample_pip_tutorial() -> str:
    """A short guide to packaging a Python project, with its shell commands (bundled sample WARC)."""
    from refinery.io.warc import WarcReader

    with open(SAMPLE_WARCS / "warc_sample-0000.warc.gz", "rb") as f:
        for batch in WarcReader(batch_size=100).read(f, source="sample"):
            for url, html in zip(batch.column("url").to_pylist(), batch.column("html").to_pylist()):
                if url.endswith("/2020/03/25/pip.html"):
                    return _recipe_text(html, url)
    raise AssertionError("the pip tutorial is not in the sample WARC")


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason=f"{EVAL_TARBALL} is absent")
def test_a_tutorial_removed_for_its_code_is_kept_when_code_is_excluded() -> None:
    # the reading probe's finding: a short tmux how-to (4 lines of prose, a .tmux.conf snippet)
    with tarfile.open(EVAL_TARBALL) as tar:
        html = tar.extractfile("tests/eval/flowfx.de.tmux.html").read()
    text = _recipe_text(html, "https://flowfx.de/blog/copy-paste-from-tmux-to-system-clipboard/")
    assert any(is_code_line(line) for line in text.split("\n"))
    before, after = _scores([text])[0], _scores([text], exclude_code=True)[0]
    assert before < RECIPE_THRESHOLD <= after
    assert after == _scores([prose_text(text, 50)])[0]  # the stage scores exactly the prose


def test_shell_commands_are_code_and_the_sentences_around_them_are_not() -> None:
    lines = [line for line in _sample_pip_tutorial().split("\n") if line.strip()]
    # (the tutorial's Python blocks come out as code lines too since h217's keep_code_blocks)
    shell = [line for line in lines if line.startswith("python3 -m ")]
    assert len(shell) >= 3 and all(is_code_line(line) for line in shell)
    sentences = [line for line in lines if line.rstrip().endswith((".", ":"))]
    assert len(sentences) >= 10 and not any(is_code_line(line) for line in sentences)


def test_too_little_prose_scores_the_whole_text() -> None:
    text = _sample_pip_tutorial()
    assert prose_text(text, 10**6) == text
    whole = _scores([text])[0]
    assert _scores([text], exclude_code=True, min_prose_words=10**6)[0] == whole
    assert _scores([text], exclude_code=True)[0] != whole


def test_documents_without_code_score_as_before_and_the_junk_tail_stays_removed() -> None:
    texts = []
    for path in sorted(SAMPLE_CC_DOCS.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [doc["text"] for doc in map(json.loads, f) if doc.get("text", "").strip()]
    before, after = _scores(texts), _scores(texts, exclude_code=True)
    has_code = np.array([any(is_code_line(line) for line in t[:20_000].split("\n")) for t in texts])
    assert 0 < has_code.sum() < len(texts)
    assert np.array_equal(before[~has_code], after[~has_code])
    # the CC sample's removed tail is search pages, tag archives, link lists: none is code
    removed_before = before < RECIPE_THRESHOLD
    assert removed_before.sum() > 0 and np.all(after[removed_before & ~has_code] < RECIPE_THRESHOLD)


@pytest.mark.skipif(not (SHARED_DATA / "quality").is_dir(), reason=f"{SHARED_DATA} is absent")
def test_no_line_of_a_wikipedia_lead_is_code() -> None:
    leads = json.loads((SHARED_DATA / "quality" / "summaries_en-us.json").read_text(encoding="utf-8"))
    lines = [line for entry in leads.values() for line in entry.get("extract", "").split("\n") if line.strip()]
    assert len(lines) > 10_000
    assert [line for line in lines if is_code_line(line)] == []


def test_min_prose_words_is_validated() -> None:
    with pytest.raises(ValueError, match="min_prose_words"):
        QualityFilter(min_prose_words=-1)


def test_the_code_line_test_is_linear_on_one_long_line() -> None:
    """A review: ``(?:let|var)\\s+\\w+.*[=;({]`` backtracked quadratically, ~1 s per 20,000-character
    line (a hex dump, or Chinese text, which ``\\w`` matches, after "var ")."""
    import time

    start = time.process_time()
    prose_text("let " + "deadbeef0123" * 1660, 50)
    prose_text("var " + "中华人民共和国是位于东亚的社会主义国家首都为北京" * 830, 50)
    assert time.process_time() - start < 0.2


def test_a_page_of_code_is_never_scored_as_empty_text() -> None:
    """``min_prose_words: 0`` left an all-code page as "", which the model scores ~1.0 (kept)."""
    from refinery.stages.classifiers import QualityFilter

    code = "\n".join(["import os;", "for (i = 0; i < n; i++) {", "  x = foo(i);", "}"] * 10)
    batch = pa.RecordBatch.from_pydict({"id": ["a"], "text": [code]})
    whole = QualityFilter(threshold=0.0005).process(batch).column("quality_score")[0].as_py()
    zero = QualityFilter(threshold=0.0005, exclude_code=True, min_prose_words=0).process(batch).column("quality_score")[0].as_py()
    assert zero == whole < 0.5


@pytest.mark.parametrize("line", [
    "Of loneliness;", "... and miles to go before I sleep.", "$ 100 million was raised in the round.",
    "pursuant to 42 U.S.C. § 1983;", "(ii) 17 U.S.C. § 107;", "这是一个句子;", "Er sagte: „Hallo“;",
    "« Bonjour », dit-il ;", "Ημερομηνία: 12/03/2020;",
])
def test_phrases_closed_by_a_semicolon_are_prose(line) -> None:
    """A review: poems, statutes and non-English lines ending in ";" were code lines."""
    assert not is_code_line(line)
    assert is_code_line("x = foo(i);") and is_code_line("break;")  # real code still is
