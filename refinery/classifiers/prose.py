"""Code lines out of a document before the quality model scores it.

Why: the quality model learned "Wikipedia lead vs web text"; code is on neither side of its
training data, and its tokens (``{``, ``=``, ``_``, ``$``: punctuation is split off into tokens)
push a page towards "web" whatever its prose is like. A tutorial with a few snippets then scores
like the junk tail. Scoring only the prose judges the writing, not the subject.

A line is code when it reads like a program, a shell session or a configuration file rather than
a sentence: a prompt or keyword at its start, a statement terminator at its end, or a high density
of programming symbols in a line made mostly of non-words. URLs, table rows (``| a | b |``) and
bullet lists are not code: they are the web-page furniture the model should still see.
"""

from __future__ import annotations

import re

# a shell/REPL prompt, a preprocessor line or a statement keyword of a common language, followed
# by something that is not a plain sentence word (``return`` alone starts English sentences too)
_START = re.compile(
    r"""^(?:
        \$\s(?![\d.,]+\b)|>>>\s?|\.\.\.\s(?![A-Za-z][a-z]*\s+[a-z])|\#!|\#include\b|\#define\b|%\s(?![a-z]+\s)|C:\\>
      | (?:import|from)\s+[\w.]+(?:\s+import\b|\s*;?$)
      | (?:def|fn|func)\s+\w+\s*\(
      | class\s+\w+\s*[({:<]
      | (?:public|private|protected|static|const|let|var)\s+\w++.*[=;({]
      | (?:if|for|while|switch|catch)\s*\(.*\)
      | (?:return|print|echo|sudo|pip3?|npm|yarn|git|docker|kubectl|apt(?:-get)?|brew|cd|mkdir|export|curl|wget)\s+\S*[-/.=$"'(]
      | @\w+(?:\(|$)
      | </?[a-z][\w-]*(?:\s[^>]*)?>
    )""",
    re.VERBOSE,
)
# ends like a statement or block, not like a sentence
_END = re.compile(r"(?:[;{}]|=>|->|\\|\(\))\s*$")
# a phrase or citation closed by ";" (a poem's line, a statute's list item): no code symbol in it
_PHRASE_END = re.compile(r"^(?=(?:.*?\b[^\W\d_]{2,}\b){2}|.*[^\x00-\x7f])[^{}\[\]<>=$_\\`~^|]*;$")
_CITATION = re.compile(r"\[\w*(?: \d+)?\]")  # [1], [edit], [note 1]: reference marks, not indexing
# programming punctuation; parentheses, ``*``, ``#`` and ``@`` are common in prose and page
# furniture, so only a call (``f(``) counts, and `` | `` (a menu separator) does not
_SYMBOLS = re.compile(r"[{}\[\]<>=;$_\\`~^]|(?<! )\|(?! )|\w\(")
# an ordinary word: letters (an apostrophe or hyphen inside), with sentence punctuation around it
_WORD = re.compile(r"^[\"'“‘(]*[^\W\d_]+(?:['’-][^\W\d_]+)*[.,!?:;\"'”’)]*$")
_FLAG = re.compile(r"^(?:-[A-Za-z]{1,3}|--[a-z][\w-]*(?:=\S*)?)$")  # a command-line option
_URL = re.compile(r"^(?:https?://|www\.)\S+$")
_TABLE_ROW = re.compile(r"^\|.*\|$")


def is_code_line(line: str) -> bool:
    """True when ``line`` looks like code, a command or configuration rather than prose."""
    s = line.strip()
    if not s or _URL.match(s) or _TABLE_ROW.match(s):
        return False
    if _START.match(s):
        return True
    tokens = s.split()
    words = sum(1 for t in tokens if _WORD.match(t))
    flags = sum(1 for t in tokens if _FLAG.match(t))
    if flags and words < 0.8 * len(tokens) and not s.endswith((".", "!", "?")):
        return True  # a command with options: ``set-option -g mouse on``
    if len(tokens) >= 3 and words >= 0.7 * len(tokens):
        return False  # a sentence, even one ending in ";" or "):"
    if _END.search(s) and not _PHRASE_END.match(s):
        return True
    symbols = len(_SYMBOLS.findall(_CITATION.sub("", s)))
    dense = symbols / max(1, len(s) - s.count(" "))
    # a few symbols in a line of non-words: an expression, a config line, a command with flags
    return dense >= 0.08 and words < 0.6 * len(tokens)


def prose_text(text: str, min_words: int) -> str:
    """``text`` without its code lines, or ``text`` itself when the prose left has fewer than
    ``min_words`` words (the model scores very short text high: a page of code with a one-line
    introduction must not be judged on that line alone)."""
    lines = text.split("\n")
    prose = [line for line in lines if not is_code_line(line)]
    if len(prose) == len(lines):
        return text
    kept = "\n".join(prose)
    return kept if len(kept.split()) >= max(1, min_words) else text


# a document "explains code" (a how-to, a Q&A answer, documentation) when it has code lines
# (as many and as large a share as benchmarks/quality_code_bias.py's "code-heavy") and prose
# sentences around them; a paste dump, a diff or a config listing has the code without the prose
MIN_CODE_LINES = 3
MIN_CODE_SHARE = 0.10
_SENTENCE_WORDS = 8  # a line of >= 8 words ending like a sentence; menus and titles are shorter


def _is_sentence(line: str) -> bool:
    s = line.strip()
    return s.endswith((".", "!", "?", ":")) and len(s.split()) >= _SENTENCE_WORDS


def explains_code(text: str, min_prose_words: int) -> bool:
    """True when ``text`` has >= ``MIN_CODE_LINES`` code lines making >= ``MIN_CODE_SHARE`` of its
    non-empty lines, and >= ``min_prose_words`` words in sentence lines that are not code."""
    lines = [line for line in text.split("\n") if line.strip()]
    code = [is_code_line(line) for line in lines]
    n_code = sum(code)
    if n_code < MIN_CODE_LINES or n_code < MIN_CODE_SHARE * len(lines):
        return False
    words = sum(len(line.split()) for line, c in zip(lines, code) if not c and _is_sentence(line))
    return words >= max(1, min_prose_words)
