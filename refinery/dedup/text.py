"""Text normalization and vectorized word / shingle hashing for deduplication.

Normalization (RefinedWeb / datatrove style, plus NFKC per character): lowercase, strip
punctuation, NFD + strip accents, collapse whitespace. :func:`normalize_text` is the readable pure-Python definition; the fast path
(:func:`tokenize`) implements the same thing for a whole batch with numpy:

1. the batch's texts are joined with NUL separators and encoded once as UTF-32, so every
   codepoint is one ``uint32``;
2. one lookup in a 0x110000-entry table (:func:`fold_table`) maps each codepoint to its folded
   form (lowercase, accents removed) or to a class: ``DROP`` (accents and optional vowel points,
   :data:`DROPPED_MARKS`, and invisible format characters ``Cf`` such as soft hyphens), ``SPACE`` (punctuation ``P*``, symbols ``S*``,
   separators ``Z*``, control characters, whitespace) or ``SEP`` (the document separator);
3. word boundaries are the edges of runs of word codepoints; each word is hashed with a 64-bit
   polynomial hash computed from prefix sums (no Python loop over words), then mixed.

Why a table instead of ``str.lower`` + ``unicodedata.normalize``: those cost ~50 us per document
on the multilingual sample (more than the whole MinHash), the table is one gather. The table folds
per codepoint, so it differs from string-level NFD in two documented corner cases: the Greek final
sigma is folded like any sigma, and codepoints whose NFD is several base characters (Hangul
syllables -> jamo) stay precomposed. Both only make matching more consistent.

Every CJK ideograph and kana is a word of its own: Chinese and Japanese are written without
spaces, so whitespace "words" were whole clauses, and Chinese pages sharing a few clauses became
near-duplicates (9 of 105 real ~100-character pages were removed at a character 5-gram Jaccard of
0.41-0.50; found by adversarial testing). Their shingles are character n-grams, as is usual for
these scripts.

Shingles are word n-grams: the hash of a shingle combines its ``n`` word hashes. Documents with
fewer than ``n`` (but at least one) words get a single shingle of all their words; documents
without words get no shingles (and therefore no signature: they are never deduplicated).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("refinery.dedup.text")

#: bump when the table's semantics change, so a stale on-disk cache is rebuilt
TABLE_VERSION = 5
NUM_CODEPOINTS = 0x110000
DROP = np.uint32(0xFFFFFFFF)
SPACE = np.uint32(0xFFFFFFFE)
SEP = np.uint32(0xFFFFFFFD)
_WORD_LIMIT = np.uint32(NUM_CODEPOINTS)  # values below this are (folded) word codepoints

_U64 = np.uint64
_MASK64 = (1 << 64) - 1


# -- the reference definition ------------------------------------------------------------------
#: the combining marks normalization drops: accents (the diacritical-mark blocks, what NFD splits
#: off Latin, Greek and Cyrillic letters), the optional vowel points of Hebrew and Arabic, and the
#: kana voicing marks (as accents: "が" is "か", so text written decomposed, as macOS does, matches
#: its precomposed copy). Not the marks that are letters: Thai and Lao vowels and tone marks, Indic
#: vowel signs ("ข่าว" news and "ข้าว" rice, "कल" and "कुल" were one word, and exact dedup removed
#: different texts as copies; found by adversarial testing)
DROPPED_MARKS = ((0x0300, 0x036F), (0x0591, 0x05C7), (0x0610, 0x061A), (0x064B, 0x065F), (0x0670, 0x0670),
                 (0x06D6, 0x06ED), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x20D0, 0x20FF), (0x3099, 0x309A),
                 (0xFE20, 0xFE2F))


def _dropped_mark(ch: str) -> bool:
    cp = ord(ch)
    return unicodedata.category(ch) == "Mn" and any(lo <= cp <= hi for lo, hi in DROPPED_MARKS)


def char_class(ch: str) -> str:
    """``"drop"``, ``"space"`` or ``"word"`` for one character (the normalization's rule)."""
    cat = unicodedata.category(ch)
    if cat == "Cf" or _dropped_mark(ch):
        return "drop"
    if cat[0] in "PSZ" or cat == "Cc" or ch.isspace():
        return "space"
    return "word"


def compat_char(ch: str) -> str:
    """``ch`` under NFKC when that is one character, else ``ch`` (the class and the fold of a
    character are those of its compatibility form: half-width ``ﾞ`` is the combining voiced
    mark, an accent to drop, not a word)."""
    compat = unicodedata.normalize("NFKC", ch)
    return compat if len(compat) == 1 else ch


def fold_char(ch: str) -> str:
    """NFKC when that gives one character (fullwidth ``Ａ２`` -> ``A2``, half-width kana, compatibility
    ideographs; ligatures such as ``ﬁ``, two characters, stay), then lowercase, NFD and drop
    accents (:data:`DROPPED_MARKS`); keep ``ch`` if that leaves several characters. (Without
    NFKC a copy in fullwidth Latin, as CJK pages write it, shared no shingle with the original:
    found by adversarial testing.)"""
    ch = compat_char(ch)
    folded = unicodedata.normalize("NFD", ch.lower())
    folded = "".join(c for c in folded if not _dropped_mark(c))
    return folded if len(folded) == 1 else ch


def normalize_text(text: str) -> str:
    """The normalization every dedup method uses, as readable (slow) Python: words of the text
    after lowercasing, stripping punctuation, NFD + stripping accents, joined by single spaces."""
    out = []
    for ch in text:
        kind = char_class(compat_char(ch))
        if kind == "word":
            out.append(fold_char(ch))
        elif kind == "space":
            out.append(" ")
    return " ".join(w for w in "".join(out).split(" ") if w)


#: CJK ideographs (with extensions and compatibility forms) and kana: one word per character
CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))
_CJK_SPLIT = re.compile("([" + "".join(f"{chr(a)}-{chr(b)}" for a, b in CJK_RANGES) + "])")


