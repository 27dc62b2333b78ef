"""The lean result tree -> text conversion (refinery/stages/_lean_totext.py) against trafilatura's
``xmltotxt`` (after refinery's XPath line joining, when joining): the same text."""

from __future__ import annotations

import copy
import logging

import pytest
from lxml import etree

from test_extract import load_warc_records
from refinery.stages import _extract_helper
from refinery.stages.extract import TrafilaturaExtractor, decode_html

#: result trees in trafilatura's vocabulary, each made to take a branch of process_element
EDGE_TREES = [
    "<body><p>plain</p><p>two\n   lines of\n source</p></body>",
    "<body><p>a <hi rend='#b'>bold <hi rend='#i'>nested</hi> run</hi> after\n the hi</p>tail of p\n  </body>",
    "<body><p>first<lb/>second\nline<lb/>  </p><lb/>after lb<lb/></body>",
    "<body><head rend='h2'>\n   A heading\n  </head><p>\n  Lead <ref target='/y'>link</ref>\n  tail\n</p></body>",
    "<body><p><ref target='http://a.example/'>only a link</ref></p><p><ref>no target</ref> and <ref> </ref></p></body>",
    "<body><list><item>one</item><item>two <hi>bold</hi>\ncontinued</item><item><lb/>starts with lb</item>"
    "<item>with sub<list><item>sub one</item><item>sub\ntwo</item></list>after sub</item><item>   </item>"
    "<item/></list>list tail</body>",
    "<body><list rend='ol'><item><p>para in item</p><p>second</p></item><item><list><item>only sub</item></list>"
    "</item></list></body>",
    "<body><table><row><cell role='head'>H1</cell><cell role='head'>H|2</cell></row><row><cell>a\nb</cell>"
    "<cell><p>p in cell</p><list><item>x</item><item>y</item></list></cell><cell/></row>"
    "<row><cell>c<hi>d</hi>e</cell><cell><head>h</head>tail in cell</cell></row></table>after table</body>",
    "<body><code>def f():\n    return 1</code><quote>roses are red\nviolets are blue</quote>"
    "<pre>keep\n  this</pre><p>x <code>inline\ncode</code>\n tail</p></body>",
    "<body><p>  \n  </p><p>\t</p><p>\u00a0\n\u00a0</p><p>\u3000wide\u3000space\n\u2028sep\u2029</p>"
    "<p>ctl\x85char\x7f\r\nnext</p><p>zero\u200bwidth\u00adsoft</p></body>",
    "<body><p>&amp;nbsp; &amp;#13; &amp;#10; &amp;lt;b&amp;gt; &amp;amp; \u2424marker</p>"
    "<p>中文\n文字 and 日本\nご</p></body>",
    "<body><p/><hi/>lost tail<p></p><del>gone</del><graphic src='x.png' alt='alt'/>img tail<p>end</p></body>",
    "<body><div>div text<p>p</p>div\n tail</div><span>inline\nspan</span>span tail</body>",
    "<body>root text\n here<p>p</p></body>",
    "<body><p>a <hi>hi\n<lb/>with lb</hi>\nand <del>del <hi>in</hi>\n del</del> end</p></body>",
]


@pytest.fixture(scope="module")
def lean():
    from trafilatura import core

    assert _extract_helper._install_lean_totext()  # the trafilatura it mirrors is installed
    return core.xmltotxt.lean


def trafilaturas_text(tree, join: bool) -> str:
    from trafilatura import xml

    if join:
        _extract_helper.join_source_line_breaks(tree)
    return xml.xmltotxt(tree, False)


@pytest.mark.parametrize("source", EDGE_TREES)
def test_lean_conversion_gives_trafilaturas_text_on_edge_cases(lean, source: str) -> None:
    tree = etree.fromstring(source)
    for join in (False, True):
        assert lean(copy.deepcopy(tree), join) == trafilaturas_text(copy.deepcopy(tree), join), (source, join)


