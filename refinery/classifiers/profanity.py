"""Word-list profanity score: the fraction of a document's words that are on the LDNOOBW or
better-profanity English lists (C4's interpretable signal; lists and provenance in
``refinery/resources/profanity/``).

Words are the tokens of :func:`~refinery.classifiers.common.prepare_text` (lowercased,
punctuation split off) other than punctuation, so the toxicity stage counts them on the text it
already prepared for fastText instead of tokenizing twice. List entries are prepared the same
way: ``sh!t`` becomes the phrase ``sh ! t`` and matches exactly that spelling; entries with no
word characters at all (one emoji in better-profanity) are skipped, since they are not words.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from refinery.classifiers.common import is_punct_token, prepare_text, prepare_text_counted

RESOURCES = Path(__file__).resolve().parent.parent / "resources" / "profanity"
WORD_LISTS = ("ldnoobw_en.txt", "better_profanity_en.txt")


class ProfanityLexicon:
    """Single-token entries in a set; multi-token entries indexed by their first token so the
    common case (no phrase starts anywhere) costs one set operation per document."""

    def __init__(self, entries: list[str]) -> None:
        self.words: set[str] = set()
        self.phrases: dict[str, list[tuple[str, ...]]] = {}
        for entry in entries:
            parts = tuple(prepare_text(entry, len(entry)).split())
            if not parts or all(is_punct_token(p) for p in parts):
                continue
            if len(parts) == 1:
                self.words.add(parts[0])
            else:
                self.phrases.setdefault(parts[0], []).append(parts)
        for options in self.phrases.values():
            options.sort(key=len, reverse=True)  # longest match first

    @classmethod
    def from_files(cls, paths: list[Path]) -> ProfanityLexicon:
        entries = []
        for path in paths:
            with open(path, encoding="utf-8") as f:
                entries.extend(line.strip() for line in f if line.strip())
        return cls(entries)

    def flagged_fraction(self, text: str, max_chars: int | None = None) -> tuple[float, int]:
        """(flagged words / words, words) of raw ``text``; (0.0, 0) without words."""
        prepared, n_punct = prepare_text_counted(text, len(text) if max_chars is None else max_chars)
        return self.flagged_fraction_prepared(prepared, n_punct)

    def flagged_fraction_prepared(self, prepared: str, n_punct: int) -> tuple[float, int]:
        """The same from :func:`prepare_text_counted` output."""
        tokens = prepared.split()
        n = len(tokens) - n_punct
        if n <= 0:
            return 0.0, 0
        vocab, phrases = self.words, self.phrases
        flagged = sum(map(vocab.__contains__, tokens))  # C-level loop: the common case
        if not phrases.keys().isdisjoint(tokens):
            # a phrase counts the words it covers once (those already counted singly are not
            # added again); matches do not overlap, scanning left to right
            next_free = 0
            for i in [i for i, t in enumerate(tokens) if t in phrases]:
                if i < next_free:
                    continue
                for parts in phrases[tokens[i]]:
                    if tuple(tokens[i : i + len(parts)]) == parts:
                        flagged += sum(1 for p in parts if p not in vocab and not is_punct_token(p))
                        next_free = i + len(parts)
                        break
        return flagged / n, n


#: entries of the better-profanity list that are ordinary words, not counted (the file says why)
NOT_COUNTED = "better_profanity_en_not_counted.txt"


@lru_cache(maxsize=1)
def default_lexicon() -> ProfanityLexicon:
    """Both lists, less :data:`NOT_COUNTED` (words a lead about God, an organ or the Nazi era
    has to use: 72 of 10,033 Wikipedia vital-article leads were removed as profanity)."""
    with open(RESOURCES / NOT_COUNTED, encoding="utf-8") as f:
        ordinary = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    entries = []
    for name in WORD_LISTS:
        skip = ordinary if name == "better_profanity_en.txt" else set()  # LDNOOBW as published
        with open(RESOURCES / name, encoding="utf-8") as f:
            entries += [w for w in (line.strip() for line in f) if w and w.lower() not in skip]
    return ProfanityLexicon(entries)