def reference_words(text: str) -> list[str]:
    return [w for chunk in normalize_text(text).split(" ") for w in _CJK_SPLIT.split(chunk) if w]


def reference_shingles(text: str, ngram: int = 5) -> set[tuple[str, ...]]:
    """The set of word n-grams of a text, as the fast path defines them (for tests and figures)."""
    words = reference_words(text)
    if not words:
        return set()
    if len(words) < ngram:
        return {tuple(words)}
    return {tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)}


# -- the lookup table --------------------------------------------------------------------------
#: categories whose codepoints the table maps to themselves (words, folded as they are): unassigned,
#: private use, surrogates; 970k of the 1.1M codepoints, so the build skips their rules (9 -> ~3 s)
_AS_THEMSELVES = frozenset(("Cn", "Co", "Cs"))


def _build_table() -> np.ndarray:
    table = np.arange(NUM_CODEPOINTS, dtype=np.uint32)
    category = unicodedata.category
    for cp in range(NUM_CODEPOINTS):
        ch = chr(cp)
        if category(ch) in _AS_THEMSELVES:
            continue
        kind = char_class(compat_char(ch))
        if kind == "drop":
            table[cp] = DROP
        elif kind == "space":
            table[cp] = SPACE
        elif cp >= 0x80 or 0x41 <= cp <= 0x5A:
            table[cp] = ord(fold_char(ch))
    table[0] = SEP  # NUL separates documents (NULs inside texts are replaced by spaces first)
    return table


