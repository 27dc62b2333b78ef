"""Trafilatura's XPaths as Python functions over lxml trees: the same elements, in the same order.

Why: trafilatura 2.3 finds boilerplate with ~20 XPaths such as
``.//*[self::div or self::section][re:test(@class, 'comment') or contains(@id, 'share')]``. libxml2
evaluates ``.//*[self::div ...]`` by building the whole descendant set and testing each node with
node-set objects it allocates per test, and each ``re:test`` is a call from C into Python through
lxml's extension machinery: ~40% of trafilatura's CPU. The same selection written as a loop over
``tree.iterdescendants("div", "section")`` (the tag filter runs in C) with ``e.get("class")`` and
compiled regexes selects the same elements ~2.5x faster.

:func:`compile_xpath` accepts only the XPath subset trafilatura's own expressions use and raises
:class:`Unsupported` for anything else (the caller then keeps the XPath):

- paths ``.//*`` or ``.//name``, each with predicates, optionally grouped and taking the first
  match ``(...)[1]``; a trailing ``[1]`` inside a step (the first matching child of each parent, as
  XPath's per-step position means); unions of paths without positions;
- predicates: ``or``, ``and``, ``not(...)``, parentheses, ``self::name``, ``@a`` (present),
  ``@a = 'x'``, ``.//name`` (such a descendant exists), ``re:test(S, 'regex'[, 'flags'])``,
  ``contains(S, 'x')``, ``starts-with(S, 'x')``, where ``S`` is ``@a``, a union ``@a|@b`` or
  ``translate(S, 'AB', 'ab')``.

Each attribute a selection tests is read once per element into a local, and where every test is
false for an element without those attributes (``@a``, ``@a = 'x'``, ``contains``/``starts-with``
of a non-empty string, a regex that cannot match "", and ``or``/``and`` of such; not ``not(...)``
or ``self::``), an element holding none of them is skipped after those reads: most elements have no
class, id or style, and the tests' chains of regex and string checks were most of the cost
(~6% of the extraction's CPU on real pages, same elements selected).

Semantics mirrored (each checked against lxml on real pages in tests/test_extract.py): a missing
attribute is the string ""; a union's string value is its first attribute in the element's own
attribute order (document order); ``@a|@b = 'x'`` is true if any of them equals ``'x'``; EXSLT's
``re:test`` is Python's ``re.search`` (lxml implements it so), ignoring case when ``'i'`` is in the
flags; ``translate`` maps each character of its second argument to the character at the same
position of the third, deleting it when there is none (the first occurrence wins).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'[^']*'|"[^"]*")
  | (?P<dslash>\.//)
  | (?P<self>self::[A-Za-z_][\w.-]*)
  | (?P<attr>@[A-Za-z_][\w.-]*)
  | (?P<func>(?:re:test|contains|starts-with|translate|not)\s*\()
  | (?P<num>\d+)
  | (?P<name>[A-Za-z_][\w.-]*)
  | (?P<punct>[()\[\]|,=*])
)""", re.X)


class _RegexMemo(dict):
    """``memo[value]`` is ``regex.search(value) is not None``, remembered: the same class and id
    values recur across a page's elements and across pages (~4% of the extraction's CPU on
    real pages). Bounded: at most ``MAX_ENTRIES`` values of at most ``MAX_CHARS`` characters
    (a longer value, such as an inline style with a data URL, is searched and not kept): the 36
    memos of trafilatura's selections held 4.8 MB after 2,077 real pages and hold at most
    ~50 MB. 4,096 entries are as fast as 50,000 (same CPU on 1,087 pages): most repeats are
    within a page."""

    __slots__ = ("regex",)
    MAX_ENTRIES = 4096
    MAX_CHARS = 128

    def __init__(self, regex: re.Pattern) -> None:
        super().__init__()
        self.regex = regex

    def __missing__(self, value: str) -> bool:
        found = self.regex.search(value) is not None
        if len(value) <= self.MAX_CHARS:
            if len(self) >= self.MAX_ENTRIES:  # a crawl's distinct values are unbounded
                self.clear()
            self[value] = found
        return found


