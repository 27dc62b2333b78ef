"""Security: credentials never reach logs, run manifests, stats or failure records; storage URIs
are validated; HTML extraction never fetches anything (no external entities, DTDs or resources).
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pyarrow as pa
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from _fault_fixtures import CC_DOCS, FaultPolicy, split_jsonl, through_proxy  # noqa: F401 - fixture
from refinery.config import ConfigError, load_config, parse_config
from refinery.io import fs
from refinery.pipeline import run_pipeline
from refinery.stages.extract import TrafilaturaExtractor

ROOT = Path(__file__).resolve().parents[1]
KEY_ID = "AKIAREFINERYTESTKEY01"
SECRET = "refinery-test-secret-do-not-log-0123456789"


def _all_s3_text(client, bucket: str) -> dict[str, bytes]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def test_no_credentials_in_logs_manifests_stats_or_failures(s3_bucket, s3_server, through_proxy, tmp_path, caplog):
    """A run on S3 with one shard failing on a dead network (so errors with request details are
    logged and recorded): the fake keys appear nowhere in what the run writes or logs."""
    assert os.environ["AWS_ACCESS_KEY_ID"] == KEY_ID and os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET
    client = boto3.client("s3", endpoint_url=s3_server)
    bucket = s3_bucket[5:]
    for p in split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2):
        client.put_object(Bucket=bucket, Key=f"in/{p.name}", Body=p.read_bytes())
    # Always refuse one shard's upload (403 AccessDenied: not retried, so the test is quick).
    through_proxy(FaultPolicy(always=True, kinds=("403",), when=lambda m, p: m == "PUT" and "kept/part-001" in p))
    config = parse_config({"name": "sec", "stages": [{"type": "gopher_quality"}]})
    caplog.set_level(logging.DEBUG)
    for name in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(name).setLevel(logging.WARNING)  # DEBUG there is the user's opt-in
    summary = run_pipeline(config, f"{s3_bucket}/in", f"{s3_bucket}/out", workers=1, progress=False)
    assert [o.shard for o in summary.failed] == ["part-001"]
    written = _all_s3_text(client, bucket)
    assert "out/run.json" in written and "out/failed/part-001.json" in written and "out/stats.json" in written
    texts = {k: v.decode("utf-8", "replace") for k, v in written.items() if not k.endswith(".parquet")}
    texts["<logs>"] = caplog.text
    texts["<errors>"] = "\n".join(o.error or "" for o in summary.outcomes)
    for where, text in texts.items():
        assert KEY_ID not in text and SECRET not in text, where
    for key, blob in written.items():
        assert KEY_ID.encode() not in blob and SECRET.encode() not in blob, key
    assert "AWS_" not in texts["out/run.json"]


def test_config_cannot_carry_credentials():
    """Credentials come from the environment / instance role only: a config has no place for them."""
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"stages": [{"type": "gopher_quality"}], "aws_secret_access_key": SECRET})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"stages": [{"type": "gopher_quality"}], "executor": {"aws_access_key_id": KEY_ID}})
    dumped = json.dumps(load_config(ROOT / "configs" / "refinedweb.yaml").model_dump(mode="json"))
    assert "AKIA" not in dumped and "secret" not in dumped.lower()


@pytest.mark.parametrize("uri", [
    "http://bucket/key", "file:///etc/passwd", "gs://bucket/key", "s3://", "s3://UPPER/key",
    "s3://a/key", "s3://bucket/../other-bucket/key", "s3://bucket/a/../../b", "",
])
def test_bad_storage_uris_are_refused(uri):
    with pytest.raises(fs.StorageError):
        fs.validate_uri(uri)
    with pytest.raises(fs.StorageError):
        fs.resolve(uri)


def test_bad_uris_are_refused_before_any_work(tmp_path):
    config = parse_config({"stages": [{"type": "gopher_quality"}]})
    with pytest.raises(ConfigError, match="unsupported URI scheme"):
        run_pipeline(config, "http://169.254.169.254/latest/meta-data", str(tmp_path / "o"), progress=False)
    with pytest.raises(ConfigError, match=r"'\.\.'"):
        run_pipeline(config, str(CC_DOCS), "s3://bucket/../escape", progress=False)
    assert not (tmp_path / "o").exists()


# -- the HTML parser fetches nothing ---------------------------------------------------------
@pytest.fixture()
def canary():
    """An HTTP server on 127.0.0.1 recording every request it gets."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            body = b'<!ENTITY xxe "CANARY-ENTITY-VALUE">' if self.path.endswith(".dtd") else b"CANARY-BODY"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def _hostile_pages(base: str, secret_file: Path) -> list[str]:
    prose = "The committee met on Tuesday to review the annual budget for the new public library. " * 8
    return [
        # XXE: internal entity pointing at a local file, and at the canary
        f'<?xml version="1.0"?><!DOCTYPE html [<!ENTITY xxe SYSTEM "file://{secret_file}">'
        f'<!ENTITY web SYSTEM "{base}/entity">]><html><body><p>{prose} &xxe; &web;</p></body></html>',
        # external DTD
        f'<?xml version="1.0"?><!DOCTYPE html SYSTEM "{base}/evil.dtd"><html><body><p>{prose} &xxe;</p></body></html>',
        # parameter entity + XInclude
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p SYSTEM "{base}/param.dtd"> %p;]>'
        f'<html xmlns:xi="http://www.w3.org/2001/XInclude"><body><p>{prose}</p>'
        f'<xi:include href="{base}/xinclude"/></body></html>',
        # resources a browser would fetch
        f'<html><head><link rel="stylesheet" href="{base}/style.css"><script src="{base}/app.js"></script>'
        f'<meta http-equiv="refresh" content="0;url={base}/refresh"></head><body><article><p>{prose}</p>'
        f'<img src="{base}/img.png"><iframe src="{base}/frame"></iframe><object data="{base}/obj"></object>'
        f'<video src="{base}/v.mp4"></video></article></body></html>',
        # SVG with an external image and an xlink
        f'<html><body><p>{prose}</p><svg xmlns:xlink="http://www.w3.org/1999/xlink">'
        f'<image xlink:href="{base}/svg.png"/><use xlink:href="{base}/use.svg#x"/></svg></body></html>',
    ]


