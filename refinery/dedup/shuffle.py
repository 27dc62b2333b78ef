"""Partitioned Parquet files: the shuffle between dedup passes.

A writer task produces *one* file whose rows are grouped by destination partition, one row group
per non-empty partition, and a map ``partition -> row group`` in the file's key-value metadata.
A reader task for partition ``p`` reads just that row group from every writer's file (ranged reads
on S3), so a pass over P partitions touches P files per task instead of P x P small files, and a
task's memory is bounded by its partition's size, not the input's.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from refinery.io import fs

_META_KEY = b"refinery.partitions"


def partition_of(keys: np.ndarray, num_parts: int) -> np.ndarray:
    """Partition of uniformly distributed 64-bit keys by hash range: ``floor(key * P / 2**64)``."""
    if num_parts == 1:
        return np.zeros(len(keys), dtype=np.int64)
    return (((keys >> np.uint64(32)) * np.uint64(num_parts)) >> np.uint64(32)).astype(np.int64)


def _arrow(values: np.ndarray) -> pa.Array:
    """1-D arrays as they are; 2-D ``[n, k]`` arrays (signatures) as fixed-size lists of ``k``."""
    if values.ndim == 2:
        return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(values).reshape(-1)), values.shape[1])
    return pa.array(values)


def column_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A column as numpy: fixed-size list columns become ``[n, k]`` arrays."""
    if pa.types.is_fixed_size_list(column.type):
        k = column.type.list_size
        return pc.list_flatten(column).to_numpy().reshape(-1, k)
    return column.to_numpy()


def write_partitioned(uri: str, columns: dict[str, np.ndarray], part: np.ndarray, num_parts: int) -> list[int]:
    """Write ``columns`` grouped by ``part`` (stable: row order within a partition is kept).
    Returns the number of rows per partition."""
    order = np.argsort(part, kind="stable")
    counts = np.bincount(part, minlength=num_parts) if len(part) else np.zeros(num_parts, dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    table = pa.table({name: _arrow(values[order]) for name, values in columns.items()})
    groups: dict[int, int] = {}
    schema = table.schema
    with fs.atomic_output(uri) as out:
        # metadata is written in the footer, so it can name the row groups after they are written
        writer = pq.ParquetWriter(out, schema, compression="zstd")
        try:
            for p in range(num_parts):
                lo, hi = int(bounds[p]), int(bounds[p + 1])
                if hi > lo:
                    writer.write_table(table.slice(lo, hi - lo), row_group_size=hi - lo)
                    groups[p] = len(groups)
            writer.add_key_value_metadata({_META_KEY.decode(): json.dumps({"num_parts": num_parts, "groups": groups})})
        finally:
            writer.close()
    return [int(c) for c in counts]


def _open(uri: str) -> pq.ParquetFile:
    return pq.ParquetFile(fs.open_parquet_input(uri))  # on S3 no HEAD: the footer's GET gives the size


def _groups(pf: pq.ParquetFile, uri: str) -> dict[int, int]:
    meta = pf.metadata.metadata or {}
    raw = meta.get(_META_KEY)
    if not raw:
        raise ValueError(f"{uri} is not a partitioned dedup file (no {_META_KEY.decode()} metadata)")
    return {int(k): v for k, v in json.loads(raw)["groups"].items()}


def read_partition(uris: list[str], part: int, columns: list[str], dtypes: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    """Partition ``part`` of every file in ``uris``, concatenated in ``uris`` order, as numpy
    arrays. Streams one row group at a time into arrays sized from the footers."""
    files = []
    total = 0
    schema: pa.Schema | None = None
    for uri in uris:
        pf = _open(uri)
        if schema is None:
            schema = pf.schema_arrow
        group = _groups(pf, uri).get(part)
        if group is not None:
            n = pf.metadata.row_group(group).num_rows
            files.append((pf, group, n))
            total += n
    # fixed-size list columns (signatures) come back as [rows, k] arrays
    widths: dict[str, int] = {}
    if schema is not None:
        widths = {c: schema.field(c).type.list_size for c in columns if pa.types.is_fixed_size_list(schema.field(c).type)}
    out = {c: np.empty((total, widths[c]) if c in widths else total, dtype=dtypes[c]) for c in columns}
    at = 0
    for pf, group, n in files:
        table = pf.read_row_group(group, columns=columns)
        for c in columns:
            out[c][at : at + n] = column_numpy(table.column(c))
        at += n
        del table
    return out


def partition_sizes(uris: list[str], num_parts: int) -> list[int]:
    """Rows per partition summed over ``uris`` (footers only)."""
    sizes = [0] * num_parts
    for uri in uris:
        pf = _open(uri)
        for p, g in _groups(pf, uri).items():
            sizes[p] += pf.metadata.row_group(g).num_rows
    return sizes
