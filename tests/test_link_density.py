"""The lean link-density passes (refinery/stages/_trafilatura_rules.py, ``_LinkPass``): the same
deletions as trafilatura 2.3's ``delete_by_link_density`` loop over the rules' ``link_teaser_test``,
on real pages and on hand-made edge cases, with each text read once per pass."""

from __future__ import annotations

import tarfile
from copy import deepcopy

import pytest
from lxml import etree
from lxml.html import HtmlMixin

from refinery.stages import _trafilatura_rules as rules_module
from refinery.stages.extract import TrafilaturaExtractor, decode_html
from tests.test_extract import EVAL_TARBALL, load_warc_records

URL = "https://example.org/news/story"


def _converted(html: str):  # noqa: ANN202 - an lxml tree
    """``html`` as trafilatura's precision pass hands it to ``prune_unwanted_sections``."""
    from trafilatura.htmlprocessing import convert_tags, tree_cleaning
    from trafilatura.settings import Extractor
    from trafilatura.utils import load_html

    options = Extractor(precision=True, fast=True, comments=False, tables=True, url=URL)
    return convert_tags(tree_cleaning(load_html(html), options), options, URL), options


def _pruned(tree, options, lean: bool, rules) -> bytes:  # noqa: ANN001
    """A copy of ``tree`` after trafilatura's ``prune_unwanted_sections`` (the rules' wrapper, as
    installed), with the lean passes or trafilatura's own."""
    from trafilatura import main_extractor
    from trafilatura.settings import TAG_CATALOG

    tree = deepcopy(tree)
    before = getattr(rules_module, "LEAN_LINK_DENSITY", True)  # (main had no switch)
    rules_module.LEAN_LINK_DENSITY = lean
    try:
        with rules_module.active(rules, URL):
            pruned = main_extractor.prune_unwanted_sections(tree, set(TAG_CATALOG), options)
    finally:
        rules_module.LEAN_LINK_DENSITY = before
    return etree.tostring(pruned, encoding="unicode")


STAGE_RULES = rules_module.PrecisionRules(**TrafilaturaExtractor()._rules_config())
#: the stage's rules, trafilatura's own (the plain test), and every rule the passes read switched on
ALL_RULES = (STAGE_RULES, None, rules_module.PrecisionRules(**{**TrafilaturaExtractor()._rules_config(),
                                                               "drop_related_lists": True,
                                                               "keep_nested_heading_text": True}))


def _same_decisions(html: str) -> None:
    """The lean passes prune ``html`` as trafilatura's do, under each set of rules."""
    assert rules_module.install()
    tree, options = _converted(html)
    for rules in ALL_RULES:
        assert _pruned(tree, options, True, rules) == _pruned(tree, options, False, rules), rules


def _long(words: int, start: str = "The harbour") -> str:
    return start + " " + " ".join(f"word{i}" for i in range(words)) + "."


