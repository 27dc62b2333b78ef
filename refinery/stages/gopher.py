"""Gopher repetition and quality heuristics (Rae et al. 2021, appendix A.1.1, table A1), the
document-wise filters RefinedWeb applies after language ID (Penedo et al. 2023, section 3.2).

Definitions and choices (the paper leaves tokenisation open; these are ours, documented):

- **words** are whitespace-separated tokens (``str.split()``), compared verbatim (no lowercasing,
  punctuation stays attached). Character counts are counts of word characters, so whitespace
  never counts: every "character fraction" is ``chars in <something> / chars in all words``.
- **lines** are the ``\\n``-separated lines, stripped, blank ones dropped; **paragraphs** are the
  blocks separated by blank lines (``\\n\\s*\\n``), stripped, blank ones dropped. Text without
  blank lines is one paragraph.
- A **duplicate** line / paragraph / n-gram occurrence is one that repeats an *earlier*
  occurrence: the first occurrence is the original, the rest are duplicates (as datatrove does).
  ``dup_line_frac`` = duplicate lines / lines; ``dup_line_char_frac`` = characters in duplicate
  lines / characters in all lines (same for paragraphs).
- ``top_n_gram`` (n = 2, 3, 4): characters covered by *all* occurrences of the most frequent
  n-gram / characters in all words. Overlapping occurrences (``a a a``) are counted once per word,
  so the fraction never exceeds 1. An n-gram that occurs only once is not repetition: the
  fraction is 0 then (otherwise a 6-word text would fail ``top_2_gram`` merely for being short).
  Ties go to the n-gram that occurs first.
- Repetition reads the text without table markup (:func:`without_table_markup`): the rule under
  a header row goes, a row keeps its cells' words. Every table repeats its separators and rules,
  and RefinedWeb, which extracted no tables, never saw them: a page of four small tables was
  removed for its repeated ``|---|---|`` lines. A row repeated whole still counts.
- ``table_ngram_weight`` (1 = Gopher as published; the recipe 0.25): in the ``top_n_gram`` and
  ``dup_n_gram`` fractions, a word of a table row counts this much of its characters when it is
  covered (the denominator keeps every word whole). Tables repeat n-grams by nature (a schedule's
  "Returns to her trailer", a settings table's "Default Tele Broadcast"); the line and paragraph
  fractions are unchanged, so a table given twice whole is still caught (docs/extraction.md,
  "Repetition in tables (h147)").
- ``skip_quoted_repeats`` (false = Gopher as published; the recipe true): the lines extraction took
  from a ``<blockquote>`` (``quote_lines``) that repeat the page's own text outside the quotes are
  left out before every fraction, the first quote of each text only (:func:`without_quoted_repeats`):
  a reply quoting a post is a thread's structure, a passage quoted again and again is still
  repetition, and a quote of text found nowhere else counts as any line (docs/extraction.md,
  session 47).
- ``dup_n_gram`` (n = 5 .. 10): characters of words covered by duplicate n-gram occurrences,
  each word counted once however many duplicate n-grams overlap it ("taking care not to count
  characters that occur in overlapping n-grams more than once") / characters in all words.
  Datatrove instead skips ahead n words after each duplicate and divides by ``len(text)``;
  both read the paper's sentence, ours counts every duplicated word exactly once.

  The covered set of words can only shrink as n grows (a duplicated (n+1)-gram contains two
  duplicated n-grams), so once the fraction for some n is at or below every remaining
  threshold, the larger n cannot fail and are skipped -- an exact shortcut, not an
  approximation.

GopherQuality:

- word count and mean word length use the tokens that contain something other than
  punctuation/symbols, with surrounding punctuation stripped for the length; 50 <= words <=
  100,000 and 3 <= mean length <= 10.
- ``symbol_word_ratio``: ``max(count("#"), count("...") + count("…")) / words`` <= 0.1.
- ``bullet_lines``: fraction of (non-blank) lines starting with a bullet (•, ●, ◦, ▪, -, –, *, …)
  <= 0.9; ``ellipsis_lines``: fraction ending with ``...`` or ``…`` <= 0.3.
- ``alpha_words``: fraction of tokens containing an alphabetic character >= 0.8, over all
  tokens but table markup: on a line that starts and ends with ``|`` (a table row or the rule
  under its header, as extraction writes tables), a token of only ``|``, ``-`` and ``:``.
  RefinedWeb extracted no tables, so its filter never saw them; counted, they are a third of the
  tokens of a table row (``| 1850 | Yale University |``) and removed articles for holding a
  table. A ``|`` inside a line (``Home | News | Sports``) still counts.
- ``stop_words``: at least 2 *distinct* words of {the, be, to, of, and, that, have, with}
  (lowercased, punctuation stripped) must occur.

Checks run in the order of the reasons below and stop at the first failure; ``_metric`` is the
offending value, and the class attribute ``reason_metrics`` names the metric column that holds it.
GopherRepetition's removals carry their evidence (``removed_evidence``, made for removed documents
only), read from the text as the rule read it (without table markup and quoted repeats): for the
line and paragraph rules the item repeated most (``dup_*_frac``: most often; ``dup_*_char_frac``:
most characters in its repeats), as ``12× "Share this post"``; for ``top_n_gram`` the top n-gram
(``15× "click here"``); for ``dup_n_gram`` the longest run of words covered by repeated n-grams
(``58 words repeated: "..."``). Each cut to 120 characters: the repeats a sample's first 500
characters may not show.
Every threshold has a ``gopher_*`` metric column (``threshold_params`` maps it to its parameter).
The line/paragraph fractions, ``top_2_gram``, ``dup_5_gram`` and the GopherQuality columns are
computed for every non-empty document (null for empty text), so their histograms cover
everything the stage saw. The longer n-gram fractions cost a pass each, so they hold what was
computed to decide: null after the deciding rule or past the exact shortcut above (exactly 0
when a shorter n-gram fraction was 0).
"""

