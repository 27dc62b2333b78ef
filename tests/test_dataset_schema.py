"""One schema per run directory (issue 12, item 5): ``refinery.io.dataset.unify_schemas`` makes
every kept/ and removed/ shard share one schema, so pyarrow.dataset, DuckDB and Hugging Face
``datasets`` read the directory without options. Everything here uses the real libraries."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import yaml

from refinery.io import dataset, fs, parquet
from refinery.io.dataset import SchemaConflictError, unify_schemas
from tests._s3_fixtures import s3_root  # noqa: F401 - fixture
from tests.conftest import ROOT, SAMPLE_WARCS


# -- helpers -----------------------------------------------------------------------------------
def _footer_schemas(directory: Path) -> dict[str, pa.Schema]:
    return {p.name: pq.read_schema(p) for p in sorted(directory.glob("*.parquet"))}


def _inodes(directory: Path) -> dict[str, int]:
    # Atomic rewrites replace the file, so a new inode means "rewritten".
    return {p.name: p.stat().st_ino for p in directory.glob("*.parquet")}


def _read_with_all_three(directory: Path, cache: Path, monkeypatch) -> tuple[int, int, int]:
    """Row counts of ``directory/*.parquet`` from pyarrow.dataset, DuckDB and HF datasets, with
    no options (no schema passed, no unification asked for)."""
    import duckdb

    n_arrow = pads.dataset(str(directory), format="parquet").to_table().num_rows
    con = duckdb.connect()
    n_duck = con.execute(f"SELECT count(*) FROM '{directory}/*.parquet'").fetchall()[0][0]
    # Reading every column (not just counting) proves the schemas agree, not only the row counts.
    assert len(con.execute(f"SELECT * FROM '{directory}/*.parquet'").fetchall()) == n_duck
    con.close()
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # nothing is downloaded: local files only
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.load_dataset("parquet", data_files=f"{directory}/*.parquet", cache_dir=str(cache))
    return n_arrow, n_duck, ds["train"].num_rows


def _write(path: Path, table: pa.Table) -> None:
    parquet.write_table(table, str(path))


# -- hand-made shards --------------------------------------------------------------------------
def _hand_made(d: Path) -> None:
    d.mkdir(parents=True)
    # a: "score" all null, inferred as null; b: the union schema already; c: empty, no columns
    # (what an empty input writes today); d: lacks score/extra, int32 where b has int64.
    _write(d / "a.parquet", pa.table({"id": ["a0", "a1"], "text": ["x", None], "score": pa.nulls(2)}))
    _write(d / "b.parquet", pa.table({
        "id": ["b0", "b1", "b2"], "text": ["p", "q", "r"],
        "score": pa.array([0.5, None, 1.5], pa.float64()), "extra": pa.array([1, 2, 3], pa.int64()),
    }))
    _write(d / "c.parquet", pa.table({}))
    _write(d / "d.parquet", pa.table({"id": ["d0"], "extra": pa.array([7], pa.int32()), "text": ["z"]}))


def test_unify_hand_made_shards(tmp_path, monkeypatch):
    d = tmp_path / "removed"
    _hand_made(d)
    before = _inodes(d)

    schema = unify_schemas(str(d))

    assert schema == pa.schema([("id", pa.string()), ("text", pa.string()), ("score", pa.float64()),
                                ("extra", pa.int64())])
    assert all(s.equals(schema) for s in _footer_schemas(d).values()), _footer_schemas(d)
    after = _inodes(d)
    assert after["b.parquet"] == before["b.parquet"], "a shard that already agreed was rewritten"
    assert all(after[n] != before[n] for n in ("a.parquet", "c.parquet", "d.parquet"))
    # Values and row order survive; missing columns are nulls; still zstd.
    assert pq.read_table(d / "a.parquet").to_pylist() == [
        {"id": "a0", "text": "x", "score": None, "extra": None},
        {"id": "a1", "text": None, "score": None, "extra": None},
    ]
    assert pq.read_table(d / "d.parquet").to_pylist() == [{"id": "d0", "text": "z", "score": None, "extra": 7}]
    assert pq.read_table(d / "c.parquet").num_rows == 0
    assert pq.ParquetFile(d / "c.parquet").metadata.num_row_groups == 0  # see the next test
    for p in d.glob("*.parquet"):
        md = pq.ParquetFile(p).metadata
        if md.num_row_groups:
            assert md.row_group(0).column(0).compression == "ZSTD"
    assert not [p for p in d.iterdir() if p.name.startswith(".")], "temporary files left behind"

    assert _read_with_all_three(d, tmp_path / "hf", monkeypatch) == (6, 6, 6)


def test_unify_is_idempotent_and_reads_footers_only(tmp_path, monkeypatch):
    d = tmp_path / "kept"
    _hand_made(d)
    first = unify_schemas(str(d))
    inodes = _inodes(d)

    def forbidden(*args, **kwargs):
        raise AssertionError("a directory that already agrees must not be read or written in full")

    monkeypatch.setattr(dataset.parquet, "read_table", forbidden)
    monkeypatch.setattr(dataset.parquet, "write_table", forbidden)
    monkeypatch.setattr(dataset.fs, "atomic_output", forbidden)
    assert unify_schemas(str(d)) == first
    assert _inodes(d) == inodes


def test_empty_row_group_is_rewritten_for_hf_datasets(tmp_path, monkeypatch):
    """pq.write_table writes one 0-row row group for an empty table; HF datasets rejects such a
    file ("BatchSize must be greater than 0"), so empty shards are rewritten without it."""
    d = tmp_path / "kept"
    d.mkdir()
    _write(d / "a.parquet", pa.table({"id": ["a"]}))
    # as pyarrow (and refinery before session 42) writes an empty table
    pq.write_table(pa.table({"id": pa.array([], pa.string())}), d / "b.parquet")
    assert pq.ParquetFile(d / "b.parquet").metadata.num_row_groups == 1
    before = _inodes(d)
    unify_schemas(str(d))
    assert _inodes(d)["a.parquet"] == before["a.parquet"] and _inodes(d)["b.parquet"] != before["b.parquet"]
    assert pq.ParquetFile(d / "b.parquet").metadata.num_row_groups == 0
    assert pq.read_schema(d / "b.parquet") == pa.schema([("id", pa.string())])
    assert _read_with_all_three(d, tmp_path / "hf", monkeypatch) == (1, 1, 1)


def test_conflicting_types_name_column_and_shards(tmp_path):
    d = tmp_path / "removed"
    d.mkdir()
    _write(d / "s1.parquet", pa.table({"id": ["a"], "n": pa.array([1], pa.int64())}))
    _write(d / "s2.parquet", pa.table({"id": ["b"], "n": ["one"]}))
    _write(d / "s3.parquet", pa.table({}))
    before = _inodes(d)
    with pytest.raises(SchemaConflictError) as err:
        unify_schemas(str(d))
    message = str(err.value)
    assert "'n'" in message and "s1.parquet" in message and "s2.parquet" in message
    assert "int64" in message and "string" in message
    assert _inodes(d) == before, "nothing may be rewritten when the union does not exist"


def test_missing_or_empty_directory_has_empty_schema(tmp_path):
    assert unify_schemas(str(tmp_path / "nope")) == pa.schema([])
    (tmp_path / "empty").mkdir()
    assert unify_schemas(str(tmp_path / "empty")) == pa.schema([])
    declared = pa.schema([("id", pa.string())])
    assert unify_schemas(str(tmp_path / "empty"), schema=declared) == declared


def test_declared_schema_fixes_order_and_fills_column_less_shards(tmp_path):
    """removed/ of a pass that removed nothing: every shard empty and column-less. Only a
    declared schema can give it columns; its columns also come first, whatever shard sorts first."""
    d = tmp_path / "removed"
    d.mkdir()
    _write(d / "a.parquet", pa.table({}))
    _write(d / "b.parquet", pa.table({}))
    declared = pa.schema([("id", pa.string()), ("text", pa.string()), ("removed_stage", pa.string()),
                          ("removed_metric", pa.float64())])
    assert unify_schemas(str(d), schema=declared) == declared
    assert all(s == declared for s in _footer_schemas(d).values())
    import duckdb  # HF datasets refuses a dataset with no rows at all ("corresponds to no data")

    assert pads.dataset(str(d), format="parquet").to_table().schema == declared
    assert duckdb.connect().execute(f"SELECT count(*) FROM '{d}/*.parquet'").fetchall() == [(0,)]

    # shards with rows: the declared columns first, then the shards' own metric columns
    _write(d / "c.parquet", pa.table({"id": ["c"], "gopher_word_count": pa.array([3], pa.int32()),
                                      "removed_metric": pa.array([0.5], pa.float32()), "text": [None]}))
    schema = unify_schemas(str(d), schema=declared)
    assert schema.names == ["id", "text", "removed_stage", "removed_metric", "gopher_word_count"]
    assert schema.field("removed_metric").type == pa.float64()
    assert pq.read_table(d / "c.parquet").to_pylist() == [
        {"id": "c", "text": None, "removed_stage": None, "removed_metric": 0.5, "gopher_word_count": 3}]

    with pytest.raises(SchemaConflictError, match="declared schema"):
        unify_schemas(str(d), schema=pa.schema([("gopher_word_count", pa.string())]))


def test_nullability_survives_only_where_no_shard_needs_nulls(tmp_path):
    d = tmp_path / "kept"
    d.mkdir()
    req = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("m", pa.float32(), nullable=False)])
    _write(d / "a.parquet", pa.table({"id": ["a"], "m": [1.0]}, schema=req))
    _write(d / "b.parquet", pa.table({"id": ["b"]}, schema=pa.schema([req.field("id")])))
    _write(d / "c.parquet", pa.table({}))  # no rows: needs no nulls
    schema = unify_schemas(str(d))
    assert not schema.field("id").nullable  # every shard with rows has it, non-null
    assert schema.field("m").nullable and schema.field("m").type == pa.float32()  # b has rows, no m
    assert pq.read_table(d / "b.parquet").column("m").to_pylist() == [None]


# -- concat ------------------------------------------------------------------------------------
def test_concat_all_empty_uses_known_schema():
    known = pa.schema([("id", pa.string()), ("text", pa.string())])
    no_columns = pa.record_batch([], schema=pa.schema([]))
    assert parquet.concat([], known).schema == known
    assert parquet.concat([no_columns], known).schema == known
    # columns only the empty batches carry are kept after the known ones; null types promoted
    with_metric = pa.table({"text": pa.nulls(0), "score": pa.array([], pa.float32())})
    assert parquet.concat([no_columns, with_metric], known).schema == pa.schema(
        [("id", pa.string()), ("text", pa.string()), ("score", pa.float32())])
    # unchanged without a schema, and when a batch has rows
    assert parquet.concat([no_columns, with_metric]).schema == with_metric.schema
    rows = pa.table({"id": ["a"], "x": [1]})
    assert parquet.concat([with_metric, rows], known).equals(rows)


# -- a real run --------------------------------------------------------------------------------
def _empty_inputs(src: Path) -> None:
    from warcio.warcwriter import WARCWriter

    (src / "empty.warc").write_bytes(b"")  # an empty input file
    with open(src / "info_only.warc.gz", "wb") as f:  # a valid WARC with no documents
        writer = WARCWriter(f, gzip=True)
        writer.write_record(writer.create_warcinfo_record("info_only.warc.gz", {"software": "refinery-test"}))


def test_real_run_reads_as_one_dataset(tmp_path, monkeypatch):
    from refinery.config import parse_config
    from refinery.pipeline import run_pipeline

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(SAMPLE_WARCS / "warc_sample-0000.warc.gz", src)  # 22 docs, most kept
    shutil.copy(SAMPLE_WARCS / "cc_whirlwind_whirlwind.warc.gz", src)  # 1 doc, removed: empty kept shard
    _empty_inputs(src)
    # The paper's document stages (one document pass: OUT/kept and OUT/removed), not the
    # corpus-level passes, so the test stays fast and about shard schemas.
    recipe = yaml.safe_load((ROOT / "configs" / "refinedweb.yaml").read_text())
    config = parse_config({"name": "stable-dataset", "stages": recipe["stages"], "reader": recipe["reader"]})
    out = tmp_path / "run"
    summary = run_pipeline(config, str(src), str(out), workers=2, progress=False)
    assert not summary.failed
    expected = {"kept": summary.stats["docs_kept"], "removed": summary.stats["docs_removed"]}
    assert summary.stats["docs_read"] == 23 and expected["kept"] > 0 and expected["removed"] > 0

    for sub in ("kept", "removed"):
        schema = unify_schemas(str(out / sub))  # the pipeline may have done so already: idempotent
        footers = _footer_schemas(out / sub)
        assert len(footers) == 4  # empty.warc and info_only.warc.gz have shards too
        assert all(s.equals(schema) for s in footers.values()), {n: s.names for n, s in footers.items()}
        assert {"id", "url", "text"} <= set(schema.names)
        if sub == "removed":
            assert {"removed_stage", "removed_reason", "removed_metric", "removed_evidence"} <= set(schema.names)
        n = expected[sub]
        assert _read_with_all_three(out / sub, tmp_path / f"hf-{sub}", monkeypatch) == (n, n, n)


# -- S3 ----------------------------------------------------------------------------------------
def test_unify_on_s3(s3_root, monkeypatch):  # noqa: F811 - fixture
    base = fs.join(s3_root, "removed")
    shards = {
        "a": pa.table({"id": ["a0", "a1"], "text": ["x", None], "score": pa.nulls(2)}),
        "b": pa.table({"id": ["b0"], "text": ["p"], "score": pa.array([0.5], pa.float64()),
                       "extra": pa.array([1], pa.int64())}),
        "c": pa.table({}),
        "sub/d": pa.table({"id": ["d0"], "extra": pa.array([7], pa.int32())}),  # nested: recursive
    }
    for name, table in shards.items():
        parquet.write_table(table, fs.join(base, f"{name}.parquet"))

    schema = unify_schemas(base)

    assert schema.names == ["id", "text", "score", "extra"]
    uris = fs.list_files(base, suffixes=(".parquet",))
    assert len(uris) == 4
    assert all(dataset.read_footer(u).schema.equals(schema) for u in uris)
    filesystem, path = fs.resolve(base)
    table = pads.dataset(path, filesystem=filesystem, format="parquet").to_table()
    assert table.num_rows == 4 and table.schema.equals(schema)
    assert parquet.read_table(fs.join(base, "sub/d.parquet")).to_pylist() == [
        {"id": "d0", "text": None, "score": None, "extra": 7}]

    # Already unified: footers only (ranged GETs), nothing read in full or written.
    def forbidden(*args, **kwargs):
        raise AssertionError("must not read or write whole shards")

    monkeypatch.setattr(dataset.parquet, "read_table", forbidden)
    monkeypatch.setattr(dataset.parquet, "write_table", forbidden)
    monkeypatch.setattr(dataset.fs, "atomic_output", forbidden)
    assert unify_schemas(base) == schema


def test_s3_footer_larger_than_first_range(s3_root, monkeypatch):  # noqa: F811 - fixture
    uri = fs.join(s3_root, "wide.parquet")
    table = pa.table({f"column_{i:04d}": pa.array([i], pa.int64()) for i in range(600)})
    parquet.write_table(table, uri)
    monkeypatch.setattr(dataset, "_TAIL_BYTES", 1024)  # force the second, exact-size request
    footer = dataset.read_footer(uri)
    assert footer.schema == table.schema and footer.num_rows == 1
    assert os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://127.0.0.1")


def test_shards_are_written_in_the_pass_schema_and_closing_a_pass_rewrites_none(tmp_path, monkeypatch):
    """Found by adversarial testing: a removed shard's columns depended on how far its documents
    got, and an empty Parquet input shard went through no stage, so closing a pass rewrote almost
    every shard, one after the other (on S3 as long as the pass). Shards are now written in the
    pass's schema; closing reads footers only, in every pass of the whole recipe."""
    import refinery.io.dataset as ds_module
    from refinery.config import load_config
    from refinery.pipeline import run_pipeline

    rewritten: list[str] = []
    original = ds_module._rewrite
    monkeypatch.setattr(ds_module, "_rewrite", lambda footer, schema: (rewritten.append(footer.uri), original(footer, schema)))
    out = tmp_path / "run"
    summary = run_pipeline(load_config(ROOT / "configs" / "refinedweb.yaml"), str(SAMPLE_WARCS), str(out), workers=1,
                           progress=False)
    assert not summary.failed and rewritten == []
    for directory in [out / "kept", *(p / sub for p in out.iterdir() if (p / "stats").is_dir() for sub in ("kept", "removed"))]:
        if directory.is_dir():
            schemas = {pq.read_schema(f) for f in directory.glob("*.parquet")}
            assert len(schemas) <= 1, directory


def test_an_input_column_dictionary_encoded_in_one_file_and_plain_in_another(tmp_path):
    """Found by adversarial testing: a pandas categorical column in one input file and a plain
    string one in another ran every shard, then the pass could never close ("column 'lang'
    cannot be unified"), and a rerun failed the same way."""
    from refinery.config import parse_config
    from refinery.pipeline import run_pipeline

    text = "The history of the village is long and it has been shaped by the river that runs through it. " * 3
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": ["a0", "a1"], "text": [text, "short"],
                             "lang": pa.array(["en", "en"]).dictionary_encode()}), tmp_path / "in" / "part-0.parquet")
    pq.write_table(pa.table({"id": ["b0", "b1"], "text": [text, "short"], "lang": ["en", "de"]}),
                   tmp_path / "in" / "part-1.parquet")
    config = parse_config({"name": "t", "stages": [{"type": "gopher_quality", "params": {"min_words": 5}}]})
    summary = run_pipeline(config, str(tmp_path / "in"), str(tmp_path / "out"), workers=1, progress=False)
    assert not summary.failed and summary.stats["docs_read"] == 4
    kept = pq.read_table(tmp_path / "out" / "kept")
    assert pa.types.is_string(kept.schema.field("lang").type) or pa.types.is_large_string(kept.schema.field("lang").type)
    assert sorted(kept.column("lang").to_pylist()) == ["en", "en"]
    assert sorted(pq.read_table(tmp_path / "out" / "removed").column("lang").to_pylist()) == ["de", "en"]


def test_input_columns_named_like_a_stages_columns_are_kept_as_input_columns(tmp_path):
    """Found by adversarial testing: FineWeb-style inputs carry their own ``language`` and
    ``language_score``; our language_id overwrote them for the documents it saw and kept them
    for those removed before it (two provenances in one column), and a string ``language_score``
    failed every shard in which a document was removed before language_id."""
    from refinery.config import parse_config
    from refinery.pipeline import run_pipeline

    english = "The history of the village is long and it has been shaped by the river that runs through it. " * 4
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": [english, "too short", english + " again"],
                             "language": ["xx", "xx", "xx"], "language_score": ["high", "low", "high"]}),
                   tmp_path / "in" / "fw.parquet")
    config = parse_config({"name": "t", "stages": [{"type": "gopher_quality", "params": {"min_words": 5}},
                                                   {"type": "language_id"}]})
    summary = run_pipeline(config, str(tmp_path / "in"), str(tmp_path / "out"), workers=1, progress=False)
    assert not summary.failed
    kept = pq.read_table(tmp_path / "out" / "kept").to_pylist()
    removed = pq.read_table(tmp_path / "out" / "removed").to_pylist()
    assert sorted(r["id"] for r in kept) == ["a", "c"] and [r["id"] for r in removed] == ["b"]
    assert {r["language"] for r in kept} == {"en"} and all(isinstance(r["language_score"], float) for r in kept)
    assert [r["input_language"] for r in kept + removed] == ["xx", "xx", "xx"]
    assert sorted(r["input_language_score"] for r in kept + removed) == ["high", "high", "low"]
    assert removed[0]["language"] is None  # removed before language_id: no value of ours, none of theirs
    # a run over that run's corpus (and over that one's): each earlier value kept under a free name
    again = run_pipeline(config, str(tmp_path / "out" / "kept"), str(tmp_path / "out2"), workers=1, progress=False)
    third = run_pipeline(config, str(tmp_path / "out2" / "kept"), str(tmp_path / "out3"), workers=1, progress=False)
    assert not again.failed and not third.failed
    row = pq.read_table(tmp_path / "out3" / "kept").to_pylist()[0]
    assert row["language"] == "en" and row["input_language"] == "xx" and row["input_language_2"] == "en"


def test_empty_index_and_token_ids_shards_have_no_row_group(tmp_path, monkeypatch):
    """Found by h112: every Parquet file refinery writes outside kept/ and removed/ (a dedup pass's
    index/signatures, removals and cuts, a token shard's .ids.parquet) was written with one 0-row
    row group when empty, so `datasets.load_dataset("parquet", ...)` failed on any of those
    directories holding one empty shard ("BatchSize must be greater than 0")."""
    from refinery.dedup.minhash import LshParams
    from refinery.dedup.passes import signature_task
    from refinery.tokens import format as token_format

    kept = tmp_path / "kept"
    kept.mkdir()
    text = "the river runs through the old village and past the mill " * 3
    _write(kept / "a.parquet", pa.table({"id": ["a0"], "text": [text]}))
    _write(kept / "b.parquet", pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}))
    lsh = vars(LshParams(backend="numpy"))
    for method, sig_slots in (("minhash", 16), ("exact", 0)):  # MinHash writes its own way (no compression of sig)
        index = tmp_path / method
        for i, name in enumerate(("a", "b")):
            signature_task(str(kept / f"{name}.parquet"), name, i, str(index / f"{name}.parquet"), method, lsh,
                           sig_slots=sig_slots)
        assert pq.ParquetFile(index / "b.parquet").metadata.num_row_groups == 0, method
        assert _read_with_all_three(index, tmp_path / f"hf-{method}", monkeypatch) == (1, 1, 1)

    tokens = tmp_path / "tokens"
    token_format.write_shard(str(tokens), "a", np.array([5, 6, 0], np.uint16), np.array([0, 3]), ["a0"], 50257, "x" * 64)
    token_format.write_shard(str(tokens), "b", np.array([], np.uint16), np.array([0]), [], 50257, "x" * 64)
    ids = tmp_path / "ids"  # the sidecars alone: the token directory also holds .bin/.idx/.json
    ids.mkdir()
    for p in tokens.glob("*.ids.parquet"):
        shutil.copy(p, ids / p.name)
    assert pq.ParquetFile(ids / "b.ids.parquet").metadata.num_row_groups == 0
    assert _read_with_all_three(ids, tmp_path / "hf-ids", monkeypatch) == (1, 1, 1)
