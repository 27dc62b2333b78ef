"""Per-shard statistics beyond the funnel counters: score histograms, per-language breakdown,
top removed domains per reason and a reservoir sample of removed documents per reason.

The runner calls :meth:`ShardStatsCollector.observe` with every stage's output batch *before*
splitting it (so the decision column and the stage's metric columns are still there), and
:meth:`observe_kept` with what survived the whole pipeline. Everything is vectorized with
pyarrow/numpy except per-removed-row domain counting (one cached parse per host) and building
the few rows the reservoir actually picks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refinery.io.dataset import write_shard
from refinery.stages.base import EVIDENCE, METRIC, REASON, Stage
from refinery.stats.domains import DomainCounter, top_k
from refinery.stats.histograms import Histogram, is_numeric
from refinery.stats.samples import (
    SAMPLE_SCHEMA,
    Reservoir,
    excerpt,
    html_snippet,
    metrics_json,
    seed_for,
    text_snippet,
)

UNKNOWN_LANGUAGE = "unknown"


@dataclass(frozen=True)
class StatsOptions:
    """What the runner collects per shard besides counters (see docs/stats.md)."""

    samples_per_reason: int = 20  # reservoir size per (stage, reason) per shard; 0 disables samples
    snippet_chars: int = 500  # characters of text kept per sampled document
    top_domains: int = 100  # registered domains kept per (stage, reason) per shard; 0 disables
    language_column: str = "language"
    histograms: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ShardStatsCollector:
    def __init__(self, shard: str, stages: Sequence[Stage], options: StatsOptions | None = None) -> None:
        self.shard = shard
        self.options = options or StatsOptions()
        self.stages = {s.name: s for s in stages}  # a sampled removal's evidence located by its stage
        self.metric_columns: dict[str, list[str]] = {s.name: list(s.metric_columns()) for s in stages}
        self.bins: dict[str, dict[str, list[float]]] = {}
        for s in stages:
            custom = getattr(s, "metric_bins", None)
            self.bins[s.name] = dict(custom()) if callable(custom) else {}
        self.all_metric_columns = sorted({c for cols in self.metric_columns.values() for c in cols})
        self.histograms: dict[str, dict[str, Histogram]] = {}
        self.languages: dict[str, dict[str, Any]] = {}
        self.domains: dict[str, dict[str, Counter]] = {}
        self.reservoirs: dict[tuple[str, str], Reservoir] = {}
        self._domain_counter = DomainCounter()
        #: each stage's place (a reader's: 0): what a stage first removed depends on batch
        #: boundaries, so stage-keyed outputs are written in this order, not as they came
        self._stage_order = {s.name: i for i, s in enumerate(stages, start=1)}

    # -- per stage ---------------------------------------------------------------------------
    def observe(self, stage: str, before: pa.RecordBatch | None, out: pa.RecordBatch) -> None:
        """Record a stage's decisions on one batch. ``before`` is what the stage saw (None for a
        reader that decides itself), ``out`` what it returned (with ``_reason``)."""
        if out.num_rows == 0:
            return
        if REASON not in out.schema.names:
            # a reader that decides nothing (Parquet): its documents may carry a language already (a
            # run's kept/ read by `refinery dedup`): they enter the breakdown here, or no stage counts
            # them in ("en: 0 documents, 179 kept": h183)
            self._languages(stage, before, out, None, 0)
            return
        removed_mask = pc.is_valid(out.column(REASON))
        kept_mask = pc.invert(removed_mask)
        n_removed = out.num_rows - pc.sum(pc.cast(kept_mask, pa.int64())).as_py()
        if self.options.histograms:
            self._histograms(stage, out, kept_mask, removed_mask)
        self._languages(stage, before, out, removed_mask, n_removed)
        if n_removed:
            self._removed(stage, before, out, removed_mask)

    def _histograms(self, stage: str, out: pa.RecordBatch, kept: pa.Array, removed: pa.Array) -> None:
        names = out.schema.names
        reasons = unique = None
        for column in self.metric_columns.get(stage, []):
            if column not in names or not is_numeric(out.schema.field(column).type):
                continue
            hists = self.histograms.setdefault(stage, {})
            h = hists.get(column)
            if h is None:
                h = hists[column] = Histogram.for_column(column, self.bins.get(stage, {}).get(column))
            values = out.column(column)
            h.add(values.filter(kept), "kept")
            if reasons is None:
                reasons = out.column(REASON)
                unique = [r for r in pc.unique(reasons.filter(removed)).to_pylist() if r is not None]
            for reason in unique:
                h.add(values.filter(pc.equal(reasons, reason)), "removed", reason)

    def _language_values(self, batch: pa.RecordBatch | pa.Table) -> pa.Array:
        values = batch.column(self.options.language_column)
        if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
            values = pc.cast(values, pa.string())
        return pc.fill_null(values, UNKNOWN_LANGUAGE)

    def _lang(self, language: str) -> dict[str, Any]:
        entry = self.languages.get(language)
        if entry is None:
            entry = self.languages[language] = {"docs_in": 0, "docs_kept": 0, "chars_kept": 0, "removed": {}}
        return entry

    def _languages(self, stage: str, before: pa.RecordBatch | None, out: pa.RecordBatch,
                   removed_mask: pa.Array | None, n_removed: int) -> None:
        column = self.options.language_column
        if column not in out.schema.names:
            return
        langs = self._language_values(out)
        if before is None or column not in before.schema.names:
            # first stage whose output carries a language: every document enters the breakdown here
            for item in pc.value_counts(langs).to_pylist():
                self._lang(item["values"])["docs_in"] += item["counts"]
        if n_removed:
            for item in pc.value_counts(langs.filter(removed_mask)).to_pylist():
                removed = self._lang(item["values"])["removed"]
                removed[stage] = removed.get(stage, 0) + item["counts"]

    def _removed(self, stage: str, before: pa.RecordBatch | None, out: pa.RecordBatch, mask: pa.Array) -> None:
        # positions, not filtered copies: a filter would copy every removed page's HTML (most of a
        # batch before extraction) only to read a few sampled rows
        positions = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        take = pa.array(positions, pa.int64())
        reasons = out.column(REASON).take(take).to_pylist()
        urls = out.column("url").take(take).to_pylist() if "url" in out.schema.names else [None] * len(reasons)
        by_reason: dict[str, list[int]] = {}
        for i, r in enumerate(reasons):
            by_reason.setdefault(r, []).append(i)

        stage_domains = self.domains.setdefault(stage, {}) if self.options.top_domains > 0 else {}
        for reason, rows in by_reason.items() if self.options.top_domains > 0 else ():
            stage_domains.setdefault(reason, Counter()).update(self._domain_counter.domain(urls[i]) for i in rows)

        k = self.options.samples_per_reason
        if k <= 0:
            return
        columns = _RowSource(self, stage, before if before is not None else out, out, urls, positions)
        for reason, rows in by_reason.items():
            reservoir = self.reservoirs.get((stage, reason))
            if reservoir is None:
                reservoir = self.reservoirs[(stage, reason)] = Reservoir(k, seed_for(self.shard, stage, reason))
            reservoir.offer(len(rows), lambda j, rows=rows, reason=reason: columns.row(rows[j], reason))

    # -- after the last stage ----------------------------------------------------------------
    def observe_kept(self, kept: pa.RecordBatch) -> None:
        """Documents that survived every stage (per-language kept documents and characters)."""
        column = self.options.language_column
        if kept.num_rows == 0 or column not in kept.schema.names:
            return
        langs = self._language_values(kept)
        if "text" in kept.schema.names and not pa.types.is_null(kept.schema.field("text").type):
            chars = pc.fill_null(pc.utf8_length(kept.column("text")), 0)
        else:
            chars = pa.array([0] * kept.num_rows, pa.int64())
        grouped = pa.table({"language": langs, "chars": chars}).group_by("language", use_threads=False).aggregate(
            [("chars", "sum"), ("chars", "count")]
        )
        for lang, total, n in zip(*(grouped.column(c).to_pylist() for c in ("language", "chars_sum", "chars_count"))):
            entry = self._lang(lang)
            entry["docs_kept"] += n
            entry["chars_kept"] += int(total or 0)

    # -- output ------------------------------------------------------------------------------
    def samples_table(self) -> pa.Table:
        rows: list[dict[str, Any]] = []
        for stage, reason in sorted(self.reservoirs, key=lambda key: (self._by_stage(key[0]), key[1])):
            reservoir = self.reservoirs[(stage, reason)]
            for item in reservoir.items:
                rows.append({**item, "population": reservoir.seen})
        return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)

    def write_samples(self, uri: str) -> int:
        table = self.samples_table()
        # no empty row group when nothing was removed: Hugging Face `datasets` refused the
        # directory ("BatchSize must be greater than 0"; found by reading a run's outputs)
        write_shard(table, uri)
        return table.num_rows

    def _by_stage(self, stage: str) -> int:
        return self._stage_order.get(stage, 0)

    def _in_stage_order(self, by_stage: dict[str, Any]) -> dict[str, Any]:
        return dict(sorted(by_stage.items(), key=lambda item: self._by_stage(item[0])))

    def to_dict(self) -> dict[str, Any]:
        k = self.options.top_domains
        languages = {lang: {**entry, "removed": self._in_stage_order(entry["removed"])}
                     for lang, entry in self.languages.items()}
        return {
            # the compact form (sparse counts, default edges named): markers were ~80% edges and zeros
            "histograms": {s: {c: h.to_marker_dict() for c, h in cols.items()}
                           for s, cols in self._in_stage_order(self.histograms).items()},
            "languages": {
                "column": self.options.language_column,
                "by_language": dict(sorted(languages.items(), key=lambda kv: (-kv[1]["docs_in"], kv[0]))),
            },
            "top_domains": {s: {r: top_k(c, k) for r, c in sorted(reasons.items())}
                            for s, reasons in self._in_stage_order(self.domains).items()},
            "stats_options": self.options.to_dict(),
        }


class _RowSource:
    """Builds one sample row on demand from a stage's removed rows (only for picked rows): row
    ``i`` is the ``i``-th removed row, at ``positions[i]`` of the stage's input (``seen``) and
    output (``removed``) batches."""

    def __init__(self, collector: ShardStatsCollector, stage: str, seen: pa.RecordBatch,
                 removed: pa.RecordBatch, urls: list[str | None], positions: np.ndarray) -> None:
        self.c = collector
        self.stage = stage
        self.seen = seen
        self.removed = removed
        self.urls = urls
        self.positions = positions
        self.names = set(removed.schema.names)
        self.seen_names = set(seen.schema.names)
        self.metric_names = [m for m in collector.all_metric_columns if m in self.names]

    def _value(self, batch: pa.RecordBatch, column: str, i: int) -> Any:
        return batch.column(column)[int(self.positions[i])].as_py()

    def row(self, i: int, reason: str) -> dict[str, Any]:
        opts = self.c.options
        snippet, source, chars, around = "", "", 0, None
        for batch, names in ((self.seen, self.seen_names), (self.removed, self.names)):
            if "text" in names and not pa.types.is_null(batch.schema.field("text").type):
                text = self._value(batch, "text", i)
                if text and text.strip():
                    snippet, source, chars = text_snippet(text, opts.snippet_chars), "text", len(text)
                    around = self._excerpt(text, reason, i) if batch is self.seen else None
                    break
        if not source:
            for batch, names in ((self.seen, self.seen_names), (self.removed, self.names)):
                if "html" in names and not pa.types.is_null(batch.schema.field("html").type):
                    body = self._value(batch, "html", i)
                    if body:
                        ctype = self._value(batch, "content_type", i) if "content_type" in names else None
                        snippet, source = html_snippet(bytes(body), opts.snippet_chars, ctype), "html"
                        break
        metric = self._value(self.removed, METRIC, i) if METRIC in self.names else None
        evidence = self._value(self.removed, EVIDENCE, i) if EVIDENCE in self.names else None
        language = None
        if opts.language_column in self.names:
            language = self._value(self.removed, opts.language_column, i)
            language = None if language is None else str(language)
        return {
            "shard": self.c.shard,
            "id": self._value(self.removed, "id", i) if "id" in self.names else None,
            "url": self.urls[i],
            "stage": self.stage,
            "reason": reason,
            "metric": None if metric is None else float(metric),
            "metrics": metrics_json({m: self._value(self.removed, m, i) for m in self.metric_names}),
            "evidence": evidence,
            "language": language,
            "chars": chars,
            "snippet": snippet,
            "snippet_source": source,
            "excerpt": around,
        }

    def _excerpt(self, text: str, reason: str, i: int) -> str | None:
        """The text around what decided the removal, where the stage says it sits (``evidence_spans``
        on the text it saw: the first characters often do not hold it)."""
        stage = self.c.stages.get(self.stage)
        if stage is None or self.c.options.snippet_chars <= 0:
            return None
        spans = stage.evidence_spans(text, reason, lambda column: self._value(self.seen, column, i)
                                     if column in self.seen_names else None)
        return excerpt(text, spans) if spans else None
