"""The extraction helper process: HTML -> text with trafilatura or Resiliparse, killable.

Started by :class:`refinery.stages.extract.TrafilaturaExtractor` as ``python _extract_helper.py FD
PARENT_PID CONFIG_JSON`` (by file path: it imports only the standard library, the backend and its
sibling ``_xpath_to_python.py``, not refinery or pyarrow). It talks over the inherited socket ``FD``
(``multiprocessing.connection`` framing): it sends ``("ready", pid)`` once the backend is imported
and warmed up (or ``("error", message)`` if it cannot be), then answers each ``(html, url)`` request
with ``("ok", (text_or_None, path))`` (``(text_or_None, path, marked_or_None)`` for trafilatura
with joined lines: :func:`with_line_marks`) or ``("failed", "ExceptionType: message")``. It exits when the
socket closes. ``path`` names the extraction path that produced the text (see :func:`make_extract`);
the stage records it in its ``extract_path`` column. The parent enforces the deadline by killing
this process (SIGKILL): a parser stuck in C code cannot be interrupted any other way.

If the parent dies, the helper dies too: ``PR_SET_PDEATHSIG`` (Linux; only when started from the
parent's main thread, since the signal follows the thread that started it) and a watchdog thread
that notices being re-parented.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import FunctionType as _FunctionType
from typing import Any
from multiprocessing.connection import Connection

try:  # imported as part of refinery (in-process extraction, tests, benchmarks)
    from ._html_fixes import fix_page
    from ._lean_totext import MIRRORED_SHA256 as _TOTEXT_SOURCES_SHA256
    from ._lean_totext import (BLOCKQUOTE, KEEPS_BREAKS, LINE_START_SPACE, LINE_START_TAGS, SPACE_RUN,
                                   keeps_breaks, make_lean_xmltotxt, may_collapse, may_join,
                                   may_trim, mirrored_functions)
    from ._xpath_to_python import Unsupported, compile_selections, compile_xpath
except ImportError:  # run by file path as the helper process: its directory is on sys.path
    from _html_fixes import fix_page
    from _lean_totext import MIRRORED_SHA256 as _TOTEXT_SOURCES_SHA256
    from _lean_totext import (BLOCKQUOTE, KEEPS_BREAKS, LINE_START_SPACE, LINE_START_TAGS, SPACE_RUN,
                                  keeps_breaks, make_lean_xmltotxt, may_collapse, may_join,
                                  may_trim, mirrored_functions)
    from _xpath_to_python import Unsupported, compile_selections, compile_xpath


def _die_with_parent(parent_pid: int, pdeathsig: bool) -> None:
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - best effort; the watchdog below still runs
            pass
    if os.getppid() != parent_pid:  # the parent died before we got here
        os._exit(3)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


#: extraction path names (the ``extract_path`` column) and their numbers (``extract_pass``)
PATHS = {"input": 0, "precision": 1, "balanced": 1, "main_content": 1, "learned": 1, "fallback": 2, "baseline": 3}


# -- cheaper trafilatura calls, same text (issue 17; docs/extraction.md, "CPU per page") ------------
# Why: at our settings trafilatura costs ~20 ms of CPU per real page, most of it in its own
# XPath/tree work, which we do not change. Four things around it are pure overhead and are cut:
# 1. lxml.html's element class lookup is a Python callback run for every element proxy lxml
#    creates (~1,700 per page: each ``re:test(@class, ...)`` in trafilatura's XPaths makes one);
#    the same mapping done by lxml's C lookup gives the same classes, ~6% less CPU;
# 2. trafilatura builds its ``Extractor`` settings (ConfigParser reads) on every call: built once
#    per configuration, copied per page with the page's URL;
# 3. ``<script>``/``<style>`` elements and comments, ~40% of a page's bytes, are parsed, copied
#    and walked by trafilatura only to be deleted by its tree cleaning: cut from the string before
#    it parses it (JSON-LD scripts stay: trafilatura reads them);
# 4. its guarded pruning finds the outermost of the elements to delete by walking every match's
#    ancestors (quadratic in nesting): memoised, the same elements, ~5% less CPU;
# 5. its ~20 boilerplate XPaths (``.//*[self::div or ...][re:test(@class, ...) or ...]``) are ~40%
#    of its CPU: libxml2 tests every element with node-set objects it allocates per test, and each
#    ``re:test`` is a call from C into Python, also for elements without the attribute. They are
#    replaced by Python functions selecting the same elements (``_xpath_to_python``, ~2.5x faster);
#    an XPath outside the subset it translates gets its regex tests guarded by the attribute's
#    presence instead;
# 6. before parsing, trafilatura deletes XML-invalid control characters with a regex over the whole
#    page (~3% of its CPU), which almost never finds one: a check in C decides whether to run it.


def _install_c_class_lookup() -> bool:
    """Give trafilatura's HTML parser lxml's C-level element class lookup with exactly the
    classes ``lxml.html.HtmlElementClassLookup`` returns (``form`` -> ``FormElement``... else
    ``HtmlElement``; ``HtmlComment``, ``HtmlProcessingInstruction``, ``HtmlEntity``).

    A configuration of trafilatura's module-level lxml parser object, not a change to its code;
    guarded: only when that parser is a plain ``lxml.html.HTMLParser`` and a probe parse gives
    the same classes as before. Returns whether it was installed."""
    try:
        from lxml import etree
        from lxml import html as lxml_html
        from trafilatura import utils as tutils
    except ImportError:  # pragma: no cover - trafilatura is the backend here
        return False
    parser = getattr(tutils, "HTML_PARSER", None)
    if type(parser) is not lxml_html.HTMLParser or getattr(tutils, "_refinery_c_lookup", False):
        return bool(getattr(tutils, "_refinery_c_lookup", False))
    probe = "<html><body><form><input><select></select><textarea></textarea><label>x</label></form><p>y</p></body></html>"

    def classes() -> list[type]:
        return [type(e) for e in lxml_html.fromstring(probe, parser=parser).iter()]

    before = classes()
    fallback = etree.ElementDefaultClassLookup(
        element=lxml_html.HtmlElement, comment=lxml_html.HtmlComment, pi=lxml_html.HtmlProcessingInstruction,
        entity=lxml_html.HtmlEntity)
    lookup = etree.ElementNamespaceClassLookup(fallback)
    by_tag = lookup.get_namespace(None)
    for tag, cls in lxml_html.HtmlElementClassLookup()._element_classes.items():
        by_tag[tag] = cls
    parser.set_element_class_lookup(lookup)
    if classes() != before:  # an lxml whose HTML classes we do not reproduce: put its own lookup back
        parser.set_element_class_lookup(lxml_html.HtmlElementClassLookup())
        return False
    tutils._refinery_c_lookup = True
    return True


def _sources_are(functions: tuple, sha256s: tuple[str, ...]) -> bool:
    """Whether the functions' sources are the ones a replacement mirrors (sha256 of each): a
    replacement is installed only over the trafilatura code it was written against."""
    import hashlib
    import inspect

    return tuple(hashlib.sha256(inspect.getsource(f).encode()).hexdigest() for f in functions) == tuple(sha256s)


def _install_replacement(target: Any, name: str, original: Callable, replacement: Callable,
                         sha256s: tuple[str, ...], also: tuple = ()) -> bool:
    """Put ``replacement`` in place of ``target.<name>`` (marked ``_refinery``, with its
    ``_original``), once per process, and only if ``original`` and the functions ``also`` it
    reasons about have the sources it mirrors (:func:`_sources_are`); whether it is in place."""
    if getattr(getattr(target, name), "_refinery", False):
        return True
    if not _sources_are((original, *also), sha256s):
        return False
    replacement._refinery = True
    replacement._original = original
    setattr(target, name, replacement)
    return True


def _outer_matches(matches: dict) -> list:
    """The elements of ``matches`` (a dict used as an ordered set) with no ancestor in it, in
    order: ``[e for e in matches if not any(a in matches for a in e.iterancestors())]``, with each
    element's "inside a match" answer memoised, so every ancestor chain is walked once per page
    rather than once per match (trafilatura's version was ~5% of our filter chain's CPU)."""
    covered: dict = {}  # element -> it or one of its ancestors is in matches
    outer = []
    for elem in matches:
        chain = []
        node = elem.getparent()
        answer = False
        while node is not None:
            if node in covered:
                answer = covered[node]
                break
            if node in matches:
                answer = True
                break
            chain.append(node)
            node = node.getparent()
        for seen in chain:
            covered[seen] = answer
        if not answer:
            outer.append(elem)
    return outer


#: whether trafilatura's raw-tree pruning selects its lists' elements in one tree walk
#: (:func:`_install_fast_prune`); a switch for A/B measurements in one process
FUSED_SELECTIONS = True
#: the fused selection of each list of Python selections seen (None: not fusable)
_FUSED: dict[tuple, Callable | None] = {}


def _fused(expressions: list) -> Callable | None:
    """The one-walk selection of a list of two or more Python selections
    (:func:`_xpath_to_python.compile_selections`), else None (lxml XPaths, positions)."""
    key = tuple(expressions)
    if key not in _FUSED:
        # only lists of our selections are remembered: they live as long as the process, while a
        # caller's lxml XPaths may be new on every call (trafilatura's ``prune_xpath``)
        if len(key) < 2 or any(type(e) is not _FunctionType for e in key):
            return None
        paths = [getattr(e, "path", None) for e in key]
        fused = None
        # a path testing no attribute (``.//header``) walks in C and makes proxies only for its
        # matches: fused, every element of the walk would be tested in Python (measured slower)
        if all(isinstance(p, str) and "@" in p for p in paths):
            try:
                fused = compile_selections(paths)
            except Unsupported:
                pass
        _FUSED[key] = fused
    return _FUSED[key] if FUSED_SELECTIONS else None


def _install_fast_prune() -> bool:
    """Replace trafilatura's ``prune_unwanted_nodes`` as imported by its main extractor with the
    same function whose guarded branch finds the outermost matches with :func:`_outer_matches`,
    and as imported by its core with one that selects the raw-tree pruning's two lists in one walk
    (:func:`_fused`), deleting the second list's matches at its next call.
    Guarded: only for the trafilatura version whose code this mirrors (the source is compared)."""
    try:
        from trafilatura import core, htmlprocessing, main_extractor
    except ImportError:  # pragma: no cover - trafilatura is the backend here
        return False
    original = htmlprocessing.prune_unwanted_nodes
    delete_element = htmlprocessing.delete_element

    def prune_unwanted_nodes(tree, nodelist, with_backup=False):
        if not with_backup:
            return original(tree, nodelist, with_backup)
        # guard: prune nothing if it would remove too much text, the tree keeps its elements
        matches = dict.fromkeys(elem for expression in nodelist for elem in expression(tree))
        outer = _outer_matches(matches)
        old_len = len(tree.text_content())
        if old_len - sum(len(elem.text_content()) for elem in outer) > old_len / 7:
            for elem in outer:
                delete_element(elem)
        return tree

    installed = _install_replacement(main_extractor, "prune_unwanted_nodes", original, prune_unwanted_nodes,
                                     (_PRUNE_SOURCE_SHA256,))
    raw_lists = (core.RAW_TREE_PRUNE_XPATH, core.REMOVE_COMMENTS_AND_LISTS_XPATH)
    sequence_code = core.trafilatura_sequence.__code__
    # "kept": (trafilatura_sequence's frame, its tree, the comment lists' matches), selected with
    # the raw-tree pruning's; a dict: its pop(key, None) is one atomic step (threads)
    pending: dict = {}

    def core_prune_unwanted_nodes(tree, nodelist, with_backup=False):
        # trafilatura_sequence prunes the raw tree with RAW_TREE_PRUNE_XPATH and, right after (no
        # other code between, sha256 pinned), with REMOVE_COMMENTS_AND_LISTS_XPATH: both run in
        # one walk, and the second call deletes what that walk found. Exact: the later XPaths test
        # only tags and attributes (no ``.//name``: structural), which deletions do not change, so
        # they select what they would after the earlier deletions, plus elements inside deleted
        # subtrees, whose deletion changes only those detached subtrees. Kept
        # only for that second call of the same invocation (its frame) on the same tree: another
        # caller could change the tree between two calls, and the matches would be stale.
        caller = sys._getframe(1)
        kept = pending.pop("kept", None)
        if with_backup or not FUSED_SELECTIONS:
            return prune_unwanted_nodes(tree, nodelist, with_backup)
        if kept is not None and kept[0] is caller and kept[1] is tree and nodelist is raw_lists[1]:
            for subtree in kept[2]:
                delete_element(subtree)
            return tree
        fused = (_fused(raw_lists[0] + raw_lists[1])
                 if nodelist is raw_lists[0] and caller.f_code is sequence_code else None)
        if fused is None or any(fused.structural[1:]):
            return prune_unwanted_nodes(tree, nodelist, with_backup)
        *found, comments = fused(tree)
        for subtrees in found:
            for subtree in subtrees:
                delete_element(subtree)
        pending["kept"] = (caller, tree, comments)
        return tree

    # core's pruning of the raw tree uses its own import of the name
    return installed and _install_replacement(core, "prune_unwanted_nodes", original, core_prune_unwanted_nodes,
                                              (_PRUNE_SOURCE_SHA256, _PREPARE_SOURCES_SHA256[1]),
                                              also=(core.trafilatura_sequence,))


def _install_lean_prepare() -> bool:
    """Replace trafilatura's ``core._prepare_tree`` (tree cleaning and tag conversion, on a copy
    of the raw tree, plus a second copy kept as a backup) with the same steps that copy only what
    the rest of ``trafilatura_sequence`` reads again:

    - the raw tree, unless the pass is fast and in precision mode: only the readability/justext
      comparison (not fast), the baseline rescue (not precision) and the recall escalation
      (balanced) read it after this step, and nothing outside the sequence does;
    - the cleaned tree before conversion, unless the pass is fast without comments: only the
      comparison and the forum path (comments on) read that backup.

    The stage's first pass (precision, fast, no comments) then makes neither copy: ~15% of its
    CPU, copying and freeing two whole trees per page. Guarded: only for the trafilatura version
    whose ``_prepare_tree`` and ``trafilatura_sequence`` this reasons about (sources compared)."""
    try:
        from trafilatura import core
    except ImportError:  # pragma: no cover - trafilatura is the backend here
        return False
    copy, convert_tags = core.copy, core.convert_tags

    def _prepare_tree(tree, options, url):
        tree_read_again = not (options.fast and options.focus == "precision")
        backup_read_again = not options.fast or options.comments
        # looked up per call, as trafilatura's own does: _install_html_fixes wraps it
        cleaned = core.tree_cleaning(copy(tree) if tree_read_again else tree, options)
        backup = copy(cleaned) if backup_read_again else None
        return convert_tags(cleaned, options, url), backup

    return _install_replacement(core, "_prepare_tree", core._prepare_tree, _prepare_tree, _PREPARE_SOURCES_SHA256,
                                also=(core.trafilatura_sequence,))


#: while set (:func:`_with_flag`), trafilatura's tree cleaning first rewrites the code blocks it
#: would cut or flatten, and (:data:`_ANCHOR_HEADINGS`) the named anchors of headings it would take for
#: links (``_html_fixes``): the stage's own passes, not plain trafilatura calls
_CODE_BLOCKS: ContextVar[bool] = ContextVar("refinery_code_blocks", default=False)
_ANCHOR_HEADINGS: ContextVar[bool] = ContextVar("refinery_anchor_headings", default=False)


def _install_html_fixes() -> bool:
    """Wrap trafilatura's ``core.tree_cleaning`` (the first step of ``_prepare_tree``, trafilatura's
    and the lean one) so that inside :func:`_with_flag` (_CODE_BLOCKS, _ANCHOR_HEADINGS) calls the
    page's code blocks in a ``<figure>``, laid out in a table or broken by ``<br>`` in a ``<code>``,
    and its headings' named anchors, are rewritten first (``_html_fixes.fix_page``). Outside such
    calls the cleaning is trafilatura's."""
    from trafilatura import core

    cleaning = core.tree_cleaning
    if getattr(cleaning, "_refinery_html_fixes", False):
        return True

    def tree_cleaning(tree, options):
        code, anchors = _CODE_BLOCKS.get(), _ANCHOR_HEADINGS.get()
        if code or anchors:
            fix_page(tree, code, anchors)
        return cleaning(tree, options)

    tree_cleaning._refinery_html_fixes = True
    tree_cleaning._original = cleaning
    core.tree_cleaning = tree_cleaning
    return True


