"""The extract stage's six changed precision-mode rules (refinery/stages/_trafilatura_rules.py):
link teasers go, text after an empty block element stays, the article's title header stays, the
heading over a removed list of links goes, "Label: <a>" lines go, a short line over content that
pruning removed goes; trafilatura outside the stage keeps its own rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trafilatura

from refinery.stages.extract import TrafilaturaExtractor, decode_html
from tests.conftest import ROOT
from tests.test_extract import EVAL_TARBALL, load_eval_pages


def _para(day: str) -> str:
    return (f"<p>The council met on {day} to discuss the new budget for the coming year, and members agreed "
            f"on most of the points raised by the {day} committee in a long session.</p>")


PAGE = ("<html><body><article><header><h1>Council agrees budget</h1><p>After months of talks the town has a "
        "plan for next year's spending on schools and roads.</p></header>" + _para("Monday")
        + "<p>Also read <a href='/news/other'>Looted colonial art: Germany to set up new contact office</a></p>"
        + _para("Tuesday")
        + "<p>More on this story: <a href='/news/lanes'>Council approves cycle lanes</a></p>"
        + "<p>A sentence that ends with <a href='/news/sentence'>a link to the minutes of the meeting</a>.</p>"
        + "<p>The mayor, quoted in <a href='/x'>the local paper</a>, said the vote was a relief for everyone "
          "involved in the long talks.</p>"
        "<div><p>Residents can comment on the plan until the end of the month at the town hall or online.</p>"
        "<div class='clear'></div>After the clearfix comes the last paragraph of the article, which says when "
        "the budget takes effect.<p>Questions from readers are answered below.</p>"
        "<span class='icon'></span>Share on Facebook"
        "<h2>More from the council</h2><ul><li><a href='/a'>Budget vote delayed again</a></li>"
        "<li><a href='/b'>Mayor re-elected for a third term</a></li><li><a href='/c'>New bus routes from May</a></li>"
        "</ul></div>"
        + "<div><p>Popular this week</p></div><div><ul>"
        + "".join(f"<li><a href='/p{i}'>Popular story number {i} from the town</a></li>" for i in range(5))
        + "</ul></div><p>Short lines over content that stays, stay</p>" + _para("Thursday")
        + "<header><h2>Partner content</h2><p>Our partner shop has deals on garden furniture this week.</p></header>"
        + _para("Wednesday") + "</article></body></html>")
TEASER = "Also read Looted colonial art"  # no ":": a teaser for its link share, not a labelled link
TAIL = "After the clearfix comes the last paragraph"
STANDFIRST = "After months of talks the town has a plan"
LINKS_HEADING = "More from the council"
LABELLED_LINK = "More on this story: Council approves cycle lanes"
ORPHAN = "Popular this week"


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
    assert "Share on Facebook" not in text
    assert all(f"met on {day}" in text for day in ("Monday", "Tuesday", "Wednesday"))
    # the <header> holding the <h1> stays (title, standfirst); another <header> still goes
    assert text.startswith("Council agrees budget\n" + STANDFIRST)
    assert "Partner content" not in text and "garden furniture" not in text
    # the list of links goes for its link density (trafilatura), and the heading over it with it
    assert "Budget vote delayed" not in text and LINKS_HEADING not in text
    # a label and one link goes, though the link is only 60% of it; a link ending a sentence stays
    assert LABELLED_LINK not in text and "Council approves" not in text
    assert "A sentence that ends with a link to the minutes of the meeting." in text
    # the line over the list of links (in a <div> of its own) goes with it; a short line over a
    # paragraph that stays, stays
    assert "Popular story number" not in text and ORPHAN not in text
    assert "Short lines over content that stays, stay\nThe council met on Thursday" in text


def test_text_after_an_empty_inline_element_stays_in_code_and_when_it_is_long() -> None:
    """Found by adversarial testing: highlight.js's empty ``<span class="hljs-params"></span>``
    took the rest of its code line with it (``function a(b();``), WordPress's ``<span
    id="more-1"></span>`` a whole paragraph, an empty ``<em></em>`` the end of a sentence."""
    para = ("<p>The bridge over the river has been closed since the spring floods, and the council has "
            "now agreed how to pay for its repair over the next two years.</p>")
    page = ("<html><body><article><h1>Bridge repairs</h1>" + para * 3
            + "<pre><code><span class='hljs-keyword'>function</span> <span class='hljs-title'>main</span>("
              "<span class='hljs-params'></span>) {\n  repair();\n}</code></pre>"
            + "<p><span id='more-12'></span>Work starts in October and the road stays open to buses throughout.</p>"
            + "<p>The mayor said<em></em> that the work would take six weeks at most, weather permitting.</p>"
            + "<p><i class='fa fa-share'></i> Share</p>" + para + "</article></body></html>")
    text, path = TrafilaturaExtractor(timeout_s=0)._extract_fn()(page, "https://example.org/bridge")
    assert path == "precision"
    assert "function main() {\n  repair();\n}" in text
    assert "Work starts in October and the road stays open" in text
    assert "The mayor said that the work would take six weeks" in text
    assert "Share" not in text  # an icon's short label still goes with it


def test_a_heading_over_a_pruned_history_and_a_short_list_stays() -> None:
    """Found by adversarial testing: Node.js's API docs put a version history (pruned by precision
    mode) and a one-item list ("Returns: <string>") under each method's heading; the short list
    was taken for the next heading, so the heading's content looked pruned and 44 headings of
    10 docs pages went."""
    para = ("<p>The bridge over the river has been closed since the spring floods, and the council has "
            "now agreed how to pay for its repair over the next two years.</p>")

    def section(name: str) -> str:
        return (f"<h3><code>os.{name}()</code><span><a class='mark' href='#os{name}'>#</a></span></h3>"
                "<div class='api_metadata'><details class='changelog'><summary>History</summary><table>"
                "<tbody><tr><th>Version</th><th>Changes</th></tr><tr><td>v2.0.0</td><td><p>This function is now "
                "cross-platform consistent and no longer returns a path with a trailing slash on any platform.</p>"
                "</td></tr><tr><td>v0.9.9</td><td><p><span>Added in: v0.9.9</span></p></td></tr></tbody></table>"
                "</details></div><ul><li>Returns: <a href='https://developer.mozilla.org/x'>&lt;string&gt;</a></li></ul>"
                f"<p>Returns the operating system's default directory for {name} as a string, and never throws.</p>")

    page = ("<html><body><article><h1>OS</h1>" + para * 2 + "".join(section(n) for n in ("tmpdir", "homedir"))
            + para + "</article></body></html>")
    text, path = TrafilaturaExtractor(timeout_s=0)._extract_fn()(page, "https://example.org/os")
    assert path == "precision" and "History" not in text
    assert "os.tmpdir()#\n- Returns: <string>\nReturns the operating system's default directory for tmpdir" in text
    assert "os.homedir()#\n- Returns: <string>" in text


def test_trafilatura_values_give_its_own_rules_in_and_outside_the_stage() -> None:
    assert TEASER in _text(link_teaser_share=0.9)  # trafilatura's share: the label keeps it
    assert TAIL not in _text(keep_block_tails=False)  # trafilatura drops the tail with the empty div
    assert STANDFIRST not in _text(keep_title_header=False)  # and every <header>
    assert LINKS_HEADING in _text(drop_link_list_headings=False)  # and leaves the heading
    assert LABELLED_LINK in _text(drop_labelled_links=False)  # the link is under 80% of the line
    assert ORPHAN in _text(drop_orphaned_headings=False)
    _text()  # the replacements are installed in this process now ...
    plain = trafilatura.extract(PAGE, favor_precision=True, include_tables=True, fast=True) or ""
    assert TEASER in plain and TAIL not in plain and STANDFIRST not in plain and LINKS_HEADING in plain  # ... and
    assert LABELLED_LINK in plain and ORPHAN in plain  # act only in the stage


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


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_on_real_pages_labelled_links_and_orphaned_headings_go(tmp_path: Path) -> None:
    """polityka.pl's five "Czytaj też: <a>...</a>" lines (labelled links) and proplanta.de's
    "Weitere Artikel zum Thema" / "Kommentierte Artikel", table cells over tables of links that
    pruning removes (orphaned headings), are the evaluation set's "without" snippets: they go, the
    articles ("with" snippets) stay, and each comes back with its rule at trafilatura's value."""
    import re

    def norm(text: str | None) -> str:
        return re.sub(r"\s+", " ", text or "")

    (pl_url, pl_html, pl_item), (pp_url, pp_html, pp_item) = load_eval_pages(
        tmp_path, ("„Królowa Elżbieta” wypływa w świat. Sygnał dla Chin i Rosji - Polityka.pl.html",
                   "proplanta.de.erloesobergrenze.html"))
    pl_page, pp_page = decode_html(pl_html, None)[0], decode_html(pp_html, None)[0]
    fn = TrafilaturaExtractor(timeout_s=0)._extract_fn()
    pl, pp = norm(fn(pl_page, pl_url)[0]), norm(fn(pp_page, pp_url)[0])
    assert all(norm(s) in pl for s in pl_item["with"]) and all(norm(s) in pp for s in pp_item["with"])
    assert "Czytaj też" not in pl
    assert "Weitere Artikel zum Thema" not in pp and "Kommentierte Artikel" not in pp
    pl_off = norm(TrafilaturaExtractor(timeout_s=0, drop_labelled_links=False)._extract_fn()(pl_page, pl_url)[0])
    assert pl_off.count("Czytaj też:") == 5
    pp_off = norm(TrafilaturaExtractor(timeout_s=0, drop_orphaned_headings=False)._extract_fn()(pp_page, pp_url)[0])
    assert "Weitere Artikel zum Thema" in pp_off and "Kommentierte Artikel" in pp_off


