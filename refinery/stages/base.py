"""The stage contract.

A stage takes an Arrow record batch of documents and returns a batch with the *same rows in the
same order*, possibly with rewritten columns (e.g. ``text``) and added metric columns, plus a
``REASON`` column: null where the document is kept, otherwise a short snake_case reason such as
``"too_few_words"``. A stage may also add a ``METRIC`` column (float64, nullable): the value
that triggered the removal, so removed samples can show *why*; and an ``EVIDENCE`` column
(string, nullable): *what* in the document decided it, for a reader of a removed sample (the
banned word or the blocklist entry a URL matched, the line or n-gram a text repeats), cut to
:data:`EVIDENCE_CHARS`. A sample shows the text's first 500 characters, and a repetition removal
is decided by lines that may sit much further down. Evidence is computed for removed documents
only (it costs nothing on the ones kept); the runner writes it as ``removed_evidence``.

The runner (``refinery/runner.py``) splits the batch into kept and removed rows, strips the two
special columns from kept rows, tags removed rows with the stage name, and counts everything.
Stages therefore never drop rows themselves, which is what makes kept + removed = read hold.

Edits. A stage that rewrites ``text`` of documents it keeps (line corrections, substring cuts)
needs to do nothing more: the runner compares each kept document's text before and after the
stage and counts ``docs_edited``, ``chars_cut`` and ``words_cut`` for it (text a stage creates
from nothing, i.e. extraction, is no edit), and adds the cut to the document's cumulative
``chars_cut`` / ``words_cut`` columns (:data:`refinery.schema.EDIT_FIELDS`). Setting
``rewrites_text`` is a hint only: the runner detects a changed ``text`` column either way.

Counters. Besides documents, a stage may count named things it did (a PII stage: emails and
phone numbers replaced; line corrections: lines dropped). Call :meth:`Stage.count` while
processing a batch; the runner calls :meth:`Stage.take_counters` after every batch the stage
processed (empty batches included), which returns the counts since the last call and resets
them, and sums them per stage into the shard, pass and run stats (``counters`` of the stage),
the funnel, the report and ``refinery stats --compare``. Names are short snake_case strings,
values non-negative ints; they must describe *this* batch only, so a retried shard counts
again from zero.

Params. A stage keeps each constructor param it reads under the param's own name, as it runs
with it (``self.phone_region = region.upper()``; a set for values whose order and repeats do not
matter): a run's fingerprint takes the value from there (``StageConfig.effective_params``), so a
config that writes it otherwise but means the same resumes the run. A param kept under another
name, or kept as given and normalized elsewhere, is compared as written: a rerun spelling it
otherwise is refused, never mixed. A param the stage does not read at all with the others given
(``pii``'s ``phone_region`` under ``phone: false``) it names in :meth:`Stage.unread_params`: left
out of the fingerprint, so changing it resumes the run; a key of a mapping param it does not read
as ``<param>.<key>`` (``placeholders.phone``: that key alone is left out).

Stages know nothing of files, S3, Ray or SageMaker. Heavy resources (models, blocklists) are
loaded lazily on first call so that a stage object is cheap to build and to pickle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar

import pyarrow as pa

REASON = "_reason"
METRIC = "_metric"
EVIDENCE = "_evidence"
#: characters of a removal's evidence kept (a line or an n-gram longer than that is cut, with "…")
EVIDENCE_CHARS = 120


def clip_evidence(text: str, chars: int = EVIDENCE_CHARS) -> str:
    """``text`` on one line (runs of whitespace as one space), cut to ``chars`` with "…"."""
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: chars - 1] + "…"


def quoted_evidence(count: int, text: str, chars: int = EVIDENCE_CHARS) -> str:
    """``12× "Share this post"``: a repeated item and how often it occurs, the item cut to fit ``chars``."""
    head = f"{count}× "
    return head + '"' + clip_evidence(text, max(chars - len(head) - 2, 8)) + '"'


class Stage(ABC):
    """Base class for document stages. Subclasses implement :meth:`process`."""

    #: registry name, e.g. ``"gopher_quality"``; also the default stage name in stats
    kind: ClassVar[str] = ""
    #: True for stages that rewrite ``text`` (documentation only: the runner re-measures the text
    #: of any stage whose output ``text`` column is not the one it was given, buffer for buffer)
    rewrites_text: ClassVar[bool] = False
    #: True for stages that drop or cut whole lines (line corrections, repeated lines): the runner
    #: records the lines they cut most often, for the report (not for rewrites inside lines, PII)
    reports_cut_lines: ClassVar[bool] = False
    #: False for stages that decide from the URL or the raw HTML, not the text; on WARC input a
    #: stage that reads text must come after one that ``makes_text`` (checked when a run is planned)
    reads_text: ClassVar[bool] = True
    #: False for stages that never remove a document (they only rewrite text: PII redaction); the
    #: order check's refusal then says what would go wrong instead (nothing redacted)
    removes: ClassVar[bool] = True
    #: True for stages that turn ``html`` into ``text`` (extraction)
    makes_text: ClassVar[bool] = False
    #: True for stages that judge the page's ``html``, which extraction drops (the language pre-screen)
    reads_html: ClassVar[bool] = False
    #: the distributions (PyPI names) whose versions decide this stage's output: a run records
    #: them in its plan, so a resumed run refuses to mix shards made by two versions of them
    libraries: ClassVar[tuple[str, ...]] = ()
    #: params added after runs were made, each with the value that does what runs did before it:
    #: left out of the plan's fingerprint while at that value, so a run made before the param
    #: existed resumes instead of being refused for "<unset> -> None" (as the dedup passes'
    #: ``refinery.dedup.config.ADDED_SETTINGS``)
    added_params: ClassVar[dict[str, Any]] = {}
    #: params that decide how a stage runs, never what it outputs (the extraction helper's memory
    #: allocator): left out of the plan's fingerprint, so changing one resumes a run
    neutral_params: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.kind

    def unread_params(self) -> frozenset[str]:
        """The constructor params this stage never reads, given the others it was built with
        (``pii``'s ``phone_region`` with ``phone: false``): left out of the plan's fingerprint, as
        :attr:`neutral_params` are, since no value of theirs changes the output. A key of a mapping
        param is named ``<param>.<key>`` (``placeholders.phone``): only that key is left out. The
        default: none."""
        return frozenset()

    @abstractmethod
    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch with the same rows in the same order, plus the decision columns."""

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return self.process(batch)

    def metric_columns(self) -> list[str]:
        """Columns this stage adds whose values are worth a histogram in the stats."""
        return []

    def evidence_spans(self, text: str, reason: str, value: Callable[[str], Any]) -> list[tuple[int, int]]:
        """Where in ``text`` (the text this stage saw) what decided a removal for ``reason`` sits,
        as ``[start, end)`` character offsets in order: the lines a repetition rule counted, the
        lines the corrections cut. A removed sample's card shows the text around them
        (:func:`refinery.stats.samples.excerpt`): the first 500 characters often do not hold
        them. Called for the sampled removals only (a few per shard), so it may redo the
        stage's work on the one text; ``value(column)`` is the document's value of another
        input column (None without it). The default: nowhere in particular."""
        return []

    def model_files(self) -> list[Path]:
        """The files besides its params that this stage's decisions depend on (models, lexicons),
        as a run would load them now: the plan fingerprints their content, so a model retrained
        under the same path is not mixed into a resumed run. The default: none."""
        return []

    def warm_up(self, schema: pa.Schema) -> None:
        """Start slow resources in the background before the stages see a shard's first batch
        (the runner calls it once per shard it runs), e.g. a helper process that imports its
        library while the stages before this one work. ``schema``: the columns the shard's input
        carries (for WARC input, the document schema, before the first read; else the first
        batch's columns that hold a value). Must not block; the default does nothing."""

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the named counter reported with the next :meth:`take_counters`."""
        if n:
            pending = self.__dict__.setdefault("_counts", {})
            pending[name] = pending.get(name, 0) + int(n)

    def take_counters(self) -> dict[str, int]:
        """The named counts since the last call, resetting them (see the module docstring).
        The default reports what :meth:`count` recorded: ``{}`` for stages that count nothing."""
        pending = self.__dict__.get("_counts")
        if not pending:
            return {}
        self._counts = {}
        return pending

    def __getstate__(self) -> dict[str, Any]:
        # Drop lazily loaded resources (names starting with "_lazy") so stages pickle cheaply
        # to worker processes; each worker reloads them on first use.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_lazy")}


def with_decision(
    batch: pa.RecordBatch,
    reasons: list[str | None],
    metrics: list[float | None] | None = None,
    extra: dict[str, pa.Array | list] | None = None,
    evidence: list[str | None] | None = None,
) -> pa.RecordBatch:
    """Return ``batch`` plus the decision columns (and any extra metric/rewritten columns).

    ``extra`` columns replace same-named columns (e.g. a rewritten ``text``) or are appended.
    ``evidence``: what decided each removal (None for kept rows; see the module docstring).
    """
    if len(reasons) != batch.num_rows:
        raise ValueError(f"reasons has {len(reasons)} entries for {batch.num_rows} rows")
    columns = dict(zip(batch.schema.names, batch.columns))
    for name, values in (extra or {}).items():
        columns[name] = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    columns[REASON] = pa.array(reasons, type=pa.string())
    if metrics is not None:
        columns[METRIC] = pa.array(metrics, type=pa.float64())
    if evidence is not None:
        columns[EVIDENCE] = pa.array(evidence, type=pa.string())
    return pa.RecordBatch.from_pydict(columns)
