"""One code path for local paths and ``s3://`` URIs.

``resolve(uri)`` returns a pyarrow filesystem and the path inside it. S3 settings come from the
standard AWS environment (credentials chain, ``AWS_REGION``); ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``) points both pyarrow and boto3 at an S3-compatible server, such as the moto
server the tests start on 127.0.0.1.
"""

from __future__ import annotations

import contextvars
import errno
import io
import logging
import math
import os
import posixpath
import re
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Callable
from typing import Any, BinaryIO, Iterator

import pyarrow.fs as pafs

from refinery.io.interruptible import interruptible

log = logging.getLogger("refinery.io")

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
#: ``s3:/b/x``, ``s3:b/x``, ``S3://b/x``: an S3 URI mistyped (read as a local path, the first two
#: were a run written into ``./s3:/b/x``, exit 0; session 49, h197)
_S3_MISTYPED = re.compile(r"^s3:/{0,3}(?=[^/])", re.IGNORECASE)


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI."""


class MissingCredentials(StorageError):
    """No AWS credentials in this process: no retry finds them, so a task does not retry it."""


#: where this process's work runs, for what a missing-credentials error advises: "local" (this
#: machine's processes, which inherit this one's credentials), "ray" (the driver of a Ray cluster,
#: whose nodes need their own), "ray_worker" (a task on a Ray node). Set by make_executor,
#: run_pipeline (before it lists the input) and a Ray task.
executor_kind = "local"


def no_credentials() -> str:
    """What a missing-credentials error says, for the executor in use: botocore's "Unable to locate
    credentials" alone sent a Ray cluster started without credentials through 3 attempts per shard
    (found by a Ray trial); the Ray advice is for Ray runs only (it was given on the local pool too)."""
    found = "(botocore: Unable to locate credentials)"
    ray = ("refinery does not send credentials to a Ray cluster's workers: give every node its own (an instance "
           "role, AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY where `ray start` runs; docs/scale.md)")
    if executor_kind == "ray_worker":
        return f"no AWS credentials on this Ray worker's node {found}; {ray}"
    said = (f"no AWS credentials in this process {found}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
            f"AWS_PROFILE, or run where an instance role is attached")
    return f"{said}; the Ray workers need their own too: {ray}" if executor_kind == "ray" else said


def no_credentials_for(doing: str, uri: str) -> str:
    """A missing-credentials refusal naming the place the user gave (``doing``: "read the input"),
    not the object the first request named (an input's ``run.json``, the run.json of the output's
    parent: files the user never gave; session 49, h197)."""
    return f"cannot {doing} {uri}: {no_credentials()}"


def _no_credentials(exc: BaseException) -> bool:
    try:
        from botocore.exceptions import NoCredentialsError
    except ImportError:  # no boto3: nothing could have looked for credentials
        return False
    return isinstance(exc, NoCredentialsError)


def s3_error(message: str, exc: BaseException) -> StorageError:
    """``message: exc`` as a :class:`StorageError`; when ``exc`` is botocore's missing
    credentials, a :class:`MissingCredentials` that says where credentials come from."""
    if _no_credentials(exc):
        return MissingCredentials(f"{message}: {no_credentials()}")
    if type(exc).__name__ == "ReadTimeoutError":  # botocore's: the store stopped answering
        server = f"the S3 endpoint {s3_endpoint()}" if s3_endpoint() else "S3"
        return StorageError(f"{message}: {server} sent nothing for the read timeout ({s3_get_timeout():g} s for a "
                            f"GET or HEAD ({GET_TIMEOUT_VARIABLE}), {S3_READ_TIMEOUT_S:g} s otherwise), "
                            f"{s3_max_attempts()} attempt(s): a hung server, or a network that drops packets?")
    return StorageError(f"{message}: {exc}")


#: pyarrow's S3 error text: "When getting information for key 'in/run.json' in bucket 'b': AWS Error
#: ACCESS_DENIED during HeadObject operation: No response body." (bucket-level errors name no key)
_PYARROW_S3_ERROR = re.compile(r"When [^']*?(?:key '(?P<key>[^']*)' in )?bucket '(?P<bucket>[^']*)': AWS Error "
                               r"(?P<code>[A-Z_]+) during (?P<op>\w+) operation: (?P<detail>.*)", re.S)
#: botocore's refusal as refinery's own errors carry it: "cannot open s3://b/in/x.gz: An error
#: occurred (403) when calling the HeadObject operation: Forbidden" (a HEAD's 403 has no code)
_BOTOCORE_DENIED = re.compile(r"(?:(?P<uri>s3://[^\s:]+)[^\n]*?: )?An error occurred \((?P<code>AccessDenied|403|Forbidden|"
                              r"InvalidAccessKeyId|SignatureDoesNotMatch)\) when calling the (?P<op>\w+) operation")
#: whose credentials a refusal is about, by default: the command's own process
THIS_PROCESS = "this process uses"


def explain_s3_failure(message: str, whose: str = THIS_PROCESS) -> str | None:
    """What a raw S3 error of pyarrow's or botocore's (in ``message``, as the command would print
    it: alone, or after refinery's "cannot open s3://...: ") most likely means, in one line naming
    the object and the cause, or None when it is not one we can read. ``whose``: whose credentials
    were refused, as "the AWS credentials <whose> are wrong" reads (a Ray task's: its node's).

    Wrong credentials and an unreachable endpoint both ended every command with pyarrow's text
    about a key the user never gave (``... key 'in/run.json' ...: AWS Error ACCESS_DENIED during
    HeadObject operation: No response body.``), no word of credentials or of the endpoint; the
    unreachable endpoint only after ~50 s of silent retries (found by the session-42 S3 trial)."""
    found = _PYARROW_S3_ERROR.search(message.strip())
    if found is None:
        denied = _BOTOCORE_DENIED.search(message)
        if denied is None:
            return None
        where = denied["uri"] or ""
        code = f"403 {denied['code']}" if denied["code"] != "403" else "403 Forbidden"
        return _refused(where, where[5:].split("/", 1)[0], denied["op"], code, whose)
    bucket, key, op = found["bucket"], found["key"], found["op"]
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if found["code"] == "ACCESS_DENIED":
        return _refused(where, bucket, op, "403 Access Denied", whose)
    if found["code"] == "NETWORK_CONNECTION":
        endpoint = s3_endpoint()
        server = f"the S3 endpoint {endpoint} (AWS_ENDPOINT_URL)" if endpoint else "S3"
        detail = found["detail"].strip().rstrip(".")
        detail = detail.split("Details: ", 1)[-1]  # curl's own words; "curlCode: 7, ..." says it twice
        if detail.startswith("Operation too slow"):  # curl's low-speed limit: the store stopped answering
            return (f"{server} sent nothing for {where} ({op}) for the read timeout ({pyarrow_read_timeout():g} s, "
                    f"{GET_TIMEOUT_VARIABLE}), {s3_max_attempts()} attempt(s): a hung server, or a network that "
                    f"drops packets?")
        return (f"cannot reach {server} for {where} ({op}) after {s3_max_attempts()} attempt(s): {detail}; "
                f"check the endpoint's scheme, host and port, and the network")
    return None


def _refused(where: str, bucket: str, op: str, code: str, whose: str) -> str:
    may_not = f"may not use bucket {bucket}" if bucket else "may not use that bucket"
    return (f"S3 refused access{' to ' + where if where else ''} ({op}: {code}): the AWS credentials {whose} are wrong, or {may_not}; "
            f"check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role, and the bucket's policy")


#: why a write failed, by errno, in plain words (pyarrow's text doubled it: "[Errno 30] Cannot create
#: directory '/x/out'. Detail: [errno 30] Read-only file system")
_WRITE_FAILURES = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                   errno.EROFS: "read-only file system", errno.ENOENT: "no such file or directory",
                   errno.ENOTDIR: "a part of the path is a file, not a directory", errno.ENOSPC: "the disk is full",
                   errno.EDQUOT: "the disk quota is used up", errno.EISDIR: "it is a directory"}
_ERRNO_IN_TEXT = re.compile(r"\[errno (\d+)\]", re.I)


def plain_reason(exc: BaseException) -> str:
    """Why a read or write failed, in plain words (``output X is not writable: <why>``): permission
    denied, read-only file system, no such bucket, access denied (with what to check), ...;
    the library's own text only when it is none of these."""
    text = str(exc)
    explained = explain_s3_failure(text)
    if explained:
        return explained
    if "NoSuchBucket" in text or "does not exist" in text and "bucket" in text:
        return "no such bucket"
    number = getattr(exc, "errno", None)
    if number is None:
        found = _ERRNO_IN_TEXT.findall(text)
        number = int(found[-1]) if found else None
    if number in _WRITE_FAILURES:
        return _WRITE_FAILURES[number]
    return " ".join(text.split())


def access_denied(exc: BaseException) -> bool:
    """Whether ``exc`` is S3 refusing access (403), as pyarrow or botocore says it."""
    text = str(exc)
    found = _PYARROW_S3_ERROR.search(text.strip())
    return (found["code"] == "ACCESS_DENIED") if found else _BOTOCORE_DENIED.search(text) is not None


class DamagedRecord(StorageError):
    """A record was read and is no JSON object: a fact about the file, not a failed read. A caller
    that takes it for "no such record" must let every other error through (a throttle, a 500 or
    an outage read as "absent" sent commands on a wrong premise; h137)."""


class ObjectChanged(StorageError):
    """An S3 object was replaced while it was read (its ETag changed between requests)."""


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def canonical(uri: str) -> str:
    """``uri`` in one spelling per place, to compare places: an S3 URI without its trailing
    slash, a local path absolute with links and ``~`` resolved."""
    return uri.rstrip("/") if is_s3(uri) else os.path.realpath(os.path.expanduser(uri))


def validate_uri(uri: str) -> str:
    """Reject URIs we cannot handle, with a message that says why."""
    if not uri or not isinstance(uri, str):
        raise StorageError(f"empty storage URI: {uri!r}")
    mistyped = None if is_s3(uri) else _S3_MISTYPED.match(uri)
    if mistyped:
        meant = "s3://" + uri[mistyped.end():]
        local = "" if "://" in uri else f" (for a local directory of that name, write ./{uri})"
        raise StorageError(f"{uri!r} is not an S3 URI (they start with s3://): did you mean {meant}?{local}")
    if "://" in uri and not is_s3(uri):
        raise StorageError(f"unsupported URI scheme in {uri!r}: use a local path or s3://bucket/key")
    if is_s3(uri):
        bucket = uri[5:].split("/", 1)[0]
        if not bucket:  # s3:// or s3:///key: "invalid S3 bucket name ''" named no bucket to fix
            raise StorageError(f"no bucket in {uri}: expected s3://BUCKET/key")
        if not _BUCKET.match(bucket):
            raise StorageError(f"invalid S3 bucket name {bucket!r} in {uri!r}")
        if ".." in uri[5:].split("/"):
            raise StorageError(f"'..' is not allowed in S3 keys: {uri!r}")
    return uri


def s3_max_attempts() -> int:
    """Attempts per S3 request, backing off between them (8 by default: ~50 s before an outage is
    reported). ``REFINERY_S3_MAX_ATTEMPTS`` changes it, e.g. to fail faster in tests."""
    try:
        return max(1, int(os.environ.get("REFINERY_S3_MAX_ATTEMPTS", "8")))
    except ValueError:
        return 8


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


class EndpointUnreachable(StorageError):
    """The S3 endpoint a variable names does not answer HTTP (nothing listens, no such host, no TLS,
    a server that accepts connections and never answers, or answers something else)."""


#: (endpoint, proxy) pairs this process reached once
_REACHED: set[tuple[str | None, str | None]] = set()
#: endpoints whose probe failed slowly (no answer within PROBE_TIMEOUT_S): when, and why. Kept for a
#: while only (a hung MinIO may be restarted), so that a command which reads past one failure (a
#: check that answers "no" for a 403, or a second command in one process) gets the answer at once,
#: not after a second wait. A fast failure (refused, not HTTP) is probed again: it costs nothing.
_FAILED_SLOWLY: dict[tuple[str | None, str | None], tuple[float, str]] = {}
FAILURE_KEPT_S = 30.0
#: how long the probe waits for a TCP connect (and a TLS handshake), then for the answer's first
#: bytes: pyarrow's own connect timeout is 10 s per attempt, its read timeout 60 s
PROBE_TIMEOUT_S = 5.0
#: what the probe asks: the server about itself (RFC 9110's ``OPTIONS *``), no S3 operation, so no
#: bucket is read and no access is logged; any status line (400, 403, 501 included) is an HTTP server
_PROBE_REQUEST = "OPTIONS * HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
#: the probe's finding for a connection closed before any answer (retried once: one may be a blip)
_CLOSED = "closed"


def check_endpoint(uri: str | None = None) -> None:
    """Raise :class:`EndpointUnreachable` naming the endpoint when ``AWS_ENDPOINT_URL`` (or
    ``_S3``) points where no HTTP server answers: pyarrow retried a typo'd port or a stopped MinIO
    silently for 30-75 s (its 8 attempts) before the one-line error (found by the session-42 S3
    trial), and a server that accepts connections but never answers (a hung MinIO, a port forward
    to nothing) for 8 minutes (60 s per attempt). One TCP connect (and a TLS handshake for https)
    and one ``OPTIONS *`` whose answer must start with an HTTP status line, per process and
    endpoint, before its first S3 client (pyarrow's or boto3's): ~2 ms against moto on loopback.
    When the S3 requests go through a proxy (:func:`s3_proxy`), the proxy is what this process
    connects to, so the proxy is probed and named instead (AWS's own endpoints included); AWS's
    own endpoints without a proxy are not probed."""
    endpoint, proxy = s3_endpoint(), s3_proxy()
    if not (endpoint or proxy) or (endpoint, proxy) in _REACHED or not probe_enabled():
        return
    problem = _slow_failure((endpoint, proxy))
    if problem is None:
        started = time.monotonic()
        problem = _unreachable(proxy or endpoint)
        if problem and time.monotonic() - started >= PROBE_TIMEOUT_S / 2:
            _FAILED_SLOWLY[(endpoint, proxy)] = (started, problem)
    if problem:
        where = f" for {uri}" if uri else ""
        if proxy:  # the proxy's own credentials stay out of the line
            raise EndpointUnreachable(f"cannot reach the proxy {_without_credentials(proxy)} ({_proxy_variable()}) that "
                                      f"S3 requests{where} go through: {problem}; check the proxy's scheme, host and "
                                      f"port (NO_PROXY lists the hosts that bypass it; {PROBE_SWITCH}=0 skips this check)")
        variable = "AWS_ENDPOINT_URL_S3" if os.environ.get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"
        raise EndpointUnreachable(f"cannot reach the S3 endpoint {endpoint} ({variable}){where}: {problem}; "
                                  f"check the endpoint's scheme, host and port, and the network "
                                  f"({PROBE_SWITCH}=0 skips this check)")
    _REACHED.add((endpoint, proxy))


#: the environment variable that turns the probe off ("0"): for a server it misjudges (one that
#: closes connections to ``OPTIONS *`` unanswered, say); pyarrow's own retries then say what fails
PROBE_SWITCH = "REFINERY_S3_PROBE"


def probe_enabled() -> bool:
    """Whether :func:`check_endpoint` probes (``REFINERY_S3_PROBE`` is not 0/off/false/no)."""
    return os.environ.get(PROBE_SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


def _slow_failure(route: tuple[str | None, str | None]) -> str | None:
    """Why ``(endpoint, proxy)`` failed its probe slowly within the last :data:`FAILURE_KEPT_S`, or None."""
    failed_at, problem = _FAILED_SLOWLY.get(route, (0.0, None))
    return problem if time.monotonic() - failed_at <= FAILURE_KEPT_S else None


def _unreachable(endpoint: str) -> str | None:
    """Why ``endpoint`` (an S3 endpoint or a proxy) does not answer HTTP (a TCP connect, a TLS
    handshake for https, then an HTTP status line), or None."""
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    tls = parts.scheme == "https"
    try:
        host, port = parts.hostname, parts.port or (443 if tls else 80)
    except ValueError:  # a port that is not a number: pyarrow's own error says so
        return None
    if not host:
        return None
    host_header = parts.netloc.rsplit("@", 1)[-1]
    problem = _probe(host, port, tls, host_header)
    if problem == _CLOSED:  # a live server's first answer lost to a reset is rare; twice in a row is no blip
        problem = _probe(host, port, tls, host_header)
    if problem == _CLOSED:
        hint = " (a port forward to nothing?)" if tls else " (a port forward to nothing, or an https:// endpoint?)"
        return f"{host} port {port} accepts connections but closed them without an HTTP answer{hint}"
    return problem


def _probe(host: str, port: int, tls: bool, host_header: str) -> str | None:
    """One connection to ``host``: why it is not an HTTP server, :data:`_CLOSED`, or None."""
    import socket
    import ssl

    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as raw:
            with _tls_handshake(raw, host) if tls else raw as conn:
                return _not_http(conn, host, port, host_header)
    except ConnectionRefusedError:
        return f"connection refused (nothing listens on {host} port {port})"
    except socket.gaierror as exc:
        return f"no such host {host!r} ({exc.strerror})"
    except TimeoutError:
        return f"{host} port {port} did not answer within {PROBE_TIMEOUT_S:g} s"
    except ssl.SSLError as exc:
        return f"{host} port {port} does not answer TLS ({getattr(exc, 'reason', None) or exc}): is it an http:// endpoint?"
    except OSError as exc:
        return f"cannot connect to {host} port {port} ({exc.strerror or exc})"


def _not_http(conn: Any, host: str, port: int, host_header: str) -> str | None:
    """Why the server on ``conn`` is not an HTTP server (no answer within the timeout, an answer
    that is not HTTP), :data:`_CLOSED`, or None when its answer starts with a status line."""
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    answer = b""
    try:
        conn.sendall(_PROBE_REQUEST.format(host=host_header).encode())
        while len(answer) < len(b"HTTP/") and b"\n" not in answer:
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = conn.recv(256)
            if not chunk:
                break
            answer += chunk
    except TimeoutError:
        if not answer:
            return (f"{host} port {port} accepts connections but sent no HTTP answer in {PROBE_TIMEOUT_S:g} s "
                    f"(a hung server, or a port forward or proxy to nothing?)")
    except OSError:  # a reset (or a TLS connection cut): what was read decides
        pass
    if answer.startswith(b"HTTP/"):
        return None
    if not answer:
        return _CLOSED
    if answer[:1] in (b"\x15", b"\x16"):  # a TLS record (an alert) in answer to plain HTTP
        return f"{host} port {port} answered TLS, not HTTP: is it an https:// endpoint?"
    said = answer.split(b"\n", 1)[0].strip()[:40].decode("ascii", "backslashreplace")
    return f"{host} port {port} answered, but not HTTP ({said!r}): is it the S3 server's port?"


def _tls_handshake(conn: Any, host: str) -> Any:
    """``conn`` after a TLS handshake (unverified: whether it speaks TLS; pyarrow verifies)."""
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context.wrap_socket(conn, server_hostname=host)


def s3_proxy() -> str | None:
    """The proxy URL S3 requests go through, or None: botocore's own choice for the endpoint
    (``AWS_ENDPOINT_URL``, else AWS's regional one), made by botocore's own functions, so that
    pyarrow's requests take the route boto3's take: ``https_proxy`` / ``HTTPS_PROXY`` for an https
    endpoint, ``http_proxy`` / ``HTTP_PROXY`` for http (lower case first; ``ALL_PROXY`` is not
    used), none when ``NO_PROXY`` lists the host (``*``, the host, or a domain suffix it ends with
    after a dot, with or without a leading dot; a port when given must match; no wildcards,
    no CIDR). A proxy without a scheme is http://, as botocore reads it."""
    from botocore.httpsession import ProxyConfiguration
    from botocore.utils import get_environ_proxies

    endpoint = _s3_url()
    return ProxyConfiguration(get_environ_proxies(endpoint)).proxy_url_for(endpoint)


#: the variables that decide how S3 is reached besides the endpoint's (the proxy, the CA)
_ROUTE_VARIABLES = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "AWS_CA_BUNDLE")


def _proxy_settings() -> tuple[str | None, ...]:
    """The proxy (and CA) variables, for the clients' cache keys: ~3 us, where :func:`s3_proxy`
    takes ~100 us and a client is looked up per request."""
    return tuple(os.environ.get(v) for v in _ROUTE_VARIABLES)


def _s3_url() -> str:
    """The S3 endpoint as a URL with a scheme: ``AWS_ENDPOINT_URL`` (http:// when it names none,
    as :func:`_unreachable` reads it), else AWS's regional endpoint."""
    endpoint = s3_endpoint()
    if endpoint:
        return endpoint if "://" in endpoint else f"http://{endpoint}"
    return f"https://s3.{_region()}.amazonaws.com"


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def _proxy_variable() -> str:
    """The variable the proxy of :func:`s3_proxy` came from (lower case wins, as urllib reads them)."""
    name = "https_proxy" if _s3_url().startswith("https:") else "http_proxy"
    return name if os.environ.get(name) else name.upper()


def _without_credentials(url: str) -> str:
    """``url`` without a ``user:password@`` (a proxy URL, for messages)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()


def _pyarrow_proxy_options(proxy: str) -> dict:
    """pyarrow's ``proxy_options`` for a proxy URL: its port defaults to the scheme's, as urllib3's
    does (pyarrow requires one); its credentials are sent as botocore sends them (Basic)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(proxy)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise EndpointUnreachable(f"the proxy {_without_credentials(proxy)} ({_proxy_variable()}) has a port "
                                  f"that is not a number") from None
    options: dict = {"scheme": parts.scheme, "host": parts.hostname, "port": port}
    if parts.username is not None:
        options["username"], options["password"] = unquote(parts.username), unquote(parts.password or "")
    return options


def _s3_filesystem(request_timeout: float) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem. ``request_timeout`` is, on Linux, curl's low-speed limit (the AWS
    SDK sets ``CURLOPT_LOW_SPEED_TIME`` to it, in whole seconds, with a limit of 1 byte/s; no total
    timeout): an attempt is cut when under 1 byte/s for that long, averaged over curl's few-second
    window, never while a transfer moves (measured, pyarrow 26: a body trickling 40 bytes over 6 s
    read whole with 1 s; a 15 s stall after 5 bytes cut 7.3 s in; a silent HEAD cut at 1.0 s).
    pyarrow's docstring says it is ignored outside Windows and macOS: it is not."""
    kwargs: dict = {
        "region": _region(),
        # Retries with backoff on throttling / 5xx / dropped connections.
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=s3_max_attempts()),
        "connect_timeout": 10,
        "request_timeout": request_timeout,
    }
    endpoint = s3_endpoint()
    if endpoint:
        kwargs["endpoint_override"] = endpoint  # pyarrow needs the scheme in it (http://host:port)
        kwargs["scheme"] = "https" if endpoint.startswith("https") else "http"
        kwargs["allow_bucket_creation"] = True
    proxy = s3_proxy()
    if proxy:  # pyarrow reads no proxy variable: without this it connected straight to the endpoint
        kwargs["proxy_options"] = _pyarrow_proxy_options(proxy)
    if os.environ.get("AWS_CA_BUNDLE"):  # nor botocore's CA variable (a MinIO's private CA)
        kwargs["tls_ca_file_path"] = os.environ["AWS_CA_BUNDLE"]
    return pafs.S3FileSystem(**kwargs)