#: sha256 of trafilatura 2.3's ``utils.repair_faulty_html`` source, mirrored below
_REPAIR_SOURCE_SHA256 = "7e68c7a3cb24910c519778bfa3b7132efbdb6e650e79f1fe66905e962d6e1d69"
#: the C0 controls trafilatura's ``INVALID_XML_CHARS`` deletes (all but tab, line feed, carriage return)
_INVALID_XML_C0 = bytes(c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D))


def may_hold_invalid_xml_chars(text: str) -> bool:
    """Whether ``text`` may hold a character of trafilatura's ``INVALID_XML_CHARS``
    (``[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\ufffe\\uffff]``); false only when it holds none. The C0
    controls are ASCII, so they survive ``encode("ascii", "ignore")`` (which drops every other
    character in C) and ``bytes.translate`` counts them; the two non-characters are searched for.
    ~2.5x cheaper than the regex search on real pages, most of which are not Latin-1."""
    ascii_bytes = text.encode("ascii", "ignore")
    return (len(ascii_bytes.translate(None, _INVALID_XML_C0)) != len(ascii_bytes)
            or "\ufffe" in text or "\uffff" in text)


def _install_lean_repair() -> bool:
    """Replace trafilatura's ``utils.repair_faulty_html`` (as its ``load_html`` calls it) with the
    same function that runs its ``INVALID_XML_CHARS`` deletion only when
    :func:`may_hold_invalid_xml_chars` says the page may hold one (3 of 1,087 real pages do): the
    regex scans every character of every page otherwise. Guarded: only for the trafilatura
    version whose code this mirrors (the source is compared)."""
    try:
        from trafilatura import utils as tutils
    except ImportError:  # pragma: no cover - trafilatura is the backend here
        return False
    invalid_xml_chars, doctype_tag, faulty_html = tutils.INVALID_XML_CHARS, tutils.DOCTYPE_TAG, tutils.FAULTY_HTML

    def repair_faulty_html(htmlstring: str, beginning: str) -> str:
        if may_hold_invalid_xml_chars(htmlstring):
            htmlstring = invalid_xml_chars.sub("", htmlstring)
        # the rest as trafilatura's (libxml2 issue with some doctypes; a self-closing <html/>)
        if "doctype" in beginning:
            firstline, _, rest = htmlstring.partition("\n")
            htmlstring = doctype_tag.sub("", firstline, count=1) + "\n" + rest
        for line in htmlstring[:4096].splitlines()[:4]:
            if "<html" in line and line.endswith("/>"):
                htmlstring = faulty_html.sub(r"\1>", htmlstring, count=1)
                break
        return htmlstring

    return _install_replacement(tutils, "repair_faulty_html", tutils.repair_faulty_html, repair_faulty_html,
                                (_REPAIR_SOURCE_SHA256,))


#: sha256 of trafilatura 2.3's ``external.jt_stoplist_init`` and ``external.try_justext`` and of
#: justext 3.0's ``core.define_stoplist`` sources, which :func:`_install_lean_stoplists` reasons about
_STOPLIST_SOURCES_SHA256 = ("ea87de5a416844d81d5f3209a912cf8d41ce86154883d674e853d59a13207ff9",
                            "6f0fa6cffc365def23443fc7f20dbba7ca157c3c4ed5823a5c905f8abc2a05d2",
                            "9149bbf4aa8ac519339cea3629a8e32f725655629350bf1e6966962050d9e63f")


