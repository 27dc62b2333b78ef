"""Common Crawl inputs: a paths manifest (``warc.paths.gz``) on S3 reads exactly the WARCs it
lists, and a crawl directory is cut to its ``warc/`` subset (robots.txt, crawl diagnostics, WAT and
WET files are not pages). Real WARCs on a moto S3 server laid out as a crawl is."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from refinery.config import ConfigError, parse_config
from refinery.io import fs
from refinery.io.manifest import cc_subset, common_root, read_manifest
from refinery.pipeline import run_pipeline
from refinery.plan import plan_run

ROOT = Path(__file__).resolve().parents[1]

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "warc"
CRAWL = "crawl-data/CC-MAIN-2024-22"
SPEC = {"name": "cc", "stages": [{"type": "extract"}]}


def _crawl(bucket: str) -> dict[str, str]:
    """A crawl on S3: two segments of page WARCs plus the other subsets, each a real WARC."""
    layout = {
        f"{CRAWL}/segments/111.1/warc/a.warc.gz": "resiliparse_warcfile.warc.gz",
        f"{CRAWL}/segments/111.1/robotstxt/a.warc.gz": "warc_sample-0000.warc.gz",
        f"{CRAWL}/segments/111.1/crawldiagnostics/a.warc.gz": "warc_sample-0001.warc.gz",
        f"{CRAWL}/segments/222.2/warc/b.warc.gz": "cc_whirlwind_whirlwind.warc.gz",
        f"{CRAWL}/segments/222.2/warc/c.warc.gz": "warc_sample-0000.warc.gz",
        f"{CRAWL}/segments/222.2/wet/b.warc.wet.gz": "warc_sample-0001.warc.gz",
    }
    for key, name in layout.items():
        fs.write_bytes(f"{bucket}/{key}", (SAMPLE / name).read_bytes())
    return layout


def test_manifest_on_s3_reads_only_the_listed_warcs(s3_bucket, tmp_path):
    _crawl(s3_bucket)
    listed = [f"{CRAWL}/segments/111.1/warc/a.warc.gz", f"{CRAWL}/segments/222.2/warc/b.warc.gz",
              f"{CRAWL}/segments/111.1/robotstxt/a.warc.gz"]  # not a page subset: left out
    manifest = f"{s3_bucket}/{CRAWL}/warc.paths.gz"
    fs.write_bytes(manifest, gzip.compress(("\n".join(listed) + "\n").encode()))

    plan = plan_run(parse_config(SPEC), manifest, str(tmp_path / "out"))
    assert plan.input_files == [f"{s3_bucket}/{listed[0]}", f"{s3_bucket}/{listed[1]}"]  # c.warc.gz not listed
    assert plan.shard_names() == ["111.1__warc__a", "222.2__warc__b"]

    summary = run_pipeline(parse_config(SPEC), manifest, str(tmp_path / "out"), workers=1, progress=False)
    assert set(summary.passes.values()) == {"done"}
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["shards"] == 2
    assert json.loads((tmp_path / "out" / "run.json").read_text())["input"] == manifest
    # the subsets a config asks for are read too
    wanted = parse_config(SPEC | {"reader": {"cc_subsets": ["warc", "robotstxt"]}})
    assert len(plan_run(wanted, manifest, str(tmp_path / "out2")).input_files) == 3


def test_wat_subset_is_refused_naming_the_key():
    # WAT files (.warc.wat.gz) hold metadata, not documents: asking for them planned a run that
    # listed them, skipped them and stopped with "no input shards"
    with pytest.raises(ConfigError, match=r"^invalid config <dict>: reader\.cc_subsets: wat files hold metadata, "
                                          r"not documents, .*readable subsets: warc, wet .*crawldiagnostics$"):
        parse_config(SPEC | {"reader": {"cc_subsets": ["warc", "wat"]}})


def _wet_file(docs: list[dict]) -> bytes:
    """A WET file as Common Crawl writes it: a warcinfo record, then one ``conversion`` record
    (text/plain, UTF-8) per page, one gzip member each."""
    import io

    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    writer.write_record(writer.create_warcinfo_record("x.warc.wet.gz", {"software": "refinery-test"}))
    for d in docs:
        writer.write_record(writer.create_warc_record(
            d["url"], "conversion", payload=io.BytesIO(d["text"].encode()),
            warc_headers_dict={"Content-Type": "text/plain", "WARC-Identified-Content-Language": "eng"}))
    return buf.getvalue()


def test_wet_subset_is_read_as_text_documents(tmp_path, monkeypatch):
    """``cc_subsets: [wet]`` reads a crawl's WET files: every conversion record is a document whose
    text is the record's, kept by extract as it is; language ID may come before extract there."""
    import pyarrow.parquet as pq

    docs = [{"url": f"https://site{i}.example/page", "text": json.loads(line)["text"]}
            for i, line in enumerate(gzip.open(ROOT / "data" / "sample" / "cc_docs" / "multiple_files_cc_en_head-0091.jsonl.gz", "rt"))]
    segment = tmp_path / "crawl-data" / "CC-MAIN-2024-22" / "segments" / "1715.1"
    (segment / "wet").mkdir(parents=True)
    (segment / "wet" / "CC-MAIN-1-00000.warc.wet.gz").write_bytes(_wet_file(docs))
    (segment / "warc").mkdir()
    (segment / "warc" / "CC-MAIN-1-00000.warc.gz").write_bytes((ROOT / "data" / "sample" / "warc" / "warc_sample-0000.warc.gz").read_bytes())
    config = parse_config({"name": "wet", "reader": {"cc_subsets": ["wet"]}, "stages": [
        {"type": "language_id", "params": {"languages": ["en"], "min_score": 0.0}}, {"type": "extract"}]})
    out = tmp_path / "out"
    from refinery.stages import extract

    started = []
    monkeypatch.setattr(extract._HelperPool, "start_idle", lambda pool, key: started.append(key))
    summary = run_pipeline(config, str(tmp_path / "crawl-data"), str(out), workers=1, progress=False)
    assert not summary.failed and summary.stats["docs_read"] == len(docs)  # the page WARC is not read
    assert started == []  # WET text needs no extraction helper: none is started ahead of the first batch
    kept = pq.read_table(next((out / "kept").glob("*.parquet")))
    assert sorted(kept.column("text").to_pylist()) == sorted(d["text"] for d in docs)
    assert set(kept.column("extract_path").to_pylist()) == {"input"}
    assert sorted(kept.column("url").to_pylist()) == sorted(d["url"] for d in docs)
    # on page WARCs the same order is refused: they have no text before extract
    with pytest.raises(ConfigError, match="reads text, but on WARC input"):
        plan_run(parse_config({"name": "w", "stages": config.model_dump()["stages"]}), str(tmp_path / "crawl-data"), str(tmp_path / "o2"))