def _union_value(e: Any, names: tuple[str, ...]) -> str:
    """The string value of ``@a|@b...``: its first attribute in the element's attribute order,
    "" if none. Read with ``e.get`` (no list of the element's attributes is built unless two of
    them are present, when their order decides)."""
    found = None
    for name in names:
        value = e.get(name)
        if value is not None:
            if found is not None:
                return next(v for k, v in e.items() if k in names)
            found = value
    return "" if found is None else found


class Unsupported(ValueError):
    """The XPath uses something outside the subset :func:`compile_xpath` translates."""


def _tokens(path: str) -> list[tuple[str, str]]:
    tokens, pos, path = [], 0, path.strip()
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if match is None or match.end() == pos:
            raise Unsupported(f"unsupported XPath syntax at {path[pos:pos + 30]!r}")
        kind = match.lastgroup or ""
        text = match.group(kind)
        tokens.append((kind, re.sub(r"\s*\($", "(", text) if kind == "func" else text))
        pos = match.end()
        while pos < len(path) and path[pos].isspace():
            pos += 1
    return tokens


class _Parser:
    """Recursive descent over the tokens; predicates become Python expressions over ``e`` and
    over locals holding its attributes (``_a0``...: each attribute a path tests is read once per
    element, by :meth:`fetch`). Each expression comes with whether it is *gated*: false for an
    element that has none of the attributes it tests, so the loop can skip such elements after
    reading them (most elements have no class, id or style)."""

    def __init__(self, tokens: list[tuple[str, str]], consts: list | None = None,
                 attrs: dict[str, str] | None = None) -> None:
        # shared consts and attribute locals let several paths compile into one loop
        self.tokens, self.pos, self.consts = tokens, 0, [] if consts is None else consts
        self.attrs: dict[str, str] = {} if attrs is None else attrs  # attribute name -> its local's name
        self.used: dict[str, None] = {}  # the attributes this path reads, in first-use order
        self.structural = False  # a predicate looks at descendants (``.//name``)

    def peek(self, ahead: int = 0) -> tuple[str | None, str | None]:
        k = self.pos + ahead
        return self.tokens[k] if k < len(self.tokens) else (None, None)

    def take(self, text: str | None = None, kind: str | None = None) -> str:
        tok_kind, tok_text = self.peek()
        if tok_text is None or (text is not None and tok_text != text) or (kind is not None and tok_kind != kind):
            raise Unsupported(f"expected {text or kind}, found {tok_text!r}")
        self.pos += 1
        return tok_text

    def const(self, value: Any) -> str:
        self.consts.append(value)
        return f"_c[{len(self.consts) - 1}]"

    def local(self, name: str) -> str:
        self.used[name] = None
        return self.attrs.setdefault(name, f"_a{len(self.attrs)}")

    def fetch(self, names: list[str]) -> list[str]:
        """Lines reading the attributes ``names`` into their locals (None when absent)."""
        return [f"{self.attrs[n]} = e.get({n!r})" for n in names]

    def expr(self) -> tuple[str, bool]:
        return self.chain("or", self.and_expr)

    def and_expr(self) -> tuple[str, bool]:
        return self.chain("and", self.unary)

    def chain(self, word: str, operand: Callable[[], tuple[str, bool]]) -> tuple[str, bool]:
        """``operand (word operand)*`` as one Python expression (``or`` binds looser than ``and``):
        an ``or`` is gated if all its operands are, an ``and`` if any is."""
        parts = [operand()]
        while self.peek() == ("name", word):
            self.take()
            parts.append(operand())
        if len(parts) == 1:
            return parts[0]
        gated = (all if word == "or" else any)(g for _, g in parts)
        return "(" + f" {word} ".join(code for code, _ in parts) + ")", gated

    def unary(self) -> tuple[str, bool]:
        kind, text = self.peek()
        if (kind, text) in (("func", "not("), ("punct", "(")):
            self.take()
            inner, gated = self.expr()
            self.take(")")
            return (f"(not {inner})", False) if text == "not(" else (inner, gated)
        if kind == "self":
            self.take()
            return f"(e.tag == {text[6:]!r})", False
        if kind == "dslash":
            self.take()
            self.structural = True
            return f"(next(e.iterdescendants({self.take(kind='name')!r}), None) is not None)", False
        if kind == "attr":
            names = [self.local(n) for n in self.attributes()]
            if self.peek() == ("punct", "="):  # false for an absent attribute, whatever the value
                self.take()
                value = self.string()
                return "(" + " or ".join(f"{a} == {value!r}" for a in names) + ")", True
            return "(" + " or ".join(f"{a} is not None" for a in names) + ")", True
        if kind == "func" and text in ("re:test(", "contains(", "starts-with("):
            self.take()
            source, single = self.string_value()
            self.take(",")
            literal = self.string()
            if text == "re:test(":
                flags = ""
                if self.peek() == ("punct", ","):
                    self.take()
                    flags = self.string()
                self.take(")")
                try:
                    regex = re.compile(literal, re.IGNORECASE if "i" in flags else 0)
                except re.error as exc:
                    raise Unsupported(f"regex {literal!r}: {exc}") from None
                test = f"{self.const(_RegexMemo(regex))}[{source}]"
                gated = regex.search("") is None
            else:
                self.take(")")
                test = f"({literal!r} in {source})" if text == "contains(" else f"{source}.startswith({literal!r})"
                gated = literal != ""
            if gated and single is not None:  # an absent attribute cannot pass: test the value itself
                present_value = test.replace(f"({single} or '')", single)
                test = f"({single} is not None and {present_value})"
            return test, gated
        raise Unsupported(f"unsupported XPath term {text!r}")

    def string(self) -> str:
        return self.take(kind="str")[1:-1]

    def attributes(self) -> list[str]:
        names = [self.take(kind="attr")[1:]]
        while self.peek() == ("punct", "|") and self.peek(1)[0] == "attr":
            self.take()
            names.append(self.take(kind="attr")[1:])
        return names

    def string_value(self) -> tuple[str, str | None]:
        """(the expression's string value, the local of its one attribute or None). The value of
        an absent attribute, of a union of absent ones and their ``translate`` is ""."""
        if self.peek() == ("func", "translate("):
            self.take()
            source, single = self.string_value()
            self.take(",")
            old = self.string()
            self.take(",")
            new = self.string()
            self.take(")")
            table: dict[int, int | None] = {}
            for k, char in enumerate(old):
                table.setdefault(ord(char), ord(new[k]) if k < len(new) else None)
            return f"{source}.translate({self.const(table)})", single
        names = self.attributes()
        if len(names) == 1:
            a = self.local(names[0])
            return f"({a} or '')", a
        if len(names) == 2:  # both present (rare): the element's attribute order decides
            a, b = self.local(names[0]), self.local(names[1])
            return (f"(({a} if {b} is None else _union_value(e, {self.const(tuple(names))})) if {a} is not None "
                    f"else ({b} or ''))"), None
        for n in names:
            self.local(n)
        return f"_union_value(e, {self.const(tuple(names))})", None

    def step(self) -> tuple[tuple[str, ...] | None, list[str], bool, bool]:
        """``.//*`` or ``.//name`` and its predicates: (tags or None, tests, whether the tests are
        gated, first child per parent)."""
        self.take(".//")
        tags: tuple[str, ...] | None = None
        if self.peek() == ("punct", "*"):
            self.take()
        else:
            tags = (self.take(kind="name"),)
        tests: list[str] = []
        gated = False
        while self.peek() == ("punct", "["):
            self.take()
            if self.peek()[0] == "num":
                if self.take() != "1":
                    raise Unsupported("only the position [1] is supported")
                self.take("]")
                if self.peek() == ("punct", "["):
                    raise Unsupported("a predicate after a position")
                return tags, tests, gated, True
            start = self.pos
            test, test_gated = self.expr()
            tests.append(test)
            gated = gated or test_gated
            self.take("]")
            names = _self_names(self.tokens[start:self.pos - 1])
            if tags is None and len(tests) == 1 and names:
                tags, tests = tuple(names), []  # a tag-only first predicate: lxml filters tags in C
        return tags, tests, gated, False