def _install_lean_stoplists() -> bool:
    """Build the stoplist of trafilatura's justext fallback once, as the frozenset justext reads.

    Why: without a target language, ``try_justext`` classifies paragraphs against the union of all
    of justext's stoplists (154,484 words). trafilatura builds that union as a tuple once per
    process (a set comprehension, ~30 ms beyond reading the lists); justext's ``define_stoplist``
    makes it a frozenset of lower-cased words on its first call (~50 ms) and, through its
    ``lru_cache``, hashes the whole tuple again on every call (~3 ms). Here the union is one
    frozenset of justext's own ``get_stoplist`` sets, whose words are lower-cased already
    (``lower()`` changes none of them again: tested), and ``define_stoplist`` hands that object
    back as is. The same words, so the same paragraph decisions. Guarded by the sources."""
    try:
        from justext import core as justext_core
        from justext.utils import get_stoplist, get_stoplists
        from trafilatura import external
    except ImportError:  # pragma: no cover - trafilatura (and justext) is the backend here
        return False
    define_original = justext_core.define_stoplist
    union: list[frozenset[str]] = []  # built once per process

    def jt_stoplist_init() -> frozenset[str]:
        if not union:
            union.append(frozenset().union(*(get_stoplist(language) for language in get_stoplists())))
        external.JT_STOPLIST = union[0]
        return union[0]

    def define_stoplist(stoplist):
        if union and stoplist is union[0]:  # lower-cased and frozen already
            return stoplist
        return define_original(stoplist)

    # trafilatura.meta.reset_caches() calls define_stoplist.cache_clear() on the function it
    # imported: the lean one when trafilatura.meta is first imported after this
    define_stoplist.cache_clear = define_original.cache_clear  # type: ignore[attr-defined]
    define_stoplist.cache_info = define_original.cache_info  # type: ignore[attr-defined]
    sha_init, sha_try, sha_define = _STOPLIST_SOURCES_SHA256
    return (_install_replacement(justext_core, "define_stoplist", define_original, define_stoplist,
                                 (sha_define, sha_init, sha_try), also=(external.jt_stoplist_init, external.try_justext))
            and _install_replacement(external, "jt_stoplist_init", external.jt_stoplist_init, jt_stoplist_init,
                                     (sha_init, sha_try), also=(external.try_justext,)))


#: ``re:test(ATTRS, 'REGEX'[, 'FLAGS'])`` in an XPath: EXSLT's regex test as trafilatura writes it
_RE_TEST = re.compile(r"re:test\(\s*(@[\w-]+(?:\s*\|\s*@[\w-]+)*)\s*,\s*'([^']*)'\s*(?:,\s*'([^']*)'\s*)?\)")
_XPATH_STRING = re.compile(r"'[^']*'|\"[^\"]*\"")
_REGEXP_NS = "http://exslt.org/regular-expressions"


def guard_regex_tests(path: str) -> str:
    """``re:test(@a|@b, 'R', 'F')`` -> ``((@a|@b) and re:test(@a|@b, 'R', 'F'))`` wherever ``R``
    cannot match the empty string. Exact: lxml's test gets an absent attribute as "" and searches
    it with Python's ``re`` (ignoring case when ``'i'`` is in the flags), so where ``R`` cannot
    match "" the test of an element without the attribute is false, and XPath's ``and`` skips it."""

    def guarded(match: re.Match) -> str:
        attributes, regex, flags = match.group(1), match.group(2), match.group(3) or ""
        try:
            matches_empty = re.compile(regex, re.IGNORECASE if "i" in flags else 0).search("") is not None
        except re.error:
            return match.group(0)
        return match.group(0) if matches_empty else f"(({attributes}) and {match.group(0)})"

    return _RE_TEST.sub(guarded, path)


def _selects_elements(path: str) -> bool:
    """Whether an XPath's result can only be elements (no attribute, text or function result
    outside its predicates): then plain strings inside it change nothing in what it returns."""
    skeleton, depth = [], 0
    for char in _XPATH_STRING.sub("''", path):
        depth += char == "["
        if depth == 0:
            skeleton.append(char)
        depth -= char == "]"
    text = "".join(skeleton)
    return "@" not in text and re.search(r"[\w-]\s*\(", text) is None and "::" not in text


def _xpath_prefixes(path: str) -> set[str]:
    return set(re.findall(r"(?<![\w:.-])([A-Za-z_][\w.-]*):(?!:)", _XPATH_STRING.sub("''", path)))


def _install_faster_xpaths() -> bool:
    """Replace trafilatura's XPaths (its lists in ``trafilatura.xpaths``, changed in place so every
    module that imported a list sees it, and ``BASIC_CLEAN_XPATH``) with faster equals:

    - a Python function selecting the same elements (:mod:`_xpath_to_python`), where the XPath is
      in the subset it translates (all of its extraction's XPaths but one cheap union of
      positional paths, which stays as it is);
    - else, if it runs ``re:test``, the same XPath with each test guarded by
      :func:`guard_regex_tests`, built with ``smart_strings=False`` when it selects only elements.

    Each replacement must select the same elements as its original on a probe page, else nothing
    is replaced. Returns whether any was."""
    if _REPLACED_XPATHS:
        return True
    try:
        from lxml import etree
        from lxml import html as lxml_html
        from trafilatura import baseline, settings, xpaths
    except ImportError:  # pragma: no cover - trafilatura is the backend here
        return False
    replaced: list[tuple[object, object, object, object]] = []  # (container, key, original, new)

    def faster(original):
        path = getattr(original, "path", None)
        if type(original) is not etree.XPath or not isinstance(path, str):
            return None
        try:
            return compile_xpath(path)
        except Unsupported:
            pass
        if "re:test" not in path or _xpath_prefixes(path) != {"re"}:
            return None
        new_path = guard_regex_tests(path)
        if new_path == path:
            return None
        return etree.XPath(new_path, namespaces={"re": _REGEXP_NS}, smart_strings=not _selects_elements(path))

    for value in vars(xpaths).values():
        if isinstance(value, list):
            for i, original in enumerate(value):
                new = faster(original)
                if new is not None:
                    replaced.append((value, i, original, new))
    basic = getattr(settings, "BASIC_CLEAN_XPATH", None)
    new = faster(basic)
    if new is not None:
        replaced.append((settings, "BASIC_CLEAN_XPATH", basic, new))
        if getattr(baseline, "BASIC_CLEAN_XPATH", None) is basic:
            replaced.append((baseline, "BASIC_CLEAN_XPATH", basic, new))
    probe = lxml_html.fromstring(_XPATH_PROBE)
    for _, _, original, new in replaced:
        if original(probe) != new(probe):  # lxml gives a node's live proxy again: identity compares
            return False
    for container, key, _, new in replaced:
        _set(container, key, new)
    _REPLACED_XPATHS.extend(replaced)
    return bool(replaced)


#: trafilatura's own justext stoplist (its tuple), kept across :func:`plain_trafilatura` blocks as
#: trafilatura keeps it for its process: built again per block, the plain side of an A/B paid the
#: union (~70 ms) and justext's frozenset (~6 ms) on every page reaching justext
_PLAIN_JT_STOPLIST: list[tuple[str, ...]] = []


@contextlib.contextmanager
def plain_trafilatura() -> Iterator[None]:
    """Within this block trafilatura runs as shipped: lxml.html's stock parser (its Python class
    lookup), its own pruning, link-density loop, tree copies, XPaths, justext stoplist and result
    tree -> text conversion (after the XPath line joining, when joining); the lean replacements come
    back on exit. For A/B checks that the lean path gives the same text (tests,
    ``benchmarks/extraction.py``)."""
    from lxml import html as lxml_html
    from trafilatura import core, htmlprocessing, main_extractor
    from trafilatura import utils as tutils

    from justext import core as justext_core
    from trafilatura import external

    from refinery.stages import _trafilatura_rules

    lean_parser, lean_prune, lean_prepare, lean_repair, lean_core_prune = (
        tutils.HTML_PARSER, main_extractor.prune_unwanted_nodes, core._prepare_tree, tutils.repair_faulty_html,
        core.prune_unwanted_nodes)
    lean_define, lean_init, lean_jt_stoplist = justext_core.define_stoplist, external.jt_stoplist_init, external.JT_STOPLIST
    justext_core.define_stoplist = getattr(lean_define, "_original", lean_define)
    external.jt_stoplist_init = getattr(lean_init, "_original", lean_init)
    # trafilatura's own union (a tuple), built once by trafilatura's code on the first block that needs it
    external.JT_STOPLIST = _PLAIN_JT_STOPLIST[0] if _PLAIN_JT_STOPLIST else None
    global LEAN_TOTEXT
    lean_links, lean_totext = _trafilatura_rules.LEAN_LINK_DENSITY, LEAN_TOTEXT
    _trafilatura_rules.LEAN_LINK_DENSITY = False  # trafilatura's own delete_by_link_density loop
    LEAN_TOTEXT = False  # trafilatura's own xmltotxt (after the XPath line joining when joining)
    tutils.repair_faulty_html = getattr(lean_repair, "_original", lean_repair)
    tutils.HTML_PARSER = lxml_html.HTMLParser(collect_ids=False, default_doctype=False, encoding="utf-8",
                                              remove_comments=True, remove_pis=True)
    main_extractor.prune_unwanted_nodes = core.prune_unwanted_nodes = htmlprocessing.prune_unwanted_nodes
    core._prepare_tree = getattr(lean_prepare, "_original", lean_prepare)
    for container, key, original, _ in _REPLACED_XPATHS:
        _set(container, key, original)
    try:
        yield
    finally:
        tutils.HTML_PARSER, main_extractor.prune_unwanted_nodes = lean_parser, lean_prune
        core.prune_unwanted_nodes = lean_core_prune
        core._prepare_tree, tutils.repair_faulty_html = lean_prepare, lean_repair
        _trafilatura_rules.LEAN_LINK_DENSITY, LEAN_TOTEXT = lean_links, lean_totext
        justext_core.define_stoplist, external.jt_stoplist_init = lean_define, lean_init
        if external.JT_STOPLIST is not None and not _PLAIN_JT_STOPLIST:
            _PLAIN_JT_STOPLIST.append(external.JT_STOPLIST)
        external.JT_STOPLIST = lean_jt_stoplist
        for container, key, _, new in _REPLACED_XPATHS:
            _set(container, key, new)


def _set(container, key, value) -> None:
    if isinstance(container, list):
        container[key] = value
    else:
        setattr(container, key, value)


