"""Storage: one code path for local paths and s3:// on a real moto server."""

from __future__ import annotations

import hashlib
import os
import re
import time

import boto3
import pyarrow as pa
import pytest

from _fault_fixtures import FaultPolicy, through_proxy  # noqa: F401 - fixture
from refinery.io import fs, parquet


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/prefix"


def test_write_read_list_roundtrip(root):
    fs.write_bytes(fs.join(root, "a", "x.json"), b"{}")
    fs.write_bytes(fs.join(root, "b.json"), b"[1]")
    fs.write_bytes(fs.join(root, "_hidden.json"), b"no")
    files = fs.list_files(root, (".json",))
    assert [f.rsplit("/", 1)[1] for f in files] == ["x.json", "b.json"] or sorted(files) == files
    assert {f.rsplit("/", 1)[1] for f in files} == {"x.json", "b.json"}  # hidden files are not shards
    assert fs.read_bytes(fs.join(root, "b.json")) == b"[1]"
    assert fs.exists(fs.join(root, "a", "x.json")) and not fs.exists(fs.join(root, "nope"))


def test_parquet_roundtrip_is_zstd(root):
    table = pa.table({"id": ["a", "b"], "text": ["hello", None]})
    uri = fs.join(root, "kept", "s.parquet")
    parquet.write_table(table, uri)
    assert parquet.read_table(uri).equals(table)
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(pa.BufferReader(fs.read_bytes(uri))).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_failed_write_publishes_nothing(root):
    uri = fs.join(root, "half.parquet")
    with pytest.raises(RuntimeError):
        with fs.atomic_output(uri) as out:
            out.write(b"PAR1 partial bytes")
            raise RuntimeError("crash mid-write")
    assert not fs.exists(uri)
    if not root.startswith("s3://"):
        import os

        assert os.listdir(root) == [] if os.path.isdir(root) else True  # no temp file left behind


def test_an_s3_object_larger_than_the_spool_is_written_from_a_local_file(s3_bucket, monkeypatch):
    import tempfile

    monkeypatch.setattr(fs, "UPLOAD_SPOOL_BYTES", 1000)
    rolled = []
    real = tempfile.SpooledTemporaryFile

    class Watched(real):
        def rollover(self):
            rolled.append(self._max_size)
            super().rollover()

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", Watched)
    data = os.urandom(5000)
    uri = fs.join(s3_bucket, "big.bin")
    with fs.atomic_output(uri) as out:
        out.write(data[:2500])
        assert not fs.exists(uri)  # nothing published before the end
        out.write(data[2500:])
    assert rolled == [1000]  # went to disk past the spool size, not held in memory
    assert fs.read_bytes(uri) == data


def test_malformed_parquet_gives_clear_error(root):
    uri = fs.join(root, "bad.parquet")
    fs.write_bytes(uri, b"this is not parquet")
    with pytest.raises(parquet.ShardReadError, match="bad.parquet"):
        parquet.read_table(uri)
    good = fs.join(root, "good.parquet")
    parquet.write_table(pa.table({"x": [1]}), good)
    with pytest.raises(parquet.ShardReadError, match="lacks required column"):
        parquet.read_table(good, required=["text"])


@pytest.mark.parametrize("uri", ["s3://Bad_Bucket/x", "gs://bucket/x", "s3://bucket/../etc", ""])
def test_invalid_uris_refused(uri):
    with pytest.raises(fs.StorageError):
        fs.validate_uri(uri)


def test_s3_objects_visible_to_plain_boto3(s3_bucket, s3_server):
    fs.write_bytes(s3_bucket + "/dir/obj.bin", b"payload")
    bucket = s3_bucket[5:]
    body = boto3.client("s3", endpoint_url=s3_server).get_object(Bucket=bucket, Key="dir/obj.bin")["Body"].read()
    assert body == b"payload"