from __future__ import annotations

import itertools
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from refinery.schema import QUOTE_LINES
from refinery.stages import checks
from refinery.stages.base import Stage, clip_evidence, quoted_evidence, with_decision
from refinery.stages.table_text import is_table_row

__all__ = [
    "STOP_WORDS",
    "GopherQuality",
    "GopherRepetition",
    "NGrams",
    "dup_fractions",
    "dup_ngram_char_frac",
    "quality_stats",
    "top_ngram_char_frac",
    "without_quoted_repeats",
]

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
BULLETS = ("•", "●", "○", "◦", "▪", "▫", "■", "□", "‣", "⁃", "∙", "·", "-", "–", "—", "*", "➢", "➤", "►", "▶", "→", "✓", "✔")
ELLIPSES = ("...", "…")
PUNCTUATION = string.punctuation + "“”‘’«»‹›„‚—–…•·¡¿、。，．：；！？（）「」『』【】《》〈〉│¦§¶†‡°±×÷"

_PARAGRAPH_SPLIT = re.compile(r"\n\s*\n")
_ALPHA = re.compile(r"[^\W\d_]")  # a letter
_TABLE_MARKUP = "|-:"  # what a token of a table's cell separators or header rule is made of
_WORD = re.compile(r"\S+")  # a word as str.split() finds it (both split at str.isspace())


# ---------------------------------------------------------------------------------------------
# repetition math (pure functions, unit-tested on hand-computed examples)
# ---------------------------------------------------------------------------------------------
def dup_fractions(items: Sequence[str]) -> tuple[float, float]:
    """(duplicate items / items, characters in duplicate items / characters in all items).

    An item is a duplicate if an identical item occurred earlier.
    """
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    dup = dup_chars = total_chars = 0
    for item in items:
        n = len(item)
        total_chars += n
        if item in seen:
            dup += 1
            dup_chars += n
        else:
            seen.add(item)
    return dup / len(items), (dup_chars / total_chars if total_chars else 0.0)