_FS_CACHE: dict[tuple, pafs.FileSystem] = {}
_CLIENT_CACHE: dict[tuple, object] = {}
_CLIENT_LOCK = threading.Lock()


#: connections the boto3 client keeps: as many as the threads that share it (32 stub uploads in
#: launch, 16 stats or footer reads); botocore's 10 logged "Connection pool is full, discarding
#: connection" dozens of times per S3 run of 24 shards and reconnected for each request past 10
S3_POOL_CONNECTIONS = 32


#: the read timeout (seconds without a byte) of every S3 request but a GET or a HEAD: an upload's
#: answer (CompleteMultipartUpload of a large object) may come only after a long silence
S3_READ_TIMEOUT_S = 60.0
#: the variable that sets a GET's or HEAD's read timeout (:func:`s3_get_timeout`)
GET_TIMEOUT_VARIABLE = "REFINERY_S3_GET_TIMEOUT_S"


def s3_get_timeout() -> float:
    """Seconds a GET or HEAD waits without a byte before the attempt is retried: 15 by default
    (``REFINERY_S3_GET_TIMEOUT_S``). A store answers a read's first byte in milliseconds, and a
    timed-out attempt is retried, not failed; with 60 s, a store that stopped answering mid-run held
    each marker or run.json read for 8-9 minutes before its error (session 45, h144)."""
    try:
        return max(0.1, float(os.environ.get(GET_TIMEOUT_VARIABLE, "15")))
    except ValueError:
        return 15.0


