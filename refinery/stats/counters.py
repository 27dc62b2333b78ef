"""Per-stage counters: documents, characters and words in/out, removals per reason.

"Words" are whitespace-separated words (``\\S+``), counted exactly (:mod:`refinery.stats.wordcount`). Tokens depend on the
tokenizer, so they are never claimed as counted: :func:`est_tokens` gives a labelled estimate
from characters (``CHARS_PER_TOKEN``: GPT-2 BPE averages 3.93 characters per token on the
English documents of data/sample/cc_docs, 2.64 over all 53 languages there; see docs/stats.md).

Counters are plain dicts of ints so they serialize to JSON and merge by addition across batches,
shards and jobs. The conservation invariant -- for every stage, kept + removed = read -- is
checked by :func:`check_conservation` on shard and run stats alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from refinery.stats.wordcount import word_counts

#: characters per token for the *estimated* token counts (GPT-2 BPE, English web text)
CHARS_PER_TOKEN = 4.0


def est_tokens(chars: int) -> int:
    """An estimate of BPE tokens from characters; label it as an estimate wherever shown."""
    return int(round(chars / CHARS_PER_TOKEN))


def text_sizes(batch: pa.RecordBatch | pa.Table) -> tuple[int, int]:
    """(characters, whitespace-separated words) of the ``text`` column; (0, 0) without text."""
    if "text" not in batch.schema.names or batch.num_rows == 0:
        return 0, 0
    text = batch.column("text")
    if pa.types.is_null(text.type):
        return 0, 0
    chars = pc.sum(pc.utf8_length(text)).as_py() or 0
    return int(chars), int(word_counts(text).sum())


#: what a shard marker's stage row always holds; any other field is left out when 0 (or empty)
MARKER_ROW_KEYS = ("stage", "kind", "docs_in", "docs_out")


@dataclass
class StageCounter:
    stage: str
    kind: str
    docs_in: int = 0
    docs_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    words_in: int = 0
    words_out: int = 0
    removed: dict[str, int] = field(default_factory=dict)  # reason -> docs
    removed_words: dict[str, int] = field(default_factory=dict)  # reason -> words
    removed_chars: dict[str, int] = field(default_factory=dict)  # reason -> characters
    # edits: text cut from documents the stage *kept* (line corrections, substring cuts), net of
    # anything added; documents whose text the stage created from nothing (extraction) are no edit
    docs_edited: int = 0
    chars_cut: int = 0
    words_cut: int = 0
    #: named counts the stage reported through ``Stage.take_counters()`` (e.g. PII replacements)
    counters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    #: the lines a line-cutting stage cut from documents it kept, by how often (a shard's or run's
    #: :data:`CUT_LINES_KEPT` most frequent; see :func:`record_cut_lines`)
    cut_lines: dict[str, int] = field(default_factory=dict)

    @property
    def docs_removed(self) -> int:
        return sum(self.removed.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "kind": self.kind,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "docs_removed": self.docs_removed,
            "chars_in": self.chars_in,
            "chars_out": self.chars_out,
            "words_in": self.words_in,
            "words_out": self.words_out,
            "removed": dict(sorted(self.removed.items())),
            "removed_words": dict(sorted(self.removed_words.items())),
            "removed_chars": dict(sorted(self.removed_chars.items())),
            "docs_edited": self.docs_edited,
            "chars_cut": self.chars_cut,
            "words_cut": self.words_cut,
            "counters": dict(sorted(self.counters.items())),
            "seconds": round(self.seconds, 4),
            **({"cut_lines": most_cut_lines(self.cut_lines)} if self.cut_lines else {}),
        }

    def to_marker_dict(self) -> dict[str, Any]:
        """The row as a shard marker holds it: :meth:`to_dict` without its zero counters (~0.3 KB
        of a 4-document shard's 3.4 KB filter marker), which every reader takes as 0
        (:meth:`from_dict`, :func:`check_conservation`); merged rows stay whole."""
        return {k: v for k, v in self.to_dict().items() if k in MARKER_ROW_KEYS or v not in (0, {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageCounter":
        return cls(
            stage=d["stage"],
            kind=d.get("kind", d["stage"]),
            docs_in=d["docs_in"],
            docs_out=d["docs_out"],
            chars_in=d.get("chars_in", 0),
            chars_out=d.get("chars_out", 0),
            words_in=d.get("words_in", 0),
            words_out=d.get("words_out", 0),
            removed=dict(d.get("removed", {})),
            removed_words=dict(d.get("removed_words", {})),
            removed_chars=dict(d.get("removed_chars", {})),
            docs_edited=d.get("docs_edited", 0),
            chars_cut=d.get("chars_cut", 0),
            words_cut=d.get("words_cut", 0),
            counters=dict(d.get("counters", {})),
            seconds=d.get("seconds", 0.0),
            cut_lines=dict(d.get("cut_lines", {})),
        )

    def merge(self, other: "StageCounter") -> None:
        for name in ("docs_in", "docs_out", "chars_in", "chars_out", "words_in", "words_out", "docs_edited",
                     "chars_cut", "words_cut", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for target, source in ((self.removed, other.removed), (self.removed_words, other.removed_words),
                               (self.removed_chars, other.removed_chars), (self.counters, other.counters),
                               (self.cut_lines, other.cut_lines)):
            for reason, n in source.items():
                target[reason] = target.get(reason, 0) + n


#: cut lines kept per stage in a shard's and a run's stats (the most frequent); a line is kept to
#: CUT_LINE_CHARS characters, and a shard's tally is pruned to its most frequent when it grows past
#: CUT_LINES_TALLY (lines cut once go first: the report shows what recurs)
CUT_LINES_KEPT = 100
CUT_LINE_CHARS = 200
CUT_LINES_TALLY = 20_000


def record_cut_lines(tally: dict[str, int], before: str, after: str) -> None:
    """Add to ``tally`` the lines of ``before`` that ``after`` no longer holds (as many times as
    they went), whitespace collapsed; a line that was only shortened counts as cut (its whole
    text). At most :data:`CUT_LINES_PER_DOC` lines of one document are counted."""
    from collections import Counter

    # exact lines first (C speed); only the leftovers are whitespace-collapsed and compared
    gone = Counter(before.split("\n"))
    gone.subtract(after.split("\n"))
    kept: dict[str, int] = {}
    cut: list[str] = []
    for line, n in gone.items():
        if n < 0:
            key = " ".join(line.split())
            kept[key] = kept.get(key, 0) - n
        elif n > 0:
            cut.extend([line] * n)
    tallied = 0
    for line in cut:
        key = " ".join(line.split())
        if not key:
            continue
        if kept.get(key, 0):
            kept[key] -= 1
            continue
        tallied += 1
        if tallied > CUT_LINES_PER_DOC:  # one document of a million cut lines is one document
            break
        if len(key) > CUT_LINE_KEY_CHARS:  # no partial token (half an e-mail address) at the cut
            key = key[:CUT_LINE_KEY_CHARS].rsplit(" ", 1)[0] + " …"
        tally[key] = tally.get(key, 0) + 1
        if len(tally) > CUT_LINES_TALLY:  # inside the loop: one document of 1M lines stays bounded
            _prune(tally)


#: tally keys keep this many characters (redaction needs the whole address; shown: CUT_LINE_CHARS)
CUT_LINE_KEY_CHARS = 1000
#: cut lines tallied per document (the rest of a huge document's go uncounted: time and memory)
CUT_LINES_PER_DOC = 2000


def _prune(tally: dict[str, int]) -> None:
    """Keep the CUT_LINES_TALLY // 2 most frequent; among equal counts the most recent (a stable
    sort over the insertion order would keep the shard's first singletons for ever)."""
    top = sorted(reversed(tally.items()), key=lambda kv: -kv[1])[: CUT_LINES_TALLY // 2]
    tally.clear()
    tally.update(reversed(top))


def most_cut_lines(tally: dict[str, int], n: int = CUT_LINES_KEPT) -> dict[str, int]:
    """The ``n`` most frequent cut lines, most frequent first (ties by the line), with what could
    be personal data in them redacted as a ``pii`` stage of default settings would (the lines are
    cut before it runs), then cut to CUT_LINE_CHARS (redacting first: a cut address is no longer
    recognised)."""
    from refinery.stages.pii import PiiRedactor

    redactor = _redactor(PiiRedactor)
    out: dict[str, int] = {}
    for line, count in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))[:n]:
        shown = redactor.redact(line)[0]
        if len(shown) > CUT_LINE_CHARS:  # at most CUT_LINE_CHARS with the mark: a merge cuts nothing twice
            shown = shown[: CUT_LINE_CHARS - 2].rsplit(" ", 1)[0] + " …"
        out[shown] = out.get(shown, 0) + count
    return out