def _warc_batch(pages: list[str]) -> pa.RecordBatch:
    from refinery.io.warc import read_warc

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    for i, page in enumerate(pages):
        body = page.encode()
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(f"https://example.org/{i}", "response",
                                                      payload=io.BytesIO(body), http_headers=http))
    buf.seek(0)
    batches = list(read_warc(buf, source="hostile.warc.gz"))
    return pa.Table.from_batches(batches).drop_columns(["_reason", "_metric"]).combine_chunks().to_batches()[0]


def test_html_extraction_fetches_nothing(canary, tmp_path):
    base, hits = canary
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("CANARY-LOCAL-FILE")
    batch = _warc_batch(_hostile_pages(base, secret_file))
    out = TrafilaturaExtractor().process(batch)
    texts = [t or "" for t in out.column("text").to_pylist()]
    assert any("committee" in t for t in texts)  # the pages were really extracted
    assert hits == []  # no entity, DTD, XInclude or resource was fetched
    joined = "\n".join(texts)
    assert "CANARY" not in joined  # no external or local-file content was expanded into the text


def test_lxml_parsers_used_by_trafilatura_do_not_resolve_entities(canary, tmp_path):
    """The same at the parser level, for the lxml entry points trafilatura uses."""
    from lxml import html as lxml_html
    from trafilatura.utils import load_html

    base, hits = canary
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("CANARY-LOCAL-FILE")
    for page in _hostile_pages(base, secret_file):
        for tree in (load_html(page), lxml_html.fromstring(page.encode())):
            if tree is not None:
                assert "CANARY" not in "".join(tree.itertext())
    assert hits == []