def s3_client(read_timeout: float = S3_READ_TIMEOUT_S):
    """A boto3 S3 client (per process, endpoint and read timeout) with standard retries and backoff.
    GETs and HEADs use ``s3_client(s3_get_timeout())``."""
    key = (s3_endpoint(), _proxy_settings(), os.environ.get("AWS_ACCESS_KEY_ID"), os.getpid(), s3_max_attempts(), read_timeout)
    client = _CLIENT_CACHE.get(key)
    if client is None:
        # one at a time: the threads of a read-ahead pool each made a client at once (16 clients,
        # ~2 s of a cold `report`), and boto3 does not make clients safely from several threads
        with _CLIENT_LOCK:
            client = _CLIENT_CACHE.get(key)
            if client is None:
                client = _CLIENT_CACHE[key] = _new_s3_client(read_timeout)
    return client


def _new_s3_client(read_timeout: float = S3_READ_TIMEOUT_S):
    check_endpoint()  # before botocore's silent retries
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint(),
        config=Config(retries={"max_attempts": s3_max_attempts(), "mode": "standard"}, connect_timeout=10,
                      read_timeout=read_timeout, max_pool_connections=S3_POOL_CONNECTIONS),
    )


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, path)`` for a local path or an ``s3://bucket/key`` URI. The S3
    filesystem is for lookups and reads (what every caller outside this module does with it): its
    requests wait :func:`pyarrow_read_timeout` without a byte, not 60 s (:func:`_s3_filesystem`)."""
    validate_uri(uri)
    if is_s3(uri):
        return _cached_s3_filesystem(uri, pyarrow_read_timeout()), uri[5:].rstrip("/")
    return pafs.LocalFileSystem(), absolute(uri)


def pyarrow_read_timeout() -> float:
    """The read timeout of pyarrow's S3 lookups and reads: ``REFINERY_S3_GET_TIMEOUT_S`` as boto3's
    GETs and HEADs wait, in curl's whole seconds (at least 1). They waited 60 s an attempt (8
    attempts by default): a store that hung mid-run held each existence check or Parquet read of a
    dedup pass 8-9 minutes before its error (session 45, h148). Safe for a large read: it is a
    low-speed limit, not a total (:func:`_s3_filesystem`)."""
    return float(max(1, math.ceil(s3_get_timeout())))


def _cached_s3_filesystem(uri: str, request_timeout: float) -> pafs.S3FileSystem:
    key = ("s3", s3_endpoint(), _proxy_settings(), os.environ.get("AWS_ACCESS_KEY_ID"), os.getpid(), s3_max_attempts(),
           request_timeout)
    fs = _FS_CACHE.get(key)
    if fs is None:
        check_endpoint(uri)  # before pyarrow's silent retries
        fs = _FS_CACHE[key] = _s3_filesystem(request_timeout)
    return fs


def _changing(uri: str) -> pafs.FileSystem:
    """The filesystem that deletes under ``uri``: on S3 with the 60 s timeout (a DeleteObjects of
    1,000 keys may be answered after a silence), locally the local one."""
    return _cached_s3_filesystem(uri, S3_READ_TIMEOUT_S) if is_s3(uri) else resolve(uri)[0]


def absolute(uri: str) -> str:
    """A local path as listings spell the files under it: absolute, ``~`` expanded, links kept
    (unlike :func:`canonical`); an S3 URI as it is."""
    return uri if is_s3(uri) else str(Path(uri).expanduser().absolute())


def join(base: str, *parts: str) -> str:
    if is_s3(base):
        return "s3://" + posixpath.join(base[5:].rstrip("/"), *parts)
    return os.path.join(base, *parts)


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return _info(fs, uri, path).type != pafs.FileType.NotFound


def file_exists(uri: str) -> bool:
    """Whether a file is at ``uri``, for a check not followed by a read of it (a read goes by
    :func:`read_bytes_if_any`). On S3 one HEAD of the key (the GET/HEAD read timeout), and only its
    404 is "no": :func:`exists` was pyarrow's HEAD, then a LIST when absent (is it a "directory"?),
    each attempt waiting 60 s (session 45, h148). Any other failure (a 403, a throttle, a 500, an
    outage) is raised, as :func:`exists` raised it (h137). Locally :func:`exists` (a stat)."""
    # a 404 is no such key, or no such bucket (which exists() took for absent too)
    return etag(uri) is not None if is_s3(uri) else exists(uri)


def _info(fs: pafs.FileSystem, uri: str, path: str) -> pafs.FileInfo:
    """``fs.get_file_info(path)``; on S3 one that Ctrl-C and SIGTERM cut short (:mod:`.interruptible`)."""
    return interruptible(lambda: fs.get_file_info(path), "S3 lookup") if is_s3(uri) else fs.get_file_info(path)


def read_bytes_if_any(uri: str) -> bytes | None:
    """The whole file (:func:`read_bytes`), or None when there is none. On S3 one GET, and only
    its 404 is "none": a check first (``if exists(u): read_json(u)``) was a HEAD, and a LIST when
    absent, before every marker, run.json or stats.json read, ~half of `status`'s requests
    (session 45, h141). Any other failure (a 403, a throttle, a 500, an outage) is raised as
    :func:`read_bytes` raises it: a failed read is no answer (h137). A local file is looked for
    first, as before (a stat costs nothing)."""
    if not is_s3(uri):
        return read_bytes(uri) if exists(uri) else None
    try:
        return read_bytes(uri)
    except StorageError as exc:
        if not isinstance(exc, MissingCredentials) and _status(exc.__cause__) == 404:
            return None  # NoSuchKey (or NoSuchBucket, which the check before took for absent too)
        raise


def read_json_if_any(uri: str) -> dict[str, Any] | None:
    """The JSON record at ``uri`` (:func:`read_json`), or None when there is none (only what
    :func:`read_bytes_if_any` takes for absent); a damaged one is :class:`DamagedRecord`."""
    data = read_bytes_if_any(uri)
    return None if data is None else json_record(uri, data)


def list_files_if_any(uri: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """:func:`list_files` of the directory ``uri``, or [] when nothing is there. On S3 one LIST of
    the prefix (an empty one is "nothing there"): a check first (``if exists(d): list_files(d)``)
    was a HEAD and a LIST before the listing, for each pass's stats/ and failed/ (session 45,
    h141). A listing that fails is looked at as before (pyarrow's check raises what it raised)."""
    if not is_s3(uri):
        return list_files(uri, suffixes) if exists(uri) else []
    return list(_listing(uri, suffixes, False, versions=False, empty_ok=True))


def list_file_versions_if_any(uri: str, suffixes: tuple[str, ...] = ()) -> dict[str, tuple[int, str]]:
    """:func:`list_file_versions` of the directory ``uri``, or {} when nothing is there, as
    :func:`list_files_if_any` lists: on S3 one LIST of an empty prefix (a run's pass directories
    before they are written), not 5 (a LIST, pyarrow's HEAD and LIST, then an existence check's
    HEAD and LIST; session 45, h148)."""
    if not is_s3(uri):
        return list_file_versions(uri, suffixes) if exists(uri) else {}
    return _listing(uri, suffixes, False, versions=True, empty_ok=True)  # type: ignore[return-value]


def list_files(uri: str, suffixes: tuple[str, ...] = (), log_skipped: bool = False,
               runs: list[str] | None = None) -> list[str]:
    """Files under a directory URI (recursive), or the URI itself if it is a file; sorted.

    Suffixes match in any case (``X.JSONL``). Names starting with ``.`` or ``_`` (temporary and
    metadata files) are not listed, nor is anything inside a directory below ``uri`` whose name
    does (as pyarrow's dataset discovery ignores them: Spark's ``_temporary/`` holds the partial
    part files of a write in progress or a failed one, ``.ipynb_checkpoints/`` copies). Local
    directories are walked following symlinks, but no directory is entered twice and no file is
    listed twice (by device and inode): a symlink loop is skipped, never followed.
    ``log_skipped`` logs one line per file left out, and why (the input listing uses it, so no
    input is skipped without a word). ``runs``, when given, is extended with the refinery run
    directories below ``uri`` whose files were left out, and the caller says what they mean (an
    input's refuses them: their documents left out unsaid were lost; session 48, h178), so they are
    not logged as skipped.
    """
    return list(_listing(uri, suffixes, log_skipped, versions=False, runs_out=runs))


def list_file_versions(uri: str, suffixes: tuple[str, ...] = (), log_skipped: bool = False,
                       runs: list[str] | None = None) -> dict[str, tuple[int, str]]:
    """What :func:`list_files` lists, each with its ``(byte size, version)`` as
    :func:`file_versions` gives them, from the same listing: an S3 prefix is listed once (its
    listing carries each object's size and ETag), not once for the names and again for versions.
    ``runs``: as for :func:`list_files`."""
    return _listing(uri, suffixes, log_skipped, versions=True, runs_out=runs)  # type: ignore[return-value]


def _listing(uri: str, suffixes: tuple[str, ...], log_skipped: bool, versions: bool,
             empty_ok: bool = False, runs_out: list[str] | None = None) -> dict[str, tuple[int, str] | None]:
    """``empty_ok``: an S3 prefix with nothing under it is an empty directory (else pyarrow looks
    whether it is a file, nothing or a missing bucket); a missing local path still raises."""
    fs, path = resolve(uri)
    skipped: list[tuple[str, str]] = []
    s3_versions: dict[str, tuple[int, str]] | None = None  # an S3 prefix's listing carries them
    listed_s3 = _list_s3_directory(uri, path, skipped, empty_ok) if is_s3(uri) else None
    info = None if listed_s3 else _info(fs, uri, path)
    if info is None:
        found, s3_versions = listed_s3  # type: ignore[misc]
    elif info.type == pafs.FileType.File:
        found = [path]
    elif info.type == pafs.FileType.NotFound and empty_ok:
        return {}
    elif info.type == pafs.FileType.NotFound:
        raise StorageError(f"input not found: {uri}{missing_bucket_hint(uri)}{_glob_hint(uri)}")
    elif is_s3(uri):
        found, s3_versions = _list_s3_prefix(uri, path, skipped)
    else:
        found = _walk_local(path, skipped)
    lowered = tuple(s.lower() for s in suffixes)
    # a refinery run directory inside the input (``-i data -o data/run1``, then ``-i data``): its
    # kept and removed shards are outputs, never input (they were read back, doubling documents;
    # found by adversarial testing)
    runs = tuple(posixpath.dirname(p) + "/" for p in found
                 if posixpath.basename(p) == RUN_MARKER and posixpath.dirname(p) != path.rstrip("/")
                 and _is_run_record(("s3://" if is_s3(uri) else "") + p))
    in_runs: dict[str, int] = {}
    listed = []
    for p in found:
        name = posixpath.basename(p)
        run = next((r for r in runs if p.startswith(r)), None) if runs else None
        if run is not None:
            in_runs[run] = in_runs.get(run, 0) + 1
        elif name.startswith((".", "_")):
            skipped.append((p, "name starts with '.' or '_' (temporary or metadata file)"))
        elif lowered and not name.lower().endswith(lowered):
            skipped.append((p, f"not one of {', '.join(suffixes)}"))
        else:
            listed.append(p)
    prefix = "s3://" if is_s3(uri) else ""
    for run, n in in_runs.items():
        if runs_out is not None:
            runs_out.append(prefix + run.rstrip("/"))
        else:
            skipped.append((run, f"a refinery run directory ({RUN_MARKER}): its {n} file(s) are a run's output, not input"))
    if log_skipped:
        log_skipped_files(skipped, uri, prefix, prefix + path)
    uris = sorted(prefix + p for p in listed)
    if not versions:
        return dict.fromkeys(uris)
    if s3_versions is not None:
        return {u: s3_versions[u[5:]] for u in uris}
    return file_versions(uri, uris)  # local files (a stat each), or the one S3 object (a HEAD)


def _list_s3_directory(uri: str, path: str, skipped: list[tuple[str, str]], empty_ok: bool = False
                       ) -> tuple[list[str], dict[str, tuple[int, str]]] | None:
    """:func:`_list_s3_prefix` of ``path`` when objects are under it (or, ``empty_ok``, when it
    was listed and nothing is), else None (a file, nothing, a bucket that does not exist, a
    failed listing: pyarrow's look at it tells which). Listed first: an existence check before
    it (a HEAD, then pyarrow's own LIST) made every directory listing three requests (session
    44, h139)."""
    if "/" not in path:  # a bucket: pyarrow's look says whether it exists
        return None
    try:
        listed = _list_s3_prefix(uri, path, skipped)
    except MissingCredentials:
        raise  # pyarrow's look has none either: it only retried (48 s with no route to S3) to say less
    except StorageError:  # (a missing bucket, a refusal): pyarrow's look names it as before
        return None
    return listed if listed[0] or skipped or empty_ok else None


def _glob_hint(uri: str) -> str:
    """A pattern given as the input (``in/*.warc.gz``, quoted so the shell did not expand it) is
    not expanded: say to give its directory, whose files are all read (review h111)."""
    if not any(c in uri for c in "*?["):
        return ""
    parts = uri.split("/")
    first = next(i for i, part in enumerate(parts) if any(c in part for c in "*?["))
    parent = "/".join(parts[:first]) or "."
    return f" (patterns are not expanded: give the directory, e.g. {parent}, and every input file in it is read)"


def missing_run_hint(uri: str) -> str:
    """Why ``uri`` holds no run, when the reason is that nothing is there: `` (the bucket ... does
    not exist)`` on S3, `` (no such directory)`` for a local path that does not exist (a typo read
    as "is it a refinery run directory?", as if a directory were there; review h111)."""
    if is_s3(uri):
        return missing_bucket_hint(uri)
    return "" if exists(uri) else " (no such directory)"


def missing_bucket_hint(uri: str) -> str:
    """" (the bucket ... does not exist)" when that is why an S3 URI names nothing."""
    if not is_s3(uri):
        return ""
    bucket = uri[5:].split("/", 1)[0]
    try:
        s3_client().head_bucket(Bucket=bucket)
    except Exception as exc:  # noqa: BLE001 - botocore raises many types
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            return f" (the bucket {bucket} does not exist)"
    return ""


def _list_s3_prefix(uri: str, path: str, skipped: list[tuple[str, str]]) -> tuple[list[str], dict[str, tuple[int, str]]]:
    """The objects under the S3 "directory" ``path`` (``bucket/key``) in one paginated listing:
    their paths, and their ``(size, ETag)`` by path. Directory markers (keys ending in ``/``) are
    no files; objects inside a hidden directory are left out into ``skipped``."""
    bucket, _, key = path.partition("/")
    base = f"{key}/" if key else ""
    found: list[str] = []
    found_versions: dict[str, tuple[int, str]] = {}
    try:
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
            for obj in page.get("Contents", []):
                name = obj["Key"]
                if name.endswith("/"):
                    continue
                full = f"{bucket}/{name}"
                hidden = _hidden_directory(name[len(base):])
                if hidden:
                    skipped.append((full, f"inside {hidden}/ (a temporary or metadata directory)"))
                    continue
                found.append(full)
                found_versions[full] = (obj["Size"], obj["ETag"].strip('"'))
    except Exception as exc:  # noqa: BLE001 - botocore raises many types; name the URI
        raise s3_error(f"cannot list the files under {uri}", exc) from exc
    return found, found_versions


def holds_files(uri: str) -> bool:
    """Whether the directory ``uri`` holds a file :func:`list_files` would list (a name not starting
    with ``.`` or ``_``, in no such directory), stopping at the first: on S3 one LIST page. Not
    :func:`exists`, which is true for a directory holding only hidden files (a temporary, a lock)
    and, on S3, for a prefix holding only a directory marker: pyarrow leaves ``parent/`` when it
    deletes a directory's last object (``OUT/url_dedup/`` once its ``index/`` was cleared), so a
    pass that had written nothing read as started (session 46, h156). False for a file or nothing;
    a failed listing is raised."""
    if not is_s3(uri):
        for _, dirs, files in os.walk(absolute(uri)):  # (nothing for a file or a missing path)
            dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
            if any(not f.startswith((".", "_")) for f in files):
                return True
        return False
    path = validate_uri(uri)[5:].rstrip("/")
    bucket, _, key = path.partition("/")
    base = f"{key}/" if key else ""
    try:
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
            for obj in page.get("Contents", []):
                relative = obj["Key"][len(base):]
                if relative and not relative.endswith("/") and not _hidden_directory(relative) \
                        and not posixpath.basename(relative).startswith((".", "_")):
                    return True
    except Exception as exc:  # noqa: BLE001 - botocore raises many types; name the URI
        raise s3_error(f"cannot list the files under {uri}", exc) from exc
    return False


def is_run_directory(uri: str) -> bool:
    """Whether ``uri`` is a refinery run directory (its ``run.json`` is a plan record). No existence
    check first (on S3 a HEAD, and a LIST when absent): a missing run.json fails its one GET. A
    refusal (403) is raised, as the existence check raised it."""
    marker = join(uri, RUN_MARKER)
    try:
        record = read_json(marker)
    except DamagedRecord:
        return False  # not JSON: another tool's file
    except StorageError as exc:
        if isinstance(exc, MissingCredentials):  # named as given: its run.json is not a file the user named
            raise MissingCredentials(no_credentials_for("open", uri)) from None
        status = _status(exc.__cause__)
        # absent (S3's 404; locally, asked once more) is "no"; any other failed read is no answer
        if status == 404 or (status is None and not exists(marker)):
            return False
        raise
    return _is_plan_record(record)


def _is_run_record(run_json: str) -> bool:
    """Whether ``run_json`` is refinery's plan record (a dataset may ship a run.json of its own)."""
    try:
        record = read_json(run_json)
    except DamagedRecord:
        return False  # not JSON: another tool's file
    except (StorageError, OSError):
        if not exists(run_json):  # deleted since it was listed
            return False
        raise  # a failed read is no answer: a run taken for none had its outputs read as input
    return _is_plan_record(record)


def _is_plan_record(record: dict[str, Any]) -> bool:
    # `refinery dedup`'s record has its passes and "kind": "dedup" but no "config": its output,
    # given as input, was read whole (its JSON records as 509 bad_json rows; review h92)
    return (isinstance(record, dict) and isinstance(record.get("passes"), list)
            and ("config" in record or record.get("kind") == "dedup"))


#: lines (one per reason) and example names per line that the listing logs for skipped files
_MAX_SKIP_REASONS = 10
_SKIP_EXAMPLES = 3


def log_skipped_files(skipped: list[tuple[str, str]], uri: str, prefix: str = "", listed_root: str = "") -> None:
    """One warning per reason a listing left files out: the file itself when it is the only one,
    else the count and a few names relative to ``uri`` (50 lines, one per file, buried a
    ``.json`` of JSON lines among sidecars; found by adversarial testing). Every file at DEBUG.
    ``listed_root``: ``uri`` as the listing spells its files (local listings are absolute)."""
    by_reason: dict[str, list[str]] = {}
    for path, why in sorted(skipped):
        by_reason.setdefault(why, []).append(prefix + path)
        log.debug("skipping %s%s: %s", prefix, path, why)
    root = (listed_root or uri).rstrip("/") + "/"
    reasons = sorted(by_reason.items(), key=lambda item: -len(item[1]))
    for why, paths in reasons[:_MAX_SKIP_REASONS]:
        if len(paths) == 1:
            log.warning("skipping %s: %s", paths[0], why)
            continue
        names = [p[len(root):] if p.startswith(root) else p for p in paths[:_SKIP_EXAMPLES]]
        more = f" and {len(paths) - _SKIP_EXAMPLES} more" if len(paths) > _SKIP_EXAMPLES else ""
        log.warning("skipping %d files under %s: %s: %s%s", len(paths), uri, why, ", ".join(names), more)
    rest = sum(len(paths) for _, paths in reasons[_MAX_SKIP_REASONS:])
    if rest:
        log.warning("skipping %d more files under %s for other reasons (-v names them)", rest, uri)
#: the file that makes a directory a refinery run directory (``refinery.rundir.RunDir.run_json``)
RUN_MARKER = "run.json"


def file_versions(root: str, uris: list[str]) -> dict[str, tuple[int, str]]:
    """``(byte size, version)`` of each of ``uris`` (files listed under ``root``, a directory or the
    file itself). The version changes when the file is rewritten: its modification time in
    nanoseconds locally (one stat per file); on S3 the object's ETag (a digest of its content; one
    listing of ``root``), not LastModified, whose one-second resolution misses a quick rewrite."""
    if not uris:
        return {}
    if not is_s3(root):
        stats = {u: os.stat(u) for u in uris}
        return {u: (st.st_size, str(st.st_mtime_ns)) for u, st in stats.items()}
    path = root[5:].rstrip("/")
    if [u[5:].rstrip("/") for u in uris] == [path]:  # root is the one file
        bucket, _, key = path.partition("/")
        try:
            head = s3_client().head_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - botocore raises many types; name the URI
            raise s3_error(f"cannot read the size and ETag of {root}", exc) from exc
        found = {path: (head["ContentLength"], head["ETag"].strip('"'))}
    else:
        found = _list_s3_prefix(root, path, [])[1]
    missing = [u for u in uris if u[5:] not in found]
    if missing:  # deleted between the two listings
        raise StorageError(f"input file {missing[0]} disappeared while the run was planned")
    return {u: found[u[5:]] for u in uris}


def _hidden_directory(relative: str) -> str | None:
    """The first directory of ``relative`` (a file's path below the listed root) whose name starts
    with ``.`` or ``_``, else None."""
    for part in relative.split("/")[:-1]:
        if part.startswith((".", "_")):
            return part
    return None


def _walk_local(root: str, skipped: list[tuple[str, str]]) -> list[str]:
    """Regular files under ``root``, depth first in name order, following directory symlinks
    but entering each directory (device, inode) once and listing each file once."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: dict[tuple[int, int], str] = {}
    found: list[str] = []
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            st = os.stat(directory)
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                skipped.append((directory, "directory already listed (a symlink loop or a second link to it)"))
                continue
            seen_dirs.add(key)
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise StorageError(f"cannot list {directory}: {exc}") from exc
        subdirs = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=True):
                    if entry.name.startswith((".", "_")):
                        why = "a temporary or metadata directory (name starts with '.' or '_'): nothing inside it is read"
                        skipped.append((entry.path + "/", why))
                    else:
                        subdirs.append(entry.path)
                    continue
                if not entry.is_file(follow_symlinks=True):
                    skipped.append((entry.path, "not a regular file (a broken symlink, a device, a FIFO)"))
                    continue
                est = entry.stat(follow_symlinks=True)
            except OSError as exc:  # ELOOP: a symlink to itself; or it vanished meanwhile
                skipped.append((entry.path, f"cannot be read: {exc.strerror or exc}"))
                continue
            fkey = (est.st_dev, est.st_ino)
            if fkey in seen_files:
                skipped.append((entry.path, f"same file as {seen_files[fkey]}"))
                continue
            seen_files[fkey] = entry.path
            found.append(entry.path)
        stack.extend(reversed(subdirs))  # visit subdirectories in name order
    return found


_EXPECTED_VERSIONS: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("expected_versions", default={})


@contextmanager
def expecting_version(uri: str, version: str | None) -> Iterator[None]:
    """Inside the block, :func:`open_input` of ``uri`` reads ``version`` (as :func:`file_versions`
    gives it: mtime in ns locally, the ETag on S3) or raises :class:`StorageError`."""
    if version is None:
        yield
        return
    token = _EXPECTED_VERSIONS.set({**_EXPECTED_VERSIONS.get(), uri: version})
    try:
        yield
    finally:
        _EXPECTED_VERSIONS.reset(token)


class InputChangedError(StorageError):
    """An input file is not the version its run listed: no retry of the shard reads that version."""


def _changed(uri: str, version: str, now: str) -> InputChangedError:
    return InputChangedError(f"{uri} changed after the run listed it (version {version}, now {now}): run the "
                             "same command again to plan with the file as it is now")


def open_input(uri: str, seekable: bool = False) -> BinaryIO:
    """Open ``uri`` for reading its raw bytes. ``seekable=True`` gives a random-access file (the
    WARC reader seeks back to resynchronise after damage; Parquet needs it); S3 objects are
    always seekable (spooled locally). Inside :func:`expecting_version`, the file must still be
    the version the run listed."""
    fs, path = resolve(uri)
    expected = _EXPECTED_VERSIONS.get().get(uri)
    if is_s3(uri):
        return _open_s3_input(uri, path, expected)
    try:
        if seekable:
            handle = fs.open_input_file(path)
        else:
            # Raw bytes: pyarrow would otherwise gunzip ".gz" files by their name, which hides the
            # compressed offsets the WARC reader reports for corrupt members.
            handle = fs.open_input_stream(path, compression=None)
    except (OSError, FileNotFoundError) as exc:
        raise StorageError(f"cannot open {uri}: {exc}") from exc
    if expected is not None:
        now = str(os.stat(path).st_mtime_ns)
        if now != expected:
            handle.close()
            raise _changed(uri, expected, now)
    return handle


def _open_s3_input(uri: str, path: str, expected_etag: str | None = None) -> BinaryIO:
    """A seekable view of the object by ranged boto3 GETs (:class:`S3RangeFile`): streamed, memory
    bounded, nothing on disk. It downloaded the whole object to a temporary file first: a crawl's
    1 GB WARCs times 72 workers filled the instance's disk (found by adversarial testing). Not
    pyarrow's S3 reads: they turn a 503/500 whose error body overflows the range buffer into a
    non-retryable failure ("Failed to flush response stream")."""
    import pyarrow as pa

    bucket, _, key = path.partition("/")
    raw = S3RangeFile(uri, bucket, key, expected_etag)
    return pa.PythonFile(io.BufferedReader(raw, buffer_size=2**20), mode="r")


#: S3 error codes no retry of a ranged GET changes
_S3_FINAL_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "AccessDenied", "403", "404", "InvalidRange", "416",
                             "PreconditionFailed", "412", "InvalidAccessKeyId", "SignatureDoesNotMatch"})


def _quoted(etag: str) -> str:
    return etag if etag.startswith('"') else f'"{etag}"'  # listings give it bare, HEAD and GET quoted


def _get_object(uri: str, want: int | None = None, **request: str) -> tuple[bytes, dict[str, Any]]:
    """(body, response) of one GET of the S3 object ``uri`` (``request``: Range, IfMatch), retried
    with backoff, its body included (botocore retries the request, not a connection reset in the
    middle of the body); ``want``: the bytes the body must hold (a short one is retried). Errors no
    retry changes (a 404, 412, 403) are raised at once, as botocore raised them."""
    import random

    bucket, _, key = uri[5:].partition("/")
    attempts = max(1, s3_max_attempts())
    for attempt in range(1, attempts + 1):
        try:
            try:
                response = s3_client(s3_get_timeout()).get_object(Bucket=bucket, Key=key, **request)
            except Exception as exc:  # noqa: BLE001 - botocore raises many types
                if type(exc).__name__ == "ReadTimeoutError":
                    # botocore retried it already: retried here too, a hung store's GET waited
                    # attempts x attempts x the timeout (64 x 60 s by default; h144)
                    raise _Retried(exc) from exc
                raise
            data = response["Body"].read()
            if want is not None and len(data) != want:
                raise OSError(f"short read: {len(data)} of {want} bytes")
            return data, response
        except _Retried as retried:
            raise retried.__cause__ from None  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - botocore/urllib3 raise many types
            if _error_code(exc) in _S3_FINAL_CODES or _no_credentials(exc) or attempt == attempts:
                raise
            time.sleep(min(20.0, 0.2 * 2**attempt) * random.random())
    raise AssertionError("unreachable")


class _Retried(Exception):
    """An error of a request that botocore has retried already (its ``__cause__``)."""


def _read_s3_whole(uri: str) -> bytes:
    """The whole S3 object ``uri`` in one GET: its body is one version (a PUT replaces an object at
    once), so no HEAD first; within :func:`expecting_version`, the GET carries ``If-Match`` (a
    replaced object is refused by S3 itself: :class:`InputChangedError`)."""
    expected = _EXPECTED_VERSIONS.get().get(uri)
    try:
        return _get_object(uri, **({"IfMatch": _quoted(expected)} if expected else {}))[0]
    except Exception as exc:  # noqa: BLE001 - botocore raises many types; name the URI
        if expected and _status(exc) == 412:
            raise _changed(uri, expected, _etag_now(uri)) from None
        raise s3_error(f"cannot open {uri}", exc) from exc


def _etag_now(uri: str) -> str:
    """The object's ETag now, for a message (a refused If-Match); "unknown" when it cannot be had."""
    try:
        return (etag(uri) or "deleted").strip('"')
    except StorageError:
        return "unknown"


class S3RangeFile(io.RawIOBase):
    """A read-only, seekable S3 object: blocks of :attr:`BLOCK` bytes (or the read's size, up to
    :attr:`MAX_BLOCK`) fetched by ranged GETs pinned to the object's ETag, so a rewrite while it is
    read fails instead of mixing versions. Each GET, its body included, is retried with backoff
    (botocore retries the request, not a connection reset in the middle of the body).

    Opening is one ranged GET of the first :attr:`OPEN_BYTES`, whose answer carries the ETag and the
    object's size: it was a HEAD, then a GET for every read, so each JSON marker, stats record or
    small Parquet shard cost two requests or more (session 44, h139); an object no larger than that
    is now read in that one GET. ``expected_etag`` (the version a listing gave) rides on it as
    ``If-Match``: a replaced object is refused by S3 (:class:`InputChangedError`)."""

    BLOCK = 8 * 2**20
    MAX_BLOCK = 64 * 2**20
    #: what the opening GET asks for: all of a marker, a stats record, a small shard or a token
    #: index; of a large object, its first 1 MiB (~10 ms at 100 MB/s, less than the HEAD it saves)
    OPEN_BYTES = 2**20

    def __init__(self, uri: str, bucket: str, key: str, expected_etag: str | None = None) -> None:
        super().__init__()
        self.uri, self.bucket, self.key = uri, bucket, key
        self._pos = 0
        self._block_start = 0
        self._block, self.size, self.etag = self._open(expected_etag)

    def _open(self, expected_etag: str | None) -> tuple[bytes, int, str]:
        """(first block, size, ETag) from one ranged GET of :meth:`_opening_range` (a plain GET
        for an empty object, to which S3 answers a range with 416)."""
        condition = {"IfMatch": _quoted(expected_etag)} if expected_etag else {}
        try:
            try:
                data, response = _get_object(self.uri, Range=self._opening_range(), **condition)
            except Exception as exc:  # noqa: BLE001 - re-raised unless the object is empty
                if _status(exc) != 416:
                    raise
                data, response = _get_object(self.uri, **condition)
        except Exception as exc:  # noqa: BLE001 - botocore raises many types; name the URI
            if expected_etag and _status(exc) == 412:
                raise _changed(self.uri, expected_etag, _etag_now(self.uri)) from None
            self._raise_if_missing(exc)
            raise s3_error(f"cannot open {self.uri}", exc) from exc
        # "bytes 0-1048575/5242880"; a server that ignores Range sends the whole object, no ContentRange
        total = str(response.get("ContentRange") or "").rpartition("/")[2]
        size = int(total) if total.isdigit() else len(data)
        return data, size, str(response["ETag"])

    def _opening_range(self) -> str:
        """The opening GET's range: the head of the object."""
        return f"bytes=0-{self.OPEN_BYTES - 1}"

    def _raise_if_missing(self, exc: Exception) -> None:
        """A missing object at opening: here a storage error like any other."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._pos >= self.size or not len(buffer):
            return 0
        if not self._block_start <= self._pos < self._block_start + len(self._block):
            self._block = self._fetch(self._pos, min(max(self.BLOCK, len(buffer)), self.MAX_BLOCK))
            self._block_start = self._pos
        start = self._pos - self._block_start
        n = min(len(buffer), len(self._block) - start)
        memoryview(buffer)[:n] = memoryview(self._block)[start : start + n]
        self._pos += n
        return n

    def _fetch(self, pos: int, length: int) -> bytes:
        return read_range_if(self.uri, pos, min(self.size, pos + length) - pos, self.etag)


class S3TailFile(S3RangeFile):
    """A read-only, seekable S3 object for a reader that starts at its end (Parquet: the footer):
    opened by one GET of its last :attr:`TAIL_BYTES` (a suffix range), whose answer carries the size
    and ETag and holds almost every footer; every other read is one ranged GET of just the bytes
    asked for, pinned to that ETag. pyarrow's own opening was a HEAD for the size, then the same
    GETs; :class:`S3RangeFile`'s opening reads the head of the file (1 MiB that a Parquet reader
    of one row group or column rarely wants) and reads ahead in 8 MiB blocks (session 45, h153)."""

    #: pyarrow's first read of a Parquet file is its last 64 KiB (the footer and the length)
    TAIL_BYTES = 64 * 2**10

    def _open(self, expected_etag: str | None) -> tuple[bytes, int, str]:
        data, size, etag = super()._open(expected_etag)
        self._block_start = size - len(data)  # "bytes 4096-69631/69632": the tail's place
        return data, size, etag

    def _opening_range(self) -> str:
        return f"bytes=-{self.TAIL_BYTES}"  # a suffix range: the last bytes, however long the object

    def _raise_if_missing(self, exc: Exception) -> None:
        if _error_code(exc) in ("NoSuchKey", "NoSuchBucket", "404"):
            # as pyarrow raised it: a missing file is no error a retry of the task changes
            raise FileNotFoundError(f"cannot open {self.uri}: no such S3 object ({_error_code(exc)})") from None

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._pos >= self.size or not len(buffer):
            return 0
        start = self._pos - self._block_start
        if 0 <= start < len(self._block):  # the tail read at opening
            n = min(len(buffer), len(self._block) - start)
            memoryview(buffer)[:n] = memoryview(self._block)[start : start + n]
        else:  # exactly the bytes asked for (up to the tail), nothing kept
            n = min(len(buffer), self.MAX_BLOCK, self.size - self._pos)
            if self._block_start > self._pos:
                n = min(n, self._block_start - self._pos)
            memoryview(buffer)[:n] = read_range_if(self.uri, self._pos, n, self.etag)
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes (fewer only at the end): pyarrow takes a short read for the end."""
        want = self.size - self._pos if size is None or size < 0 else min(size, max(0, self.size - self._pos))
        out = bytearray(want)
        view, got = memoryview(out), 0
        while got < want:
            n = self.readinto(view[got:])
            if not n:
                break
            got += n
        return bytes(out[:got])


