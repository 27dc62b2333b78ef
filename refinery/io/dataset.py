"""One schema per directory of Parquet shards, so a directory reads as one dataset.

Shards of one run are written independently: an empty shard has no columns, an all-null column is
typed ``null`` in one shard and ``string`` in another, removed documents of different stages carry
different metric columns. ``pyarrow.dataset``, DuckDB and Hugging Face ``datasets`` then fail (or
silently take the first shard's schema). :func:`unify_schemas` reads every footer, computes the
union schema and rewrites only the shards that differ from it.

Empty shards are written with no row group at all: Hugging Face ``datasets`` (5.x) fails on a
file whose only row group has 0 rows ("BatchSize must be greater than 0"), which is what
``pq.write_table`` writes for an empty table.

io layer: imports only ``refinery.io`` and pyarrow.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.io import fs, parquet
from refinery.io.spool import ShardSpool, StageSpools

#: First guess at a footer's size for S3 ranged reads: one request covers almost every footer.
_TAIL_BYTES = 64 * 1024
#: Footer reads are small I/O-bound requests; a few threads make thousands of S3 shards cheap.
_FOOTER_THREADS = 16
#: shards rewritten at once by unify_schemas (each is read whole)
_REWRITE_THREADS = 4


class SchemaConflictError(ValueError):
    """Two shards hold the same column with types that cannot be promoted to one type."""


@dataclass(frozen=True)
class ShardFooter:
    uri: str
    schema: pa.Schema
    num_rows: int
    num_row_groups: int

    def agrees_with(self, schema: pa.Schema) -> bool:
        """Whether the shard already has ``schema`` and, if empty, no (empty) row group."""
        empty_row_group = self.num_rows == 0 and self.num_row_groups > 0
        return self.schema.equals(schema, check_metadata=False) and not empty_row_group

    @classmethod
    def written(cls, uri: str, footer: pq.FileMetaData) -> ShardFooter:
        """The footer of a shard this process wrote, from its writer: what :func:`read_footer`
        would read back, without the read."""
        return cls(uri, footer.schema.to_arrow_schema(), footer.num_rows, footer.num_row_groups)


def read_footer(uri: str) -> ShardFooter:
    """The Arrow schema and row count of one Parquet shard, from its footer only."""
    try:
        if fs.is_s3(uri):
            pf = pq.ParquetFile(pa.BufferReader(_s3_footer_file(uri)))
            return ShardFooter(uri, pf.schema_arrow, pf.metadata.num_rows, pf.metadata.num_row_groups)
        filesystem, path = fs.resolve(uri)
        with filesystem.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            return ShardFooter(uri, pf.schema_arrow, pf.metadata.num_rows, pf.metadata.num_row_groups)
    except parquet.ShardReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - arrow, OS and botocore errors: name the shard
        raise parquet.ShardReadError(f"unreadable Parquet footer of {uri}: {type(exc).__name__}: {exc}") from exc


def _s3_footer_file(uri: str) -> bytes:
    """A minimal Parquet file (magic + footer) from ranged GETs of the object's tail, with boto3
    like the rest of refinery's S3 reads (retries with backoff), instead of downloading the shard."""
    bucket, _, key = fs.resolve(uri)[1].partition("/")
    client = fs.s3_client()
    tail = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{_TAIL_BYTES}")["Body"].read()
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise parquet.ShardReadError(f"{uri} is not a Parquet file (no PAR1 footer)")
    need = int.from_bytes(tail[-8:-4], "little") + 8
    if need > len(tail):  # a footer larger than the first guess: fetch exactly that much
        tail = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{need}")["Body"].read()
        if need > len(tail):
            raise parquet.ShardReadError(f"truncated Parquet shard {uri}: footer of {need} bytes, file of {len(tail)}")
    # The column chunks are never read, so the footer alone parses as a (row-less) Parquet file.
    return b"PAR1" + tail[-need:]


