"""The document schema shared by every stage and shard."""

from __future__ import annotations

import pyarrow as pa

#: Columns every document carries from the WARC reader on. Stages add metric columns
#: (e.g. ``language``, ``language_score``, ``gopher_*``) as they run.
DOCUMENT_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),  # "<shard>/<record index>" stable across runs
    pa.field("url", pa.string()),
    pa.field("warc_record_id", pa.string()),
    pa.field("warc_date", pa.string()),  # ISO-8601 as written in the WARC header
    pa.field("content_type", pa.string()),
    pa.field("source", pa.string()),  # the input shard URI
    pa.field("html", pa.binary()),  # raw HTTP body; dropped by extraction
    pa.field("text", pa.string()),  # extracted text; null until extraction
]

DOCUMENT_SCHEMA = pa.schema(DOCUMENT_FIELDS)

#: Columns the runner adds to removed documents, so a removed shard says who removed what and why.
REMOVED_FIELDS: list[pa.Field] = [
    pa.field("removed_stage", pa.string(), nullable=False),
    pa.field("removed_reason", pa.string(), nullable=False),
    pa.field("removed_metric", pa.float64()),
]