def open_parquet_input(uri: str) -> BinaryIO:
    """A random-access file of the Parquet file ``uri`` for ``pq.ParquetFile``/``pq.read_table``.
    On S3 an :class:`S3TailFile`: no HEAD (pyarrow's ``open_input_file`` made one before each
    read: ~110 of a MinHash dedup's 237 HEADs of 10 shards), its reads pinned to one version, and
    inside :func:`expecting_version` to the listed one. Locally pyarrow's file, as before."""
    filesystem, path = resolve(uri)
    if not is_s3(uri):
        return filesystem.open_input_file(path)
    import pyarrow as pa

    bucket, _, key = path.partition("/")
    return pa.PythonFile(S3TailFile(uri, bucket, key, _EXPECTED_VERSIONS.get().get(uri)), mode="r")


class ObjectMissing(StorageError):
    """An S3 object is gone (deleted) when a ranged read asked for it."""


def read_range_if(uri: str, offset: int, nbytes: int, etag: str) -> bytes:
    """Bytes ``[offset, offset + nbytes)`` of the S3 object ``uri`` as long as its ETag is still
    ``etag``: a ranged GET with ``If-Match`` (retried with backoff, body included), so a rewrite
    between reads fails (:class:`ObjectChanged`) instead of mixing versions; a deleted object is
    :class:`ObjectMissing`."""
    etag = _quoted(etag)
    end = offset + nbytes - 1
    try:
        return _get_object(uri, want=nbytes, Range=f"bytes={offset}-{end}", IfMatch=etag)[0]
    except Exception as exc:  # noqa: BLE001 - botocore/urllib3 raise many types
        code = _error_code(exc)
        if code in ("PreconditionFailed", "412"):
            raise ObjectChanged(f"{uri} changed while it was read (its ETag is no longer {etag})") from exc
        if code in ("NoSuchKey", "404"):
            raise ObjectMissing(f"{uri} went missing while it was read") from exc
        raise s3_error(f"cannot read {uri} (bytes {offset}-{end})", exc) from exc


