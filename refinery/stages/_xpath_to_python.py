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

Semantics mirrored (each checked against lxml on real pages in tests/test_extract.py): a missing
attribute is the string ""; a union's string value is its first attribute in the element's own
attribute order (document order); ``@a|@b = 'x'`` is true if any of them equals ``'x'``; EXSLT's
``re:test`` is Python's ``re.search`` (lxml implements it so), ignoring case when ``'i'`` is in the
flags; ``translate`` maps each character of its second argument to the character at the same
position of the third, deleting it when there is none (the first occurrence wins).
"""

from __future__ import annotations

import re
from collections.abc import Callable
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
    """Recursive descent over the tokens; predicates become Python expressions over ``e``."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens, self.pos, self.consts = tokens, 0, []

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

    def expr(self) -> str:
        return self.chain("or", self.and_expr)

    def and_expr(self) -> str:
        return self.chain("and", self.unary)

    def chain(self, word: str, operand: Callable[[], str]) -> str:
        """``operand (word operand)*`` as one Python expression (``or`` binds looser than ``and``)."""
        parts = [operand()]
        while self.peek() == ("name", word):
            self.take()
            parts.append(operand())
        return parts[0] if len(parts) == 1 else "(" + f" {word} ".join(parts) + ")"

    def unary(self) -> str:
        kind, text = self.peek()
        if (kind, text) in (("func", "not("), ("punct", "(")):
            self.take()
            inner = self.expr()
            self.take(")")
            return f"(not {inner})" if text == "not(" else inner
        if kind == "self":
            self.take()
            return f"(e.tag == {text[6:]!r})"
        if kind == "dslash":
            self.take()
            return f"(next(e.iterdescendants({self.take(kind='name')!r}), None) is not None)"
        if kind == "attr":
            names = self.attributes()
            if self.peek() == ("punct", "="):
                self.take()
                value = self.string()
                return "(" + " or ".join(f"e.get({n!r}) == {value!r}" for n in names) + ")"
            return "(" + " or ".join(f"e.get({n!r}) is not None" for n in names) + ")"
        if kind == "func" and text in ("re:test(", "contains(", "starts-with("):
            self.take()
            source = self.string_value()
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
                return f"{self.const(_RegexMemo(regex))}[{source}]"
            self.take(")")
            return f"({literal!r} in {source})" if text == "contains(" else f"{source}.startswith({literal!r})"
        raise Unsupported(f"unsupported XPath term {text!r}")

    def string(self) -> str:
        return self.take(kind="str")[1:-1]

    def attributes(self) -> list[str]:
        names = [self.take(kind="attr")[1:]]
        while self.peek() == ("punct", "|") and self.peek(1)[0] == "attr":
            self.take()
            names.append(self.take(kind="attr")[1:])
        return names

    def string_value(self) -> str:
        if self.peek() == ("func", "translate("):
            self.take()
            source = self.string_value()
            self.take(",")
            old = self.string()
            self.take(",")
            new = self.string()
            self.take(")")
            table: dict[int, int | None] = {}
            for k, char in enumerate(old):
                table.setdefault(ord(char), ord(new[k]) if k < len(new) else None)
            return f"{source}.translate({self.const(table)})"
        names = self.attributes()
        if len(names) == 1:
            return f"(e.get({names[0]!r}) or '')"
        return f"_union_value(e, {self.const(tuple(names))})"

    def step(self) -> tuple[tuple[str, ...] | None, list[str], bool]:
        """``.//*`` or ``.//name`` and its predicates: (tags or None, tests, first child per parent)."""
        self.take(".//")
        tags: tuple[str, ...] | None = None
        if self.peek() == ("punct", "*"):
            self.take()
        else:
            tags = (self.take(kind="name"),)
        tests: list[str] = []
        while self.peek() == ("punct", "["):
            self.take()
            if self.peek()[0] == "num":
                if self.take() != "1":
                    raise Unsupported("only the position [1] is supported")
                self.take("]")
                if self.peek() == ("punct", "["):
                    raise Unsupported("a predicate after a position")
                return tags, tests, True
            start = self.pos
            tests.append(self.expr())
            self.take("]")
            names = _self_names(self.tokens[start:self.pos - 1])
            if tags is None and len(tests) == 1 and names:
                tags, tests = tuple(names), []  # a tag-only first predicate: lxml filters tags in C
        return tags, tests, False


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


def compile_xpath(path: str) -> Callable[[Any], list]:
    """``fn(element) -> list`` selecting what ``lxml.etree.XPath(path)(element)`` selects, in the
    same order, for trafilatura's XPath subset (module docstring); raises :class:`Unsupported`."""
    from lxml import etree

    parser = _Parser(_tokens(path))
    branches = []
    while True:
        grouped = parser.peek() == ("punct", "(")
        if grouped:
            parser.take()
        tags, tests, first_child = parser.step()
        first = False
        if grouped:
            parser.take(")")
            if parser.peek() == ("punct", "["):
                parser.take()
                if parser.take(kind="num") != "1":
                    raise Unsupported("only the position [1] is supported")
                parser.take("]")
                first = True
        branches.append((tags, tests, first_child, first))
        if parser.peek() != ("punct", "|"):
            break
        parser.take()
    if parser.pos != len(parser.tokens):
        raise Unsupported(f"unsupported XPath syntax at {parser.peek()[1]!r}")
    if len(branches) > 1 and any(b[2] or b[3] for b in branches):
        raise Unsupported("a union of paths with positions")

    def iterate(tags: set[str] | tuple[str, ...] | None) -> str:
        if not tags:
            return "tree.iterdescendants(_Element)"
        return f"tree.iterdescendants({', '.join(map(repr, sorted(tags)))})"

    if len(branches) == 1:
        tags, tests, first_child, first = branches[0]
        lines = ["out = []", f"for e in {iterate(tags)}:", f"    if {' and '.join(tests) or 'True'}:"]
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
        for tags, tests, _, _ in branches:
            every = None if tags is None or every is None else every | set(tags)
            tag_test = f"e.tag in {frozenset(tags)!r}" if tags else "True"
            tests_per_branch.append("(" + " and ".join([tag_test, *tests]) + ")")
        lines = ["out = []", f"for e in {iterate(every)}:", f"    if {' or '.join(tests_per_branch)}:",
                 "        out.append(e)"]
    body = "".join(f"    {line}\n" for line in [*lines, "return out"])
    namespace: dict[str, Any] = {"_c": parser.consts, "_Element": etree.Element, "_union_value": _union_value}
    exec(compile("def select(tree):\n" + body, f"<xpath {path.strip()[:60]}>", "exec"), namespace)
    select = namespace["select"]
    select.path = path  # as lxml's XPath objects have it
    return select