def test_sweep_temporaries_removes_only_leftovers_of_that_file(tmp_path):
    target = tmp_path / "kept" / "s1.parquet"
    target.parent.mkdir()
    (target.parent / ".tmp-abc-s1.parquet").write_bytes(b"half")  # the name before TMP_SUFFIX
    (target.parent / ".tmp-abd-s1.parquet.partial").write_bytes(b"half")
    (target.parent / ".tmp-def-s2.parquet.partial").write_bytes(b"other shard's")
    assert fs.sweep_temporaries(str(target)) == 2
    assert sorted(p.name for p in target.parent.iterdir()) == [".tmp-def-s2.parquet.partial"]
    assert fs.sweep_tree_temporaries(str(tmp_path)) == 1 and not list(target.parent.iterdir())


def test_a_temporary_file_is_not_matched_by_a_parquet_glob(tmp_path):
    # DuckDB's 'DIR/*.parquet' includes dot files: a half-written or abandoned temporary must not match
    target = tmp_path / "kept" / "s1.parquet"
    with fs.atomic_output(str(target)) as f:
        f.write(b"PAR1")
        temporaries = [p.name for p in target.parent.iterdir()]
    assert len(temporaries) == 1 and temporaries[0].startswith(".tmp-") and not temporaries[0].endswith(".parquet")


def test_files_published_together_appear_in_order_once_all_are_synced(tmp_path, monkeypatch):
    # a shard's kept, removed, samples and stats marker: fsynced at once (their journal commits
    # shared), then renamed in the order written, the marker last (session 44, h136)
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", "")), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", os.path.basename(b))), real_replace(a, b))[1])
    names = ["kept.parquet", "removed.parquet", "marker.json"]
    with fs.published_together():
        parquet.write_table(pa.table({"x": [1]}), str(tmp_path / names[0]))
        with fs.published_together():  # a nested block joins the outer one
            parquet.write_table(pa.table({"x": [2]}), str(tmp_path / names[1]))
        fs.write_bytes(str(tmp_path / names[2]), b"{}")
        assert not any((tmp_path / n).exists() for n in names)  # nothing visible before the end
        assert len(list(tmp_path.glob(".tmp-*"))) == 3 and not events
    assert events == [("fsync", "")] * 3 + [("replace", n) for n in names]
    assert parquet.read_table(str(tmp_path / names[1])).column("x").to_pylist() == [2]
    with pytest.raises(RuntimeError, match="stop"), fs.published_together():
        fs.write_bytes(str(tmp_path / "late.json"), b"{}")
        raise RuntimeError("stop")
    assert not (tmp_path / "late.json").exists() and not list(tmp_path.glob(".tmp-*"))  # nothing published
    fs.write_bytes(str(tmp_path / "alone.json"), b"[]")  # outside a block: synced and published at once
    assert (tmp_path / "alone.json").read_bytes() == b"[]" and events[-2:] == [("fsync", ""), ("replace", "alone.json")]


def test_file_versions_of_a_listing_and_of_one_file_change_with_a_same_size_rewrite(root):
    fs.write_bytes(fs.join(root, "a", "x.json"), b"{}")
    fs.write_bytes(fs.join(root, "b.json"), b"[1, 2]")
    files = fs.list_files(root, (".json",))
    versions = fs.file_versions(root, files)
    assert {u: size for u, (size, _) in versions.items()} == {fs.join(root, "a", "x.json"): 2, fs.join(root, "b.json"): 6}
    one = fs.join(root, "b.json")
    assert fs.file_versions(one, [one]) == {one: versions[one]} and fs.file_versions(root, []) == {}
    assert fs.file_versions(root, files) == versions  # nothing rewritten: the same versions
    time.sleep(0.05)  # past the kernel's coarse file-time tick (~4 ms); S3's ETag needs no wait
    fs.write_bytes(one, b"[3, 4]")  # rewritten in place, same size (within the same second on S3)
    again = fs.file_versions(root, files)
    assert again[one][0] == 6 and again[one][1] != versions[one][1]
    assert again[fs.join(root, "a", "x.json")] == versions[fs.join(root, "a", "x.json")]