def test_line_joining_reads_a_text_split_into_nodes_as_one(lean) -> None:
    """After lxml's strip_tags one element's text can be several text nodes ("\\n  ", "Title",
    "\\n"; "Other", "\\n", "title"). The joining's XPath tested each node alone and joined none of
    them, so the source's indentation and line breaks stayed (11 of 2,077 real pages: "   Suche",
    a heading cut in two lines); it now joins the element's whole text, and the lean walk, which
    leaves such trees to it, gives the same."""
    def split_tree():  # deepcopy would merge the nodes again: each side gets its own
        tree = etree.fromstring("<body><head>\n   <span>Title</span>\n  </head><p>wrapped\n text</p>"
                                "<head><span>Other</span>\n<span>title</span></head>"
                                "<p>kept<lb/>\n  <span>  </span>\n</p></body>")
        etree.strip_tags(tree, "span")
        assert len(tree.xpath("//head[1]/text()")) == 3 and len(tree.xpath("//head[2]/text()")) == 3
        return tree

    for join in (False, True):
        assert lean(split_tree(), join) == trafilaturas_text(split_tree(), join)
    joined = trafilaturas_text(split_tree(), True)
    assert joined.splitlines() == ["Title", "wrapped text", "Other title", "kept"], joined
    assert "Other\ntitle" in trafilaturas_text(split_tree(), False)
    detached = etree.fromstring("<r><body><p>a\n b</p></body></r>")
    body = detached[0]
    detached.remove(body)
    assert lean(body, True) == "a\n b" == trafilaturas_text(etree.fromstring("<body><p>a\n b</p></body>"), False)


def test_stage_uses_the_lean_conversion_and_plain_trafilatura_its_own() -> None:
    from trafilatura import core

    stage = TrafilaturaExtractor()
    _extract_helper.make_extract({"backend": "trafilatura", "kwargs": stage._trafilatura_kwargs(),
                                  "fallback": stage._fallback_config(), "rules": stage._rules_config(),
                                  "join_lines": True, "log_level": logging.ERROR})
    assert core.xmltotxt.lean is not None and _extract_helper.LEAN_TOTEXT
    with _extract_helper.plain_trafilatura():
        assert not _extract_helper.LEAN_TOTEXT  # trafilatura's xmltotxt, after the XPath joining
    assert _extract_helper.LEAN_TOTEXT


def test_lean_conversion_gives_trafilaturas_text_on_sample_pages() -> None:
    """The stage's cascade (line joining on) with the lean conversion and with trafilatura's own,
    on the bundled sample WARC pages: the same texts, and the lean one ran."""
    from trafilatura import core

    stage = TrafilaturaExtractor()
    extract = _extract_helper.make_extract(
        {"backend": "trafilatura", "kwargs": stage._trafilatura_kwargs(), "fallback": stage._fallback_config(),
         "rules": stage._rules_config(), "join_lines": stage.join_source_lines, "log_level": logging.ERROR})
    wrapper = core.xmltotxt
    lean, calls = wrapper.lean, []

    def counted(tree, join):
        calls.append(join)
        return lean(tree, join)

    batch = load_warc_records()
    pages = []
    for i in range(0, batch.num_rows, 3):
        body = batch.column("html")[i].as_py()
        if body and b"<html" in body[:2000].lower():
            html = decode_html(body, batch.column("content_type")[i].as_py())[0]
            pages.append((html, batch.column("url")[i].as_py()))
    assert len(pages) >= 15
    wrapper.lean = counted
    try:
        for html, url in pages:
            _extract_helper.LEAN_TOTEXT = False
            want = extract(html, url)
            _extract_helper.LEAN_TOTEXT = True
            assert extract(html, url) == want, url
    finally:
        wrapper.lean, _extract_helper.LEAN_TOTEXT = lean, True
    assert len(calls) >= len(pages) and any(calls)


def test_line_joining_joins_blockquotes_and_trims_line_starts_as_the_lean_walk(lean) -> None:
    """A ``quote`` marked as a blockquote is joined like a paragraph (a <pre>'s is not), and the
    own text of a paragraph, heading or quote starts without the source's indentation, whitespace
    alone included; code, a <pre>'s quote and an inline element's text keep theirs. The lean walk
    leaves such trees to the joining and gives trafilatura's text of the joined tree."""
    mark = _extract_helper.BLOCKQUOTE
    source = (f"<body><quote {mark}=''>wrapped\n   quote</quote><quote>pre\n   kept</quote>"
              f"<quote {mark}=''>\n  <p>para in quote</p></quote><p>     indented</p>"
              "<head rend='h3'>  1  heading</head><p> <hi>hi</hi> after</p><quote>  pre indent</quote>"
              "<code>  code indent</code><p>x<hi>  inline</hi></p></body>")
    tree = etree.fromstring(source)
    for join in (False, True):
        assert lean(copy.deepcopy(tree), join) == trafilaturas_text(copy.deepcopy(tree), join), join
    assert lean(copy.deepcopy(tree), True).splitlines() == [
        "wrapped quote", "pre", "   kept", "para in quote", "indented", "1  heading", "hi after",
        "  pre indent", "  code indent", "x  inline"]
    # trafilatura's own text (no joining) keeps them
    assert "   indented" in lean(copy.deepcopy(tree), False)