def _cache_dir() -> Path:
    base = os.environ.get("REFINERY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "refinery")
    return Path(base)


_TABLE: np.ndarray | None = None


def fold_table() -> np.ndarray:
    """The codepoint table, built once per machine (~1-3 s) and cached as ``.npy`` (4.4 MB)."""
    global _TABLE
    if _TABLE is not None:
        return _TABLE
    name = f"dedup-fold-v{TABLE_VERSION}-unicode{unicodedata.unidata_version}-py{sys.version_info[0]}{sys.version_info[1]}.npy"
    path = _cache_dir() / name
    table = None
    if path.is_file():
        try:
            table = np.load(path, mmap_mode=None)
            if table.shape != (NUM_CODEPOINTS,) or table.dtype != np.uint32:
                table = None
        except (OSError, ValueError):
            table = None
    if table is None:
        table = _build_table()
        try:  # atomic publish; a read-only home just means rebuilding next time
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
            with os.fdopen(fd, "wb") as f:
                np.save(f, table)
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("could not cache the fold table at %s: %s", path, exc)
    _TABLE = table
    return table


# -- hashing helpers ---------------------------------------------------------------------------
def mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer (in place on a uint64 array): a bijection with full avalanche."""
    h ^= h >> _U64(30)
    h *= _U64(0xBF58476D1CE4E5B9)
    h ^= h >> _U64(27)
    h *= _U64(0x94D049BB133111EB)
    h ^= h >> _U64(31)
    return h


def mix64_int(x: int) -> int:
    x &= _MASK64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class _Powers:
    """Powers of an odd base and of its inverse modulo 2**64, grown on demand."""

    def __init__(self, base: int) -> None:
        self.base = base | 1
        self.inverse = pow(self.base, -1, 1 << 64)
        self.pow = np.ones(1, dtype=_U64)
        self.inv = np.ones(1, dtype=_U64)

    def ensure(self, n: int) -> None:
        if len(self.pow) >= n:
            return
        size = max(n, 2 * len(self.pow), 1 << 16)
        for attr, base in (("pow", self.base), ("inv", self.inverse)):
            arr = np.empty(size, dtype=_U64)
            arr[0] = 1
            arr[1:] = _U64(base)
            np.cumprod(arr, out=arr)  # uint64 wraps: exactly arithmetic modulo 2**64
            setattr(self, attr, arr)


_POWERS: dict[int, _Powers] = {}


def _powers(seed: int) -> _Powers:
    p = _POWERS.get(seed)
    if p is None:
        p = _POWERS[seed] = _Powers(mix64_int(0x5EED_0000 + seed) | (1 << 40))
    return p


# -- the fast path -----------------------------------------------------------------------------
@dataclass
class Tokens:
    """Words of a batch of documents after normalization.

    ``word_hash[i]`` is the 64-bit hash of word ``i``; words of document ``d`` are
    ``doc_offsets[d]:doc_offsets[d+1]``. ``chars``/``starts``/``ends`` locate each word's folded
    codepoints (used by tests and by :func:`words`).
    """

    word_hash: np.ndarray  # uint64 [W]
    doc_offsets: np.ndarray  # int64 [n + 1]
    chars: np.ndarray  # uint32 folded codepoints (DROP removed) incl. SPACE/SEP
    starts: np.ndarray  # int64 [W]
    ends: np.ndarray  # int64 [W]

    @property
    def num_docs(self) -> int:
        return len(self.doc_offsets) - 1

    @property
    def words_per_doc(self) -> np.ndarray:
        return np.diff(self.doc_offsets)


def _joined_codepoints(texts: Sequence[str | None]) -> np.ndarray:
    parts = [t.replace("\x00", " ") if t and "\x00" in t else (t or "") for t in texts]
    return np.frombuffer("\x00".join(parts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def tokenize(texts: Sequence[str | None], seed: int = 0) -> Tokens:
    """Normalize and split a batch of texts into hashed words (see the module docstring)."""
    n = len(texts)
    table = fold_table()
    cp = table[_joined_codepoints(texts)]
    if (cp == DROP).any():
        cp = cp[cp != DROP]
    starts, ends = _word_spans(cp)
    word_hash = _span_hashes(cp, starts, ends, seed)
    # document of each word: how many separators precede its start
    seps = np.flatnonzero(cp == SEP)
    if len(seps) != n - 1 and n > 0:
        raise AssertionError(f"tokenize: found {len(seps)} separators for {n} documents")
    word_doc = np.searchsorted(seps, starts)
    doc_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(word_doc, minlength=n), out=doc_offsets[1:])
    return Tokens(word_hash, doc_offsets, cp, starts, ends)


#: a document longer than this is tokenized piece by piece (:func:`word_hashes`): the
#: per-character arrays of one 45 MB document took 1.8 GB against a 1 GiB budget (found by
#: adversarial testing)
LONG_DOC_CHARS = 4 * 2**20
#: the pieces' size (cut at the next whitespace)
PIECE_CHARS = 2**20
_WHITESPACE = re.compile(r"\s")


def word_hashes(texts: Sequence[str | None], seed: int = 0) -> Tokens:
    """:func:`tokenize`'s word hashes and document offsets (``chars``, ``starts`` and ``ends``
    empty), with each document over ``LONG_DOC_CHARS`` tokenized in pieces cut at whitespace,
    which no word spans: the same words as one call, with memory bounded by the piece."""
    if not any(t and len(t) > LONG_DOC_CHARS for t in texts):
        return tokenize(texts, seed=seed)
    hashes: list[np.ndarray] = []
    counts: list[int] = []
    run: list[str | None] = []

    def flush() -> None:
        if run:
            tokens = tokenize(run, seed=seed)
            hashes.append(tokens.word_hash)
            counts.extend(np.diff(tokens.doc_offsets).tolist())
            run.clear()

    for text in texts:
        if not (text and len(text) > LONG_DOC_CHARS):
            run.append(text)
            continue
        flush()
        start, n = 0, 0
        while start < len(text):
            end = min(start + PIECE_CHARS, len(text))
            if end < len(text):
                m = _WHITESPACE.search(text, end)
                end = m.start() if m else len(text)
            piece = tokenize([text[start:end]], seed=seed).word_hash
            hashes.append(piece)
            n += len(piece)
            start = end
        counts.append(n)
    flush()
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    empty = np.empty(0, np.int64)
    return Tokens(np.concatenate(hashes) if hashes else np.empty(0, np.uint64), offsets,
                  np.empty(0, np.uint32), empty, empty)


def _word_spans(cp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)`` of the words of mapped codepoints: runs of word codepoints, and each CJK
    codepoint a word of its own (it starts and ends one, and so do its neighbours)."""
    word = cp < _WORD_LIMIT
    cjk = _cjk_mask(cp)
    if cjk is None:
        # run edges of "word" codepoints: +1 where a word starts, -1 just past where it ends
        edges = np.flatnonzero(np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0)))
        return edges[0::2], edges[1::2]
    boundary = ~word | cjk
    before = np.concatenate(([True], boundary[:-1]))
    after = np.concatenate((boundary[1:], [True]))
    return np.flatnonzero(word & (before | cjk)), np.flatnonzero(word & (after | cjk)) + 1