def test_a_shard_reads_the_version_its_run_listed_or_fails(root):
    """Found by adversarial testing: an input rewritten after the run listed it was read as its
    new bytes under the listed version; restored later, a rerun trusted a shard of other content."""
    import gzip
    import json

    from refinery.runner import ShardRunner, ShardTask

    uri = fs.join(root, "in", "docs.jsonl.gz")
    fs.write_bytes(uri, gzip.compress(json.dumps({"id": "a", "text": "first version"}).encode()))
    listed = fs.file_versions(uri, [uri])[uri][1]
    time.sleep(0.05)  # past the kernel's coarse file-time tick
    fs.write_bytes(uri, gzip.compress(json.dumps({"id": "b", "text": "second version, other bytes"}).encode()))
    out = fs.join(root, "out")
    with pytest.raises(fs.StorageError, match=r"docs.jsonl.gz changed after the run listed it") as changed:
        ShardRunner([]).run(ShardTask(uri, out, "docs", listed))
    from refinery.executors.base import transient

    assert not transient(changed.value)  # no retry reads the listed version: fail the shard at once
    assert not fs.exists(fs.join(out, "kept", "docs.parquet"))
    now = fs.file_versions(uri, [uri])[uri][1]
    assert ShardRunner([]).run(ShardTask(uri, out, "docs", now)).stats["docs_read"] == 1
    assert ShardRunner([]).run(ShardTask(uri, fs.join(root, "out2"), "docs")).stats["docs_read"] == 1  # unpinned


def test_a_shard_stopped_as_its_marker_was_written_leaves_no_marker_without_outputs(root, monkeypatch):
    """Session 47 (h169): a Ray driver SIGKILLed mid-pass; Ray stopped its job's worker as the
    shard's marker PUT landed, and the clean-up deleted the kept file but left the marker: `status`
    called the shard finished with a lost kept file. The marker goes first now."""
    import gzip
    import json

    from refinery.runner import ShardRunner, ShardTask, finished_marker

    uri = fs.join(root, "in", "docs.jsonl.gz")
    fs.write_bytes(uri, gzip.compress(json.dumps({"id": "a", "text": "one document"}).encode()))
    task = ShardTask(uri, fs.join(root, "out"), "docs")
    real_write = fs.write_bytes

    def stopped_as_the_marker_lands(target: str, data: bytes) -> None:
        real_write(target, data)
        if target == task.stats_uri:
            raise KeyboardInterrupt  # the stop arrives as the write returns

    monkeypatch.setattr(fs, "write_bytes", stopped_as_the_marker_lands)
    with pytest.raises(KeyboardInterrupt):
        ShardRunner([]).run(task)
    monkeypatch.undo()
    left = [u for u in (task.stats_uri, task.kept_uri, task.removed_uri, task.samples_uri) if fs.exists(u)]
    assert left == [] and finished_marker(task) is None
    assert ShardRunner([]).run(task).stats["docs_read"] == 1 and finished_marker(task) is not None
    # a marker the clean-up cannot delete (storage failing as the stop came) keeps the outputs with
    # it, a finished whole shard: going on deleted the kept file under it (h173)
    real_delete = fs.delete

    def marker_undeletable(target: str) -> None:
        if target == task.stats_uri:
            raise fs.StorageError(f"cannot delete {target}: SlowDown")
        real_delete(target)

    monkeypatch.setattr(fs, "write_bytes", stopped_as_the_marker_lands)
    monkeypatch.setattr(fs, "delete", marker_undeletable)
    with pytest.raises(KeyboardInterrupt):
        ShardRunner([]).run(task, force=True)
    monkeypatch.undo()
    assert all(fs.exists(u) for u in (task.stats_uri, task.kept_uri, task.removed_uri, task.samples_uri))
    assert finished_marker(task) is not None


def test_file_versions_name_the_input_when_s3_refuses(s3_bucket):
    missing = "s3://no-such-bucket-here/prefix"
    with pytest.raises(fs.StorageError, match="under s3://no-such-bucket-here/prefix: .*NoSuchBucket"):
        fs.file_versions(missing, [missing + "/a.jsonl", missing + "/b.jsonl"])
    gone = s3_bucket + "/prefix"
    fs.write_bytes(gone + "/a.jsonl", b"{}\n")
    with pytest.raises(fs.StorageError, match=r"input file .*/prefix/b\.jsonl disappeared"):
        fs.file_versions(gone, [gone + "/a.jsonl", gone + "/b.jsonl"])