def read_json(uri: str) -> dict[str, Any]:
    """The JSON object at ``uri`` (refinery's records: run.json, pass markers, shard stats); a
    damaged one is a :class:`StorageError` naming the file (it was a bare "Expecting property name
    ...: line 1 column 2", and valid JSON that is no object, ``[]``, "unexpected AttributeError":
    found by adversarial testing)."""
    return json_record(uri, read_bytes(uri))


def json_record(uri: str, data: bytes) -> dict[str, Any]:
    import json

    try:
        record = json.loads(data)
    except ValueError as exc:
        raise DamagedRecord(f"{uri} is damaged (not valid JSON: {exc}); delete it and run the same command "
                           f"again to redo what it records") from None
    if not isinstance(record, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(record), "a number")
        raise DamagedRecord(f"{uri} is damaged ({kind}, not a JSON object); delete it and run the same command "
                           f"again to redo what it records")
    return record


def read_bytes(uri: str) -> bytes:
    """The whole file. On S3, one GET (see :func:`_read_s3_whole`): a HEAD before it doubled the
    requests of every marker and stats read, and an object replaced between the two was read
    again (two shares of a launch closing a pass together rewrite its marker with the same
    content, and one failed on the other's write; a review); one GET sees one version whole."""
    if is_s3(uri):
        resolve(uri)  # validates the URI, probes the endpoint once
        return _read_s3_whole(uri)
    with open_input(uri) as f:
        return f.read()


