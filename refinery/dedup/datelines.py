"""Which lines are *datelines* ("April 11, 2023", "Posted on 11 April 2023", "Updated: 2023-04-11
10:30"): a date, with at most a few other words (a lead such as "Posted on"). Lines dedup folds
digits, so every dateline of a month would be one line on many sites and cut as boilerplate from
every article but one; a dateline says when an article was written, so it is compared with its
digits instead (:class:`refinery.dedup.lines.LineRule`, ``exact_dates``).

Month and weekday names come from CLDR (babel, which trafilatura's courlan already installs) for
the languages of a typical crawl's bulk; names shorter than three letters are left out ("di",
"do" are words too).
"""

from __future__ import annotations

import functools
import re

#: CLDR locales whose month and weekday names mark a date
LOCALES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da", "nb", "fi", "cs", "ru", "tr", "id", "ro", "hu")
#: words besides the date itself: "Posted on", "Last updated:", "Veröffentlicht am"
MAX_OTHER_WORDS = 3
#: longer lines are not datelines (and are skipped before any regex runs)
MAX_WORDS = 12

_TIME = re.compile(r"\b\d{1,2}[:h]\d{2}(?::\d{2})?(?:\s*[ap]\.?m\.?)?\b")
_NUMERIC_DATE = re.compile(r"\b(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./](?:\d{4}|\d{2}))\b")
_TOKEN = re.compile(r"\d+|[^\W\d_]+")
#: a date's own words: "3 de octubre de 2011", "the 3rd of May" (ordinal endings), time zones
_GLUE = frozenset({"de", "of", "the", "le", "el", "am", "pm", "at", "um", "st", "nd", "rd", "th", "er", "utc", "gmt",
                   "est", "edt", "pst", "pdt", "cet", "cest", "bst"})


@functools.cache
def _names() -> frozenset[str]:
    from babel.dates import get_day_names, get_month_names

    names: set[str] = set()
    for locale in LOCALES:
        for width in ("wide", "abbreviated"):
            for context in ("format", "stand-alone"):
                for getter in (get_month_names, get_day_names):
                    names.update(v.casefold().strip(".") for v in getter(width, context, locale).values())
    return frozenset(n for n in names if len(n) >= 3)


def is_dateline(norm: str) -> bool:
    """``norm`` (a normalized line: NFKC, casefolded, digits unfolded) is a date, with at most
    :data:`MAX_OTHER_WORDS` other words. Chrome with digits ("3 comments", "© 2023 Acme. All
    rights reserved.", "Page 2 of 9") has no month name or numeric date and is not one."""
    if len(norm.split()) > MAX_WORDS or not any(c.isdigit() for c in norm):
        return False
    rest = _TIME.sub(" ", norm)
    dated = bool(_NUMERIC_DATE.search(rest))
    rest = _NUMERIC_DATE.sub(" ", rest)
    names = _names()
    has_number = any(c.isdigit() for c in rest)
    other = 0
    for token in _TOKEN.findall(rest):
        if token.isdigit():
            if len(token) > 4:
                return False
            continue
        if token in names:
            dated = dated or has_number  # a month or weekday name beside a day or year
        elif token not in _GLUE:
            other += 1
    return dated and other <= MAX_OTHER_WORDS
