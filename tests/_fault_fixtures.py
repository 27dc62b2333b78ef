"""Fault injection helpers: an HTTP proxy on 127.0.0.1 that sits in front of the real moto S3
server and fails a bounded share of requests the way S3 does (500 InternalError, 503 SlowDown,
connection resets), plus small corpus helpers shared by the fault and bad-input tests.

The proxy forwards everything else byte for byte (the Host header included, so SigV4-signed
requests stay intact), so the code under test talks to a real S3 API through a flaky network.

It is also a plain forward proxy (``HTTP(S)_PROXY``): an absolute-URI request
(``GET http://host:port/key``) and a ``CONNECT host:port`` tunnel go to the upstream whatever host
they name (so an endpoint reachable only through the proxy can be a name that does not resolve:
one without a dot, as moto takes a dotted name's first label for a bucket);
``FaultProxy.seen`` records what each request named and who sent it.
"""

from __future__ import annotations

import gzip
import http.client
import itertools
import shutil
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_WARCS = ROOT / "data" / "sample" / "warc"
CC_DOCS = ROOT / "data" / "sample" / "cc_docs"

_ERRORS = {
    403: ("AccessDenied", "Access Denied"),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}

#: fault kinds the proxy cycles through
KINDS = ("500", "503", "reset")


@dataclass
class FaultPolicy:
    """Which requests fail. ``every``: one request in ``every`` (matching ``when``) fails, at most
    ``max_faults`` in total and only within ``window_s`` seconds; ``always``: every matching
    request fails (an outage)."""

    every: int = 3
    max_faults: int = 20
    always: bool = False
    kinds: tuple[str, ...] = KINDS
    #: per-method override of ``kinds`` (e.g. ``{"GET": ("reset",)}``)
    kinds_by_method: dict[str, tuple[str, ...]] = field(default_factory=dict)
    when: Callable[[str, str], bool] = lambda method, path: True
    counter: itertools.count = field(default_factory=itertools.count)
    faults: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, method, path)
    forwarded: int = 0
    #: forward-proxy requests: (method, the host:port they named, User-Agent, Proxy-Authorization)
    seen: list[tuple[str, str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: called with ``(method, path, reply body bytes)`` for each request passed upstream (counting)
    answered: Callable[[str, str, int], None] | None = None

    def decide(self, method: str, path: str) -> str | None:
        with self.lock:
            if not self.when(method, path):
                return None
            n = next(self.counter)
            kinds = self.kinds_by_method.get(method, self.kinds)
            if self.always:
                kind = kinds[n % len(kinds)]
            elif n % self.every == self.every - 1 and len(self.faults) < self.max_faults:
                kind = kinds[len(self.faults) % len(kinds)]
            else:
                return None
            self.faults.append((kind, method, path))
            return kind


class FaultProxy:
    """``with FaultProxy(upstream, policy) as endpoint:`` -> ``http://127.0.0.1:<port>``."""

    def __init__(self, upstream: str, policy: FaultPolicy | None = None):
        self.upstream = urlsplit(upstream)
        self.policy = policy or FaultPolicy()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY: a reply goes out as headers, then body; with Nagle's algorithm the body
            # waited for the client's delayed ACK (~40 ms a GET: most of a flaky-S3 run's time)
            disable_nagle_algorithm = True

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _as_forward_proxy(self) -> None:
                """An absolute-URI request (a forward proxy's): recorded, then sent on as its path."""
                if "://" not in self.path[:8]:
                    return
                target = urlsplit(self.path)
                self._record(target.netloc)
                self.path = (target.path or "/") + (f"?{target.query}" if target.query else "")
                del self.headers["Proxy-Authorization"]
                del self.headers["Proxy-Connection"]

            def _record(self, target: str) -> None:
                with proxy.policy.lock:
                    proxy.policy.seen.append((self.command, target, self.headers.get("User-Agent", ""),
                                              self.headers.get("Proxy-Authorization", "")))

            def do_CONNECT(self) -> None:
                """A tunnel (an https:// endpoint through the proxy) to the upstream, byte for byte."""
                self._record(self.path)
                upstream = socket.create_connection((proxy.upstream.hostname, proxy.upstream.port), timeout=60)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                _pipe(self.connection, upstream)

            def _handle(self) -> None:
                self._as_forward_proxy()
                body = self._body()
                kind = proxy.policy.decide(self.command, self.path)
                if kind == "reset":
                    # RST instead of FIN: the client sees "connection reset by peer".
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if kind in ("403", "500", "503"):
                    code, message = _ERRORS[int(kind)]
                    payload = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>{message}</Message><RequestId>fault</RequestId></Error>"
                    ).encode()
                    self.send_response(int(kind))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                            conn.putheader(k, v)
                    conn.putheader("Content-Length", str(len(body)))
                    conn.endheaders(body)
                    resp = conn.getresponse()
                    data = resp.read()
                    with proxy.policy.lock:
                        proxy.policy.forwarded += 1
                    if proxy.policy.answered is not None:
                        proxy.policy.answered(self.command, self.path, len(data))
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() in ("transfer-encoding", "connection", "server", "date"):
                            continue
                        if k.lower() == "content-length" and self.command != "HEAD":
                            continue
                        self.send_header(k, v)
                    if self.command != "HEAD":
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def seen(self) -> list[tuple[str, str, str, str]]:
        return self.policy.seen

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> str:
        self.thread.start()
        return self.endpoint

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _pipe(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways between two sockets until either side closes."""
    def copy(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    back = threading.Thread(target=copy, args=(upstream, client), daemon=True)
    back.start()
    copy(client, upstream)
    back.join()
    upstream.close()


@pytest.fixture()
def through_proxy(s3_server, monkeypatch) -> Iterator[Callable[[FaultPolicy], str]]:
    """Point ``AWS_ENDPOINT_URL`` (pyarrow and boto3 in refinery.io.fs) at a fault proxy in front
    of the session's moto server; returns a function that starts one with a given policy."""
    proxies: list[FaultProxy] = []

    def start(policy: FaultPolicy) -> str:
        proxy = FaultProxy(s3_server, policy)
        endpoint = proxy.__enter__()
        proxies.append(proxy)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        return endpoint

    yield start
    for p in proxies:
        p.__exit__(None, None, None)


# -- corpora ---------------------------------------------------------------------------------
def split_jsonl(src: Path, dest: Path, parts: int, lines: int | None = None) -> list[Path]:
    """Split a real Dolma JSONL.gz file (its first ``lines`` lines if given) into ``parts`` shards
    (round-robin lines)."""
    kept = gzip.open(src, "rb").read().splitlines(keepends=True)[:lines]
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(parts):
        path = dest / f"part-{i:03d}.jsonl.gz"
        path.write_bytes(gzip.compress(b"".join(kept[i::parts])))
        out.append(path)
    return out


def copy_warcs(dest: Path, names: list[str] | None = None) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted(SAMPLE_WARCS.glob("*.warc.gz")):
        if names is None or src.name in names:
            out.append(Path(shutil.copy(src, dest / src.name)))
    return out


def write_after_remount(where: str, index: int, remount_read_only_at: int) -> dict:
    """A task that writes one file under ``where``; task ``remount_read_only_at`` first remounts
    that file system read-only, as Linux does after a disk error (needs root)."""
    import subprocess

    if index == remount_read_only_at:
        subprocess.run(["mount", "-o", "remount,ro", where], check=True, capture_output=True)
    (Path(where) / f"out-{index}").write_text("x")
    return {"index": index}


def write_parquet_with_a_damaged_page(path: Path, codec: str = "zstd") -> None:
    """A Parquet file whose footer reads (its columns ``id`` and ``text``) but whose data page does
    not: it passes `refinery run`'s up-front footer check and fails its own shard when read, the
    way a file damaged past its footer does (a file that is not Parquet at all is refused before
    any shard since session 49)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [" ".join(f"w{i}x{j * 7919 % 10007}" for j in range(400)) for i in range(4)]
    pq.write_table(pa.table({"id": [str(i) for i in range(4)], "text": texts}), path,
                   compression=codec, use_dictionary=False, write_statistics=False)  # one page: its middle is data
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(1)
    data = bytearray(path.read_bytes())
    start, size = chunk.data_page_offset, chunk.total_compressed_size
    damage = slice(start + size // 3, start + 2 * size // 3)  # past the page header, inside its data
    data[damage] = bytes(b ^ 0x5A for b in data[damage])
    path.write_bytes(bytes(data))