#: called with the URI before any change to an S3 object (a write, a delete), in every process:
#: :mod:`refinery.io.runlock` fences a run's writes with it (it raises when the run lost its claim
#: of the output). None: nothing to check.
before_s3_change: Callable[[str], None] | None = None


def _fence(uri: str) -> None:
    if before_s3_change is not None:
        before_s3_change(uri)


def makedirs(uri: str) -> None:
    fs, path = resolve(uri)
    if not is_s3(uri):
        fs.create_dir(path, recursive=True)


def delete(uri: str) -> None:
    """Delete the file ``uri`` if there is one (a directory, or nothing, is left as it is). On S3
    one DeleteObject, which S3 answers 204 whether or not the key was there: pyarrow looked first
    (a HEAD, then a LIST when it was missing: two requests for each failure record a successful
    shard clears) and, having deleted, PUT a marker ``dir/`` for the parent (refinery writes none
    and its listings skip them; session 45, h153). A failed delete is raised (a 403, a throttle
    after its retries, an outage); only a 404 (no such bucket) is "nothing to delete", as before."""
    if not is_s3(uri):
        fs, path = resolve(uri)
        if fs.get_file_info(path).type == pafs.FileType.File:
            fs.delete_file(path)
        return
    bucket, _, key = resolve(uri)[1].partition("/")
    if not key:
        return  # a bucket is no file
    _fence(uri)
    try:
        interruptible(lambda: s3_client().delete_object(Bucket=bucket, Key=key), "S3 delete")
    except Exception as exc:  # noqa: BLE001 - botocore raises many types; name the URI
        if _status(exc) == 404:
            return
        raise s3_error(f"cannot delete {uri}", exc) from None