def union_schema(footers: list[ShardFooter]) -> pa.Schema:
    """The union of the shards' schemas: columns in first-seen order, types promoted the way
    ``pa.unify_schemas(..., promote_options="permissive")`` does (``null`` to any type,
    int32 to int64, float to double, ...). A column is nullable if it is nullable in some shard or
    missing from a shard that has rows (that shard gets nulls). Raises
    :class:`SchemaConflictError` naming the column and two shards when types cannot be promoted."""
    distinct: dict[pa.Schema, ShardFooter] = {}  # most shards share a schema: merge each once
    for footer in footers:
        distinct.setdefault(footer.schema, footer)
    fields: dict[str, pa.Field] = {}
    origin: dict[str, ShardFooter] = {}  # the first shard that had each column, for error messages
    for schema, footer in distinct.items():
        for field in schema:
            if field.name in fields:
                fields[field.name] = _merge_field(fields[field.name], field, origin[field.name], footer)
            else:
                fields[field.name], origin[field.name] = field, footer
    with_rows = {f.schema for f in footers if f.num_rows}
    for name, field in fields.items():
        if not field.nullable and any(name not in s.names for s in with_rows):
            fields[name] = field.with_nullable(True)
    metadata = next((s.metadata for s in distinct if s.metadata), None)
    return pa.schema(list(fields.values()), metadata=metadata)