#: the XPaths replaced by :func:`_install_faster_xpaths`: (container, key, original, new)
_REPLACED_XPATHS: list[tuple[object, object, object, object]] = []

#: a page whose elements carry the classes, ids and styles trafilatura's XPaths test
_XPATH_PROBE = (
    "<html><body><div id='main-content' class='post-content article-body'>"
    "<div class='comments-title'>c</div><p class='hidden x'>h</p><span style='display:none'>n</span>"
    "<div id='reply-1' class='-reply- message'>r</div><section class='comment-list'>l</section>"
    "<div role='navigation' class='nav'>n</div><div class='author-name' rel='author'>a</div>"
    "<div class='cookie-banner'>k</div><div id='onetrust-banner'>o</div>"
    "<p class=''>e</p><p id=''>f</p><div class='bottom link'>b</div></div><article><p>t</p></article>"
    "</body></html>")


#: sha256 of trafilatura 2.3's ``htmlprocessing.prune_unwanted_nodes`` source, mirrored above
_PRUNE_SOURCE_SHA256 = "4731f8e24ef86449c2714a6257d2ff892ff12a6a3d544d7ca87d6536fab29915"

#: sha256 of trafilatura 2.3's ``core._prepare_tree`` and ``core.trafilatura_sequence`` sources, the
#: code :func:`_install_lean_prepare` reasons about
_PREPARE_SOURCES_SHA256 = ("9595f0642825c2c7ca61f5f311b0070b1cfaaca7009a7d916bce8eeff9b93e34",
                           "f03dc4d2946dacbd0e023ca1c51fdf329e0fdc0be342fd0f14924396ec646e05")

#: regions skipped before parsing; a ``<title>``/``<textarea>`` is text to the HTML tokenizer, so
#: a "<script>" inside one is skipped over, not cut
_RAW_TAGS = ("script", "style", "title", "textarea")


def _nocase(tag: str) -> str:
    # "[sS][cC]..." rather than re.IGNORECASE: a pattern starting with a literal "<" is searched
    # with a fast literal scan, an IGNORECASE one character by character (3x slower here)
    return "".join(f"[{c.lower()}{c.upper()}]" for c in tag)


# only the start of a start tag: its end is found with str.find, so every step moves past a ">"
# ("<script" a million times without one costs one scan, not one per occurrence)
_RAW_OPEN = re.compile(r"<(?:!--|(%s)(?=[\s/>]))" % "|".join(_nocase(t) for t in _RAW_TAGS))
_RAW_CLOSE = {tag: re.compile(r"</%s[\s/>]" % _nocase(tag)) for tag in _RAW_TAGS}
_RAW_START = {tag: re.compile(r"<%s[\s/>]" % _nocase(tag)) for tag in _RAW_TAGS}
_KEEP_TAGS = ("title", "textarea")
_JSON_LD = re.compile(r"ld\+json", re.IGNORECASE)


def strip_dropped_elements(html: str) -> str:
    """``html`` without the ``<script>`` (except JSON-LD) and ``<style>`` elements and the comments
    that trafilatura would delete after parsing. Not ``<noscript>`` (trafilatura's fallback reads
    Blogger posts from it) nor ``<svg>`` (nested ones: the first end tag does not end the outer).
    A "self-closing" ``<script .../>`` followed by text and then ``</script>`` is cut up to that
    end tag, as browsers parse it (libxml2 would make its JavaScript page text). One left-to-right
    scan (linear: an element never closed ends the scan, the rest is kept; an end tag found is
    reused by the start tags before it)."""
    parts: list[str] = []
    pos = keep_from = 0
    # the first end tag of each raw-text tag at or after some point, as last searched: a later
    # start tag before it reuses it (a page of "<script/>" and one "</script>" at the end is one
    # search, not one per tag); None: no end tag left in the page
    closes: dict[str, re.Match | None] = {}
    while True:
        m = _RAW_OPEN.search(html, pos)
        if m is None:
            break
        tag = (m.group(1) or "").lower()
        if not tag:  # a comment: up to "-->"
            end = html.find("-->", m.end())
            if end < 0:
                break
            end += 3
            parts.append(html[keep_from:m.start()])
            pos = keep_from = end
            continue
        tag_end = html.find(">", m.end())
        if tag_end < 0:
            break
        attrs = html[m.end():tag_end]
        close = closes.get(tag, False)
        if close is False or (close is not None and close.start() <= tag_end):
            close = closes[tag] = _RAW_CLOSE[tag].search(html, tag_end + 1)
        if attrs.endswith("/") and (close is None or tag in _KEEP_TAGS
                                    or _RAW_START[tag].search(html, tag_end + 1, close.start()) is not None):
            # libxml2 closes "<script/>" at "/>" and what follows is content: only the tag goes.
            # So it stays when another "<script>" opens before the next "</script>" (that end tag is
            # the other one's, as in XHTML) or none follows
            end = tag_end + 1
            if tag in _KEEP_TAGS:
                pos = end
                continue
        elif close is None:
            break
        else:
            # up to the end tag; also after "<script .../>" when only text comes before it: browsers
            # ignore that "/" (HTML5: a script's text runs to "</script>"), libxml2 does not and
            # would hand the JavaScript to trafilatura as page text
            end = html.find(">", close.start())
            if end < 0:
                break
            end += 1
            if tag in _KEEP_TAGS or (tag == "script" and _JSON_LD.search(attrs)):
                pos = end
                continue
        parts.append(html[keep_from:m.start()])
        pos = keep_from = end
    if not parts:
        return html
    parts.append(html[keep_from:])
    return "".join(parts)


#: trafilatura.extract keyword -> trafilatura.settings.Extractor keyword
_EXTRACTOR_ARGS = {"favor_precision": "precision", "favor_recall": "recall", "include_comments": "comments",
                   "include_tables": "tables", "fast": "fast", "output_format": "output_format",
                   "with_metadata": "with_metadata", "include_formatting": "formatting",
                   "include_links": "links", "include_images": "images"}


def _trafilatura_call(kwargs: dict):
    """``fn(html_or_tree, url) -> text or None``: ``trafilatura.extract(html, url=url, **kwargs)``
    with the settings object built once (same text; falls back to the plain call for keywords
    not mapped here)."""
    import copy

    import trafilatura

    extract = trafilatura.extract
    try:
        from trafilatura.settings import Extractor
    except ImportError:  # pragma: no cover - an older trafilatura
        Extractor = None
    if Extractor is None or not set(kwargs) <= set(_EXTRACTOR_ARGS):
        return lambda html, url: extract(html, url=url, **kwargs)
    base = Extractor(**{_EXTRACTOR_ARGS[k]: v for k, v in kwargs.items()})

    def call(html, url):
        options = copy.copy(base)
        options.url = url  # what Extractor(url=url) sets
        options.source = url and url.encode("utf-8", "replace").decode("utf-8")
        return extract(html, options=options)

    return call


#: a line break of the page's source with the collapsible whitespace around it (HTML's: space, tab,
#: line feed, form feed, carriage return; not the no-break space)
_SOURCE_BREAK = re.compile(r"[ \t\r\f]*\n[ \t\n\r\f]*")
_LEADING_BREAK = re.compile(r"^[ \t\r\f]*\n[ \t\n\r\f]*")
_TRAILING_BREAK = re.compile(r"[ \t\r\f]*\n[ \t\n\r\f]*$")
#: trafilatura's inline elements (its result tree's): text runs on across them
_INLINE = frozenset(("hi", "ref", "del", "code"))
#: scripts written without spaces: a line break between two of their characters is removed, not a
#: space (CSS Text 3's segment break rule; a browser shows "中文字", not "中文 字")
_WIDE = re.compile("[\u2e80-\u303f\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
                   "\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003ffff]")  # not Hangul: Korean has spaces
_BROKEN_TEXT_XPATH = None
_JOIN_LINES: ContextVar[bool] = ContextVar("refinery_join_source_lines", default=False)
#: the fallback passes' calls (:func:`_with_flag`): the source's indentation goes, its
#: line breaks stay (:func:`dedent_source_lines`)
_DEDENT_LINES: ContextVar[bool] = ContextVar("refinery_dedent_source_lines", default=False)
#: indentation after a line break of the source (the break stays)
_INDENT = re.compile(r"\n[ \t\r\f]+")
_INDENTED_TEXT_XPATH = None


def _joined(match: re.Match) -> str:
    text, start, end = match.string, match.start(), match.end()
    if 0 < start and end < len(text) and _WIDE.match(text[start - 1]) and _WIDE.match(text[end]):
        return ""
    return " "