def test_one_listing_gives_the_files_and_their_versions(root):
    """``list_file_versions``: the files ``list_files`` lists, each with the version
    ``file_versions`` gives it; on S3 from the listing itself (sizes and ETags), so planning an S3
    input lists its prefix once. Directory markers and hidden directories are no files."""
    fs.write_bytes(fs.join(root, "a", "x.json"), b"{}")
    fs.write_bytes(fs.join(root, "b.json"), b"[1, 2]")
    fs.write_bytes(fs.join(root, "_tmp", "c.json"), b"{}")  # inside a hidden directory
    calls: list[str] = []
    if root.startswith("s3://"):
        bucket, key = root[5:].split("/", 1)
        boto3.client("s3", endpoint_url=fs.s3_endpoint()).put_object(Bucket=bucket, Key=f"{key}/empty/", Body=b"")
        fs.s3_client().meta.events.register("before-call.s3.ListObjectsV2", lambda **kw: calls.append("list"))
    versions = fs.list_file_versions(root, (".json",))
    assert calls == (["list"] if root.startswith("s3://") else [])  # names and versions from one listing
    assert list(versions) == fs.list_files(root, (".json",)) == sorted([fs.join(root, "a", "x.json"), fs.join(root, "b.json")])
    assert versions == fs.file_versions(root, list(versions))
    one = fs.join(root, "b.json")
    assert fs.list_file_versions(one) == {one: versions[one]}


def test_delete_tree_removes_a_directory_and_only_it(root):
    for name in ("gone/a.parquet", "gone/sub/b.json", "gone-not/c.json", "stays/d.json"):
        fs.write_bytes(fs.join(root, name), b"x")
    fs.delete_tree(fs.join(root, "gone"))
    fs.delete_tree(fs.join(root, "never-was"))  # nothing to delete: no error
    assert sorted(fs.list_files(root)) == [fs.join(root, "gone-not/c.json"), fs.join(root, "stays/d.json")]


def test_a_run_directory_inside_the_input_is_not_read_as_input(root):
    """``-i data -o data/run1`` is allowed (the input was a file); a later ``-i data`` read run1's
    kept and removed shards back as input (found by adversarial testing)."""
    for name in ("a.jsonl", "sub/b.jsonl", "run1/kept/a.parquet", "run1/filter/removed/a.parquet", "run1x/c.jsonl"):
        fs.write_bytes(fs.join(root, name), b"{}")
    fs.write_bytes(fs.join(root, "run1/run.json"), b'{"config": {}, "passes": [{"name": "filter"}]}')
    fs.write_bytes(fs.join(root, "sub/run.json"), b'{"crawler": "mine"}')  # a dataset's own run.json: not ours
    assert fs.list_files(root, (".jsonl", ".parquet")) == [fs.join(root, n) for n in ("a.jsonl", "run1x/c.jsonl", "sub/b.jsonl")]
    # a run directory given as the input itself is read as the user asked
    assert fs.list_files(fs.join(root, "run1"), (".parquet",)) == [fs.join(root, "run1/filter/removed/a.parquet"),
                                                                    fs.join(root, "run1/kept/a.parquet")]
    # as a run's input, one line naming the run, locally and on S3 (h178: it was left out with a
    # warning, the run's corpus lost among the other files)
    from refinery.config import ConfigError
    from refinery.plan import list_input_versions

    with pytest.raises(ConfigError, match=re.escape(f"input {root} holds the refinery run {fs.join(root, 'run1')} "
                                                    f"beside 4 input files of its own: ")):  # sub/run.json is JSON lines
        list_input_versions(root)
    # a run below that has not finished (no passes/filter.json) has no corpus: "give RUN/kept" named
    # a directory not there, or not the corpus; it says so and names the input it read (h192)
    alone = fs.join(root, "alone")
    fs.write_bytes(fs.join(alone, "run2/run.json"), b'{"config": {}, "input": "crawl/", "passes": [{"name": "filter"}]}')
    with pytest.raises(ConfigError, match=re.escape(
            f"input {alone} holds the refinery run {fs.join(alone, 'run2')}, and no input files of its own: it has not "
            f"finished its 'filter' pass, so it has no corpus ({fs.join(alone, 'run2/kept')}) yet (`refinery status "
            f"{fs.join(alone, 'run2')}`): finish it (the same `refinery run` command again), or give the input files it "
            f"read (crawl/)")):
        list_input_versions(alone)
    with pytest.raises(ConfigError, match=re.escape("of its own: a run's files are its output, not input: move the run "
                                                    f"out of {root}; it has not finished its 'filter' pass")):
        list_input_versions(root)


