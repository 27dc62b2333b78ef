"""The document schema shared by every stage and shard."""

from __future__ import annotations

import pyarrow as pa

#: Columns every document carries from the WARC reader on. Stages add metric columns
#: (e.g. ``language``, ``language_score``, ``gopher_*``) as they run.
DOCUMENT_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),  # unique within its shard (decided at read time)
    pa.field("url", pa.string()),
    pa.field("warc_record_id", pa.string()),
    pa.field("warc_date", pa.string()),  # ISO-8601 as written in the WARC header
    pa.field("content_type", pa.string()),
    pa.field("source", pa.string()),  # the input shard URI
    pa.field("html", pa.binary()),  # raw HTTP body; dropped by extraction
    pa.field("text", pa.string()),  # extracted text; null until extraction
]

DOCUMENT_SCHEMA = pa.schema(DOCUMENT_FIELDS)

#: What edits cut from a document's text so far in the run (cumulative over stages and passes:
#: line corrections, exact-substring cuts), net of anything added; 0 for unedited documents.
#: The runner adds them to every row it reads (so every shard of a pass, empty ones too, has
#: them) and updates them after each stage that changed a kept document's text. Extraction,
#: which creates the text, is not an edit.
EDIT_FIELDS: list[pa.Field] = [
    pa.field("chars_cut", pa.int64()),  # Unicode code points cut
    pa.field("words_cut", pa.int64()),  # whitespace-separated words (\S+) cut
]

#: Numbers (from 0) of the lines of ``text`` (``text.split("\n")``) that extraction took from a
#: ``<blockquote>`` (null: none known). Made by ``extract`` (trafilatura), read by
#: ``gopher_repetition`` (``skip_quoted_repeats``). A mark of a line only holds while the text is the
#: one it was made for: the runner nulls a document's marks when a stage changes its text, and
#: leaves the column out of the shards it writes (it describes a text no later pass sees).
QUOTE_LINES = "quote_lines"
#: the type of a line-marks column: line numbers
LINE_MARKS_TYPE = pa.list_(pa.int32())
#: Numbers (from 0) of the lines of ``text`` that are code: a ``<pre>``'s or ``<code>``'s text with
#: nothing else on the line (null: none known). Made by ``extract`` (trafilatura, like QUOTE_LINES),
#: read by ``line_corrections`` (``keep_code_lines``); held like QUOTE_LINES.
CODE_LINES = "code_lines"
#: columns that name lines of the text (see QUOTE_LINES)
LINE_MARK_COLUMNS: tuple[str, ...] = (QUOTE_LINES, CODE_LINES)

#: Columns the runner adds to removed documents, so a removed shard says who removed what and why.
REMOVED_FIELDS: list[pa.Field] = [
    pa.field("removed_stage", pa.string(), nullable=False),
    pa.field("removed_reason", pa.string(), nullable=False),
    pa.field("removed_metric", pa.float64()),
    # what in the document decided the removal, when the stage says (the matched banned word or
    # blocklist entry, the most repeated line or n-gram), <= 120 characters; null otherwise
    pa.field("removed_evidence", pa.string()),
]

#: The stage decision columns (``refinery.stages.base.REASON`` / ``METRIC``; spelled out here
#: because this module imports nothing above it).
DECISION_FIELDS: list[pa.Field] = [pa.field("_reason", pa.string()), pa.field("_metric", pa.float64())]
#: a stage's optional evidence column (``refinery.stages.base.EVIDENCE``), written as ``removed_evidence``
EVIDENCE_FIELD = pa.field("_evidence", pa.string())

#: What the readers yield: the document columns plus the decision columns, so reader rejects
#: (damaged records, bad JSON lines) are counted like any stage's removals.
READER_SCHEMA = pa.schema(DOCUMENT_FIELDS + DECISION_FIELDS)

#: Column names that decide or describe removals (and the line marks, which decide them too:
#: input data cannot mark its own lines as quotes). Input data never carries them under these
#: names: readers rename them to ``input_<name>`` (see :func:`rename_reserved`).
RESERVED_COLUMNS: tuple[str, ...] = (*(f.name for f in [*DECISION_FIELDS, EVIDENCE_FIELD, *REMOVED_FIELDS]),
                                     *LINE_MARK_COLUMNS)


class InputSchemaError(ValueError):
    """An input shard's columns cannot be used (one line, naming the file and the column)."""


def repeated_column(names: list[str]) -> str | None:
    """The first column name (in sorted order) that ``names`` holds more than once, or None."""
    return next(iter(sorted({n for n in names if names.count(n) > 1})), None)


def rename_reserved(names: list[str], source: str) -> dict[str, str]:
    """``{old: new}`` for the reserved columns among ``names`` (``_reason`` -> ``input__reason``):
    input data is kept, but can never decide a removal. Raises :class:`InputSchemaError` when the
    new name is taken too."""
    renames = {}
    for name in names:
        if name in RESERVED_COLUMNS:
            new = f"input_{name}"
            if new in names:
                raise InputSchemaError(f"{source}: column {name!r} is reserved and {new!r} exists too; rename one of them")
            renames[name] = new
    return renames
