"""The extract stage's four changed precision-mode rules (refinery/stages/_trafilatura_rules.py):
link teasers go, text after an empty block element stays, the article's title header stays, the
heading over a removed list of links goes; trafilatura outside the stage keeps its own rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import trafilatura

from refinery.stages.extract import TrafilaturaExtractor, decode_html
from tests.test_extract import EVAL_TARBALL, load_eval_pages


def _para(day: str) -> str:
    return (f"<p>The council met on {day} to discuss the new budget for the coming year, and members agreed "
            f"on most of the points raised by the {day} committee in a long session.</p>")


PAGE = ("<html><body><article><header><h1>Council agrees budget</h1><p>After months of talks the town has a "
        "plan for next year's spending on schools and roads.</p></header>" + _para("Monday")
        + "<p>Read more: <a href='/news/other'>Looted colonial art: Germany to set up new contact office</a></p>"
        + _para("Tuesday")
        + "<p>The mayor, quoted in <a href='/x'>the local paper</a>, said the vote was a relief for everyone "
          "involved in the long talks.</p>"
        "<div><p>Residents can comment on the plan until the end of the month at the town hall or online.</p>"
        "<div class='clear'></div>After the clearfix comes the last paragraph of the article, which says when "
        "the budget takes effect.<p>Questions from readers are answered below.</p>"
        "<span class='icon'></span>Share this article on your favourite network today"
        "<h2>More from the council</h2><ul><li><a href='/a'>Budget vote delayed again</a></li>"
        "<li><a href='/b'>Mayor re-elected for a third term</a></li><li><a href='/c'>New bus routes from May</a></li>"
        "</ul></div>"
        + "<header><h2>Partner content</h2><p>Our partner shop has deals on garden furniture this week.</p></header>"
        + _para("Wednesday") + "</article></body></html>")
TEASER = "Read more: Looted colonial art"
TAIL = "After the clearfix comes the last paragraph"
STANDFIRST = "After months of talks the town has a plan"
LINKS_HEADING = "More from the council"


def _text(**params: object) -> str:
    text, path = TrafilaturaExtractor(timeout_s=0, **params)._extract_fn()(PAGE, "https://example.org/budget")
    assert path == "precision"
    return text or ""


def test_a_link_teaser_goes_and_text_after_an_empty_block_stays() -> None:
    text = _text()
    assert TEASER not in text
    assert TAIL in text
    # a link inside a sentence is not a teaser; the tail of an empty inline element (an icon) still goes
    assert "The mayor, quoted in the local paper, said" in text
    assert "Share this article" not in text
    assert all(f"met on {day}" in text for day in ("Monday", "Tuesday", "Wednesday"))
    # the <header> holding the <h1> stays (title, standfirst); another <header> still goes
    assert text.startswith("Council agrees budget\n" + STANDFIRST)
    assert "Partner content" not in text and "garden furniture" not in text
    # the list of links goes for its link density (trafilatura), and the heading over it with it
    assert "Budget vote delayed" not in text and LINKS_HEADING not in text


def test_trafilatura_values_give_its_own_rules_in_and_outside_the_stage() -> None:
    assert TEASER in _text(link_teaser_share=0.9)  # trafilatura's share: the label keeps it
    assert TAIL not in _text(keep_block_tails=False)  # trafilatura drops the tail with the empty div
    assert STANDFIRST not in _text(keep_title_header=False)  # and every <header>
    assert LINKS_HEADING in _text(drop_link_list_headings=False)  # and leaves the heading
    _text()  # the replacements are installed in this process now ...
    plain = trafilatura.extract(PAGE, favor_precision=True, include_tables=True, fast=True) or ""
    assert TEASER in plain and TAIL not in plain and STANDFIRST not in plain and LINKS_HEADING in plain  # ... and
    # act only in the stage


@pytest.mark.parametrize("share", [0.95, 0, -0.1, 1.5])
def test_a_share_outside_trafilaturas_range_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="link_teaser_share"):
        TrafilaturaExtractor(link_teaser_share=share)


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_on_real_pages_teasers_go_and_a_table_value_comes_back(tmp_path: Path) -> None:
    """dw.com's "Read more: ..." lines (the evaluation set's "without" snippets) go while its article
    ("with" snippets) stays; happycoffee.org's "Aroma" value, the text after an empty element in a
    table cell, comes back; wochenblatt.com's title and standfirst (in its <header>) come back;
    derpapierplanet.de's "Teilnehmende Blogs:" goes with the list of links under it."""
    stage = TrafilaturaExtractor(timeout_s=0)
    fn = stage._extract_fn()
    (dw_url, dw_html, dw_item), (hc_url, hc_html, hc_item), (wb_url, wb_html, wb_item), (dp_url, dp_html, dp_item) = (
        load_eval_pages(tmp_path, ("dw.com.colonial.html", "de.happycoffee.org.sidamo.html",
                                   "wochenblatt.com-Heinen-Essen.html", "derpapierplanet.de.juni.html")))
    dp = fn(decode_html(dp_html, None)[0], dp_url)[0] or ""
    assert all(s in dp for s in dp_item["with"]) and "Teilnehmende Blogs:" not in dp  # the heading over its blogroll
    wb = fn(decode_html(wb_html, None)[0], wb_url)[0] or ""
    assert wb.startswith("Heinen-Esser offen für Existenzgründungsprämie\nDie Jugendverbände der Landwirtschaft")
    assert all(s in wb for s in wb_item["with"])
    dw = fn(decode_html(dw_html, None)[0], dw_url)[0] or ""
    assert all(s in dw for s in dw_item["with"])
    assert not any(s in dw for s in dw_item["without"][:2])  # the two "Read more:" teasers
    hc = fn(decode_html(hc_html, None)[0], hc_url)[0] or ""
    assert "| Aroma | Rote Beeren, Zitrusnoten, süßlich, kräftig-würzig |" in hc
    assert "Rote Beeren" not in (TrafilaturaExtractor(timeout_s=0, keep_block_tails=False)._extract_fn()(
        decode_html(hc_html, None)[0], hc_url)[0] or "")


def test_rules_are_not_installed_over_another_trafilatura() -> None:
    """The replacements mirror trafilatura 2.3.1's functions: over code that differs (another
    version) nothing is replaced, a warning says so, and the stage runs with trafilatura's rules."""
    import subprocess
    import sys

    code = ("import logging; logging.basicConfig(level=logging.WARNING)\n"
            "from refinery.stages import _trafilatura_rules as rules\n"
            "rules._SOURCES_SHA256['prune_html'] = '0' * 64  # as if trafilatura's prune_html had changed\n"
            "from trafilatura import htmlprocessing\n"
            "before = htmlprocessing.prune_html\n"
            "print(rules.install(), htmlprocessing.prune_html is before)\n"
            "from refinery.stages.extract import TrafilaturaExtractor\n"
            "from tests.test_trafilatura_rules import PAGE, TEASER\n"
            "print(TEASER in TrafilaturaExtractor(timeout_s=0)._extract_fn()(PAGE, None)[0])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True"]
    assert "precision rules" in done.stderr and "not applied" in done.stderr
