"""S3 for tests and benchmarks: a real moto server on 127.0.0.1, never a mock of our own code.

- :func:`moto_s3` starts a ``ThreadedMotoServer`` on a free port, points ``AWS_ENDPOINT_URL`` (read by
  ``refinery.io.fs`` for pyarrow and by boto3) at it with fake credentials, creates a bucket and
  restores the environment afterwards. Use it outside pytest (benchmarks, scripts).
- In pytest, the session server is ``tests/conftest.py``'s ``s3_server`` (one server per session, so
  ``AWS_ENDPOINT_URL`` never points at two servers at once); :func:`s3_root` gives each test a fresh
  ``s3://bucket/prefix`` on it. Import the fixtures you use into your test module.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


@contextmanager
def moto_s3(
    bucket: str | None = "refinery-bench",
    access_key: str = "AKIAREFINERYTESTKEY02",
    secret_key: str = "refinery-test-secret-not-a-real-key",
) -> Iterator[tuple[str, str]]:
    """Yield ``(endpoint, "s3://<bucket>")`` for a fresh moto S3 server on 127.0.0.1, with fake
    credentials in the environment (restored afterwards). ``bucket=None`` creates no bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=access_key,
                      AWS_SECRET_ACCESS_KEY=secret_key, AWS_REGION="us-east-1")
    try:
        if bucket:
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield endpoint, f"s3://{bucket}" if bucket else ""
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_CONFLICT = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict</Code><Message>'
             b'A conflicting operation occurred. If using PutObject you can retry the request.</Message></Error>')
_NOT_IMPLEMENTED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>A header you '
                    b'provided implies functionality that is not implemented</Message></Error>')


@contextmanager
def s3_without_conditions(endpoint: str, conflicts: int | None = None) -> Iterator[str]:
    """An S3-compatible store that answers a conditional PUT (If-None-Match / If-Match) with 501
    NotImplemented, as stores without conditional writes do: a proxy on 127.0.0.1 before the moto
    server ``endpoint``, passing every other request through. Yields its endpoint. ``conflicts``:
    instead, the first that many conditional PUTs get 409 ConditionalRequestConflict (AWS's answer
    while another conditional write of the key is in flight), the rest pass through."""
    left = [conflicts or 0]

    def answer() -> tuple[int, bytes] | None:
        if conflicts is None:
            return 501, _NOT_IMPLEMENTED
        if left[0] > 0:
            left[0] -= 1
            return 409, _CONFLICT
        return None

    with s3_front(endpoint, conditional_put=answer) as front:
        yield front


@pytest.fixture()
def s3_root(s3_bucket) -> str:
    """A fresh, empty ``s3://bucket/<uuid>`` prefix for one test.

    The bucket is made per test (conftest's ``s3_bucket``): tests elsewhere use moto's in-process
    ``mock_aws``, which resets the moto backends that the threaded server shares, so a bucket made
    once per session would vanish mid-session.
    """
    return f"{s3_bucket}/{uuid.uuid4().hex[:12]}"


@contextmanager
def s3_losing_put_replies(endpoint: str) -> Iterator[tuple[str, list[bool]]]:
    """A network blip: a proxy on 127.0.0.1 before the moto server ``endpoint`` that, while its
    switch (``switch[0] = True``) is on, passes each PUT through and then drops the connection
    before the reply (the write lands; its caller, and each of its retries, hears nothing).
    Yields ``(its endpoint, switch)``."""
    switch = [False]
    with s3_front(endpoint, lose_put_replies=switch) as front:
        yield front, switch


@contextmanager
def s3_front(endpoint: str, drop_request: tuple[str, ...] = (),
             reply_date: Callable[[str], str] | None = None,
             lose_put_replies: list[bool] | None = None,
             conditional_put: Callable[[], tuple[int, bytes] | None] | None = None,
             hang: Callable[[str, str], bool] | None = None) -> Iterator[str]:
    """A proxy on 127.0.0.1 before the moto server ``endpoint`` that stands for a store (or a
    corporate proxy) bending the protocol: it drops the request headers named in ``drop_request``
    (``If-None-Match``, ``If-Match``: a store that ignores conditional writes and performs them),
    rewrites the reply's ``Date`` header with ``reply_date``, while ``lose_put_replies[0]`` is true
    drops each PUT's connection after passing it on (:func:`s3_losing_put_replies`), and answers a
    conditional PUT itself with ``conditional_put()``'s status and XML body when it gives one
    (:func:`s3_without_conditions`). ``hang(method, path)`` true: that request is read and never
    answered (a store that stopped answering mid-run) until the block ends. Yields its endpoint."""
    import http.client
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    up, dropped = urlsplit(endpoint), {h.lower() for h in drop_request}
    over = threading.Event()  # the block ended: hung requests are let go (their connections closed)

    class Front(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as tests/_fault_fixtures.py's proxy: no delayed-ACK stall per reply

        def log_message(self, *args) -> None:
            pass

        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if hang is not None and hang(self.command, self.path):
                over.wait()
                self.close_connection = True
                return
            if (conditional_put is not None and self.command == "PUT"
                    and ("If-None-Match" in self.headers or "If-Match" in self.headers)):
                answer = conditional_put()
                if answer is not None:
                    self.send_response(answer[0])
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(answer[1])))
                    self.end_headers()
                    self.wfile.write(answer[1])
                    return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            if lose_put_replies and lose_put_replies[0] and self.command == "PUT":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)  # written upstream, the reply lost
                return
            self.send_response_only(resp.status)  # moto's own Date header (or its rewrite), not a second one
            for k, v in resp.getheaders():
                if k.lower() == "date" and reply_date is not None:
                    v = reply_date(v)
                if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", resp.getheader("Content-Length") if self.command == "HEAD"
                             else str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Front)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        over.set()
        server.shutdown()
        server.server_close()
