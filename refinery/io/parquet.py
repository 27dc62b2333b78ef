"""Parquet shards: zstd-compressed, written atomically, read with clear errors."""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.io import fs
from refinery.io.readahead import read_ahead
from refinery.schema import DOCUMENT_FIELDS, InputSchemaError, rename_reserved, repeated_column

log = logging.getLogger("refinery.io")

COMPRESSION = "zstd"


class ShardReadError(RuntimeError):
    """A Parquet shard could not be read (missing, truncated, not Parquet, wrong schema)."""


#: pyarrow's words for bytes that are not (or no longer) a Parquet file. A damaged footer is an
#: ``OSError`` ("Couldn't deserialize thrift"), which looked transient: the shard was read three
#: times (found by adversarial testing). The same bytes fail the same way on every read.
DAMAGED_MARKERS = ("Couldn't deserialize thrift", "Parquet magic bytes not found", "Parquet file size is",
                   # a damaged data page: its codec refuses the bytes (was retried 3 times; review h92)
                   "ZSTD decompression failed", "Corrupt snappy compressed data", "GZipCodec failed",
                   "Corrupt Lz4 compressed data", "LZ4 decompress failed", "Corrupt brotli compressed data")


def damaged(exc: BaseException) -> bool:
    """Whether ``exc`` is pyarrow saying a file's bytes are not a readable Parquet file (no retry helps)."""
    return isinstance(exc, (OSError, pa.ArrowInvalid)) and any(m in str(exc) for m in DAMAGED_MARKERS)


def damaged_message(uri: str, exc: BaseException) -> str:
    """One line naming the file: pyarrow's thrift error ends in the byte it read and a newline."""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(exc)).split())
    return (f"damaged Parquet file {uri}: {text} (not Parquet, or cut or overwritten: "
            "no retry reads it); replace or remove it")


def write_table(table: pa.Table, uri: str, row_group_size: int = 10_000) -> None:
    """Write ``table`` to ``uri`` atomically (readers see the whole shard or nothing).

    An empty table gets a file with its schema and no row group: ``pq.write_table`` writes one
    empty row group, on which Hugging Face ``datasets`` (5.x) fails ("BatchSize must be greater
    than 0"), so a dedup index or token ids directory holding one empty shard could not be loaded."""
    with fs.atomic_output(uri) as out:
        write_to(out, table, row_group_size)


def write_to(out: Any, table: pa.Table, row_group_size: int = 10_000) -> None:
    """Write ``table`` as Parquet into the open stream ``out`` (an empty table: schema, no row group)."""
    if table.num_rows:
        pq.write_table(table, out, compression=COMPRESSION, row_group_size=row_group_size)
    else:
        pq.ParquetWriter(out, table.schema, compression=COMPRESSION).close()


def concat(batches: Iterable[pa.RecordBatch | pa.Table], schema: pa.Schema | None = None) -> pa.Table:
    """Concatenate batches whose schemas may differ slightly (an all-null column inferred as
    ``null`` in one batch and ``string`` in another): types are promoted, missing columns filled.

    ``schema`` is the schema the result should have when no batch has rows: its columns come
    first, followed by any other columns the empty batches carry (``null`` types promoted), so
    an empty shard is never written without columns. Batches with rows ignore it."""
    tables = [b if isinstance(b, pa.Table) else pa.Table.from_batches([b]) for b in batches]
    if not tables:
        return (schema or pa.schema([])).empty_table()
    nonempty = [t for t in tables if t.num_rows]
    if not nonempty:  # keep the widest schema seen, so empty shards still carry every column
        widest = max(tables, key=lambda t: t.num_columns).slice(0, 0)
        if schema is None:
            return widest
        return pa.unify_schemas([schema, widest.schema], promote_options="permissive").empty_table()
    return pa.concat_tables(nonempty, promote_options="permissive")


