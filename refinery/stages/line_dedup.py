"""``lines_dedup``: cut the boilerplate lines found by the repeated-line index
(:mod:`refinery.dedup.lines`, ``refinery dedup --method lines`` or a ``method: lines`` pass).

Every line whose normalized hash is in the index is cut (each copy, wherever it sits in the
document), except in the one document the index names as its keeper (the first holding it; with
``keep_first``, the default). RefinedWeb's line-correction rule then decides: if the cut lines hold more than
``max_removed_word_frac`` (5%) of the document's words the document is removed
(``too_many_repeated_lines``, metric: that fraction; its original text is kept for inspection),
otherwise the document is kept with the lines cut. With ``min_words_left`` (off by default) a
document over that share is kept too, its lines cut, when at least that many words remain: a
site's template around a short article. With ``min_words_after_cuts`` (off by default; a recipe
sets it to its ``gopher_quality`` ``min_words``) a document the cuts leave with fewer words than
that, counted as Gopher counts them, is removed too (``too_short_after_cuts``, metric: the words
left): it passed the recipe's minimum only with the lines cut; then the documents it cut carry their
words left in ``lines_dedup_words_after_cuts`` (int32, Gopher's count; null on the others), whose
histogram the stats draw with that minimum.

Columns on every document: ``lines_dedup_cut_lines`` (int32), ``lines_dedup_cut_chars`` (int64,
characters of text removed, separators included), ``lines_dedup_removed_frac`` (float32, words
in cut lines / words). Word counts are ``line_corrections``'s (whitespace tokens plus CJK
characters), so both 5% rules measure alike.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa

from refinery.io import fs
from refinery.stages.base import with_decision
from refinery.stages.dedup import _IndexedStage
from refinery.stages.gopher import TOO_SHORT_AFTER_CUTS, word_count
from refinery.stages.line_corrections import count_words

CUT_LINES = "lines_dedup_cut_lines"
CUT_CHARS = "lines_dedup_cut_chars"
FRAC = "lines_dedup_removed_frac"
WORDS_AFTER_CUTS = "lines_dedup_words_after_cuts"
REASON = "too_many_repeated_lines"
_BLANK_RUNS = re.compile(r"\n(?:[ \t]*\n){2,}")


class RepeatedLineCut(_IndexedStage):
    kind = "lines_dedup"
    method = "lines"
    rewrites_text = True
    reports_cut_lines = True
    reason_metrics = {REASON: FRAC, TOO_SHORT_AFTER_CUTS: WORDS_AFTER_CUTS}
    threshold_params = {FRAC: ["max_removed_word_frac"], WORDS_AFTER_CUTS: ["min_words_after_cuts"]}

    def __init__(self, dedup_dir: str, shard: str | None = None, max_removed_word_frac: float | None = None,
                 name: str | None = None) -> None:
        # the index is corpus-wide: every shard reads the same line set
        super().__init__(dedup_dir, shard, name)
        if max_removed_word_frac is not None and not 0.0 <= max_removed_word_frac <= 1.0:
            raise ValueError(f"max_removed_word_frac must be in [0, 1], got {max_removed_word_frac}")
        self.max_removed_word_frac = max_removed_word_frac

    def metric_columns(self) -> list[str]:
        # the words left only when the index sets a floor (min_words_after_cuts): else nothing is judged
        return [FRAC] + ([WORDS_AFTER_CUTS] if self._floor() is not None else [])

    def threshold_values(self) -> dict[str, Any]:
        """The thresholds it applies, the index's where its params leave them (the stats draw them)."""
        frac = self.max_removed_word_frac
        if frac is None:
            frac = float(self._manifest()["params"]["max_removed_word_frac"])
        return {"max_removed_word_frac": frac, "min_words_after_cuts": self._floor()}

    def _floor(self) -> int | None:
        floor = self._manifest()["params"].get("min_words_after_cuts")  # absent from older indexes
        return None if floor is None else int(floor)

    # loaded lazily, once per worker (dropped when pickled)
    def _index(self) -> tuple[Any, np.ndarray, np.ndarray | None, float, np.ndarray | None, int | None, int | None]:
        cached = self.__dict__.get("_lazy_index")
        if cached is None:
            from refinery.dedup.lines import LineRule, load_boilerplate_keepers

            manifest = self._manifest()
            params = manifest["params"]
            keys, keepers, keeper_shards = load_boilerplate_keepers(
                [fs.join(self.dedup_dir, p) for p in manifest["boilerplate"]])
            if not params.get("keep_first", False):  # an index from before keepers, or keep_first: false
                keepers = keeper_shards = None
            frac = self.max_removed_word_frac if self.max_removed_word_frac is not None else float(params["max_removed_word_frac"])
            left = params.get("min_words_left")  # absent from indexes made before it existed
            cached = self._lazy_index = (LineRule.from_params(params), keys, keepers, frac, keeper_shards,
                                         None if left is None else int(left), self._floor())
        return cached

    def _own_shards(self, batch: pa.RecordBatch) -> list[int | None]:
        """Each row's shard as the index numbers them (its position among the manifest's shards):
        the stage's ``shard``, else the one its ``source`` names unambiguously, else None (ids
        alone are compared)."""
        manifest = self._manifest()
        position = manifest.setdefault("_positions", {s["name"]: i for i, s in enumerate(manifest.get("shards", []))})
        if self.shard is not None:
            return [position.get(self.shard)] * batch.num_rows
        if "source" not in batch.schema.names:
            return [None] * batch.num_rows
        by_source = manifest["_sources"]

        def shard_of(source: Any) -> int | None:
            if source is None:
                return None
            name = by_source.get(source)
            if name is None:  # the same files elsewhere (a copy, a mirror): by their file name
                name = str(source).rstrip("/").rsplit("/", 1)[-1].removesuffix(".parquet")
            return position.get(name)

        return [shard_of(s) for s in batch.column("source").to_pylist()]

    def cut(self, text: str, rule: Any, keys: np.ndarray, keepers: np.ndarray | None = None,
            own_id: int | None = None, keeper_shards: np.ndarray | None = None,
            own_shard: int | None = None) -> tuple[str, int, int]:
        """``(text without boilerplate lines, lines cut, words in them)``; lines whose keeper is
        this document (``own_id``: :func:`~refinery.dedup.lines.doc_id_hash` of its id, in the
        shard ``own_shard`` when both it and the index's ``keeper_shards`` are known) stay."""
        lines = text.split("\n")
        hashes = [rule.key(line) for line in lines]
        cand = [i for i, h in enumerate(hashes) if h is not None]
        if not cand or not len(keys):
            return text, 0, 0
        h = np.array([hashes[i] for i in cand], dtype=np.uint64)
        pos = np.searchsorted(keys, h).clip(max=len(keys) - 1)
        found = keys[pos] == h
        if keepers is not None and own_id is not None:
            mine = keepers[pos] == np.uint64(own_id)
            if keeper_shards is not None and own_shard is not None:
                mine &= keeper_shards[pos] == own_shard
            found &= ~mine
        hit = {cand[j] for j in np.flatnonzero(found).tolist()}
        if not hit:
            return text, 0, 0
        words = sum(count_words(lines[i]) for i in hit)
        kept = "\n".join(line for i, line in enumerate(lines) if i not in hit)
        return _BLANK_RUNS.sub("\n\n", kept).strip(), len(hit), words

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        from refinery.dedup.lines import too_many_cut, too_short_after

        rule, keys, keepers, limit, keeper_shards, min_left, floor = self._index()
        texts = batch.column("text").to_pylist()
        if keepers is not None:
            from refinery.dedup.lines import doc_id_hash

            own_ids: list[int | None] = [doc_id_hash(i) for i in batch.column("id").to_pylist()]
        else:
            own_ids = [None] * batch.num_rows
        own_shards = self._own_shards(batch) if keeper_shards is not None else [None] * batch.num_rows
        n = len(texts)
        reasons: list[str | None] = [None] * n
        metrics: list[float | None] = [None] * n
        fracs = np.zeros(n, dtype=np.float32)
        cut_lines = np.zeros(n, dtype=np.int32)
        cut_chars = np.zeros(n, dtype=np.int64)
        words_left: list[int | None] = [None] * n  # judged by the floor (its histogram)
        new_texts: list[str | None] = list(texts)
        changed = False
        for i, text in enumerate(texts):
            if not text:
                continue
            corrected, lines, words = self.cut(text, rule, keys, keepers, own_ids[i], keeper_shards, own_shards[i])
            if not lines:
                continue
            total = count_words(text)
            frac = words / total if total else 1.0
            fracs[i], cut_lines[i], cut_chars[i] = frac, lines, len(text) - len(corrected)
            if not corrected or too_many_cut(words, total, limit, min_left):
                reasons[i], metrics[i] = REASON, frac  # removed: the original text stays for inspection
                continue
            words_left[i] = left = None if floor is None else word_count(corrected)
            if left is not None and too_short_after(lines, left, floor):
                reasons[i], metrics[i] = TOO_SHORT_AFTER_CUTS, float(left)
            else:
                new_texts[i] = corrected
                changed = True
        extra: dict[str, Any] = {CUT_LINES: pa.array(cut_lines), CUT_CHARS: pa.array(cut_chars), FRAC: pa.array(fracs)}
        if floor is not None:
            extra[WORDS_AFTER_CUTS] = pa.array(words_left, type=pa.int32())
        if changed:  # an untouched text column is passed through, so the runner need not re-measure it
            extra["text"] = pa.array(new_texts, type=batch.schema.field("text").type)
        return with_decision(batch, reasons, metrics, extra=extra)