def test_s3_objects_are_read_by_ranged_gets_and_a_rewrite_mid_read_fails(s3_bucket, s3_server):
    """S3 inputs stream by ranged GETs (they were downloaded whole to a temporary file: a crawl's
    1 GB WARCs times 72 workers filled the disk; found by adversarial testing), pinned to the
    object's ETag so a rewrite while it is read fails instead of mixing two versions."""
    data = os.urandom(fs.S3RangeFile.BLOCK * 2 + 12345)
    uri = f"{s3_bucket}/big.bin"
    fs.write_bytes(uri, data)
    with fs.open_input(uri) as f:
        assert f.read(10) == data[:10]
        f.seek(len(data) - 100)
        assert f.read() == data[-100:]
        f.seek(fs.S3RangeFile.BLOCK - 5)
        assert f.read(fs.S3RangeFile.BLOCK + 10) == data[fs.S3RangeFile.BLOCK - 5 : 2 * fs.S3RangeFile.BLOCK + 5]
    assert fs.read_bytes(uri) == data
    with fs.open_input(uri) as f:
        assert f.read(100) == data[:100]
        fs.write_bytes(uri, data[::-1])  # rewritten under the reader
        f.seek(fs.S3RangeFile.BLOCK + 1)
        with pytest.raises(fs.StorageError, match="changed while it was read"):
            f.read(10)


def test_a_marker_or_a_small_shard_on_s3_is_one_get_and_a_replaced_one_still_fails(s3_bucket, through_proxy):
    """Every JSON or Parquet read on S3 was a HEAD (the object's ETag and size) and then GETs: a
    marker cost 2 requests, a small shard 3-4, and a run-directory check 4 (session 44, h139).
    Opening is now one GET whose answer carries the ETag and size (all of a small object), and
    the version a run listed rides on it as If-Match: a replaced input still fails."""
    marker, shard, run = f"{s3_bucket}/run/passes/filter.json", f"{s3_bucket}/run/kept/a.parquet", f"{s3_bucket}/run"
    fs.write_bytes(marker, b'{"pass": "filter"}')
    parquet.write_table(pa.table({"id": ["a", "b"], "text": ["x", "y"]}), shard)
    fs.write_bytes(f"{run}/run.json", b'{"passes": [], "config": {}}')
    listed = fs.file_versions(shard, [shard])[shard][1]
    requests: list[tuple[str, str]] = []
    through_proxy(FaultPolicy(when=lambda method, path: requests.append((method, path)) or False))

    def count(read):
        requests.clear()
        result = read()
        return result, [method for method, _ in requests]

    assert count(lambda: fs.read_json(marker)) == ({"pass": "filter"}, ["GET"])
    assert count(lambda: parquet.read_table(shard).num_rows) == (2, ["GET"])
    with fs.expecting_version(shard, listed):
        assert count(lambda: parquet.read_table(shard).num_rows) == (2, ["GET"])
    assert count(lambda: fs.is_run_directory(run)) == (True, ["GET"])
    assert count(lambda: fs.is_run_directory(f"{run}/kept")) == (False, ["GET"])  # no run.json: a 404
    assert count(lambda: fs.list_files(f"{run}/kept")) == ([shard], ["GET"])  # one LIST (was HEAD, LIST, LIST)
    fs.write_bytes(shard, fs.read_bytes(shard).replace(b"x", b"z"))  # replaced after the run listed it
    with fs.expecting_version(shard, listed), pytest.raises(fs.InputChangedError, match=r"a\.parquet changed after"):
        fs.open_input(shard, seekable=True)  # as the run's shard reader opens it
    with fs.expecting_version(shard, listed), pytest.raises(fs.InputChangedError, match=r"a\.parquet changed after"):
        fs.read_bytes(shard)