def test_crawl_directory_is_cut_to_page_warcs(s3_bucket, tmp_path):
    _crawl(s3_bucket)
    plan = plan_run(parse_config(SPEC), f"{s3_bucket}/{CRAWL}", str(tmp_path / "out"))
    assert [fs.basename(f) for f in plan.input_files] == ["a.warc.gz", "b.warc.gz", "c.warc.gz"]
    assert all(cc_subset(f) == "warc" for f in plan.input_files)


def test_local_manifest_with_a_base_and_bad_manifests(tmp_path, s3_bucket):
    _crawl(s3_bucket)
    manifest = tmp_path / "warc.paths"
    manifest.write_text(f"# two pages\n\n{CRAWL}/segments/222.2/warc/c.warc.gz\n{CRAWL}/segments/222.2/warc/c.warc.gz\n")
    assert read_manifest(str(manifest), base=s3_bucket) == [f"{s3_bucket}/{CRAWL}/segments/222.2/warc/c.warc.gz"]
    cfg = parse_config(SPEC | {"reader": {"manifest_base": s3_bucket}})
    assert len(plan_run(cfg, str(manifest), str(tmp_path / "out")).input_files) == 1

    only_wet = tmp_path / "wet.paths.gz"
    only_wet.write_bytes(gzip.compress(f"{CRAWL}/segments/222.2/wet/b.warc.wet.gz\n".encode()))
    with pytest.raises(ConfigError, match=r"wet.paths.gz lists no input in subset\(s\) warc"):
        plan_run(parse_config(SPEC), str(only_wet), str(tmp_path / "out3"))
    broken = tmp_path / "broken.paths.gz"
    broken.write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(ConfigError, match="broken.paths.gz is not valid gzip"):
        plan_run(parse_config(SPEC), str(broken), str(tmp_path / "out4"))
    with pytest.raises(ConfigError, match="cannot read input manifest .*missing.paths"):
        plan_run(parse_config(SPEC), str(tmp_path / "missing.paths"), str(tmp_path / "out5"))


