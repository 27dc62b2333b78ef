"""Code lines survive line corrections: ``extract`` marks the lines that are a ``<pre>``'s or
``<code>``'s text (``code_lines``), ``line_corrections`` keeps them whole (``keep_code_lines``;
session 49, h204: RefinedWeb's one-word and numeric rules dropped ``rsync``, ``bs4``, ``AllCops:``
and ``end`` from real technical pages)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from refinery.config import load_config
from refinery.stages.extract import TrafilaturaExtractor
from refinery.stages.line_corrections import LineCorrections
from tests.conftest import ROOT
from tests.test_extract import EVAL_TARBALL, load_eval_pages, make_batch, page

CODE_LINES, QUOTE_LINES = "code_lines", "quote_lines"  # refinery.schema's (named here: main's code lacks one)

INTRO = "First install the packages the scraper needs, listed in a requirements file like this one:"
OUTRO = "That is all there is to it, and now the server should answer requests on its port."


def _recipe_stage(kind: str):  # noqa: ANN202 - a stage
    config = load_config(ROOT / "configs" / "refinedweb.yaml")
    return next(s for s in config.stages if s.type == kind).build()


def test_code_lines_are_marked_exactly() -> None:
    """A ``<pre>`` (looking like code or not) and a ``<code>`` alone on its line are marked, line by
    line, a URL ending a code line cut as from any line; inline code in a sentence is not (the
    line is the sentence's), nor a ``<q>``; the blockquote's marks stay beside them. A URL in
    inline code, cut with the space before it, keeps the page's marks (github.com/golemfactory's
    "e.g. <code>http://...</code>" lost them all in the first version)."""
    body = (f"<h1>Setup</h1><p>{INTRO}</p><pre><code>requests\nbs4\nflask==2.0  # see https://x.org/a\n</code></pre>"
            "<p>Then run <code>make</code> in the folder and wait until the build is done, then type:</p>"
            f"<p><code>rsync</code></p><pre>rehash\nsu</pre><p>{OUTRO}</p><blockquote>It works for me.</blockquote>"
            "<p>He said <q>yes</q> and left the room to get a coffee from the machine.</p>"
            "<p>The server answers at an address such as <code>http://127.0.0.1:7465</code></p>")
    out = TrafilaturaExtractor(timeout_s=0)(make_batch([page(body).encode()]))
    lines = out.column("text")[0].as_py().split("\n")
    assert lines == ["Setup", INTRO, "requests", "bs4", "flask==2.0  # see",
                     "Then run make in the folder and wait until the build is done, then type:", "rsync", "rehash",
                     "su", OUTRO, "It works for me.", "He said yes", "and left the room to get a coffee from the machine.",
                     "The server answers at an address such as"]
    assert out.column(CODE_LINES).to_pylist() == [[2, 3, 4, 6, 7, 8]]
    assert out.column(QUOTE_LINES).to_pylist() == [[10]]
    assert out.schema.field(CODE_LINES).type == pa.list_(pa.int32())
    # no marks without trafilatura's joined lines
    plain = TrafilaturaExtractor(timeout_s=0, join_source_lines=False)(make_batch([page(body).encode()]))
    assert plain.column(CODE_LINES).to_pylist() == [None]


def test_line_corrections_keep_marked_code_lines_whole() -> None:
    """A marked line is kept whatever RefinedWeb's rules say of it (one word, numbers, upper case, a
    boilerplate pattern); the same line unmarked goes. ``keep_code_lines: false`` is RefinedWeb's
    behaviour: every line judged alike."""
    lines = [INTRO, "requests", "bs4", "SELECT * FROM USERS", "42", "login: true", "end", OUTRO]
    text = "\n".join(lines)
    batch = pa.RecordBatch.from_pydict({"id": ["a", "b"], "text": [text, text],
                                        CODE_LINES: pa.array([[1, 2, 3, 4, 5, 6], None], pa.list_(pa.int32()))})
    out = LineCorrections(max_removed_word_frac=1.0)(batch)
    assert out.column("text").to_pylist() == [text, f"{INTRO}\n{OUTRO}"]
    refinedweb = LineCorrections(max_removed_word_frac=1.0, keep_code_lines=False)(batch)
    assert refinedweb.column("text").to_pylist() == [f"{INTRO}\n{OUTRO}"] * 2
    assert LineCorrections(max_removed_word_frac=1.0).correct(text, {1})[0] == f"{INTRO}\nrequests\n{OUTRO}"


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_the_recipe_keeps_code_lines_of_real_pages(tmp_path) -> None:  # noqa: ANN001
    """Real technical pages of trafilatura's evaluation set through the recipe's ``extract`` and
    ``line_corrections``: a requirements file's package names, a YAML key and Ruby's ``end``, bare
    shell commands stay (main's code dropped them as one-word lines). Not netbits' ``su``: its
    ``<code>make<br>su<br>...</code>`` comes out of trafilatura with the ``<br>`` lines moved out of
    the code (after the next paragraph's text), so nothing marks them."""
    files = ("hackernoon.com.scrape.html", "schneems.com.rubocop.html", "netbits.us.stunnel_rsync.html")
    rows = load_eval_pages(tmp_path, files)
    extract = _recipe_stage("extract")
    extract.timeout_s = 0
    extracted = extract(make_batch([r[1] for r in rows], [None] * len(rows), [r[0] for r in rows]))
    out = _recipe_stage("line_corrections")(extracted)
    assert out.column("_reason").to_pylist() == [None] * 3
    texts = [text.split("\n") for text in out.column("text").to_pylist()]
    for text, code in zip(texts, (["requests", "bs4"], ["AllCops:", "Performance:", "end"], ["rehash", "make"])):
        assert set(code) <= set(line.strip() for line in text), code


def test_code_marks_come_from_extraction_only_and_never_leave_the_pass(tmp_path) -> None:  # noqa: ANN001
    """Through the runner: extraction's marks reach ``line_corrections`` (the package names stay),
    no written shard carries them, and an input ``code_lines`` column is the input's
    (``input_code_lines``), never marks: its "code" line goes like any one-word line."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from refinery.runner import ShardRunner, ShardTask

    html = page(f"<p>{INTRO}</p><pre><code>requests\nbs4</code></pre><p>{OUTRO}</p>")
    path = tmp_path / "in" / "docs.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"id": ["p"], "html": [html]}), path)
    ShardRunner([TrafilaturaExtractor(timeout_s=0), LineCorrections(max_removed_word_frac=1.0)]).run(
        ShardTask(str(path), str(tmp_path / "page"), "docs"))
    kept = ds.dataset(str(tmp_path / "page" / "kept")).to_table()
    assert kept.column("text").to_pylist() == [f"{INTRO}\nrequests\nbs4\n{OUTRO}"]
    assert CODE_LINES not in kept.column_names
    pq.write_table(pa.table({"id": ["t"], "text": [f"{INTRO}\nrequests\n{OUTRO}"],
                             CODE_LINES: pa.array([[1]], pa.list_(pa.int32()))}), path)
    ShardRunner([LineCorrections(max_removed_word_frac=1.0)]).run(ShardTask(str(path), str(tmp_path / "forged"), "docs"))
    kept = ds.dataset(str(tmp_path / "forged" / "kept")).to_table()
    assert kept.column("text").to_pylist() == [f"{INTRO}\n{OUTRO}"]
    assert kept.column("input_code_lines").to_pylist() == [[1]] and CODE_LINES not in kept.column_names