def _self_names(tokens: list[tuple[str, str]]) -> list[str] | None:
    """The names of a predicate ``self::a or self::b ...``, else None."""
    if len(tokens) % 2 == 0:
        return None
    names = []
    for k, (kind, text) in enumerate(tokens):
        if k % 2 == 0 and kind == "self":
            names.append(text[6:])
        elif k % 2 == 0 or (kind, text) != ("name", "or"):
            return None
    return names


def _branches(parser: _Parser) -> list[tuple[tuple[str, ...] | None, list[str], bool, bool, bool]]:
    """A path's union branches: (tags or None, tests, gated, first child per parent, first overall)."""
    branches = []
    while True:
        grouped = parser.peek() == ("punct", "(")
        if grouped:
            parser.take()
        tags, tests, gated, first_child = parser.step()
        first = False
        if grouped:
            parser.take(")")
            if parser.peek() == ("punct", "["):
                parser.take()
                if parser.take(kind="num") != "1":
                    raise Unsupported("only the position [1] is supported")
                parser.take("]")
                first = True
        branches.append((tags, tests, gated, first_child, first))
        if parser.peek() != ("punct", "|"):
            break
        parser.take()
    if parser.pos != len(parser.tokens):
        raise Unsupported(f"unsupported XPath syntax at {parser.peek()[1]!r}")
    if len(branches) > 1 and any(b[3] or b[4] for b in branches):
        raise Unsupported("a union of paths with positions")
    return branches


