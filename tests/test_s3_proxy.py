"""S3 through a corporate HTTP proxy (session 46, h159): pyarrow's S3 (which reads no proxy
variable) and boto3 go through the proxy botocore picks for the endpoint, ``NO_PROXY`` as botocore
matches it, and a proxy that is down is named in one line. A real forward proxy on 127.0.0.1
(``FaultProxy``) in front of the real moto server."""

from __future__ import annotations

import base64
import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from _fault_fixtures import FaultPolicy, FaultProxy, _pipe
from refinery.io import fs

#: a host name that resolves nowhere (no dot: moto takes a dotted name's first label for a bucket),
#: so the endpoint is reachable only through the proxy
PROXY_ONLY_HOST = "refinery-s3-via-proxy"
_VARIABLES = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy",
              "ALL_PROXY")


def _route(monkeypatch, endpoint: str, **proxy_variables: str) -> None:
    """``AWS_ENDPOINT_URL`` and exactly these proxy variables; one attempt per S3 request (a
    request that went the wrong way fails in a second, not after 8 attempts)."""
    for var in _VARIABLES:
        monkeypatch.delenv(var, raising=False)
    for var, value in proxy_variables.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("REFINERY_S3_MAX_ATTEMPTS", "1")


def _closed_port() -> int:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return closed.getsockname()[1]


def _write_and_read(root: str) -> None:
    """A Parquet file written and read by pyarrow (a dataset), a marker written and read by boto3."""
    filesystem, path = fs.resolve(f"{root}/ds")
    pq.write_table(pa.table({"text": ["a", "b"]}), f"{path}/part-0.parquet", filesystem=filesystem)
    assert pads.dataset(path, filesystem=filesystem).to_table().column("text").to_pylist() == ["a", "b"]
    fs.write_bytes(f"{root}/ds/_DONE", b"ok")
    assert fs.read_bytes(f"{root}/ds/_DONE") == b"ok"


def _clients(seen: list[tuple[str, str, str, str]]) -> set[str]:
    """Which S3 clients sent the requests a proxy saw, by their User-Agent."""
    return {agent.split("/")[0] for _, _, agent, _ in seen}


def test_an_endpoint_reachable_only_through_the_proxy_is_reached_by_pyarrow_and_boto3(s3_server, s3_bucket, monkeypatch):
    proxy = FaultProxy(s3_server, FaultPolicy(every=10**9))
    with proxy as address:
        port = urlsplit(s3_server).port
        # lower case wins over upper case, and an http:// endpoint takes http_proxy, not https_proxy
        # (both dead); the proxy's credentials (an @ in the password, quoted) are sent as Basic
        _route(monkeypatch, f"http://{PROXY_ONLY_HOST}:{port}",
               http_proxy=address.replace("http://", "http://refinery:p%40ss@"),
               HTTP_PROXY=f"http://127.0.0.1:{_closed_port()}", https_proxy=f"http://127.0.0.1:{_closed_port()}")
        _write_and_read(s3_bucket)
        assert _clients(proxy.seen) == {"aws-sdk-cpp", "Boto3"}  # pyarrow's and boto3's requests
        assert {target for _, target, _, _ in proxy.seen} == {f"{PROXY_ONLY_HOST}:{port}"}
        assert {auth for *_, auth in proxy.seen} == {"Basic " + base64.b64encode(b"refinery:p@ss").decode()}

        # NO_PROXY as botocore matches it: "*.0.0.1" is no pattern there (the old probe took it for
        # a bypass), so everything still goes through the proxy...
        _route(monkeypatch, s3_server, HTTP_PROXY=address, NO_PROXY="*.0.0.1")
        before = len(proxy.seen)
        _write_and_read(f"{s3_bucket}/2")
        assert _clients(proxy.seen[before:]) == {"aws-sdk-cpp", "Boto3"}
        # ...and a listed host (with a leading dot or not, its port or none) bypasses it, for both
        for no_proxy in ("localhost,127.0.0.1", f".127.0.0.1:{port}", "*"):
            _route(monkeypatch, s3_server, HTTP_PROXY=address, NO_PROXY=no_proxy)
            before = len(proxy.seen)
            _write_and_read(f"{s3_bucket}/3")
            assert proxy.seen[before:] == [], no_proxy


