"""Row selection and building for record batches that carry large binary columns (HTML bodies).

Why not ``pa.array`` / ``RecordBatch.filter``: both write the bodies into fresh Arrow pool memory
(the builder by doubling reallocations), and on the 2-core VMs we measure on, first-touch page
faults made that 5-15x slower than one ``b"".join`` into a Python bytes object (the WARC reader's
HTML column: 1.5 s vs 0.1 s for 151 MB; a stage's kept-row filter before extraction: ~0.4 s per
run of 1k pages; docs/benchmarks.md). Both helpers give arrays equal to Arrow's own.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

#: binary/string columns with more data bytes than this are gathered by :func:`take_rows`
GATHER_MIN_BYTES = 1 << 20


def binary_array(values: Sequence[bytes | None]) -> pa.Array:
    """``pa.array(values, pa.binary())`` built from one ``b"".join``."""
    n = len(values)
    lengths = np.fromiter((0 if v is None else len(v) for v in values), dtype=np.int64, count=n)
    if int(lengths.sum()) >= 2**31:  # int32 offsets overflow: the builder's own error/handling
        return pa.array(list(values), type=pa.binary())
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=n)
    data = pa.py_buffer(b"".join(v for v in values if v is not None))
    return _from_parts(pa.binary(), lengths, valid, data)


def _from_parts(type_: pa.DataType, lengths: np.ndarray, valid: np.ndarray, data: pa.Buffer) -> pa.Array:
    n = len(lengths)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    nulls = n - int(valid.sum())
    validity = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(offsets), data], null_count=nulls)


def _gather(column: pa.Array, rows: np.ndarray) -> pa.Array:
    """``column.take(rows)`` for a (non-large) binary or string array, its bytes joined in Python."""
    _, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=column.offset + len(column) + 1)[column.offset:]
    starts, ends = offsets[rows], offsets[rows + 1]
    valid = (column.is_valid().to_numpy(zero_copy_only=False)[rows] if column.null_count
             else np.ones(len(rows), dtype=bool))
    lengths = np.where(valid, ends - starts, 0).astype(np.int64)
    view = memoryview(data_buf)
    data = pa.py_buffer(b"".join([view[s:e] for s, e, ok in zip(starts.tolist(), ends.tolist(), valid.tolist()) if ok]))
    return _from_parts(column.type, lengths, valid, data)


def take_rows(batch: pa.RecordBatch, keep: np.ndarray) -> pa.RecordBatch:
    """``batch.filter(keep)`` (``keep``: a boolean numpy mask), large binary/string columns
    gathered with :func:`_gather`, the others with Arrow's ``take``."""
    rows = np.flatnonzero(keep)
    indices = pa.array(rows, pa.int64())
    columns = []
    for column in batch.columns:
        data = column.buffers()[2] if column.type in (pa.binary(), pa.string()) else None
        if data is not None and data.size > GATHER_MIN_BYTES and column.null_count < len(column):
            columns.append(_gather(column, rows))
        else:
            columns.append(column.take(indices))
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


class _PandasAbsent:
    """A meta-path finder that says pandas is not installed (see :func:`skip_pandas_probe`)."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "pandas":
            raise ImportError("pandas hidden while pyarrow probes for it (refinery.io.arrow_rows)")


_PROBE_LOCK = threading.Lock()


def skip_pandas_probe() -> None:
    """Let pyarrow's first ``pa.array(list)`` skip importing pandas (~0.16 s of CPU per process).

    Why: pyarrow asks whether any value given to ``pa.array`` is a pandas object, and to know it,
    imports pandas on the first call of the process (its lazy shim, ``_PandasAPIShim``) when pandas
    is installed, as it is beside refinery. refinery never hands pyarrow pandas objects, so a run's
    process and its workers paid that import for nothing. The shim tries the import once: hidden
    then, it records "no pandas" for its array-like probe, while pyarrow's explicit pandas APIs
    (``to_pandas``, ``from_pandas``) import it again when called. The cost: a pandas Series given
    to ``pa.array`` afterwards is read as a plain sequence (NaN not taken as null), so only
    refinery's own processes ask for it (the console script, the local pool's workers)."""
    if "pandas" in sys.modules:  # imported already: the probe is as cheap as it gets
        return
    with _PROBE_LOCK:
        sys.meta_path.insert(0, _PandasAbsent)  # type: ignore[arg-type]
        try:
            pa.array([])  # the shim's one import attempt
        finally:
            sys.meta_path.remove(_PandasAbsent)  # type: ignore[arg-type]