def _cjk_mask(cp: np.ndarray) -> np.ndarray | None:
    """Which codepoints are CJK (folded codepoints of CJK characters are themselves); None when
    none is (the common case costs one comparison over the batch)."""
    if not len(cp) or not ((cp >= CJK_RANGES[0][0]) & (cp <= CJK_RANGES[-1][1])).any():
        return None  # (SPACE, SEP and DROP are above every codepoint)
    mask = np.zeros(len(cp), dtype=bool)
    for lo, hi in CJK_RANGES:
        mask |= (cp >= lo) & (cp <= hi)
    return mask if mask.any() else None


def words(tokens: Tokens) -> list[list[str]]:
    """The normalized words of each document, decoded from the fast path (for tests)."""
    out = []
    for d in range(tokens.num_docs):
        lo, hi = tokens.doc_offsets[d], tokens.doc_offsets[d + 1]
        out.append(
            [tokens.chars[s:e].astype("<u4").tobytes().decode("utf-32-le") for s, e in zip(tokens.starts[lo:hi], tokens.ends[lo:hi])]
        )
    return out


_SHINGLE_MUL = _U64(0x9E3779B97F4A7C15)


def shingle_hashes(tokens: Tokens, ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each document's word ``ngram``-grams, flat, with ``offsets`` (uint64,
    ``n + 1``): document ``d``'s shingles are ``hashes[offsets[d]:offsets[d+1]]``."""
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    wh = tokens.word_hash
    counts = tokens.words_per_doc
    W = len(wh)
    n = tokens.num_docs
    pieces: list[np.ndarray] = []
    docs: list[np.ndarray] = []
    if W >= ngram:
        m = W - ngram + 1
        h = wh[:m].copy()
        for k in range(1, ngram):
            h *= _SHINGLE_MUL
            h += wh[k : k + m]
        word_doc = np.repeat(np.arange(n, dtype=np.int64), counts)
        valid = word_doc[:m] == word_doc[ngram - 1 :]  # the n-gram stays inside one document
        pieces.append(h[valid])
        docs.append(word_doc[:m][valid])
    short = np.flatnonzero((counts > 0) & (counts < ngram))
    if len(short):  # one shingle of all the words of a short document
        first = tokens.doc_offsets[short]
        h = wh[first].copy()
        for k in range(1, ngram - 1):
            more = counts[short] > k
            nxt = np.where(more, wh[np.minimum(first + k, W - 1)], _U64(0))
            h = np.where(more, h * _SHINGLE_MUL + nxt, h)
        h += counts[short].astype(_U64)  # a 2-word document differs from its first 2 words + padding
        pieces.append(h)
        docs.append(short)
    if pieces:
        hashes = np.concatenate(pieces)
        doc_of = np.concatenate(docs)
        if len(pieces) > 1:
            order = np.argsort(doc_of, kind="stable")
            hashes, doc_of = hashes[order], doc_of[order]
        mix64(hashes)
    else:
        hashes, doc_of = np.empty(0, _U64), np.empty(0, np.int64)
    offsets = np.zeros(n + 1, dtype=_U64)
    np.cumsum(np.bincount(doc_of, minlength=n), out=offsets[1:])
    return hashes, offsets