def _arrow_owned(data: bytes) -> pa.Buffer:
    """``data`` copied into memory Arrow owns. A buffer over Python ``bytes`` is released by
    whichever Arrow thread drops it last, which must take the GIL: during interpreter exit
    (after an error) that thread aborted the process, "terminate called without an active
    exception" (found by adversarial testing)."""
    out = pa.BufferOutputStream()
    out.write(data)
    return out.getvalue()


def read_table(uri: str, columns: list[str] | None = None, required: Iterable[str] = ()) -> pa.Table:
    """Read a whole shard; raise :class:`ShardReadError` naming the shard and the problem."""
    return parse_table(uri, read_buffer(uri), columns, required)


def read_buffer(uri: str) -> pa.Buffer:
    """The whole shard's bytes in Arrow's memory, for :func:`parse_table` (and a caller that
    needs its schema first: one read, not a footer read and then the file's)."""
    try:
        with fs.open_input(uri, seekable=True) as f:
            # a seekable native file reads into Arrow's memory (a stream's read_buffer is Python's)
            return f.read_buffer() if isinstance(f, pa.NativeFile) and f.seekable() else _arrow_owned(f.read())
    except fs.StorageError as exc:
        raise ShardReadError(str(exc)) from exc


def read_columns(uri: str, columns: list[str], keep_row_group: Any = None) -> pa.Table:
    """``columns`` of a shard in that order, those it lacks as nulls (an empty shard is written
    without metric columns), reading only those column chunks and, with ``keep_row_group(parquet
    file, row group)``, only the row groups it accepts (the stats' what-if and dedup pairs)."""
    with fs.open_input(uri, seekable=True) as f:
        pf = pq.ParquetFile(f)
        present = [c for c in columns if c in pf.schema_arrow.names]
        groups = [g for g in range(pf.num_row_groups) if keep_row_group is None or keep_row_group(pf, g)]
        table = pf.read_row_groups(groups, columns=present) if groups else pf.schema_arrow.empty_table().select(present)
    for c in columns:
        if c not in table.column_names:
            table = table.append_column(c, pa.nulls(table.num_rows))
    return table.select(columns)


def read_table_if_any(uri: str, columns: list[str] | None = None) -> pa.Table | None:
    """:func:`read_table`, or None when there is no file at ``uri``. On S3 one GET whose 404 is
    "none" (:func:`fs.read_bytes_if_any`): a look first was a HEAD per shard of a removal pass
    (session 45, h153); a failed read is raised as :func:`read_table` raises it. Locally a stat,
    then the read, as before."""
    if not fs.is_s3(uri):
        return read_table(uri, columns) if fs.file_exists(uri) else None
    try:
        data = fs.read_bytes_if_any(uri)
    except fs.StorageError as exc:
        raise ShardReadError(str(exc)) from exc
    return None if data is None else parse_table(uri, _arrow_owned(data), columns, ())


def parse_table(uri: str, data: pa.Buffer, columns: list[str] | None = None, required: Iterable[str] = ()) -> pa.Table:
    """The Parquet file in ``data`` (``uri``'s bytes) as a table; errors as :func:`read_table` raises them."""
    try:
        table = pq.read_table(pa.BufferReader(data), columns=columns)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        if damaged(exc):
            raise ShardReadError(damaged_message(uri, exc)) from None
        raise ShardReadError(f"unreadable Parquet shard {uri}: {exc}") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ShardReadError(
            f"Parquet shard {uri} lacks required column(s) {missing}; it has {table.column_names}"
        )
    return table


def iter_batches(uri: str, batch_size: int = 1000, required: Iterable[str] = ()) -> Iterator[pa.RecordBatch]:
    table = read_table(uri, required=required)
    yield from table.to_batches(max_chunksize=batch_size)


# -- input shards: documents from outside, checked and normalised column by column -------------
#: Document columns an input may carry, and the type every later pass expects.
_INPUT_TYPES = {f.name: f.type for f in DOCUMENT_FIELDS}


#: an input batch holds about this many bytes at most: 500 rows of 5 MB texts were one 2.5 GB
#: batch, and no progress line came for 5.5 minutes (found by adversarial testing)
BATCH_BYTES = 64 * 2**20


