"""Run a list of stages over one shard: read, apply stages, write kept/removed Parquet + stats.

This is the only place where stages meet storage. Per shard, the output directory gets:

- ``kept/<shard>.parquet``     documents every stage kept
- ``removed/<shard>.parquet``  documents some stage removed, with ``removed_stage``,
                               ``removed_reason``, ``removed_metric`` and ``removed_evidence``
                               (nothing is lost)
- ``samples/<shard>.parquet``  a reservoir sample of removed documents per (stage, reason)
- ``stats/<shard>.json``       per-stage counters, score histograms, languages, top removed
                               domains (see docs/stats.md); written last, so it doubles as the
                               "shard finished" marker that makes re-runs skip the shard
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import posixpath
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Collection, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refinery.executors.base import TASK_SUMMARY, TaskOutcome, note_phase, summary_level
from refinery.executors.progress import shard_log_every_s
from refinery.io import fs, parquet
from refinery.io.arrow_rows import take_rows
from refinery.io.dataset import ShardFooter, write_pass_shard
from refinery.io.spool import ShardSpool, StageSpools
from refinery.rundir import PassDir
from refinery.schema import DOCUMENT_FIELDS, DOCUMENT_SCHEMA, EDIT_FIELDS, LINE_MARK_COLUMNS, InputSchemaError
from refinery.stages.base import EVIDENCE, METRIC, REASON, Stage
from refinery.stats.collector import ShardStatsCollector, StatsOptions
from refinery.stats.counters import ConservationError, StageCounter, check_conservation, record_cut_lines
from refinery.stats.wordcount import text_columns_sizes

log = logging.getLogger("refinery.runner")

WARC_SUFFIXES = (".warc", ".warc.gz")
#: Common Crawl's WET files: WARC files of text ``conversion`` records (read by the WARC reader)
WET_SUFFIXES = (".warc.wet", ".warc.wet.gz")
PARQUET_SUFFIXES = (".parquet",)
#: ``.json`` too: JSON lines, as ``.json.gz`` is (C4, Dolma); skipped, a directory of them read nothing
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".jsonl.zst", ".json.zst")
INPUT_SUFFIXES = WARC_SUFFIXES + WET_SUFFIXES + PARQUET_SUFFIXES + JSONL_SUFFIXES

#: 3: histograms in the compact marker form (Histogram.to_marker_dict); 4: stage rows without
#: their zero counters (StageCounter.to_marker_dict). Informational: every version's markers read
STATS_VERSION = 4

class StageFailed(RuntimeError):
    """A stage raised while processing a batch: the message names the stage and the error."""


#: the stage a shard's error names: StageFailed's and StageContractError's messages start so
#: and so does a dead worker's ("worker process died (OOM-killed or crashed) in stage 'x' (kind): ...")
#: (the name as Python's repr quotes it: in double quotes when it holds a ' (h170))
_FAILED_STAGE = re.compile(r"\b(?:(?:StageFailed|StageContractError): |died (?:\([^)]*\) )?in )stage "
                           r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
#: bytes of a stage's quoted name in a phase note at most: the note (executors.base, 4,096 bytes)
#: keeps its closing quote and the kind, so a longer name is cut (at a character, marked ...)
_NOTED_NAME_BYTES = 3000


def failed_stage(error: str | None) -> str | None:
    """The stage a shard failed in, from its error's first line (None: it failed outside the
    stages, reading its input or writing its outputs, or in a stage of an older message)."""
    import ast

    first = (error or "").strip().splitlines()[0] if (error or "").strip() else ""
    found = _FAILED_STAGE.search(first)
    if not found:
        return None
    try:
        return str(ast.literal_eval(found.group(1)))  # the name as given: its repr's escapes undone
    except (ValueError, SyntaxError):
        return found.group(1)[1:-1]


@functools.lru_cache(maxsize=256)
def stage_note(name: str, kind: str) -> str:
    """What a task notes while ``name`` runs (``in stage 'x' (kind)``): a name too long for the
    note is cut at a character and marked (over ~4 KB the note lost its closing quote, and a
    dead worker's ``failed/`` record its stage: h170)."""
    quoted = repr(name)
    while len(quoted.encode()) > _NOTED_NAME_BYTES:
        name = name[:max(0, len(name) * _NOTED_NAME_BYTES // len(quoted.encode()) - 2)]
        quoted = repr(name + "...")
    return f"in stage {quoted} ({kind})"


class StageContractError(RuntimeError):
    """A stage broke the contract of :mod:`refinery.stages.base` (rows, decision columns, dropped columns)."""


#: the stage decision columns the runner turns into removed_* columns (never kept)
_DECISION = (REASON, METRIC, EVIDENCE)


def _problem_with_output(batch: pa.RecordBatch, out: Any) -> str | None:
    """What is wrong with a stage's output for ``batch``, or None. Custom stages are the ones that
    get this wrong: a dropped ``text`` column was written as null text for every kept document,
    and a missing or mistyped ``_reason`` failed later with an error naming no stage."""
    if not isinstance(out, pa.RecordBatch):
        return f"returned a {type(out).__module__}.{type(out).__qualname__}, not a pyarrow.RecordBatch"
    if out.num_rows != batch.num_rows:
        return f"returned {out.num_rows} rows for {batch.num_rows}"
    dropped = [name for name in batch.schema.names if name not in out.schema.names and name not in _DECISION]
    if dropped:
        return f"dropped the column(s) {dropped}: a stage returns every column it was given (rewritten or not)"
    if REASON not in out.schema.names:
        return f"returned no {REASON!r} column (build the output with refinery.stages.base.with_decision)"
    reason_type = out.schema.field(REASON).type
    if not (pa.types.is_string(reason_type) or pa.types.is_large_string(reason_type) or pa.types.is_null(reason_type)):
        return f"returned a {REASON!r} column of type {reason_type}, not string (null = kept)"
    if METRIC in out.schema.names:
        metric_type = out.schema.field(METRIC).type
        if not (pa.types.is_floating(metric_type) or pa.types.is_integer(metric_type) or pa.types.is_null(metric_type)):
            return f"returned a {METRIC!r} column of type {metric_type}, not a number"
    if EVIDENCE in out.schema.names:
        evidence_type = out.schema.field(EVIDENCE).type
        if not (pa.types.is_string(evidence_type) or pa.types.is_large_string(evidence_type) or pa.types.is_null(evidence_type)):
            return f"returned a {EVIDENCE!r} column of type {evidence_type}, not string (null = none)"
    return None


def check_stage_output(stage: Stage, batch: pa.RecordBatch, out: Any, shard: str) -> None:
    """Raise :class:`StageContractError` naming the stage and the shard if ``out`` breaks the contract."""
    problem = _problem_with_output(batch, out)
    if problem:
        raise StageContractError(f"stage {stage.name!r} ({stage.kind or type(stage).__name__}) {problem} (shard {shard})")


@dataclass(frozen=True)
class ShardTask:
    input_uri: str
    output: PassDir | str  # the pass directory (a plain URI is read as one)
    shard: str  # output name, unique within the run
    #: the input file's version when the run was planned (mtime in ns locally, ETag on S3): the
    #: shard reads that version or fails (None: whatever is there, e.g. a manifest's files)
    version: str | None = None
    #: the driver's listing of the pass's stats/ showed no marker for this shard (or it cleared
    #: it): the task runs it without reading one, a GET (a 404) per shard per pass on S3 (session
    #: 48, h186). A marker that appeared since is only a finished shard done again, identically.
    unmarked: bool = False

    @property
    def dir(self) -> PassDir:
        return self.output if isinstance(self.output, PassDir) else PassDir(self.output)

    @property
    def output_dir(self) -> str:
        return self.dir.root

    @property
    def kept_uri(self) -> str:
        return self.dir.kept(self.shard)

    @property
    def removed_uri(self) -> str:
        return self.dir.removed(self.shard)

    @property
    def samples_uri(self) -> str:
        return self.dir.samples(self.shard)

    @property
    def stats_uri(self) -> str:
        return self.dir.stats(self.shard)


def finished_marker(task: ShardTask, fingerprint: str | Collection[str] | None = None,
                    outputs_present: bool | None = None) -> dict[str, Any] | None:
    """The shard's stats if it finished (its marker exists) for this ``fingerprint`` of the pass
    (or one of these: a plan may accept the markers of its first pass under an earlier file list,
    ``Plan.first_pass_accepts``) and its kept and removed shards are still there; a marker left by
    another configuration does not count, nor one whose outputs went missing (deleted by hand, an
    S3 lifecycle rule: the shard was skipped and its documents lost; found by adversarial testing).
    ``outputs_present``: what a caller that listed the pass's directories knows already (else two
    existence checks)."""
    found = finished_marker_text(task, fingerprint, outputs_present)
    return None if found is None else found[0]


def finished_marker_text(task: ShardTask, fingerprint: str | Collection[str] | None = None,
                         outputs_present: bool | None = None,
                         text: bytes | None = None) -> tuple[dict[str, Any], bytes] | None:
    """:func:`finished_marker` with the marker's text, which its reader hands to the pass's close
    (:meth:`PassWrites.finished`: the close then reads it no more). ``text``: the marker's text,
    known already (not read again)."""
    try:
        text = fs.read_bytes(task.stats_uri) if text is None else text
        stats = json.loads(text)
    except (fs.StorageError, FileNotFoundError, OSError, ValueError):
        return None
    accepted = (fingerprint,) if isinstance(fingerprint, str) else fingerprint
    if not isinstance(stats, dict) or (accepted is not None and stats.get("fingerprint") not in accepted):
        return None
    if outputs_present is None:
        outputs_present = fs.file_exists(task.kept_uri) and fs.file_exists(task.removed_uri)
    return (stats, text) if outputs_present else None


#: Longest shard name in UTF-8 bytes. Names become file names with a prefix and a suffix
#: (``.tmp-<32 hex>-<name>.parquet.partial``: 54 bytes more) and dedup/tokens add their own; 255 is the limit.
MAX_SHARD_NAME_BYTES = 120


def input_kind(uri: str) -> str | None:
    """``warc``, ``parquet``, ``jsonl`` by the file name's suffix (any case), else None."""
    name = uri.lower()
    for kind, suffixes in (("warc", WARC_SUFFIXES + WET_SUFFIXES), ("parquet", PARQUET_SUFFIXES), ("jsonl", JSONL_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    return None


def shard_name(input_uri: str, input_root: str) -> str:
    """A unique, filesystem-safe shard name from the input's path relative to the input root.

    A name never starts with ``.`` or ``_`` (a manifest may list ``_x.warc.gz``: its shard is
    ``shard_x``), as listings skip those. Names longer than :data:`MAX_SHARD_NAME_BYTES` (long
    file names, deep nesting) are shortened deterministically: their first bytes, ``-``, and 16
    hex digits of the SHA-256 of the full name."""
    root = input_root.rstrip("/")
    if not input_uri.startswith(root) and "://" not in root and input_uri.startswith("/") and not root.startswith("/"):
        # a relative root over an absolute listing (local listings are absolute): "in/2019/s" and
        # "in/2020/s" were both named "s", and one overwrote the other's outputs
        root = os.path.abspath(root or ".")
    rel = input_uri[len(root) :].lstrip("/") if input_uri.startswith(root) and input_uri != root else posixpath.basename(input_uri)
    for suffix in sorted(INPUT_SUFFIXES, key=len, reverse=True):
        if rel.lower().endswith(suffix):
            rel = rel[: -len(suffix)]
            break
    name = rel.replace("/", "__")
    if name.startswith((".", "_")):  # listings skip such names: the shard's outputs would be invisible
        name = "shard" + name
    encoded = name.encode("utf-8", errors="surrogateescape")
    if len(encoded) <= MAX_SHARD_NAME_BYTES:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:16]
    head = encoded[: MAX_SHARD_NAME_BYTES - 17].decode("utf-8", errors="ignore")  # whole characters only
    return f"{head}-{digest}"


@dataclass
class ReaderOptions:
    batch_size: int = 500
    max_body_bytes: int = 50 * 2**20


@dataclass
class ShardResult:
    shard: str
    skipped: bool
    stats: dict[str, Any] = field(default_factory=dict)
    #: what the shard's run wrote, for its pass's close: :data:`WRITTEN_KEY` (skipped: only the
    #: marker it found, ``{"marker": text}``)
    written: dict[str, Any] | None = None


class ShardRunner:
    """Applies ``stages`` to shards. Build once per worker process; call :meth:`run` per shard."""

    def __init__(self, stages: list[Stage], reader: ReaderOptions | None = None, log_every_s: float | None = None,
                 stats_options: StatsOptions | None = None):
        self.stages = stages
        self.reader = reader or ReaderOptions()
        self.stats_options = stats_options or StatsOptions()
        self.log_every_s = shard_log_every_s() if log_every_s is None else log_every_s

    # -- sources ---------------------------------------------------------------------------
    def _read(self, task: ShardTask, limit: int | None = None) -> tuple[str, Iterator[pa.RecordBatch], dict[str, int]]:
        """Return (reader stage name, batches (with decision columns where the reader decides),
        extra reader counters such as skipped non-document WARC records).

        ``limit`` (``--limit``) is the readers' own: each stops at that many documents, so what
        they count (skipped records, partial pages, repaired ids and text) is what the run read.
        A cut made here counted a whole last batch, and one batch more (session 51, h225).

        Every reader's ids pass through :class:`~refinery.io.ids.UniqueIds` (null ids derived,
        repeated ids suffixed), so later passes can rely on unique ids within a shard. What the
        readers repaired is counted in ``self.reader_notes`` (the shard's ``reader_notes``)."""
        from refinery.io.ids import UniqueIds

        uri = task.input_uri
        kind = input_kind(uri)
        ids = UniqueIds(task.shard)
        notes: dict[str, int] = {}
        self.reader_notes = _Notes(notes, ids)
        self.reader_counters: dict[str, int] = {}  # the reader's stage row's counters (the WARC reader's partial pages)
        self._opened: list[Any] = []  # the input stream, once open: its position is the shard's progress
        if kind == "warc":
            from refinery.io.warc import WarcReader

            reader = WarcReader(batch_size=self.reader.batch_size, max_body_bytes=self.reader.max_body_bytes)
            self.reader_counters = reader.counters
            return "warc_reader", ids(_read_warc(reader, uri, self._opened, limit)), reader.skipped_records
        if kind == "parquet":
            reader_first = self._reads_text_first()
            # checked on the footer the reader opens (a footer read of its own was a GET per shard
            # per pass on S3; session 48, h186)
            check = functools.partial(_refuse_html_only, uri, reader_first) if reader_first is not None else None
            batches = _with_document_fields(parquet.iter_input_batches(uri, self.reader.batch_size, notes, check, limit), uri)
            batches = _renamed(batches, self._stage_columns(), f"Parquet shard {uri}")
            return "parquet_reader", ids(_too_large_set_aside(batches, self.reader.max_body_bytes)), {}
        if kind == "jsonl":
            from refinery.io.jsonl import JsonlReader

            jsonl = JsonlReader(batch_size=self.reader.batch_size, max_line_bytes=self.reader.max_body_bytes)
            return "jsonl_reader", ids(_read_jsonl(jsonl, uri, task.shard, self._opened, limit)), jsonl.skipped
        raise ValueError(f"don't know how to read {uri}: expected one of {INPUT_SUFFIXES}")

    def _reads_text_first(self) -> str | None:
        """The name of the first stage that reads text when no stage before it makes text (no
        ``extract`` first), else None."""
        for stage in self.stages:
            if getattr(stage, "makes_text", False):
                return None
            if getattr(stage, "reads_text", False):
                return getattr(stage, "name", None) or type(stage).__name__
        return None

    def _stage_columns(self) -> set[str]:
        """The columns this pipeline's stages add (found by running them on an empty batch, once
        per worker), besides the document, edit and decision columns. An input column of the
        same name would be overwritten for the documents that reach the stage and kept for
        those removed before it: FineWeb's own ``language_score`` beside ours in one column, or
        a string one that could not be unified with ours (found by adversarial testing)."""
        cached = self.__dict__.get("_lazy_stage_columns")
        if cached is not None:
            return cached
        from refinery.schema import RESERVED_COLUMNS

        batch = with_edit_columns(pa.RecordBatch.from_pylist([], schema=DOCUMENT_SCHEMA), "")
        known = set(batch.schema.names) | set(RESERVED_COLUMNS)
        added: set[str] = set()
        self._stage_columns_partial = False
        for stage in self.stages:
            try:
                out = stage(batch)
            except Exception:  # noqa: BLE001 - a stage that needs real rows: its columns are not known
                self._stage_columns_partial = True
                break
            take = getattr(stage, "take_counters", None)
            if take is not None:
                take()
            added |= set(out.schema.names) - known
            batch = out
        self._lazy_stage_columns = added
        return added

    def forget_partial_stage_columns(self) -> None:
        """Probe the stages again at the next shard if a stage raised on the last probe: a runner
        reused across shards (the dedup removal) whose probe met an unreadable index file would
        otherwise keep an incomplete set for every later shard."""
        if self.__dict__.get("_stage_columns_partial"):
            self.__dict__.pop("_lazy_stage_columns", None)

    # -- one shard ---------------------------------------------------------------------------
    def _warm_up(self, schema: pa.Schema) -> None:
        for stage in self.stages:
            warm_up = getattr(stage, "warm_up", None)  # Stage's hook; a plain callable has none
            if warm_up is not None:
                warm_up(schema)

    def run(self, task: ShardTask, force: bool = False, fingerprint: str | None = None, limit: int | None = None,
            launch: str | None = None) -> ShardResult:
        """Run the stages over one shard. A shard already finished for ``fingerprint`` (the
        pass's) is skipped unless ``force``; ``limit`` reads at most that many documents;
        ``launch``: the multi-instance launch this shard is run for, recorded in its marker (a
        forced share tells this launch's shards from an earlier run's by it)."""
        # a file rewritten after the run listed it was read as its new bytes under the listed
        # version, so a later rerun trusted a shard of other content (found by adversarial testing)
        # the shard's output waits on local disk until the shard ends, not in memory; removed rows
        # wait per stage, so they are written in an order the batch size does not change
        with fs.expecting_version(task.input_uri, task.version), ShardSpool() as kept, \
                StageSpools(len(self.stages) + 1) as removed:
            return self._run(task, force, fingerprint, limit, kept, removed, launch)

    def _run(self, task: ShardTask, force: bool, fingerprint: str | None, limit: int | None, kept: ShardSpool,
             removed: StageSpools, launch: str | None = None) -> ShardResult:
        if not force and not task.unmarked:
            found = finished_marker_text(task, fingerprint)
            if found is not None:
                log.log(summary_level(), "[shard %s] already finished, skipping", task.shard, extra=TASK_SUMMARY)
                # its marker's text for the pass's close, which then reads it no more (session 50, h210)
                return ShardResult(task.shard, skipped=True, stats=found[0], written={"marker": found[1]})

        started = time.time()
        for uri in (task.kept_uri, task.removed_uri, task.samples_uri, task.stats_uri):
            fs.sweep_temporaries(uri)  # left by a worker killed mid-write on an earlier run
        reader_name, batches, reader_extra = self._read(task, limit)
        # WARC responses always carry html: start slow resources before the first (slow) read; other
        # readers' columns (and a WET file's: text, no html) are known with their first batch
        warmed = reader_name == "warc_reader" and ".wet" not in fs.basename(task.input_uri).lower()
        if warmed:
            self._warm_up(DOCUMENT_SCHEMA)
        reader_counter = StageCounter(reader_name, reader_name)
        counters = [StageCounter(s.name, s.kind) for s in self.stages]
        collector = ShardStatsCollector(task.shard, self.stages, self.stats_options)
        docs_read = 0
        last_log = started
        progress = _ShardProgress(task, self._opened)

        batches = iter(batches)
        while True:
            t_read = time.perf_counter()
            note_phase("reading its input")
            batch = next(batches, None)
            reader_counter.seconds += time.perf_counter() - t_read
            if batch is None:
                break
            if not warmed and batch.num_rows:
                # the columns this input carries: readers fill the document schema's others with nulls
                warmed = True
                self._warm_up(pa.schema([f for f, col in zip(batch.schema, batch.columns)
                                         if col.null_count < len(col)]))
            docs_read += batch.num_rows
            batch = with_edit_columns(batch, task.input_uri)
            collector.observe(reader_name, None, batch)
            # per-row (chars, words) of the text each stage sees: measured once here, carried along
            # and re-measured only after a stage changed the text
            sizes = text_columns_sizes(batch)
            batch, sizes = self._split(reader_counter, batch, sizes, removed.stage(0), reader_name,
                                       decided=REASON in batch.schema.names)
            for index, (stage, counter) in enumerate(zip(self.stages, counters), start=1):
                # Empty batches still flow through every stage so that an all-removed shard gets
                # the same kept schema (with every stage's columns) as any other shard.
                t0 = time.perf_counter()
                note_phase(stage_note(stage.name, stage.kind))
                try:
                    out = stage(batch)
                except Exception as exc:
                    # name the stage (a shard's error said only "RuntimeError: ..."); chained, so a
                    # storage or I/O error below is still retried as one
                    raise StageFailed(f"stage {stage.name!r} ({stage.kind}): {type(exc).__name__}: {exc}") from exc
                counter.seconds += time.perf_counter() - t0
                check_stage_output(stage, batch, out, task.shard)
                take = getattr(stage, "take_counters", None)
                for name, n in (take() if take is not None else {}).items():
                    counter.counters[name] = counter.counters.get(name, 0) + int(n)
                collector.observe(stage.name, batch, out)
                batch, sizes = self._split(counter, out, sizes, removed.stage(index), stage.name, decided=True, before=batch,
                                           cut_lines=stage.reports_cut_lines,
                                           makes_text=getattr(stage, "makes_text", False))
            batch = without_line_marks(batch)  # they describe this pass's texts only (schema.QUOTE_LINES)
            collector.observe_kept(batch)
            kept.append(batch)
            now = time.time()
            if now - last_log >= self.log_every_s:
                log.info("%s", progress.line(docs_read, now - started, limit))
                last_log = now

        reader_counter.counters = dict(self.reader_counters)
        note_phase("writing its outputs")
        try:
            # the corpus file last before the marker; should a write fail (a full disk), none of
            # this shard's files stays for a reader that globs kept/*.parquet (the shard is redone).
            # Local files are fsynced together and published in this order, the marker last
            with fs.published_together():
                footers = write_pass_shard(kept, removed, task.kept_uri, task.removed_uri)
                n_samples = collector.write_samples(task.samples_uri)
                stats = self._finish_stats(task, fingerprint, limit, started, docs_read, kept, removed, reader_extra,
                                           reader_counter, counters, collector, n_samples)
                if launch is not None:
                    stats["launch"] = launch
                # Compact JSON: histograms would put one number per line with indentation.
                marker = json.dumps(stats, separators=(",", ":")).encode()
                fs.write_bytes(task.stats_uri, marker)
        except BaseException:
            # the marker first: a stop that came as its write returned (on S3 the object is there
            # once the PUT lands) left a marker whose kept file this loop then deleted, a shard
            # `status` called finished with lost outputs (a Ray driver killed mid-pass: its job's
            # workers are stopped mid-task; session 47, h169). Outputs without a marker are an
            # unfinished shard, which a rerun redoes
            _clean_up_shard(task)
            raise
        elapsed = stats["seconds"]

        log.log(
            summary_level(), "[shard %s] done: %d read, %d kept, %d removed in %.1fs (%.1f docs/s)",
            task.shard, docs_read, kept.num_rows, removed.num_rows, elapsed, docs_read / max(elapsed, 1e-9),
            extra=TASK_SUMMARY,
        )
        return ShardResult(task.shard, skipped=False, stats=stats, written={"footers": footers, "marker": marker})

    def _finish_stats(self, task, fingerprint, limit, started, docs_read, kept, removed, reader_extra,  # noqa: ANN001
                      reader_counter, counters, collector, n_samples) -> dict[str, Any]:
        """The shard's stats marker (conservation checked)."""
        check_conservation([reader_counter.to_dict()] + [c.to_dict() for c in counters])
        # zero counters left out (readers take them as 0): a third of a small shard's stage rows
        stage_dicts = [reader_counter.to_marker_dict()] + [c.to_marker_dict() for c in counters]
        elapsed = time.time() - started
        stats = {
            "version": STATS_VERSION,
            "shard": task.shard,
            "fingerprint": fingerprint,
            "limit": limit,
            "input": task.input_uri,
            "docs_read": docs_read,
            "docs_kept": kept.num_rows,
            "docs_removed": removed.num_rows,
            "reader_skipped_records": dict(reader_extra),
            "reader_notes": self.reader_notes.to_dict(),
            "seconds": round(elapsed, 3),
            "stages": stage_dicts,
            **collector.to_dict(),
            "samples": {"path": task.dir.relative(task.samples_uri), "rows": n_samples},
        }
        if docs_read != kept.num_rows + removed.num_rows:
            raise ConservationError(f"shard {task.shard}: read {docs_read} != kept {kept.num_rows} + removed {removed.num_rows}")
        return stats

    @staticmethod
    def _split(
        counter: StageCounter,
        out: pa.RecordBatch,
        sizes: tuple[np.ndarray, np.ndarray],
        removed_out: ShardSpool,
        stage_name: str,
        decided: bool,
        before: pa.RecordBatch | None = None,
        cut_lines: bool = False,
        makes_text: bool = False,
    ) -> tuple[pa.RecordBatch, tuple[np.ndarray, np.ndarray]]:
        """Split a stage's output into kept rows (returned with their sizes) and removed rows
        (appended), counting.

        ``sizes`` are the per-row (characters, words) of the text the stage *saw* (``before``);
        only when the stage changed the ``text`` column is the kept text measured again, and the
        difference on documents that had text before is counted as an edit (and added to the
        documents' ``chars_cut`` / ``words_cut``)."""
        chars_rows, words_rows = sizes
        counter.docs_in += out.num_rows
        counter.chars_in += int(chars_rows.sum())
        counter.words_in += int(words_rows.sum())
        if not decided:
            counter.docs_out += out.num_rows
            counter.chars_out += int(chars_rows.sum())
            counter.words_out += int(words_rows.sum())
            return out, sizes
        reason = out.column(REASON)
        keep = pc.is_null(reason)
        keep_rows = keep.to_numpy(zero_copy_only=False)
        # nothing removed: no filter, which would copy every column (the HTML bodies before extract)
        kept = (out if reason.null_count == out.num_rows else take_rows(out, keep_rows)).drop_columns(
            [c for c in _DECISION if c in out.schema.names])
        if kept.num_rows < out.num_rows:
            drop = pc.invert(keep)
            # removed rows are written without their HTML: not copied first
            removed = (out.drop_columns(["html"]) if "html" in out.schema.names else out).filter(drop)
            reasons = removed.column(REASON).to_pylist()
            words = words_rows[~keep_rows].tolist()
            chars = chars_rows[~keep_rows].tolist()
            for r, w, c in zip(reasons, words, chars):
                counter.removed[r] = counter.removed.get(r, 0) + 1
                counter.removed_words[r] = counter.removed_words.get(r, 0) + w
                counter.removed_chars[r] = counter.removed_chars.get(r, 0) + c
            metric = removed.column(METRIC) if METRIC in removed.schema.names else pa.nulls(removed.num_rows, pa.float64())
            table = pa.Table.from_batches([removed])
            evidence = (removed.column(EVIDENCE) if EVIDENCE in removed.schema.names
                        else pa.nulls(removed.num_rows, pa.string()))
            table = table.drop_columns([c for c in (*_DECISION, "html", *LINE_MARK_COLUMNS)
                                        if c in table.column_names])
            table = table.append_column("removed_stage", pa.array([stage_name] * removed.num_rows, pa.string()))
            table = table.append_column("removed_reason", pa.array(reasons, pa.string()))
            table = table.append_column("removed_metric", pc.cast(metric, pa.float64()))
            table = table.append_column("removed_evidence", pc.cast(evidence, pa.string()))
            removed_out.append(table)
        kept_sizes = (chars_rows[keep_rows], words_rows[keep_rows])
        if before is not None and not _same_column(before, out, "text"):
            if makes_text:
                # marks the extraction wrote with its text (not passed through from before it) are its text's
                made = any(n in out.schema.names and not _same_column(before, out, n) for n in LINE_MARK_COLUMNS)
                kept, kept_sizes = _text_made(before.filter(keep), kept, marks_are_new=made)
            else:
                kept, kept_sizes = _count_edits(counter, before.filter(keep), kept, kept_sizes, cut_lines)
        counter.docs_out += kept.num_rows
        counter.chars_out += int(kept_sizes[0].sum())
        counter.words_out += int(kept_sizes[1].sum())
        return kept, kept_sizes


def _clean_up_shard(task: ShardTask) -> None:
    """Delete what a shard that raised while publishing wrote: its marker first, then its outputs.
    A marker that cannot be deleted (S3 throttling or an outage, as the stop came) keeps the outputs
    too: a marker is written after all of them, so the shard stays finished and whole, where going on
    left a marker whose kept file was gone (session 47, h173)."""
    try:
        fs.delete(task.stats_uri)
    except Exception as exc:  # noqa: BLE001 - the error that stopped the shard is the one raised
        if _may_exist(task.stats_uri):  # else none was written: the outputs go, as before
            log.warning("[shard %s] its marker could not be deleted (%s): its outputs are left with it", task.shard, exc)
            return
    for uri in (task.kept_uri, task.removed_uri, task.samples_uri):
        with contextlib.suppress(Exception):
            fs.delete(uri)


def _may_exist(uri: str) -> bool:
    """Whether the file ``uri`` is there, or cannot be told."""
    try:
        return fs.exists(uri)
    except Exception:  # noqa: BLE001 - storage unreachable: assume it is
        return True


def _same_column(a: pa.RecordBatch, b: pa.RecordBatch, name: str) -> bool:
    """Whether ``b``'s column ``name`` is ``a``'s, buffer for buffer (a stage passed it through):
    cheap, so the runner needs no declaration to know which stages changed the text."""
    if name not in a.schema.names or name not in b.schema.names:
        return (name in a.schema.names) == (name in b.schema.names)
    x, y = a.column(name), b.column(name)
    if x.type != y.type or len(x) != len(y) or x.offset != y.offset:
        return False
    return all((p is None and q is None) or (p is not None and q is not None and p.address == q.address
                                             and p.size == q.size) for p, q in zip(x.buffers(), y.buffers()))


def _text_made(seen: pa.RecordBatch, kept: pa.RecordBatch,
               marks_are_new: bool) -> tuple[pa.RecordBatch, tuple[np.ndarray, np.ndarray]]:
    """The kept rows of a stage that makes text (extraction, ``Stage.makes_text``), with their new
    sizes. Its text is made, not cut: where it replaced an input text (html and text given,
    counted by the stage as ``input_text_replaced``) that is no edit, so no ``docs_edited`` and no
    ``chars_cut`` / ``words_cut`` (they went negative: a page's text is longer than a provider's
    summary; session 47, h175). ``marks_are_new``: it made its line marks with the text, so they
    stay; marks it passed through are nulled where the text changed."""
    if not marks_are_new:
        differs = _texts_differ(seen, kept)
        if differs.any():
            kept = _line_marks_dropped(kept, differs)
    return kept, text_columns_sizes(kept)


def _texts_differ(seen: pa.RecordBatch, kept: pa.RecordBatch) -> np.ndarray:
    """Per kept row: it had a text before the stage (``seen``) and the stage changed it."""
    if "text" not in seen.schema.names or pa.types.is_null(seen.schema.field("text").type) or kept.num_rows == 0:
        return np.zeros(kept.num_rows, dtype=bool)  # text created from nothing (extraction)
    had_text = pc.is_valid(seen.column("text")).to_numpy(zero_copy_only=False)
    after = kept.column("text") if "text" in kept.schema.names else pa.nulls(kept.num_rows, pa.string())
    old = seen.column("text")
    if after.type != old.type:
        after = pc.cast(after, old.type)
    return pc.fill_null(pc.not_equal(old, after), True).to_numpy(zero_copy_only=False) & had_text


def _count_edits(counter: StageCounter, seen: pa.RecordBatch, kept: pa.RecordBatch,
                 sizes_before: tuple[np.ndarray, np.ndarray],
                 cut_lines: bool = False) -> tuple[pa.RecordBatch, tuple[np.ndarray, np.ndarray]]:
    """Measure the kept text again and count what the stage cut from documents that had text
    (``seen``: the same kept rows as the stage saw them). Returns ``kept`` with its cumulative
    ``chars_cut`` / ``words_cut`` updated, and its new sizes. ``cut_lines``: also tally the lines
    cut (``counter.cut_lines``), for a stage that cuts whole lines."""
    sizes_after = text_columns_sizes(kept)
    differs = _texts_differ(seen, kept)
    if not differs.any():
        return kept, sizes_after
    # a changed text's size difference (net: a longer placeholder counts negative)
    d_chars = np.where(differs, sizes_before[0] - sizes_after[0], 0)
    d_words = np.where(differs, sizes_before[1] - sizes_after[1], 0)
    counter.docs_edited += int(differs.sum())
    # marks made for the text before: they would name other lines
    kept = _line_marks_dropped(kept, differs)
    if cut_lines:
        rows = np.flatnonzero(differs).tolist()
        after = kept.column("text") if "text" in kept.schema.names else pa.nulls(kept.num_rows, pa.string())
        for a, b in zip(seen.column("text").take(rows).to_pylist(), after.take(rows).to_pylist()):
            record_cut_lines(counter.cut_lines, _as_str(a), _as_str(b))
    counter.chars_cut += int(d_chars.sum())
    counter.words_cut += int(d_words.sum())
    if d_chars.any() or d_words.any():
        columns = dict(zip(kept.schema.names, kept.columns))
        for name, delta in (("chars_cut", d_chars), ("words_cut", d_words)):
            previous = columns[name].to_numpy(zero_copy_only=False) if name in columns else 0
            columns[name] = pa.array(previous + delta, pa.int64())
        kept = pa.RecordBatch.from_pydict(columns)
    return kept, sizes_after


def _line_marks_dropped(batch: pa.RecordBatch, changed: np.ndarray) -> pa.RecordBatch:
    """``batch`` with null line marks (:data:`~refinery.schema.LINE_MARK_COLUMNS`) for the rows
    whose text a stage ``changed``: their numbers would name other lines now (a cut line shifts
    every line after it)."""
    names = [name for name in LINE_MARK_COLUMNS if name in batch.schema.names]
    if not names:
        return batch
    columns = dict(zip(batch.schema.names, batch.columns))
    mask = pa.array(changed)
    for name in names:
        columns[name] = pc.if_else(mask, pa.scalar(None, columns[name].type), columns[name])
    return pa.RecordBatch.from_pydict(columns)


def without_line_marks(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` without the line marks: a shard written never carries them (the next pass, line
    dedup or substring cuts, changes the text they name)."""
    present = [name for name in LINE_MARK_COLUMNS if name in batch.schema.names]
    return batch.drop_columns(present) if present else batch


def _as_str(text: str | bytes | None) -> str:
    if text is None:
        return ""
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else text


def with_edit_columns(batch: pa.RecordBatch, source: str) -> pa.RecordBatch:
    """``batch`` with the cumulative edit columns (:data:`~refinery.schema.EDIT_FIELDS`): zeros for
    fresh documents, carried over (as int64, nulls as 0) from a previous pass's kept shards."""
    columns = dict(zip(batch.schema.names, batch.columns))
    for f in EDIT_FIELDS:
        values = columns.get(f.name)
        if values is None:
            columns[f.name] = pa.array(np.zeros(batch.num_rows, dtype=np.int64), f.type)
            continue
        if values.type == f.type and not values.null_count:
            continue
        try:
            columns[f.name] = pc.fill_null(pc.cast(values, f.type), 0)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise InputSchemaError(f"{source}: column {f.name!r} is {values.type}, but refinery keeps the characters "
                                   f"and words cut from each document there (integers); rename the column") from None
    return pa.RecordBatch.from_pydict(columns)


def _refuse_html_only(uri: str, stage: str, schema: pa.Schema) -> None:
    """Raw pages (an ``html`` column, no ``text``) under stages that read text with no ``extract``
    first: the shard fails naming the file, instead of every page being removed as ``empty_text``.
    The plan refuses this from the first Parquet file's footer; the others are checked here, on
    the footer the reader opens (a mixed input whose first file had text lost the rest; found by
    adversarial testing)."""
    names = schema.names
    if "html" in names and "text" not in names:
        raise ValueError(f"{uri} holds pages (an 'html' column) without a 'text' column, and stage {stage!r} reads "
                         f"text with no 'extract' stage before it: every page would be removed as empty_text; add "
                         f"'extract' first, or give this file a text column")


def _with_document_fields(batches: Iterator[pa.RecordBatch], uri: str) -> Iterator[pa.RecordBatch]:
    """Parquet documents may carry only ``id`` and ``text``: add the other document columns as
    nulls (``source``: the shard), as the JSONL reader does, so every stage finds its columns."""
    for batch in batches:
        names = batch.schema.names
        missing = [f for f in DOCUMENT_FIELDS if f.name not in names]
        if not missing:
            yield batch
            continue
        n = batch.num_rows
        columns = dict(zip(names, batch.columns))
        for f in missing:
            columns[f.name] = pa.array([uri] * n, pa.string()) if f.name == "source" else pa.nulls(n, f.type)
        yield pa.RecordBatch.from_pydict(columns)


def _too_large_set_aside(batches: Iterator[pa.RecordBatch], max_bytes: int) -> Iterator[pa.RecordBatch]:
    """Parquet documents whose text or html is over ``reader.max_body_bytes`` are removed by the
    reader as ``body_too_large`` (the metric: their bytes), their text and html dropped, as the
    WARC and JSONL readers do: an 80 MB text went through every stage (1 min 50 s and 2.7 GB for
    one document) before ``gopher_quality`` removed it (found by adversarial testing)."""
    for batch in batches:
        sizes = None
        for name in ("text", "html"):
            if name in batch.schema.names:
                column = pc.fill_null(pc.binary_length(batch.column(name)), 0)
                sizes = column if sizes is None else pc.max_element_wise(sizes, column)
        too_large = pc.greater(sizes, max_bytes) if sizes is not None else None
        if too_large is None or not pc.any(too_large).as_py():
            yield batch
            continue
        columns = dict(zip(batch.schema.names, batch.columns))
        for name in ("text", "html"):
            if name in columns:
                columns[name] = pc.if_else(too_large, pa.scalar(None, columns[name].type), columns[name])
        columns[REASON] = pc.if_else(too_large, pa.scalar("body_too_large"), pa.scalar(None, pa.string()))
        columns[METRIC] = pc.if_else(too_large, pc.cast(sizes, pa.float64()), pa.scalar(None, pa.float64()))
        yield pa.RecordBatch.from_pydict(columns)


def _renamed(batches: Iterator[pa.RecordBatch], names: set[str], source: str) -> Iterator[pa.RecordBatch]:
    """Input columns named like a column a stage adds, as ``input_<name>`` (the input's data is
    kept; the stage's column is the stage's)."""
    for batch in batches:
        present = batch.schema.names
        if not any(n in names for n in present):
            yield batch
            continue

        def free(name: str) -> str:
            # a run over a run over a run: its first run's input_<name> is kept too, as input_<name>_2
            # (the third run failed every shard; found by adversarial testing)
            new, k = f"input_{name}", 1
            while new in present:
                k += 1
                new = f"input_{name}_{k}"
            return new

        yield batch.rename_columns([free(n) if n in names else n for n in present])


def _read_warc(reader, uri: str, opened: list | None = None, limit: int | None = None) -> Iterator[pa.RecordBatch]:
    with fs.open_input(uri, seekable=True) as stream:  # closed when the shard is done, even on error
        if opened is not None:
            opened.append(stream)
        yield from reader.read(stream, source=uri, limit=limit)


def _read_jsonl(reader, uri: str, shard: str, opened: list | None = None,
                limit: int | None = None) -> Iterator[pa.RecordBatch]:
    """JSON lines streamed line by line (``refinery.io.jsonl``; a file whose compression breaks
    keeps the lines before the break and counts the break as one ``corrupt_stream`` row)."""
    with fs.open_input(uri) as raw:
        stream = _CountingStream(raw)  # a raw input stream has no tell(): count what the reader takes
        if opened is not None:
            opened.append(stream)
        yield from reader.read(stream, source=uri, id_prefix=shard, limit=limit)


class _CountingStream:
    """``stream`` with a ``tell()`` that counts the bytes read through it (the progress of a
    non-seekable input); everything else is the stream's own."""

    def __init__(self, stream: Any) -> None:
        self._stream, self._read = stream, 0

    def read(self, *args: Any) -> bytes:
        data = self._stream.read(*args)
        self._read += len(data)
        return data

    def tell(self) -> int:
        return self._read

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _ShardProgress:
    """The within-shard progress line: pass, shard, documents read, docs/s and an ETA from the
    share of the input consumed: compressed bytes read of the file's size (WARC, JSON lines), rows
    of the file's row count (a local Parquet file), documents of ``limit``. Sizes are looked up
    the first time a line is due, so short shards pay nothing."""

    def __init__(self, task: ShardTask, opened: list[Any]) -> None:
        self.task, self.opened = task, opened
        self.pass_name = fs.basename(task.dir.root.rstrip("/")) or task.dir.root
        self._total: float | None = None
        self._looked_up = False

    def _lookup(self) -> None:
        self._looked_up = True
        uri = self.task.input_uri
        try:
            if input_kind(uri) == "parquet":
                if not fs.is_s3(uri):
                    import pyarrow.parquet as pq

                    self._total = float(pq.read_metadata(uri).num_rows)
            else:
                filesystem, path = fs.resolve(uri)
                self._total = float(filesystem.get_file_info(path).size or 0) or None
        except Exception:  # noqa: BLE001 - progress is best effort; the reader reports real errors
            self._total = None

    def fraction(self, docs_read: int, limit: int | None) -> float | None:
        """Share of the shard done, or None when it cannot be known."""
        if not self._looked_up:
            self._lookup()
        done = None
        if self._total:
            if input_kind(self.task.input_uri) == "parquet":
                done = docs_read / self._total
            elif self.opened:
                try:
                    done = self.opened[0].tell() / self._total
                except Exception:  # noqa: BLE001 - a closed or unseekable stream: no ETA
                    done = None
        if limit:
            done = max(done or 0.0, docs_read / limit)
        return None if done is None else min(max(done, 0.0), 1.0)

    def line(self, docs_read: int, elapsed: float, limit: int | None = None) -> str:
        rate = docs_read / max(elapsed, 1e-9)
        text = f"[{self.pass_name}] shard {self.task.shard}: {docs_read:,} docs read, {rate:,.1f} docs/s"
        done = self.fraction(docs_read, limit)
        if done:
            eta = elapsed * (1 - done) / done
            text += f", {100 * done:.0f}% of the input, ETA {_duration(eta)}"
        return text


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _Notes:
    """What a shard's readers repaired, for its stats (``reader_notes``)."""

    def __init__(self, notes: dict[str, int], ids) -> None:
        self._notes, self._ids = notes, ids

    def to_dict(self) -> dict[str, int]:
        return {**self._notes, **self._ids.notes()}


# -- the shard task: what a worker runs for one shard of a document pass -----------------------
_RUNNERS: dict[str, ShardRunner] = {}


def runner_for(spec: dict[str, Any]) -> ShardRunner:
    """The :class:`ShardRunner` for a pipeline spec (a config dict), built once per process so
    models and blocklists load once per worker, not once per shard."""
    from refinery.stages import registry

    key = json.dumps([spec, registry.generation], sort_keys=True, default=str)
    runner = _RUNNERS.get(key)
    if runner is None:
        from refinery.config import parse_config

        config = parse_config(spec)
        runner = ShardRunner(
            config.build_stages(),
            ReaderOptions(**config.reader.model_dump(exclude={"cc_subsets", "manifest_base"})),  # listing-only keys
            stats_options=StatsOptions(**config.stats.model_dump()),
        )
        _RUNNERS[key] = runner
    return runner


#: the sections of a shard's stats its task's result leaves out (the funnel reads them from the
#: marker): the driver holds every outcome of a pass, and these (~30 KB a shard, most of it
#: histograms) held ~1 GB of it at 4,000 shards (session 43, h130)
BULKY_STATS = ("stages", "histograms", "languages", "top_domains")


#: the key of a shard task's result that carries what it wrote (:attr:`ShardResult.written`) to
#: the driver's :class:`PassWrites`, which takes it out of the outcome
WRITTEN_KEY = "written"


def written_result(result: ShardResult) -> dict[str, Any]:
    """The part of a shard task's result that carries what it wrote (none when skipped)."""
    return {WRITTEN_KEY: result.written} if result.written is not None else {}


class PassWrites:
    """What the shard tasks a command runs in a pass wrote, taken out of their outcomes as they
    finish (``executor.map(..., on_outcome=writes)``) for the pass's close: their kept and removed
    files' footers and their markers' text, which the close no longer reads back (on S3 a GET per
    file: 3 a shard per pass; session 49, h194). The markers of shards finished before are handed
    over by whatever read them to skip the shard (:meth:`finished`: the driver, or a task's outcome
    ``skipped``), so a resumed pass's close reads none of them again either (session 50, h210);
    their footers, which nothing read, are read at the close, as are the shards of other
    instances. ``shards``: every shard of the pass."""

    def __init__(self, out: PassDir, shards: Iterable[str]) -> None:
        from refinery.stats.funnel import StreamedShardStats

        self.out = out
        self.stats = StreamedShardStats(out.stats(s) for s in shards)
        self.footers: dict[str, ShardFooter] = {}
        self._schemas: dict[pa.Schema, pa.Schema] = {}  # a pass's shards share a few schemas: one object each

    def __call__(self, outcome: TaskOutcome) -> None:
        written = outcome.result.pop(WRITTEN_KEY, None)  # not held with the pass's outcomes
        if written is None or outcome.status == "failed":
            return
        for footer in written.get("footers", ()):  # a shard skipped as finished before wrote none
            self.footers[footer.uri] = replace(footer, schema=self._schemas.setdefault(footer.schema, footer.schema))
        self.finished(outcome.name, written["marker"])

    def finished(self, shard: str, marker: bytes) -> None:
        """``shard``'s marker text, as written by a task or read to skip a shard finished before."""
        self.stats.wrote(self.out.stats(shard), marker)


def outcome_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """A shard's stats without :data:`BULKY_STATS`: what its task outcome carries."""
    return {k: v for k, v in stats.items() if k not in BULKY_STATS}


def run_shard_task(spec: dict[str, Any], task: ShardTask, force: bool = False, fingerprint: str | None = None,
                   limit: int | None = None, registered: dict[str, str] | None = None,
                   launch: str | None = None) -> dict[str, Any]:
    """Task function (see :mod:`refinery.executors.base`): run one shard; its stats, or
    ``skipped`` when it had finished already. ``registered``: the driver's own stage types
    (:func:`refinery.stages.registry.register_stage`), which a spawned worker does not inherit."""
    if registered:
        from refinery.stages.registry import register_stages

        register_stages(registered)
    result = runner_for(spec).run(task, force=force, fingerprint=fingerprint, limit=limit, launch=launch)
    return {**outcome_stats(result.stats), "skipped": result.skipped, **written_result(result)}
