"""RefinedWeb line-wise corrections (paper Appendix G.2).

Extraction leaves navigation and social-media debris on their own lines ("12 comments",
"Share on Facebook", "Read more..."). RefinedWeb walks the lines of each document and

* drops a line that is mainly uppercase, only numerical, a counter, or a single word (but not
  the rule under a table's header row, ``|---|---|``: it is the table's structure, and RefinedWeb,
  which extracted no tables, never saw one; nor a table's rows, ``| 2019 | 45.2 |``: data);
  "mainly uppercase" counts uppercase letters against all letters, so an acronym in a script
  without case (Chinese, Korean, Arabic) does not make a line uppercase;
* on short lines (<= 10 words) removes boilerplate patterns found at the beginning
  (e.g. "Sign in"), at the end (e.g. "Read more...") or anywhere (e.g. "items in cart"), unless
  the pattern is part of a sentence: joined by spaces alone to lower-case words ("The new privacy
  policy takes effect", "We all want to learn more.", "Advertisement revenue grew");

then, if the words in dropped/edited lines exceed 5% of the document's words, discards the whole
document (it was mostly debris); otherwise it keeps the corrected text.

Beyond RefinedWeb (session 31, found by reading a run's kept documents): lines that are content
by narrow exceptions stay (``keep_content_lines``: code, one-word sentences, quantities, list
numbers, one-word headings over paragraphs; :mod:`refinery.stages.content_lines`), and so do the
lines extraction marked as code (``keep_code_lines``: a ``<pre>``'s or ``<code>``'s text alone on
its line, the ``code_lines`` column, :data:`refinery.schema.CODE_LINES`; session 49: ``rsync``,
``bs4``, ``AllCops:``, ``end`` are code however their words look), and whole lines
of up to 30 words that call to subscribe, follow or write in, and share bars, go
(``drop_calls_to_action``; :mod:`refinery.stages.calls_to_action`), without counting in the 5%.
So do whole lines of up to 80 words that disclose affiliate or advertising payments or ask consent
to cookies (``drop_disclosures``; :mod:`refinery.stages.disclosures`; session 32, a reading probe).

RefinedWeb does not publish its pattern lists; ``START_PATTERNS``, ``END_PATTERNS``,
``ANYWHERE_PATTERNS`` and ``COUNTER_PATTERNS`` below are ours, written from the paper's examples
and common web boilerplate, and kept deliberately specific (e.g. "we use cookies", not "cookie")
so that prose is not edited.

Words are whitespace tokens, plus one per CJK ideograph/kana character: scripts written without
spaces would otherwise count a whole paragraph as a "single word" (removed) and make the 5%
budget meaningless. RefinedWeb itself is English-only.

Reasons: ``empty_text`` (null/blank text), ``too_many_lines_corrected`` (metric: removed word
fraction), ``too_short_after_cuts`` (with ``min_words_after_cuts``, which a recipe sets to its
``gopher_quality`` ``min_words``: an edited document left with fewer words, counted as Gopher
counts them; metric: the words left). A ``too_many_lines_corrected`` removal's evidence
(``removed_evidence``) is the lines the corrections cut or edited, the distinct ones in order:
``24 lines cut or edited: Share on Facebook · 3 likes · MENU · …`` (120 characters), which a
sample's first 500 characters may not show. Metric columns: ``line_corrections_removed_frac`` (float32, every non-empty row)
and, with ``min_words_after_cuts``, ``line_corrections_words_after_cuts`` (int32: Gopher's word count
of the cut text, on the documents the floor judged -- those the stage edited -- null on the others).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Collection
from typing import Any

import pyarrow as pa

from refinery.schema import CODE_LINES
from refinery.stages import calls_to_action, checks, content_lines, credits, disclosures, lookalikes, meta_lines
from refinery.stages.base import Stage, clip_evidence, with_decision
from refinery.stages.gopher import TOO_SHORT_AFTER_CUTS, word_count
from refinery.stages.table_text import TABLE_RULE_RE, is_table_row

METRIC_COLUMN = "line_corrections_removed_frac"
#: the words an edited document has left (Gopher's count), which ``min_words_after_cuts`` judges
WORDS_AFTER_CUTS = "line_corrections_words_after_cuts"

#: whole-line counters: social/engagement numbers and relative timestamps (RefinedWeb: "3 likes")
COUNTER_PATTERNS: list[str] = [
    # "3 likes", "1.2k views", "12 comments", "(4 replies)", "0 stemmer"
    r"[(\[]?\s*\d[\d,.\s]*[kKmM]?\+?\s*(?:likes?|dislikes?|comments?|shares?|views?|repl(?:y|ies)|retweets?|"
    r"followers?|following|reviews?|votes?|points?|answers?|posts?|notes?|reactions?|reads?|subscribers?|"
    r"favou?rites?|downloads?|stars?|clicks?|hits?|pins?|tweets?|loves?|members?|"
    r"ratings?|responses?|people like this|people found this helpful)\s*[)\]]?",
    # "Likes: 12", "Views (1,234)", "Comments 3"
    r"(?:likes?|views?|comments?|shares?|repl(?:y|ies)|votes?|downloads?|hits?|reads?|followers?|points?)"
    r"\s*[:(\[]?\s*\d[\d,.]*[kKmM]?\s*[)\]]?",
    # "Posted 3 days ago", "updated 5 minutes ago", "2 hours ago"
    r"(?:(?:posted|updated|published|edited|asked|answered|modified|added|last seen|active)\s+)?"
    r"(?:about\s+|over\s+|almost\s+)?(?:\d+|an?|one)\s+(?:seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|"
    r"weeks?|months?|years?)\s+ago",
]

#: boilerplate that starts a short line; removed together with the separator that follows it
START_PATTERNS: list[str] = [
    r"sign[\s-]?in", r"sign[\s-]?up", r"log[\s-]?in", r"log[\s-]?out",
    r"skip to (?:main )?content", r"skip to navigation",
    r"jump to (?:navigation|search|content)(?:\s*jump to (?:navigation|search|content))*",
    r"you are here:?", r"home\s*(?:>|»|/|\|)", r"posted (?:by|in|on)", r"published (?:by|in|on)",
    r"written by", r"filed under:?", r"tags?:", r"categor(?:y|ies):", r"share this(?: article| post| page)?:?",
    r"share on:", r"follow us(?: on)?:?", r"advertisement", r"sponsored(?: content)?:?",
    r"related (?:posts|articles|stories):?", r"previous (?:post|article|page):?", r"next (?:post|article|page):?",
    # session 31 (found reading kept documents): headings over recommendation lists
    r"editors?[’']?s?[’']? (?:recommendations|picks|choice)s?:?",
    r"related (?:recipes|videos|content|reading|links|news|coverage|products|topics|items):?",
    r"more from (?:the )?author", r"you (?:may|might) also like:?", r"recommended for you", r"popular posts",
    r"back to top", r"print this (?:page|article|post)", r"e-?mail this (?:page|article|post)",
]

#: boilerplate that ends a short line (with the separator before it)
END_PATTERNS: list[str] = [
    r"read more(?:\.\.\.|…)?", r"read the rest(?: of this (?:entry|post|article))?", r"continue reading",
    r"(?:\.\.\.|…)\s*more", r"see more", r"show more", r"view more", r"load more", r"learn more",
    r"find out more", r"full story", r"\[(?:\.\.\.|…)\]", r"permalink", r"report abuse", r"share this",
    r"reply to this(?: comment| post)?", r"(?:quote|delete|edit) reply",
]

#: boilerplate anywhere in a short line (patterns may reach the line ends themselves)
ANYWHERE_PATTERNS: list[str] = [
    r"\d*\s*items? in (?:your )?(?:cart|basket|bag)", r"your (?:shopping )?(?:cart|basket|bag) is empty",
    r"add to (?:cart|basket|bag|wish\s?list|favou?rites)", r"add to compare", r"view cart",
    r"proceed to checkout",
    r"(?:(?:©|\(c\)|copyright)\s*)?[^.!?]*all rights reserved\.?", r"(?:©|\(c\)|copyright ©?)\s*\d{4}\b[^.!?]*",
    r"©\s*(?-i:[A-Z])[\w&.,'’ -]{0,40}\b(?:19|20)\d\d\b\.?",  # "© Thomson Reuters 2020"
    r"(?:we|this (?:web)?site|our site) uses? cookies[^.!?]*\.?", r"cookie (?:policy|settings|preferences|consent)",
    r"accept (?:all )?cookies", r"privacy policy", r"terms (?:of|and) (?:use|service|conditions)",
    r"share (?:on|via|to) (?:facebook|twitter|x|linkedin|pinterest|whatsapp|reddit|email|tumblr)",
    r"(?:follow|like|find) us on (?:facebook|twitter|x|instagram|linkedin|youtube|pinterest)",
    r"click here(?: to [^.!?]*)?", r"(?:please )?enable javascript[^.!?]*", r"javascript (?:is )?disabled",
    r"leave a (?:comment|reply)", r"no comments(?: yet)?",
    # the rest of the line goes only after a known call to action: "Sign in to the Azure portal."
    # is a tutorial's step
    r"(?:log|sign)[\s-]?(?:in|up) (?:to (?:reply|comment|post|continue|view|see|read|access|download|vote|"
    r"your account|add|save|follow|join|rate|report|like|write|answer|review|leave|ask|edit|subscribe)|"
    r"with (?:your )?(?:google|facebook|apple|twitter|github|microsoft|linkedin|openid|e-?mail)|"
    r"(?:for|to get) (?:free|an account|a free account|our newsletter|updates)|using|via)\b[^.!?]*",
    r"(?:you must|please|you need to) (?:be )?(?:log(?:ged)?|sign(?:ed)?)[\s-]?in\b[^.!?]*",
    r"forgot (?:your )?password\??", r"remember me", r"sign up for (?:our|the) newsletter",
    r"subscribe to (?:our|the) newsletter", r"(?:posted|shared) (?:on|via) (?:facebook|twitter)",
]

_SEP = r"[\s:;|>»/\-–—.,!·•*]*"
_COUNTER_RE = re.compile(r"^\s*(?:" + "|".join(COUNTER_PATTERNS) + r")\s*[.!]?\s*$", re.IGNORECASE)
# (?<!\w)/(?!\w): patterns match whole words only ("sign in", not "sign innovation")
_START_RE = re.compile(r"^\s*(?:" + "|".join(START_PATTERNS) + r")(?!\w)(?P<sep>" + _SEP + ")", re.IGNORECASE)
_END_RE = re.compile(
    r"(?P<sep>[\s:;|\-–—,·•(\[]*)(?<!\w)(?P<pat>" + "|".join(END_PATTERNS) + r")[\s.!»>)\]…]*$", re.IGNORECASE
)
_ANY_RE = re.compile(r"(?<!\w)(?:" + "|".join(ANYWHERE_PATTERNS) + r")(?!\w)", re.IGNORECASE)


# A pattern inside a sentence is prose, not a page's chrome: "The new privacy policy takes
# effect", "We all want to learn more.", "Remember me when I am gone", "Advertisement revenue
# grew" (found by adversarial testing). Chrome stands apart: at a line's edge, next to a
# separator or punctuation, or capitalised as a label ("... dinner Read more").
def _joins_prose_before(line: str, start: int) -> bool:
    """The pattern at ``start`` is lower case and follows a word with only spaces between."""
    before = line[:start]
    return line[start].islower() and before[-1:].isspace() and before.rstrip()[-1:].isalnum()


def _joins_prose_after(line: str, end: int) -> bool:
    """The text after ``end`` goes on, after spaces only, with a lower-case word."""
    after = line[end:]
    return after[:1].isspace() and after.lstrip()[:1].islower()


def _all_chrome(line: str, words) -> bool:  # noqa: ANN001 - the word counter in use
    """Whether nothing but one stray word is left of ``line`` once every pattern is cut, prose
    or not: a line made of chrome alone."""
    rest, cuts = _ANY_RE.subn(" ", line)
    for _ in range(3):  # "Sign up log in": one start pattern after another
        rest, cut = _START_RE.subn("", rest.strip(), count=1)
        cuts += cut
        if not cut:
            break
    rest, cut = _END_RE.subn("", rest, count=1)
    if not cuts + cut:
        return False  # no pattern at all: not this rule's business
    return words(" ".join(t for t in rest.split() if _ALNUM_RE.search(t))) <= 1


def _patterns_cut(line: str, words) -> bool:  # noqa: ANN001 - the word counter in use
    """Whether RefinedWeb's short-line patterns cut words of ``line`` (dropped or edited) as
    :meth:`LineCorrections._correct` applies them."""
    if not _may_match_patterns(line):
        return False
    if _all_chrome(line, words):
        return True
    edited = _ANY_RE.sub(_cut_anywhere, line)
    edited = _START_RE.sub(_cut_start, edited, count=1)
    return _END_RE.sub(_cut_end, edited, count=1).strip() != line


_CALL_TO_ACTION_NEXT = re.compile(r"(?:now|today|here|free)\b")


def _cut_start(m: re.Match[str]) -> str:
    sep = m.group("sep")  # the spaces before the next word are the separator's
    label = m.string[m.start() : m.start("sep")]
    if (sep and not sep.strip() and label[-1:].isalnum() and m.string[m.end() : m.end() + 1].islower()
            and not _CALL_TO_ACTION_NEXT.match(m.string, m.end())):
        return m.group(0)  # "Advertisement revenue grew", "Sign up for the marathon"; not "Tags: a", "Sign up now"
    return ""


def _cut_end(m: re.Match[str]) -> str:
    if not m.group("sep").strip() and _joins_prose_before(m.string, m.start("pat")):
        return m.group(0)
    return ""


def _cut_anywhere(m: re.Match[str]) -> str:
    line = m.string
    if _joins_prose_before(line, m.start()) or _joins_prose_after(line, m.end()):
        return m.group(0)
    return ""
# no letters of any script, at least one digit: "12", "35.207487 -97.447906", "+1 (555) 123-4567"
_NUMERIC_RE = re.compile(r"^[\W\d_]*\d[\W\d_]*$")
_ALNUM_RE = re.compile(r"[^\W_]")
_LETTER_RE = re.compile(r"[^\W\d_]")
_DIGIT_RE = re.compile(r"\d")
# CJK ideographs, kana: languages written without spaces (see module docstring)
_CJK_RE = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_BLANK_RUNS = re.compile(r"\n(?:[ \t]*\n){2,}")

#: Literals (lowercase) one of which every START / END / ANYWHERE pattern needs to match a line.
#: Most short lines hold none, and one search for these is far cheaper than the three pattern
#: substitutions with look-arounds, which then cannot change the line. Adding a pattern? Add its
#: literal here: tests/test_line_corrections.py checks the corrections are identical with and
#: without this shortcut on real documents.
PATTERN_HINTS: tuple[str, ...] = (
    # ANYWHERE_PATTERNS
    "item", "your", "add to", "view cart", "proceed", "all rights reserved", "(c)", "copyright", "cookie",
    "privacy", "terms", "share", "us on", "click here", "javascript", "leave a", "no comments", "log", "sign",
    "forgot", "remember me", "newsletter", "facebook", "twitter", "you must", "please", "you need to",
    # START_PATTERNS
    "skip to", "jump to", "you are here", "home", "posted", "published", "written by", "filed under", "tag",
    "categor", "follow us", "advertisement", "sponsored", "related", "previous", "next", "back to top",
    "print this", "mail this", "editor", "recommend", "more from", "also like", "popular posts",
    # END_PATTERNS
    "read", "more", "full story", "[...]", "permalink", "report abuse", "reply",
    # the patterns' non-ASCII alternatives that need no ASCII literal
    "©", "[…]",
)
_HINT_RE = re.compile("|".join(re.escape(h) for h in PATTERN_HINTS))


#: the only characters outside ASCII that ``re.IGNORECASE`` matches to an ASCII letter (İ ı ſ K:
#: checked in tests/test_line_corrections.py); ``str.lower()`` of any other character neither
#: makes nor moves an ASCII letter, so searching the lowercased line for the hints is exact
_CASE_SPECIAL = re.compile("[\u0130\u0131\u017f\u212a]")


def _may_match_patterns(line: str) -> bool:
    """False only when no boilerplate pattern can match ``line``: none of :data:`PATTERN_HINTS`
    is in it (lines with a character of :data:`_CASE_SPECIAL` always go to the patterns)."""
    if not line.isascii() and _CASE_SPECIAL.search(line):
        return True
    return _HINT_RE.search(line.lower()) is not None


def _char_class(pred) -> re.Pattern[str]:
    """Regex class of every BMP character satisfying ``pred``, as ranges: counting with a C
    regex is ~10x faster than a Python loop over characters."""
    ranges: list[str] = []
    start = prev = None
    for cp in range(0x10000):
        if 0xD800 <= cp <= 0xDFFF or not pred(chr(cp)):
            continue
        if prev is not None and cp == prev + 1:
            prev = cp
            continue
        if start is not None:
            ranges.append(re.escape(chr(start)) + ("-" + re.escape(chr(prev)) if prev != start else ""))
        start = prev = cp
    if start is not None:
        ranges.append(re.escape(chr(start)) + ("-" + re.escape(chr(prev)) if prev != start else ""))
    return re.compile("[" + "".join(ranges) + "]")


_UPPER_RE = _char_class(str.isupper)
_LOWER_RE = _char_class(str.islower)


def count_words(text: str) -> int:
    """Whitespace tokens plus CJK characters (see module docstring)."""
    n = len(text.split())
    return n + count_cjk(text) if n else 0


def count_cjk(text: str, limit: int | None = None) -> int:
    """CJK characters in ``text`` (counted up to ``limit`` + 1 when given: enough to compare)."""
    found = _CJK_RE.finditer(text)
    return sum(1 for _ in (found if limit is None else itertools.islice(found, limit + 1)))


def _count_ws_words(text: str) -> int:
    return len(text.split())


_ASCII_UPPER = bytes(range(ord("A"), ord("Z") + 1))
_ASCII_LOWER = bytes(range(ord("a"), ord("z") + 1))


_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]+")


def _upper_lower(line: str) -> tuple[int, int]:
    """Counts of uppercase and lowercase letters: ``bytes.translate`` over the ASCII letters
    (UTF-8 bytes of other characters are >= 0x80, never A-Z), the precompiled character classes
    only over the non-ASCII characters (often a few quotes and dashes in a Latin-script line)."""
    b = line.encode("utf-8", "surrogatepass")
    upper = len(b) - len(b.translate(None, _ASCII_UPPER))
    lower = len(b) - len(b.translate(None, _ASCII_LOWER))
    if len(b) != len(line):  # some characters are not ASCII
        rest = "".join(_NON_ASCII_RE.findall(line))
        upper += len(_UPPER_RE.findall(rest))
        lower += len(_LOWER_RE.findall(rest))
    return upper, lower


def _bare_table_rows(lines: list[str]) -> set[int]:
    """Lines of a Markdown table written without its outer bars ("STR | DEX | CON" over "12|18|14"):
    a run of consecutive lines with the same number of bars (two or more) whose first line has a
    letter (a header) and a later line a digit (data). Menus do not: "HOME | ABOUT | CONTACT"
    alone or stacked on another menu, "1 | 2 | 3" pagination (found by adversarial testing: a
    stat block's header was dropped as uppercase and its values as numbers, and the 5% rule
    removed the page; the review of the first version found menus kept)."""
    # rows written with their outer bars are the other rule's; a bare row pairs with bare rows only
    # a trailing bar closes the row, it makes no cell: "12 (+1)|18 (+4)|" rows "STR | DEX" (session 37)
    bars = [k if k >= 2 and not line.lstrip().startswith("|") else 0
            for line, k in ((x, x.rstrip().rstrip("|").count("|")) for x in lines)]
    rows: set[int] = set()
    start = 0
    while start < len(lines):
        end = start + 1
        while end < len(lines) and bars[start] and bars[end] == bars[start]:
            end += 1
        if bars[start] and end - start >= 2 and _LETTER_RE.search(lines[start]) \
                and any(_DIGIT_RE.search(line) for line in lines[start + 1:end]):
            rows.update(range(start, end))
        start = end
    return rows


def _short_cells_header(lines: list[str], i: int, bare_rows: set[int] | tuple) -> bool:
    """Whether line ``i`` heads a table (a bare table's rows, or a row over a ``|---|`` rule): its
    short uppercase cells ("| STR | DEX | CON | INT |") are column names, not shouting. A row of
    the same cells with no rule under it is a layout table's menu."""
    if i in bare_rows:
        return True
    following = lines[i + 1].strip() if i + 1 < len(lines) else ""
    return following[:2] in ("|-", "|:") and TABLE_RULE_RE.fullmatch(following) is not None


class LineCorrections(Stage):
    """Drop debris lines and strip short-line boilerplate; drop documents that were mostly debris."""

    kind = "line_corrections"
    rewrites_text = True
    reports_cut_lines = True
    reason_metrics = {"too_many_lines_corrected": METRIC_COLUMN, TOO_SHORT_AFTER_CUTS: WORDS_AFTER_CUTS}
    # session 33: runs made before these resume
    added_params = {"drop_credits": False, "drop_lookalikes": False, "drop_syndication": False,
                    "drop_call_boxes": False,
                    # session 35
                    "credits_in_more_languages": False, "drop_meta_lines": False,
                    # session 37
                    "drop_credited_captions": False,
                    # session 38
                    "drop_copyright_credits": False,
                    # session 39 (h93): off is what runs did before
                    "min_words_after_cuts": None,
                    # session 49 (h204)
                    "keep_code_lines": False,
                    # session 50 (h213)
                    "drop_caption_credits": False}

    def __init__(
        self,
        max_removed_word_frac: float = 0.05,
        max_words_for_patterns: int = 10,
        uppercase_frac: float = 0.5,
        keep_content_lines: bool = True,
        keep_code_lines: bool = True,
        drop_calls_to_action: bool = True,
        drop_disclosures: bool = True,
        drop_credits: bool = False,
        drop_lookalikes: bool = False,
        drop_syndication: bool = False,
        drop_call_boxes: bool = True,
        credits_in_more_languages: bool = False,
        drop_meta_lines: bool = False,
        drop_credited_captions: bool = False,
        drop_copyright_credits: bool = False,
        drop_caption_credits: bool = False,
        min_words_after_cuts: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        checks.fraction("max_removed_word_frac", max_removed_word_frac)
        checks.at_least("max_words_for_patterns", max_words_for_patterns, 0)
        checks.fraction("uppercase_frac", uppercase_frac)
        # RefinedWeb: a document where > 5% of the words were debris is discarded, not repaired
        self.max_removed_word_frac = float(max_removed_word_frac)
        # RefinedWeb: patterns are only edited out of short (<= 10 words) lines, so prose is safe
        self.max_words_for_patterns = int(max_words_for_patterns)
        # "mainly uppercase": share of uppercase among letters strictly above this
        self.uppercase_frac = float(uppercase_frac)
        # code, one-word sentences, quantities, list numbers and headings over paragraphs stay
        # (refinery/stages/content_lines.py); false: RefinedWeb's rules as written
        self.keep_content_lines = bool(keep_content_lines)
        # the lines extraction marked as code (the code_lines column) stay whole, no rule applied:
        # a bare command, a package name, a YAML key, a Ruby "end" are code; false: RefinedWeb's
        # rules judge them as any line (they need a text extracted with its marks: trafilatura)
        self.keep_code_lines = bool(keep_code_lines)
        # whole lines of up to 30 words that call to subscribe, follow, write in, and share bars
        # (refinery/stages/calls_to_action.py); false: only RefinedWeb's short-line patterns
        self.drop_calls_to_action = bool(drop_calls_to_action)
        # whole lines of up to 80 words disclosing affiliate/advertising payments or asking consent
        # to cookies (refinery/stages/disclosures.py); false: not looked for
        self.drop_disclosures = bool(drop_disclosures)
        # short lines crediting pictures, ad slots, enlarge prompts (refinery/stages/credits.py),
        # and lines of Latin words with Cyrillic look-alike letters (refinery/stages/lookalikes.py)
        self.drop_credits = bool(drop_credits)
        self.drop_lookalikes = bool(drop_lookalikes)
        # "This article originally appeared on VICE US." (disclosures.is_syndication); off: the
        # held-out WARC gold counts "This post is republished from the ACM CSCW Medium." as content
        self.drop_syndication = bool(drop_syndication)
        # the rest of a sign-up, paywall or video-consent box whose call to subscribe or accept
        # goes (calls_to_action.box_lines: its pitch, "You can unsubscribe at any time"); needs
        # drop_calls_to_action
        self.drop_call_boxes = bool(drop_call_boxes)
        # drop_credits in German, French, Spanish, Italian, Dutch, Portuguese too ("Titelbild: X",
        # "Crédits photos : X", repeated "(Bild: X)"); needs drop_credits
        self.credits_in_more_languages = bool(credits_in_more_languages)
        # a line that is only a date stamp, a byline or a reading time ("Updated: July 24, 2023",
        # "By Jane Doe", "5 min read"; refinery/stages/meta_lines.py); off: see docs/extraction.md
        self.drop_meta_lines = bool(drop_meta_lines)
        # a picture's caption ending with its credit ("... at a briefing. Photo: Jonathan
        # Nackstrand/AFP"; credits.credited_caption_lines), dropped whole like a credit line; needs
        # drop_credits. Off: see docs/extraction.md (session 37)
        self.drop_credited_captions = bool(drop_credited_captions)
        # a picture's holder after a copyright mark, alone or ending a caption ("© Shutterstock",
        # "© dpa | Kay Nietfeld", "... der Schweiz. © AFP / MARCO BERTORELLO";
        # credits.copyright_credit_lines), in any language, dropped like a credit line
        self.drop_copyright_credits = bool(drop_copyright_credits)
        # drop_credited_captions' captions, a line naming the lead picture ("Header Image: ...",
        # "featured image: X via Unsplash") and a caption ending "Credit: X" (credits.caption_credit_lines),
        # in English, dropped like a credit line; docs/extraction.md (session 50)
        self.drop_caption_credits = bool(drop_caption_credits)
        # a document this stage edits below the recipe's gopher_quality min_words (Gopher's word
        # count) is removed, ``too_short_after_cuts``: it passed that rule only before its debris
        # went. A recipe fills it from gopher_quality (refinery.config); None: never
        if min_words_after_cuts is not None:
            checks.at_least("min_words_after_cuts", min_words_after_cuts, 0)
        self.min_words_after_cuts = None if min_words_after_cuts is None else int(min_words_after_cuts)

    def correct(self, text: str, code_lines: Collection[int] = ()) -> tuple[str, int, int]:
        """Corrected text, words removed, words in the document; ``code_lines``: the numbers of
        the lines of ``text`` that are code (kept whole with ``keep_code_lines``)."""
        corrected, removed, total, _, _ = self._correct(text, code_lines)
        return corrected, removed, total

    def _correct(self, text: str, code_lines: Collection[int] = ()) -> tuple[str, int, int, int, int]:
        """:meth:`correct` plus the lines dropped and the lines edited (for the stage's counters)."""
        # documents without CJK (nearly all) skip the per-line CJK count
        words = count_words if _CJK_RE.search(text) else _count_ws_words
        total = words(text)
        removed = dropped = edited_lines = 0
        calls = 0  # words of long calls to action: dropped, counted neither as removed nor in the total
        out: list[str] = []
        max_words = self.max_words_for_patterns
        upper_frac = self.uppercase_frac
        keep_content = self.keep_content_lines
        drop_calls = self.drop_calls_to_action
        # one search of the document for both: most documents hold none of their hints
        # lower-cased once for the hint searches of disclosures and call boxes
        low = text.lower() if self.drop_disclosures or self.drop_syndication or self.drop_call_boxes else None
        may_disclose = (self.drop_disclosures or self.drop_syndication) and disclosures.may_hold(text, low)
        drop_disclosures = self.drop_disclosures and may_disclose
        drop_syndication = self.drop_syndication and may_disclose
        lines = text.split("\n")
        bare_rows = _bare_table_rows(lines) if "|" in text else ()
        more = self.credits_in_more_languages
        credit_lines = (credits.credit_lines(lines, more) if self.drop_credits and credits.may_hold(text, more)
                        else ())
        if self.drop_credits and self.drop_credited_captions and credits.may_hold(text):
            credit_lines = set(credit_lines) | credits.credited_caption_lines(lines)
        if self.drop_caption_credits and credits.may_hold(text):
            credit_lines = set(credit_lines) | credits.caption_credit_lines(lines)
        if self.drop_copyright_credits and credits.may_hold_copyright(text):
            credit_lines = set(credit_lines) | credits.copyright_credit_lines(lines)
        drop_lookalikes = self.drop_lookalikes and lookalikes.may_hold(text)
        drop_meta = self.drop_meta_lines
        openers = calls_to_action.box_openers(text, low) if drop_calls and self.drop_call_boxes else ()
        box = calls_to_action.box_lines(lines, openers) if openers else ()
        code = code_lines if self.keep_code_lines else ()
        for i, line in enumerate(lines):
            stripped = line.strip()
            if not stripped:
                out.append("")
                continue
            if i in code:
                out.append(line)
                continue
            if stripped[:2] in ("|-", "|:") and TABLE_RULE_RE.fullmatch(stripped):
                # a table's header rule (``|---|---|``): structure, not debris, while the row it
                # rules stays (a dropped caption row, "| TORY MPs: ... |", leaves no rule behind)
                if out and out[-1].lstrip().startswith("|"):
                    out.append(line)
                continue
            n = words(stripped)
            # a table's rows are its structure: "| 2019 | 45.2 |" is data, not a number left over
            # (its header row would stay without rows, or the 5% rule remove the whole article)
            row = (stripped[0] == "|" and is_table_row(stripped) and " | " in stripped) or i in bare_rows
            if n <= max_words and _COUNTER_RE.match(stripped):
                removed += n
                dropped += 1
                continue
            numeric = not row and _NUMERIC_RE.match(stripped) is not None
            if (n <= 1 and not row) or numeric:
                rule = content_lines.NUMERIC if numeric else content_lines.SINGLE_WORD
                if not (keep_content and content_lines.is_content(lines, i, rule)):
                    removed += n
                    dropped += 1
                    continue
                out.append(line)  # code, a one-word sentence, a quantity, a list number, a heading
                continue
            if row and (sum(1 for t in stripped.split() if any(c.isalpha() for c in t)) < 4
                        or (all(len(cell.split()) <= 3 for cell in stripped.split("|"))
                            and _short_cells_header(lines, i, bare_rows))):
                # a row of codes or a header ("| USA | 21.4 |", "| NAME | AGE |", "STR | DEX | CON
                # | INT"): short cells are data, not shouting
                upper = letters = 0
            elif stripped.isascii():
                if stripped.isupper() and not (keep_content and content_lines.is_content(lines, i, content_lines.UPPERCASE)):
                    removed += n  # every letter uppercase: cheap exact test first
                    dropped += 1
                    continue
                upper, lower = _upper_lower(stripped)
                letters = upper + lower
            else:
                # against every letter, cased or not: "中国GDP增长" or Korean prose naming "AI" is not
                # mainly uppercase (scripts without case have no lowercase to outweigh an acronym)
                upper, lower = _upper_lower(stripped)
                letters = len(_LETTER_RE.findall(stripped)) if upper else 0
            if upper and upper > upper_frac * letters and not (
                    keep_content and content_lines.is_content(lines, i, content_lines.UPPERCASE)):
                removed += n
                dropped += 1
                continue
            if (i in credit_lines or (drop_lookalikes and lookalikes.is_lookalike_line(stripped))
                    or (drop_syndication and disclosures.is_syndication(stripped, n))
                    or (drop_meta and meta_lines.is_meta_line(stripped, n))
                    or (drop_calls and (i in box or calls_to_action.is_call_to_action(stripped, n)))
                    or (drop_disclosures and disclosures.is_disclosure(stripped, n))):
                # picture credits, syndication notes, disguised spam, calls to action ("...never miss
                # our top stories. Free Sign Up", a share bar) and disclosures ("We may receive
                # compensation when you click on links to those products") are not a sign of a page
                # of debris: dropped, but counted in the 5% only where RefinedWeb's patterns cut the
                # line too ("Click here to enlarge", "Sign up now", "We use cookies"), as it counted
                # without these rules. Counted, credits tipped one more evaluation page over the 5%,
                # and "Subscribe now to our eNATION edition for the full story." removed the news
                # story under it (session 34's audit); uncounted even then, a page of 79% chrome
                # stayed (a review). Longer lines never count: a 27-word "Follow us" footer removed
                # a whole news story
                if n <= max_words and _patterns_cut(stripped, words):
                    removed += n
                else:
                    calls += n
                dropped += 1
                continue
            if n <= max_words and _may_match_patterns(stripped):
                if _all_chrome(stripped, words):
                    # patterns and separators only ("Privacy policy terms of use", "Log in to leave
                    # a comment"): chrome, though each pattern sits beside another's lower-case word
                    removed += n
                    dropped += 1
                    continue
                edited = _ANY_RE.sub(_cut_anywhere, stripped)
                edited = _START_RE.sub(_cut_start, edited, count=1)
                edited = _END_RE.sub(_cut_end, edited, count=1).strip()
                if edited != stripped:
                    # words with a letter or digit: "1. ." is a list number and a stray dot
                    left = words(" ".join(t for t in edited.split() if _ALNUM_RE.search(t)))
                    if left <= 1:  # nothing but punctuation or one stray word left: drop the line
                        removed += n
                        dropped += 1
                        continue
                    removed += max(n - left, 0)
                    edited_lines += 1
                    line = edited
            out.append(line)
        if removed == 0 and calls == 0:  # edits that cut no word leave the document as it was
            return text, 0, total, 0, 0
        corrected = _BLANK_RUNS.sub("\n\n", "\n".join(out)).strip()
        # a document of nothing but long disclosures keeps its total: process() says empty_text
        return corrected, removed, (total - calls) if corrected else total, dropped, edited_lines

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        texts = batch.column("text").to_pylist()
        n = len(texts)
        code = (batch.column(CODE_LINES).to_pylist() if self.keep_code_lines and CODE_LINES in batch.schema.names
                else [None] * n)
        reasons: list[str | None] = [None] * n
        metrics: list[float | None] = [None] * n
        fracs: list[float | None] = [None] * n
        words_left: list[int | None] = [None] * n  # judged by min_words_after_cuts (its histogram)
        evidence: list[str | None] = [None] * n  # the lines cut, on too_many_lines_corrected removals
        new_texts: list[str | None] = list(texts)
        limit = self.max_removed_word_frac
        lines_dropped = lines_edited = 0  # in documents this stage keeps (its counters)
        for i, text in enumerate(texts):
            if not text or not text.strip():
                reasons[i] = "empty_text"
                continue
            corrected, removed, total, dropped, edited = self._correct(text, frozenset(code[i] or ()))
            frac = removed / total if total else 1.0
            fracs[i] = frac
            if frac > limit:
                reasons[i], metrics[i] = "too_many_lines_corrected", frac
                evidence[i] = _cut_lines_evidence(text, corrected)
            elif not corrected:
                reasons[i], metrics[i] = "empty_text", frac
            elif (left := self._words_left(text, corrected)) is not None and left < self.min_words_after_cuts:
                reasons[i], metrics[i], words_left[i] = TOO_SHORT_AFTER_CUTS, float(left), left
            else:
                words_left[i] = left
                new_texts[i] = corrected
                lines_dropped += dropped
                lines_edited += edited
        self.count("lines_dropped", lines_dropped)
        self.count("lines_edited", lines_edited)
        text_type = batch.schema.field("text").type
        extra = {"text": pa.array(new_texts, type=text_type), METRIC_COLUMN: pa.array(fracs, type=pa.float32())}
        if self.min_words_after_cuts is not None:  # without a floor nothing is judged: no column of nulls
            extra[WORDS_AFTER_CUTS] = pa.array(words_left, type=pa.int32())
        return with_decision(batch, reasons, metrics, extra=extra, evidence=evidence)

    def evidence_spans(self, text: str, reason: str, value: Callable[[str], Any]) -> list[tuple[int, int]]:
        """The lines cut or edited, where they were (both reasons that follow an edit: too many
        cut, too few words left after them), as :meth:`process` cut them: with the document's code
        marks (without them a kept code line read as cut; session 50)."""
        if reason not in ("too_many_lines_corrected", TOO_SHORT_AFTER_CUTS):
            return []
        return _cut_line_spans(text, self._correct(text, frozenset(value(CODE_LINES) or ()))[0])

    def _words_left(self, text: str, corrected: str) -> int | None:
        """The words (Gopher's count) of a document the stage edited, when a floor is set: only an
        edit can take a document under it, so the others are not counted (None)."""
        if self.min_words_after_cuts is None or corrected == text:
            return None
        return word_count(corrected)

    def metric_columns(self) -> list[str]:
        return [METRIC_COLUMN] + ([WORDS_AFTER_CUTS] if self.min_words_after_cuts is not None else [])


def _cut_line_spans(text: str, corrected: str) -> list[tuple[int, int]]:
    """Where in ``text`` the lines ``corrected`` lacks are (each line stripped), in order: the lines
    the corrections cut or edited (a line edited counts as cut: its whole is what the reader sees)."""
    kept = {line.strip() for line in corrected.split("\n")}
    spans, at = [], 0
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped and stripped not in kept:
            start = at + len(line) - len(line.lstrip())
            spans.append((start, start + len(stripped)))
        at += len(line) + 1
    return spans


def _cut_lines_evidence(text: str, corrected: str) -> str | None:
    """``N lines cut or edited: a · b · …``: the lines of ``text`` that ``corrected`` lacks, the
    distinct ones in order."""
    cut = [text[start:end] for start, end in _cut_line_spans(text, corrected)]
    if not cut:
        return None
    return clip_evidence(f"{len(cut)} lines cut or edited: " + " · ".join(dict.fromkeys(cut)))