EDGE_CASES = {
    # nested divs each holding the same links: every level is tested, the deepest goes first in no order
    "nested divs with links": "<div><div><div>" + "".join(
        f"<a href='/n{i}'>Story {i}</a> " for i in range(6)) + "</div><p>" + _long(30) + "</p></div></div>",
    "a graphic in a link": "<div><a href='/g'><img src='/i.png'>A picture link text</a></div><p>" + _long(20) + "</p>",
    "empty links": "<div><h2>A question heading here?<a href='#q'></a></h2><p>" + _long(25)
    + "</p><div><a href='/e1'></a><a href='/e2'> </a>tiny</div></div>",
    "p inside item": "<ul><li><p><a href='/li1'>Only a link in this list item</a></p></li>"
                     "<li><p><a href='/li2'>Another link in a list item</a></p></li></ul><p>" + _long(30) + "</p>",
    "whitespace-only link text": "<div><a href='/w'>\n\t \u00a0 </a><a href='/w2'>\u2003</a>Text beside them</div>"
                                 "<p>" + _long(30) + "</p>",
    "a last element": "<div><p>" + _long(12) + "</p><p>Short <a href='/l'>linked text here</a></p></div>",
    # round 1 deletes the last p: the div before it becomes the last, and round 2 deletes it (limit 300)
    "a sibling gone in the first round": "<div>" + _long(18, "This part of the page")
    + " <a href='/s'>the harbour guide</a></div><p><a href='/t'>Long link text of a teaser here</a></p>",
    # the heading over a link list goes with it: the div before them becomes the last
    "a heading gone with its links": "<div>" + _long(18, "This part of the page")
    + " <a href='/h'>the harbour guide</a></div><h2>More stories</h2><ul>" + "".join(
        f"<li><a href='/m{i}'>More story number {i}</a></li>" for i in range(4)) + "</ul>",
    "a labelled link and a numbered step": "<p>Read also: <a href='/r'>The town's new budget explained</a></p>"
    "<p>Step 1: <a href='/d'>Download the installer</a></p><p>" + _long(30) + "</p>",
    "a related list": "<ul>" + "".join(f"<li><a href='/news/rel{i}'>The council votes on plan {i} after a long "
                                       f"debate</a></li>" for i in range(4)) + "</ul><p>" + _long(30) + "</p>",
    "a link farm": "<div>" + " ".join(f"<a href='/f{i}'>Latest news headline number {i}</a>" for i in range(8))
    + " and a few words</div><p>" + _long(30) + "</p>",
    # keep_nested_heading_text: a heading's line in a block with an anchor (kept), and share bars and
    # breadcrumbs of text-less links to other pages inside a heading (judged as trafilatura does)
    "a nested heading's line": "<h2><div><a name='x'></a>Which method is best for you?</div></h2><p>" + _long(30)
    + "</p><h2><div><a href='#s'></a>Short one</div></h2><p>" + _long(20) + "</p>",
    "a share bar in a heading": "<h3><div>Share this article with your friends <a href='https://facebook.com/s'></a>"
    "<a href='https://twitter.com/s'></a></div></h3><p>" + _long(30) + "</p><h2><div><a href='/home'></a>Home / "
    "World News / Europe Section<a href='/world'></a></div></h2><p>" + _long(20) + "</p>",
    "quotes and headings": "<blockquote><a href='/q'>A quoted link</a></blockquote><h3><a href='/hh'>Heading "
                           "link</a></h3><p>" + _long(30) + "</p>",
    # an outer element's text is bounded by its tested inner elements' (tested first): a label or a
    # few words around an inner div's one link (teaser share, labelled link), a farm of inner divs'
    # links, inner divs summing to about the outer's size limits (100, 300)
    "a label around an inner div's link": "<div>Read also: <div><a href='/n'>The town's new budget explained in "
    "full</a></div></div><div>And some words before <div><a href='/o'>a long linked title of another story "
    "here</a></div> and after</div><p>" + _long(30) + "</p>",
    "a link farm of inner divs": "<div>" + "".join(f"<div><a href='/f{i}'>Latest news headline {i}</a> "
                                                  f"<a href='/g{i}'>and its section</a> </div>" for i in range(4))
    + "a few words</div><div>" + "".join(f"<div>{_long(12)} <a href='/h{i}'>Headline {i}</a></div>" for i in range(4))
    + "</div><p>" + _long(30) + "</p>",
    "inner divs about the size limits": "".join(
        f"<div><div>{'x' * (n // 2)} <a href='/l{n}'>link</a></div><div>{'y' * (n - n // 2 - 12)} "
        f"<a href='/m{n}'>link</a></div></div>" for n in (95, 99, 100, 101, 295, 299, 300, 301)),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_lean_passes_decide_as_trafilatura_on_edge_cases(case: str) -> None:
    _same_decisions(f"<html><body><article>{EDGE_CASES[case]}</article></body></html>")


@pytest.mark.parametrize("case", ["a sibling gone in the first round", "a heading gone with its links"])
def test_the_second_round_tests_what_the_first_ones_deletions_touched(case: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The div is kept in the first round (it has a next sibling: limit 100) and deleted in the second
    (it is the last: limit 300); a second round reusing the first one's result would keep it."""
    html = f"<html><body><article>{EDGE_CASES[case]}</article></body></html>"
    tree, options = _converted(html)
    assert rules_module.install()
    pruned = _pruned(tree, options, False, STAGE_RULES)
    assert "This part of the page" not in pruned
    assert _pruned(tree, options, True, STAGE_RULES) == pruned
    # what the second round reads again: the first round's result, were the div not forgotten
    monkeypatch.setattr(rules_module._LinkPass, "forget", lambda self, element: None)
    assert "This part of the page" in _pruned(tree, options, True, STAGE_RULES)


def _real_pages(n_eval: int = 60, every_warc: int = 6) -> list[tuple[str, str]]:
    pages = []
    sample = load_warc_records()
    for i in range(0, sample.num_rows, every_warc):
        body = sample.column("html")[i].as_py()
        if body and b"<html" in body[:2000].lower():
            pages.append((sample.column("url")[i].as_py(), decode_html(body, sample.column("content_type")[i].as_py())[0]))
    if EVAL_TARBALL.is_file():
        with tarfile.open(EVAL_TARBALL, "r|gz") as tar:  # the first pages of the evaluation set
            for member in tar:
                if member.isfile() and member.name.endswith(".html"):
                    pages.append(("https://example.org/" + member.name, decode_html(tar.extractfile(member).read(),
                                                                                      None)[0]))
                    if len(pages) >= n_eval + 20:
                        break
    return pages


def test_lean_passes_decide_as_trafilatura_on_real_pages() -> None:
    """Whole pages (not only the chosen content area) pruned both ways: the same tree each time."""
    pages = _real_pages()
    assert len(pages) >= 40
    for _, html in pages:
        _same_decisions(html)


def test_lean_passes_give_the_stages_text_on_real_pages() -> None:
    extract = TrafilaturaExtractor()._extract_fn()
    for url, html in _real_pages(n_eval=20, every_warc=12):
        rules_module.LEAN_LINK_DENSITY = False
        try:
            want = extract(html, url)
        finally:
            rules_module.LEAN_LINK_DENSITY = True
        assert extract(html, url) == want, url


def test_each_text_is_read_once_per_pruning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nested divs sharing their links, nothing deleted: each link's and each div's text is read
    once for all six passes of both rounds (trafilatura read a link's text again for each tested
    ancestor, in each round), and elements without links are not read."""
    paragraphs = "".join(f"<p>{_long(30)} See <a href='/r{i}'>the report number {i}</a> for more.</p>"
                         for i in range(4))
    html = f"<html><body><article><div><div><div>{paragraphs}</div></div><p>{_long(30)}</p></div></article></body></html>"
    tree, options = _converted(html)
    assert rules_module.install()
    reads: dict = {}
    text_content = HtmlMixin.text_content

    def counted(element):  # noqa: ANN001, ANN202
        reads[element.tag] = reads.get(element.tag, 0) + 1
        return text_content(element)

    monkeypatch.setattr(HtmlMixin, "text_content", counted)
    before = _pruned(tree, options, True, STAGE_RULES)
    assert before.count("the report number") == 4  # nothing went
    assert reads["ref"] == 4  # once per link
    assert reads["div"] <= 3 + 2  # once per div (and the guarded pruning's whole-tree reads)


def test_an_outer_divs_text_is_not_read_when_its_inner_divs_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nested divs around four long paragraphs with a link each: the innermost div's text (over 300
    characters) bounds its two outer divs' from below, so their tests (four links: no link farm
    test) need no text of theirs; only the innermost div's is read (and the guarded pruning's
    whole-tree reads, not of a div). Before, every tested div's whole text was read and trimmed."""
    paragraphs = "".join(f"<p>{_long(30)} See <a href='/r{i}'>the report number {i}</a> for more.</p>"
                         for i in range(4))
    html = f"<html><body><article><div><div><div>{paragraphs}</div></div><p>{_long(30)}</p></div></article></body></html>"
    tree, options = _converted(html)
    assert rules_module.install()
    reads: list = []
    text_content = HtmlMixin.text_content
    monkeypatch.setattr(HtmlMixin, "text_content", lambda element: reads.append(element.tag) or text_content(element))
    pruned = _pruned(tree, options, True, STAGE_RULES)
    assert pruned.count("the report number") == 4  # nothing went
    assert reads.count("div") == 1
    monkeypatch.setattr(rules_module, "LINK_TEXT_BOUNDS", False)
    reads.clear()
    assert _pruned(tree, options, True, STAGE_RULES) == pruned
    assert reads.count("div") == 3


def test_a_labelled_link_is_at_most_its_slack_longer_than_its_link() -> None:
    """The lean pass reads an element's text for :func:`labelled_link` only when its lower bound is
    at most the link's text and ``_LABELLED_LINK_SLACK`` long: the longest label (30 characters),
    the most after the link (3) and their spaces make exactly that, and one more character is none."""
    link = "The town's new budget explained"
    label = "Unbedingt lesenswerte Artikel:"
    assert len(label) == 30
    text = f"{label} {link} ..."
    assert len(text) == len(link) + rules_module._LABELLED_LINK_SLACK
    assert rules_module.labelled_link(text, link)
    assert not rules_module.labelled_link(f"{label} {link} ....", link)
    assert not rules_module.labelled_link(f"X{label} {link} ...", link)


def _link_reads(tree, options, monkeypatch: pytest.MonkeyPatch, rules=None) -> int:  # noqa: ANN001
    """How many times pruning a copy of ``tree`` reads a link's text (trafilatura's loop: once per
    tested ancestor and round; the lean passes: once), with the switch as it stands."""
    from trafilatura import main_extractor
    from trafilatura.settings import TAG_CATALOG

    reads = []
    text_content = HtmlMixin.text_content
    monkeypatch.setattr(HtmlMixin, "text_content",
                        lambda element: reads.append(element.tag) or text_content(element))
    with rules_module.active(rules, URL):
        main_extractor.prune_unwanted_sections(deepcopy(tree), set(TAG_CATALOG), options)
    monkeypatch.setattr(HtmlMixin, "text_content", text_content)
    return reads.count("ref")


def test_plain_trafilatura_runs_trafilaturas_own_link_density_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks/extraction.py --lean-ab`` times plain trafilatura inside ``plain_trafilatura()``:
    its link-density loop there is trafilatura's (the lean passes ran on the plain side too), and
    the lean passes come back on exit."""
    from refinery.stages._extract_helper import plain_trafilatura

    paragraphs = "".join(f"<p>{_long(30)} See <a href='/r{i}'>the report number {i}</a> for more.</p>"
                         for i in range(4))
    tree, options = _converted(f"<html><body><article><div><div>{paragraphs}</div></div></article></body></html>")
    assert rules_module.install()
    for rules in (None, STAGE_RULES):  # --plain-old-defaults' plain side, and the stage's rules
        lean = _link_reads(tree, options, monkeypatch, rules)
        monkeypatch.setattr(rules_module, "LEAN_LINK_DENSITY", False)
        trafilaturas = _link_reads(tree, options, monkeypatch, rules)
        monkeypatch.undo()
        assert lean < trafilaturas
        with plain_trafilatura():
            assert _link_reads(tree, options, monkeypatch, rules) == trafilaturas
        assert _link_reads(tree, options, monkeypatch, rules) == lean


def test_the_passes_live_no_longer_than_their_pruning() -> None:
    """The texts and results kept between rounds are one ``prune_unwanted_sections`` call's: no
    pass is left after extracting pages (nor after a call that raised), none serves the next page."""
    import gc

    from trafilatura import main_extractor

    extract = TrafilaturaExtractor()._extract_fn()
    for url, html in _real_pages(n_eval=3, every_warc=40):
        extract(html, url)
    tree, _ = _converted("<html><body><div><a href='/x'>x</a></div></body></html>")
    with pytest.raises(AttributeError):  # options=None: trafilatura fails inside the call
        main_extractor.prune_unwanted_sections(tree, set(), None)
    assert rules_module._ROUNDS.get() is None
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is rules_module._LinkPass]


_WORDS = "the harbour council votes plan after long debate news story read also step 1: download guide more".split()
_TAGS = ("div", "list", "p", "head", "quote", "div", "p", "ref", "ref", "graphic", "hi", "lb", "item", "td")


def _random_text(rng) -> str | None:  # noqa: ANN001 - a random.Random
    r = rng.random()
    if r < 0.2:
        return None if r < 0.13 else rng.choice([" ", "\n\t ", "\u00a0", "\u2003"])
    return " ".join(rng.choice(_WORDS) for _ in range(rng.choice([1, 2, 3, 5, 8, 15, 30, 60])))


def _random_children(rng, parent, depth: int) -> None:  # noqa: ANN001
    """Random converted elements under ``parent``: nested links and graphics, comments and PIs
    between siblings, headings over link lists, whitespace-only and empty texts, tails."""
    for _ in range(rng.randint(0, 4 if depth < 4 else 1)):
        r = rng.random()
        if r < 0.09:
            node = etree.Comment("c") if r < 0.07 else etree.ProcessingInstruction("pi", "x")
            parent.append(node)
        elif r < 0.2 and depth < 5:  # a heading over a list of links (headings, related lists, farms)
            if rng.random() < 0.6:
                etree.SubElement(parent, "head").text = _random_text(rng)
            node = etree.SubElement(parent, rng.choice(["list", "div"]))
            for i in range(rng.randint(1, 8)):
                item = etree.SubElement(node, rng.choice(["item", "item", "p", "div"]))
                item.text = rng.choice(["Read also:", "Step 1:", None, None])
                link = etree.SubElement(item, "ref", href=rng.choice([f"/news/x{i}", "https://o.com/y", "#a"]))
                link.text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 9)))
                if rng.random() < 0.1:
                    etree.SubElement(link, "graphic")
        else:
            node = etree.SubElement(parent, rng.choice(_TAGS if parent.tag != "list" else ("item", "item", "div")))
            if node.tag == "ref":
                node.set("href", rng.choice(["/news/a", "https://other.com/x", "#q"]))
            node.text = _random_text(rng)
            if depth < 6 and (node.tag not in ("graphic", "lb") or rng.random() < 0.3):
                _random_children(rng, node, depth + 1)
        if rng.random() < 0.5:
            node.tail = _random_text(rng)


@pytest.mark.parametrize("focus", ["precision", "balanced", "recall"])
def test_lean_passes_decide_as_trafilatura_on_random_trees(focus: str) -> None:
    """Random trees (seeded), pruned in place inside a page (the area's siblings and its own deletion
    seen), in each mode with each set of rules: the same document both ways."""
    import random

    from lxml import html as lxml_html
    from trafilatura import main_extractor
    from trafilatura.settings import TAG_CATALOG, Extractor

    assert rules_module.install()
    options = Extractor(precision=focus == "precision", recall=focus == "recall", fast=True, tables=True, url=URL)
    pruning = 0
    for seed in range(60):
        rng = random.Random(seed)
        page = lxml_html.fromstring("<html><body></body></html>")
        body = page.find("body")
        etree.SubElement(body, rng.choice(["div", "p", "head"])).text = _random_text(rng)
        _random_children(rng, etree.SubElement(body, "div"), 0)
        pruned = []
        for rules in ALL_RULES:
            for lean in (True, False):
                document = deepcopy(page)
                rules_module.LEAN_LINK_DENSITY = lean
                try:
                    with rules_module.active(rules, URL):
                        main_extractor.prune_unwanted_sections(document.find("body")[-1], set(TAG_CATALOG), options)
                finally:
                    rules_module.LEAN_LINK_DENSITY = True
                pruned.append(etree.tostring(document, encoding="unicode"))
            assert pruned[-2] == pruned[-1], (seed, rules)
        pruning += any(p != etree.tostring(page, encoding="unicode") for p in pruned)
    assert pruning >= 30  # most trees lose something: the decisions compared are real ones