def join_source_line_breaks(tree: Any) -> None:
    """In trafilatura's result tree, line breaks of the page's source inside text (not in code)
    become the space a browser shows, or nothing where a line starts or ends (at a block's edge or
    a ``<br>``). Trafilatura trims a paragraph's own text but keeps the text after an inline child
    (a link, ``<code>``) or a ``<br>`` as the source wrote it, so a paragraph wrapped at 80 columns
    came out in lines that end mid-sentence ("...the string type in" / "Mercurial."), whose lone
    words line-wise corrections then removed as one-word lines (found by reading a run's kept
    documents). Done on the result, after every extraction decision, so that only the text's
    whitespace changes; text nodes of whitespace alone are left as they are, and so is text in
    ``code`` and ``quote`` (trafilatura's name for a ``<pre>`` that does not look like code: a
    poem, a table drawn in characters), but for a ``quote`` that was a ``<blockquote>`` (marked
    ``BLOCKQUOTE`` while joining: :func:`_install_blockquote_marks`).

    A run of spaces with a no-break space in it becomes one space (``may_collapse``: "die
    \u00a0Prinzessin", a wide gap in a browser); a lone no-break space stays.

    Then the own text of a paragraph, heading or quote loses its leading whitespace (``may_trim``):
    the conversion starts it on a line of its own, and its spaces, tabs or line breaks were the
    source's indentation ("<p>     Die Online-Andacht", "<quote> <p>", "<head>  1  Über")."""
    global _BROKEN_TEXT_XPATH
    if _BROKEN_TEXT_XPATH is None:
        from lxml import etree

        # a text node with a line break and more than whitespace, or one of several adjacent
        # nodes: after lxml's strip_tags one element's text can be "Other", "\n", "title", none
        # of which holds both, while their string (what lxml's .text/.tail give) does
        # (a no-break space: see SPACE_RUN)
        _BROKEN_TEXT_XPATH = etree.XPath("//text()[contains(., '\n') or contains(., '\u00a0')]"
                                         "[normalize-space(.) or "
                                         "preceding-sibling::node()[1][self::text()] or "
                                         "following-sibling::node()[1][self::text()]]"
                                         f"[not(ancestor::code or ancestor::quote[not(@{BLOCKQUOTE})]"
                                         " or ancestor::pre)]")
    for owner, is_tail in _owned_texts(_BROKEN_TEXT_XPATH(tree)):
        if is_tail:
            text, container, after = owner.tail, owner.getparent(), owner.getnext()
            starts_line = owner.tag not in _INLINE  # after a block or a <br>
        else:
            text, container, after = owner.text, owner, (owner[0] if len(owner) else None)
            starts_line = owner.tag not in _INLINE
        joins = may_join(text)  # whitespace alone stays as it is (the lean walk's test too)
        if not joins and not may_collapse(text):
            continue
        if joins:
            ends_line = (after.tag not in _INLINE) if after is not None else (container is None
                                                                               or container.tag not in _INLINE)
            if starts_line:
                text = _LEADING_BREAK.sub("", text)
            if ends_line:
                text = _TRAILING_BREAK.sub("", text)
            text = _SOURCE_BREAK.sub(_joined, text)
        if "\u00a0" in text:  # after the joining: "a\u00a0\n b" is a run now
            text = SPACE_RUN.sub(" ", text)
        if is_tail:
            owner.tail = text
        else:
            owner.text = text
    _trim_line_starts(tree)


def _owned_texts(nodes: Any) -> Iterator[tuple[Any, bool]]:
    """``(element, is_tail)`` for each element text or tail that one of the text ``nodes`` is part
    of, once: after lxml's strip_tags one element's text can be several adjacent nodes, while
    ``.text``/``.tail`` give their whole string."""
    done = set()
    for node in nodes:
        owner = node.getparent()  # the element whose text or tail this is (of all its nodes)
        if owner is None or (owner, node.is_tail) in done:
            continue
        done.add((owner, node.is_tail))
        yield owner, node.is_tail


def dedent_source_lines(tree: Any) -> None:
    """The fallback passes' half of :func:`join_source_line_breaks`: in trafilatura's result tree,
    the whitespace after a line break of the page's source goes (not in code, a ``quote`` or a
    ``pre``), and so does the leading whitespace of a paragraph's, heading's or quote's own text
    (``may_trim``), and a run of spaces with a no-break space in it becomes one space
    (``may_collapse``); the line breaks stay. A ``quote`` that was a ``<blockquote>`` is dedented
    like a paragraph (marked ``BLOCKQUOTE``, as for the joining). The fallback's text is at times a
    page's whole text in one node with its blocks on lines of their own (a menu), so its lines are
    not joined, but their
    indentation is the source's ("\\t\\tHalo", "            Tipp favorisieren", a magazine's
    article indented by four spaces on every line), which a browser does not show."""
    global _INDENTED_TEXT_XPATH
    if _INDENTED_TEXT_XPATH is None:
        from lxml import etree

        _INDENTED_TEXT_XPATH = etree.XPath("//text()[contains(., '\n') or contains(., '\u00a0')]"
                                           f"[not(ancestor::code or ancestor::quote[not(@{BLOCKQUOTE})]"
                                           " or ancestor::pre)]")
    for owner, is_tail in _owned_texts(_INDENTED_TEXT_XPATH(tree)):
        text = owner.tail if is_tail else owner.text
        dedented = _INDENT.sub("\n", text)
        if "\u00a0" in dedented:
            dedented = SPACE_RUN.sub(" ", dedented)
        if dedented != text:
            if is_tail:
                owner.tail = dedented
            else:
                owner.text = dedented
    _trim_line_starts(tree)


def _trim_line_starts(tree: Any) -> None:
    """The leading whitespace of each text ``may_trim`` names, outside code (its indentation)."""
    for element in tree.iter(*LINE_START_TAGS):
        if may_trim(element.tag, element.text) and not keeps_breaks(element) and not any(
                keeps_breaks(ancestor) for ancestor in element.iterancestors(*KEEPS_BREAKS)):
            element.text = element.text.lstrip(LINE_START_SPACE) or None


#: whether trafilatura's result tree -> text runs lean where it can (:func:`_install_lean_totext`);
#: off inside :func:`plain_trafilatura`, and a switch for A/B measurements in one process
LEAN_TOTEXT = True


def _text_wrapper() -> Callable:
    """trafilatura's ``core.xmltotxt`` (its result tree to text) wrapped, once per process: inside
    :func:`_with_flag` (_JOIN_LINES) calls it joins source line breaks first; with a lean conversion
    installed (its ``lean``, :func:`_install_lean_totext`) it converts plain text (no formatting) of
    a whole tree with that (it leaves a tree holding a text to join to the joining, then walks it
    again); else trafilatura's own runs."""
    from trafilatura import core

    current = core.xmltotxt
    if getattr(current, "_refinery", False):
        return current
    original = current

    def convert(xmloutput, include_formatting):
        join = xmloutput is not None and _JOIN_LINES.get()
        if xmloutput is not None and not join and _DEDENT_LINES.get():
            dedent_source_lines(xmloutput)
        # not inside a tree: join_source_line_breaks' XPath ("//text()") reads the whole document
        if (xmltotxt.lean is not None and LEAN_TOTEXT and not include_formatting and xmloutput is not None
                and xmloutput.getparent() is None):
            return xmltotxt.lean(xmloutput, join)
        if join:
            join_source_line_breaks(xmloutput)
        return original(xmloutput, include_formatting)

    def xmltotxt(xmloutput, include_formatting):
        marks = _QUOTE_MARKS.get()
        # the tree with its quotes' lines marked, copied before the conversion (which joins in place)
        marked = line_marked_copy(xmloutput) if marks is not None and xmloutput is not None else None
        text = convert(xmloutput, include_formatting)
        if marked is not None:
            marks.append((text, convert(marked, include_formatting)))
        return text

    xmltotxt._refinery = True
    xmltotxt._original = original
    xmltotxt.lean = None
    core.xmltotxt = xmltotxt
    return xmltotxt


def _install_joined_lines() -> bool:
    """Wrap trafilatura's ``core.xmltotxt`` (:func:`_text_wrapper`) so that, inside
    :func:`_with_flag` (_JOIN_LINES) calls only, it joins source line breaks first (blockquotes too:
    :func:`_install_blockquote_marks`)."""
    _text_wrapper()
    _install_blockquote_marks()
    _install_reply_quote_marks()
    return True


#: sha256 of trafilatura 2.3.1's ``main_extractor.handle_quotes`` and ``htmlprocessing.convert_quotes``:
#: both ``<blockquote>`` and ``<pre>`` become ``quote``, and ``handle_quotes`` gives a new element
#: with the tag alone
_QUOTES_SOURCES_SHA256 = ("08b75e38a525e7485971f0e1db7d16cd224b83aa2f39962df15f55d3d84159e1",
                          "07d7bda784a292f83991024fc2f9ed78f34671c23adb832df201789108c10006")


def _install_blockquote_marks() -> bool:
    """Inside :func:`_with_flag` (_JOIN_LINES) calls, mark a ``<blockquote>`` with no ``<pre>`` in it
    before trafilatura turns it into ``quote`` (as it does a ``<pre>``), and carry the mark
    (``BLOCKQUOTE``) to the ``quote`` of the result tree, so that the line joining tells a
    blockquote, wrapped at 80 columns in the source, from preformatted text (a poem, a table drawn
    in characters). A ``<pre>`` is marked too (:data:`PRE`), for the code marks
    (:func:`line_marked_copy`). Outside joining calls nothing is marked: trafilatura's own tree. Guarded: only
    over the trafilatura functions this reasons about (sources compared); else quotes keep their
    breaks, as before. Returns whether it is in place."""
    from trafilatura import htmlprocessing, main_extractor

    convert, handle = htmlprocessing.CONVERSIONS["blockquote"], main_extractor.handle_quotes
    if getattr(handle, "_refinery", False):
        return True

    def convert_quotes(elem):
        if _JOIN_LINES.get() or _DEDENT_LINES.get():
            # tree.iter visits a blockquote before its descendants: a <pre> in it is not converted yet
            if elem.tag == "blockquote" and elem.find(".//pre") is None:
                elem.set(BLOCKQUOTE, "")
            elif elem.tag == "pre":
                elem.set(PRE, "")
        convert(elem)

    def handle_quotes(element, options):
        quote = handle(element, options)
        if quote is not None and quote.tag == "quote":  # a code block is a copy: its attributes came along
            for mark in (BLOCKQUOTE, PRE):
                if element.get(mark) is not None:
                    quote.set(mark, "")
        return quote

    if not _install_replacement(main_extractor, "handle_quotes", handle, handle_quotes, _QUOTES_SOURCES_SHA256,
                                also=(convert,)):
        return False
    htmlprocessing.CONVERSIONS["blockquote"] = htmlprocessing.CONVERSIONS["pre"] = convert_quotes
    return True