def _merge_field(current: pa.Field, new: pa.Field, first: ShardFooter, shard: ShardFooter) -> pa.Field:
    if current.equals(new, check_metadata=False):
        return current
    try:
        merged = pa.unify_schemas([pa.schema([current]), pa.schema([new])], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise SchemaConflictError(
            f"column {current.name!r} cannot be unified: {current.type} in {first.uri} "
            f"but {new.type} in {shard.uri} ({exc}); if the input files give it different types, cast it "
            f"to one type in the input or drop it"
        ) from None
    return merged.field(0).with_nullable(current.nullable or new.nullable)


def conform_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` cast to ``schema``: columns reordered and promoted, missing columns as nulls.
    Row order is kept; columns not in ``schema`` are an error (the schema must be a union)."""
    extra = [c for c in table.column_names if c not in schema.names]
    if extra:
        raise ValueError(f"columns {extra} are not in the target schema {schema.names}")
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            columns.append(column if column.type == field.type else column.cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def unify_schemas(directory_uri: str, schema: pa.Schema | None = None,
                  written: Mapping[str, ShardFooter] | None = None) -> pa.Schema:
    """Give every ``*.parquet`` shard under ``directory_uri`` (local or ``s3://``, recursive) one
    schema, and return it.

    Reads every footer, computes :func:`union_schema`, then rewrites (atomically, zstd, same row
    order) only the shards whose schema differs from it, and empty shards that hold an empty row
    group (see :func:`write_shard`). When every shard already agrees, only footers are read, so
    calling this again is cheap and changes nothing. Raises :class:`SchemaConflictError` (and
    rewrites nothing) when two shards hold a column with incompatible types.

    ``schema`` (optional) is a declared schema the directory must include, merged as if it were
    the first shard: its columns come first, in its order, then columns only shards have. Pass it
    to fix the column order across runs and to give columns to a directory whose shards are all
    empty and column-less (e.g. ``removed/`` of a pass that removed nothing). A directory that
    does not exist or holds no shards has ``schema`` (or the empty schema).

    ``written``: footers known without a read (URI -> footer: the shards this command's tasks
    wrote, :meth:`ShardFooter.written`); only the shards listed count, the others' are read.
    """
    try:
        uris = fs.list_files(directory_uri, suffixes=(".parquet",))
    except fs.StorageError:
        if fs.exists(directory_uri):
            raise
        uris = []
    declared = [ShardFooter("the declared schema", schema, 0, 0)] if schema is not None else []
    if not uris:
        return union_schema(declared)
    known = written or {}
    unread = [u for u in uris if u not in known]
    read: dict[str, ShardFooter] = {}
    if unread:
        with ThreadPoolExecutor(max_workers=min(_FOOTER_THREADS, len(unread))) as pool:
            read = dict(zip(unread, pool.map(read_footer, unread)))
    footers = [known[u] if u in known else read[u] for u in uris]
    union = union_schema(declared + footers)
    differ = [f for f in footers if not f.agrees_with(union)]
    if differ:
        # a few at a time: each holds a whole shard in memory; one at a time, closing a pass over
        # a crawl on S3 took as long as the pass (found by adversarial testing)
        with ThreadPoolExecutor(max_workers=min(_REWRITE_THREADS, len(differ))) as pool:
            list(pool.map(lambda f: _rewrite(f, union), differ))
    return union


def _rewrite(footer: ShardFooter, schema: pa.Schema) -> None:
    """Read the whole shard, conform it to ``schema`` and publish it in place, atomically."""
    table = parquet.read_table(footer.uri)
    try:
        conformed = conform_table(table, schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError) as exc:
        raise SchemaConflictError(f"cannot cast {footer.uri} to the directory's schema: {exc}") from exc
    if conformed.num_rows != footer.num_rows:  # never publish a shard that lost rows
        raise parquet.ShardReadError(f"{footer.uri}: read {conformed.num_rows} rows, footer says {footer.num_rows}")
    write_shard(conformed, footer.uri)


def write_shard(table: pa.Table, uri: str) -> None:
    """Write a shard atomically (zstd); an empty table gets a file with its schema and no row
    group, which every reader (pyarrow, DuckDB, Hugging Face ``datasets``) accepts."""
    parquet.write_table(table, uri)


def _declared_kept() -> pa.Schema:
    from refinery.schema import DOCUMENT_FIELDS, EDIT_FIELDS

    return pa.schema(DOCUMENT_FIELDS + EDIT_FIELDS)


def _declared_removed(kept: pa.Schema) -> pa.Schema:
    from refinery.schema import REMOVED_FIELDS

    return pa.schema([f for f in kept if f.name != "html"] + [f.with_nullable(True) for f in REMOVED_FIELDS])


def unify_pass_schemas(kept_dir: str, removed_dir: str,
                       written: Mapping[str, ShardFooter] | None = None) -> tuple[pa.Schema, pa.Schema]:
    """One schema for a pass's kept shards (documents, empty shards included) and one for its
    removed shards: the kept schema without the raw ``html`` plus the decision columns, so a pass
    that removed nothing still writes a ``removed/`` a reader can open. ``written``: the footers
    of the shards this command wrote (see :func:`unify_schemas`)."""
    kept = unify_schemas(kept_dir, schema=_declared_kept(), written=written)
    return kept, unify_schemas(removed_dir, schema=_declared_removed(kept), written=written)


def write_pass_shard(kept: ShardSpool, removed: ShardSpool | StageSpools, kept_uri: str,
                     removed_uri: str) -> tuple[ShardFooter, ShardFooter]:
    """Write one shard's kept and removed rows already in the schemas :func:`unify_pass_schemas`
    gives a pass whose shards ran the same stages: its removed rows stopped at different stages and
    lacked the later stages' columns, so closing the pass rewrote nearly every removed shard, one
    after the other (found by adversarial testing: on S3 that took as long as the pass). Returns
    the kept and removed files' footers (for the pass's close: :func:`unify_pass_schemas`)."""
    kept_schema = union_schema([ShardFooter("declared", _declared_kept(), 0, 0)]
                               + [ShardFooter(kept_uri, schema, rows, 1) for schema, rows in kept.schemas()])
    removed_schema = union_schema([ShardFooter("declared", _declared_removed(kept_schema), 0, 0)]
                                  + [ShardFooter(removed_uri, schema, rows, 1) for schema, rows in removed.schemas()])
    removed_footer = ShardFooter.written(removed_uri, removed.write_parquet(removed_uri, removed_schema))
    return ShardFooter.written(kept_uri, kept.write_parquet(kept_uri, kept_schema)), removed_footer  # the corpus file last