def document_hashes(tokens: Tokens) -> tuple[np.ndarray, np.ndarray]:
    """A 64-bit hash of each document's normalized text (its word sequence), and a mask of the
    documents that have one (documents without words have none)."""
    import xxhash

    wh = tokens.word_hash
    offs = tokens.doc_offsets
    out = np.zeros(tokens.num_docs, dtype=_U64)
    raw = memoryview(wh.view(np.uint8)) if len(wh) else memoryview(b"")
    for d in range(tokens.num_docs):
        lo, hi = int(offs[d]), int(offs[d + 1])
        if hi > lo:
            out[d] = xxhash.xxh3_64_intdigest(raw[lo * 8 : hi * 8])
    return out, np.diff(offs) > 0


# -- raw whitespace tokens (exact substring dedup cuts the original text) ----------------------
_RAW_TABLE: np.ndarray | None = None


def raw_table() -> np.ndarray:
    """Identity on codepoints, except whitespace -> ``SPACE`` and NUL -> ``SEP``."""
    global _RAW_TABLE
    if _RAW_TABLE is None:
        table = np.arange(NUM_CODEPOINTS, dtype=np.uint32)
        space = [cp for cp in range(NUM_CODEPOINTS) if chr(cp).isspace()]
        table[space] = SPACE
        table[0] = SEP
        _RAW_TABLE = table
    return _RAW_TABLE


@dataclass
class RawTokens:
    """Whitespace-separated tokens of the original texts, each CJK character a token of its own
    (a Chinese paragraph was one token, so substring dedup never cut Chinese or Japanese text;
    found by adversarial testing): hashes, and codepoint offsets of each token within its
    document (Python string indices), for cutting spans out of the text."""

    token_hash: np.ndarray  # uint64 [T]
    doc_offsets: np.ndarray  # int64 [n + 1]
    starts: np.ndarray  # int64 [T], within the document
    ends: np.ndarray  # int64 [T]


def _span_hashes(cp: np.ndarray, starts: np.ndarray, ends: np.ndarray, seed: int) -> np.ndarray:
    """64-bit hashes of the codepoint spans ``cp[s:e]``, all at once.

    Polynomial hash of cp[s:e] = sum cp[k] * B**(k-s) = (C[e] - C[s]) * B**s, with C the prefix sums
    of cp[k] * B**-k (mod 2**64), then mixed.
    """
    powers = _powers(seed)
    powers.ensure(len(cp) + 1)
    prefix = np.empty(len(cp) + 1, dtype=_U64)
    prefix[0] = 0
    np.multiply(cp, powers.inv[: len(cp)], out=prefix[1:])
    np.cumsum(prefix, out=prefix)
    hashes = prefix[ends] - prefix[starts]
    hashes *= powers.pow[starts]
    mix64(hashes)
    return hashes


def raw_tokenize(texts: Sequence[str | None], seed: int = 0) -> RawTokens:
    n = len(texts)
    cp = raw_table()[_joined_codepoints(texts)]
    starts, ends = _word_spans(cp)
    token_hash = _span_hashes(cp, starts, ends, seed)
    seps = np.flatnonzero(cp == SEP)
    doc_start = np.concatenate([[0], seps + 1]).astype(np.int64)
    token_doc = np.searchsorted(seps, starts)
    doc_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(token_doc, minlength=n), out=doc_offsets[1:])
    base = doc_start[token_doc] if n else np.empty(0, np.int64)
    return RawTokens(token_hash, doc_offsets, starts - base, ends - base)