def test_orphan_candidates_stay_inside_the_subtree_they_are_given() -> None:
    """trafilatura prunes a subtree of the page (its article, a main div); a short line at that
    subtree's root, or content next to it outside, is not looked at (a short root once failed the
    page with a KeyError)."""
    from lxml import html as lxml_html

    from refinery.stages._trafilatura_rules import orphan_candidates

    page = lxml_html.fromstring(
        "<html><body><div id='frame'><div id='main'><p>Short root line</p></div>"
        "<div><p>" + "Outside content that is long enough to count as content. " * 4 + "</p></div></div>"
        "</body></html>")
    main = page.get_element_by_id("main")
    assert orphan_candidates(main) == []  # the root and its only line: nothing after them inside
    frame = page.get_element_by_id("frame")
    found = orphan_candidates(frame)
    # the line and its one-line container, both over the long paragraph after the container
    assert [(h.tag, h.text_content(), [c.text_content()[:7] for c in content]) for h, content in found] == [
        ("div", "Short root line", ["Outside"]), ("p", "Short root line", ["Outside"])]


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


def test_a_numbered_label_before_a_link_is_a_step_not_a_teaser() -> None:
    """Found by adversarial testing: "Step 1: <a>Download ...</a>." went for its link share (0.8)
    and "<h2>Chapter 3: <a>...</a></h2>" as a labelled link; teasers still go."""
    page = ("<html><body><article><h1>How to install Foo</h1>" + _para("Monday")
            + "<p>Step 1: <a href='/download'>Download the latest Foo installer package</a>.</p>"
            + "<p>Step 2: <a href='/keys'>Configure the repository and signing keys</a></p>" + _para("Tuesday")
            + "<h2>Chapter 3: <a href='/c3'>The return of the configuration file</a></h2>" + _para("Wednesday")
            + "<p>More on this story: <a href='/news/lanes'>Council approves cycle lanes</a></p>"
            + "<p>Also read <a href='/news/other'>Looted colonial art: Germany to set up new contact office</a></p>"
            + _para("Thursday") + "</article></body></html>")
    text, _ = TrafilaturaExtractor(timeout_s=0)._extract_fn()(page, "https://example.org/install-foo")
    assert "Step 1: Download the latest Foo installer package." in text
    assert "Step 2: Configure the repository and signing keys" in text
    assert "Chapter 3: The return of the configuration file" in text
    assert "Council approves cycle lanes" not in text and "Looted colonial art" not in text


def test_a_heading_with_a_permalink_anchor_stays(tmp_path) -> None:
    """Found by reading a run's kept documents: every question heading of an interview page
    (`<h2><b>Question?</b><a href="#q" class="heading-link"></a></h2>`) went in precision mode,
    its one link having no text (trafilatura's link-density test found no text-bearing link in a
    short element and took it for a link list)."""
    from tests.test_extract import EVAL_TARBALL, load_eval_pages

    if not EVAL_TARBALL.is_file():
        pytest.skip("shared/ evaluation data not present")
    (url, html, item), = load_eval_pages(tmp_path, ("github.blog.spiceland.html",))
    questions = ["What was your first job in tech like?", "What does leadership mean to you in your current role?"]
    on, _ = TrafilaturaExtractor(timeout_s=0)._extract_fn()(html.decode(), url)
    off, _ = TrafilaturaExtractor(timeout_s=0, keep_text_with_empty_links=False)._extract_fn()(html.decode(), url)
    assert all(q in on for q in questions) and not any(q in off for q in questions)
    assert all(s not in on for s in item["without"])
    assert sum(s in on for s in item["with"]) == len(item["with"]) > sum(s in off for s in item["with"])
    # a line of text and icon links elsewhere is not a heading: it still goes as a link list
    from refinery.stages._trafilatura_rules import _text_with_empty_links
    from lxml import html as lxml_html

    line = lxml_html.fragment_fromstring("<p>Follow us on these networks <ref target='a'></ref><ref target='b'></ref></p>")
    heading = lxml_html.fragment_fromstring("<div rend='h2'>What was your first job in tech like?<ref target='#q'></ref></div>")
    heading.tag = "head"  # trafilatura's name for a heading
    assert not _text_with_empty_links(line) and _text_with_empty_links(heading)


