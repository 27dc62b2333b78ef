"""Lines that are only an article's metadata: a date or time stamp, a byline, a reading time.

Session 35's census of kept text found one-line debris left by extraction: "Updated: July 24,
2023", "Posted: Thursday, April 21, 2022. 10:11 pm CST.", "By Jane Doe | March 3, 2020", "5 min
read". :func:`is_meta_line` says whether a whole line is such a note, and ``line_corrections``
drops it (``drop_meta_lines``). Every pattern is anchored at both ends of the line: a date inside a
sentence, a "By" opening a sentence ("By the end of 2020, ...") or a list item with a year stay.
English only, like the recipe.
"""

from __future__ import annotations

import functools
import re

#: a meta line has at most this many words (a byline with a stamp: "By Jane Doe and John Roe |
#: Updated: March 3, 2020 at 10:15 am EST")
MAX_WORDS = 16

_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
          r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_WEEKDAY = r"(?:mon|tues?|wed(?:nes)?|thu(?:rs)?|fri|sat(?:ur)?|sun)(?:day)?\.?,?\s+"
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
# a full date, with its year: "March 3, 2020", "3 March 2020", "2020-03-03", "04/21/2022"; a month
# and year alone ("May 2019: Defended my dissertation!") opens news items, and stays
_DATE = (r"(?:" + _WEEKDAY + r")?(?:" + _MONTH + r"\s+" + _DAY + r",?\s+\d{4}|" + _DAY + r"\s+(?:of\s+)?"
         + _MONTH + r",?\s+\d{4}|\d{4}-\d\d-\d\d|\d{1,2}/\d{1,2}/\d{2,4})")
_TIME = (r"(?:\d{1,2}:\d\d(?::\d\d)?\s*(?:[ap]\.?m\.?)?|\d{1,2}\s*[ap]\.?m\.?)"
         r"(?:\s*\(?(?-i:[A-Z]{2,4})\)?)?")  # a time zone: "EST", "(UTC)"
_STAMP = _DATE + r"(?:[\s,.|\-–—]*(?:at\s+)?" + _TIME + r")?"
_LABEL = (r"(?:(?:originally\s+)?(?:posted|published|updated|last\s+updated|last\s+modified|modified|created|"
          r"date|dated|released)(?:\s+on)?\s*:?\s*)")
# a name: up to four capitalised words ("Jane Doe", "J.R.R. Tolkien", "Mary-Kate O'Neil"), with
# "and"/"&"/"," between names; "By the end", "By contrast" and "By car" are not one ("By Car" is:
# the stamp or a second name word is required, see _BYLINE)
_NAME_WORD = r"(?-i:[A-Z][\w.'’-]*)"
_NAME = _NAME_WORD + r"(?:\s+(?:(?-i:[a-z]{1,3})\s+)?" + _NAME_WORD + r"){1,3}"
_NAMES = _NAME + r"(?:\s*(?:,|&|\band\b)\s*" + _NAME + r"){0,2}"
_SEP = r"\s*[|,·•\-–—/]?\s*"
_BYLINE = r"by\s+" + _NAMES + r"(?:" + _SEP + _LABEL + r"?" + _STAMP + r")?"
_READ = r"(?:\d{1,3}\s*(?:-\s*)?(?:min(?:ute)?s?|mins?)\.?\s*read|reading\s+time\s*:?\s*\d{1,3}\s*min(?:ute)?s?)"

META_PATTERNS: list[str] = [
    # "Updated: July 24, 2023", "Posted 28 March 2024", "Posted: Thursday, April 21, 2022. 10:11 pm CST."
    _LABEL + _STAMP,
    # a date with its time, "22/04/2019 02:22:05"; a bare date stays: a story's scene ("June 26,
    # 1973" over a chapter, cc_docs), a value under its label ("Date of birth" / "2/4/1855"), a news
    # item's heading (kyleclo.com's "Feb 1, 2024")
    _DATE + r"[\s,.|\-–—]*(?:at\s+)?" + _TIME,
    # "By Jane Doe", "By Jane Doe and John Roe | March 3, 2020"
    _BYLINE,
    # "5 min read", "March 3, 2020 · 5 min read", "Reading time: 4 minutes"
    r"(?:" + _STAMP + _SEP + r")?" + _READ,
]


@functools.cache
def _meta_re() -> re.Pattern[str]:
    # compiled on first use (~4 ms): line_corrections imports this module in every run, and
    # drop_meta_lines is off by default
    return re.compile(r"^[\W_]{0,3}(?:" + "|".join(META_PATTERNS) + r")[\s.|·•]*$", re.IGNORECASE)


def is_meta_line(line: str, n_words: int) -> bool:
    """Whether ``line`` (of ``n_words`` words) is only a date stamp, a byline or a reading time."""
    return n_words <= MAX_WORDS and _meta_re().match(line) is not None