def compile_xpath(path: str) -> Callable[[Any], list]:
    """``fn(element) -> list`` selecting what ``lxml.etree.XPath(path)(element)`` selects, in the
    same order, for trafilatura's XPath subset (module docstring); raises :class:`Unsupported`."""
    from lxml import etree

    parser = _Parser(_tokens(path))
    branches = _branches(parser)

    def iterate(tags: set[str] | tuple[str, ...] | None) -> str:
        if not tags:
            return "tree.iterdescendants(_Element)"
        return f"tree.iterdescendants({', '.join(map(repr, sorted(tags)))})"

    # read every attribute a test uses once per element; skip the element when it has none of
    # them and every branch's tests are false without them
    names = list(parser.attrs)
    fetch = [f"    {line}" for line in parser.fetch(names)]
    if names and all(b[2] for b in branches):
        fetch.append(f"    if {' and '.join(f'{parser.attrs[n]} is None' for n in names)}:")
        fetch.append("        continue")
    if len(branches) == 1:
        tags, tests, _, first_child, first = branches[0]
        lines = ["out = []", f"for e in {iterate(tags)}:", *fetch, f"    if {' and '.join(tests) or 'True'}:"]
        if first:  # the first match overall (also the first matching child of its parent)
            lines.append("        return [e]")
        elif first_child:  # the first matching child of each parent
            lines[0] = "out, seen = [], set()"
            lines += ["        parent = e.getparent()", "        if parent not in seen:",
                      "            seen.add(parent)", "            out.append(e)"]
        else:
            lines.append("        out.append(e)")
    else:  # one walk in document order: an element is selected once even if several branches match
        every: set[str] | None = set()
        tests_per_branch = []
        for tags, tests, _, _, _ in branches:
            every = None if tags is None or every is None else every | set(tags)
            tag_test = f"e.tag in {frozenset(tags)!r}" if tags else "True"
            tests_per_branch.append("(" + " and ".join([tag_test, *tests]) + ")")
        lines = ["out = []", f"for e in {iterate(every)}:", *fetch, f"    if {' or '.join(tests_per_branch)}:",
                 "        out.append(e)"]
    body = "".join(f"    {line}\n" for line in [*lines, "return out"])
    namespace: dict[str, Any] = {"_c": parser.consts, "_Element": etree.Element, "_union_value": _union_value}
    exec(compile("def select(tree):\n" + body, f"<xpath {path.strip()[:60]}>", "exec"), namespace)
    select = namespace["select"]
    select.path = path  # as lxml's XPath objects have it
    return select


def _set_display(names: frozenset[str] | tuple[str, ...]) -> str:
    """``{'a', 'b'}``: Python compiles ``x in`` such a display of constants to a frozenset constant."""
    return "{" + ", ".join(map(repr, sorted(names))) + "}"