def delete_tree(uri: str) -> None:
    """Delete the directory ``uri`` and everything under it (nothing if it does not exist)."""
    fs, path = resolve(uri)
    if _info(fs, uri, path).type == pafs.FileType.Directory:  # on S3: a prefix with objects under it
        if is_s3(uri):
            _fence(uri)
            interruptible(lambda: _changing(uri).delete_dir(path), "S3 delete")
            return
        fs.delete_dir(path)


#: what a temporary file of :func:`atomic_output` ends with
TMP_SUFFIX = ".partial"
#: an S3 object being written is held in memory up to this size, then in a local temporary file
UPLOAD_SPOOL_BYTES = 64 << 20


@contextmanager
def atomic_output(uri: str) -> Iterator[BinaryIO]:
    """Open ``uri`` for writing so that readers see either nothing or the complete file.

    Local: write a hidden temporary file in the same directory, fsync, then ``os.replace``.
    S3: objects only become visible when their upload completes; see below.
    """
    fs, path = resolve(uri)
    if is_s3(uri):
        # Buffer the whole object and upload it only once it is complete, with boto3 (pyarrow's S3
        # stream completes its upload on close, even from its destructor, so a failure mid-write
        # would publish a partial object). A failed upload publishes nothing. Past
        # UPLOAD_SPOOL_BYTES the buffer is a local temporary file: a shard's size is not memory.
        with tempfile.SpooledTemporaryFile(max_size=UPLOAD_SPOOL_BYTES) as buffer:
            yield buffer
            bucket, _, key = path.partition("/")
            buffer.seek(0)
            _fence(uri)  # after the bytes are made, right before they are published
            try:
                # in a helper thread: boto3's transfer manager, cancelled by Ctrl-C or SIGTERM, waited
                # for its hung request (60 s x 8 attempts) before it let the stop through
                interruptible(lambda: s3_client().upload_fileobj(buffer, bucket, key), "S3 upload")
            except Exception as exc:  # noqa: BLE001 - botocore raises many types; name the URI
                raise s3_error(f"upload to {uri} failed", exc) from exc
        return
    directory = os.path.dirname(path)
    # the temporary name ends in TMP_SUFFIX, not in the file's own suffix: a glob such as DuckDB's
    # 'DIR/*.parquet' (which includes dot files) never reads a half-written or abandoned one
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}{TMP_SUFFIX}")
    group = _PUBLISH_GROUP.get()
    try:
        with _naming(path):
            os.makedirs(directory, exist_ok=True)
            f = open(tmp, "wb")
        try:
            with _naming(path, unnamed_only=True):
                yield f
            with _naming(path):
                f.flush()
                if group is None:
                    os.fsync(f.fileno())
        except BaseException:
            _close_failed(f)
            raise
        f.close()
        if group is not None:  # synced and renamed with the group's other files
            group.append((tmp, path))
            tmp = ""
            return
        with _naming(path):
            os.replace(tmp, path)
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


#: the (temporary, final) local files of the open :func:`published_together` block
_PUBLISH_GROUP: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar("publish_group",
                                                                                                default=None)
_SYNC_POOL: tuple[int, Any] | None = None  # (pid, thread pool): a forked worker makes its own


@contextmanager
def published_together() -> Iterator[None]:
    """Local files written with :func:`atomic_output` in the block are fsynced together when it
    ends, then renamed into place in the order they were written: each is still whole or absent,
    and none is visible before all are durable. Why: a shard's four files (kept, removed,
    samples, its stats marker) each waited for their own journal commit, one after the other,
    ~45% of a dedup pass's removal step at 4 documents a shard; fsyncs issued at once share
    commits (session 44, h136). An error in the block publishes nothing. S3 writes are unchanged
    (an object is visible once its upload completes). A nested block joins the outer one."""
    if _PUBLISH_GROUP.get() is not None:
        yield
        return
    group: list[tuple[str, str]] = []
    token = _PUBLISH_GROUP.set(group)
    try:
        yield
        _PUBLISH_GROUP.reset(token)
        token = None
        _fsync_all(group)
        while group:
            tmp, path = group[0]
            with _naming(path):
                os.replace(tmp, path)
            group.pop(0)
    finally:
        if token is not None:
            _PUBLISH_GROUP.reset(token)
        for tmp, _ in group:  # not published
            if os.path.exists(tmp):
                os.unlink(tmp)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)  # any descriptor of the file flushes its data (Linux, POSIX)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_named(tmp: str, path: str) -> None:
    """fsync the temporary ``tmp`` of ``path``; an error names ``path`` and its directory (a
    failed grouped sync said "[Errno 5] Input/output error", or named the hidden temporary)."""
    with _naming(path):
        _fsync_path(tmp)


