"""Lines written with look-alike letters from another script: Latin words with Cyrillic letters
that look like Latin ones mixed in ("Аdvеrtіѕе wіth thе most visited news site in Веlіzе", with
Cyrillic А, е, і, ѕ, В), a way to slip ads and spam past word filters.

A word that mixes Latin letters with Cyrillic ones, every Cyrillic one of which has a Latin twin
(:data:`CYRILLIC_LOOKALIKES`), is a disguised word; a line with at least :data:`MIN_WORDS` of
them goes. Cyrillic words with a Latin letter or name ("IP-адреса", "ПортCity", Belarusian
"iнвалiдам" with a Latin i) have Cyrillic letters without a Latin twin and stay, and so does a
line with any such letter (Cyrillic text: a Kazakh sentence naming "Homіnoіdea" with Cyrillic і); Greek is not
looked at (science writes "μm", "α-amino", "ΔE" beside Latin letters: 18 of 10,033 Wikipedia
leads). Meant for English and other Latin-script text where Cyrillic letters have no place:
Azerbaijani text typed on Cyrillic keyboards carries the same mix as content (Leipzig sentences,
docs/extraction.md).
"""

from __future__ import annotations

import re

#: Cyrillic letters drawn like a Latin letter (lower and upper case): а е о р с у х і ј ѕ һ ԁ ԛ ԝ ӏ,
#: А В Е К М Н О Р С Т Х І Ј Ѕ Ү Ԛ Ԝ
CYRILLIC_LOOKALIKES = "аеорсухіјѕһԁԛԝӏАВЕКМНОРСТХІЈЅҮԚԜ"

#: disguised words a line needs to be dropped (one may be a typo or a brand: "Mе")
MIN_WORDS = 2

_CYRILLIC = re.compile("[\u0400-\u04ff\u0500-\u052f]")
_LATIN = re.compile("[A-Za-z\u00c0-\u024f]")
# a run of letters (any script) with inner apostrophes or hyphens: "thе", "е-mаil"
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_NOT_LOOKALIKE = re.compile("[^" + CYRILLIC_LOOKALIKES + r"\W\d_A-Za-z\u00c0-\u024f]")
# a Cyrillic letter without a Latin twin: the line is written in Cyrillic
_CYRILLIC_PROPER = re.compile("[\u0400-\u052f](?<![" + CYRILLIC_LOOKALIKES + "])")


def may_hold(text: str) -> bool:
    """False when ``text`` has no Cyrillic letter at all (nearly every English document): one
    search instead of a look at every line."""
    return _CYRILLIC.search(text) is not None


def is_disguised(word: str) -> bool:
    """``word`` mixes Latin letters with Cyrillic look-alikes only ("Аdvеrtіѕе", "thе")."""
    return (_CYRILLIC.search(word) is not None and _LATIN.search(word) is not None
            and _NOT_LOOKALIKE.search(word) is None)


def is_lookalike_line(line: str) -> bool:
    """``line`` holds at least :data:`MIN_WORDS` disguised words."""
    if not _CYRILLIC.search(line) or _CYRILLIC_PROPER.search(line):
        return False  # no Cyrillic, or Cyrillic text ("Русi", Kazakh "Homіnoіdea" beside Kazakh words)
    found = 0
    for word in _WORD.findall(line):
        if is_disguised(word):
            found += 1
            if found >= MIN_WORDS:
                return True
    return False