def test_a_record_read_if_any_is_one_get_and_only_a_missing_one_is_absent(s3_bucket, through_proxy, monkeypatch):
    """`if fs.exists(u): fs.read_json(u)` was a HEAD (and a LIST when absent) before each GET of a
    record, a HEAD and a LIST before each listing of stats/ or failed/ (h141). Now one request
    each; a 404 alone is "absent": a 500, a throttle or a damaged record is raised (h137)."""
    monkeypatch.setenv("REFINERY_S3_MAX_ATTEMPTS", "1")  # the failures below fail at once (no retries)
    marker, damaged, run = f"{s3_bucket}/run/passes/filter.json", f"{s3_bucket}/run/passes/bad.json", f"{s3_bucket}/run"
    fs.write_bytes(marker, b'{"pass": "filter"}')
    fs.write_bytes(damaged, b'{"pass": ')
    requests: list[str] = []
    failing: list[str] = []  # what the proxy fails (always), by a part of the request's path
    policy = FaultPolicy(always=True, when=lambda method, path: requests.append(method) or any(f in path for f in failing))
    through_proxy(policy)

    def count(read):
        requests.clear()
        return read(), list(requests)

    assert count(lambda: fs.read_json_if_any(marker)) == ({"pass": "filter"}, ["GET"])
    assert count(lambda: fs.read_json_if_any(f"{run}/run.json")) == (None, ["GET"])
    assert count(lambda: fs.read_bytes_if_any(marker)) == (b'{"pass": "filter"}', ["GET"])
    assert count(lambda: fs.list_files_if_any(f"{run}/failed", (".json",))) == ([], ["GET"])  # one LIST
    assert count(lambda: fs.list_files_if_any(f"{run}/passes", (".json",))) == ([damaged, marker], ["GET"])
    with pytest.raises(fs.DamagedRecord, match=r"bad\.json is damaged"):
        fs.read_json_if_any(damaged)
    # a look not followed by a read (h148): one HEAD, not pyarrow's HEAD and LIST when absent; an
    # empty pass directory's sizes one LIST, not 5; a SHA-256 one GET, not a HEAD and a GET
    from refinery.rundir import output_sizes, PassDir
    from refinery.tokens.format import file_sha256

    assert count(lambda: fs.file_exists(marker)) == (True, ["HEAD"])
    assert count(lambda: fs.file_exists(f"{run}/.claim")) == (False, ["HEAD"])
    assert count(lambda: fs.list_file_versions_if_any(f"{run}/kept", (".parquet",))) == ({}, ["GET"])
    assert count(lambda: output_sizes(PassDir(f"{run}/filter"))) == ({"kept": {}, "removed": {}, "samples": {}},
                                                                      ["GET"] * 3)
    assert count(lambda: file_sha256(marker)) == (hashlib.sha256(b'{"pass": "filter"}').hexdigest(), ["GET"])
    # h153: a delete is one DELETE, found or not (pyarrow's was a HEAD and a LIST when absent: each
    # failure record a successful shard clears; when there, two HEADs, the DELETE and a PUT of a
    # "failed/" marker); a dedup pass's Parquet read no HEAD; a missing index table one GET
    import pyarrow.parquet as pq

    def read_columns(uri, columns):  # as refinery.dedup.passes._read_columns reads a signature file
        with fs.open_parquet_input(uri) as f:
            return pq.read_table(f, columns=columns)

    signatures, table = f"{run}/dedup/signatures/part-00000.parquet", pa.table({"id": ["a", "b"], "x": [1, 2]})
    parquet.write_table(table, signatures)
    assert count(lambda: read_columns(signatures, ["id"]).column("id").to_pylist()) == (["a", "b"], ["GET"])
    assert count(lambda: parquet.read_table_if_any(signatures).equals(table)) == (True, ["GET"])
    assert count(lambda: parquet.read_table_if_any(f"{run}/dedup/removals/part-9.parquet")) == (None, ["GET"])
    assert count(lambda: fs.delete(f"{run}/failed/part-0.json")) == (None, ["DELETE"])
    fs.write_bytes(f"{run}/failed/part-1.json", b"{}")
    assert count(lambda: fs.delete(f"{run}/failed/part-1.json")) == (None, ["DELETE"])
    assert not fs.file_exists(f"{run}/failed/part-1.json") and not fs.exists(f"{run}/failed")  # no marker left
    failing.append("failed/part-2.json")
    policy.kinds = ("500",)
    with pytest.raises(fs.StorageError, match=r"cannot delete .*failed/part-2\.json.*\(InternalError\)"):
        fs.delete(f"{run}/failed/part-2.json")  # a failed delete is raised, not taken for "nothing there"
    failing.append("filter.json")
    for kind, code in (("500", "InternalError"), ("503", "SlowDown")):  # no answer, never "absent"
        policy.kinds = (kind,)
        with pytest.raises(fs.StorageError, match=rf"cannot open .*filter\.json.*\({code}\)"):
            fs.read_json_if_any(marker)
        with pytest.raises(fs.StorageError, match=r"filter\.json.*\(500\)|filter\.json.*\(503\)"):
            fs.file_exists(marker)  # a HEAD's error carries no code: its status
    failing.append("prefix=run%2Ffailed")  # a listing that fails is no empty directory
    with pytest.raises((fs.StorageError, OSError)):
        fs.list_files_if_any(f"{run}/failed")


