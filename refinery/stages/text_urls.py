"""URLs in extracted text: RefinedWeb removes them; which ones can go without leaving a hole.

RefinedWeb's post-processing drops every URL of the extracted text (with the space before it).
Where a page wrote a URL as a link's own text, the URL is a word of the sentence and its removal
leaves a hole: "Download the source code from http://www.samba.org/rsync/." reads "Download the
source code from.", "Infos unter www.x.de findet man" reads "Infos unter findet man", a quoted
address „www.chefkoch.de“ left „ (the URL ran on through the closing quote), a code line
``URL = f"https://..."`` read ``URL = f""``, "(https://...)" left "()" (session 49's labelled audit:
4 of 60 kept documents).

With ``needed`` (the extract stage's ``keep_needed_urls``) :func:`cut_urls` judges each URL (a run
of URLs with only spaces between them counts as one) by the text around it on its line:

* kept: a URL a sentence needs, after a word and before a word or a sentence's punctuation ("from
  URL.", "unter URL findet"), after a lower-case word at the line's end ("Infos unter URL"), or
  starting a sentence that goes on in lower case ("www.x.com becomes com.x."); a URL in quotes
  („www.x.de“, ``"www.google.com"``); a URL after a colon that a sentence goes on from ("(e.g.:
  URL)", "the site: URL, to") or that a sentence of four words or more introduces ("Further details
  and the form are at: URL");
* cut with what would be left of it: a URL in brackets goes with them ("Robert Austin (URL)" ->
  "Robert Austin"), a URL ending a line after a separator goes with it ("Navy Beach / URL"), a line
  that is a short label and a URL ("Source: URL", "Image credit: URL", "- Internet: URL") goes whole;
* cut as RefinedWeb does otherwise: alone on its line, after a sentence's end, a title or a name
  ("... via Horizont URL", "#tag URL").

A domain after a URL ("https://t.co/x pic.twitter.com/y") is not a word a sentence goes on with.
The lines given as ``keep_lines`` (code: ``code_lines``) keep their URLs whatever the text around.
Without ``needed`` every URL goes as RefinedWeb's did (the extract stage's ``clean_text``).
"""

from __future__ import annotations

import re
from collections.abc import Collection

#: what ends a URL: white space, quotes, brackets, guillemets, "|", and the scripts written without
#: spaces (CJK, kana, Hangul, full-width forms): a URL ran on through the Chinese or Korean text
#: after a link ("访问http://x.com了解更多"; found by adversarial testing). Other letters stay in
#: it (IRIs: "münchen.de", "/wiki/Café"), as do commas ("@35.2,-97.4,15z", "w_300,h_200").
URL_STOP = "\\s<>\"'\\])|«»\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
#: typographic quotes end a URL too where URLs are judged: „www.chefkoch.de“ (RefinedWeb's removal
#: took the closing quote with the URL)
_QUOTE_STOP = "\u201c\u201d\u201e\u201f\u2018\u2019\u201a"


def url_pattern(stop: str) -> str:
    """A URL ended by a character of ``stop``, after a non-letter or a letter of a script without
    spaces (no \\b there)."""
    return rf"(?:(?<![A-Za-z0-9])(?:https?|ftp)://|(?<![A-Za-z0-9])www\.)[^{stop}]*[^{stop}.,;:!?]"


_URL = re.compile(url_pattern(URL_STOP + _QUOTE_STOP), re.IGNORECASE)
_WWW = re.compile(r"[wW][wW][wW]\.")
_SPACE = " \t\u00a0"
_BRACKETS = {"(": ")", "[": "]", "{": "}", "<": ">"}
_OPEN_QUOTES = "\"'\u201e\u201c\u201a\u2018\u00ab\u00bb"
_CLOSE_QUOTES = "\"'\u201c\u201d\u2018\u2019\u00bb\u00ab"
#: separators a URL ending a line may follow ("Navy Beach / URL", "Title - URL", ">>> URL")
_SEPARATORS = "/|-\u2013\u2014\u00b7\u2022\u00bb>"
#: punctuation a sentence goes on with after a URL it needs ("from URL.", "unter URL, und")
_SENTENCE_PUNCT = ".,;:!?"
#: a label before a URL has at most this many words ("Image credit:", "Hier der Link:"): a line of
#: it and the URL goes whole; a longer one is a sentence that introduces the URL, which stays
LABEL_WORDS = 3
#: a domain or path where a word would be: not the sentence going on ("pic.twitter.com/x")
_DOMAIN_LIKE = re.compile(r"[/@]|\.\w")
_LIST_MARKER = re.compile(r"^[-*\u2022\u00b7\u2013\u2014]+\s*")
#: a sentence's end before a label ("... system. Image credit: URL")
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*\s+")

_KEEP = "keep"
_LINE = "line"


def may_hold(text: str) -> bool:
    """False when ``text`` holds no URL the patterns could match (every one holds "://" or "www.")."""
    return "://" in text or _WWW.search(text) is not None


def cut_urls(text: str, keep_lines: Collection[int] = ()) -> str:
    """``text`` without the URLs that can go (module docstring), line by line; the lines numbered
    in ``keep_lines`` keep theirs."""
    if not may_hold(text):
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if i not in keep_lines and may_hold(line):
            lines[i] = _cut_line(line)
    return "\n".join(lines)


