"""Trafilatura's precision-mode rules, changed (issue 13; docs/extraction.md, "Precision
rules, session 22" and "session 23", "Boxes inside wrappers").

The extract stage's first pass is trafilatura in precision mode. Measured on trafilatura's 990
evaluation pages (both halves alike), on 51 publisher article bodies and read on the 1,087 crawl
pages of the filter benchmark, some of that mode's rules are changed (each a stage parameter); the fallback (recall mode)
and trafilatura called outside the stage are untouched:

- **link teasers** (``link_teaser_share``, trafilatura 0.9): an element whose single link (over 10
  characters) covers more than this share of its text is removed. At 0.8 "Read more: <a>title</a>",
  "Lea también: <a>...</a>", "Related: <a>...</a>" go too (their label is 10-20% of the text).
- **text after an empty block** (``keep_block_tails``, trafilatura false): precision mode deletes
  an empty element together with the text after it (its tail). After a block element (``div``,
  ``p``, ``li``, ``section`` ...: a ``<div class="clear"></div>`` then the paragraph's text) the
  text now stays; after an empty inline element (``i``, ``span``, ``b``: an icon before a link
  label) it still goes.
- **the title header** (``keep_title_header``, trafilatura false): precision mode deletes every
  ``<header>``; the one holding the page's ``<h1>`` (the article's title and standfirst) stays.
- **headings over link lists** (``drop_link_list_headings``, trafilatura false): when a ``div`` or
  list goes for its link density, the heading right before it goes too if nothing but another
  heading or its container's end follows ("Mehr Themen:", "Related posts" over the links); not
  an ``<h1>`` nor a heading of the title header.
- **labelled links** (``drop_labelled_links``, trafilatura false): an element that is a short label
  and one link, nothing after it ("Czytaj też: <a>title</a>", "Le puede interesar: <a>...</a>",
  ">> <a>...</a>", "Photo: <a>name</a>"), is removed whatever share of it the link covers: a label
  of at most four words ending in ":" or a few non-word characters, a link text of 11-150 characters.
- **orphaned headings** (``drop_orphaned_headings``, trafilatura false): a short line (a heading,
  paragraph, cell or ``div`` of at most 60 non-space characters, not a sentence ending in ".") whose
  following content (its next siblings up to the next short line, or its container's, while it is
  all of its container's text; at least 100 non-space characters and twice its own) is all removed
  by precision mode's pruning goes too:
  "Weitere Artikel zum Thema" over a table of links, "Related Posts", "Seguir leyendo:" over teasers.
- **text with empty links** (``keep_text_with_empty_links``, trafilatura false; session 31): an
  element of at least 20 characters of text whose links all have no text (a heading's permalink
  anchor, an icon) is not a link list; trafilatura counted its text-bearing links, found none and
  removed it when short (every question heading of an interview page).
- **heading text in a nested block** (``keep_nested_heading_text``, trafilatura false; 0.8.0
  reading probe): the same for a block inside a heading (``<h2><div><a name="x"></a>Heading
  text</div></h2>``, healthline.com's section headings): trafilatura's ``div`` pass tested the
  ``div`` as a link list and removed it, so the heading came out empty (in every mode). Its text
  is the heading's, and is judged as the heading's is (needs ``keep_text_with_empty_links`` for
  the heading itself to stay in precision mode).
- **headings on the wild-text path** (``keep_wild_headings``, trafilatura false; session 34, on
  in the recipe since session 50): when trafilatura finds no content area, ``recover_wild_text``
  takes paragraphs but no heading; each section heading (:func:`section_heading`: not an ``<h1>``,
  in a container of 2+ paragraphs) right before a paragraph or quote it takes (next sibling, or
  that sibling's first child) now comes too, when that paragraph lies in the page's text region
  (:func:`in_text_region`: not in a sidebar's widget, a modal or a contact flyout whose text
  trafilatura took; session 51). The first text's length that decides the fallback pass
  leaves them out (:func:`uncounted`), so that decision is trafilatura's.
- **a standfirst outside the body** (``keep_outside_lead``, trafilatura false; session 35, off in
  the recipe): the last lead-classed prose element (``div.lead``, ``p.intro``...) after the page's
  ``<h1>`` and before the content area trafilatura chose, within its containers up to two levels
  up, is put first as a paragraph (:func:`outside_lead`). Off: on the held-out half it found 10
  more "with" snippets but leaked 2 picture captions.
- **a standfirst in the title header** (``keep_header_lead``, trafilatura false; session 39, off in
  the recipe; needs ``keep_outside_lead``): a ``<p>`` of the ``<header>`` holding the ``<h1>`` is a
  lead whatever its class (cnet.de), and no lead is a caption (in a figure, or holding a "©").
- **captions and picture credits** (``drop_credit_blocks``, trafilatura false; session 50): an
  element whose class or id names a caption or a credit (a word of it, any case: ``div.cred``,
  ``p.imageCaption``, ``span.ee-has-fotocredit``, ``div.summary-credit``, ``table.tr-caption-container``)
  and that holds at most :data:`CREDIT_BLOCK_WORDS` words goes, as the ``<figure>`` it stands in for
  does. trafilatura removes ``figure`` and a ``div``/``p``/``span``/``section`` or list whose class
  or id holds "caption" in lower case, so "imageCaption", an ``<em class="caption">`` and every
  credit box stayed (a photographer's name as a line of its own, "By U.S. CUSTOMS AND BORDER
  PROTECTION"). Not a heading, nor a credit card's or score's box (:func:`credit_block`).
- **repeated posts** (``keep_repeated_posts``, trafilatura false): when the content
  area trafilatura picks is an ``<article>`` with a sibling ``<article>`` of the same classes,
  both holding text, their parent is extracted instead: trafilatura takes the first match of
  ``(.//article)[1]``, so a forum thread whose posts are sibling articles came out as its first
  post, and a list of papers as its first paper.
- **split article bodies** (``keep_split_bodies``, trafilatura false): when the content area is a
  classed div/section whose twins (same tag and classes, under wrappers of one class) fill one
  container with only ad slots between them, each mostly paragraphs of sentences and without a
  headline, that container is extracted instead (wired.com's article stopped at its first ad).
- **boxes inside wrappers** (``prune_inside_wrappers``, trafilatura false; session 33): trafilatura
  prunes the boilerplate matches (``OVERALL_DISCARD_XPATH``) of the content area only if what
  would go leaves more than 1/7 of its text, else none; when a wrapper of the article carries a
  boilerplate class (pcgamer's ``div.widget-content``), every match stayed, the newsletter box and
  "related" card inside it too. The wrappers (matches whose removal alone trips that guard) stay
  and the outermost matches inside them go, under the same guard.

The replacements are installed once per process over the trafilatura functions they mirror (their
sources are compared, as for the lean path) and act only inside :func:`active`, which the stage's
cascade enters around each first-pass call, so plain ``trafilatura.extract`` calls keep
trafilatura's rules.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from copy import deepcopy
from dataclasses import asdict, dataclass, fields
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrecisionRules:
    """The rules' settings (see the module docstring; the stage's parameters of these names
    set them, and its defaults are the shipped values)."""

    link_teaser_share: float
    keep_block_tails: bool
    keep_title_header: bool
    drop_link_list_headings: bool
    drop_labelled_links: bool
    drop_orphaned_headings: bool
    keep_text_with_empty_links: bool = False
    keep_repeated_posts: bool = False
    keep_split_bodies: bool = False
    prune_inside_wrappers: bool = False
    drop_related_lists: bool = False
    keep_nested_heading_text: bool = False
    keep_wild_headings: bool = False
    keep_outside_lead: bool = False
    keep_header_lead: bool = False
    drop_credit_blocks: bool = False


#: trafilatura's own values: with these, the replacements change nothing
TRAFILATURA = PrecisionRules(link_teaser_share=0.9, keep_block_tails=False, keep_title_header=False,
                             drop_link_list_headings=False, drop_labelled_links=False, drop_orphaned_headings=False,
                             keep_text_with_empty_links=False, keep_repeated_posts=False,
                             keep_split_bodies=False, prune_inside_wrappers=False,
                             drop_related_lists=False, keep_nested_heading_text=False,
                             keep_wild_headings=False, keep_outside_lead=False,
                             keep_header_lead=False, drop_credit_blocks=False)

#: sha256 of trafilatura 2.3's ``htmlprocessing.link_density_test``, ``prune_html`` and
#: ``delete_by_link_density`` and ``main_extractor.prune_unwanted_sections`` sources, the code
#: mirrored or reasoned about here
_SOURCES_SHA256 = {
    "link_density_test": "0b3d71f252bf19639de358ec3f4abc7c252eefb60eeac3b1da77e6dd9d8a444e",
    "prune_html": "ce327c5260aedd21a6f2c5a7d296b4c2f1ede18bf91d424532f21281e8fa6e97",
    "delete_by_link_density": "306ab5a31636cd08bcf09d2e4d78d538f961b30c944712c5e8f8eddf3e010fa2",
    "prune_unwanted_sections": "e6eb7afcc64d3f3792b8584d742acd9dc6eee5700aa822e23960f688f7b8e283",
}

#: a title header's tag while precision mode's pruning runs: its ``.//header`` rule passes it by
_TITLE_HEADER = "refinery-title-header"

#: the empty elements whose tail still goes with them: inline ones (icons, spacers in a line),
#: unless the tail is content (:func:`_inline_tail_is_content`)
_INLINE = frozenset({"b", "em", "i", "q", "span", "strong"})
_INLINE_TAIL_CHARS = 25

#: a link's label: a few non-word characters (">>", "→") or up to 30 characters ending in ":"
_LINK_LABEL = re.compile(r"(?:\W{1,4}|.{1,29}:)", re.DOTALL)
_LABEL_WORDS = 4
_DIGIT = re.compile(r"\d")
_LABELLED_LINK_CHARS = (11, 150)

#: an orphaned heading: at most this many non-space characters, over at least _ORPHAN_CONTENT
#: non-space characters of content (and twice its own) that pruning removed; looked for up to _ORPHAN_LEVELS containers up
#: and _ORPHAN_SIBLINGS siblings on
_ORPHAN_CHARS = 60
_ORPHAN_CONTENT = 100
_ORPHAN_LEVELS = 3
_ORPHAN_SIBLINGS = 30
_ORPHAN_TAGS = ("head", "p", "td", "div")
#: what a short sibling that ends a heading's content may be: a line like the heading, or a table
#: row holding one (a short list, table or code block is content)
_NEXT_HEADING_TAGS = frozenset(_ORPHAN_TAGS + ("tr",))
#: tags precision mode's pruning strips (their text stays in the parent): not content that went
_STRIPPED = frozenset({"span", "ref"})

_ACTIVE: ContextVar[PrecisionRules | None] = ContextVar("refinery_precision_rules", default=None)
#: the :class:`_LinkPass` serving the link-density rounds of the ``prune_unwanted_sections`` call running
_ROUNDS: ContextVar = ContextVar("refinery_link_rounds", default=None)
#: the host of the page being extracted (no "www."), for :func:`related_list`'s same-site links
_PAGE_HOST: ContextVar[str | None] = ContextVar("refinery_page_host", default=None)
#: (content area, what trafilatura's guarded pruning deletes there), found once by
#: :func:`guarded_matches` before the orphaned headings are sought, and used by that pruning
_GUARDED: ContextVar[tuple | None] = ContextVar("refinery_guarded_matches", default=None)

#: text of its own an element needs for its empty links (anchors, icons) not to make it a link list
_EMPTY_LINKS_TEXT_CHARS = 20


#: a run of repeated posts: at least this many siblings of the chosen element's tag and classes
#: (itself included), each with at least _POST_CHARS non-space characters of text
_REPEATED_POSTS = 2
_POST_CHARS = 100
#: containers too wide to stand for a run of posts (the rest of the page is in them)
_NOT_POST_CONTAINERS = frozenset({"body", "html"})


def _post_key(element) -> tuple:  # noqa: ANN001 - an lxml element
    return element.tag, frozenset((element.get("class") or "").split())


#: a headline in trafilatura's converted tree (``<h1>``-``<h3>`` become ``<head rend="h1">``...)
_HEADLINE = ".//head[@rend='h1'] | .//head[@rend='h2'] | .//head[@rend='h3']"


def repeated_posts_container(element):  # noqa: ANN001, ANN201 - lxml elements
    """The parent of ``element`` when ``element`` is one of a run of siblings of its tag and
    classes that each hold text (a forum thread's posts: ``article.message`` x 18); else
    ``element``. Trafilatura's content selection takes the first match of each expression
    (``(.//article)[1]``), so a thread came out as its first post. Not the page's own article
    (it holds the page's ``<h1>``), nor a run whose articles carry headlines: those are other
    pages' stories (correctiv.org streams 12 after its own; teaser cards), not posts (a review)."""
    parent = element.getparent()
    # an <article> is what HTML names a forum post or a user comment; runs of sibling divs were
    # tab panels and colour blocks (a recipe's tabs lost their ingredient lists)
    if element.tag != "article" or parent is None or parent.tag in _NOT_POST_CONTAINERS:
        return element
    if element.find(".//head[@rend='h1']") is not None:
        return element
    key = _post_key(element)
    run = [s for s in parent if s.tag == element.tag and _post_key(s) == key]
    if any(s.xpath(_HEADLINE) for s in run):
        return element
    posts = sum(_size("".join(s.itertext())) >= _POST_CHARS for s in run)
    return parent if posts >= _REPEATED_POSTS else element


#: a split article body: the chosen div/section and its twins (same tag and classes, as many levels
#: under wrappers of one class as it is, up to _SPLIT_LEVELS), each with at least _SPLIT_PARAGRAPHS
#: paragraphs of sentences (_SPLIT_SENTENCE_CHARS non-space characters, a '.', '!' or '?') making
#: _SPLIT_PROSE_SHARE of its text; between them only slots of at most _SPLIT_SLOT_CHARS ("Advertisement")
_SPLIT_TAGS = frozenset({"div", "section"})
_SPLIT_LEVELS = 2
_SPLIT_PARAGRAPHS = 2
_SPLIT_SENTENCE_CHARS = 60
_SPLIT_PROSE_SHARE = 0.6
_SPLIT_SLOT_CHARS = 30
_SENTENCE_END = re.compile(r"[.!?…][\"'”’»)]*(?:\s|$)")


def _headed(element) -> bool:  # noqa: ANN001 - an lxml element
    return any(element.find(f".//head[@rend='{h}']") is not None for h in ("h1", "h2", "h3"))


def _prose(element) -> bool:  # noqa: ANN001 - an lxml element
    """Whether ``element`` is mostly paragraphs of sentences."""
    total = _size("".join(element.itertext()))
    prose = paragraphs = 0
    for p in element.iter("p"):
        text = "".join(p.itertext())
        size = _size(text)
        if size >= _SPLIT_SENTENCE_CHARS and _SENTENCE_END.search(text):
            paragraphs += 1
            prose += size
    return paragraphs >= _SPLIT_PARAGRAPHS and total > 0 and prose >= _SPLIT_PROSE_SHARE * total


def _twin(container, key: tuple, depth: int):  # noqa: ANN001, ANN202 - lxml elements
    """The one element of ``key`` ``depth`` levels under ``container`` (itself at 0), else None."""
    level = [container]
    for _ in range(depth):
        level = [c for e in level for c in e]
    found = [e for e in level if _post_key(e) == key]
    return found[0] if len(found) == 1 else None


def split_body_container(element):  # noqa: ANN001, ANN201 - lxml elements
    """The container of ``element``'s twins when the article body ``element`` is split into
    sibling blocks of one class around ad slots (wired.com: ``div.article__body`` in each of
    two ``div.grid`` chunks around a ``div.full-bleed-ad``); else ``element``. Trafilatura's
    content selection takes the first match of each expression, so the article stopped at its
    first ad. Every block of the container must be such a twin, all mostly paragraphs of
    sentences without a headline (tab panels of lists, teaser cards, other stories are not), or a
    slot of a few characters."""
    key = _post_key(element)
    if element.tag not in _SPLIT_TAGS or not key[1]:
        return element
    node = element
    for depth in range(_SPLIT_LEVELS + 1):
        parent = node.getparent()
        if parent is None or parent.tag in _NOT_POST_CONTAINERS:
            return element
        wrapper = _post_key(node)
        if not wrapper[1]:  # only wrappers of one class are followed up
            return element
        twins = []
        for child in parent:
            if _post_key(child) == wrapper:
                twin = _twin(child, key, depth)
                # the wrapper holds the block and slots (an empty ad rail), not a sidebar of links,
                # and no headline: a blog's front page of excerpts under short titles is not one article
                if (twin is None or _headed(child) or not _prose(twin) or _size("".join(child.itertext()))
                        - _size("".join(twin.itertext())) > _SPLIT_SLOT_CHARS):
                    twins = []
                    break
                twins.append(twin)
            elif _size("".join(child.itertext())) > _SPLIT_SLOT_CHARS or child.tag == "head" or _headed(child):
                # a headline between the blocks, however short, starts another story
                twins = []
                break
        if len(twins) >= 2:
            return parent
        node = parent
    return element


def _text_with_empty_links(element, nested: bool = False) -> bool:  # noqa: ANN001 - an lxml element
    """Whether ``element`` holds text of its own and only links without text: a heading with a
    permalink anchor (``<h2>Question?<a href="#q" class="heading-link"></a></h2>``). Trafilatura's
    link-density test counts the links with text, and a short element whose count is 0 goes as a
    link list: every question of an interview went (found by reading a run's kept documents).
    ``nested``: a block inside a heading counts as the heading (:func:`in_heading`)."""
    # other elements: share bars and icon lists ("Follow us" + icons) leaked
    if element.tag != "head" and not (nested and in_heading(element)):
        return False
    links = element.findall(".//ref")
    if not links or element.find(".//graphic") is not None:
        return False
    if any(link.text_content().strip() for link in links):
        return False
    return len(" ".join(element.text_content().split())) >= _EMPTY_LINKS_TEXT_CHARS


#: what a block inside a heading may hold to be the heading's line: inline elements only (a gallery
#: of captions wrapped in an ``<h2>`` holds paragraphs: osthessen-news.de, found on the evaluation pages)
_HEADING_LINE = frozenset({"ref", "hi", "del", "code", "span"})


def in_heading(element) -> bool:  # noqa: ANN001 - an lxml element
    """Whether ``element`` is a heading's line in a block inside it (``<h2><div><a name="x"></a>
    Heading text</div></h2>``): its text is the heading's, not a link list's. Its links must be
    anchors in the page (no ``href``, or ``#...``): text-less links to other pages are icons, and a
    heading wrapping them with a label is a share bar ("Share this article <a fb></a><a tw></a>")
    or a breadcrumb ("Home / World / Europe" between icon links), found by review (r30)."""
    return (next(element.iterancestors("head"), None) is not None
            and all(e.tag in _HEADING_LINE and (e.tag != "ref" or e.get("href", "#").startswith("#"))
                    for e in element.iterdescendants()))


#: trafilatura's guard on its boilerplate pruning: nothing goes when what would go leaves no more
#: than this share of the content area's text
_GUARD_SHARE = 1 / 7


def _classes(element) -> tuple:  # noqa: ANN001 - an lxml element
    """An element's tag and class words (a frozenset, empty without a class)."""
    return element.tag, frozenset((element.get("class") or "").split())


def _wrapper_twin(element, kinds: set) -> bool:  # noqa: ANN001 - an lxml element
    """Whether ``element`` has a tag of ``kinds`` (pairs of :func:`_classes`) and class words
    that hold or are held by its pair's: a forum's posts, ``li.message`` and ``li.message
    staff``; not pcgamer's ``div.clear-both widget widget-hero`` beside its body's
    ``div.clear-both widget widget-content``."""
    tag, classes = _classes(element)
    return bool(classes) and any(tag == t and c and (c <= classes or classes <= c) for t, c in kinds)


def guarded_matches(tree, expressions) -> tuple[list, list]:  # noqa: ANN001 - lxml elements and XPaths
    """``(trafilatura's, inside)``: the matches of ``expressions`` that trafilatura's guarded
    pruning deletes from ``tree`` (its ``prune_unwanted_nodes(..., with_backup=True)``: the
    outermost matches, unless they hold nearly all the text), and, when that guard deletes none,
    the outermost matches inside the wrappers. The guard kept every match when a wrapper of the
    article carries a boilerplate class (pcgamer's body sits in ``div.widget-content``, "widget"
    being an ad token), so the newsletter box and "related" card inside it stayed too. A wrapper
    is a match whose removal alone would trip the guard; it stays, and the outermost other matches
    go, under the same guard. A wrapper's twins (same tag, class words that hold or are held by its
    own, as a forum's posts are all ``li.message``) stay too: beside a long first post they are the
    replies, not boxes in it. Nor does a match holding more text than would stay go: that is the
    article (a slideshow in ``div.slideshow``), not a box."""
    from refinery.stages._extract_helper import _outer_matches

    matches = dict.fromkeys(e for expression in expressions for e in expression(tree))
    if not matches:
        return [], []
    total = len(tree.text_content())
    sizes = {e: len(e.text_content()) for e in _outer_matches(matches)}
    if total - sum(sizes.values()) > total * _GUARD_SHARE:
        return list(sizes), []
    # a wrapper's ancestors hold as much text, so they are wrappers too
    rest = {e: None for e in matches if total - sizes.get(e, len(e.text_content())) > total * _GUARD_SHARE}
    kinds = {_classes(e) for e in matches if e not in rest}
    inner = {e: len(e.text_content()) for e in _outer_matches({e: None for e in rest if not _wrapper_twin(e, kinds)})}
    stays = total - sum(inner.values())
    if not inner or stays <= total * _GUARD_SHARE:
        return [], []
    # a match holding more text than would stay is the article (a slideshow's div.slideshow), not
    # a box in it: the largest first, as what stays grows with each one kept (fewer go, never more)
    for element in sorted(inner, key=inner.get, reverse=True):
        if inner[element] <= stays:
            break
        stays += inner.pop(element)
    return [], list(inner)


@contextmanager
def active(rules: PrecisionRules | None, url: str | None = None) -> Iterator[None]:
    """Within this block trafilatura's precision mode uses ``rules`` (None: its own) on the page
    at ``url`` (None: unknown; then no link counts as the same site's)."""
    token, host = _ACTIVE.set(rules), _PAGE_HOST.set(_host(url) if url else None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        _PAGE_HOST.reset(host)


#: a Wayback Machine copy, absolute or relative to archive.org ("/web/20131110121040id_/http://...")
_WAYBACK = re.compile(r"^(?:(?:https?:)?//(?:web\.|www\.)?archive\.org)?/web/\d+[a-z_]*/+(.+)$", re.IGNORECASE)


def _unarchived(url: str) -> str:
    """The archived URL of a Wayback Machine copy (``url`` when it is not one): on an archived
    page every link is archive.org's, its own site's and other sites' alike."""
    m = _WAYBACK.match(url.strip())
    if not m:
        return url
    inner = re.sub(r"^(https?:)/+", r"\1//", m.group(1), flags=re.IGNORECASE)
    return inner if "//" in inner[:8] else "http://" + inner


def _host(url: str) -> str | None:
    try:
        host = urlsplit(_unarchived(url).strip()).hostname
    except ValueError:
        return None
    return host.removeprefix("www.") if host else None


#: a list of other stories (see :func:`related_list`): _RELATED_ITEMS items, at least
#: _RELATED_HEADLINE_SHARE of them headlines (_RELATED_WORDS words, links to the same site covering
#: _RELATED_LINK_SHARE of the text), of _RELATED_MEAN_WORDS words on average
_RELATED_ITEMS = (2, 10)
_RELATED_WORDS = (4, 40)
_RELATED_LINK_SHARE = 0.4
_RELATED_HEADLINE_SHARE = 0.75
_RELATED_MEAN_WORDS = 6
#: an item that ends with a full stop (not an ellipsis) is a sentence: key points ("The council
#: <a>approved the budget</a> on Tuesday."), a source ("<a>Annual report</a>, Agency, 2023."), a note;
#: headlines end without one. A list where half the items are sentences is prose, not other stories.
_ITEM_FULL_STOP = re.compile(r"(?<![.…])\.[\"'”’»)\]]*$")
_RELATED_SENTENCE_SHARE = 0.5


def _same_site_page(href: str | None, host: str) -> bool:
    """Whether ``href`` points to another page of the site on ``host`` (relative, or that host
    with or without "www."), not to a place in a page (a table of contents' "#section")."""
    if not href or "#" in href or href.startswith(("mailto:", "javascript:", "tel:")):
        return False
    try:
        parts = urlsplit(_unarchived(href).strip())
    except ValueError:
        return False
    if not parts.netloc:
        return not parts.scheme and bool(parts.path.strip("/"))
    return (parts.hostname or "").removeprefix("www.") == host and bool(parts.path.strip("/"))


def _headline_item(item, text: str, host: str, trim) -> int:  # noqa: ANN001 - an lxml element, trafilatura's trim
    """The words of ``item`` (its trimmed text ``text``) when it reads as another story's headline:
    4-40 words, links to the same site's pages covering 40% of its text ("Chris Evans <a>goes to
    Washington</a>"); else 0."""
    words = len(text.split())
    refs = list(item.iter("ref"))
    # a link into the page is a note's backlink ("↑ 1.0 1.1 <a>Title</a>" in a wiki's references)
    if not _RELATED_WORDS[0] <= words <= _RELATED_WORDS[1] or any("#" in (r.get("href") or "") for r in refs):
        return 0
    links = [trim(r.text_content()) for r in refs if _same_site_page(r.get("href"), host)]
    return words if sum(map(len, links)) >= _RELATED_LINK_SHARE * len(text) else 0


def related_list(element, trim) -> bool:  # noqa: ANN001 - an lxml element, trafilatura's trim
    """Whether the list ``element`` is other stories of the site: most items headlines linked to
    its other pages (knowtechie's "Editors' Recommendations", wired's "More Great WIRED Stories",
    an author box's "Latest posts"). Trafilatura tests a list's link density only below 100
    characters (300 when last), so lists of long headlines stayed. Not a table of contents
    (anchors), sources (other sites), a listicle (names linked, descriptions not), a docs menu or a
    "See also" of titles (short items), key points or sources written as sentences (half the items
    end with a full stop)."""
    host = _PAGE_HOST.get()
    items = element.findall("item")
    # a long list of titles is an index (a wiki's "Appearances": 16 books and games), not a box
    if (host is None or not _RELATED_ITEMS[0] <= len(items) <= _RELATED_ITEMS[1]
            or element.find(".//graphic") is not None):
        return False
    texts = [trim(item.text_content()) for item in items]
    words = [_headline_item(item, text, host, trim) for item, text in zip(items, texts)]
    headlines = [w for w in words if w]
    if not (len(headlines) >= _RELATED_HEADLINE_SHARE * len(items)
            and sum(headlines) >= _RELATED_MEAN_WORDS * len(headlines)):
        return False
    sentences = sum(bool(_ITEM_FULL_STOP.search(text)) for text in texts)
    return sentences < _RELATED_SENTENCE_SHARE * len(items)


def _label(text: str, link_text: str) -> tuple[str, str] | None:
    """``(label, after)``: the text before the one link of ``text`` and the text after it ("Read
    also:" and "" of "Read also: <a>...</a>"); None when nothing comes before the link."""
    start = text.find(link_text)
    if start <= 0:
        return None
    return text[:start].strip(), text[start + len(link_text):].strip()


def _numbered_label(text: str, link_text: str) -> bool:
    """Whether the link follows a numbered label ("Step 1: <a>Download the installer</a>."): a
    step of instructions, not a teaser (found by adversarial testing)."""
    label = (_label(text, link_text) or ("", ""))[0]
    return label.endswith(":") and len(label.split()) <= _LABEL_WORDS and _DIGIT.search(label) is not None


def labelled_link(text: str, link_text: str) -> bool:
    """Whether an element of (trimmed) ``text`` whose one link reads ``link_text`` is a short label
    and that link with nothing after it ("Read also: <a>")."""
    if not _LABELLED_LINK_CHARS[0] <= len(link_text) <= _LABELLED_LINK_CHARS[1]:
        return False
    parts = _label(text, link_text)
    if parts is None:
        return False
    label, after = parts
    # a numbered label ("Step 1:", "Chapter 3:") heads content, not a teaser (found by adversarial
    # testing: "Step 1: <a>Download the installer</a>." went)
    return (len(after) <= 3 and len(label.split()) <= _LABEL_WORDS and _LINK_LABEL.fullmatch(label) is not None
            and not _DIGIT.search(label))


def _size(text: str) -> int:
    """Non-space characters of ``text`` (C string methods: this runs for every text and tail)."""
    if text.isspace():
        return 0
    return (len(text) - text.count(" ") - text.count("\n") - text.count("\t") - text.count("\r")
            - text.count("\xa0"))


def text_sizes(tree) -> dict:
    """Each element's text size (non-space characters of its ``text_content()``) in one bottom-up
    pass: ``text_content()`` per element reads nested containers again and again."""
    sizes: dict = {}
    for element in reversed(list(tree.iter())):  # descendants before their ancestors
        n = sizes.get(element, 0)  # its children's, with their tails
        text = element.text
        if text and isinstance(element.tag, str):  # a comment's text is not text
            n += _size(text)
        sizes[element] = n
        if element is not tree:
            tail = element.tail
            parent = element.getparent()
            sizes[parent] = sizes.get(parent, 0) + n + (_size(tail) if tail else 0)
    return sizes


def orphan_candidates(tree) -> list[tuple[object, list]]:
    """The short lines of ``tree`` that head content, each with that content (the elements whose
    removal leaves it orphaned): see the module docstring. Sizes are non-space characters."""
    sizes = text_sizes(tree)
    found = []
    for heading in tree.iterdescendants(*_ORPHAN_TAGS):
        n = sizes[heading]
        if not 2 <= n <= _ORPHAN_CHARS or heading.get("rend") == "h1" or heading.text_content().rstrip().endswith("."):
            continue
        content = _content_after(heading, tree, sizes)
        if content and sum(sizes[e] for e in content) >= max(2 * n, _ORPHAN_CONTENT):
            found.append((heading, content))
    return found


def _content_after(heading, tree, sizes: dict) -> list | None:
    """The siblings after ``heading`` up to the next short line, or after its container's while
    ``heading`` is all of that container's text; None when text follows that is not in them."""
    node = heading
    for _ in range(_ORPHAN_LEVELS + 1):
        if (node.tail or "").strip():
            return None
        content = []
        sibling = node.getnext()
        while sibling is not None and len(content) <= _ORPHAN_SIBLINGS:
            if isinstance(sibling.tag, str) and sizes[sibling]:
                # the next heading: a short line, not a short list or table (a docs page's
                # "- Returns: <string>" under a pruned version history is the section's content)
                if sizes[sibling] <= _ORPHAN_CHARS and sibling.tag in _NEXT_HEADING_TAGS:
                    return content or None
                if sibling.tag in _STRIPPED:  # its text would stay in the container
                    return None
                content.append(sibling)
            if (sibling.tail or "").strip():
                return None
            sibling = sibling.getnext()
        if content:
            return content
        parent = node.getparent()
        if parent is None or parent is tree or sizes.get(parent) != sizes[heading]:
            return None
        node = parent
    return None


def _within(element, tree) -> bool:
    return element is tree or any(ancestor is tree for ancestor in element.iterancestors())


#: a standfirst's class or id word (``div.lead``, ``p.ts-intro``, ``div.entry-excerpt``, ``p.af-chapo``,
#: TYPO3 news' ``div.teaser-text``): the article's lead, written before the body container
_LEAD_WORD = re.compile(r"(?:^|[^a-z])(?:lead|intro|introduction|teaser|excerpt|standfirst|dek|chapo|summary|"
                        r"subtitle|abstract|description)(?:[^a-z]|$)")
#: how many containers up from the chosen body the lead is looked for (the article holding both)
_LEAD_LEVELS = 2
#: a lead is prose: at least this many non-space characters with a sentence's end, mostly not links
_LEAD_CHARS = (60, 1500)
_SENTENCE_END = re.compile(r"[.!?…]")
#: what a lead never holds (converted tags): headings, lists, tables (a teaser card, a menu)
_NOT_IN_LEAD = ("head", "list", "table", "graphic")
#: the attribute of the paragraph :func:`outside_lead`'s text is written in
_LEAD_MARK = "data-refinery-lead"


def _lead_like(element) -> bool:  # noqa: ANN001 - an lxml element
    words = f"{element.get('class') or ''} {element.get('id') or ''}".lower()
    return bool(_LEAD_WORD.search(words))


#: converted tags a line ends at: a lead of two paragraphs is not one glued word at their seam
_LEAD_BLOCKS = ("p", "div", "head", "lb", "list", "item", "quote", "section", "header")


def _spaced_text(element) -> str:  # noqa: ANN001 - an lxml element
    """``element.text_content()`` with a space where each block inside it starts and ends
    (``<p>open.</p><p>And</p>``: "open. And", not "open.And"); the page's tree is left as it is."""
    spaced = deepcopy(element)
    for block in spaced.iter(*_LEAD_BLOCKS):
        block.text = " " + (block.text or "")
        block.tail = " " + (block.tail or "")
    return spaced.text_content()


def _lead_text(element, trim) -> str | None:  # noqa: ANN001 - an lxml element, trafilatura's trim
    """The element's text when it reads as a standfirst (prose, not links, no headings or lists)."""
    if any(element.find(f".//{tag}") is not None for tag in _NOT_IN_LEAD):
        return None
    text = trim(_spaced_text(element))
    size = _size(text)
    if not _LEAD_CHARS[0] <= size <= _LEAD_CHARS[1] or not _SENTENCE_END.search(text):
        return None
    links = sum(_size(a.text_content()) for a in element.iter("ref", "a"))
    return text if links * 2 < size else None


def outside_lead(chosen, trim, header_lead: bool = False) -> str | None:  # noqa: ANN001 - an lxml element, trafilatura's trim
    """The article's standfirst when it sits before the body container trafilatura chose, outside
    it (``<div class="lead">`` or ``<header>``'s ``<p class="intro">`` beside
    ``<div class="article-body">``): the last lead-classed prose element before ``chosen``, within
    its container up to _LEAD_LEVELS up, after the page's ``<h1>`` there (the title, then the lead).
    With ``header_lead``, a prose ``<p>`` of the ``<header>`` holding that ``<h1>`` is a lead
    whatever its class (cnet.de's unclassed standfirst), and no lead is a picture's caption: none
    inside a ``<figure>`` nor holding a copyright mark (a caption "... © CAE" came in before the
    lead on two held-out pages)."""
    container = chosen
    body: str | None = None  # the chosen body's text: the same at every level, read once
    for _ in range(_LEAD_LEVELS):
        container = container.getparent()
        if container is None or container.tag in ("body", "html"):
            return None
        lead = _last_lead(container, chosen, header_lead)
        text = _lead_text(lead, trim) if lead is not None else None
        if text and header_lead and _caption(lead, text):
            continue
        if not text:
            continue
        if body is None:
            body = trim(chosen.text_content())
        # a lead stands over a longer body: over a short one trafilatura moves on to a wider
        # content area and keeps what it took from this one (the lead twice: holzwerken.net)
        # compared without spaces: the body's text_content() glues its paragraphs
        if "".join(text.split()) not in "".join(body.split()) and _size(body) >= 2 * _size(text):
            return text
    return None


def _last_lead(container, chosen, header_lead: bool = False):  # noqa: ANN001, ANN202 - lxml elements
    """The last lead-classed element of ``container`` before ``chosen`` and after an ``<h1>``
    (with ``header_lead``, or a ``<p>`` of the ``<header>`` holding that ``<h1>``)."""
    lead, title_seen = None, False
    for element in container.iter():
        if element is chosen:
            break
        if element.tag == "head" and element.get("rend") == "h1":
            title_seen, lead = True, None  # a lead comes after its title
        elif title_seen and isinstance(element.tag, str) and (
                _lead_like(element) or header_lead and _title_header_paragraph(element)) and (
                lead is None or lead not in element.iterancestors()):
            # its ancestors, not the lead's descendants: those made a page of many nested
            # lead-classed elements quadratic (30k spans: past the extraction timeout)
            lead = element
    return lead


#: a class or id word of a post's metadata line (WordPress/Genesis ``p.entry-meta``, ``span.byline``,
#: ``span.entry-author``, ``time.entry-date``, ``span.entry-comments-link``): not a standfirst
_META_WORD = re.compile(r"(?:^|[^a-z])(?:meta|byline|author|date|dateline|time|posted|published|comments?)(?:[^a-z]|$)")


def _title_header_paragraph(element) -> bool:  # noqa: ANN001 - an lxml element
    """A ``<p>`` right inside the ``<header>`` that holds the page's ``<h1>`` (converted tags), not
    the post's metadata line (classed as such, it or a part of it: elavegan's ``p.entry-meta`` "By
    Ela on | 18 Comments. This post may contain affiliate links*..." came in as a lead)."""
    parent = element.getparent()
    return (element.tag == "p" and parent is not None and parent.tag == "header"
            and parent.find("./head[@rend='h1']") is not None and not _meta_like(element))


def _meta_like(element) -> bool:  # noqa: ANN001 - an lxml element
    """Whether the element or one inside it is classed (or id'd) as a byline, date or comment count."""
    return any(_META_WORD.search(f"{e.get('class') or ''} {e.get('id') or ''}".lower())
               for e in element.iter() if isinstance(e.tag, str))


def _caption(element, text: str) -> bool:  # noqa: ANN001 - an lxml element
    """A picture's caption or credit, not a standfirst: inside a figure, or holding a copyright mark."""
    return "\u00a9" in text or next(element.iterancestors("figure", "figcaption"), None) is not None


#: a caption or credit block has at most this many words (trafilatura's figures have no limit; a
#: longer element so named is taken for a wrapper of content)
CREDIT_BLOCK_WORDS = 60
#: the words of a class or id: lower-case runs, capitalised words, upper-case runs ("imageCaption",
#: "ACredit_sign", "summary-credit")
_NAME_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
#: a word naming a caption or credit: "caption(s)", "credit(s)", "cred" (houstonpress' ``div.cred``),
#: "credito(s)", "crédit(s)", or one ending so ("fotocredit", "imgcredits", "adCaption")
_CREDIT_WORD = re.compile(r"(?:caption|credit|cr[eé]dit[oi]?)s?|cred|\w+(?:caption|credit)s?", re.IGNORECASE)
#: words beside "credit" that name money, not a picture's holder: "credit-card", "creditScore"
_MONEY_WORDS = frozenset({"card", "cards", "score", "scores", "union", "limit", "limits", "check", "rating",
                          "ratings", "line", "lines", "report", "loan", "loans", "debit", "tax"})
#: elements that are never a picture's caption or credit
_NOT_CREDIT_TAGS = frozenset({"head", "body", "html", "article", "main", "doc"})


def credit_named(element) -> bool:  # noqa: ANN001 - an lxml element
    """Whether the element's class or id names a caption or a picture's credit (a word of it)."""
    name = f"{element.get('class') or ''} {element.get('id') or ''}"
    low = name.lower()
    if "cap" not in low and "cr" not in low:  # cheap test first: most elements are not so named
        return False
    words = [w.lower() for w in _NAME_WORDS.findall(name)]
    if not any(_CREDIT_WORD.fullmatch(w) for w in words):
        return False
    # "credit-card", "credit-line" (a loan's), "creditScore": money; "cb-credit-line" is a credit's line
    return "credit" not in words or not _MONEY_WORDS.intersection(words) or "cb" in words


def credit_blocks(tree, trim) -> list:  # noqa: ANN001 - an lxml tree, trafilatura's trim
    """The outermost elements of ``tree`` named as a caption or credit (:func:`credit_named`) with
    at most :data:`CREDIT_BLOCK_WORDS` words, not headings (:data:`_NOT_CREDIT_TAGS`)."""
    found = []
    for element in tree.iter():
        if not isinstance(element.tag, str) or element.tag in _NOT_CREDIT_TAGS or not credit_named(element):
            continue
        if any(e in found for e in element.iterancestors()):
            continue
        if len(trim(element.text_content()).split()) <= CREDIT_BLOCK_WORDS:
            found.append(element)
    return found


#: the stage parameter names of the rules
RULE_PARAMS: tuple[str, ...] = tuple(f.name for f in fields(PrecisionRules))
#: the rules at trafilatura's values, as stage parameters
TRAFILATURA_PARAMS: dict[str, object] = asdict(TRAFILATURA)


def _inline_tail_is_content(element) -> bool:
    """Whether the tail of an empty inline element is content to keep: inside code (highlight.js
    writes ``<span class="hljs-params"></span>) {`` and the rest of the line), or a text of
    :data:`_INLINE_TAIL_CHARS` or more (WordPress's ``<span id="more-1"></span>`` opens a whole
    paragraph; an empty ``<em></em>`` sits mid-sentence). An icon's short label (``<i
    class="fa-share"></i> Share``) still goes with it. Found by adversarial testing: code lines
    merged and paragraphs vanished, which trafilatura's default keeps; the evaluation set's
    scores were 93.18% / 7.09% before and are 93.28% / 7.13% with it."""
    tail = element.tail
    if not tail or not tail.strip():
        return False
    return len(tail.strip()) >= _INLINE_TAIL_CHARS or next(element.iterancestors("code", "pre"), None) is not None


#: sha256 of trafilatura 2.3's ``htmlprocessing.collect_link_info``, mirrored by :class:`_LinkPass`
#: (with ``link_density_test`` and ``delete_by_link_density``, whose sources ``install`` compares)
_COLLECT_LINK_INFO_SHA256 = "f19694013146ff10d5f57993169a6262be655b10ee49d477679e6e3243683def"

#: the link-density passes run as :class:`_LinkPass` (False: trafilatura's ``delete_by_link_density``
#: with :func:`install`'s ``link_teaser_test``; the same decisions, for A/B checks)
LEAN_LINK_DENSITY = True
#: :class:`_LinkPass` tests the innermost elements first and reads an element's text only when the
#: lower bound its tested descendants give does not decide (False: every tested element's text is
#: read, in document order; the same decisions, for A/B checks)
LINK_TEXT_BOUNDS = True
#: the most :func:`labelled_link`'s label (30 characters) and what follows the link (3) add to the
#: link's text, with a space between each: an element's text longer than the link's by more is no
#: labelled link
_LABELLED_LINK_SLACK = 35


def _link_holders(subtree, tagname: str) -> set:  # noqa: ANN001 - an lxml element
    """The ``tagname`` elements holding a ``ref`` and no ``graphic`` (and their ancestors of that
    tag above ``subtree``): one walk up from each ref and graphic, instead of a ``findall`` over each
    element's whole subtree. The link-density test keeps every other element without reading it."""
    holders: set = set()
    for ref in subtree.iter("ref"):
        for ancestor in ref.iterancestors(tagname):
            if ancestor in holders:  # its ancestors of the tag are marked already
                break
            holders.add(ancestor)
    if holders:
        graphics: set = set()
        for graphic in subtree.iter("graphic"):
            for ancestor in graphic.iterancestors(tagname):
                if ancestor in graphics:
                    break
                graphics.add(ancestor)
        holders -= graphics
    return holders


#: the link-density calls of trafilatura 2.3's ``prune_unwanted_sections`` that one :class:`_LinkPass`
#: serves, in order ((tag, backtracking)): its two rounds, with nothing else changing the tree between them
_ROUND_CALLS = (("div", True), ("list", False), ("p", False)) * 2


class _LinkPass:
    """``delete_by_link_density`` calls of trafilatura 2.3 with :func:`install`'s rules, deciding
    as trafilatura's loop over ``link_teaser_test`` does, at less CPU: nothing changes the tree
    before the loop's deletions, so each element's trimmed text and each link's are computed once
    (a link's text was trimmed again for each of its tested ancestors), elements without links are
    skipped without a ``findall`` each, and each element's links are found once (the rules' test
    and trafilatura's each looked them up).

    Across the two rounds of ``prune_unwanted_sections`` (:meth:`takes`) the texts and each
    element's test result are kept until a deletion could change them: a deleted element's
    ancestors (their text) and its previous sibling (its ``getnext()``) are forgotten, so the second
    round tests only what the first one's deletions touched."""

    def __init__(self, trim, htmlprocessing, calls: tuple = ()) -> None:  # noqa: ANN001 - trafilatura's
        self.trim, self.htmlprocessing = trim, htmlprocessing
        self.texts: dict = {}
        self.results: dict = {}
        self.calls = list(calls)  # the calls still to serve, in order
        self.favor_precision: bool | None = None

    def takes(self, tagname: str, backtracking: bool, favor_precision: bool) -> bool:
        """Whether this call is the next of :data:`_ROUND_CALLS` (else no later call is served)."""
        if self.calls and self.calls[0] == (tagname, backtracking) and self.favor_precision in (None, favor_precision):
            self.calls.pop(0)
            self.favor_precision = favor_precision
            return True
        self.calls.clear()
        return False

    def forget(self, element) -> None:  # noqa: ANN001 - an lxml element about to be deleted
        """Drop what deleting ``element`` may change: its ancestors' texts and results, and its
        previous sibling's result (that sibling may become the last)."""
        for ancestor in element.iterancestors():
            self.texts.pop(ancestor, None)
            self.results.pop(ancestor, None)
        self.results.pop(element.getprevious(), None)

    def text(self, element) -> str:  # noqa: ANN001 - an lxml element
        """``trim(element.text_content())``, once per element and call."""
        text = self.texts.get(element)
        if text is None:
            text = self.texts[element] = self.trim(element.text_content())
        return text

    def run(self, subtree, tagname: str, backtracking: bool, favor_precision: bool):  # noqa: ANN001, ANN201
        """trafilatura's ``delete_by_link_density`` loop (its source mirrored). The elements are
        tested innermost first (nothing changes the tree before the deletions, so the order of the
        tests changes no answer): a tested element's text length, or its own lower bound, bounds
        its tested ancestors' from below (:meth:`_pass_up`), and a test reads an element's text
        only when that bound does not decide it (a page's outer divs hold its whole text)."""
        deletions = []
        len_threshold = 200 if favor_precision else 100
        depth_threshold = 1 if favor_precision else 3
        holders = _link_holders(subtree, tagname)
        # no link, or an image container: (False, False) without a test
        tested = [elem for elem in subtree.iter(tagname) if elem in holders] if holders else []
        bounds: dict = {}
        for elem in reversed(tested) if LINK_TEXT_BOUNDS else tested:
            if elem not in self.results:
                self.results[elem] = self.test(elem, favor_precision, elem.findall(".//ref"), bounds.get(elem, 0))
            if LINK_TEXT_BOUNDS:
                self._pass_up(elem, tagname, holders, bounds)
        for elem in tested:
            result, short_with_links = self.results[elem]
            if result or (
                backtracking
                and short_with_links
                and len(elem) >= depth_threshold
                and len(self.text(elem)) < len_threshold
            ):
                parent = elem.getparent()
                if tagname == "p" and parent is not None and parent.tag in ("item", "td", "th"):
                    continue
                deletions.append(elem)
        for elem in dict.fromkeys(deletions):
            self.forget(elem)
            self.htmlprocessing.delete_element(elem)
        return subtree

    def _pass_up(self, elem, tagname: str, holders: set, bounds: dict) -> None:  # noqa: ANN001 - an lxml element
        """Add ``elem``'s text length (its trimmed ``text_content()``: read, else its lower bound)
        to the bound of its nearest tested ancestor. Exact: the texts of disjoint descendants are
        disjoint pieces of an element's text, and a piece's trimmed length (its non-space
        characters and the single spaces between its words) is no more than its share of the
        whole's, so their sum bounds the whole's from below."""
        text = self.texts.get(elem)
        size = len(text) if text is not None else bounds.get(elem, 0)
        if size:
            for ancestor in elem.iterancestors(tagname):
                if ancestor in holders:
                    bounds[ancestor] = bounds.get(ancestor, 0) + size
                    break

    def test(self, element, favor_precision: bool, links: list, bound: int = 0) -> tuple[bool, bool]:  # noqa: ANN001
        """:func:`install`'s ``link_teaser_test`` for an element with ``links`` and no graphic,
        whose trimmed text is at least ``bound`` characters long (its text is read only when
        that does not decide a comparison)."""
        rules = _ACTIVE.get()
        heading = element.tag == "head"
        if (rules is not None and (rules.keep_text_with_empty_links if heading else rules.keep_nested_heading_text)
                and not any(self.text(link) for link in links)  # strip() and trim() agree on emptiness
                and (bound >= _EMPTY_LINKS_TEXT_CHARS or len(self.text(element)) >= _EMPTY_LINKS_TEXT_CHARS)
                and (heading or in_heading(element))):  # last: the ancestors' walk
            return False, False
        if (favor_precision and rules is not None and rules.drop_related_lists and element.tag == "list"
                and related_list(element, self.trim)):
            return True, False
        teasers = rules is not None and rules.link_teaser_share < TRAFILATURA.link_teaser_share
        if favor_precision and (teasers or (rules is not None and rules.drop_labelled_links)) and len(links) == 1:
            link_text = self.text(links[0])
            # the element's text matters only if it may be short enough for one of the two rules
            if len(link_text) > 10 and (
                    (teasers and len(link_text) > bound * rules.link_teaser_share)
                    or (rules.drop_labelled_links and bound <= len(link_text) + _LABELLED_LINK_SLACK)):
                text = self.text(element)
                if (teasers and len(link_text) > len(text) * rules.link_teaser_share
                        and not _numbered_label(text, link_text)) or (
                        rules.drop_labelled_links and labelled_link(text, link_text)):
                    return True, False
        return self.density_test(element, favor_precision, links, bound)

    def density_test(self, element, favor_precision: bool, links: list, bound: int = 0) -> tuple[bool, bool]:  # noqa: ANN001
        """trafilatura's ``link_density_test`` past its two first returns (its source mirrored),
        the element's trimmed text being at least ``bound`` characters long: each comparison
        with its length reads the text only when ``bound`` does not decide it."""
        if len(links) == 1:
            len_threshold = 10 if favor_precision else 100
            link_text = self.text(links[0])
            if (len(link_text) > len_threshold and len(link_text) > bound * 0.9
                    and len(link_text) > len(self.text(element)) * 0.9):
                return True, False
        if element.tag == "p":
            limitlen = 60 if element.getnext() is None else 30
        elif element.getnext() is None:
            limitlen = 300
        else:
            limitlen = 100
        if bound < limitlen:  # else the text is at least limitlen long
            elemlen = len(self.text(element))
            if elemlen < limitlen:
                linklen, elemnum, shortelems = self.link_info(links)
                if elemnum == 0:
                    return True, False
                return linklen > elemlen * 0.8 or (elemnum > 1 and shortelems / elemnum > 0.8), True
        if len(links) > 4:
            linklen, elemnum, _ = self.link_info(links)
            ratio = self.htmlprocessing.LINK_FARM_RATIO
            if (linklen > bound * ratio and linklen > len(self.text(element)) * ratio and linklen < 100 * elemnum
                    and not self.htmlprocessing.is_paragraph_listing(links)):
                return True, False
        return False, False

    def link_info(self, links: list) -> tuple[int, int, int]:
        """trafilatura's ``collect_link_info`` (its source mirrored), without the texts."""
        lengths = [n for n in (len(self.text(link)) for link in links) if n]
        return sum(lengths), len(lengths), sum(1 for n in lengths if n < 10)


@functools.cache  # once per process
def install() -> bool:
    """Put the replacements in place; False, with a warning, when this trafilatura's functions
    are not the ones they mirror (then its own rules apply)."""
    from trafilatura import htmlprocessing, main_extractor
    from trafilatura.settings import CUT_EMPTY_ELEMS

    from refinery.stages._extract_helper import _PRUNE_SOURCE_SHA256, _sources_are

    originals = (htmlprocessing.link_density_test, htmlprocessing.prune_html, htmlprocessing.delete_by_link_density,
                 main_extractor.prune_unwanted_sections)
    if not _sources_are(originals + (htmlprocessing.prune_unwanted_nodes,),
                        tuple(_SOURCES_SHA256.values()) + (_PRUNE_SOURCE_SHA256,)):
        import trafilatura

        log.warning("trafilatura %s: the extract stage's precision rules (docs/extraction.md) are written for "
                    "trafilatura 2.3.1 and are not applied; trafilatura's own rules are", trafilatura.__version__)
        return False
    link_density_test, prune_html, delete_by_link_density, prune_unwanted_sections = originals
    trim, delete_element = htmlprocessing.trim, htmlprocessing.delete_element
    lean_pass = _sources_are((htmlprocessing.collect_link_info,), (_COLLECT_LINK_INFO_SHA256,))

    def link_teaser_test(element, favor_precision=False):
        rules = _ACTIVE.get()
        if rules is not None and (rules.keep_text_with_empty_links or rules.keep_nested_heading_text) and (
                _text_with_empty_links(element, rules.keep_nested_heading_text)
                and (rules.keep_text_with_empty_links or element.tag != "head")):
            return False, False
        if (favor_precision and rules is not None and rules.drop_related_lists and element.tag == "list"
                and related_list(element, trim)):
            return True, False
        # at trafilatura's own share, its test below decides
        teasers = rules is not None and rules.link_teaser_share < TRAFILATURA.link_teaser_share
        if favor_precision and (teasers or (rules is not None and rules.drop_labelled_links)):
            links = element.findall(".//ref")
            if len(links) == 1 and element.find(".//graphic") is None:
                link_text = trim(links[0].text_content())
                if len(link_text) > 10:
                    text = trim(element.text_content())
                    if (teasers and len(link_text) > len(text) * rules.link_teaser_share
                            and not _numbered_label(text, link_text)) or (
                            rules.drop_labelled_links and labelled_link(text, link_text)):
                        return True, False
        return link_density_test(element, favor_precision)

    def prune_empty_elements(tree, focus="balanced"):
        rules = _ACTIVE.get()
        if rules is None or focus != "precision" or not rules.keep_block_tails:
            return prune_html(tree, focus)
        for element in [e for e in tree.iterdescendants(CUT_EMPTY_ELEMS) if e.text is None and len(e) == 0]:
            delete_element(element, keep_tail=element.tag not in _INLINE or _inline_tail_is_content(element))
        return tree

    def density_pass(subtree, tagname, backtracking, favor_precision):
        # the lean pass mirrors trafilatura's loop over our teaser test: only while that test is in place
        if LEAN_LINK_DENSITY and lean_pass and htmlprocessing.link_density_test is link_teaser_test:
            rounds = _ROUNDS.get()
            link_pass = (rounds if rounds is not None and rounds.takes(tagname, backtracking, favor_precision)
                         else _LinkPass(trim, htmlprocessing))
            return link_pass.run(subtree, tagname, backtracking, favor_precision)
        return delete_by_link_density(subtree, tagname, backtracking, favor_precision)

    def sections(tree, potential_tags, options, *args, **kwargs):
        if not (LEAN_LINK_DENSITY and lean_pass):  # trafilatura's loop: nothing to serve (A/B's A side)
            return prune_unwanted_sections(tree, potential_tags, options, *args, **kwargs)
        # one lean link pass serves the two rounds of this call (its source is the one compared above)
        rounds = _ROUNDS.set(_LinkPass(trim, htmlprocessing, _ROUND_CALLS))
        try:
            return prune_unwanted_sections(tree, potential_tags, options, *args, **kwargs)
        finally:
            _ROUNDS.reset(rounds)

    def delete_with_headings_by_link_density(subtree, tagname, backtracking=False, favor_precision=False):
        rules = _ACTIVE.get()
        if rules is None or not favor_precision or not rules.drop_link_list_headings or tagname not in ("div", "list"):
            return density_pass(subtree, tagname, backtracking, favor_precision)
        # the heading right before each candidate (no text between them, not the page's <h1> nor in
        # its title header): it goes if the candidate goes and it is left over nothing (the next
        # heading or its container's end follows)
        headings = {}
        for elem in subtree.iter(tagname):
            prev = elem.getprevious()
            if (prev is not None and prev.tag == "head" and prev.get("rend") != "h1"
                    and not (prev.tail or "").strip() and next(prev.iterancestors(_TITLE_HEADER), None) is None):
                headings[elem] = prev
        subtree = density_pass(subtree, tagname, backtracking, favor_precision)
        for elem, heading in headings.items():
            if elem.getparent() is None and heading.getparent() is not None:  # elem deleted, heading not yet
                after = heading.getnext()
                if after is None or after.tag == "head":
                    rounds = _ROUNDS.get()
                    if rounds is not None:  # the heading's ancestors and previous sibling change
                        rounds.forget(heading)
                    delete_element(heading)
        return subtree

    def prune_sections(tree, potential_tags, options, *args, **kwargs):
        rules = _ACTIVE.get()
        if rules is None or options.focus != "precision":
            return sections(tree, potential_tags, options, *args, **kwargs)
        chosen = tree
        if rules.keep_repeated_posts and not args and not kwargs:  # the main pass's chosen subtree
            tree = repeated_posts_container(tree)
        if rules.keep_split_bodies and not args and not kwargs and tree is chosen:
            tree = split_body_container(tree)
        if rules.keep_outside_lead and not args and not kwargs:
            # an earlier content area that trafilatura gave up on may have got one (holzwerken.net)
            for earlier in tree.xpath(f".//p[@{_LEAD_MARK}]"):
                delete_element(earlier, keep_tail=False)
            lead = outside_lead(tree, trim, header_lead=rules.keep_header_lead)
            if lead:  # a plain paragraph: the lead's own class would be pruned as a teaser again
                paragraph = tree.makeelement("p", {_LEAD_MARK: ""})
                paragraph.text = lead
                tree.insert(0, paragraph)
        guarded = None
        if rules.prune_inside_wrappers:
            # boxes inside a wrapper go before the orphaned headings are sought: they were
            # never the content under a heading (aclu.org's title over its author box went)
            later, inside = guarded_matches(tree, main_extractor.OVERALL_DISCARD_XPATH)
            for element in inside:
                delete_element(element)
            guarded = _GUARDED.set((tree, later))
        orphans = orphan_candidates(tree) if rules.drop_orphaned_headings else []
        # after convert_tags an <h1> is <head rend="h1">; the header holding it is the article's
        titles = ([h for h in tree.iter("header") if h.find(".//head[@rend='h1']") is not None]
                  if rules.keep_title_header else [])
        for header in titles:
            header.tag = _TITLE_HEADER
        if rules.drop_credit_blocks:
            # with trafilatura's own caption rule (DISCARD_IMAGE_ELEMENTS), after the orphaned
            # headings are sought: a heading over a gallery of captions goes with them, as it did
            for element in credit_blocks(tree, trim):
                delete_element(element, keep_tail=True)
        try:
            tree = sections(tree, potential_tags, options, *args, **kwargs)
        finally:
            for header in titles:
                header.tag = "header"
            if guarded is not None:
                _GUARDED.reset(guarded)
        for heading, content in orphans:
            if _within(heading, tree) and not any(_within(e, tree) and trim(e.text_content()) for e in content):
                delete_element(heading, keep_tail=True)
        return tree

    previous_prune_nodes = main_extractor.prune_unwanted_nodes  # the lean path's, when installed

    def prune_nodes(tree, nodelist, with_backup=False):
        rules = _ACTIVE.get()
        if not with_backup or rules is None or not rules.prune_inside_wrappers:
            return previous_prune_nodes(tree, nodelist, with_backup)
        found = _GUARDED.get()
        # found by prune_sections on this tree: the XPaths need not run again (the renamed title
        # header and the orphan search between them change no match)
        for element in (found[1] if found is not None and found[0] is tree else guarded_matches(tree, nodelist)[0]):
            delete_element(element)
        return tree

    prune_nodes._refinery = True
    prune_nodes._original = previous_prune_nodes
    main_extractor.prune_unwanted_nodes = prune_nodes  # the guarded call is prune_unwanted_sections'
    for replacement, original in ((link_teaser_test, link_density_test), (prune_empty_elements, prune_html),
                                  (delete_with_headings_by_link_density, delete_by_link_density),
                                  (prune_sections, prune_unwanted_sections)):
        replacement._refinery = True
        replacement._original = original
    htmlprocessing.link_density_test = link_teaser_test  # read by delete_by_link_density
    htmlprocessing.prune_html = prune_empty_elements  # read by tree_cleaning
    main_extractor.prune_unwanted_sections = prune_sections  # read by _extract
    main_extractor.delete_by_link_density = delete_with_headings_by_link_density  # imported by name there
    if _sources_are((main_extractor.recover_wild_text,), (_RECOVER_WILD_TEXT_SHA256,)):
        _recover_wild_text._refinery = True
        _recover_wild_text._original = main_extractor.recover_wild_text
        main_extractor.recover_wild_text = _recover_wild_text  # read by extract_content
    else:
        log.warning("trafilatura's recover_wild_text is not the one keep_wild_headings mirrors: that rule is not applied")
    return True


# --- headings on the wild-text path (keep_wild_headings) -------------------------------------

#: sha256 of trafilatura 2.3.1's ``main_extractor.recover_wild_text``, mirrored by :func:`_recover_wild_text`
_RECOVER_WILD_TEXT_SHA256 = "335f6d13321fd4e3304299d7265493a5d83d63ae4da4a7b2beb6fd3e05cdebfd"
#: the texts of the headings :func:`_recover_wild_text` added in the first pass running (see
#: :func:`wild_headings`), None when nobody asks
_WILD_HEADINGS: ContextVar[list[str] | None] = ContextVar("refinery_wild_headings", default=None)


@contextmanager
def wild_headings() -> Iterator[list[str]]:
    """Within this block the texts of the headings recovered on the wild-text path are appended to
    the list yielded: the cascade measures the first text without them (:func:`uncounted`)."""
    found: list[str] = []
    token = _WILD_HEADINGS.set(found)
    try:
        yield found
    finally:
        _WILD_HEADINGS.reset(token)


def uncounted(text: str, headings: list[str]) -> str:
    """``text`` without one line per recovered heading: the text trafilatura gave without the rule,
    whose length decides the fallback pass (a longer wild text must not stop it: zdf.de, h28)."""
    if not headings:
        return text
    left = list(headings)
    kept = []
    for line in text.split("\n"):
        if line in left:
            left.remove(line)
        else:
            kept.append(line)
    return "\n".join(kept)


#: the elements (trafilatura's tags) a section's text starts with: a paragraph, or a quoted block
#: (netbits' sections each open with a ``<blockquote>``)
_SECTION_STARTS = frozenset({"p", "quote"})


def heading_before(element):  # noqa: ANN001, ANN201 - lxml elements
    """The paragraph or quote (:data:`_SECTION_STARTS`) right after heading ``element``, no text
    between: its next sibling, or that sibling's first child (``<h2>..</h2><div><p>..</p>``); None
    when none is."""
    if (element.tail or "").strip():
        return None
    after = element.getnext()
    if after is not None and after.tag not in _SECTION_STARTS and not (after.text or "").strip() and len(after):
        after = after[0]
    return after if after is not None and after.tag in _SECTION_STARTS else None


#: paragraphs with text a wild heading's container holds at least (:func:`section_heading`)
_SECTION_PARAGRAPHS = 2


def section_heading(heading) -> bool:  # noqa: ANN001 - an lxml element
    """Whether ``heading`` (trafilatura's ``head``) heads a section of the page's text: not its title
    (an ``<h1>``: the title header's rule keeps a title where the page marks one), and its container
    holds at least :data:`_SECTION_PARAGRAPHS` paragraphs with text, as an article's does around its
    section headings, where a card (a teaser's headline over its blurb, a box's heading over its one
    call to subscribe) holds one (session 50: nestle-marktplatz's 16 product-test cards, dw.com's
    titles)."""
    if heading.get("rend") == "h1":
        return False
    container = heading.getparent()
    if container is None:
        return False
    found = 0
    for paragraph in container.iter("p"):
        if paragraph.text_content().strip():
            found += 1
            if found >= _SECTION_PARAGRAPHS:
                return True
    return False


#: words of a class or id naming a box beside the page's text: a heading in one heads that box (a
#: sidebar's widget, a search-help modal, a contact flyout, a teaser), not a section of the text
_ASIDE_WORDS = re.compile(
    r"(?:^|[\s_-])(?:widget|sidebar|modal|flyout|popup|teaser|aside)(?:$|[\s_-])|(?<=[a-z])(?:Widget|Sidebar|Modal|Flyout|Popup|Teaser)",
)


def text_region(paragraphs):  # noqa: ANN001, ANN201 - lxml elements
    """The deepest element holding at least half the text of ``paragraphs`` (the wild-text path's
    candidates): the page's text region, where its section headings are; None when none has text."""
    weight: dict = {}
    total = 0
    for paragraph in paragraphs:
        size = len(paragraph.text_content().strip())
        if not size:
            continue
        total += size
        for ancestor in paragraph.iterancestors():
            weight[ancestor] = weight.get(ancestor, 0) + size
    held = [element for element, size in weight.items() if 2 * size >= total]
    # the elements holding half form one chain of ancestors: the deepest has the most of them
    return max(held, key=lambda element: sum(1 for _ in element.iterancestors()), default=None)


def in_text_region(element, region) -> bool:  # noqa: ANN001 - lxml elements
    """Whether ``element`` (the paragraph or quote a wild heading is over) lies in ``region``
    (:func:`text_region`), or in a sibling of the same tag and class as the region or one of its
    ancestors (a list of posts, a lexicon's entries, a home page's sections, netbits' quoted
    sections: one of them may hold half the text), and in no box beside the text on the way there
    (:data:`_ASIDE_WORDS` in a class or id: a sidebar's widget, a modal, a teaser)."""
    if region is None:
        return True
    kinds = {(element.getparent(), element.tag, element.get("class")) for element in (region, *region.iterancestors())}
    for ancestor in element.iterancestors():
        if ancestor is region or (ancestor.getparent(), ancestor.tag, ancestor.get("class")) in kinds:
            return True
        if _ASIDE_WORDS.search(f"{ancestor.get('class') or ''} {ancestor.get('id') or ''}"):
            return False
    return False


def _recover_wild_text(tree, result_body, options, potential_tags=None, consumed=None):  # noqa: ANN001, ANN202
    """trafilatura's ``recover_wild_text`` (its source mirrored), adding in precision mode with
    ``keep_wild_headings`` each section heading (:func:`section_heading`) right before a paragraph it
    recovers (:func:`heading_before`);
    the heading's text joins no dedup of the paragraphs, so they are the ones trafilatura takes."""
    from copy import deepcopy

    from trafilatura import main_extractor as me

    rules = _ACTIVE.get()
    if rules is None or not rules.keep_wild_headings or options.focus != "precision":
        return _recover_wild_text._original(tree, result_body, options, potential_tags, consumed)
    me.LOGGER.debug("Recovering wild text elements")
    potential_tags = set(me.TAG_CATALOG if potential_tags is None else potential_tags)
    search_expr = ".//code|.//p|.//quote|.//table|.//div[contains(@class, 'w3-code')]"
    search_tree = me.prune_unwanted_sections(tree, potential_tags, options, keep_teasers=options.fast)
    subelems = search_tree.xpath(search_expr)
    # the rule: the heading over each paragraph, found before any element moves to the result
    headings = {}
    region = text_region(el for el in subelems if el.tag == "p")
    for heading in search_tree.iter("head"):
        paragraph = heading_before(heading)
        if (paragraph is not None and not (consumed and heading in consumed) and section_heading(heading)
                and in_text_region(paragraph, region)):
            headings[paragraph] = heading
    found = _WILD_HEADINGS.get()
    elem_texts = [me._elem_text(el) for el in result_body]
    existing = "\n".join(filter(None, elem_texts))
    existing_elems = set(elem_texts)
    handled: set = set()
    for subelem in subelems:
        if (consumed and subelem in consumed) or any(a in handled for a in subelem.iterancestors()):
            continue
        heading = headings.get(subelem)  # before handle_textelem moves or marks anything
        heading = me.handle_titles(deepcopy(heading), options) if heading is not None else None
        processed = me.handle_textelem(subelem, potential_tags, options)
        if processed is None:
            continue
        if processed is subelem:
            handled.add(subelem)
        text = me._elem_text(processed)
        images = {img.get("src") for img in processed.iter("graphic")}
        if not text and images and images <= {g.get("src") for g in result_body.iter("graphic")}:
            continue
        under_cap = len(existing) <= me.DEDUPE_SCAN_CAP
        fragment = me.trim(text + (processed.tail or "")) if me.text_chars_test(processed.tail) else ""
        if text and (
            text in existing_elems
            or (under_cap and ((len(text) > me.MIN_DUPLICATE_LENGTH and text in existing) or (fragment and fragment in existing)))
        ):
            continue
        if heading is not None and text:
            _add_heading(result_body, heading, text, existing_elems, found)
        result_body.append(processed)
        if under_cap:
            existing += "\n" + (fragment or text)
        existing_elems.add(text)
    return result_body


def _add_heading(result_body, heading, text: str, existing_elems: set, found: list | None) -> None:  # noqa: ANN001
    """Append ``heading`` before the paragraph of text ``text`` unless it is already there, or would
    change which repeated paragraphs trafilatura drops after (it drops one equal to the one before)."""
    from trafilatura.main_extractor import _elem_text

    title = _elem_text(heading)
    if not title or title in existing_elems or title == text:
        return
    if len(result_body) and _elem_text(result_body[-1]) == text:
        return
    heading.tail = None
    result_body.append(heading)
    if found is not None:
        found.append(title)