_REDACTORS: dict[type, Any] = {}


def _redactor(cls: type) -> Any:
    if cls not in _REDACTORS:
        _REDACTORS[cls] = cls()
    return _REDACTORS[cls]


class ConservationError(AssertionError):
    """kept + removed != read for some stage: a document went missing (a bug)."""


def check_conservation(stages: list[dict[str, Any]]) -> None:
    """Raise if any stage lost or invented documents, or stages do not chain."""
    previous_out = None
    for s in stages:
        removed = sum((s.get("removed") or {}).values())  # left out of a marker's row when none
        if s["docs_out"] + removed != s["docs_in"]:
            raise ConservationError(
                f"stage {s['stage']}: kept {s['docs_out']} + removed {removed} != read {s['docs_in']}"
            )
        if previous_out is not None and s["docs_in"] != previous_out:
            raise ConservationError(
                f"stage {s['stage']} read {s['docs_in']} documents but the previous stage kept {previous_out}"
            )
        previous_out = s["docs_out"]


#: the first stage of every shard: which one depends on the input file's format
READER_STAGES = ("warc_reader", "parquet_reader", "jsonl_reader")


class StageListMerge:
    """Per-shard stage counter lists (same stage order) added one at a time into one list (a pass's
    markers need not all be in memory at once). Shards of different input formats have different
    readers: they merge into one reader row (``warc_reader+jsonl_reader``) so the funnel still chains."""

    def __init__(self) -> None:
        self.merged: dict[str, StageCounter] = {}
        self.order: list[str] = []
        self.readers: list[str] = []

    def add(self, stages: list[dict[str, Any]]) -> None:
        for d in stages:
            counter = StageCounter.from_dict(d)
            key = counter.stage
            if key in READER_STAGES:
                if key not in self.readers:
                    self.readers.append(key)
                key = "__reader__"
            if key not in self.merged:
                self.merged[key] = counter
                self.order.append(key)
            else:
                self.merged[key].merge(counter)

    def result(self) -> list[dict[str, Any]]:
        if "__reader__" in self.merged:
            self.merged["__reader__"].stage = "+".join(self.readers)
        return [self.merged[name].to_dict() for name in self.order]


def merge_stage_lists(lists: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Merge per-shard stage counter lists into one list (see :class:`StageListMerge`)."""
    merge = StageListMerge()
    for stages in lists:
        merge.add(stages)
    return merge.result()