#: attribute of a page's ``<pre>`` and of the result-tree ``quote`` trafilatura makes of one that does
#: not look like code (one that does becomes ``code``): set while joining or dedenting
#: (:func:`_install_blockquote_marks`), so that its lines are marked as code (:func:`line_marked_copy`)
PRE = "refinery-pre"
#: attribute of a page's element inside a forum's quote ``<div>`` (:data:`REPLY_QUOTE_CLASSES`),
#: and of the result-tree element trafilatura makes of it (:func:`_install_reply_quote_marks`)
REPLY_QUOTE = "refinery-reply-quote"
#: class tokens (whole tokens, case as written) of the ``<div>`` in which forums put the post a
#: reply quotes, where they do not use a ``<blockquote>``: the ones real pages show (session 48,
#: the 1,033 evaluation pages and the WARCs): mactechnews' ``TexticonQuote``. Not vBulletin's
#: ``bbcode_quote`` (trafilatura drops its text on the one page; each token is a scan of the
#: page, ~45 us). Not ``quote`` alone: on those pages a pull quote, a wiki's epigraph, a
#: magazine's quote box (brandeins, harrypotter.fandom, watson), never a reply. XenForo's
#: ``bbCodeBlock--quote`` and Discourse's ``aside.quote`` hold a ``<blockquote>``: marked as such.
REPLY_QUOTE_CLASSES = frozenset(("TexticonQuote",))
_REPLY_QUOTE_XPATH = None
#: while a page is extracted with quote marks (:func:`with_line_marks`): whether its HTML holds a
#: token of :data:`REPLY_QUOTE_CLASSES` (a string search: most pages skip the tree's XPath)
_REPLY_QUOTE_PAGE: ContextVar[bool] = ContextVar("refinery_reply_quote_page", default=False)
#: sha256 of trafilatura 2.3.1's ``main_extractor.handle_textelem`` (it returns the result-tree
#: element made of the page's element, or None) and ``extract_content``
_REPLY_QUOTE_SOURCES_SHA256 = ("59c8a575858db16d721f2ad8872f75beb8714d6e2d3f65ad70c46b6d123e34c0",
                               "f0270c94ac5f30b587af9038adf70bc04082aaef15249c854bc6f8044074af3a")


def _install_reply_quote_marks() -> bool:
    """While quote marks are collected (:func:`with_line_marks`), mark (:data:`REPLY_QUOTE`) each
    element inside a forum's quote ``<div>`` (:data:`REPLY_QUOTE_CLASSES`) of the cleaned page
    before trafilatura extracts from it, and carry the mark to the element ``handle_textelem``
    makes of a marked one (a paragraph: the quoted author's name, the quoted text), so that
    :func:`line_marked_copy` marks its lines. Only an attribute is added, in both trees: the text
    is trafilatura's. Guarded: only over the functions this reasons about (sources compared).
    Returns whether it is in place."""
    from trafilatura import core, main_extractor

    handle, extract = main_extractor.handle_textelem, core.extract_content
    if getattr(handle, "_refinery", False):
        return True

    def handle_textelem(element, potential_tags, options):
        quoted = element.get(REPLY_QUOTE) is not None  # read first: a handler may clear or rename it
        made = handle(element, potential_tags, options)
        if quoted and made is not None:
            made.set(REPLY_QUOTE, "")
        return made

    def extract_content(cleaned_tree, options):
        if _REPLY_QUOTE_PAGE.get():
            mark_reply_quotes(cleaned_tree)
        return extract(cleaned_tree, options)

    if not _install_replacement(main_extractor, "handle_textelem", handle, handle_textelem,
                                _REPLY_QUOTE_SOURCES_SHA256, also=(main_extractor.extract_content,)):
        return False
    extract_content._refinery, extract_content._original = True, extract
    core.extract_content = extract_content
    return True


def mark_reply_quotes(tree: Any) -> int:
    """Mark (:data:`REPLY_QUOTE`) every element in and under a ``<div>`` of ``tree`` with a class
    token of :data:`REPLY_QUOTE_CLASSES`; the number of such divs."""
    global _REPLY_QUOTE_XPATH
    if _REPLY_QUOTE_XPATH is None:
        from lxml import etree

        # a substring test first (one XPath over the page), the whole class token checked after
        _REPLY_QUOTE_XPATH = etree.XPath("//div[" + " or ".join(
            f"contains(@class, '{token}')" for token in sorted(REPLY_QUOTE_CLASSES)) + "]")
    found = 0
    for div in _REPLY_QUOTE_XPATH(tree):
        if REPLY_QUOTE_CLASSES.isdisjoint(div.get("class", "").split()):
            continue
        found += 1
        for element in div.iter():
            if isinstance(element.tag, str):
                element.set(REPLY_QUOTE, "")
    return found


#: the character that marks a ``<blockquote>``'s lines in a second conversion of a result tree
#: (:func:`line_marked_copy`): printable (the conversion keeps it), never a word character, not
#: composed by NFC; a page holding it gets no marks (the marked text then differs elsewhere too)
QUOTE_MARK = "\u2e3f"
#: the characters around each run of a code block's text on a line (:func:`line_marked_copy`; like
#: :data:`QUOTE_MARK`): a line of the text is code when it holds such a run and nothing outside
#: runs but whitespace (inline ``<code>`` in a sentence shares its line with the sentence)
CODE_OPEN, CODE_CLOSE = "\u2e3d", "\u2e3e"
#: every mark a marked text may hold
LINE_MARKS = QUOTE_MARK + CODE_OPEN + CODE_CLOSE
_NO_MARKS = str.maketrans("", "", LINE_MARKS)
#: where a text starts a line: its start or a line break, after the whitespace the joining and
#: the dedenting remove (a mark before them would stop that)
_LINE_STARTS = re.compile(r"(?:^|\n)[ \t\n\r\f\u00a0]*(?=\S)")
#: a line's text in a code node, from its first to its last character that is not whitespace (the
#: marks go inside the indentation and trailing spaces, which the conversion and cleaning may cut)
_CODE_RUN = re.compile(r"\S(?:[^\n]*\S)?")
#: while set (a list: :func:`with_line_marks`), each result tree converted to text that holds a
#: blockquote or code appends ``(text, the text of its marked copy)``
_QUOTE_MARKS: ContextVar[list | None] = ContextVar("refinery_quote_marks", default=None)


def without_marks(text: str) -> str:
    """``text`` without any of :data:`LINE_MARKS`."""
    return text.translate(_NO_MARKS)


def line_marked_copy(tree: Any) -> Any | None:
    """A copy of trafilatura's result ``tree`` with :data:`QUOTE_MARK` at the start of every line
    of text inside a quote: a ``quote`` that was a ``<blockquote>`` (marked ``BLOCKQUOTE``: only
    while joining or dedenting) or an element made from a forum's quote ``<div>`` (marked
    :data:`REPLY_QUOTE`: :func:`_install_reply_quote_marks`), and :data:`CODE_OPEN` / :data:`CODE_CLOSE`
    around each line's text inside code (``code``: a ``<pre>`` that looks like code, a ``<code>``;
    a ``quote`` that was a ``<pre>``, marked :data:`PRE`), or None when it holds none. A quote
    whose lines hold other text too is not marked (:func:`_has_own_lines`). Converted like the
    tree, the copy gives the same text with marks, which say which of its lines came from quotes
    or code."""
    quotes = tree.find(f".//quote[@{BLOCKQUOTE}]") is not None or tree.find(f".//*[@{REPLY_QUOTE}]") is not None
    code = tree.find(".//code") is not None or tree.find(f".//quote[@{PRE}]") is not None
    if not (quotes or code):
        return None
    import copy

    tree = copy.deepcopy(tree)
    # code first: a quote's mark then goes before a code run starting its line
    coded = _mark_inside(tree, _is_code, _CODE_RUN, _in_code_marks) if code else False
    quoted = _mark_inside(tree, lambda e: _is_quote(e) and _has_own_lines(e), _LINE_STARTS, _with_mark) if quotes else False
    return tree if coded or quoted else None


def _mark_inside(tree: Any, chosen: Callable[[Any], bool], where: re.Pattern, mark: Callable) -> bool:
    """Mark (``where.sub(mark, ...)``) the text inside each element of ``tree`` that is ``chosen``
    (its own text, and its descendants' texts and tails; one inside another is marked once);
    whether any was."""
    done: set = set()
    for element in tree.iter():
        if element in done or not chosen(element):
            continue
        for node in element.iter():
            done.add(node)
            if node.text and isinstance(node.tag, str):
                node.text = where.sub(mark, node.text)
            if node is not element and node.tail:
                node.tail = where.sub(mark, node.tail)
    return bool(done)


def _is_code(element: Any) -> bool:
    return element.tag == "code" or (element.tag == "quote" and element.get(PRE) is not None)


def _in_code_marks(match: re.Match) -> str:
    return CODE_OPEN + match.group(0) + CODE_CLOSE


def _is_quote(element: Any) -> bool:
    return isinstance(element.tag, str) and (element.get(REPLY_QUOTE) is not None
            or (element.tag == "quote" and element.get(BLOCKQUOTE) is not None))


def _has_own_lines(quote: Any) -> bool:
    """Whether the lines ``quote`` gives hold its text alone: no text after it (a forum's quote
    ``<div>`` followed by the reply in the same paragraph), and, in a list item or a table cell,
    whose line holds the item's or the row's other text, that item or row holds no text but the
    quote's (session 48: a quote in a cell or item was never marked). In two of them (a list in
    a cell): no."""
    if quote.tail and quote.tail.strip():
        return False
    holders = list(quote.iterancestors("cell", "item"))
    if not holders:
        return True
    if len(holders) > 1:
        return False
    line = holders[0] if holders[0].tag == "item" else holders[0].getparent()
    return line is not None and line.tag in ("item", "row") and _bare_text(line) == _bare_text(quote)


def _bare_text(element: Any) -> str:
    """The text inside ``element`` (not its tail) without whitespace."""
    return "".join("".join(element.itertext()).split())


def _with_mark(match: re.Match) -> str:
    return match.group(0) + QUOTE_MARK


def marked_text(text: str | None, converted: list[tuple[str, str]]) -> str | None:
    """``text`` (an extract call's: trafilatura's NFC of a conversion, perhaps with recipe lines
    after it) with :data:`QUOTE_MARK` on its quotes' lines and :data:`CODE_OPEN` / :data:`CODE_CLOSE`
    around its code (:func:`line_marked_copy`), from the ``converted`` (text, marked text) pairs
    that :func:`with_line_marks` collected; None when no pair gives exactly ``text`` without the
    marks (no quote or code, two conversions disagreeing, a page holding a mark itself)."""
    if not text or not converted:
        return None
    from unicodedata import normalize

    found = set()
    for plain, marked in converted:
        plain = normalize("NFC", plain)
        if text == plain or text.startswith(plain + "\n"):
            found.add(normalize("NFC", marked) + text[len(plain):])
    if len(found) != 1:
        return None
    marked = found.pop()
    return marked if without_marks(marked) == text else None


