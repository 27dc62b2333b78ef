"""`refinery run` reads every Parquet input footer before any shard (refinery.input_footers), locally
and on S3, and a rerun skips the files it found good and unchanged since."""

from __future__ import annotations

import io
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from test_fs import root  # noqa: F401 - fixture: a local directory, then an S3 prefix on moto

from refinery.config import ConfigError, parse_config
from refinery.io import fs, parquet
from refinery.pipeline import run_pipeline

TEXT = "The committee met on Tuesday to review the annual budget and the plans for the new library. " * 3


def _config(**executor):
    return parse_config({"name": "footers", "stages": [{"type": "gopher_quality", "params": {"min_words": 5}}],
                         "executor": executor})


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _good(n: int) -> bytes:
    return _parquet(pa.table({"id": [f"d{n}"], "text": [TEXT]}))


def test_every_parquet_footer_is_checked_before_any_shard(root):
    """Session 48 read the first Parquet file's footer only: a later bad file failed its shard
    mid-run, and the run stopped after its first pass (max_failed_fraction 0)."""
    src, out = fs.join(root, "in"), fs.join(root, "out")
    fs.write_bytes(fs.join(src, "a.parquet"), _good(0))  # the first file is good
    fs.write_bytes(fs.join(src, "b.parquet"), _parquet(pa.table({"id": ["x"], "body": ["<p>x</p>"]})))
    good = _good(1)
    footer = int.from_bytes(good[-8:-4], "little")
    fs.write_bytes(fs.join(src, "c.parquet"), good[:-footer - 8 + 10] + b"\xff" * 40 + good[-footer - 8 + 50:])
    fs.write_bytes(fs.join(src, "d.parquet"), _parquet(pa.table({"text": [TEXT], "quote_lines": [[0]],
                                                                 "input_quote_lines": [[1]]})))
    fs.write_bytes(fs.join(src, "e.parquet"), _parquet(pa.table({"id": ["h"], "html": [b"<p>page</p>"]})))
    fs.write_bytes(fs.join(src, "f.parquet"), _parquet(pa.table({"id": ["i"], "text": [7]})))
    with pytest.raises(ConfigError, match=re.escape(
            f"Parquet shard {fs.join(src, 'b.parquet')} has neither a 'text' nor an 'html' column; it has ['id', 'body'] "
            "(and 4 more bad input file(s): c.parquet, d.parquet, e.parquet ...); no shard was run "
            "(--max-failed-fraction runs the other files and sets such files' shards aside)")):
        run_pipeline(_config(), src, out, workers=1, progress=False)
    assert not fs.list_files_if_any(out)  # nothing written
    # each file's own line: as its shard would fail, and as `refinery dedup` says a damaged file
    from refinery.input_footers import check_parquet_inputs

    files = [fs.join(src, n) for n in ("c.parquet", "d.parquet", "e.parquet", "f.parquet")]
    expected = [f"damaged Parquet file {files[0]}: ",
                f"Parquet shard {files[1]}: column 'quote_lines' is reserved and 'input_quote_lines' exists too",
                "stages[0] gopher_quality: reads text, but on Parquet pages without a text column (html only) "
                f"({files[2]}) documents have none until an 'extract' stage makes it",
                f"Parquet shard {files[3]}: column 'text' has type int64; expected strings"]
    for uri, line in zip(files, expected):
        with pytest.raises(ConfigError) as refused:
            check_parquet_inputs(_config(), [uri], ["x"], None, out)
        assert str(refused.value).startswith(line) and "\n" not in str(refused.value), str(refused.value)


def test_shards_allowed_to_fail_are_named_up_front_and_set_aside(tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    for n in range(4):
        (src / f"a{n}.parquet").write_bytes(_good(n))
    (src / "b.parquet").write_bytes(_parquet(pa.table({"id": ["x"], "body": ["<p>x</p>"]})))
    summary = run_pipeline(_config(max_failed_fraction=0.25), str(src), str(tmp_path / "out"), workers=1, progress=False)
    assert [o.name for o in summary.set_aside] == ["b"] and summary.stats["docs_kept"] == 4
    warned = [r.getMessage() for r in caplog.records if "cannot be read as documents" in r.getMessage()]
    assert warned == [f"1 input file(s) cannot be read as documents and will fail their shards (executor."
                      f"max_failed_fraction 0.25 sets them aside): Parquet shard {src / 'b.parquet'} has neither a "
                      f"'text' nor an 'html' column; it has ['id', 'body']"]


def test_a_rerun_reads_no_footer_of_a_file_checked_and_unchanged(root, monkeypatch):
    src, out = fs.join(root, "in"), fs.join(root, "out")
    for n in range(3):
        fs.write_bytes(fs.join(src, f"a{n}.parquet"), _good(n))
    read = []
    real = parquet.schema_and_metadata

    def counted(uri, data=None):
        read.append(fs.basename(uri))
        return real(uri, data)

    monkeypatch.setattr(parquet, "schema_and_metadata", counted)
    run_pipeline(_config(), src, out, workers=1, progress=False)
    assert sorted(read) == ["a0.parquet", "a1.parquet", "a2.parquet"]
    record = json.loads(fs.read_bytes(fs.join(out, "input_files.json")))["footers_checked"]
    assert record["bad"] == [] and len(record["by"]) == 16
    read.clear()
    run_pipeline(_config(), src, out, workers=1, progress=False)  # a rerun: nothing to read again
    assert read == []
    fs.write_bytes(fs.join(src, "a3.parquet"), _good(3))  # a new file: read; the others not
    run_pipeline(_config(), src, out, workers=1, progress=False, force=True)
    assert read == ["a3.parquet"]
    read.clear()
    stages = {"name": "footers", "stages": [{"type": "gopher_quality", "params": {"min_words": 5}},
                                            {"type": "gopher_repetition"}]}
    run_pipeline(parse_config(stages), src, out, workers=1, progress=False, force=True)  # other stages: all read
    assert sorted(read) == ["a0.parquet", "a1.parquet", "a2.parquet", "a3.parquet"]


def test_a_long_footer_check_says_how_far_it_is(tmp_path, monkeypatch, caplog):
    """100,000 footers on S3 take minutes before the first shard: the check said nothing meanwhile
    (session 49). A line every REFINERY_PROGRESS_LOG_EVERY_S, none after the last file."""
    files = []
    for n in range(4):
        (tmp_path / f"{n}.parquet").write_bytes(_good(n))
        files.append(str(tmp_path / f"{n}.parquet"))
    monkeypatch.setenv("REFINERY_PROGRESS_LOG_EVERY_S", "0")
    with caplog.at_level("INFO", logger="refinery.io"):
        assert [why for _, why in parquet.footer_problems(files, lambda uri, schema, meta: None)] == [None] * 4
    lines = [r.getMessage() for r in caplog.records if "Parquet footers" in r.getMessage()]
    assert [line.split(" (")[0] for line in lines] == [f"checked {n} of 4 Parquet footers" for n in (1, 2, 3)]