def test_no_break_spaces_starting_a_line_go_and_the_fallback_loses_indentation_only(lean) -> None:
    """A paragraph's leading no-break space is an indent ("<p>&nbsp;La"), a spacer paragraph's
    only text ("<p>&nbsp;</p>") was a blank line: both go when joining, as the lean walk does; a
    no-break space inside text stays. The fallback's dedenting keeps every line break but drops
    the indentation after it, not in code or a quote."""
    source = ("<body><p>\u00a0La organización</p><p>\u00a0</p><p>10\u00a0km</p><head rend='h2'>\u00a0 Título</head>"
              "<code>\u00a0kept</code></body>")
    tree = etree.fromstring(source)
    assert lean(copy.deepcopy(tree), True) == trafilaturas_text(copy.deepcopy(tree), True)
    assert lean(copy.deepcopy(tree), True).split("\n") == ["La organización", "10\u00a0km", "Título", "\u00a0kept"]
    tree = etree.fromstring("<body><div>\n\t\tHalo\n\t\t<hi>In dieser</hi> News\n   </div><p>\n  lead\n  on</p>"
                            "<quote>pre\n   kept</quote><code>def f():\n    return 1</code></body>")
    _extract_helper.dedent_source_lines(tree)
    assert lean(tree, False).split("\n") == ["Halo", "In dieser News", "lead", "on", "pre", "   kept", "def f():",
                                             "    return 1"]


def test_a_run_of_spaces_with_a_no_break_space_is_one_space_outside_code(lean) -> None:
    """A run of spaces with a no-break space in it is layout, a wide gap in a browser ("als die
    \\u00a0Prinzessin", "3. Platz \\u00a0\\u00a0AaS"): one space, when joining (found by the lean
    walk as by the joining: the same text) and when dedenting the fallback's text; a lone no-break
    space stays ("trop peu\\u00a0?", "1\\u00a0550"), and code or a ``<pre>``'s quote keep theirs. The
    dedenting treats a blockquote (marked) as a paragraph: its indentation goes too."""
    source = ("<body><p>als die \u00a0Prinzessin, 3. Platz \u00a0\u00a0AaS</p><p>trop peu\u00a0? 1\u00a0550</p>"
              "<p>gilt\u00a0\n   weiterhin <hi>fett</hi>\u00a0 dann</p><list><item>a \u00a0b</item></list>"
              "<table><row><cell>c\u00a0\u00a0d</cell></row></table>"
              "<code>x = 1 \u00a0# kept</code><quote>pre \u00a0 kept</quote></body>")
    tree = etree.fromstring(source)
    assert lean(copy.deepcopy(tree), True) == trafilaturas_text(copy.deepcopy(tree), True)
    assert lean(tree, True).split("\n") == ["als die Prinzessin, 3. Platz AaS", "trop peu\u00a0? 1\u00a0550",
                                            "gilt weiterhin fett dann", "- a b", "| c d | ",
                                            "x = 1 \u00a0# kept", "pre \u00a0 kept"]
    tree = etree.fromstring(f"<body><quote {_extract_helper.BLOCKQUOTE}=''>\n\t\t\tDamon said:\n\t\t\tWir \u00a0werden"
                            "</quote><quote>\n  pre \u00a0kept</quote><p>x\u00a0 y\n\tz\u00a0</p></body>")
    _extract_helper.dedent_source_lines(tree)
    assert lean(tree, False).split("\n") == ["Damon said:", "Wir werden", "  pre \u00a0kept", "x y", "z\u00a0"]


def test_a_run_of_spaces_is_found_in_linear_time() -> None:
    """(h122) SPACE_RUN's lookahead was tried at every space of a run: 50,000 spaces before an
    "x\\u00a0" took ~4 s to search (a page of 80,000 in a blockquote, 12 s to extract); a match
    now starts only where a run starts, finding the same runs (every string of up to 7 of these
    characters)."""
    import itertools
    import re
    import time

    from refinery.stages._lean_totext import SPACE_RUN, may_collapse

    hostile = " " * 50_000 + "x\u00a0y" + "\t" * 50_000 + "z\u00a0"
    started = time.perf_counter()
    assert not may_collapse(hostile) and SPACE_RUN.sub(" ", hostile) == hostile
    assert time.perf_counter() - started < 0.5
    before = re.compile("(?=[ \t\r\f]*\u00a0)[ \t\r\f\u00a0]{2,}")  # session 42's, quadratic
    for n in range(1, 8):
        for chars in itertools.product(" \t\u00a0a\n", repeat=n):
            text = "".join(chars)
            assert SPACE_RUN.sub("_", text) == before.sub("_", text), repr(text)
