"""Trafilatura's result tree -> plain text (``xml.xmltotxt`` without formatting), cheaper, the same text.

Imported by ``_extract_helper`` (also when it runs by file path as the helper process: standard
library only here, trafilatura imported when the lean function is built).

Why: ``xmltotxt`` and refinery's ``join_source_line_breaks`` before it were ~5-7% of the stage's
CPU (docs/extraction.md, "The result tree to text in one walk", session 40). Three things made it dear:
- ``process_element`` recurses with ~8 helper calls per element (``_last_char`` three times,
  ``replace_element_text``, ``_escape_cell``, ``_append_spaced``, ``_append_tail``...) and reads
  an element's text up to three times (lxml decodes it each time): here one function per element,
  each text read once, the helpers inlined where no formatting is asked for, trafilatura's own
  helpers called for the rare cases (links, cells, list items, images);
- ``sanitize(text, preserve_space=True)`` runs a Python function per line (replacements and a
  printable check, lru-cached): here a few passes in C when no line needs them;
- the line joining ran its XPath over every tree, and 9 in 10 trees have no text it changes: the
  walk looks for such a text as it goes, and only when it finds one is the tree joined (with
  refinery's own XPath joining: the same nodes) and walked again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

#: elements whose text keeps its line breaks (``join_source_line_breaks``: ``code``; ``quote``,
#: trafilatura's name for a ``<pre>`` that does not look like code, and for a ``<blockquote>``,
#: unless marked :data:`BLOCKQUOTE`; ``pre``)
KEEPS_BREAKS = frozenset(("code", "quote", "pre"))
#: attribute of a result-tree ``quote`` that was a ``<blockquote>`` without a ``<pre>`` in it
#: (set while joining only, ``_extract_helper._install_blockquote_marks``): its text is joined
#: like a paragraph's (a quote wrapped at 80 columns in the source), a ``<pre>``'s is not
BLOCKQUOTE = "refinery-blockquote"
#: XPath's whitespace (``normalize-space``): a text of these alone is not joined
XPATH_SPACE = " \t\r\n"
#: elements whose own text the conversion puts at the start of a line (``xml.NEWLINE_ELEMS``
#: with a text; in a cell or list item after a space): its leading whitespace is the source's
#: indentation, which a browser does not show
LINE_START_TAGS = frozenset(("p", "head", "quote"))
#: HTML's collapsible whitespace (space, tab, line feed, form feed, carriage return)
HTML_SPACE = " \t\n\f\r"
#: what a line-starting text loses (:func:`may_trim`): HTML's whitespace and the no-break space,
#: which pages put before a paragraph as an indent ("<p>&nbsp;La organización") or as a spacer
#: paragraph's only text ("<p>&nbsp;</p>": a blank line once its line end was trimmed)
LINE_START_SPACE = HTML_SPACE + "\u00a0"
#: two or more spaces (not line breaks) with a no-break space among them: layout, which a browser
#: shows as a wide gap ("die \u00a0Prinzessin", "Platz \u00a0\u00a0AaS"); one space in the text (:func:`may_collapse`).
#: A lone no-break space is typography and stays ("trop peu\u00a0?", "1\u00a0550"). A match starts
#: only where a run starts (the lookbehind): the lookahead, tried at every space of a run, made a
#: page of 80,000 spaces in a blockquote take 12 s to extract (quadratic; review h122)
SPACE_RUN = re.compile("(?<![ \t\r\f\u00a0])(?=[ \t\r\f]*\u00a0)[ \t\r\f\u00a0]{2,}")


class BreaksToJoin(Exception):
    """The walk met a text the line joining may change."""


def keeps_breaks(element: Any) -> bool:
    """Whether the text in ``element`` keeps the source's line breaks and indentation: code, a
    ``<pre>`` (trafilatura's ``quote`` or ``code``), a ``quote`` not marked :data:`BLOCKQUOTE`."""
    tag = element.tag
    return tag in KEEPS_BREAKS and (tag != "quote" or element.get(BLOCKQUOTE) is None)


def may_trim(tag: Any, text: str | None) -> bool:
    """Whether ``join_source_line_breaks`` trims this own text of a ``tag`` element (outside code):
    it starts a line (:data:`LINE_START_TAGS`) with whitespace or no-break spaces (:data:`LINE_START_SPACE`),
    the source's indentation ("<p>\\n        AUTOR", "<head>  1  Über", "<p>&nbsp;La"), whitespace alone
    included ("<quote> <p>...", "<p>&nbsp;</p>")."""
    return bool(text) and text[0] in LINE_START_SPACE and tag in LINE_START_TAGS  # type: ignore[index]


def may_join(text: str | None) -> bool:
    """Whether ``join_source_line_breaks`` may change this text (an element's text or tail, outside
    code): it holds a line break and something besides XPath's whitespace. lxml gives the text of
    adjacent nodes as one string (after ``strip_tags``: a heading's "\\n  ", "Title", "\\n" are
    three nodes), and the joining reads them as one too."""
    return bool(text) and "\n" in text and bool(text.strip(XPATH_SPACE))  # type: ignore[operator]


def may_collapse(text: str | None) -> bool:
    """Whether ``join_source_line_breaks`` (and ``dedent_source_lines``) make a run of spaces with a
    no-break space in this text (outside code) one space (:data:`SPACE_RUN`)."""
    return bool(text) and "\u00a0" in text and SPACE_RUN.search(text) is not None  # type: ignore[operator, arg-type]


def holds_breaks_to_join(element: Any) -> bool:
    """Whether a text or tail below ``element`` (not its own) may be joined (:func:`may_join`,
    :func:`may_collapse`)."""
    for child in element:
        tag = child.tag
        if may_join(child.tail) or may_collapse(child.tail):
            return True
        if not keeps_breaks(child) and ((tag.__class__ is str and (may_join(child.text) or may_trim(tag, child.text)
                                                                   or may_collapse(child.text)))
                                        or holds_breaks_to_join(child)):
            return True  # a comment's text is no text node
    return False


#: sha256 of the trafilatura 2.3.1 functions the lean conversion mirrors: ``xml.xmltotxt``,
#: ``xml.process_element``, ``xml.replace_element_text``, ``xml._append_tail``, ``xml._append_spaced``,
#: ``xml._last_char``, ``xml._escape_cell``, ``xml._consumes_inline_children``, ``utils.sanitize``,
#: ``utils.line_processing``
MIRRORED_SHA256 = (
    "61e912d41ea49c056c427d2232e7bf41a89b4ff5836a263d04500504e81b80c1",
    "24927f1fe5d2748650ca5a94c2638ecf9436502dcc29504ffe48c1310a46479b",
    "9be61ec6320510875474af3a1dd24ee83c14e46a07db2b70481aebd7587a1a7d",
    "fc379c2f0dbc40721cd2c634ede8b9baae41253444688749a148b289dcf221f6",
    "26b3c0134fd6bbf63994edf166fd7885709c7ae7bb4360105ae32855950f79bd",
    "79627ebfac46297b2c39267bd1b965a9671954621655066ef6284a53fe36b992",
    "442096853d3cc9a3a29c3f5082368aaf9ef35c52d6725fefdfe1b884b2538115",
    "9c6e4cc71ead3e9358e6a58fa73f283714c07dbb91f69bee52b935141d4e1d6c",
    "48d4002f672ee31978f0f7a0505cc42621b3356ec9c39dffadea0929fa6e22ea",
    "8ec593c93ef9e685f78782dacffbf93dbbaf81c56d362e338f494c773b21aeee",
)


def mirrored_functions() -> tuple[Callable, ...]:
    """The trafilatura functions :data:`MIRRORED_SHA256` pins, in its order."""
    from trafilatura import utils, xml

    return (xml.xmltotxt, xml.process_element, xml.replace_element_text, xml._append_tail, xml._append_spaced,
            xml._last_char, xml._escape_cell, xml._consumes_inline_children, utils.sanitize, utils.line_processing)


def make_lean_xmltotxt(join_lines: Callable[[Any], None]) -> Callable[[Any, bool], str]:
    """``fn(tree, join) -> text``: ``trafilatura.xml.xmltotxt(tree, include_formatting=False)``,
    after ``join_lines(tree)`` (refinery's ``join_source_line_breaks``) when ``join``."""
    from html import unescape

    from trafilatura import utils, xml

    newline_elems, separators, special = xml.NEWLINE_ELEMS, xml.SEPARATORS, xml.SPECIAL_FORMATTING
    consuming = xml.INLINE_CONSUMING
    replace_element_text, append_tail, escape_cell = xml.replace_element_text, xml._append_tail, xml._escape_cell
    item_needs_marker, list_marker, image_markup = xml._item_needs_marker, xml._list_marker, xml._image_markup
    opens_item, closes_container, text_chars_test = xml._opens_item, xml._closes_container, xml.text_chars_test
    sanitize, remove_control_characters = utils.sanitize, utils.remove_control_characters
    spaced_blocks = ("head", "p", "quote", "table")  # process_element's blocks spaced when flattened
    head_item = ("head", "item")
    # tags whose element takes a branch of its own in process_element even without children
    leaf_exceptions = frozenset(("item", "cell", "ref", "graphic", "row", "list"))

    def walk(element: Any, out: list[str], in_cell: bool, in_item: bool, joining: bool) -> None:
        # process_element(element, out, False, in_cell, in_item), step for step; ``joining``: stop
        # at a text the line joining may change (joining on, no ancestor keeps breaks)
        append = out.append
        tag, text, tail = element.tag, element.text, element.tail
        if joining:
            joining = tag not in KEEPS_BREAKS or not keeps_breaks(element)
            if ((text and joining and tag.__class__ is str
                 and (("\n" in text and may_join(text)) or (text[0] in LINE_START_SPACE and may_trim(tag, text))
                      or ("\u00a0" in text and may_collapse(text))))
                    or (tail and (("\n" in tail and may_join(tail)) or ("\u00a0" in tail and may_collapse(tail))))):
                raise BreaksToJoin
        children = len(element)
        if not children and not in_cell and not in_item and tag not in leaf_exceptions:
            # the commonest case (a paragraph, a heading, a line break): process_element's steps
            # for an element without children outside cells and items, where the tags above
            # take none of its special branches
            last = out[-1][-1:] if out else ""
            if tag in newline_elems and last not in separators:
                append("\n")
            elif tag in spaced_blocks and not last.isspace() and last not in separators:
                append(" ")
            if text:
                append(text)
            elif tag in newline_elems:
                append("\n")
            else:
                return  # no text: neither a separator nor its tail
            if tag in newline_elems:
                append("\n")
            elif tag not in special and out[-1][-1:] not in separators:
                append(" ")
            if tail:
                append(tail.lstrip() if tag in newline_elems else tail)
            return
        if tag == "cell":
            in_cell = True
            if element.getprevious() is None:
                append("| ")
        elif tag == "item":
            in_item = True
        last = out[-1][-1:] if out else ""
        if tag in newline_elems and not in_cell and not in_item and last not in separators:
            append("\n")
        elif (tag in spaced_blocks and not last.isspace() and last not in separators
              and (text or children == 0 or element[0].tag != "lb")):
            append(" ")
        consumes = tag in consuming and children > 0
        if consumes and joining and holds_breaks_to_join(element):
            raise BreaksToJoin  # its children's texts are read now, as its own
        renders_inline = bool(text) or consumes
        if tag == "item" and not in_cell and item_needs_marker(element):
            append(list_marker(element, False))
        if renders_inline and (tag != "item" or consumes or text_chars_test(text)):
            # replace_element_text without formatting is the element's own text but for these
            elem_text = replace_element_text(element, False, in_cell) if consumes or tag in ("ref", "cell") else text
            append(escape_cell(elem_text, in_cell) if in_cell else elem_text)
        if tag == "list" and in_item and (out[-1][-1:] if out else "") not in ("\n", ""):
            append("\n")
        if not consumes:
            for child in element:
                walk(child, out, in_cell, in_item, joining)
        if not renders_inline:
            if tag == "graphic":
                append(escape_cell(image_markup(element, False), in_cell))
                if tail:
                    append(escape_cell(f" {tail.strip()}", in_cell))
            elif tag in newline_elems:
                if tag == "row":
                    cells = element.findall("cell")
                    if any(cell.get("role") == "head" for cell in cells):
                        append(f"\n|{'---|' * len(cells)}\n")
                elif not in_cell and not (tag == "lb" and in_item and opens_item(element)):
                    append("\n")
            elif tag != "cell" and tag != "item":
                if in_cell:
                    append_tail(element, out, in_cell, in_item)
                return
        last_in_item = in_item and closes_container(element, "item")
        last_in_cell = in_cell and closes_container(element, "cell")
        if tag in newline_elems and not in_cell and not in_item:
            append("\n")
        elif tag == "cell":
            append(" | ")
        elif ((tag in head_item and in_cell and not last_in_cell)
              or (tag not in special and not last_in_item and not last_in_cell)):
            if (out[-1][-1:] if out else "") not in separators:  # _append_spaced(out, " ")
                append(" ")
        if tail and tag != "graphic":  # _append_tail without formatting
            if in_cell or in_item or tag == "list":
                append_tail(element, out, in_cell, in_item, False)
            elif tag in newline_elems:
                append(tail.lstrip())
            else:
                append(tail)
        if last_in_item and not in_cell:
            append("\n")

    def sanitized(text: str) -> str:
        # sanitize(text, preserve_space=True): per line (str.splitlines), the space entities
        # replaced and unprintable characters but spaces dropped; empty lines dropped; "␤" removed
        if "&" in text and ("&#13;" in text or "&#10;" in text or "&nbsp;" in text):
            return sanitize(text, True) or ""
        if text.replace("\n", "").isprintable():
            # only "\n" breaks lines (the others are unprintable) and every line is printable
            # (remove_control_characters returns it as it is): only empty lines go
            text = "\n".join(filter(None, text.split("\n"))) if "\n\n" in text else text.strip("\n")
        else:
            text = "\n".join(filter(None, (line if line.isprintable() else remove_control_characters(line)
                                            for line in text.splitlines())))
        return text.replace("\u2424", "") if "\u2424" in text else text

    def lean_xmltotxt(tree: Any, join: bool) -> str:
        out: list[str] = []
        try:
            walk(tree, out, False, False, join)
        except BreaksToJoin:  # nothing changed yet: join as before, then walk again
            join_lines(tree)
            out = []
            walk(tree, out, False, False, False)
        return unescape(sanitized("".join(out)))

    return lean_xmltotxt