def with_line_marks(call: Callable) -> Callable:
    """``call`` (the cascade: ``fn(html, url) -> (text, path)``) returning ``(text, path, marked)``:
    ``marked`` is :func:`marked_text` of its text, or None."""
    def marking(html, url):
        converted: list[tuple[str, str]] = []
        token = _QUOTE_MARKS.set(converted)
        page = _REPLY_QUOTE_PAGE.set(_may_hold_reply_quotes(html))
        try:
            text, path = call(html, url)
        finally:
            _REPLY_QUOTE_PAGE.reset(page)
            _QUOTE_MARKS.reset(token)
        return text, path, marked_text(text, converted)

    return marking


def _may_hold_reply_quotes(html: Any) -> bool:
    """Whether ``html`` (text or bytes) holds a token of :data:`REPLY_QUOTE_CLASSES` anywhere."""
    if isinstance(html, str):
        return any(token in html for token in REPLY_QUOTE_CLASSES)
    if isinstance(html, (bytes, bytearray)):
        return any(token.encode() in html for token in REPLY_QUOTE_CLASSES)
    return True  # a parsed tree: its XPath decides


def _install_lean_totext() -> bool:
    """Give :func:`_text_wrapper` the lean conversion of ``_lean_totext`` (the same text as
    trafilatura's ``xmltotxt`` without formatting, and as :func:`join_source_line_breaks` before
    it; ~20-25% less CPU for that step, ~2% of the cascade). Guarded: only for the trafilatura
    version whose functions it mirrors (their sources compared). Returns whether it is in place."""
    wrapper = _text_wrapper()
    if wrapper.lean is None:
        mirrored = mirrored_functions()
        if wrapper._original is mirrored[0] and _sources_are(mirrored, _TOTEXT_SOURCES_SHA256):
            wrapper.lean = make_lean_xmltotxt(join_source_line_breaks)
    return wrapper.lean is not None


def _with_flag(flag: ContextVar[bool], call: Callable) -> Callable:
    """``call`` with ``flag`` set while it runs (what the text conversion reads: _JOIN_LINES,
    _DEDENT_LINES)."""
    def flagged(html, url):
        token = flag.set(True)
        try:
            return call(html, url)
        finally:
            flag.reset(token)

    return flagged


def _with_flags(flags: list[ContextVar[bool]], call: Callable) -> Callable:
    """``call`` with each of ``flags`` set while it runs (:func:`_with_flag`)."""
    for flag in flags:
        call = _with_flag(flag, call)
    return call


def _with_wild_headings(call: Callable) -> Callable:
    """``call`` returning (text, the text without the headings recovered on trafilatura's
    wild-text path): the fallback is decided on the second, as without them (_trafilatura_rules)."""
    from refinery.stages._trafilatura_rules import uncounted, wild_headings

    def with_headings(html, url):
        with wild_headings() as headings:
            text = call(html, url) or ""
        return text, uncounted(text, headings)

    return with_headings


def _first_text(result: str | tuple[str, str] | None) -> tuple[str, str]:
    """The first pass's text and the text whose length decides the fallback (the same but with
    :func:`_with_wild_headings`)."""
    if isinstance(result, tuple):
        return result
    return result or "", result or ""


def _with_rules(call: Callable, rules: Any) -> Callable:
    """``call`` run with trafilatura's precision rules set to ``rules`` (see _trafilatura_rules)."""
    from refinery.stages._trafilatura_rules import active

    def with_rules(html, url):
        with active(rules, url):
            return call(html, url)

    return with_rules