def test_an_input_in_a_missing_bucket_says_so(s3_bucket):
    with pytest.raises(fs.StorageError, match=r"input not found: s3://no-such-bucket-zz/x \(the bucket no-such-bucket-zz does not exist\)"):
        fs.list_files("s3://no-such-bucket-zz/x")
    with pytest.raises(fs.StorageError, match=r"input not found: .*/nothing-here$"):
        fs.list_files(f"{s3_bucket}/nothing-here")


def test_reading_many_shard_stats_from_s3_reuses_its_connections(s3_bucket, caplog):
    """The driver reads a pass's shard stats 16 at a time (and launch uploads 32 stubs at once)
    through one boto3 client, whose pool kept 10 connections: an S3 run of 24 shards logged 36-63
    "urllib3.connectionpool: Connection pool is full, discarding connection" WARNINGs per run and
    opened a new connection for each request past 10 (found by adversarial testing on moto)."""
    import logging

    from refinery.stats.funnel import load_shard_stats

    stats_dir = f"{s3_bucket}/run/filter/stats"
    for i in range(96):
        fs.write_bytes(f"{stats_dir}/shard-{i:03d}.json", b'{"docs_read": 1}')
    caplog.set_level(logging.WARNING, logger="urllib3")
    for _ in range(3):
        assert len(load_shard_stats(f"{s3_bucket}/run/filter")) == 96
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


_NO_CREDENTIALS_CHILD = """
import json, sys
from refinery.executors.local import LocalExecutor
from refinery.io import fs
from refinery.runner import ShardTask, run_shard_task

src, out = sys.argv[1], sys.argv[2]
with LocalExecutor(1, max_retries=2, progress=False) as ex:
    [o] = ex.map(run_shard_task, [{"task": ShardTask(src, out, "a")}], label="filter", names=["a"],
                 shared={"spec": {"name": "t", "stages": [{"type": "pii"}]}})
try:
    fs.write_bytes(src + ".copy", b"x")
    upload = None
except fs.StorageError as exc:
    upload = str(exc)
from refinery.executors.ray import ray_task  # as a Ray worker runs a task (no cluster needed to call it)

_, _, on_ray, _ = ray_task(run_shard_task, {"spec": {"name": "t", "stages": [{"type": "pii"}]}},
                           {"task": ShardTask(src, out, "a")}, 1, "a")
from refinery.dedup.config import DedupConfig
from refinery.dedup.driver import run_dedup

try:  # a Ray dedup lists its input before it makes its executor: the advice is Ray's (review h122)
    run_dedup(src.rsplit("/", 1)[0], out + "-dedup", DedupConfig(method="url", executor={"type": "ray"}))
    ray_dedup = None
except Exception as exc:  # the dedup's input error, one line
    ray_dedup = str(exc)
print(json.dumps({"status": o.status, "attempts": o.attempts, "error": o.first_error_line, "upload": upload,
                  "on_ray": on_ray.splitlines()[0], "ray_dedup": ray_dedup}))
"""