def cut_marked_urls(marked: str, keep_lines: Collection[int], marks: str) -> str:
    """:func:`cut_urls` of a text holding ``marks`` (characters marking its lines: the extract
    stage's quote and code marks), judged on each line without them, the marks staying where they
    were: the result without the marks is :func:`cut_urls` of the text without them."""
    if not may_hold(marked):
        return marked
    drop = str.maketrans("", "", marks)
    lines = marked.split("\n")
    for i, line in enumerate(lines):
        plain = line.translate(drop)
        if i in keep_lines or not may_hold(plain):
            continue
        spans = _line_cuts(plain)
        if not spans:
            continue
        out, k, s = [], 0, 0  # k: the position in ``plain`` of the next character that is not a mark
        for c in line:
            if c in marks:
                out.append(c)
                continue
            while s < len(spans) and spans[s][1] <= k:
                s += 1  # the spans are in order and do not overlap
            if s == len(spans) or k < spans[s][0]:
                out.append(c)
            k += 1
        lines[i] = "".join(out)
    return "\n".join(lines)


def _cut_line(line: str) -> str:
    spans = _line_cuts(line)
    if not spans:
        return line
    out, at = [], 0
    for a, b in spans:
        out.append(line[at:a])
        at = b
    out.append(line[at:])
    return "".join(out)


def _line_cuts(line: str) -> list[tuple[int, int]]:
    """The spans of ``line`` to delete, in order, not overlapping."""
    runs: list[list[int]] = []
    for m in _URL.finditer(line):
        if runs and not line[runs[-1][1]:m.start()].strip(_SPACE):
            runs[-1][1] = m.end()  # URLs with only spaces between them: one run
        else:
            runs.append([m.start(), m.end()])
    cuts: list[tuple[int, int]] = []
    for start, end in runs:
        cut = _judge(line, start, end)
        if cut == _LINE:
            return [(0, len(line))]
        if cut != _KEEP:
            a, b = cut
            if cuts and a < cuts[-1][1]:
                a = cuts[-1][1]
            if a < b:
                cuts.append((a, b))
    return cuts


def _word_after(after: str) -> bool:
    """The text after a URL goes on with a word (not a domain or path)."""
    token = after.split(maxsplit=1)[0] if after.strip() else ""
    return bool(token) and token[0].isalnum() and _DOMAIN_LIKE.search(token) is None


#: characters of the line read on each side of a URL (a line of thousands of URLs stays linear)
_CONTEXT = 300


def _judge(line: str, start: int, end: int) -> str | tuple[int, int]:
    """What to do with the URL run ``line[start:end]``: keep it, drop the line, or delete a span."""
    lo = max(0, start - _CONTEXT)
    before, after = line[lo:start], line[end:end + _CONTEXT]
    b, a = before.rstrip(_SPACE), after.lstrip(_SPACE)
    pc, nc = b[-1:], a[:1]
    ends_line = not a and end + _CONTEXT >= len(line)
    # RefinedWeb's cut: the URL and the space before it; at the line's start the spaces after it
    plain = (start - 1 if before[-1:] in (" ", "\t") else start, end)
    if start == 0:
        plain = (0, end + len(after) - len(a))
    if pc in _BRACKETS and nc == _BRACKETS[pc]:
        # "(URL)" goes with its brackets, and the spaces on one side of them
        left = lo + len(b) - 1
        right = end + len(after) - len(a) + 1
        if left > 0:
            return (lo + len(b[:-1].rstrip(_SPACE)), right)
        rest = line[right:right + _CONTEXT]
        return (0, right + len(rest) - len(rest.lstrip(_SPACE)))
    if pc and pc in _OPEN_QUOTES and nc and nc in _CLOSE_QUOTES:
        return _KEEP  # a quoted address is a word of its sentence („www.x.de“, "www.google.com")
    if pc.isalnum():
        if (nc.isalnum() and _word_after(a)) or (nc and nc in _SENTENCE_PUNCT):
            return _KEEP  # "from URL.", "unter URL findet man"
        if ends_line:
            word = b.split()[-1]
            if word.isalpha() and word.islower():
                return _KEEP  # "Infos unter URL", "is available at URL": a preposition, a verb
        return plain
    if pc == ":":
        # the label: from the last sentence's end before the colon ("... system. Image credit: URL")
        ends = list(_SENTENCE_END.finditer(b, 0, len(b) - 1))
        at = ends[-1].end() if ends else 0
        label = _LIST_MARKER.sub("", b[at:-1].strip())
        if ends_line or (a == "." and end + _CONTEXT >= len(line)):
            if len(label.split()) <= LABEL_WORDS and (ends or lo == 0):
                # "Source: URL", "Image credit: URL", "- Internet: URL": the label goes too, and the
                # line with it when nothing is left
                return _LINE if not at and lo == 0 else (lo + len(b[:at].rstrip(_SPACE)), len(line))
            return _KEEP  # "Further details and the form are at: URL"
        if (nc.isalnum() and _word_after(a)) or (nc and nc in ",;)"):
            return _KEEP  # "(e.g.: URL)", "the site: URL, to prevent ..."
        return plain
    if ends_line and pc and pc in _SEPARATORS:
        # "Navy Beach / URL", "Title - URL", "- URL": the separator goes too
        return (lo + len(b[:-1].rstrip(_SPACE)), len(line))
    if (not b or pc in ".!?") and nc.islower() and _word_after(a):
        return _KEEP  # a sentence starting with the URL: "www.x.com becomes com.x."
    return plain