def _rows_per_batch(pf: pq.ParquetFile, batch_size: int) -> int:
    """``batch_size``, lowered so that a batch of the largest rows (by the row groups' average,
    uncompressed) holds about ``BATCH_BYTES``."""
    meta = pf.metadata
    widest = max((meta.row_group(i).total_byte_size / meta.row_group(i).num_rows
                  for i in range(meta.num_row_groups) if meta.row_group(i).num_rows), default=0.0)
    return max(1, min(batch_size, int(BATCH_BYTES // widest))) if widest else batch_size


def iter_input_batches(uri: str, batch_size: int = 1000, notes: dict[str, int] | None = None,
                       check_schema: Callable[[pa.Schema], None] | None = None,
                       limit: int | None = None) -> Iterator[pa.RecordBatch]:
    """Batches of an *input* Parquet shard (``text`` or ``html`` required; a missing ``id`` or
    ``text`` column is read as nulls: ids are then derived by the runner, text by extraction),
    streamed row group by row group, with columns made safe for every later pass:

    - reserved columns (``_reason``, ``_metric``, ``removed_*``) are renamed ``input_<name>``,
      so input data never decides a removal;
    - document columns of another type are cast when that is safe: dictionary -> its values,
      integer ids -> strings, binary text -> UTF-8 (invalid bytes replaced; rows counted in
      ``notes["text_utf8_replaced"]``), string html -> bytes; anything else raises
      :class:`ShardReadError` in one line naming the file and the column.

    ``limit``: at most that many rows (``--limit``), cut before they are normalised, so ``notes``
    count the rows the run reads, not the rest of the last batch.
    """
    try:
        handle = fs.open_input(uri, seekable=True)
        if handle.seek(0, 2) == 0:  # a 0-byte file is an empty shard, as a 0-byte WARC or JSONL file is
            handle.close()
            yield pa.RecordBatch.from_pylist([], schema=pa.schema([pa.field("id", pa.string()), pa.field("text", pa.string())]))
            return
        handle.seek(0)
        pf = pq.ParquetFile(handle)
        schema = pf.schema_arrow
    except fs.StorageError as exc:
        raise ShardReadError(str(exc)) from exc
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        if damaged(exc):
            raise ShardReadError(damaged_message(uri, exc)) from None
        raise ShardReadError(f"unreadable Parquet shard {uri}: {exc}") from exc
    try:
        if check_schema is not None:  # the caller's check, on the footer read here (not one read more)
            check_schema(schema)
        renames, absent = check_input_schema(uri, schema)
    except BaseException:
        handle.close()
        raise
    notes = notes if notes is not None else {}
    batch_size = _rows_per_batch(pf, batch_size if limit is None else min(batch_size, limit))
    left = limit
    with handle:
        any_batch = False
        for batch in _damage_named(uri, pf.iter_batches(batch_size=batch_size)):
            if left is not None:
                batch = batch.slice(0, left)
                left -= batch.num_rows
            any_batch = True
            yield _with_columns(_normalise(batch, renames, notes), absent)
            if left == 0:
                break
        if not any_batch:  # an empty shard still has columns: one empty batch carries them through the stages
            empty = pa.RecordBatch.from_pylist([], schema=schema)
            yield _with_columns(_normalise(empty, renames, notes), absent)


def check_input_schema(uri: str, schema: pa.Schema) -> tuple[dict[str, str], list[str]]:
    """The reserved columns to rename (``{name: input_<name>}``) and the document columns absent
    (``id``, ``text``: read as nulls) of the input Parquet shard ``uri`` of ``schema``;
    :class:`ShardReadError` in one line naming the file when it cannot be read as documents. What
    :func:`iter_input_batches` checks on the footer it opens, and ``refinery run``'s plan on every
    input footer up front (:func:`footer_problems`)."""
    if "text" not in schema.names and "html" not in schema.names:
        raise ShardReadError(f"Parquet shard {uri} has neither a 'text' nor an 'html' column; it has {schema.names}")
    twice = repeated_column(schema.names)
    if twice:  # a KeyError naming no file, or one copy kept silently (found by adversarial testing)
        raise ShardReadError(f"Parquet shard {uri} has the column {twice!r} more than once; rename or drop one")
    # why: many published corpora carry no id (C4, most Hugging Face exports); a missing column is
    # read as null ids, which the runner derives as <shard>/<row> (refinery.io.ids), as for JSONL
    absent = [c for c in ("id", "text") if c not in schema.names]
    try:
        renames = rename_reserved(schema.names, f"Parquet shard {uri}")
    except InputSchemaError as exc:
        raise ShardReadError(str(exc)) from None
    check_document_types(uri, schema)
    return renames, absent


def schema_and_metadata(uri: str, data: pa.Buffer | None = None) -> tuple[pa.Schema, pq.FileMetaData]:
    """The Arrow schema and the Parquet metadata of the file ``uri`` from its footer alone
    (``data``: the file's bytes, when read already); on S3 one ranged GET
    (:func:`fs.open_parquet_input`, no HEAD). A damaged file is :class:`ShardReadError` in one line
    naming it (no retry reads it); other errors (a network read) are raised as they are."""
    try:
        if data is not None:
            pf = pq.ParquetFile(pa.BufferReader(data))
            return pf.schema_arrow, pf.metadata
        with fs.open_parquet_input(uri) as f:
            pf = pq.ParquetFile(f)
            return pf.schema_arrow, pf.metadata
    except (OSError, pa.ArrowInvalid) as exc:
        if damaged(exc):  # the final line named the shard, not the file (found by adversarial testing)
            raise ShardReadError(damaged_message(uri, exc)) from None
        raise


def footer_problems(uris: Iterable[str], check: Callable[[str, pa.Schema, pq.FileMetaData], None]
                    ) -> Iterator[tuple[str, str | None]]:
    """``(uri, why)`` for each of ``uris``, in their order: ``why`` the one line of a damaged footer
    or of the :class:`ShardReadError` ``check(uri, schema, metadata)`` raises, else None. Footers only, read
    :data:`~refinery.io.readahead.READ_THREADS` at once (on S3 a ranged GET each: moto 1,000 in
    ~5 s, h178); a failure of another kind (the network) is raised. ``refinery dedup`` checks its
    shards' columns with it, ``refinery run`` its input files."""

    def one(uri: str) -> tuple[str, str | None]:
        try:
            check(uri, *schema_and_metadata(uri))
        except ShardReadError as exc:
            return uri, str(exc)
        return uri, None

    uris = list(uris)
    return _with_progress(read_ahead(one, uris), len(uris))


def _with_progress(results: Iterator[tuple[str, str | None]], total: int) -> Iterator[tuple[str, str | None]]:
    """``results``, with a line every ``REFINERY_PROGRESS_LOG_EVERY_S`` while they last: 100,000
    footers on S3 take minutes before the first shard starts, which were silent (session 49)."""
    import time

    from refinery.executors.progress import progress_log_every_s

    every, started = progress_log_every_s(), time.monotonic()
    last = started
    for done, result in enumerate(results, 1):
        yield result
        now = time.monotonic()
        if now - last >= every and done < total:
            last, rate = now, done / max(now - started, 1e-9)
            log.info("checked %d of %d Parquet footers (%.0f/s, ETA %.0fs)", done, total, rate, (total - done) / rate)


def _damage_named(uri: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``batches``, a damaged page past the footer raised as one line naming the file (pyarrow's
    own error named no file, and a codec's was retried as transient; review h92). Other errors
    (a network read) pass as they are: a retry may read them."""
    try:
        yield from batches
    except (OSError, pa.ArrowInvalid) as exc:
        if damaged(exc):
            raise ShardReadError(damaged_message(uri, exc)) from None
        raise


def _with_columns(batch: pa.RecordBatch, absent: list[str]) -> pa.RecordBatch:
    """``batch`` with an all-null column of the document type for each name in ``absent``."""
    for name in absent:
        batch = batch.append_column(pa.field(name, _INPUT_TYPES[name]), pa.nulls(batch.num_rows, _INPUT_TYPES[name]))
    return batch


def check_document_types(uri: str, schema: pa.Schema) -> None:
    """:class:`ShardReadError` in one line naming the file and column unless every document column
    of ``schema`` (``id``, ``text``, ``url``, ...) can be read as its document type."""
    for name in schema.names:
        if name in _INPUT_TYPES:
            _check_castable(uri, name, schema.field(name).type)


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _check_castable(uri: str, name: str, t: pa.DataType) -> None:
    target, v = _INPUT_TYPES[name], _value_type(t)
    stringish = pa.types.is_string(v) or pa.types.is_large_string(v) or pa.types.is_string_view(v)
    binaryish = pa.types.is_binary(v) or pa.types.is_large_binary(v) or pa.types.is_binary_view(v)
    ok = pa.types.is_null(v) or (
        (target == pa.string() and (stringish or binaryish or (name == "id" and pa.types.is_integer(v))))
        or (target == pa.binary() and (stringish or binaryish))
    )
    if not ok:
        kind = "strings" if target == pa.string() else "bytes"
        raise ShardReadError(f"Parquet shard {uri}: column {name!r} has type {t}; expected {kind}")


def _normalise(batch: pa.RecordBatch, renames: dict[str, str], notes: dict[str, int]) -> pa.RecordBatch:
    names = [renames.get(n, n) for n in batch.schema.names]
    columns = []
    for name, column in zip(names, batch.columns):
        target = _INPUT_TYPES.get(name)
        if target is not None and column.type != target:
            column = _cast(name, column, target, notes)
        elif target == pa.string() and not _valid_utf8(column):
            # Parquet writers need not validate UTF-8 (parquet-mr does not): one bad byte failed the
            # whole shard at the first to_pylist(); decoded as binary text is, with replacements
            column = _cast(name, column.cast(pa.binary()), target, notes)
        columns.append(column)
    html = batch.schema.field(batch.schema.names[names.index("html")]).type if "html" in names else None
    if html is not None and _is_stringish(_value_type(html)):
        _pin_utf8(names, columns)
    return pa.RecordBatch.from_arrays(columns, names=names)


def _is_stringish(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


_CHARSET_PARAM = re.compile(r";\s*charset\s*=[^;]*", re.IGNORECASE)


def _pin_utf8(names: list[str], columns: list[pa.Array]) -> None:
    """An ``html`` column of strings is Unicode, cast to UTF-8 bytes: its rows' ``content_type``
    says ``charset=utf-8`` (added, or replacing the one it had), as JSONL html does. A page's
    ``<meta charset="windows-1252">`` decoded those bytes as that codec: "CafÃ©" (review h92)."""
    html = columns[names.index("html")]
    given = (columns[names.index("content_type")].to_pylist() if "content_type" in names
             else [None] * len(html))
    pinned = [ct if null else f"{_CHARSET_PARAM.sub('', ct or 'text/html').strip()}; charset=utf-8"
              for null, ct in zip(html.is_null().to_pylist(), given)]
    column = pa.array(pinned, pa.string())
    if "content_type" in names:
        columns[names.index("content_type")] = column
    else:
        names.append("content_type")
        columns.append(column)


def _valid_utf8(column: pa.Array) -> bool:
    """Whether a string column holds valid UTF-8 (Arrow's full validation, in C)."""
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _cast(name: str, column: pa.Array, target: pa.DataType, notes: dict[str, int]) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    t = column.type
    if target == pa.string() and (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)):
        values = column.cast(pa.binary()) if not pa.types.is_binary(t) else column
        decoded, replaced = [], 0
        for v in values.to_pylist():  # only binary text pays for this per-value loop
            if v is None:
                decoded.append(None)
                continue
            s = v.decode("utf-8", errors="replace")
            replaced += "\ufffd" in s and b"\xef\xbf\xbd" not in v
            decoded.append(s)
        if replaced:
            key = f"{name}_utf8_replaced"
            notes[key] = notes.get(key, 0) + replaced
        return pa.array(decoded, pa.string())
    return column.cast(target)