def test_missing_credentials_say_they_are_not_sent_and_are_not_retried(s3_bucket, s3_server, tmp_path):
    """Found by a Ray trial: workers of a cluster started without AWS credentials failed each shard
    with botocore's bare "Unable to locate credentials", retried 3 times as transient."""
    import gzip
    import json
    import subprocess
    import sys
    from pathlib import Path

    src = f"{s3_bucket}/in/a.jsonl.gz"
    fs.write_bytes(src, gzip.compress(b'{"id": "1", "text": "hello world"}\n'))
    # a process with no credentials anywhere botocore looks: variables, files, instance metadata
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=s3_server, AWS_REGION="us-east-1", AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true")
    proc = subprocess.run([sys.executable, "-c", _NO_CREDENTIALS_CHILD, src, str(tmp_path / "out")], env=env,
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["status"] == "failed" and got["attempts"] == 1
    local = ("no AWS credentials in this process (botocore: Unable to locate credentials): set "
             "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run where an instance role is attached")
    assert got["error"] == f"refinery.io.fs.MissingCredentials: cannot open {src}: {local}"
    assert got["upload"] == f"upload to {src}.copy failed: {local}"
    # a Ray task's names its node and says credentials are not sent; on the local pool, no word of Ray (h119)
    assert got["on_ray"] == (f"refinery.io.fs.MissingCredentials: cannot open {src}: no AWS credentials on this Ray "
                             "worker's node (botocore: Unable to locate credentials); refinery does not send "
                             "credentials to a Ray cluster's workers: give every node its own (an instance role, "
                             "AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY where `ray start` runs; "
                             "docs/scale.md)")
    assert got["ray_dedup"] and "the Ray workers need their own too" in got["ray_dedup"], got["ray_dedup"]


def test_a_pass_holding_only_hidden_files_or_a_directory_marker_has_not_started(root, tmp_path):
    """`pass_started` (may a later pass's settings change without --force?) asked whether its
    directory existed: on S3 true for a prefix holding only the ``url_dedup/`` marker pyarrow
    leaves once the pass's ``index/`` is deleted, or only hidden files; such a pass has written
    nothing to mix (h156). A visible file anywhere under it still says it started."""
    import pyarrow.parquet as pq

    from refinery.config import parse_config
    from refinery.plan import pass_started, plan_run

    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"id": ["d0"], "text": ["a document " * 30]}), src / "p0.parquet")
    config = parse_config({"name": "ps", "stages": [{"type": "gopher_quality"}], "dedup": [{"method": "url"}]})
    plan = plan_run(config, str(src), fs.join(root, "run"))
    url_pass = plan.passes[1]
    index = fs.join(root, "run", "url_dedup", "index")
    assert not pass_started(plan, url_pass)
    fs.write_bytes(fs.join(index, "passes", "signatures.json"), b"{}")
    assert pass_started(plan, url_pass)
    fs.delete_tree(index)  # on S3 pyarrow leaves run/url_dedup/ (a directory marker) behind
    assert fs.exists(fs.join(root, "run", "url_dedup")) and not pass_started(plan, url_pass)
    fs.write_bytes(fs.join(root, "run", "url_dedup", ".tmp-1-x.parquet.partial"), b"x")
    fs.write_bytes(fs.join(root, "run", "url_dedup", "_scratch", "y.parquet"), b"x")
    assert not pass_started(plan, url_pass)
    fs.write_bytes(fs.join(index, "manifest.json"), b"{}")
    assert pass_started(plan, url_pass) and not fs.holds_files(fs.join(index, "manifest.json"))  # a directory's