def _fsync_all(files: list[tuple[str, str]]) -> None:
    """fsync the (temporary, final) ``files`` concurrently (a thread each, up to 8); the first
    error is raised, naming its final file."""
    global _SYNC_POOL
    if len(files) <= 1:
        for tmp, path in files:
            _fsync_named(tmp, path)
        return
    if _SYNC_POOL is None or _SYNC_POOL[0] != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        _SYNC_POOL = (os.getpid(), ThreadPoolExecutor(max_workers=8, thread_name_prefix="refinery-fsync"))
    for future in [_SYNC_POOL[1].submit(_fsync_named, tmp, path) for tmp, path in files]:
        future.result()


def _close_failed(f: BinaryIO) -> None:
    """Close a file whose writing failed: closing flushes what is still buffered, and on a full
    disk that fails again and its error replaced the one that named the file (session 45)."""
    try:
        f.close()
    except OSError:
        pass


#: what a write of a file's bytes fails with (disk or quota full, file too large, read-only)
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


@contextmanager
def _naming(path: str, *, unnamed_only: bool = False) -> Iterator[None]:
    """Name the file being written, and its directory, in an OSError raised in the block: the
    error named the hidden temporary (``.tmp-<hex>-report.html.partial``), a file the user never
    asked for, when the directory was read-only (found by trials); and a write that found the disk
    full said only "[Errno 28] No space left on device" (session 45). ``unnamed_only``: the block
    is the caller's code, so only an error of a file being written is named (no file name in it:
    ``write``'s own errors have none), not one of another file the caller opened."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None or (unnamed_only and (exc.filename is not None or exc.errno not in _WRITE_ERRNOS)):
            raise
        directory, name = os.path.split(path)
        raise OSError(exc.errno, f"{exc.strerror}: cannot write {name} in {directory or '.'}") from exc


def sweep_temporaries(uri: str) -> int:
    """Delete temporary files a killed writer left for ``uri`` (local only: S3 publishes nothing
    until an upload completes). Returns how many were removed."""
    if is_s3(uri):
        return 0
    _, path = resolve(uri)
    directory, name = os.path.split(path)
    if not os.path.isdir(directory):
        return 0
    # (with or without TMP_SUFFIX: writers before it named their temporaries after the file alone)
    stale = [f for f in os.listdir(directory) if f.startswith(".tmp-") and f.removesuffix(TMP_SUFFIX).endswith("-" + name)]
    for f in stale:
        try:
            os.unlink(os.path.join(directory, f))
        except FileNotFoundError:
            pass
    return len(stale)


def sweep_tree_temporaries(root: str) -> int:
    """Delete every temporary file of :func:`atomic_output` under the directory ``root``: what
    writers killed on an earlier run left (call only while holding the directory's run lock, so no
    writer of this run is active). Local only. Returns how many were removed."""
    if is_s3(root):
        return 0
    _, path = resolve(root)
    removed = 0
    for directory, _dirs, files in os.walk(path):
        for f in files:
            if f.startswith(".tmp-"):  # ours only: atomic_output's and the dedup memmaps' temporaries
                try:
                    os.unlink(os.path.join(directory, f))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def write_bytes(uri: str, data: bytes) -> None:
    with atomic_output(uri) as f:
        f.write(data)


class WriteConflict(StorageError):
    """A conditional write lost: the object was created or replaced since it was read."""


def etag(uri: str) -> str | None:
    """The ETag of the S3 object ``uri`` (None when it does not exist, and for local files, which
    the run-directory lock guards instead): what :func:`write_bytes_if` expects to find."""
    if not is_s3(uri):
        return None
    bucket, _, key = resolve(uri)[1].partition("/")
    try:
        return str(s3_client(s3_get_timeout()).head_object(Bucket=bucket, Key=key)["ETag"])
    except Exception as exc:  # noqa: BLE001 - botocore raises many types; name the URI
        if _status(exc) == 404:
            return None
        raise s3_error(f"cannot read {uri}", exc) from None


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None) or {}
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _put_retrying_409(bucket: str, key: str, data: bytes, condition: dict[str, str], attempts: int = 5) -> str:
    """A conditional PUT, retried while S3 answers 409 ConditionalRequestConflict: another write of
    the key is in flight, to be retried (AWS's advice); once it lands, the retry gets its 412. Taken
    for a lost race, a lone run was refused as busy (a review)."""
    for attempt in range(attempts):
        try:
            return str(s3_client().put_object(Bucket=bucket, Key=key, Body=data, **condition)["ETag"])
        except Exception as exc:  # noqa: BLE001 - re-raised unless a 409 with attempts left
            if _status(exc) != 409 or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2 ** attempt)
    raise AssertionError("unreachable")


_UNCONDITIONAL_WARNED: set[str] = set()


def _warn_unconditional(uri: str) -> None:
    where = os.environ.get("AWS_ENDPOINT_URL") or "S3"
    if where not in _UNCONDITIONAL_WARNED:
        _UNCONDITIONAL_WARNED.add(where)
        log.warning("%s does not support conditional writes (501 NotImplemented): %s is written without them, so "
                    "two runs started at once into its directory are not told apart", where, uri)


def probe_conditions(uri: str, data: bytes) -> None:
    """Once per endpoint, right after ``uri`` (S3) was written with ``data``: check that the store
    honours conditional writes, by a PUT of the same bytes with ``If-None-Match: *``, which must be
    refused (412) as the object exists. A store that accepts it ignores the conditions (it performs
    the write, as some S3-compatible stores and proxies do): two commands into one output are then
    not refused, so say it once (a store answering 501 was warned about, and is not probed). The
    claim it rewrites is the same bytes (same ETag): nothing changes on an honouring store."""
    where = os.environ.get("AWS_ENDPOINT_URL") or "S3"
    if not is_s3(uri) or where in _UNCONDITIONAL_WARNED:
        return
    bucket, _, key = resolve(uri)[1].partition("/")
    try:
        _put_retrying_409(bucket, key, data, {"IfNoneMatch": "*"})
    except Exception as exc:  # noqa: BLE001 - 412 (or 409 spent): honoured; else the probe tells nothing
        if _status(exc) not in (409, 412):
            log.debug("cannot tell whether %s honours conditional writes: %s", where, exc)
        return
    _UNCONDITIONAL_WARNED.add(where)
    log.warning("%s ignores conditional writes (a PUT with If-None-Match: * over the existing %s was accepted): two "
                "refinery commands into one output there are not refused, nor two runs started at once told apart; "
                "run one at a time", where, uri)


def write_bytes_if(uri: str, data: bytes, expected: str | None) -> str | None:
    """Write ``uri`` only if it is as read: ``expected`` None, only if it does not exist (S3's
    ``If-None-Match: *``); else only if its ETag is still ``expected`` (``If-Match``). Returns the
    new ETag. S3 only: a local file is written as :func:`write_bytes` does (the run-directory lock
    orders its writers). Raises :class:`WriteConflict` when another writer came first: of two
    writers that read the same state, exactly one wins. A store that does not implement the
    conditions (501) is written unconditionally, with a warning."""
    if not is_s3(uri):
        write_bytes(uri, data)
        return None
    _fence(uri)
    bucket, _, key = resolve(uri)[1].partition("/")
    condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
    try:
        return _put_retrying_409(bucket, key, data, condition)
    except Exception as exc:  # noqa: BLE001 - botocore raises many types; name the URI
        if _status(exc) == 501:
            # a store without conditional writes (501 NotImplemented): every S3 run into it was
            # refused as "not writable" (a review); it is written as before, unordered, and said once
            _warn_unconditional(uri)
            try:
                return str(s3_client().put_object(Bucket=bucket, Key=key, Body=data)["ETag"])
            except Exception as again:  # noqa: BLE001 - as below
                raise s3_error(f"upload to {uri} failed", again) from again
        if _error_code(exc) == "NoSuchBucket":
            # a 404 too, but no lost race: taken for one, a run into a missing bucket was refused
            # as "in use by another refinery command"
            raise StorageError(f"upload to {uri} failed: the bucket {bucket} does not exist") from None
        # 412: created or replaced since read; 409: a concurrent conditional write is in flight;
        # 404 (If-Match): deleted since read
        if _status(exc) in (404, 409, 412):
            # a retried PUT whose first attempt succeeded (its response lost) finds its own bytes
            try:
                current = read_if_any_with_age(uri)
            except StorageError:  # unreadable: reported as the conflict it most likely is
                current = None
            if current is not None and current[0] == data:
                return current[1]
            raise WriteConflict(f"{uri} was written by another writer since it was read") from None
        raise s3_error(f"upload to {uri} failed", exc) from exc


def read_if_any_with_age(uri: str) -> tuple[bytes, str, float] | None:
    """(bytes, ETag, age in seconds) of the S3 object ``uri``, or None when it does not exist. The
    age is measured on the server's clock alone (its ``Date`` header minus the object's
    ``LastModified``), so clocks of the hosts that wrote and read it never enter. A time without
    a zone (``-0000``, or a proxy's own format) is taken as UTC, as HTTP dates are; a ``Date`` that
    cannot be read at all is replaced by this host's clock."""
    bucket, _, key = resolve(uri)[1].partition("/")
    try:
        got = s3_client(s3_get_timeout()).get_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001 - botocore raises many types; name the URI
        if _status(exc) == 404:
            return None
        raise s3_error(f"cannot read {uri}", exc) from None
    date = got.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    age = (_server_now(date) - _utc(got["LastModified"])).total_seconds()
    return got["Body"].read(), str(got["ETag"]), max(age, 0.0)


def _utc(when: Any) -> Any:
    """``when`` (a datetime) with a zone: a naive one is UTC (an aware minus a naive one raised TypeError)."""
    from datetime import timezone

    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


def _server_now(date: str | None) -> Any:
    """The store's clock from its ``Date`` header; this host's clock when there is none or it
    cannot be parsed (a proxy's own format): an age on two clocks beats no age at all, which
    made a killed command's claim look renewed forever."""
    from datetime import datetime, timezone
    from email.utils import parsedate_to_datetime

    if date:
        try:
            return _utc(parsedate_to_datetime(date))
        except (TypeError, ValueError, IndexError):
            log.debug("unreadable Date header from the store: %r; using this host's clock", date)
    return datetime.now(timezone.utc)