def test_an_https_endpoint_is_reached_through_the_https_proxy_by_a_tunnel(s3_server, s3_bucket, monkeypatch, tmp_path):
    """An https:// endpoint takes ``HTTPS_PROXY`` and a CONNECT tunnel, TLS verified end to end
    against ``AWS_CA_BUNDLE`` (which pyarrow did not read either)."""
    cert = _self_signed(tmp_path, PROXY_ONLY_HOST)
    with _tls_in_front_of(s3_server, tmp_path) as tls_endpoint:
        proxy = FaultProxy(tls_endpoint, FaultPolicy(every=10**9))
        with proxy as address:
            _route(monkeypatch, f"https://{PROXY_ONLY_HOST}:9443", HTTPS_PROXY=address,
                   HTTP_PROXY=f"http://127.0.0.1:{_closed_port()}")
            monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
            _write_and_read(s3_bucket)
    assert {(method, target) for method, target, _, _ in proxy.seen} == {("CONNECT", f"{PROXY_ONLY_HOST}:9443")}
    assert len(proxy.seen) >= 2  # pyarrow's tunnels and boto3's (a tunnel's requests are TLS: no User-Agent seen)


def _self_signed(where: Path, host: str) -> Path:
    """A certificate (and its key beside it) for ``host``, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (where / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    (where / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return where / "cert.pem"


@contextmanager
def _tls_in_front_of(upstream: str, certs: Path) -> Iterator[str]:
    """A TLS server on 127.0.0.1 (the certificate in ``certs``) that passes each connection's
    plain bytes on to ``upstream``: the moto server as an https:// endpoint."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "cert.pem", certs / "key.pem")
    target = urlsplit(upstream)
    server = socket.create_server(("127.0.0.1", 0))

    def serve_one(conn: socket.socket) -> None:
        try:
            tls = context.wrap_socket(conn, server_side=True)
            _pipe(tls, socket.create_connection((target.hostname, target.port)))
        except OSError:  # a client that gave up on the handshake
            conn.close()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def test_a_proxy_that_is_down_is_named_in_one_line(cli, s3_server, s3_bucket, monkeypatch):
    """Before, the probe skipped an endpoint behind a proxy, and pyarrow went around the proxy."""
    port = _closed_port()
    _route(monkeypatch, s3_server, HTTP_PROXY=f"refinery:secret-pw@127.0.0.1:{port}")  # no scheme: http://
    code, out, err = cli("status", f"{s3_bucket}/run")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, (code, out, err)
    assert f"cannot reach the proxy http://127.0.0.1:{port} (HTTP_PROXY) that S3 requests for {s3_bucket}/run" in lines[0]
    assert f"go through: connection refused (nothing listens on 127.0.0.1 port {port})" in lines[0]
    assert "NO_PROXY" in lines[0] and "secret-pw" not in out + err and s3_server not in err


@pytest.mark.parametrize("endpoint, variables, chosen", [
    ("https://minio.corp:9000", {"HTTPS_PROXY": "http://p:1", "HTTP_PROXY": "http://q:2"}, "http://p:1"),
    ("http://minio.corp:9000", {"HTTPS_PROXY": "http://p:1", "HTTP_PROXY": "http://q:2"}, "http://q:2"),
    ("http://minio.corp:9000", {"ALL_PROXY": "http://p:1"}, None),  # botocore reads no ALL_PROXY
    ("http://minio.corp:9000", {"HTTP_PROXY": "q:2", "NO_PROXY": "*.corp"}, "http://q:2"),
    ("http://minio.corp:9000", {"HTTP_PROXY": "q:2", "NO_PROXY": "corp"}, None),
    ("http://minio.corp:9000", {"HTTP_PROXY": "q:2", "NO_PROXY": "x, .corp"}, None),  # a domain after a dot...
    ("http://minio.corp:9000", {"HTTP_PROXY": "q:2", "NO_PROXY": "nio.corp"}, "http://q:2"),  # ...not any suffix
    ("http://minio.corp:9000", {"HTTP_PROXY": "q:2", "NO_PROXY": "minio.corp:9001"}, "http://q:2"),
    (None, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example"}, "http://p:1"),  # AWS's own endpoint: https
    (None, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "amazonaws.com"}, None),
])
def test_the_proxy_is_the_one_botocore_uses(monkeypatch, endpoint, variables, chosen):
    _route(monkeypatch, endpoint or "", **variables)
    if endpoint is None:
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert fs.s3_proxy() == chosen
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    url = client.meta.endpoint_url
    assert client._endpoint.http_session._proxy_config.proxy_url_for(url) == chosen  # botocore's own choice