def test_a_forum_threads_posts_all_stay(tmp_path) -> None:
    """A reading probe found forum threads cut to their first post: trafilatura takes the first
    match of ``(.//article)[1]``, and XenForo writes each post as a sibling ``article.message``.
    The run of sibling articles is extracted as one (katzen-forum.net: 18 posts; before, 1)."""
    if not EVAL_TARBALL.is_file():
        pytest.skip("shared/ evaluation data not present")
    (url, html, item), = load_eval_pages(tmp_path, ("katzen-forum.net-Pepe.html",))
    replies = ['(Vor allem die "Bettelmänner", wenn', "schon seit 5 Uhr draußen"]
    on, off = _on_off(html.decode(), url)
    assert all(r in item["with"] for r in replies)
    assert all(r in on for r in replies) and not any(r in off for r in replies)
    assert all(s not in on for s in item["without"])
    assert len(on.split()) > 5 * len(off.split())


P = ("The committee met on Tuesday to discuss the proposed changes to the city's recycling program. "
     "Several residents spoke in favour of expanding curbside collection to apartment buildings. ")
MAIN = "<h1>City recycling plan</h1>" + "".join(f"<p>{P} Paragraph {i}.</p>" for i in range(6))


def _on_off(html: str, url: str = "https://example.com/news/recycling") -> tuple[str, str]:
    on, _ = TrafilaturaExtractor(timeout_s=0)._extract_fn()(html, url)
    off, _ = TrafilaturaExtractor(timeout_s=0, keep_repeated_posts=False)._extract_fn()(html, url)
    return on or "", off or ""


def test_a_stream_of_other_articles_is_not_a_thread(tmp_path) -> None:
    """A review: articles that each carry a headline are other pages' stories, each with its own
    URL, not a thread's posts. correctiv.org streams 12 other stories after its own (the text
    went 1,323 -> 13,082 words); the bundled WARC sample's joe.cat lists papers, one headed
    ``<article>`` each, whose own pages carry them. Neither is expanded; a page's own article
    (it holds the page's ``<h1>``) never is."""
    from refinery.eval_extract import _warc_pages

    warc = Path(__file__).resolve().parents[1] / "data" / "sample" / "warc" / "warc_sample-0000.warc.gz"
    html, _ = decode_html(_warc_pages(warc)["https://joe.cat/"], None)
    on, off = _on_off(html, "https://joe.cat/")
    assert on == off
    teaser = ("<article{0}><h3><a href='/story-{1}'>Other story number {1} about the mayor's budget fight</a></h3>"
              "<p>The council rejected the budget proposal for the third time this year, leaving the city without "
              "a plan {1}.</p></article>")
    for cls in ("", " class='card'"):
        on, _ = _on_off(f"<html><body><div class='wrap'><article{cls}>{MAIN}</article>"
                        + "".join(teaser.format(cls, i) for i in range(6)) + "</div></body></html>")
        assert "without a plan 0" not in on
    comments = "".join(f"<article><header>reader{i} · May {i}, 2023</header><p>Comment {i}: I strongly disagree with "
                       f"this article, the program was a waste of money from the start, reader {i} says.</p></article>"
                       for i in range(5))  # HTML's own markup of comments, and comments are off
    on, _ = _on_off(f"<html><body><main><article>{MAIN}</article>{comments}</main></body></html>")
    assert "Comment 1:" not in on
    box = ("<article class='col'><h3>About the author</h3><p>Jane Doe has covered city hall for the Gazette for "
           "twenty years and lives in Springfield with her two cats and a dog.</p></article>")
    on, _ = _on_off(f"<html><body><div class='row'><article class='col'>{MAIN}</article>{box}</div></body></html>")
    assert "Jane Doe" not in on
    if not EVAL_TARBALL.is_file():
        pytest.skip("shared/ evaluation data not present")
    (url, page, _), = load_eval_pages(tmp_path, ("correctiv.org.zusage.html",))
    on, off = _on_off(page.decode("utf-8", "replace"), url)
    assert "Wie so viele Geschichten über den Spendenskandal der AfD beginnt auch diese mit einem Dementi." not in on
    assert len(on.split()) < 2 * len(off.split())


def test_runs_of_sibling_divs_are_not_posts() -> None:
    """Only ``<article>`` runs count: sibling ``div``s of one class were a recipe's tab panels
    (nestle-family.com: the tab container's pruning lost the ingredient lists)."""
    from lxml import html as lxml_html

    from refinery.stages._trafilatura_rules import repeated_posts_container

    post = "<{0} class='post'><p>" + "A reply that says something about the question asked. " * 3 + "</p></{0}>"
    for tag, expanded in (("article", True), ("div", False)):
        page = lxml_html.fromstring(f"<html><body><div id='thread'>{post.format(tag) * 3}</div></body></html>")
        first = page.find(f".//{tag}[@class='post']")
        assert (repeated_posts_container(first).get("id") == "thread") is expanded
    lone = lxml_html.fromstring(f"<html><body><div id='x'>{post.format('article')}<p>x</p></div></body></html>")
    assert repeated_posts_container(lone.find(".//article")).tag == "article"


def test_an_article_body_split_around_an_ad_stays_whole(tmp_path) -> None:
    """wired.com writes an article as ``div.article__body`` blocks, each in a ``div.grid`` chunk,
    around a ``div.full-bleed-ad`` ("Advertisement"); trafilatura took the first block and the
    article stopped at the ad (647 words; whole, 1,267). Blocks that carry a headline, are not
    mostly paragraphs of sentences (a recipe's tab panels of lists) or have more than a slot
    between them (a sidebar) are not joined."""
    from lxml import html as lxml_html

    from refinery.stages._trafilatura_rules import split_body_container

    block = "<div class='body'>" + f"<p>{P}</p>" * 3 + "</div>"
    ad = "<div class='ad'>Advertisement</div>"
    for middle, extra, joined in ((ad, "", True), ("<div class='aside'>" + "Related: other stories " * 3 + "</div>", "", False),
                                  (ad, "<h2>Another story</h2>", False), (ad, "<ul><li>1 cup of flour</li></ul>" * 60, False)):
        page = lxml_html.fromstring(f"<html><body><div id='chunks'><div class='chunk'>{block}</div>{middle}"
                                    f"<div class='chunk'>{block.replace('<p>', extra + '<p>', 1)}</div></div></body></html>")
        for h in page.iter("h2"):
            h.tag, h.attrib["rend"] = "head", "h2"  # trafilatura's name for a heading
        first = page.find(".//div[@class='body']")
        assert (split_body_container(first).get("id") == "chunks") is joined
    excerpts = lxml_html.fromstring("<html><body><div id='chunks'>" + f"<div class='chunk'><h2>Hello</h2>{block}</div>" * 3
                                    + "</div></body></html>")  # a blog's front page: excerpts under short titles
    for h in excerpts.iter("h2"):
        h.tag, h.attrib["rend"] = "head", "h2"
    first = excerpts.find(".//div[@class='body']")
    assert split_body_container(first) is first
    if not EVAL_TARBALL.is_file():
        pytest.skip("shared/ evaluation data not present")
    (url, html, item), = load_eval_pages(tmp_path, ("wired.com.burn.html",))
    rest = ["The Department of Energy estimates that data centers account for about 2 percent",
            "Etzioni adds that the industry as a whole is gradually waking up to energy efficiency."]
    on, _ = TrafilaturaExtractor(timeout_s=0)._extract_fn()(html.decode(), url)
    off, _ = TrafilaturaExtractor(timeout_s=0, keep_split_bodies=False)._extract_fn()(html.decode(), url)
    assert all(r in on for r in rest) and not any(r in off for r in rest)
    assert all(s in on for s in item["with"]) and not any(s in on for s in item["without"])
    assert "Advertisement" not in on