def test_common_root():
    assert common_root(["s3://b/x/1/a.gz", "s3://b/x/2/b.gz"]) == "s3://b/x"
    assert common_root(["/d/a.gz"]) == "/d"


def test_plan_calibrates_on_a_sample_of_the_users_input_on_s3(s3_bucket):
    """`refinery plan --sample s3://...`: bytes/doc and docs/s per core measured on the user's own
    files (here real CC documents on S3), with the spread across shards as the range."""
    from refinery.launch import plan as model

    docs_dir = Path(__file__).resolve().parents[1] / "data" / "sample" / "cc_docs"
    for f in sorted(docs_dir.glob("*.jsonl.gz")):
        fs.write_bytes(f"{s3_bucket}/sample/{f.name}", f.read_bytes())
    cfg = parse_config({"name": "m", "stages": [{"type": "gopher_quality"}]})
    m = model.measure(cfg, f"{s3_bucket}/sample", max_files=3)
    sizes = sum(f.stat().st_size for f in docs_dir.glob("*.jsonl.gz"))
    assert m.docs == 717 and m.bytes_per_doc == pytest.approx(sizes / 717)
    assert m.rate_range is not None and m.rate_range[0] <= m.docs_per_core_s * 1.5
    assert len(m.shard_bytes_per_doc) == 3


def test_plan_on_an_s3_sample_does_not_blame_the_bundled_one(s3_bucket, cli, tmp_path):
    """Found by review (h98): measured on `--sample s3://...` (the user's files), a bytes/doc far
    from Common Crawl's was explained as "the bundled sample is small"."""
    warc = Path(__file__).resolve().parents[1] / "data" / "sample" / "warc" / "resiliparse_clipped.warc.gz"
    fs.write_bytes(f"{s3_bucket}/sample/{warc.name}", warc.read_bytes())
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nstages:\n  - type: extract\n")
    code, _, err = cli("plan", recipe, "--input-tb", "1", "--sample", f"{s3_bucket}/sample", "--sample-files", "1")
    assert code == 0, err
    [note] = [line for line in err.splitlines() if "bytes/doc differs" in line]
    assert "bundled" not in note and f"of {s3_bucket}/sample): if those files are not typical" in note, note


def test_plan_json_carries_the_bytes_per_doc_note_the_text_prints(cli, tmp_path):
    """`refinery plan --json` printed every figure but not the note that the measured bytes/doc is
    far from Common Crawl's (review h101): it is the JSON's bytes_per_doc_note (null without one)."""
    warc = Path(__file__).resolve().parents[1] / "data" / "sample" / "warc" / "resiliparse_clipped.warc.gz"
    (tmp_path / "sample").mkdir()
    (tmp_path / "sample" / warc.name).write_bytes(warc.read_bytes())
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nstages:\n  - type: extract\n")
    args = ("plan", recipe, "--input-tb", "1", "--docs-per-core-s", "20", "--sample", tmp_path / "sample")
    code, _, err = cli(*args)
    assert code == 0, err
    [said] = [line.removeprefix("note: ") for line in err.splitlines() if "bytes/doc differs" in line]
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    assert json.loads(out)["bytes_per_doc_note"] == said
    code, out, _ = cli("plan", recipe, "--input-tb", "1", "--docs-per-core-s", "20", "--bytes-per-doc", "900", "--json")
    assert code == 0 and json.loads(out)["bytes_per_doc_note"] is None  # given, not measured: the user's choice
