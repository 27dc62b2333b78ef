"""Parquet shards: zstd-compressed, written atomically, read with clear errors."""

from __future__ import annotations

from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.io import fs

COMPRESSION = "zstd"


class ShardReadError(RuntimeError):
    """A Parquet shard could not be read (missing, truncated, not Parquet, wrong schema)."""


def write_table(table: pa.Table, uri: str, row_group_size: int = 10_000) -> None:
    """Write ``table`` to ``uri`` atomically (readers see the whole shard or nothing)."""
    with fs.atomic_output(uri) as out:
        pq.write_table(table, out, compression=COMPRESSION, row_group_size=row_group_size)


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


def read_table(uri: str, columns: list[str] | None = None, required: Iterable[str] = ()) -> pa.Table:
    """Read a whole shard; raise :class:`ShardReadError` naming the shard and the problem."""
    try:
        with fs.open_input(uri) as f:
            data = f.read()
        table = pq.read_table(pa.BufferReader(data), columns=columns)
    except fs.StorageError as exc:
        raise ShardReadError(str(exc)) from exc
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
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