_LD_JSON_SCRIPT = re.compile(r"<script[^>]*ld\+json[^>]*>(.*?)</script>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_NON_WORD = re.compile(r"\W+")


def _words(text: str) -> str:
    """Lowercased words of ``text`` (markup and entities of JSON-LD strings resolved), one space apart."""
    import html

    return _NON_WORD.sub(" ", _TAG.sub(" ", html.unescape(text))).strip().lower()


def recipe_items(page: str) -> list[str]:
    """The ingredients and steps a page declares in its schema.org Recipe (JSON-LD), as words
    (steps cut to 60 characters); [] for a page without one (a substring test first: ~1% of pages)."""
    if '"Recipe"' not in page:
        return []

    def find(node: Any) -> dict | None:
        if isinstance(node, dict):
            kinds = node.get("@type")
            if "Recipe" in (kinds if isinstance(kinds, list) else [kinds]):
                return node
            node = list(node.values())
        if isinstance(node, list):
            for value in node:
                found = find(value)
                if found is not None:
                    return found
        return None

    def steps(node: Any, out: list[str]) -> None:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            if isinstance(node.get("text"), str):
                out.append(node["text"])
            steps(node.get("itemListElement"), out)
        elif isinstance(node, list):
            for value in node:
                steps(value, out)

    for m in _LD_JSON_SCRIPT.finditer(page):
        try:
            recipe = find(json.loads(m.group(1)))
        except (ValueError, RecursionError):
            continue
        if recipe is None:
            continue
        ingredients = [_words(x) for x in recipe.get("recipeIngredient") or [] if isinstance(x, str)]
        instructions: list[str] = []
        steps(recipe.get("recipeInstructions"), instructions)
        return ([w for w in ingredients if len(w) > 3]
                + [w[:60] for w in (_words(x) for x in instructions) if len(w) > 10])
    return []


def _with_recipe_lines(text: str, items: list[str], *sources: Callable[[], str]) -> str:
    """``text`` and, while it lacks most of the page's declared recipe ``items``, the lines of the
    next source's text (the fallback's, then balanced mode's) holding the missing ones, after it.
    Precision mode pruned recipe cards: 5 of the 13 recipe pages of the evaluation set lost every
    ingredient or every step, and the fallback never ran, the blog prose around the card being
    long (found by adversarial testing)."""
    for source in sources:
        have = _words(text)
        missing = [item for item in items if item not in have]
        if len(missing) < 0.5 * len(items):
            return text
        text = _recipe_lines_from(text, missing, source())
    return text


def _recipe_lines_from(text: str, missing: list[str], other: str) -> str:
    """``text`` and, after it, the lines of ``other`` holding a ``missing`` item: a line alone, or
    an amount and the ingredient on the next line (both, as one unit). A line already in the text
    or already added (compared by words) is not added again, nor a pair already in the text as two
    adjacent lines: a page whose text holds its steps twice (nestle-family.com) otherwise got
    them twice, and ``gopher_repetition`` removed the page."""
    lines = [line for line in other.split("\n") if line.strip()]
    words = [_words(line) for line in lines]
    alone = {i for i, w in enumerate(words) if any(item in w for item in missing)}
    pairs = {i for i, w in enumerate(words) if i not in alone and i + 1 < len(words)
             and any(item in f"{w} {words[i + 1]}" for item in missing)}
    seen_words = [_words(line) for line in text.split("\n") if line.strip()]
    seen, seen_pairs = set(seen_words), set(zip(seen_words, seen_words[1:]))
    added: list[int] = []

    def add(i: int) -> None:
        if added and added[-1] == i:
            return
        if added or seen_words:
            seen_pairs.add((words[added[-1]] if added else seen_words[-1], words[i]))
        added.append(i)
        seen.add(words[i])

    for i in range(len(lines)):
        if i in pairs and i + 1 not in alone:  # an amount and its ingredient: one unit
            if (words[i], words[i + 1]) not in seen_pairs:
                add(i)
                add(i + 1)
        elif i in pairs:  # a step's number or label over the step, which holds the item alone
            if words[i + 1] not in seen and words[i] not in seen:
                add(i)
        elif i in alone and words[i] not in seen:
            add(i)
    return text + "\n" + "\n".join(lines[i] for i in added) if added else text


def _with_first_lines(first: str, second: str) -> str:
    """``second`` (the fallback's text), after the lines of ``first`` it lacks when they are most of
    ``first``: the fallback chose another part of the page (german.stackexchange: the question,
    then one answer of six, and the question was lost)."""
    present = {line.strip() for line in second.split("\n")}
    missing = [line for line in first.split("\n") if line.strip() and line.strip() not in present]
    if sum(len(line.strip()) for line in missing) < 0.5 * len(first.strip()):
        return second  # the fallback holds the first pass's text (it was a longer extract of it)
    return "\n".join(missing) + "\n" + second


#: a text run between two tags and the start of ``<body>`` (for body_text_chars)
_TEXT_RUN = re.compile(r">([^<]+)")
_BODY_START = re.compile(r"<[bB][oO][dD][yY][\s>]")


#: what the recall fallback's baseline reads outside the body's text: JSON-LD full-text properties
#: (trafilatura's ``_JSON_HOOKS_RE``) and Discourse posts preloaded into an attribute
_BASELINE_HOOKS = re.compile(r'articleBody|reviewBody|recipeInstructions|acceptedAnswer|"Product"|"VideoObject"|"HowTo"')
_PRELOADED = re.compile(r"data-preloaded", re.IGNORECASE)
_JSON_LD_START = re.compile(r"<%s[^>]*ld\+json[^>]*>" % _nocase("script"), re.IGNORECASE)
_SCRIPT_END = re.compile(r"</%s" % _nocase("script"))


def body_text_chars(page: str) -> int:
    """Characters of the text between the tags of ``page`` from its ``<body>`` on (all of it without
    one), whitespace collapsed, entities as written: roughly the most text any extract can hold.
    JSON-LD before the body holding a full text the fallback's baseline reads (``articleBody``...)
    counts too: a paywalled article's body is often there only (a review, h15)."""
    start = _BODY_START.search(page)
    body_from = start.start() if start else 0
    # the length of the runs with whitespace collapsed and stripped, without building that text:
    # str.split() cuts at the characters the regex \s matches (both str.isspace), ~40% less CPU
    # than re.sub and strip (docs/extraction.md, "session 34")
    words = " ".join(_TEXT_RUN.findall(page, body_from)).split()
    count = sum(map(len, words)) + len(words) - 1 if words else 0
    for m in _JSON_LD_START.finditer(page, 0, body_from):
        end = _SCRIPT_END.search(page, m.end())
        script = page[m.end():end.start() if end else len(page)]
        if _BASELINE_HOOKS.search(script):
            count += len(script)
    return count


def fallback_may_win(page: str, text: str, judge_ratio: float) -> bool:
    """Whether the fallback pass is worth running after a first text ``text`` (non-empty, short).

    The fallback wins when its text is ``min_gain`` times longer; on a page whose body holds little
    more text than ``text`` (at most ``judge_ratio`` times) it never did. On the 2,077 real pages of
    the benchmarks, its 71 wins after a non-empty first text all had at least 10x; each half of the
    distinct pages gives 8 (its lowest winning ratio less 20%), which skips none of the other half's
    wins (docs/extraction.md, "The fallback judge"). 0: always run."""
    # a Discourse page's posts are JSON in an attribute, not body text (the baseline reads them);
    # searched for last: a case-insensitive search of the whole page costs as much as the count,
    # and most judged pages are decided by their body text already
    return (judge_ratio <= 0 or body_text_chars(page) > judge_ratio * len(text)
            or _PRELOADED.search(page) is not None)


def make_extract(config: dict):
    """``fn(html, url) -> (text or None, path)`` for a helper configuration (also used in-process);
    ``(text or None, path, marked text or None)`` with ``config["join_lines"]`` (the lines that came
    from a ``<blockquote>`` carry :data:`QUOTE_MARK`, code's text is between :data:`CODE_OPEN` and
    :data:`CODE_CLOSE`: :func:`with_line_marks`).

    Trafilatura with ``config["fallback"]`` (a dict) runs a cascade, because one setting cannot
    both keep boilerplate out of articles and find the text of table-layout pages (issue 13):

    1. the configured first pass (default: precision mode, tables on, fast = no readability/justext
       comparison); path ``"precision"`` (``"balanced"`` when ``favor_precision`` is off);
    2. if its text is shorter than ``below_chars``: trafilatura's recall mode (``mode="recall"``) or
       balanced mode (``"balanced"``: its recall escalation re-extracts short pages, ~2x the CPU of
       recall mode on them), with tables and the readability/justext comparison; kept only if it is
       more than ``min_gain`` times longer (a longer text that is not much longer is mostly the
       boilerplate precision mode cut); path ``"fallback"``;
    3. if both are empty: trafilatura's ``baseline`` (JSON-LD article body, ``<article>``,
       paragraphs, else the page's body text); path ``"baseline"``.

    ``config["lean"]`` (default true) makes the trafilatura calls cheaper with the same text
    (identical on all 2,077 real pages checked; see above: C class lookup, settings built once,
    scripts/styles cut before parsing, one walk for the outermost pruned elements, its XPaths as
    Python selections); false calls ``trafilatura.extract`` plainly, page by page.

    ``config["rules"]`` (a dict of :class:`~refinery.stages._trafilatura_rules.PrecisionRules`
    fields, or None for trafilatura's own) changes rules of the precision-mode first pass.
    ``config["join_lines"]`` (default false) turns the page source's line breaks inside text into
    spaces in the first pass's text (:func:`join_source_line_breaks`), and drops the source's
    indentation from the fallback passes' text, whose lines stay (:func:`dedent_source_lines`).
    """
    backend = config["backend"]
    kwargs = config["kwargs"]
    if backend == "learned":  # the packaged block classifier (refinery/extract_fast.py)
        from refinery.extract_fast import FastExtractor

        fast = FastExtractor(kwargs.get("model_path"))
        return lambda html, url: (fast.extract(html, url), "learned")
    if backend == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        return lambda html, url: (extract_plain_text(html, **kwargs), "main_content")
    import logging

    import trafilatura
    from trafilatura import baseline

    # trafilatura logs a WARNING for every page without content; the parent records the reason
    logging.getLogger("trafilatura").setLevel(config.get("log_level") or logging.ERROR)
    lean = bool(config.get("lean", True))
    if lean:
        _install_c_class_lookup()
        _install_fast_prune()
        _install_lean_prepare()
        _install_lean_repair()
        _install_lean_stoplists()
        _install_faster_xpaths()
        _install_lean_totext()
        first_call = _trafilatura_call(kwargs)
        prepare = strip_dropped_elements
    else:
        first_call = lambda html, url: trafilatura.extract(html, url=url, **kwargs)  # noqa: E731
        prepare = None
    first_path = "precision" if kwargs.get("favor_precision") else "balanced"
    rules = config.get("rules")
    if rules and kwargs.get("favor_precision"):
        # refinery's changes to precision-mode rules, applied around each call only
        from refinery.stages import _trafilatura_rules

        _trafilatura_rules.install()
        rules = _trafilatura_rules.PrecisionRules(**rules)
        first_call = _with_rules(first_call, rules)
        if rules.keep_wild_headings:
            first_call = _with_wild_headings(first_call)
    # source line breaks inside paragraphs as spaces (join_source_line_breaks), in the first pass
    # only: the fallback's text is at times a page's whole text in one node, its blocks on lines of
    # their own (a menu became one line of glued CJK words: a review)
    join = bool(config.get("join_lines")) and _install_joined_lines()
    if join:
        first_call = _with_flag(_JOIN_LINES, first_call)
    # code blocks trafilatura cuts (in a <figure>) or flattens (in a table, <br> in <code>), and headings
    # whose text is a named anchor, which it takes for links: in every pass (_html_fixes)
    fixes = [flag for flag, key in ((_CODE_BLOCKS, "code_blocks"), (_ANCHOR_HEADINGS, "anchor_headings"))
             if config.get(key)]
    if fixes:
        _install_html_fixes()
        first_call = _with_flags(fixes, first_call)
    # the text's lines that came from a <blockquote> or code (marked while joining only): a third value
    marks = with_line_marks if join and config.get("quote_marks", True) else (lambda call: call)
    fallback = config.get("fallback")
    if not fallback:
        if prepare is None:
            return marks(lambda html, url: (_first_text(first_call(html, url))[0], first_path))
        return marks(lambda html, url: (_first_text(first_call(prepare(html), url))[0], first_path))
    below_chars = int(fallback["below_chars"])
    min_gain = float(fallback["min_gain"])
    second_kwargs = {**kwargs, "favor_precision": False, "favor_recall": fallback.get("mode", "recall") == "recall",
                     "include_tables": True, "fast": False}
    second_call = (_trafilatura_call(second_kwargs) if lean
                   else lambda html, url: trafilatura.extract(html, url=url, **second_kwargs))
    use_baseline = bool(fallback.get("baseline", True))
    keeps_first = bool(fallback.get("keeps_first", False))
    judge_ratio = float(fallback.get("judge_ratio", 0.0))
    recipes = bool(fallback.get("recipe_cards", False))
    # recipe steps some sites' cards give up to balanced mode alone (backen.de: 0 of 17 in recall mode)
    third_kwargs = {**kwargs, "favor_precision": False, "favor_recall": False, "include_tables": True, "fast": False}
    third_call = (_trafilatura_call(third_kwargs) if lean
                  else lambda html, url: trafilatura.extract(html, url=url, **third_kwargs))
    if join:  # the fallback's lines are not joined, but lose the source's indentation
        second_call, third_call = _with_flag(_DEDENT_LINES, second_call), _with_flag(_DEDENT_LINES, third_call)
    if fixes:
        second_call, third_call = _with_flags(fixes, second_call), _with_flags(fixes, third_call)

    def cascade(html: str, url: str | None) -> tuple[str | None, str]:
        page = prepare(html) if prepare is not None else html
        text, counted = _first_text(first_call(page, url))
        recipe = recipe_items(page) if recipes else []
        seconds: list[str] = []

        def balanced_text() -> str:
            return third_call(page, url) or ""

        def second_text() -> str:  # at most one fallback call per page
            if not seconds:
                seconds.append(second_call(page, url) or "")
            return seconds[0]

        if len(counted) >= below_chars:
            return (_with_recipe_lines(text, recipe, second_text, balanced_text) if recipe else text), first_path
        # the same settings would give the same text; a page with little more text cannot gain enough
        if second_kwargs != {"favor_recall": False, **kwargs} and (not text.strip()
                                                                    or fallback_may_win(page, counted, judge_ratio)):
            second = second_text()
            if len(second) > min_gain * len(counted):
                if keeps_first and text.strip():
                    return _with_first_lines(text, second), "fallback"
                return second, "fallback"
        if text.strip() or not use_baseline:
            return ((_with_recipe_lines(text, recipe, second_text, balanced_text) if recipe and text.strip() else text),
                    first_path)
        _, rescued, _ = baseline(html)  # the whole page: its JSON-LD and body text, as before
        return rescued, "baseline"

    return marks(cascade)


#: allocations between the helper's young-generation collections (Python's default: 700)
GC_THRESHOLD = 10_000


def collect_less_often() -> None:
    """Run the cyclic garbage collector's young generation every :data:`GC_THRESHOLD` allocations
    (for the helper process only). lxml and trafilatura make few reference cycles, but their many
    short-lived objects set it off every 700: 1.2% of the extraction CPU, the same text."""
    import gc

    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


def main(argv: list[str]) -> None:
    fd, parent_pid, config = int(argv[1]), int(argv[2]), json.loads(argv[3])
    _die_with_parent(parent_pid, config.get("pdeathsig", False))
    # Ctrl-C reaches the whole process group; the process that started this helper handles it
    # (and this helper dies with it), so no second KeyboardInterrupt traceback is printed here
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    try:
        extract = make_extract(config)
        extract("<html><body><article><p>warm up the parser and the backend's lazy set-up</p>"
                "</article></body></html>", None)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    collect_less_often()
    while True:
        try:
            html, url = conn.recv()
        except (EOFError, OSError):
            # the parent closed the socket (its exit or pool close waits for us): nothing here to
            # flush, and the interpreter's teardown of trafilatura and lxml took ~0.1 s of its wait
            os._exit(0)
        try:
            reply = ("ok", extract(html, url))
        except Exception as exc:  # noqa: BLE001 - any parser failure fails just this document
            reply = ("failed", f"{type(exc).__name__}: {exc}"[:500])
        del html
        conn.send(reply)


if __name__ == "__main__":
    main(sys.argv)
