"""A shard's output waits on local disk until the shard ends (``refinery.io.spool``), so a
shard's memory is a batch, not its whole output. Real pyarrow files throughout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from refinery.io import spool
from refinery.io.dataset import ShardFooter, union_schema
from refinery.io.spool import ShardSpool
from refinery.runner import ReaderOptions, ShardRunner, ShardTask
from refinery.stages.base import Stage


def test_spooled_batches_come_back_in_order_in_one_schema(tmp_path, monkeypatch):
    monkeypatch.setattr(spool, "SPILL_BYTES", 0)  # every batch spilled at once
    parent = tmp_path / "spill"
    parent.mkdir()
    with ShardSpool(str(parent)) as out:
        out.append(pa.schema([("id", pa.string()), ("text", pa.string()), ("lang", pa.string()),
                              ("score", pa.float32())]).empty_table())
        out.append(pa.RecordBatch.from_pydict({"id": ["a", "b"], "text": ["x", "y"], "lang": [None, None]}))  # lang: null
        out.append(pa.table({"id": ["c"], "text": ["z"], "lang": pa.array(["en"]).dictionary_encode()}))
        out.append(pa.RecordBatch.from_pydict({"id": ["d"], "text": ["w"], "lang": ["fr"]}))
        assert out.num_rows == 4
        # a second file when the schema changed (and the lock file)
        assert sorted(os.listdir(next(parent.iterdir()))) == [".lock", "0.arrow", "1.arrow"]
        schema = union_schema([ShardFooter("s", s, n, 1) for s, n in out.schemas()])
        # the empty batch's columns stay; null promoted to string; the dictionary decoded
        assert schema.names == ["id", "text", "lang", "score"]
        assert schema.field("lang").type == pa.string() and schema.field("score").type == pa.float32()
        out.write_parquet(str(tmp_path / "s.parquet"), schema)
    assert list(parent.iterdir()) == []  # spill files deleted
    table = pq.read_table(tmp_path / "s.parquet")
    assert table.schema.equals(schema, check_metadata=False)
    assert table.to_pydict() == {"id": ["a", "b", "c", "d"], "text": ["x", "y", "z", "w"],
                                 "lang": [None, None, "en", "fr"], "score": [None] * 4}


def test_row_groups_are_whole_and_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(spool, "ROW_GROUP_ROWS", 10)
    with ShardSpool() as out:
        for start in range(0, 37, 3):  # batches of 3 rows (the last of 1): groups of 10 cut across batches
            out.append(pa.RecordBatch.from_pydict({"n": list(range(start, min(start + 3, 37)))}))
        out.write_parquet(str(tmp_path / "a.parquet"), pa.schema([("n", pa.int64())]))
    meta = pq.ParquetFile(tmp_path / "a.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [10, 10, 10, 7]
    assert pq.read_table(tmp_path / "a.parquet").column("n").to_pylist() == list(range(37))

    monkeypatch.setattr(spool, "ROW_GROUP_BYTES", 1000)  # wide rows: a group per ~1,000 bytes
    with ShardSpool() as out:
        for i in range(6):
            out.append(pa.RecordBatch.from_pydict({"t": ["x" * 600]}))
        out.write_parquet(str(tmp_path / "b.parquet"), pa.schema([("t", pa.string())]))
    assert pq.ParquetFile(tmp_path / "b.parquet").metadata.num_row_groups == 3


def test_an_empty_spool_writes_the_schema_and_no_row_group(tmp_path):
    with ShardSpool() as out:
        out.write_parquet(str(tmp_path / "e.parquet"), pa.schema([("id", pa.string())]))
    pf = pq.ParquetFile(tmp_path / "e.parquet")
    assert pf.metadata.num_row_groups == 0 and pf.schema_arrow.names == ["id"]


class _ArrowHighWater(Stage):
    """Keeps every document; records the most Arrow memory in use when it is called."""

    kind = "arrow_high_water"

    def __init__(self) -> None:
        super().__init__()
        self.most = 0

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        self.most = max(self.most, pa.total_allocated_bytes())
        return batch.append_column("_reason", pa.nulls(batch.num_rows, pa.string()))


def test_a_shard_holds_a_batch_in_memory_not_its_output(tmp_path, monkeypatch):
    # 4,000 documents of 5,000 characters (20 MB of text) in batches of 100: the shard's output used
    # to stay in memory until the shard ended (a 400 MB JSONL shard peaked at 569 MB, 329 now)
    path = tmp_path / "docs.jsonl"
    word = "lorem ipsum dolor sit amet "
    with path.open("w") as f:
        for i in range(4000):
            f.write(json.dumps({"id": str(i), "text": f"{i} " + word * 185}) + "\n")
    monkeypatch.setattr(spool, "SPILL_BYTES", 1 << 20)  # small batches gather up to 1 MiB before a spill
    probe = _ArrowHighWater()
    before = pa.total_allocated_bytes()
    stats = ShardRunner([probe], ReaderOptions(batch_size=100)).run(ShardTask(str(path), str(tmp_path / "out"), "docs")).stats
    assert stats["docs_kept"] == 4000
    assert probe.most - before < 5 << 20  # batches of ~0.5 MB; the whole output is 20 MB
    kept = pads.dataset(str(tmp_path / "out" / "kept")).to_table()
    assert kept.column("id").to_pylist() == [str(i) for i in range(4000)]
    assert [p for p in Path(tmp_path).rglob("*") if "spool" in p.name] == []


def test_a_killed_workers_spool_is_swept_by_the_next_spool(tmp_path, monkeypatch):
    """A worker killed mid-shard never runs its ``finally``: its spill files stayed in the
    temporary directory forever (found by killing runs). The next spool deletes those no process
    holds (its lock file's flock went with it), not those of live processes, whatever their
    process ids say (a first version went by pid and deleted a live spool of another container
    sharing /tmp: a review)."""
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", (
        "import os, pyarrow as pa\n"
        "from refinery.io import spool\n"
        "spool.SPILL_BYTES = 0  # spill every batch\n"
        f"s = spool.ShardSpool({str(tmp_path)!r})\n"
        "s.append(pa.RecordBatch.from_pydict({'x': [1, 2]}))\n"
        "os._exit(9)  # killed: no close, no finally\n")], cwd=str(Path(__file__).parents[1]))
    assert child.returncode == 9
    dead = [p.name for p in tmp_path.iterdir()]
    assert len(dead) == 1 and dead[0].startswith("refinery-spool-")
    monkeypatch.setattr(spool, "SPILL_BYTES", 0)
    live = ShardSpool(str(tmp_path))  # a spool of a running process
    spool._SWEPT.discard(str(tmp_path))
    live.append(pa.RecordBatch.from_pydict({"x": [1]}))  # sweeps the dead one
    live_dir = [p for p in tmp_path.iterdir()]
    assert len(live_dir) == 1 and live_dir[0].name != dead[0]
    spool._SWEPT.discard(str(tmp_path))
    assert spool.sweep_orphaned_spools(str(tmp_path)) == 0 and live_dir[0].exists()  # held: kept
    live.close()
    assert list(tmp_path.iterdir()) == []
    # housekeeping only: a temporary directory that cannot be listed is left alone
    spool._SWEPT.discard(str(tmp_path / "missing"))
    assert spool.sweep_orphaned_spools(str(tmp_path / "missing")) == 0


def test_a_full_spool_directory_is_named(tmp_path, monkeypatch):
    """A full temporary directory read as the run's output disk (a review): the error names it."""
    import errno

    monkeypatch.setattr(spool, "SPILL_BYTES", 0)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = ShardSpool(str(tmp_path))
    monkeypatch.setattr(pa, "OSFile", full)
    try:
        out.append(pa.RecordBatch.from_pydict({"x": [1]}))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC and "local spool directory" in str(exc) and "TMPDIR" in str(exc)
    else:
        raise AssertionError("no error")
    finally:
        out.close()


def test_a_file_system_without_flock_still_spools(tmp_path, monkeypatch):
    """Locking is housekeeping: where flock fails (some network file systems), every shard failed
    (a review); the spool goes on unlocked, and a sweep leaves it alone."""
    import errno

    def no_locks(*args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(spool.fcntl, "flock", no_locks)
    monkeypatch.setattr(spool, "SPILL_BYTES", 0)
    spool._SWEPT.discard(str(tmp_path))
    with ShardSpool(str(tmp_path)) as out:
        out.append(pa.RecordBatch.from_pydict({"x": [1, 2]}))
        spool._SWEPT.discard(str(tmp_path))
        assert spool.sweep_orphaned_spools(str(tmp_path)) == 0 and len(list(tmp_path.iterdir())) == 1
        out.write_parquet(str(tmp_path / "x.parquet"), pa.schema([("x", pa.int64())]))
    assert pq.read_table(tmp_path / "x.parquet").column("x").to_pylist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_row_groups_cut_where_the_rows_say_whatever_the_batching(tmp_path, monkeypatch) -> None:
    """Row groups end at the same rows, and the file has the same bytes, for the same rows appended
    in batches of 7 or 500 (a group cut by size used to end wherever the batch that crossed it did)."""
    monkeypatch.setattr(spool, "ROW_GROUP_BYTES", 50_000)  # a small bound, so size cuts happen
    texts = [("word " * (i % 97 + 1)) for i in range(3000)]
    table = pa.table({"id": [str(i) for i in range(3000)], "text": texts})
    files = []
    for size in (7, 500):
        uri = str(tmp_path / f"{size}.parquet")
        with ShardSpool() as out:
            for start in range(0, table.num_rows, size):
                out.append(table.slice(start, size))
            out.write_parquet(uri, table.schema)
        files.append(Path(uri).read_bytes())
        assert pq.ParquetFile(uri).num_row_groups > 2
    assert files[0] == files[1]