def compile_selections(paths: Sequence[str]) -> Callable[[Any], list[list]]:
    """``fn(element) -> [selected by paths[0], selected by paths[1], ...]``, each list what
    :func:`compile_xpath` of that path selects (same elements, same order), in one walk of the
    tree: trafilatura runs the XPaths of a list one after the other on the same tree (its
    pruning), and each walk makes a proxy of every element it visits and reads its attributes
    again. The walk visits the union of the paths' tags; an attribute is read once per element
    for the paths that visit every element, and under a path's tag test for the others. Paths
    with positions (``[1]``) are refused (:class:`Unsupported`). ``fn.structural`` tells which
    paths look at descendants (``.//name``): their answers change when elements are deleted."""
    from lxml import etree

    consts: list = []
    attrs: dict[str, str] = {}
    blocks = []  # (index, tags or None, the path's test, its attributes, gated)
    for index, path in enumerate(paths):
        parser = _Parser(_tokens(path), consts, attrs)
        branches = _branches(parser)
        if any(first_child or first for _, _, _, first_child, first in branches):
            raise Unsupported("a position in a fused selection")
        tags = None if any(b[0] is None for b in branches) else frozenset(t for b in branches for t in b[0])
        tests = []
        for branch_tags, branch_tests, _, _, _ in branches:
            tag_test = [] if branch_tags is None or frozenset(branch_tags) == tags else [f"tag in {_set_display(branch_tags)}"]
            tests.append("(" + (" and ".join(tag_test + branch_tests) or "True") + ")")
        blocks.append((index, tags, " or ".join(tests), list(parser.used), all(b[2] for b in branches),
                       parser.structural))
    walk = None if any(b[1] is None for b in blocks) else frozenset().union(*(b[1] for b in blocks))
    # the paths that visit every walked element first: their attributes are then read for all
    blocks.sort(key=lambda b: b[1] is not None and b[1] != walk)
    lines = [f"out{b[0]} = []" for b in sorted(blocks)]
    walk_call = ("tree.iterdescendants(_Element)" if walk is None
                 else f"tree.iterdescendants({', '.join(map(repr, sorted(walk)))})")
    lines.append(f"for e in {walk_call}:")
    if any("tag in" in b[2] or (b[1] is not None and b[1] != walk) for b in blocks):
        lines.append("    tag = e.tag")
    # read for every walked element: an attribute that the paths reading it ask of every tag walked
    read: dict[str, None] = {}
    for _, _, _, names, _, _ in blocks:
        for name in names:
            readers = [b[1] for b in blocks if name in b[3]]
            if name not in read and (None in readers or frozenset().union(*readers) == walk):
                read[name] = None
                lines.append(f"    {attrs[name]} = e.get({name!r})")
    # an element none of whose read attributes is present is selected by no gated path
    skipped = bool(read) and all(b[4] and set(b[3]) <= set(read) for b in blocks)
    if skipped:
        lines += [f"    if {' and '.join(f'{attrs[n]} is None' for n in read)}:", "        continue"]
    # paths of the same tags under one tag test, each group in the order of its first path
    first_of = {}
    for k, block in enumerate(blocks):
        first_of.setdefault(block[1], k)
    blocks.sort(key=lambda b: first_of[b[1]])
    for k, (index, tags, test, names, gated, _) in enumerate(blocks):
        indent = "    "
        if tags is not None and tags != walk:
            indent = "        "
            if k == 0 or blocks[k - 1][1] != tags:
                lines.append(f"    if tag in {_set_display(tags)}:")
                done = set(read)
            lines += [f"{indent}{attrs[n]} = e.get({n!r})" for n in names if n not in done]
            done.update(names)
        # a gated path skips an element without its attributes (unless the skip above did)
        needed = gated and names and not (skipped and set(names) == set(read))
        gate = " or ".join(f"{attrs[n]} is not None" for n in names) if needed else ""
        lines += [f"{indent}if {f'({gate}) and ' if gate else ''}{test}:", f"{indent}    out{index}.append(e)"]
    lines.append(f"return [{', '.join(f'out{k}' for k in range(len(paths)))}]")
    body = "".join(f"    {line}\n" for line in lines)
    namespace: dict[str, Any] = {"_c": consts, "_Element": etree.Element, "_union_value": _union_value}
    name = " + ".join(path.strip()[:30] for path in paths)
    exec(compile("def select(tree):\n" + body, f"<xpaths {name}>", "exec"), namespace)
    select = namespace["select"]
    select.paths = tuple(paths)
    select.structural = tuple(b[5] for b in sorted(blocks))
    return select