def test_twins_under_short_headlines_are_separate_stories() -> None:
    """A review of keep_split_bodies: a headline of <= 30 characters between two twin blocks
    passed as an ad slot, so an infinite-scroll page's next story was joined to the article."""
    from lxml import html as lxml_html

    from refinery.stages._trafilatura_rules import split_body_container

    body = "<div class='article-body'>" + f"<p>{P} {P}</p>" * 3 + "</div>"
    page = lxml_html.fromstring(f"<html><body><div id='stream'><h1>Recycling plan passes</h1>{body}"
                                f"<div class='ad'>Advertisement</div><h1>Mayor resigns today</h1>{body}</div></body></html>")
    for h in page.iter("h1"):  # as trafilatura's tree holds headings
        h.tag, h.attrib["rend"] = "head", "h1"
    first = page.find(".//div[@class='article-body']")
    assert split_body_container(first) is first
    page = lxml_html.fromstring(f"<html><body><div id='stream'>{body}<div class='ad'>Advertisement</div>{body}"
                                "</div></body></html>")
    first = page.find(".//div[@class='article-body']")
    assert split_body_container(first).get("id") == "stream"  # around an ad slot only: one article


def test_boxes_inside_a_wrapper_with_a_boilerplate_class_go(tmp_path) -> None:
    """pcgamer.com's article sits in ``div.widget-content`` ("widget" is one of trafilatura's ad
    tokens): the match holds nearly all the text, so trafilatura's guard pruned none of the
    matches and the in-article newsletter box and "related" card stayed. The wrapper stays now
    and the boxes inside it go; the story's text stays whole."""
    if not EVAL_TARBALL.is_file():
        pytest.skip("shared/ evaluation data not present")
    (url, html, item), = load_eval_pages(tmp_path, ("pcgamer.com.skyrim.html",))
    on, _ = TrafilaturaExtractor(timeout_s=0)._extract_fn()(html.decode(), url)
    off, _ = TrafilaturaExtractor(timeout_s=0, prune_inside_wrappers=False)._extract_fn()(html.decode(), url)
    assert all(s in off for s in item["without"]) and not any(s in on for s in item["without"])
    assert [s for s in item["with"] if s in on] == [s for s in item["with"] if s in off]
    assert "He suggests I find some weapons and armour of my own." in on


