"""A page's code blocks and headings in the shapes trafilatura cuts or flattens, rewritten before it
reads the page (docs/extraction.md, "Code blocks and headings trafilatura cut", session 50).

Standard library only at import (the helper process imports it by file path too); the functions
take lxml elements. Each shape is a fact of HTML seen on real pages, none a site's class.

Code blocks (``keep_code_blocks``):

- **a code block in a** ``<figure>``: Jekyll's ``{% highlight %}`` tag (Rouge) writes
  ``<figure class="highlight"><pre><code>...``, and trafilatura deletes every ``<figure>`` with
  what is in it (``MANUALLY_CLEANED``: an image's frame), so the listing went whole. A figure
  holding a ``<pre>`` becomes a ``<div>``, as trafilatura itself does with a figure holding a
  table (its #301).
- **a code block laid out in a table**: WP-Syntax/GeSHi (``<div class="wp_syntax"><table><tr>
  <td class="code"><pre>``), Rouge's and Pygments' line-number tables (a gutter cell of numbers
  beside the code cell). trafilatura writes a table cell on one line, so the listing came out
  as one line. A table whose cells hold text only inside ``<pre>`` elements or numbers alone (the
  gutter) is replaced by its code ``<pre>`` elements; the gutters go.
- **line breaks in a** ``<code>``: ``<code>make <br>su <br>make install</code>``. trafilatura
  takes the code's text and puts the ``<br>`` elements after it, behind the paragraph's text that
  follows the code (netbits.us: "make Now that all the software is installed... / su / make
  install"). Each ``<br>`` in a ``<code>`` becomes a line break in its text, where it was.
- **a code block in an embed box**: Webflow's code embed writes ``<div class="w-embed"><pre>``, and
  trafilatura removes every box whose class holds "embed" (a share button's or a player's frame),
  so commoncrawl.org's ``curl`` examples went. A box so named whose text is all in its ``<pre>``
  elements (:func:`code_embed`) loses the class words holding "embed" (session 51).

Headings (``keep_anchor_headings``):

- **a heading whose text is a named anchor**: ``<h2><a name="cert">Generating Certs</a></h2>``
  (older pages, medicalnewstoday.com's section headings, eatsmarter.de's "Zutaten"). An ``<a>``
  without ``href`` is no link (HTML: a placeholder for one), but trafilatura makes every ``<a>`` a
  link, finds the heading all link and removes it as a link list. In a heading, such an anchor's
  tag goes and its text stays. Only in headings: in paragraphs and boxes it let a call to action
  in (lavazza.de's "Bitte teilen Sie uns Ihre Erfahrungen mit", a "without" snippet).
"""

from __future__ import annotations

import re
from typing import Any

#: a gutter of line numbers (a cell or ``<pre>`` holding digits and whitespace alone)
_NUMBERS = re.compile(r"[\d\s]*")
_CELLS = ("td", "th")


def _chars(text: str) -> int:
    """Characters of ``text`` that are not whitespace."""
    return len(text) - sum(text.count(c) for c in " \t\n\r\f\u00a0") if text else 0


def _outer_pres(element: Any) -> list:
    """The ``<pre>`` elements in ``element`` that are in no other ``<pre>`` in it, in order."""
    found = []
    for pre in element.iter("pre"):
        above = pre.getparent()
        while above is not None and above is not element and above.tag != "pre":
            above = above.getparent()
        if above is element:
            found.append(pre)
    return found


def _gutter(text: str) -> bool:
    return _NUMBERS.fullmatch(text) is not None


def code_table_blocks(table: Any) -> list | None:
    """The code ``<pre>`` elements of ``table`` when it only lays out code: every cell's text is
    inside its ``<pre>`` elements or is numbers alone (a gutter), no table inside it, and some
    ``<pre>`` holds more than numbers; else None."""
    if table.find(".//table") is not None:
        return None
    blocks = []
    for cell in table.iter(*_CELLS):
        text = cell.text_content()
        if _gutter(text):
            continue
        pres = _outer_pres(cell)
        if not pres or sum(_chars(pre.text_content()) for pre in pres) != _chars(text):
            return None
        blocks.extend(pre for pre in pres if not _gutter(pre.text_content()))
    return blocks or None


def _replace(element: Any, blocks: list) -> None:
    """Put the ``<pre>`` elements ``blocks`` where ``element`` is (its tail after the last); in a
    ``<pre>`` already (Rouge's line-number table inside ``<pre><code>``), their content."""
    parent = element.getparent()
    at = parent.index(element)
    tail = element.tail
    for pre in blocks:
        pre.tail = None
    parent[at:at + 1] = blocks
    blocks[-1].tail = tail
    if any(above.tag == "pre" for above in parent.iterancestors()) or parent.tag == "pre":
        for pre in blocks:
            pre.drop_tag()


def code_embed(box: Any) -> bool:
    """Whether ``box`` (an element whose class names an embed) holds code alone: all its text is in
    its ``<pre>`` elements. Webflow's code embed (``<div class="w-embed"><pre>``) is such a box;
    trafilatura removes every box whose class holds "embed" (a share or a video player's frame)."""
    pres = _outer_pres(box)
    return bool(pres) and sum(_chars(pre.text_content()) for pre in pres) == _chars(box.text_content())


def _br_as_line_break(br: Any) -> None:
    """Remove ``br``, leaving a line break in the text where it was."""
    text = "\n" + (br.tail or "")
    previous = br.getprevious()
    parent = br.getparent()
    if previous is not None:
        previous.tail = (previous.tail or "") + text
    else:
        parent.text = (parent.text or "") + text
    parent.remove(br)


#: the headings whose named anchors are no links (:func:`fix_page`)
HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def fix_page(tree: Any, code_blocks: bool = True, anchor_headings: bool = True) -> int:
    """Rewrite the shapes of a page's ``tree`` (lxml, before trafilatura's cleaning) that trafilatura
    would cut or flatten (the module docstring): code blocks, and named anchors in headings; the
    number rewritten. One walk for ``<pre>``, ``<code>`` and headings (most pages have no code, few
    headings), then only their ancestors or descendants are looked at."""
    tags = (("pre", "code") if code_blocks else ()) + (HEADINGS if anchor_headings else ())
    if not tags:
        return 0
    holders: dict = {}  # the figures and tables holding a <pre>, inner ones first
    embeds: dict = {}  # the boxes holding a <pre> that trafilatura's embed class rule removes
    breaks, anchors = [], []
    for element in tree.iter(*tags):
        tag = element.tag
        if tag == "pre":
            holders.update(dict.fromkeys(element.iterancestors("figure", "table")))
            embeds.update(dict.fromkeys(a for a in element.iterancestors() if "embed" in (a.get("class") or "")))
        elif tag == "code":
            breaks.extend(element.iter("br"))
        else:
            anchors.extend(a for a in element.iter("a") if a.get("href") is None and a.get("name") is not None)
    changed = 0
    for holder in holders:
        if holder.tag == "figure":
            holder.tag = "div"
            changed += 1
        elif holder.getparent() is not None and (blocks := code_table_blocks(holder)) is not None:
            _replace(holder, blocks)
            changed += 1
    for box in embeds:
        if code_embed(box):
            box.set("class", " ".join(word for word in box.get("class").split() if "embed" not in word))
            changed += 1
    breaks, anchors = list(dict.fromkeys(breaks)), list(dict.fromkeys(anchors))  # a <code> in a <code>: once
    for br in breaks:
        _br_as_line_break(br)
    for anchor in anchors:
        anchor.drop_tag()  # its text and children stay where they were
    return changed + len(breaks) + len(anchors)