def _dense_ids(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dense id of each key, first position of each id): ``np.unique(keys, return_index=True,
    return_inverse=True)`` without its generality (~25% of the time here)."""
    order = np.argsort(keys, kind="stable")  # stable: the first of equal keys comes first
    ordered = keys[order]
    new = np.empty(len(keys), dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    ids = np.empty(len(keys), dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids, order[new]


class NGrams:
    """Exact integer ids of a document's word n-grams, built incrementally (n = 1, 2, 3, ...).

    Words get dense ids (a C-level dict pass); the n-gram ids are the dense ids of the pairs
    ``(id of the (n-1)-gram at i, id of word i+n-1)``, found with one ``np.unique`` per n. Pairs
    are packed into one int64 key (both parts are < the number of words), so ids are exact: equal
    ids iff equal n-grams, no hashing and no collisions. ~10x faster than Python tuples of strings
    on real documents (benchmarks/gopher.py), with identical fractions (tests/test_gopher.py
    checks them against the tuple-based reference on real text).
    """

    __slots__ = ("_first", "_ids", "_words", "lengths", "n_words", "total")

    def __init__(self, words: Sequence[str], prefix: list[int] | None = None,
                 weights: np.ndarray | None = None) -> None:
        """``weights`` (one per word, or None): how much of a word's characters count when an
        n-gram covers it; ``total`` keeps every word whole (``table_ngram_weight``)."""
        self.n_words = len(words)
        vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
        self._words = np.fromiter(map(vocab.__getitem__, words), dtype=np.int64, count=self.n_words)
        self.lengths = np.fromiter(map(len, words), dtype=np.int64, count=self.n_words)
        self.total = int(prefix[-1]) if prefix else int(self.lengths.sum())
        if weights is not None:
            self.lengths = self.lengths * weights
        self._ids: dict[int, np.ndarray] = {}
        self._first: dict[int, np.ndarray] = {}  # n -> position of each n-gram id's first occurrence

    def ids(self, n: int) -> np.ndarray:
        """Id of the n-gram starting at each position (``n_words - n + 1`` of them)."""
        ids = self._ids.get(n)
        if ids is None:
            if n == 1:
                ids, self._first[1] = _dense_ids(self._words)
            else:
                prev = self.ids(n - 1)
                if len(self._first[n - 1]) == len(prev):  # no (n-1)-gram repeats: no n-gram does
                    ids = np.arange(len(prev) - 1, dtype=np.int64)
                    self._first[n] = ids
                else:
                    ids, self._first[n] = _dense_ids(prev[:-1] * self.n_words + self._words[n - 1 :])
            self._ids[n] = ids
        return ids

    def first(self, n: int) -> np.ndarray:
        self.ids(n)
        return self._first[n]

    def covered_chars(self, starts: np.ndarray, n: int) -> float:
        """Characters of the words covered by n-grams starting at ``starts``, each word once
        (weighted, when the words have weights)."""
        depth = np.zeros(self.n_words + 1, dtype=np.int64)
        depth[starts] += 1  # starts are distinct positions, so are the ends: plain indexing adds
        depth[starts + n] -= 1
        return self.lengths[np.cumsum(depth[:-1]) > 0].sum().item()

    def top(self, n: int) -> tuple[int, int] | None:
        """(id, occurrences) of the most frequent n-gram, ties going to the one that occurs first;
        None when no n-gram occurs twice."""
        if self.n_words < n or n < 1:
            return None
        ids, first = self.ids(n), self.first(n)
        counts = np.bincount(ids)
        top_count = int(counts.max())
        if top_count < 2:
            return None
        tied = np.flatnonzero(counts == top_count)
        return int(tied[np.argmin(first[tied])]), top_count

    def top_char_frac(self, n: int) -> float:
        """See :func:`top_ngram_char_frac`."""
        found = self.top(n) if self.total else None
        if found is None:
            return 0.0
        return self.covered_chars(np.flatnonzero(self.ids(n) == found[0]), n) / self.total

    def dup_char_frac(self, n: int) -> float:
        """See :func:`dup_ngram_char_frac`."""
        if self.n_words < n or not self.total or n < 1:
            return 0.0
        ids, first = self.ids(n), self.first(n)
        if len(first) == len(ids):
            return 0.0
        starts = np.flatnonzero(first[ids] != np.arange(len(ids)))
        return self.covered_chars(starts, n) / self.total


def top_ngram_char_frac(words: Sequence[str], n: int, prefix: list[int] | None = None) -> float:
    """Share of word characters covered by all occurrences of the most frequent n-gram (0 if
    no n-gram occurs twice)."""
    return NGrams(words, prefix).top_char_frac(n)


def dup_ngram_char_frac(words: Sequence[str], n: int, prefix: list[int] | None = None) -> float:
    """Share of word characters covered by n-gram occurrences that repeat an earlier occurrence."""
    return NGrams(words, prefix).dup_char_frac(n)


def _lines(text: str) -> list[str]:
    return [s for s in (line.strip() for line in text.split("\n")) if s]


def _paragraphs(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _PARAGRAPH_SPLIT.split(text)) if s]


# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------
def _threshold_pairs(value: Any, default: dict[int, float]) -> dict[int, float]:
    if value is None:
        return dict(default)
    if isinstance(value, dict):
        return {int(k): float(v) for k, v in value.items()}
    return {int(k): float(v) for k, v in value}


class GopherRepetition(Stage):
    """Remove documents with too much repeated content (Gopher table A1)."""

    kind = "gopher_repetition"
    added_params = {"table_ngram_weight": 1.0, "skip_quoted_repeats": False}  # runs made before them resume

    #: metric columns with the default thresholds (``metric_columns()`` follows the configured n)
    METRICS = ("gopher_dup_line_frac", "gopher_dup_para_frac", "gopher_dup_line_char_frac", "gopher_dup_para_char_frac",
               "gopher_top_2_gram", "gopher_top_3_gram", "gopher_top_4_gram", "gopher_dup_5_gram", "gopher_dup_6_gram",
               "gopher_dup_7_gram", "gopher_dup_8_gram", "gopher_dup_9_gram", "gopher_dup_10_gram")
    #: metric column -> the parameter that thresholds it (read by the report)
    threshold_params = {
        "gopher_dup_line_frac": ["dup_line_frac"], "gopher_dup_para_frac": ["dup_para_frac"],
        "gopher_dup_line_char_frac": ["dup_line_char_frac"], "gopher_dup_para_char_frac": ["dup_para_char_frac"],
        **{f"gopher_top_{n}_gram": [f"top_n_grams[{n}]"] for n in range(1, 21)},
        **{f"gopher_dup_{n}_gram": [f"dup_n_grams[{n}]"] for n in range(1, 21)},
    }
    #: removal reason -> the metric column holding the value that triggered it
    reason_metrics = {
        **{r: f"gopher_{r}" for r in ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac")},
        **{f"top_{n}_gram": f"gopher_top_{n}_gram" for n in range(1, 21)},
        **{f"dup_{n}_gram": f"gopher_dup_{n}_gram" for n in range(1, 21)},
    }

    def __init__(
        self,
        dup_line_frac: float = 0.30,
        dup_para_frac: float = 0.30,
        dup_line_char_frac: float = 0.20,
        dup_para_char_frac: float = 0.20,
        top_n_grams: dict[int, float] | list[tuple[int, float]] | None = None,
        dup_n_grams: dict[int, float] | list[tuple[int, float]] | None = None,
        table_ngram_weight: float = 1.0,
        skip_quoted_repeats: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        for pname, value in (("dup_line_frac", dup_line_frac), ("dup_para_frac", dup_para_frac),
                             ("dup_line_char_frac", dup_line_char_frac), ("dup_para_char_frac", dup_para_char_frac),
                             ("table_ngram_weight", table_ngram_weight)):
            checks.fraction(pname, value)
        # a table row's words in the n-gram fractions (1: Gopher as published; module docstring)
        self.table_ngram_weight = float(table_ngram_weight)
        # a forum reply's or an answer's quote of the page's own text is not repetition: extraction
        # marks a <blockquote>'s lines (schema.QUOTE_LINES; module docstring)
        self.skip_quoted_repeats = bool(skip_quoted_repeats)
        self.dup_line_frac = dup_line_frac
        self.dup_para_frac = dup_para_frac
        self.dup_line_char_frac = dup_line_char_frac
        self.dup_para_char_frac = dup_para_char_frac
        self.top_n_grams = _threshold_pairs(top_n_grams, {2: 0.20, 3: 0.18, 4: 0.16})
        self.dup_n_grams = _threshold_pairs(dup_n_grams, {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
        for pname, pairs in (("top_n_grams", self.top_n_grams), ("dup_n_grams", self.dup_n_grams)):
            for n, frac in dict(pairs).items():
                checks.at_least(f"{pname} n", n, 1)
                checks.fraction(f"{pname}[{n}]", frac)

    def metric_columns(self) -> list[str]:
        return ["gopher_dup_line_frac", "gopher_dup_para_frac", "gopher_dup_line_char_frac", "gopher_dup_para_char_frac",
                *(f"gopher_top_{n}_gram" for n in sorted({2, *self.top_n_grams})),
                *(f"gopher_dup_{n}_gram" for n in sorted({5, *self.dup_n_grams}))]

    def check(self, text: str | None, quoted: Sequence[int] | None = None
              ) -> tuple[str | None, float | None, dict[str, float] | None]:
        """(reason or None, metric, metric columns) for one document; ``quoted``: the numbers of its
        lines that came from a ``<blockquote>`` (read with ``skip_quoted_repeats`` only).

        The metric columns hold what was computed to decide: the n-gram fractions after the
        deciding rule (or past the exact shortcut) are not computed and stay out (null), except
        where they are exactly 0 (no repeated n-gram means no repeated longer one)."""
        return self._decide(text, quoted)[:3]

    def _decide(self, text: str | None, quoted: Sequence[int] | None = None, counted: bool = True
                ) -> tuple[str | None, float | None, dict[str, float] | None, _Read | None]:
        """:meth:`check`, plus the text as the rules read it (for a removal's evidence).
        ``counted``: add to the stage's counters (not when a sample's text is read again)."""
        if not text or text.isspace():
            return "empty_text", None, None, None
        if quoted and self.skip_quoted_repeats:
            text, left_out = without_quoted_repeats(text, quoted)
            if counted:
                self.count("quoted_lines_left_out", left_out)
        rows: list[bool] | None = None
        if "|" in text:
            rows = [] if self.table_ngram_weight < 1.0 else None
            text = without_table_markup(text, rows)
        lines = _lines(text)
        paragraphs = _paragraphs(text)
        line_frac, line_char_frac = dup_fractions(lines)
        para_frac, para_char_frac = dup_fractions(paragraphs)
        words = text.split()
        weights = _row_word_weights(text, rows, self.table_ngram_weight) if rows and any(rows) else None
        grams = NGrams(words, weights=weights)  # n-gram ids shared by every n-gram rule below
        read = _Read(lines, paragraphs, words, grams)
        top2 = grams.top_char_frac(2)
        dup5 = grams.dup_char_frac(5)
        hist = {"gopher_dup_line_frac": line_frac, "gopher_dup_para_frac": para_frac,
                "gopher_dup_line_char_frac": line_char_frac, "gopher_dup_para_char_frac": para_char_frac,
                "gopher_top_2_gram": top2, "gopher_dup_5_gram": dup5}
        # a fraction of 0 means no n-gram repeats, so no longer one does: those are 0 too
        if top2 == 0.0:
            hist.update((f"gopher_top_{n}_gram", 0.0) for n in self.top_n_grams if n > 2)
        if dup5 == 0.0:
            hist.update((f"gopher_dup_{n}_gram", 0.0) for n in self.dup_n_grams if n > 5)

        if line_frac > self.dup_line_frac:
            return "dup_line_frac", line_frac, hist, read
        if para_frac > self.dup_para_frac:
            return "dup_para_frac", para_frac, hist, read
        if line_char_frac > self.dup_line_char_frac:
            return "dup_line_char_frac", line_char_frac, hist, read
        if para_char_frac > self.dup_para_char_frac:
            return "dup_para_char_frac", para_char_frac, hist, read
        for n, limit in sorted(self.top_n_grams.items()):
            frac = hist.get(f"gopher_top_{n}_gram")
            if frac is None:
                frac = hist[f"gopher_top_{n}_gram"] = grams.top_char_frac(n)
                if frac == 0.0:
                    hist.update((f"gopher_top_{m}_gram", 0.0) for m in self.top_n_grams if m > n)
            if frac > limit:
                return f"top_{n}_gram", frac, hist, read
        dup_items = sorted(self.dup_n_grams.items())
        for k, (n, limit) in enumerate(dup_items):
            frac = hist.get(f"gopher_dup_{n}_gram")
            if frac is None:
                frac = hist[f"gopher_dup_{n}_gram"] = grams.dup_char_frac(n)
                if frac == 0.0:
                    hist.update((f"gopher_dup_{m}_gram", 0.0) for m in self.dup_n_grams if m > n)
            if frac > limit:
                return f"dup_{n}_gram", frac, hist, read
            # larger n cover a subset of these words: if no later threshold is below this
            # fraction, none can fail (see module docstring)
            later = [lim for m, lim in dup_items[k + 1 :]]
            if later and frac <= min(later):
                break
        return None, None, hist, read

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        texts = batch.column("text").to_pylist()
        quoted = (batch.column(QUOTE_LINES).to_pylist() if self.skip_quoted_repeats and QUOTE_LINES in batch.schema.names
                  else [None] * len(texts))
        reasons: list[str | None] = []
        metrics: list[float | None] = []
        columns = self.metric_columns()
        index = {name: j for j, name in enumerate(columns)}
        hists = np.full((len(texts), len(columns)), np.nan, dtype=np.float32)
        evidence: list[str | None] = []
        for i, text in enumerate(texts):
            reason, metric, hist, read = self._decide(text, quoted[i])
            reasons.append(reason)
            metrics.append(metric)
            evidence.append(repetition_evidence(reason, read) if reason is not None and read is not None else None)
            if hist is not None:
                row = hists[i]
                for name, value in hist.items():
                    j = index.get(name)
                    if j is not None:
                        row[j] = value
        mask = np.isnan(hists)
        extra = {name: pa.array(hists[:, j], type=pa.float32(), mask=mask[:, j]) for j, name in enumerate(columns)}
        return with_decision(batch, reasons, metrics, extra=extra, evidence=evidence)

    def evidence_spans(self, text: str, reason: str, value: Callable[[str], Any]) -> list[tuple[int, int]]:
        """Where what decided the removal is (the rules read again on this text): for an n-gram rule
        the runs of words its fraction counted, where the rule read them (``dup_n_gram``: each n-gram
        that repeats an earlier one, every passage, not the first time it is said; ``top_n_gram``:
        every occurrence of the top n-gram, not the same words in a quoted repeat the rule left
        out); else the places of the repeated item the evidence names (the line, the paragraph),
        wherever its words occur."""
        quoted = value(QUOTE_LINES)
        decided, _, _, read = self._decide(text, quoted, counted=False)
        if decided != reason or read is None:
            return []
        rule, n = _ngram_rule(reason)
        if rule in ("dup", "top") and n:
            places = self._word_places(text, quoted)
            runs = (_repeated_runs if rule == "dup" else _top_runs)(read.grams, n)
            # the places are the words the rules read (checked: a text they read otherwise falls back)
            if runs is not None and [text[s:e] for s, e in places] == read.words:
                return [(places[b][0], places[e - 1][1]) for b, e in zip(*runs)][:SPANS_FOUND]
        found = _repeated(reason, read)
        return [] if found is None else repetition_spans(text, found[1], whole_lines="_line_" in reason or "_para_" in reason)

    def _word_places(self, text: str, quoted: Sequence[int] | None) -> list[tuple[int, int]]:
        """Where in ``text`` each word the rules read is (:meth:`_decide`'s ``words``, in order): the
        quoted repeats' lines and a table row's markup tokens left out, as the rules leave them."""
        lines = text.split("\n")
        left_out = _quoted_repeats(lines, quoted) if quoted and self.skip_quoted_repeats else set()
        places: list[tuple[int, int]] = []
        at = 0
        for i, line in enumerate(lines):
            if i not in left_out:
                row = is_table_row(line.strip())
                places.extend((at + m.start(), at + m.end()) for m in _WORD.finditer(line)
                              if not (row and _is_markup(m.group())))
            at += len(line) + 1
        return places


class _Read(NamedTuple):
    """A text as GopherRepetition's rules read it (after table markup and quoted repeats)."""

    lines: list[str]
    paragraphs: list[str]
    words: list[str]
    grams: NGrams


def _most_repeated(items: Sequence[str], by_chars: bool) -> tuple[int, str] | None:
    """(occurrences, item) of the item repeated most: most often, or with the most characters in
    its repeats (``by_chars``); ties go to the item that occurs first. None if none repeats."""
    counts = Counter(items)
    best = None
    for item, count in counts.items():  # insertion order: first occurrence first
        if count < 2:
            continue
        score = (count - 1) * len(item) if by_chars else count
        if best is None or score > best[0]:
            best = (score, count, item)
    return None if best is None else (best[1], best[2])


def _top_ngram(grams: NGrams, words: Sequence[str], n: int) -> tuple[int, str] | None:
    """(occurrences, words) of the n-gram ``top_char_frac`` measured (ties: the first)."""
    found = grams.top(n)
    if found is None:
        return None
    start = int(grams.first(n)[found[0]])
    return found[1], " ".join(words[start:start + n])


def _top_runs(grams: NGrams, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(first words, ends) of the runs of words covered by the occurrences of the most frequent
    n-gram, in order: the words ``top_n_gram`` counts. None when no n-gram occurs twice."""
    found = grams.top(n)
    return None if found is None else _covered_runs(grams.n_words, np.flatnonzero(grams.ids(n) == found[0]), n)


def _repeated_runs(grams: NGrams, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(first words, ends) of the runs of words covered by n-grams that repeat an earlier one, in
    order: the words ``dup_n_gram`` counts. None when no n-gram repeats."""
    if grams.n_words < n:
        return None
    ids, first = grams.ids(n), grams.first(n)
    starts = np.flatnonzero(first[ids] != np.arange(len(ids)))
    return _covered_runs(grams.n_words, starts, n) if len(starts) else None


def _covered_runs(n_words: int, starts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(first words, ends) of the runs of words covered by the n-grams starting at ``starts``
    (distinct positions), in order."""
    depth = np.zeros(n_words + 1, dtype=np.int64)
    depth[starts] += 1
    depth[starts + n] -= 1
    covered = np.concatenate(([False], np.cumsum(depth[:-1]) > 0, [False]))
    change = np.flatnonzero(covered[1:] != covered[:-1])  # run starts and ends, alternating
    return change[::2], change[1::2]


def _longest_repeated_run(grams: NGrams, words: Sequence[str], n: int) -> tuple[int, str] | None:
    """(words, text) of the longest run of words covered by n-grams that repeat an earlier one:
    the passage ``dup_n_gram`` counts most of."""
    runs = _repeated_runs(grams, n)
    if runs is None:
        return None
    begins, ends = runs
    k = int(np.argmax(ends - begins))  # the first of the longest
    return int(ends[k] - begins[k]), " ".join(words[begins[k]:ends[k]])


def _ngram_rule(reason: str) -> tuple[str, int]:
    """(``"top"`` or ``"dup"``, n) of an n-gram rule's reason (``dup_5_gram``); n is 0 for another."""
    rule, _, rest = reason.partition("_")
    head = rest.split("_")[0]
    return rule, int(head) if head.isdigit() else 0


def _repeated(reason: str, read: _Read) -> tuple[int, str, bool] | None:
    """What decided a GopherRepetition removal (module docstring): ``(count, text, run)``, the
    item repeated and how often (``run``: the longest run of repeated words and its length in
    words, for ``dup_n_gram``); None when the reason is no repetition rule's or nothing repeats."""
    if reason in ("dup_line_frac", "dup_line_char_frac", "dup_para_frac", "dup_para_char_frac"):
        items = read.lines if "_line_" in reason else read.paragraphs
        found = _most_repeated(items, by_chars=reason.endswith("_char_frac"))
        return None if found is None else (*found, False)
    rule, n = _ngram_rule(reason)
    if rule == "top" and n:
        found = _top_ngram(read.grams, read.words, n)
        return None if found is None else (*found, False)
    if rule == "dup" and n:
        found = _longest_repeated_run(read.grams, read.words, n)
        return None if found is None else (*found, True)
    return None


def repetition_evidence(reason: str, read: _Read) -> str | None:
    """What in the text decided a GopherRepetition removal (module docstring), <= 120 characters."""
    found = _repeated(reason, read)
    if found is None:
        return None
    count, text, run = found
    if not run:
        return quoted_evidence(count, text)
    head = f"{count} words repeated: "
    return head + '"' + clip_evidence(text, 120 - len(head) - 2) + '"'


#: places of a repeated item located in a text (a sample's excerpt shows the first few)
SPANS_FOUND = 1000


def repetition_spans(text: str, item: str, whole_lines: bool = False, limit: int = SPANS_FOUND) -> list[tuple[int, int]]:
    """Where the words of ``item`` (a line, paragraph, n-gram or run as the rules read them: table
    markup out, whitespace collapsed) occur in ``text``, whole words, at most ``limit``: the
    separators between them may be any whitespace and table markup the rules left out.
    ``whole_lines``: only where they make whole lines (a repeated line or paragraph, not the same
    words inside another line)."""
    words = item.split()
    if not words:
        return []
    markup = rf"[{re.escape(_TABLE_MARKUP)}]+"  # a table row's markup-only tokens ("|", "---")
    space = r"[^\S\n]+" if whole_lines and "\n" not in item else r"\s+"  # a line's words stay on its line
    body = f"{space}(?:{markup}{space})*".join(map(re.escape, words))
    if whole_lines:
        pattern = rf"(?m)^[^\S\n]*(?:{markup}[^\S\n]+)*({body})(?:[^\S\n]+{markup})*[^\S\n]*$"
    else:
        pattern = rf"(?<!\S)({body})(?!\S)"
    return [m.span(1) for m in itertools.islice(re.finditer(pattern, text), limit)]


def without_quoted_repeats(text: str, quoted: Sequence[int]) -> tuple[str, int]:
    """(``text`` without the quoted lines that repeat its own text, how many lines that left out).

    ``quoted``: the numbers of the lines (``text.split("\\n")``) extraction took from a
    ``<blockquote>``. Such a line is left out when its words occur, in order, in the lines outside
    the quotes (a reply quoting an earlier post, an answer quoting the question), and only the first
    quote of those words: a passage quoted again counts as repeated, and a quote of text that is
    nowhere else (a page of one quote given 20 times) counts as any line does."""
    lines = text.split("\n")
    left_out = _quoted_repeats(lines, quoted)
    if not left_out:
        return text, 0
    return "\n".join(line for i, line in enumerate(lines) if i not in left_out), len(left_out)


def _quoted_repeats(lines: list[str], quoted: Sequence[int]) -> set[int]:
    """The numbers of the ``quoted`` lines :func:`without_quoted_repeats` leaves out."""
    marked = {i for i in quoted if 0 <= i < len(lines)}
    if not marked:
        return set()
    # the words outside the quotes, one space apart, a space at each end: a quote's words are found
    # whole, across the lines they were split into
    own = " " + " ".join(w for i, line in enumerate(lines) if i not in marked for w in line.split()) + " "
    exempt: set[str] = set()
    left_out: set[int] = set()
    for i in sorted(marked):
        words = " ".join(lines[i].split())
        if words and words not in exempt and f" {words} " in own:
            exempt.add(words)
            left_out.add(i)
    return left_out


def _is_markup(token: str) -> bool:
    """A token of a table row's markup only (``|``, ``---``, ``:--:``)."""
    return not token.strip(_TABLE_MARKUP)


def without_table_markup(text: str, rows: list[bool] | None = None) -> str:
    """``text`` with a table's markup taken out of its rows: the rule under the header row
    (``|---|---|``) goes, a row keeps its cells' words. Repetition counts content: every table
    repeats its ``|`` separators and ``---`` rules, and a meal plan of four small tables was removed
    for a repeated 8-gram of them (found by adversarial testing). Rows repeated whole still count.
    ``rows``, when given, gets whether each line of the result was a table row."""
    out = []
    for line in text.split("\n"):
        stripped = line.strip()
        row = is_table_row(stripped)
        if row:
            words = [t for t in stripped.split() if not _is_markup(t)]
            if not words:
                continue  # the rule (or an empty row)
            line = " ".join(words)
        out.append(line)
        if rows is not None:
            rows.append(row)
    return "\n".join(out)


def _row_word_weights(text: str, rows: list[bool], weight: float) -> np.ndarray:
    """The weight of each word of ``text`` (``text.split()`` order): ``weight`` on a table row's
    line (``rows``, one per line), 1 elsewhere."""
    counts = [len(line.split()) for line in text.split("\n")]
    return np.repeat(np.where(rows, weight, 1.0), counts)


def _table_markup_tokens(lines: list[str]) -> int:
    """Tokens of table markup in ``lines`` (stripped): on the rows extraction writes for a table
    (``| a | b |``: the line starts and ends with ``|``), the tokens of only ``|``, ``-`` and
    ``:``. A ``|`` elsewhere (``Home | News``, ``[edit | source]``) is a menu's separator, and
    counts as before."""
    return sum(1 for line in lines if is_table_row(line) for t in line.split() if _is_markup(t))


def quality_stats(text: str, stop_words: frozenset[str] = frozenset(STOP_WORDS)) -> dict[str, float]:
    """The quantities GopherQuality thresholds, for one non-empty document."""
    tokens = text.split()
    stripped = [t.strip(PUNCTUATION) for t in tokens]
    word_lengths = [len(s) for s in stripped if s]
    n_words = len(word_lengths)
    lines = _lines(text)
    n_lines = len(lines) or 1
    hashes = text.count("#")
    ellipses = text.count("...") + text.count("…")
    n_counted = len(tokens)
    if "|" in text:  # table markup holds no letter, so only the denominator changes
        n_counted -= _table_markup_tokens(lines)
    return {
        "words": n_words,
        "mean_word_length": (sum(word_lengths) / n_words) if n_words else 0.0,
        "symbol_word_ratio": (max(hashes, ellipses) / n_words) if n_words else float(max(hashes, ellipses) > 0),
        "bullet_lines": sum(1 for s in lines if s.startswith(BULLETS)) / n_lines,
        "ellipsis_lines": sum(1 for s in lines if s.endswith(ELLIPSES)) / n_lines,
        "alpha_words": (sum(1 for t in tokens if _ALPHA.search(t)) / n_counted) if n_counted else 0.0,
        "stop_words": len(stop_words.intersection(s.lower() for s in stripped)),
    }


#: the reason of a document that an editing step after ``gopher_quality`` (line corrections, the
#: repeated-line dedup pass) left with fewer words than the recipe's ``min_words``
TOO_SHORT_AFTER_CUTS = "too_short_after_cuts"


def word_count(text: str) -> int:
    """Words as :class:`GopherQuality` counts them for ``min_words`` (whitespace tokens holding more
    than punctuation): the measure a document edited after it is held to."""
    return sum(1 for t in text.split() if t.strip(PUNCTUATION))


class GopherQuality(Stage):
    """Remove documents that do not look like natural prose (Gopher quality filters)."""

    kind = "gopher_quality"

    METRICS = ("gopher_word_count", "gopher_mean_word_length", "gopher_symbol_word_ratio", "gopher_bullet_lines_frac",
               "gopher_ellipsis_lines_frac", "gopher_alpha_words_frac", "gopher_stop_words")
    threshold_params = {
        "gopher_word_count": ["min_words", "max_words"],
        "gopher_mean_word_length": ["min_mean_word_length", "max_mean_word_length"],
        "gopher_symbol_word_ratio": ["max_symbol_word_ratio"],
        "gopher_bullet_lines_frac": ["max_bullet_lines_frac"],
        "gopher_ellipsis_lines_frac": ["max_ellipsis_lines_frac"],
        "gopher_alpha_words_frac": ["min_alpha_words_frac"],
        "gopher_stop_words": ["min_stop_words"],
    }
    reason_metrics = {
        "too_few_words": "gopher_word_count", "too_many_words": "gopher_word_count",
        "mean_word_length": "gopher_mean_word_length", "symbol_word_ratio": "gopher_symbol_word_ratio",
        "bullet_lines": "gopher_bullet_lines_frac", "ellipsis_lines": "gopher_ellipsis_lines_frac",
        "alpha_words": "gopher_alpha_words_frac", "stop_words": "gopher_stop_words",
    }

    def __init__(
        self,
        min_words: int = 50,
        max_words: int = 100_000,
        min_mean_word_length: float = 3.0,
        max_mean_word_length: float = 10.0,
        max_symbol_word_ratio: float = 0.1,
        max_bullet_lines_frac: float = 0.9,
        max_ellipsis_lines_frac: float = 0.3,
        min_alpha_words_frac: float = 0.8,
        min_stop_words: int = 2,
        stop_words: list[str] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        checks.at_least("min_words", min_words, 0)
        checks.at_least("max_words", max_words, 1)
        checks.not_above("min_words", min_words, "max_words", max_words)
        checks.at_least("min_mean_word_length", min_mean_word_length, 0)
        checks.at_least("max_mean_word_length", max_mean_word_length, 0)
        checks.not_above("min_mean_word_length", min_mean_word_length, "max_mean_word_length", max_mean_word_length)
        checks.at_least("max_symbol_word_ratio", max_symbol_word_ratio, 0)
        for pname, value in (("max_bullet_lines_frac", max_bullet_lines_frac),
                             ("max_ellipsis_lines_frac", max_ellipsis_lines_frac),
                             ("min_alpha_words_frac", min_alpha_words_frac)):
            checks.fraction(pname, value)
        checks.at_least("min_stop_words", min_stop_words, 0)
        self.min_words = min_words
        self.max_words = max_words
        self.min_mean_word_length = min_mean_word_length
        self.max_mean_word_length = max_mean_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_frac = max_bullet_lines_frac
        self.max_ellipsis_lines_frac = max_ellipsis_lines_frac
        self.min_alpha_words_frac = min_alpha_words_frac
        self.min_stop_words = min_stop_words
        self._stop_set = frozenset(w.lower() for w in (STOP_WORDS if stop_words is None else stop_words))
        # held as the set it counts with (order, case and repeats decide nothing), so a config
        # writing them otherwise resumes a run: Gopher's own in their order (as every run has
        # fingerprinted the default), any other set sorted
        self.stop_words = list(STOP_WORDS) if self._stop_set == frozenset(STOP_WORDS) else sorted(self._stop_set)
        if min_stop_words is not None and min_stop_words > len(self._stop_set):
            # no document can pass: every one would be removed as "stop_words"
            raise ValueError(f"min_stop_words {min_stop_words} is more than the {len(self._stop_set)} distinct "
                             f"stop_words given")

    def metric_columns(self) -> list[str]:
        return list(self.METRICS)

    def check(self, text: str | None) -> tuple[str | None, float | None, dict[str, float] | None]:
        if not text or text.isspace():
            return "empty_text", None, None
        s = quality_stats(text, self._stop_set)
        n = s["words"]
        if n < self.min_words:
            return "too_few_words", float(n), s
        if n > self.max_words:
            return "too_many_words", float(n), s
        mean = s["mean_word_length"]
        if not self.min_mean_word_length <= mean <= self.max_mean_word_length:
            return "mean_word_length", mean, s
        if s["symbol_word_ratio"] > self.max_symbol_word_ratio:
            return "symbol_word_ratio", s["symbol_word_ratio"], s
        if s["bullet_lines"] > self.max_bullet_lines_frac:
            return "bullet_lines", s["bullet_lines"], s
        if s["ellipsis_lines"] > self.max_ellipsis_lines_frac:
            return "ellipsis_lines", s["ellipsis_lines"], s
        if s["alpha_words"] < self.min_alpha_words_frac:
            return "alpha_words", s["alpha_words"], s
        if s["stop_words"] < self.min_stop_words:
            return "stop_words", float(s["stop_words"]), s
        return None, None, s

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        texts = batch.column("text").to_pylist()
        reasons: list[str | None] = []
        metrics: list[float | None] = []
        cols: dict[str, list] = {name: [] for name in self.METRICS}
        for text in texts:
            reason, metric, s = self.check(text)
            reasons.append(reason)
            metrics.append(metric)
            if s is None:
                for values in cols.values():
                    values.append(None)
            else:
                cols["gopher_word_count"].append(s["words"])
                cols["gopher_mean_word_length"].append(s["mean_word_length"])
                cols["gopher_symbol_word_ratio"].append(s["symbol_word_ratio"])
                cols["gopher_bullet_lines_frac"].append(s["bullet_lines"])
                cols["gopher_ellipsis_lines_frac"].append(s["ellipsis_lines"])
                cols["gopher_alpha_words_frac"].append(s["alpha_words"])
                cols["gopher_stop_words"].append(s["stop_words"])
        extra = {
            "gopher_word_count": pa.array(cols["gopher_word_count"], type=pa.int32()),
            "gopher_mean_word_length": pa.array(cols["gopher_mean_word_length"], type=pa.float32()),
            "gopher_symbol_word_ratio": pa.array(cols["gopher_symbol_word_ratio"], type=pa.float32()),
            "gopher_bullet_lines_frac": pa.array(cols["gopher_bullet_lines_frac"], type=pa.float32()),
            "gopher_ellipsis_lines_frac": pa.array(cols["gopher_ellipsis_lines_frac"], type=pa.float32()),
            "gopher_alpha_words_frac": pa.array(cols["gopher_alpha_words_frac"], type=pa.float32()),
            "gopher_stop_words": pa.array(cols["gopher_stop_words"], type=pa.int8()),
        }
        return with_decision(batch, reasons, metrics, extra=extra)