def test_a_match_holding_the_article_is_a_wrapper_and_trafilaturas_guard_stands() -> None:
    """On a made-up page: a box inside the article's ``widget`` wrapper goes, the wrapper (and the
    article) stays; when the wrapper is the only match, nothing changes."""
    story = "".join(_para(d) for d in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"))
    box = "<div class='newsletter-box'><h2>Our newsletter</h2><p>Sign up for the best stories of the week.</p></div>"
    page = f"<html><body><article><div class='widget-content'>{story[:800]}{box}{story[800:]}</div></article></body></html>"
    on, _ = TrafilaturaExtractor(timeout_s=0)._extract_fn()(page, "https://example.org/budget")
    off, _ = TrafilaturaExtractor(timeout_s=0, prune_inside_wrappers=False)._extract_fn()(page, "https://example.org/budget")
    assert "Sign up for the best stories" in off and "Sign up for the best stories" not in on
    assert on.count("The council met on") == 6
    # the only match is the wrapper: nothing goes, with the rule or without
    bare = page.replace(box, "")
    assert (TrafilaturaExtractor(timeout_s=0)._extract_fn()(bare, "https://example.org/budget")[0]
            == TrafilaturaExtractor(timeout_s=0, prune_inside_wrappers=False)._extract_fn()(bare, "https://example.org/budget")[0])


def _post(i: int, sentences: int) -> str:
    text = " ".join(f"Reply {i}.{k} says the gasket on this engine has to be replaced before the head goes back on."
                    for k in range(sentences))
    return (f"<li class='message' id='post-{i}'><div class='messageUserInfo'><a class='username'>user{i}</a></div>"
            f"<div class='messageInfo'><div class='messageContent'><blockquote class='messageText'>{text}</blockquote>"
            f"</div><div class='messageMeta'>Posted on March {i}, 2020</div></div></li>")


def test_posts_beside_a_long_post_of_their_class_stay() -> None:
    """A forum thread (XenForo 1's markup: every post an ``li.message``, "message" being a
    boilerplate token) whose first post holds 6/7 of the text: that post is a wrapper, but the
    replies beside it are its twins, not boxes inside it; trafilatura's guard kept them and they
    stay (the rule took the four replies)."""
    thread = ("<html><body><div id='content'><div class='mainContent'><h1>Engine repair question</h1>"
              "<ol class='messageList' id='messageList'>" + _post(1, 80) + "".join(_post(i, 2) for i in range(2, 6))
              + "</ol></div></div></body></html>")
    on, _ = TrafilaturaExtractor(timeout_s=0)._extract_fn()(thread, "https://forum.example.org/threads/1")
    off, _ = TrafilaturaExtractor(timeout_s=0, prune_inside_wrappers=False)._extract_fn()(thread, "https://forum.example.org/threads/1")
    for i in range(2, 6):
        assert f"Reply {i}.1 says" in off and f"Reply {i}.1 says" in on



def test_a_match_inside_a_wrapper_holding_more_than_what_stays_is_not_a_box() -> None:
    """A slideshow article (``div.slideshow`` of ``div.slide``, "slide" being a boilerplate
    token) inside pcgamer's kind of ``widget`` wrapper: the slideshow holds most of the story, so
    it is the article, not a box; it stays, and the newsletter box beside it goes."""
    intro = "".join(_para(d) for d in ("Monday", "Tuesday", "Wednesday", "Thursday"))
    slides = "".join(f"<div class='slide'><h2>Step {i}</h2>{_para(f'step {i}')}{_para(f'stage {i}')}</div>"
                     for i in range(8))
    page = ("<html><body><article><h1>How the budget was made</h1><div class='widget-content'>" + intro
            + f"<div class='slideshow'>{slides}</div><div class='newsletter-box'><p>Sign up for the best stories "
            "of the week.</p></div></div></article></body></html>")
    on, _ = TrafilaturaExtractor(timeout_s=0)._extract_fn()(page, "https://example.org/budget")
    off, _ = TrafilaturaExtractor(timeout_s=0, prune_inside_wrappers=False)._extract_fn()(page, "https://example.org/budget")
    assert "Sign up for the best stories" in off and "Sign up for the best stories" not in on
    assert on.count("The council met on") == off.count("The council met on") == 20


#: lists of other stories at the end of real articles (docs/extraction.md, "Lists of other stories"),
#: a line of each, and a line of the article that stays
RELATED_LISTS = {
    "wired.com.burn.html": ("The display of the future might be in your contact lens",
                            "AI is clearly moving toward lighter models and greener AI"),
    "knowtechie.com.rally.html": ("Crates are leaving Rocket League and the trading community is scrambling",
                                  "Rocket Pass 4 will begin at 10:00 a.m. PDT"),
    "californiaglobe.com.amazon.html": ("San Francisco To Begin Universal Basic Income Program For Artists",
                                        "Amazon is expected to bring the case to a higher court"),
}


def test_lists_of_other_stories_go(tmp_path) -> None:
    """wired.com ("More Great WIRED Stories": headlines half linked), knowtechie.com ("Editors'
    Recommendations") and californiaglobe.com (an author box's "Latest posts") end their articles
    with a list of the site's other stories, each item a headline linked to its page: trafilatura
    tests a list's link density only under 100 characters, so they stayed. They go with
    ``drop_related_lists``; the article stays."""
    if not EVAL_TARBALL.is_file():
        pytest.skip("shared/ evaluation data not present")
    for (teaser, article), (url, html, _) in zip(RELATED_LISTS.values(), load_eval_pages(tmp_path, tuple(RELATED_LISTS))):
        on, _ = TrafilaturaExtractor(timeout_s=0, drop_related_lists=True)._extract_fn()(html.decode(), url)
        off, _ = TrafilaturaExtractor(timeout_s=0)._extract_fn()(html.decode(), url)
        assert teaser in off and teaser not in on, url
        assert article in on, url


def test_the_recipe_drops_lists_of_other_stories(tmp_path) -> None:
    """configs/refinedweb.yaml turns ``drop_related_lists`` on (session 34: on the evaluation pages
    every text it changes loses a list of the site's other stories; the one gold "with" snippet lost
    is such a headline): the recipe's extract stage drops the three lists, the articles stay."""
    if not EVAL_TARBALL.is_file():
        pytest.skip("shared/ evaluation data not present")
    from refinery.eval_extract import extract_stage_from_config

    extract = extract_stage_from_config(ROOT / "configs" / "refinedweb.yaml")._extract_fn()
    for (teaser, article), (url, html, _) in zip(RELATED_LISTS.values(), load_eval_pages(tmp_path, tuple(RELATED_LISTS))):
        text, _ = extract(html.decode(), url)
        assert teaser not in text and article in text, url


def test_a_wikis_lists_of_titles_and_references_stay(tmp_path) -> None:
    """harrypotter.fandom.com: "Appearances" (16 linked titles of the wiki's pages) and the notes
    (each a backlink into the page and a linked title) are content, not other stories: the same
    text with the rule and without."""
    if not EVAL_TARBALL.is_file():
        pytest.skip("shared/ evaluation data not present")
    (url, html, _), = load_eval_pages(tmp_path, ("harrypotter.fandom.com.spell.html",))
    on, _ = TrafilaturaExtractor(timeout_s=0, drop_related_lists=True)._extract_fn()(html.decode(), url)
    off, _ = TrafilaturaExtractor(timeout_s=0)._extract_fn()(html.decode(), url)
    assert "Harry Potter and the Goblet of Fire (First mentioned)" in on
    assert on == off


def _listed(items: list[str]) -> str:
    story = "".join(_para(d) for d in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"))
    return (f"<html><body><article><h1>Council agrees budget</h1>{story}<h2>More</h2>"
            f"<ul>{''.join(f'<li>{i}</li>' for i in items)}</ul><div class='x'>end</div></article></body></html>")


@pytest.mark.parametrize("items, goes", [
    # other stories of the site: headlines, all or half linked
    ([f"<a href='/news/{i}'>Council approves the {i} plan for the town centre after long talks</a>"
      for i in ("cycle", "parking", "market")], True),
    ([f"Council approves the {i} plan <a href='https://example.org/news/{i}'>for the town centre after talks</a>"
      for i in ("cycle", "parking", "market")], True),
    # a table of contents: links into the page
    ([f"<a href='#{i}'>How the council decided on the {i} plan for the town</a>" for i in ("cycle", "parking")], False),
    # sources: other sites
    ([f"<a href='https://other.org/{i}'>Report on the {i} plan for the town centre, 2020</a>"
      for i in ("cycle", "parking", "market")], False),
    # a listicle: names linked, descriptions not
    ([f"<a href='/shop/{i}'>The {i} bench</a>: a sturdy seat for the town centre, made of oak and built to last "
      "for decades of use" for i in ("cycle", "parking", "market")], False),
    # a "See also" of titles, a docs menu: short items
    ([f"<a href='/wiki/{i}'>Town budget of {i} (2019)</a>" for i in ("Paris", "Berlin", "Rome", "Madrid")], False),
    # an index of many titles
    ([f"Council approves plan number {i} <a href='/news/{i}'>for the town centre</a>" for i in range(12)], False),
    # key points: sentences with the site's earlier stories linked in them (content, not headlines)
    (["The council <a href='/news/vote'>approved the budget for the town centre on Tuesday</a> after a long debate.",
      "Residents <a href='/news/petition'>handed in a petition with 4,000 signatures</a> last month.",
      "The builders <a href='/news/costs'>warned that the works will cost more</a> than planned.",
      "Work <a href='/news/timeline'>is now expected to start in the spring of 2026</a>."], False),
    # sources on the site itself, cited as sentences
    ([f"<a href='https://www.example.org/reports/{i}'>Annual report on the {i} plan for the town centre</a>, "
      "Example Council, 2023." for i in ("cycle", "parking", "market")], False),
])
def test_what_a_list_of_other_stories_is(items: list[str], goes: bool) -> None:
    """Made-up lists at the end of an article: only headlines linked to the site's other pages go."""
    page = _listed(items)
    first = "for the town centre"
    on, _ = TrafilaturaExtractor(timeout_s=0, drop_related_lists=True)._extract_fn()(page, "https://www.example.org/budget")
    off, _ = TrafilaturaExtractor(timeout_s=0)._extract_fn()(page, "https://www.example.org/budget")
    assert "The council met on Friday" in on
    if goes:
        assert first in off and first not in on
    else:
        assert on == off and re.sub("<[^>]+>", "", items[-1]) in on


ARCHIVED = "https://web.archive.org/web/20131110121040/http://www.example.org/budget"


@pytest.mark.parametrize("href, goes", [
    # the archive's copies of other sites' pages: sources, not the site's other stories
    ("https://web.archive.org/web/20131110121040/http://www.other.org/news/{}", False),
    ("/web/20131110121040/https://other.org/news/{}", False),
    # the archive's copies of the site's own pages
    ("https://web.archive.org/web/20131110121040/http://www.example.org/news/{}", True),
    ("/web/20131110121040id_/http://example.org/news/{}", True),
])
def test_on_an_archived_page_the_site_is_the_archived_one(href: str, goes: bool) -> None:
    """On a Wayback Machine copy every link is archive.org's (peptalks.de's "Links zu verwandten
    externen Artikeln": welt.de, dradio.de): the page's site and a link's are the archived URLs'."""
    items = [f"<a href='{href.format(i)}'>Council approves the {i} plan for the town centre after long talks</a>"
             for i in ("cycle", "parking", "market")]
    page = _listed(items)
    on, _ = TrafilaturaExtractor(timeout_s=0, drop_related_lists=True)._extract_fn()(page, ARCHIVED)
    off, _ = TrafilaturaExtractor(timeout_s=0)._extract_fn()(page, ARCHIVED)
    assert "The council met on Friday" in on and "for the town centre" in off
    assert ("for the town centre" not in on) if goes else on == off


NESTED_HEADINGS = ["1. Skinfold Calipers", "4. Hydrostatic Weighing", "9. 3-D Body Scanners",
                   "10. Multi-Compartment Models (the Gold Standard)", "Which Method Is Best for You?"]


def _without_anchor_rule(**params):  # noqa: ANN202 - the stage's extract call
    """The stage's in-process call without ``keep_anchor_headings``, which keeps a heading whose
    anchor has no ``href`` by itself (session 50): the nested-heading rule is what is tested."""
    return TrafilaturaExtractor(timeout_s=0, keep_anchor_headings=False, **params)._extract_fn()


def _nested_heading_page(heading: str) -> str:
    return ("<html><body><div class='main'><article><h1>How to measure it</h1>"
            f"<h2><div><a name='x'></a>{heading}</div></h2>" + _para("Monday")
            + "<h2>Another section of the article</h2>" + _para("Tuesday") + "</article></div></body></html>")


def test_a_headings_text_in_a_nested_block_with_an_anchor_stays() -> None:
    """A reading probe (0.8.0, seed 34): healthline.com's section headings,
    ``<h2><div><a name="x"></a>Heading text</div></h2>``, came out empty. Trafilatura's ``div``
    link-density pass counts the div's text-bearing links, finds none and removes it as a link
    list (in every mode, plain trafilatura too); the heading was left empty."""
    heading = "Which method is best for you?"
    page = _nested_heading_page(heading)
    on, _ = _without_anchor_rule(keep_nested_heading_text=True)(page, "https://example.org/a")
    off, _ = _without_anchor_rule()(page, "https://example.org/a")
    assert heading in on.split("\n") and heading not in off
    # outside the stage trafilatura keeps its own rules
    assert heading not in trafilatura.extract(page, favor_precision=True)
    # judged as the heading is: a short one (< 20 characters) still goes, as <h2><a></a>Intro</h2> does
    short = _nested_heading_page("Short heading")
    assert "Short heading" not in _without_anchor_rule(keep_nested_heading_text=True)(
        short, "https://example.org/a")[0]


def test_healthlines_section_headings_stay(tmp_path) -> None:
    """The page the probe read: its 11 numbered section headings and the last one come back, the
    rest of its text is the same."""
    if not EVAL_TARBALL.is_file():
        pytest.skip("shared/ evaluation data not present")
    (url, html, item), = load_eval_pages(tmp_path, ("healthline.com.fat.html",))
    on, _ = _without_anchor_rule(keep_nested_heading_text=True)(html.decode(), url)
    off, _ = _without_anchor_rule()(html.decode(), url)
    on_lines, off_lines = on.split("\n"), off.split("\n")
    assert all(h in on_lines for h in NESTED_HEADINGS) and not any(h in off for h in NESTED_HEADINGS)
    assert [line for line in on_lines if line not in off_lines] == [
        line for line in on_lines if line.startswith(tuple(f"{i}. " for i in range(1, 11))) or line == NESTED_HEADINGS[-1]]
    assert sum(s in on for s in item["with"]) >= sum(s in off for s in item["with"])
    assert sum(s in on for s in item["without"]) == sum(s in off for s in item["without"])


def test_text_without_a_nested_heading_is_unchanged(tmp_path) -> None:
    """Where no heading's line sits in a block with only empty links the rule changes nothing:
    github.blog's interview (its headings' permalink anchors sit in the heading itself), the test
    page above, and osthessen-news.de, whose ``<h2>`` wraps a gallery: blocks of a linked picture
    and a caption paragraph, not a heading's line (its captions came in as first written)."""
    if not EVAL_TARBALL.is_file():
        pytest.skip("shared/ evaluation data not present")
    pages = load_eval_pages(tmp_path, ("github.blog.spiceland.html", "Osthessen-news.de-Buergermeisterwahl.html"))
    for page, page_url in [(html.decode(), url) for url, html, _ in pages] + [(PAGE, "https://example.org/news/budget")]:
        on, _ = _without_anchor_rule(keep_nested_heading_text=True)(page, page_url)
        off, _ = _without_anchor_rule()(page, page_url)
        assert on == off


def test_a_run_made_before_keep_nested_heading_text_resumes() -> None:
    """The param came later (off: what runs did before): off, it is left out of the fingerprint."""
    from refinery.config import StageConfig

    base = StageConfig(type="extract", params={}).fingerprint_params()
    assert "keep_nested_heading_text" not in base
    assert StageConfig(type="extract", params={"keep_nested_heading_text": False}).fingerprint_params() == base
    assert StageConfig(type="extract", params={"keep_nested_heading_text": True}).fingerprint_params() != base


def test_the_recipe_keeps_nested_heading_text(tmp_path) -> None:
    """configs/refinedweb.yaml turns ``keep_nested_heading_text`` on: healthline's headings are in
    the recipe's text."""
    if not EVAL_TARBALL.is_file():
        pytest.skip("shared/ evaluation data not present")
    from refinery.eval_extract import extract_stage_from_config

    (url, html, _), = load_eval_pages(tmp_path, ("healthline.com.fat.html",))
    text, _ = extract_stage_from_config(ROOT / "configs" / "refinedweb.yaml")._extract_fn()(html.decode(), url)
    assert all(h in text.split("\n") for h in NESTED_HEADINGS)


def test_a_share_bar_or_breadcrumb_in_a_heading_is_not_its_line() -> None:
    """Review (r30): a label beside text-less links to other pages inside a heading is a share bar
    or a breadcrumb, not a heading's line; keep_nested_heading_text kept both. Only in-page anchors
    (no href, or "#...") make a nested block the heading's line."""
    extract = TrafilaturaExtractor(timeout_s=0, keep_nested_heading_text=True)._extract_fn()
    for chrome, block in [
        ("Share this article with your friends", "<h3><div>Share this article with your friends "
         "<a href='https://facebook.com/sharer'></a> <a href='https://twitter.com/intent'></a></div></h3>"),
        ("Home / World News / Europe Section", "<h2><div><a href='/home'></a>Home / World News / Europe Section"
         "<a href='/world'></a><a href='/europe'></a></div></h2>"),
        ("Which method is best for you?", "<h2><div><a href='#best'></a>Which method is best for you?</div></h2>"),
    ]:
        page = _nested_heading_page("Which method is best for you?").replace(
            "<h2><div><a name='x'></a>Which method is best for you?</div></h2>", block)
        kept = chrome in extract(page, "https://example.org/a")[0].split("\n")
        assert kept == chrome.endswith("?"), chrome


def _blog_post() -> tuple[str, str]:
    """A bundled sample WARC's blog post where trafilatura finds no content area (its text is the
    wild-text path's paragraphs): maria-antoniak.github.io's "Topic Modeling for the People"."""
    import sys

    sys.path.append(str(ROOT / "benchmarks"))  # last: benchmarks/classifiers.py must not shadow the package
    from real_pages import SAMPLE_WARCS, warc_pages

    page, = [p for p in warc_pages(SAMPLE_WARCS) if p.url.endswith("/topic-modeling-for-the-people.html")]
    return decode_html(page.body, page.content_type)[0], page.url


def test_wild_text_keeps_the_headings_over_its_paragraphs() -> None:
    """keep_wild_headings: the section headings of a page without a content area come back (off:
    none did), and nothing else of its text changes."""
    html, url = _blog_post()
    on, path_on = TrafilaturaExtractor(timeout_s=0, keep_wild_headings=True)._extract_fn()(html, url)
    off, path_off = TrafilaturaExtractor(timeout_s=0)._extract_fn()(html, url)
    headings = ["It’s fine to use LDA", "Evaluate the topics by hand", "Keep most stopwords", "Conclusion"]
    assert all(h in on.split("\n") for h in headings) and not any(h in off.split("\n") for h in headings)
    assert path_on == path_off == "precision"
    added = [line for line in on.split("\n") if line not in off.split("\n")]
    assert [line for line in on.split("\n") if line not in added] == off.split("\n")


def test_wild_headings_do_not_count_toward_the_fallback() -> None:
    """The first text's length that decides the fallback pass is the text without the recovered
    headings: the text trafilatura gave (a longer wild text stopped zdf.de's fallback, h28)."""
    from refinery.stages._extract_helper import _first_text, _trafilatura_call, _with_rules, _with_wild_headings
    from refinery.stages._trafilatura_rules import PrecisionRules, install

    html, url = _blog_post()
    install()
    stage = TrafilaturaExtractor(timeout_s=0)
    kwargs = stage._trafilatura_kwargs()
    rules = stage._rules_config()
    off = _with_rules(_trafilatura_call(kwargs), PrecisionRules(**rules))
    on = _with_wild_headings(_with_rules(_trafilatura_call(kwargs), PrecisionRules(**{**rules, "keep_wild_headings": True})))
    text, counted = _first_text(on(html, url))
    assert len(text) > len(counted) and counted == off(html, url)


def test_wild_headings_only_over_a_recovered_paragraph() -> None:
    """A heading over a list of links, or over nothing, stays out; one right before a paragraph, or
    before a block starting with one, comes in."""
    body = " ".join(["The river flooded the lower town twice this spring, and the council now plans a new wall."] * 2)
    page = ("<html><body><div class='x'><h2>First section</h2><p>" + body + "</p>"
            "<h2>Second section</h2><div><p>" + body.replace("river", "lake") + "</p></div>"
            "<h2>Related posts</h2><ul><li><a href='/a'>Flood wall plans approved</a></li>"
            "<li><a href='/b'>Council meets on Monday</a></li></ul><h3>Follow us</h3></div></body></html>")
    on, _ = TrafilaturaExtractor(timeout_s=0, keep_wild_headings=True, fallback=False)._extract_fn()(page, "https://example.org/x")
    off, _ = TrafilaturaExtractor(timeout_s=0, fallback=False)._extract_fn()(page, "https://example.org/x")
    assert "First section" not in off and "Second section" not in off
    assert on.split("\n") == ["First section", body, "Second section", body.replace("river", "lake")]


def test_a_run_made_before_keep_wild_headings_resumes() -> None:
    """The param came later (off: what runs did before): off, it is left out of the fingerprint."""
    from refinery.config import StageConfig

    base = StageConfig(type="extract", params={}).fingerprint_params()
    assert "keep_wild_headings" not in base
    assert StageConfig(type="extract", params={"keep_wild_headings": False}).fingerprint_params() == base


def test_a_standfirst_before_the_body_container_comes_in(tmp_path) -> None:
    """keep_outside_lead: netzpolitik.org writes its standfirst in ``header > div.entry-excerpt``,
    tagesspiegel.de in ``header > p.ts-intro``, beside the body container trafilatura picks; both
    gold "with" snippets were missed. With the rule the standfirst is the text's first line and the
    rest is as before; off, the text is unchanged."""
    if not EVAL_TARBALL.is_file():
        pytest.skip("shared/ evaluation data not present")
    pages = load_eval_pages(tmp_path, ("netzpolitik.org.abmahnungen.html", "tagesspiegel.de.abstandsregeln.html"))
    for (url, html, item), snippet in zip(pages, ("Seit Dezember 2015", "Die Ideen reichen vom Spuckschutz")):
        on, _ = TrafilaturaExtractor(timeout_s=0, keep_outside_lead=True)._extract_fn()(html.decode(), url)
        off, _ = TrafilaturaExtractor(timeout_s=0)._extract_fn()(html.decode(), url)
        assert snippet not in off and on.split("\n")[0].find(snippet) >= 0
        assert on.split("\n")[1:] == off.split("\n")


def test_what_a_standfirst_outside_the_body_is() -> None:
    """Only a lead-classed prose block after the title, before a longer body: not a teaser card
    with a heading, not one before the title, not a block of links."""
    body = "".join(f"<p>The council met on day {i} and agreed the budget for the new flood wall in full.</p>"
                   for i in range(6))
    lead = "The town will build a flood wall. Work starts in October and the road stays open."

    def page(before: str) -> str:
        return (f"<html><body><article>{before}<div class='article-body'>{body}</div></article></body></html>")

    def text(html: str) -> str:
        return TrafilaturaExtractor(timeout_s=0, keep_outside_lead=True, fallback=False)._extract_fn()(
            html, "https://example.org/a")[0]

    assert text(page(f"<h1>Flood wall</h1><p class='lead'>{lead}</p>")).startswith(lead)
    assert lead not in text(page(f"<p class='lead'>{lead}</p><h1>Flood wall</h1>"))
    assert lead not in text(page(f"<h1>Flood wall</h1><div class='teaser'><h3>Other story</h3><p>{lead}</p></div>"))
    linked = f"<h1>Flood wall</h1><p class='intro'><a href='/x'>{lead}</a></p>"
    assert lead not in text(page(linked))


def test_a_run_made_before_keep_outside_lead_resumes() -> None:
    """The param came later (off: what runs did before): off, it is left out of the fingerprint."""
    from refinery.config import StageConfig

    base = StageConfig(type="extract", params={}).fingerprint_params()
    assert "keep_outside_lead" not in base
    assert StageConfig(type="extract", params={"keep_outside_lead": False}).fingerprint_params() == base
    assert StageConfig(type="extract", params={"keep_outside_lead": True}).fingerprint_params() != base


def test_many_nested_lead_classed_elements_stay_linear() -> None:
    """keep_outside_lead keeps the outermost of nested lead-classed elements: asking whether each
    one is inside the lead walked the lead's whole subtree per element, quadratic in a page of many
    (a summary box of 12k ``span.intro``: ~1.3 s more than the rule off, ~8 s at 30k, past the
    extraction timeout). The outer box is still the lead it considers."""
    import time

    body = "".join(f"<p>The council met on day {i} and agreed the budget for the new flood wall in full.</p>"
                   for i in range(6))
    spans = "".join(f"<span class='intro'>w{i}</span> " for i in range(12000))
    html = (f"<html><body><article><h1>Flood wall</h1><div class='summary'>{spans}</div>"
            f"<div class='article-body'>{body}</div></article></body></html>")
    on = TrafilaturaExtractor(timeout_s=0, keep_outside_lead=True)._extract_fn()
    off = TrafilaturaExtractor(timeout_s=0)._extract_fn()

    def cpu_seconds(extract) -> tuple[float, str]:
        # this process's CPU time, the lesser of two calls: wall time counted the other xdist
        # worker's load (CI once saw 0.76 s against 0.11 s for the same linear work)
        times, text = [], ""
        for _ in range(2):
            start = time.process_time()
            text = extract(html, "https://example.org/a")[0]
            times.append(time.process_time() - start)
        return min(times), text

    plain_s, plain = cpu_seconds(off)
    ruled_s, ruled = cpu_seconds(on)
    assert ruled == plain  # the box is no prose lead: nothing added
    assert ruled_s < 3 * plain_s + 0.3  # linear: ~1.3x the rule off; quadratic was ~1.3 s more


def test_a_standfirst_of_two_paragraphs_keeps_the_space_between_them() -> None:
    """keep_outside_lead: a lead box of two paragraphs (``div.intro`` > ``p.lead`` + ``p``) came in
    as one line with their seam glued ("stays open.And more"); the space is kept, and a body that
    repeats the lead's paragraphs still keeps it out (no lead twice)."""
    body = "".join(f"<p>The council met on day {i} and agreed the budget for the new flood wall in full.</p>"
                   for i in range(6))
    first = "The town will build a flood wall. Work starts in October and the road stays open."
    second = "And more words follow here, in the same standfirst."
    lead = f"<h1>Flood wall</h1><div class='intro'><p class='lead'>{first}</p><p>{second}</p></div>"

    def text(inner: str) -> str:
        html = f"<html><body><article>{lead}<div class='article-body'>{inner}</div></article></body></html>"
        return TrafilaturaExtractor(timeout_s=0, keep_outside_lead=True)._extract_fn()(html, "https://example.org/a")[0]

    assert text(body).split("\n")[0] == f"{first} {second}"
    assert text(f"<p>{first}</p><p>{second}</p>{body}").count(first) == 1


def test_a_title_headers_unclassed_standfirst_comes_in(tmp_path) -> None:
    """keep_header_lead: cnet.de writes its standfirst as a plain ``<p>`` in the ``<header>`` that
    holds the ``<h1>``, beside the body container trafilatura picks; keep_outside_lead looked only
    for lead-classed elements and missed it (a gold "with" snippet). With both, it is the text's
    first line and the rest is as before."""
    if not EVAL_TARBALL.is_file():
        pytest.skip("shared/ evaluation data not present")
    [(url, html, _)] = load_eval_pages(tmp_path, ("cnet.de.schutz.html",))
    snippet = "liefert eine Einschätzung"
    lead_only, _ = TrafilaturaExtractor(timeout_s=0, keep_outside_lead=True)._extract_fn()(html.decode(), url)
    on, _ = TrafilaturaExtractor(timeout_s=0, keep_outside_lead=True, keep_header_lead=True)._extract_fn()(
        html.decode(), url)
    assert snippet not in lead_only and snippet in on.split("\n")[0]
    assert on.split("\n")[1:] == lead_only.split("\n")


def test_a_caption_is_no_header_lead() -> None:
    """keep_header_lead: a paragraph of the title header is a lead, but not a picture's caption
    (inside a figure, or with a copyright mark: two held-out pages gained "... © CAE" as a lead)."""
    body = "".join(f"<p>The council met on day {i} and agreed the budget for the new flood wall in full.</p>"
                   for i in range(6))
    lead = "The town will build a flood wall. Work starts in October and the road stays open."

    def text(header: str, **rules: bool) -> str:
        html = f"<html><body><article><header>{header}</header><div class='article-body'>{body}</div></article></body></html>"
        return TrafilaturaExtractor(timeout_s=0, fallback=False, keep_outside_lead=True, **rules)._extract_fn()(
            html, "https://example.org/a")[0]

    assert text(f"<h1>Flood wall</h1><p>{lead}</p>", keep_header_lead=True).startswith(lead)
    assert lead not in text(f"<h1>Flood wall</h1><p>{lead}</p>")
    assert lead not in text(f"<h1>Flood wall</h1><p>{lead} \u00a9 CAE</p>", keep_header_lead=True)
    assert lead not in text(f"<h1>Flood wall</h1><figure><p class='lead'>{lead}</p></figure>", keep_header_lead=True)
    assert lead not in text(f"<p>{lead}</p><h1>Flood wall</h1>", keep_header_lead=True)


def test_a_posts_metadata_line_is_no_header_lead() -> None:
    """keep_header_lead: a title header's paragraph classed as the post's metadata (WordPress/Genesis
    ``p.entry-meta``: byline, date, comment count, a disclosure) is no standfirst; elavegan gained
    "By Ela on | 18 Comments. This post may contain affiliate links*..." as its lead. An unclassed
    paragraph of that header still is."""
    body = "".join(f"<p>The council met on day {i} and agreed the budget for the new flood wall in full.</p>"
                   for i in range(6))
    meta = ("By <span class='entry-author'>Ela</span> on <time class='entry-time'>31. October, 2023</time> | "
            "<a href='#comments'>18 Comments</a>. This post may contain affiliate links. As an Associate I earn.")

    def text(header: str) -> str:
        html = f"<html><body><article><header>{header}</header><div class='entry-content'>{body}</div></article></body></html>"
        return TrafilaturaExtractor(timeout_s=0, fallback=False, keep_outside_lead=True, keep_header_lead=True
                                    )._extract_fn()(html, "https://example.org/a")[0]

    assert "affiliate links" not in text(f"<h1>Flood wall</h1><p class='entry-meta'>{meta}</p>")
    assert "affiliate links" not in text(f"<h1>Flood wall</h1><p id='post-byline'>{meta}</p>")
    lead = "The town will build a flood wall. Work starts in October and the road stays open."
    assert text(f"<h1>Flood wall</h1><p>{lead}</p>").startswith(lead)


def test_a_run_made_before_keep_header_lead_resumes() -> None:
    """The param came later (off: what runs did before): off, it is left out of the fingerprint."""
    from refinery.config import StageConfig

    base = StageConfig(type="extract", params={}).fingerprint_params()
    assert "keep_header_lead" not in base
    assert StageConfig(type="extract", params={"keep_header_lead": True}).fingerprint_params() != base
