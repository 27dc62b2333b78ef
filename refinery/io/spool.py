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

import fcntl
import logging
import os
import shutil
import tempfile
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from refinery.io import fs, parquet

#: A Parquet row group holds at most this many rows (as ``parquet.write_table`` writes them) ...
ROW_GROUP_ROWS = 10_000
#: ... and about this many bytes of Arrow data, so wide rows do not make a giant row group.
ROW_GROUP_BYTES = 64 << 20
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
#: batches gather in memory up to this size before they are spilled (one write, one read back)
SPILL_BYTES = 8 << 20
log = logging.getLogger(__name__)


class ShardSpool:
    """Record batches of one shard's output, appended as they come and written at the end as one
    Parquet file in a schema that covers them all.

    Batches with the same schema go to one spill file; a batch of another schema starts the next
    one (rare: a column that was all null before). Empty batches are not stored, only their
    schemas, so an all-removed shard still carries every stage's columns. Use as a context
    manager, or call :meth:`close`: the spill files are deleted then."""

    def __init__(self, directory: str | None = None, spill_bytes: int | None = None) -> None:
        self._parent = directory
        self._spill_bytes = SPILL_BYTES if spill_bytes is None else spill_bytes
        self._dir: str | None = None  # made with the first rows (a skipped shard makes none)
        self._lock: int | None = None  # held while the spool lives: the sweep's sign it is in use
        self._segments: list[tuple[pa.Schema, str, int]] = []  # (schema, path, rows)
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._sink: pa.NativeFile | None = None
        self._schemas: list[tuple[pa.Schema, int]] = []  # every batch's schema and rows, in order
        self._pending: list[pa.Table] = []  # small batches gathered in memory before a spill
        self._pending_bytes = 0
        self.num_rows = 0

    def append(self, batch: pa.RecordBatch | pa.Table) -> None:
        table = _decoded_dictionaries(batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch]))
        if not self._schemas or not self._schemas[-1][0].equals(table.schema):
            self._schemas.append((table.schema, table.num_rows))
        else:
            self._schemas[-1] = (table.schema, self._schemas[-1][1] + table.num_rows)
        if not table.num_rows:
            return
        if self._pending and not self._pending[0].schema.equals(table.schema):
            self._spill()
        self._pending.append(table)
        # the buffers it holds, not its rows' bytes: a slice keeps its parent's buffers (a review)
        self._pending_bytes += table.get_total_buffer_size()
        self.num_rows += table.num_rows
        # ~2 ms per spilled batch (its write, read and conform): batches of 10 rows took 6 s per
        # 27,000 rows one by one (a review); gathered to SPILL_BYTES, they cost what one does
        if self._pending_bytes >= self._spill_bytes:
            self._spill()

    def _spill(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_bytes = [], 0
        try:
            if self._writer is None or not self._segments[-1][0].equals(table.schema):
                self._close_writer()
                if self._dir is None:
                    self._make_dir()
                path = os.path.join(self._dir, f"{len(self._segments)}.arrow")
                self._sink = pa.OSFile(path, "wb")
                self._writer = pa.ipc.new_file(self._sink, table.schema, options=_IPC_OPTIONS)
                self._segments.append((table.schema, path, 0))
            self._writer.write_table(table)
        except OSError as exc:
            # name the local directory: a full one read as the run's output disk (a review)
            where = self._dir or self._parent or tempfile.gettempdir()
            raise OSError(exc.errno, f"{exc.strerror or exc} in the local spool directory {where} (a shard's "
                                     f"output waits there; TMPDIR sets it)") from exc
        schema, path, rows = self._segments[-1]
        self._segments[-1] = (schema, path, rows + table.num_rows)

    def _make_dir(self) -> None:
        sweep_orphaned_spools(self._parent)
        directory = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=self._parent)
        self._dir = directory
        # locked under another name, then renamed: a sweep never finds the lock file unlocked (a
        # review saw one delete a spool between its creation and its lock). Housekeeping only: on a
        # file system without flock the spool goes on unlocked (a sweep there leaves it alone)
        pending = os.path.join(directory, f"{_LOCK}.new")
        fd = os.open(pending, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(pending, os.path.join(directory, _LOCK))
        except OSError as exc:
            os.close(fd)
            log.debug("spool %s is not locked: %s", directory, exc)
            return
        self._lock = fd

    def schemas(self) -> list[tuple[pa.Schema, int]]:
        """The schemas of the batches appended, each with its rows (empty batches' too)."""
        return list(self._schemas)

    def batches(self, schema: pa.Schema) -> Iterator[pa.Table]:
        """The rows appended, in order, conformed to ``schema`` (a union of :meth:`schemas`), in
        row groups (see :func:`row_groups`)."""
        return row_groups(self.tables(schema))

    def tables(self, schema: pa.Schema) -> Iterator[pa.Table]:
        """The rows appended, in order, conformed to ``schema``, as they were spilled."""
        from refinery.io.dataset import conform_table

        if not self._segments:
            # nothing spilled yet (a small shard: most are): its rows are read from memory, not
            # written to a spool file and read back (a directory, a lock, two files per shard)
            for table in self._pending:
                yield conform_table(table, schema)
            return
        self._spill()
        self._close_writer()
        for _, path, _ in self._segments:
            with pa.OSFile(path) as source:  # not mapped: mapped pages would count as the worker's memory
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    yield conform_table(pa.Table.from_batches([reader.get_batch(i)]), schema)

    def write_parquet(self, uri: str, schema: pa.Schema) -> pq.FileMetaData:
        """Write the rows to ``uri`` atomically (zstd) in ``schema``; no rows gives a file with the
        schema and no row group (what every reader accepts, as ``dataset.write_shard``). Returns
        the file's footer, as a reader of it gets it."""
        return _write_parquet(uri, schema, self.batches(schema))

    def _close_writer(self) -> None:
        writer, sink, self._writer, self._sink = self._writer, self._sink, None, None
        try:
            if writer is not None:
                writer.close()
        finally:
            if sink is not None:
                sink.close()

    def close(self) -> None:
        self._pending, self._pending_bytes = [], 0
        try:
            self._close_writer()
        except OSError as exc:  # a full disk's first error is the one raised (a review)
            log.debug("closing spool %s: %s", self._dir, exc)
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None

    def __enter__(self) -> ShardSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def row_groups(tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """``tables``' rows regrouped as Parquet row groups, each one contiguous chunk: a group ends
    after :data:`ROW_GROUP_ROWS` rows or at the row that takes its size (:func:`row_bytes`) to
    :data:`ROW_GROUP_BYTES`. The cuts depend on the rows alone, and one chunk per group makes the
    Parquet writer's pages too, so the file's bytes do not depend on how the rows were batched
    (``reader.batch_size``): the chunking changed the bytes of the same rows."""
    pending: list[pa.Table] = []
    pending_sizes: list[np.ndarray] = []  # each pending row's size, measured once
    rows = size = 0
    for table in tables:
        if not table.num_rows:
            continue
        pending.append(table)
        pending_sizes.append(row_bytes(table))
        rows += table.num_rows
        size += int(pending_sizes[-1].sum())
        while rows >= ROW_GROUP_ROWS or size >= ROW_GROUP_BYTES:
            whole, sizes = pa.concat_tables(pending), np.concatenate(pending_sizes)
            cumulative = np.cumsum(sizes)
            cut = min(ROW_GROUP_ROWS, int(np.searchsorted(cumulative, ROW_GROUP_BYTES)) + 1, whole.num_rows)
            yield whole.slice(0, cut).combine_chunks()
            rest = whole.slice(cut)
            pending, pending_sizes = ([rest], [sizes[cut:]]) if rest.num_rows else ([], [])
            rows, size = rest.num_rows, int(cumulative[-1] - cumulative[cut - 1])
    if pending:
        yield pa.concat_tables(pending).combine_chunks()


def row_bytes(table: pa.Table) -> np.ndarray:
    """Each row's approximate size: its strings' and binaries' bytes, 8 per other value."""
    sizes = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_string(kind) \
                or pa.types.is_large_binary(kind):
            sizes += pc.fill_null(pc.binary_length(column), 0).to_numpy().astype(np.int64)
        else:
            sizes += 8
    return sizes


class StageSpools:
    """One :class:`ShardSpool` per stage (the reader's first), written as one Parquet file in stage
    order, each stage's rows in input order: a shard's removed rows come out in the same order
    whatever the batch size (appended batch by batch, stage by stage within a batch, they did
    not). The spools share :data:`SPILL_BYTES` of memory between them."""

    def __init__(self, stages: int, directory: str | None = None) -> None:
        share = max(SPILL_BYTES // max(stages, 1), 1 << 20)
        self._spools = [ShardSpool(directory, spill_bytes=share) for _ in range(stages)]

    def stage(self, index: int) -> ShardSpool:
        """The spool of stage ``index`` (0: the reader)."""
        return self._spools[index]

    @property
    def num_rows(self) -> int:
        return sum(s.num_rows for s in self._spools)

    def schemas(self) -> list[tuple[pa.Schema, int]]:
        return [entry for spool in self._spools for entry in spool.schemas()]

    def batches(self, schema: pa.Schema) -> Iterator[pa.Table]:
        return row_groups(table for spool in self._spools for table in spool.tables(schema))

    def write_parquet(self, uri: str, schema: pa.Schema) -> pq.FileMetaData:
        """As :meth:`ShardSpool.write_parquet`, every stage's rows in stage order."""
        return _write_parquet(uri, schema, self.batches(schema))

    def close(self) -> None:
        for spool in self._spools:
            spool.close()

    def __enter__(self) -> StageSpools:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_parquet(uri: str, schema: pa.Schema, tables: Iterator[pa.Table]) -> pq.FileMetaData:
    with (fs.atomic_output(uri) as out,
          pq.ParquetWriter(out, schema, compression=parquet.COMPRESSION) as writer):
        for table in tables:
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
    # the writer's own footer, what closing the pass would read back: taken once the file is
    # published. Not by ``metadata_collector``, whose ask inside the writer's close raised "file
    # metadata is only available after writer close" when the disk filled, in place of the
    # named ENOSPC the publication raises (found by test_disk_full after h194)
    return writer.writer.metadata


_PREFIX = "refinery-spool-"
_LOCK = ".lock"
_SWEPT: set[str] = set()  # temporary directories this process has swept


def sweep_orphaned_spools(parent: str | None = None) -> int:
    """Delete the spill directories no process holds any more (a killed worker's: its ``finally``
    never ran; found by killing runs), once per process and directory. Each spool holds an
    exclusive ``flock`` on its lock file while it lives, which the kernel releases when its process
    dies, whatever process-id namespace it ran in (a first version judged by process ids and
    deleted a live spool of another container sharing /tmp: a review). Housekeeping only: a
    directory it cannot list or a spool it cannot delete is left. Returns how many were deleted."""
    parent = parent or tempfile.gettempdir()
    if parent in _SWEPT:
        return 0
    _SWEPT.add(parent)
    deleted = 0
    try:
        names = [n for n in os.listdir(parent) if n.startswith(_PREFIX)]
    except OSError as exc:  # a temporary directory writable but not readable (mode 1733)
        log.debug("cannot list %s for orphaned spools: %s", parent, exc)
        return 0
    for name in names:
        directory = os.path.join(parent, name)
        try:
            fd = os.open(os.path.join(directory, _LOCK), os.O_RDWR)
        except OSError:
            continue  # not a spool of this version, or not ours to open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # held (its process is alive), or no flock here: left alone
        finally:
            os.close(fd)
        shutil.rmtree(directory, ignore_errors=True)
        deleted += 1
    return deleted


def _decoded_dictionaries(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns as their plain values: a pandas categorical column in one input
    file and a plain string one in another could not be unified when the pass closed, after every
    shard had run, and the run could never finish (found by adversarial testing)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.with_type(field.type.value_type),
                                     table.column(i).cast(field.type.value_type))
    return table
