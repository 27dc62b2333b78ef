"""Four of trafilatura's precision-mode rules, changed (issue 13; docs/extraction.md, "Precision
rules, session 22").

The extract stage's first pass is trafilatura in precision mode. Measured on trafilatura's 990
evaluation pages (both halves alike), on 51 publisher article bodies and read on the 1,087 crawl
pages of the filter benchmark, four of that mode's rules are changed; the fallback (recall mode)
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

The replacements are installed once per process over the trafilatura functions they mirror (their
sources are compared, as for the lean path) and act only inside :func:`active`, which the stage's
cascade enters around each first-pass call, so plain ``trafilatura.extract`` calls keep
trafilatura's rules.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrecisionRules:
    """The four rules' settings (see the module docstring; the stage's parameters of these names
    set them, and its defaults are the shipped values)."""

    link_teaser_share: float
    keep_block_tails: bool
    keep_title_header: bool
    drop_link_list_headings: bool


#: trafilatura's own values: with these, the replacements change nothing
TRAFILATURA = PrecisionRules(link_teaser_share=0.9, keep_block_tails=False, keep_title_header=False,
                             drop_link_list_headings=False)

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

#: the empty elements whose tail still goes with them: inline ones (icons, spacers in a line)
_INLINE = frozenset({"b", "em", "i", "q", "span", "strong"})

_ACTIVE: ContextVar[PrecisionRules | None] = ContextVar("refinery_precision_rules", default=None)


@contextmanager
def active(rules: PrecisionRules | None) -> Iterator[None]:
    """Within this block trafilatura's precision mode uses ``rules`` (None: its own)."""
    token = _ACTIVE.set(rules)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


#: the stage parameter names of the rules
RULE_PARAMS: tuple[str, ...] = tuple(f.name for f in fields(PrecisionRules))
#: the rules at trafilatura's values, as stage parameters
TRAFILATURA_PARAMS: dict[str, object] = asdict(TRAFILATURA)


@functools.cache  # once per process
def install() -> bool:
    """Put the replacements in place; False, with a warning, when this trafilatura's functions
    are not the ones they mirror (then its own rules apply)."""
    from trafilatura import htmlprocessing, main_extractor
    from trafilatura.settings import CUT_EMPTY_ELEMS

    from refinery.stages._extract_helper import _sources_are

    originals = (htmlprocessing.link_density_test, htmlprocessing.prune_html, htmlprocessing.delete_by_link_density,
                 main_extractor.prune_unwanted_sections)
    if not _sources_are(originals, tuple(_SOURCES_SHA256.values())):
        import trafilatura

        log.warning("trafilatura %s: the extract stage's precision rules (docs/extraction.md) are written for "
                    "trafilatura 2.3.1 and are not applied; trafilatura's own rules are", trafilatura.__version__)
        return False
    link_density_test, prune_html, delete_by_link_density, prune_unwanted_sections = originals
    trim, delete_element = htmlprocessing.trim, htmlprocessing.delete_element

    def link_teaser_test(element, favor_precision=False):
        rules = _ACTIVE.get()
        if rules is not None and favor_precision and rules.link_teaser_share < 0.9:
            links = element.findall(".//ref")
            if len(links) == 1 and element.find(".//graphic") is None:
                link_text = trim(links[0].text_content())
                if len(link_text) > 10 and len(link_text) > len(trim(element.text_content())) * rules.link_teaser_share:
                    return True, False
        return link_density_test(element, favor_precision)

    def prune_empty_elements(tree, focus="balanced"):
        rules = _ACTIVE.get()
        if rules is None or focus != "precision" or not rules.keep_block_tails:
            return prune_html(tree, focus)
        for element in [e for e in tree.iterdescendants(CUT_EMPTY_ELEMS) if e.text is None and len(e) == 0]:
            delete_element(element, keep_tail=element.tag not in _INLINE)
        return tree

    def delete_with_headings_by_link_density(subtree, tagname, backtracking=False, favor_precision=False):
        rules = _ACTIVE.get()
        if rules is None or not favor_precision or not rules.drop_link_list_headings or tagname not in ("div", "list"):
            return delete_by_link_density(subtree, tagname, backtracking, favor_precision)
        # the heading right before each candidate (no text between them, not the page's <h1> nor in
        # its title header): it goes if the candidate goes and it is left over nothing (the next
        # heading or its container's end follows)
        headings = {}
        for elem in subtree.iter(tagname):
            prev = elem.getprevious()
            if (prev is not None and prev.tag == "head" and prev.get("rend") != "h1"
                    and not (prev.tail or "").strip() and next(prev.iterancestors(_TITLE_HEADER), None) is None):
                headings[elem] = prev
        subtree = delete_by_link_density(subtree, tagname, backtracking, favor_precision)
        for elem, heading in headings.items():
            if elem.getparent() is None and heading.getparent() is not None:  # elem deleted, heading not yet
                after = heading.getnext()
                if after is None or after.tag == "head":
                    delete_element(heading)
        return subtree

    def prune_sections_but_title_header(tree, potential_tags, options, *args, **kwargs):
        rules = _ACTIVE.get()
        if rules is None or options.focus != "precision" or not rules.keep_title_header:
            return prune_unwanted_sections(tree, potential_tags, options, *args, **kwargs)
        # after convert_tags an <h1> is <head rend="h1">; the header holding it is the article's
        titles = [h for h in tree.iter("header") if h.find(".//head[@rend='h1']") is not None]
        for header in titles:
            header.tag = _TITLE_HEADER
        try:
            return prune_unwanted_sections(tree, potential_tags, options, *args, **kwargs)
        finally:
            for header in titles:
                header.tag = "header"

    for replacement, original in ((link_teaser_test, link_density_test), (prune_empty_elements, prune_html),
                                  (delete_with_headings_by_link_density, delete_by_link_density),
                                  (prune_sections_but_title_header, prune_unwanted_sections)):
        replacement._refinery = True
        replacement._original = original
    htmlprocessing.link_density_test = link_teaser_test  # read by delete_by_link_density
    htmlprocessing.prune_html = prune_empty_elements  # read by tree_cleaning
    main_extractor.prune_unwanted_sections = prune_sections_but_title_header  # read by _extract
    main_extractor.delete_by_link_density = delete_with_headings_by_link_density  # imported by name there
    return True
