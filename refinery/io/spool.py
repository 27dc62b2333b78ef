"""A shard's output batches held on local disk until the shard ends, not in memory.

A pass's shard is written as one Parquet file in one schema, which is only known once every batch
has been seen (an all-null column is ``null`` in one batch and ``string`` in the next; an empty
batch still names every column). Keeping the batches in memory made a shard's memory its whole
output: a 400 MB JSONL shard peaked at 569 MB, a 4 GB one would not fit a worker's share of an
instance. The spool appends each batch to a local Arrow IPC file (lz4) as it comes, and streams
them back, conformed to the final schema, into the Parquet writer: memory is a row group.

io layer: imports only ``refinery.io`` and pyarrow.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.io import fs, parquet

#: A Parquet row group holds at most this many rows (as ``parquet.write_table`` writes them) ...
ROW_GROUP_ROWS = 10_000
#: ... and about this many bytes of Arrow data, so wide rows do not make a giant row group.
ROW_GROUP_BYTES = 64 << 20
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


class ShardSpool:
    """Record batches of one shard's output, appended as they come and written at the end as one
    Parquet file in a schema that covers them all.

    Batches with the same schema go to one spill file; a batch of another schema starts the next
    one (rare: a column that was all null before). Empty batches are not stored, only their
    schemas, so an all-removed shard still carries every stage's columns. Use as a context
    manager, or call :meth:`close`: the spill files are deleted then."""

    def __init__(self, directory: str | None = None) -> None:
        self._parent = directory
        self._dir: str | None = None  # made with the first rows (a skipped shard makes none)
        self._segments: list[tuple[pa.Schema, str, int]] = []  # (schema, path, rows)
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._sink: pa.NativeFile | None = None
        self._schemas: list[tuple[pa.Schema, int]] = []  # every batch's schema and rows, in order
        self.num_rows = 0

    def append(self, batch: pa.RecordBatch | pa.Table) -> None:
        table = _decoded_dictionaries(batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch]))
        if not self._schemas or not self._schemas[-1][0].equals(table.schema):
            self._schemas.append((table.schema, table.num_rows))
        else:
            self._schemas[-1] = (table.schema, self._schemas[-1][1] + table.num_rows)
        if not table.num_rows:
            return
        if self._writer is None or not self._segments[-1][0].equals(table.schema):
            self._close_writer()
            if self._dir is None:
                sweep_orphaned_spools(self._parent)
                self._dir = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=self._parent)
            path = os.path.join(self._dir, f"{len(self._segments)}.arrow")
            self._sink = pa.OSFile(path, "wb")
            self._writer = pa.ipc.new_file(self._sink, table.schema, options=_IPC_OPTIONS)
            self._segments.append((table.schema, path, 0))
        self._writer.write_table(table)
        schema, path, rows = self._segments[-1]
        self._segments[-1] = (schema, path, rows + table.num_rows)
        self.num_rows += table.num_rows

    def schemas(self) -> list[tuple[pa.Schema, int]]:
        """The schemas of the batches appended, each with its rows (empty batches' too)."""
        return list(self._schemas)

    def batches(self, schema: pa.Schema) -> Iterator[pa.Table]:
        """The rows appended, in order, conformed to ``schema`` (a union of :meth:`schemas`), in
        tables of at most a row group."""
        from refinery.io.dataset import conform_table

        self._close_writer()
        pending: list[pa.Table] = []
        rows = size = 0
        for _, path, _ in self._segments:
            with pa.OSFile(path) as source:  # not mapped: mapped pages would count as the worker's memory
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    table = conform_table(pa.Table.from_batches([reader.get_batch(i)]), schema)
                    pending.append(table)
                    rows += table.num_rows
                    size += table.nbytes
                    if rows < ROW_GROUP_ROWS and size < ROW_GROUP_BYTES:
                        continue
                    whole = pa.concat_tables(pending)
                    # full row groups out, the rest waits for the next batches
                    cut = whole.num_rows if size >= ROW_GROUP_BYTES else rows - rows % ROW_GROUP_ROWS
                    yield whole.slice(0, cut)
                    rest = whole.slice(cut)
                    pending, rows, size = ([rest], rest.num_rows, rest.nbytes) if rest.num_rows else ([], 0, 0)
        if pending:
            yield pa.concat_tables(pending)

    def write_parquet(self, uri: str, schema: pa.Schema) -> None:
        """Write the rows to ``uri`` atomically (zstd) in ``schema``; no rows gives a file with the
        schema and no row group (what every reader accepts, as ``dataset.write_shard``)."""
        with fs.atomic_output(uri) as out, pq.ParquetWriter(out, schema, compression=parquet.COMPRESSION) as writer:
            for table in self.batches(schema):
                writer.write_table(table, row_group_size=ROW_GROUP_ROWS)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def close(self) -> None:
        try:
            self._close_writer()
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ShardSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_PREFIX = "refinery-spool-"
_SWEPT: set[str] = set()  # temporary directories this process has swept


def sweep_orphaned_spools(parent: str | None = None) -> int:
    """Delete the spill directories of processes that no longer run (a killed worker's: its
    ``finally`` never ran; found by killing runs), once per process and directory. A spool's name
    holds its process id. Returns how many were deleted."""
    parent = parent or tempfile.gettempdir()
    if parent in _SWEPT:
        return 0
    _SWEPT.add(parent)
    deleted = 0
    for name in os.listdir(parent):
        pid = name[len(_PREFIX):].split("-", 1)[0] if name.startswith(_PREFIX) else ""
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            deleted += 1
    return deleted


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _decoded_dictionaries(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns as their plain values: a pandas categorical column in one input
    file and a plain string one in another could not be unified when the pass closed, after every
    shard had run, and the run could never finish (found by adversarial testing)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.with_type(field.type.value_type),
                                     table.column(i).cast(field.type.value_type))
    return table
