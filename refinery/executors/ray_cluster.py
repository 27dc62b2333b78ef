"""Start or join a Ray cluster the same way everywhere (pipeline executor, dedup, SageMaker jobs).

``ensure_ray()`` connects to an existing cluster when an address is given (argument, then
``RAY_ADDRESS``), otherwise starts a local one. What it sets, and why:

- ``object_store_memory`` explicitly: Ray's default is 30% of RAM, which on a small machine
  fights the workers for memory, and our shard tasks pass only small objects (specs, stats);
  documents travel through storage, not the object store. Default: :data:`DEFAULT_OBJECT_STORE_BYTES`.
- usage stats off (``RAY_USAGE_STATS_ENABLED=0``): nothing phones home.
- no dashboard UI or HTTP API (``include_dashboard=False``). Ray 2.60 still starts the head's
  ``dashboard.py`` with only its usage-stats module and no listening port, and each raylet its
  dashboard and runtime-env agents (which do listen): no Ray option stops them (docs/scale.md).
- a local cluster listens on loopback only (:func:`loopback_node_address`): its node address
  stays 127.0.0.1, which Ray otherwise replaced by the host's IP, and then bound the dashboard
  agent's ports on 0.0.0.0 and the GCS, raylet and workers on every interface. A multi-node
  cluster (``refinery.launch.bootstrap``: ``ray start`` with each host's IP) must listen on the
  hosts' network, and is guarded by its shared token and the job's security group.
- token auth as well, in case the loopback binding fails (a Ray without the constant it relies
  on): a *local* cluster we start gets ``RAY_AUTH_MODE=token`` with a random ``RAY_AUTH_TOKEN``
  that only this process and the Ray processes it starts know, unless the user configured auth
  (``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH`` in the environment). It used
  to set ``RAY_AUTH_MODE=disabled``, believing the cluster loopback-only while it was not:
  anyone who could reach the host could run code on it during a run (found by adversarial
  testing). A multi-node cluster uses ``RAY_AUTH_MODE=token`` with one shared
  ``RAY_AUTH_TOKEN`` on every node and driver; connecting to such a cluster needs the same two
  variables in the driver's environment.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator

from refinery import interrupts

log = logging.getLogger("refinery.executors.ray_cluster")

#: how long a driver waits for the cluster at ``address`` to accept a connection before giving up
#: with one line (Ray itself retries for minutes, printing its own warnings)
CONNECT_TIMEOUT_S = float(os.environ.get("REFINERY_RAY_CONNECT_TIMEOUT_S", "20"))

#: object store size for local clusters when the config does not say (small objects only)
DEFAULT_OBJECT_STORE_BYTES = 512 * 2**20
#: environment variables through which a user configures Ray's token authentication
AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def auth_configured() -> bool:
    return any(os.environ.get(k) for k in AUTH_ENV)


def configure_environment(local: bool) -> None:
    """Environment every Ray process we start inherits (workers are spawned with it)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # worker lines forwarded into a log file: no colour codes. Ray prints a worker's stdout to the
    # driver's stdout, its stderr to stderr: both must be terminals for colours
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    # the driver's log deduplication folded the per-shard "[shard x] done: ..." lines (they differ
    # only in numbers) into "[repeated 4x across cluster]" in green, whatever RAY_COLOR_PREFIX
    # says (found by a new user's trial); each line is the record of a shard. Those now come back
    # with the results; what Ray still forwards (and would fold) is a worker's own lines: its
    # within-shard progress lines and warnings
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    logging_module = sys.modules.get("ray._private.ray_logging")
    if logging_module is not None and hasattr(logging_module, "RAY_DEDUP_LOGS"):
        # Ray read the variable when it was imported (a test, a notebook): tell it again
        logging_module.RAY_DEDUP_LOGS = os.environ["RAY_DEDUP_LOGS"].lower() in ("true", "1")  # as Ray reads it
    if local and not auth_configured():
        # loopback is every local user's: a token nobody else has (see the module docstring)
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        if "ray" in sys.modules:
            # Ray read its auth settings when it was imported: make it read them again (what
            # Ray's own tests do between clusters), or its driver would not send the token
            from ray._raylet import AuthenticationTokenLoader, Config

            Config.initialize("")
            AuthenticationTokenLoader.instance().reset_cache()


#: driver environment variables every task needs as the driver has them: refinery's own
#: (``REFINERY_MODELS`` names the models the plan fingerprinted) and the S3 endpoint and region.
#: Workers of a cluster refinery starts inherit them; those of an existing cluster did not, and
#: scored with other models under the same fingerprint (found by adversarial testing).
FORWARDED_ENV_PREFIXES = ("REFINERY_",)
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES) or k in FORWARDED_ENV}


class RayNotInstalled(ValueError):
    """``--executor ray`` without Ray: a user error, said in one line before any work (it was an
    "unexpected ModuleNotFoundError" once the first pass connected; found by adversarial testing)."""


def check_ray_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise RayNotInstalled("--executor ray needs Ray, which is not installed: pip install 'refinery[ray]' "
                          "(`bash scripts/install.sh --test` installs every extra)")


def cluster_address(address: str | None = None) -> str | None:
    """The address of the cluster :func:`ensure_ray` joins: ``address``, else ``RAY_ADDRESS``;
    None when it starts a local cluster of its own."""
    return address or os.environ.get("RAY_ADDRESS") or None


def ensure_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    log_to_driver: bool = True,
) -> bool:
    """Make sure this process is connected to Ray.

    Returns True when this call initialised Ray (the caller then owns its connection and should
    call ``ray.shutdown()`` when done), False when Ray was already initialised in this process.
    True does not mean the cluster was started here: :func:`cluster_address` says that.
    ``num_cpus``/``object_store_memory`` apply only to a local cluster started here.
    """
    address = cluster_address(address)
    configure_environment(local=not address)
    loaded = sys.modules.get("ray")
    if loaded is not None and loaded.is_initialized():
        return False
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        check_reachable(address)  # before importing Ray (~1 s): a wrong address fails at once
    import ray

    if address:
        try:
            with sigterm_kept():
                ray.init(address=address, log_to_driver=log_to_driver, namespace="refinery",
                         runtime_env={"env_vars": forwarded_env()})
        except ConnectionError as exc:
            if auth_configured():
                raise
            # a cluster with token auth refuses a driver without its token, and Ray's message
            # blames a crashed instance (found by adversarial testing)
            raise ConnectionError(f"{str(exc).strip().splitlines()[0]}; if the cluster uses token authentication "
                                  f"(Ray's default), export its RAY_AUTH_MODE=token and RAY_AUTH_TOKEN first") from None
        return True
    store = object_store_memory or DEFAULT_OBJECT_STORE_BYTES
    log.info("starting a local Ray cluster (%s CPUs, %d MB object store)", num_cpus or "all", store // 2**20)
    try:
        # a Ctrl-C or SIGTERM while the cluster starts (seconds) is held until it has started,
        # then raised: cut in the middle, its agents outlived the driver by a minute
        with loopback_node_address(), sigterm_kept(), interrupts.deferred():
            ray.init(
                # "local": always a new cluster of our own; without it Ray joins whatever cluster
                # /tmp/ray/ray_current_cluster names (another user's `ray start`, or a dead one)
                address="local",
                num_cpus=num_cpus,
                object_store_memory=store,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",  # kept as is by loopback_node_address: every port on loopback
                log_to_driver=log_to_driver,
                namespace="refinery",
            )
    except BaseException:
        if ray.is_initialized():  # the stop came as it finished starting: stop it too
            ray.shutdown()
        raise
    return True


@contextlib.contextmanager
def sigterm_kept() -> Iterator[None]:
    """SIGTERM's handler as it was before ``ray.init``, which replaces it twice: with its own
    ``sys.exit`` in Python, then with the C++ core's failure handler (absl's), which prints a stack
    dump and then calls the former (exit code 15) or aborts (SIGABRT, 134, its S3 claim left to
    lapse). So SIGTERM to a driver on Ray (scancel, docker stop) ended it with a C++ stack dump and
    no line instead of stopping the run as on Ctrl-C (``refinery.interrupts``: one line, 143),
    and a library caller's own handler was gone for good (found by adversarial testing). Python's
    ``signal.signal`` puts back the C-level handler too."""
    import signal

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    # Ray's Python handler is set first thing in ray.init, for the whole start (seconds): a SIGTERM
    # then ended the command line with exit 15 and no line (found by the session-39 trial). Kept
    # off while a Python handler of the caller's is in place, which then sees the SIGTERM
    utils = sys.modules.get("ray._private.utils")
    setter = getattr(utils, "set_sigterm_handler", None)
    if callable(previous) and setter is not None:
        utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        if setter is not None:
            utils.set_sigterm_handler = setter
        if previous is not None:  # None: set outside Python, nothing to put back
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def loopback_node_address() -> Iterator[None]:
    """Keep a local cluster's node address 127.0.0.1 while it starts, so that its GCS, raylet,
    workers and agents listen on loopback only: Ray replaces ``127.0.0.1`` by the host's reachable
    IP and then binds the agents' ports on every interface (0.0.0.0) and the others on that IP,
    unless its clusters are "disabled", as on macOS and Windows (``ray_constants.ENABLE_RAY_CLUSTER``,
    read from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when Ray is imported, so set here for the
    ``ray.init`` call alone: a later driver in this process may join a multi-node cluster). The
    processes Ray starts take the address as an argument. A Ray without the constant starts as
    before (token auth still guards the ports)."""
    constants = importlib.import_module("ray._private.ray_constants")
    had = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if had is None:
        yield
        return
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = had


def cluster_cpus() -> int:
    """CPUs the connected cluster offers (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


class _NotRay(ConnectionError):
    """Something answers at the address, and it is not Ray."""


def _not_http2(sock: socket.socket, timeout_s: float = 2.0) -> bool:
    """Whether the server on ``sock`` answers an HTTP/2 connection preface with anything but an
    HTTP/2 frame (an HTTP/1 status line or page). Ray's GCS speaks gRPC (HTTP/2) and answers with a SETTINGS frame; an HTTP/1 server (the
    dashboard given for the cluster) made ``ray.init`` retry for minutes (found by adversarial
    testing). Anything else (no answer within ``timeout_s``, a closed connection) is left to Ray."""
    try:
        sock.settimeout(timeout_s)
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        head = sock.recv(16)
    except OSError:
        return False
    # an HTTP/2 server's first frame is its SETTINGS (type 4 in the fourth byte of the frame header)
    return bool(head) and not (len(head) >= 4 and head[3] == 4)


def check_reachable(address: str, timeout_s: float | None = None) -> None:
    """ConnectionError (one line: where, and what to do) when nothing accepts a TCP connection at
    the ``host:port`` of ``address`` within ``timeout_s`` (default :data:`CONNECT_TIMEOUT_S`).
    ``auto`` and ``local`` are Ray's own words and are left to it."""
    if address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    hostport = address.removeprefix("ray://").rstrip("/")
    host, colon, port_text = hostport.rpartition(":")
    if host and not port_text.isdigit() and not host.endswith(":"):  # (`::1` is an IPv6 host, not a port)
        # `host:xyz` was read as a host named `host:xyz` on port 6379 and waited on for 20 s (h187)
        raise ConnectionError(f"{address}: the port {port_text!r} is not a number: give host:port (6379 by default), "
                              f"or the host alone")
    if not host or not port_text.isdigit():
        host, port_text = hostport, "10001" if client else "6379"  # Ray's default ports
    port = int(port_text)
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    last: OSError | None = None
    if host.startswith(("http:", "https:")) or client and host.startswith("//"):
        raise ConnectionError(
            f"{address} is an HTTP address (Ray's dashboard and job server, port 8265), not the cluster's: give "
            f"the cluster (GCS) address, host:6379 by default, or ray://host:10001 for Ray Client")
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, max(0.1, timeout_s))) as sock:
                if not client and _not_http2(sock, min(2.0, max(0.1, timeout_s))):
                    raise _NotRay(
                        f"{address} does not answer as Ray's gRPC does (HTTP/2): it is not a Ray cluster (GCS) address (the "
                        f"dashboard's port 8265?); give the cluster's, host:6379 by default")
                return
        except _NotRay:
            raise
        except OSError as exc:
            last = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    raise ConnectionError(
        f"no Ray cluster answers at {address} ({host}:{port}: {last.strerror or last} after {timeout_s:.0f}s): "
        f"start one there (`ray start --head --port {port}`), or leave executor.ray_address and RAY_ADDRESS "
        "unset to start a local cluster")


class RayletWatch:
    """Watches the raylet this driver runs its tasks through (its node's), from a thread: when it
    stops accepting connections ``misses`` times in a row, :attr:`lost` gets the one line saying so.

    Why: when that raylet dies (killed, out of memory), Ray's C++ core ends the driver process with
    exit code 1 and no message of ours, some seconds later (11 s in a measured run: when the GCS
    marks the node dead, the core worker touches the object store the raylet held, and
    terminates). The executor's loop waits on :attr:`lost` with its tasks and stops first."""

    def __init__(self, host: str, port: int, started_here: bool, every_s: float = 0.5, misses: int = 2) -> None:
        from concurrent.futures import Future

        self.host, self.port, self.started_here = host, port, started_here
        self.every_s, self.misses = every_s, misses
        self.lost: Future = Future()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="refinery-raylet-watch", daemon=True)
        self._thread.start()

    @classmethod
    def of_driver(cls, started_here: bool) -> "RayletWatch | None":
        """The watch of this driver's raylet; None when it has none to watch (Ray Client).
        ``started_here``: this driver started the cluster (a local one, gone with the driver's
        rerun starting a new one); False for a cluster it joined, whose owner brings it back."""
        import ray

        try:
            node_id = ray.get_runtime_context().get_node_id()
            node = next(n for n in ray.nodes() if n.get("NodeID") == node_id)
            return cls(node["NodeManagerAddress"], int(node["NodeManagerPort"]), started_here)
        except Exception:  # noqa: BLE001 - a Ray Client driver has no node of its own
            return None

    #: errors of a connection attempt that say the raylet is gone: its port closed, its host unreachable
    GONE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH,
                             errno.EHOSTDOWN})

    def answers(self) -> bool | None:
        """Whether the raylet accepts a connection; None when this process could not try (its
        descriptors or ephemeral ports used up: EMFILE, EADDRNOTAVAIL), which says nothing of the
        raylet. Counted as misses, two such seconds declared a healthy cluster lost for good and
        stopped the run (found by adversarial testing, with the driver's descriptors used up)."""
        try:
            socket.create_connection((self.host, self.port), timeout=2.0).close()
            return True
        except (TimeoutError, socket.timeout):
            return False
        except OSError as exc:
            return False if exc.errno in self.GONE_ERRNOS else None

    def probe(self) -> bool:
        """Probe now (a task's worker just died): whether the raylet is gone."""
        if not self.lost.done() and self.answers() is False:
            self._declare()
        return self.lost.done()

    def _declare(self) -> None:
        again = "" if self.started_here else "; bring the cluster back up"
        message = (f"the Ray cluster went away: the raylet at {self.host}:{self.port}, through which this driver "
                   f"runs its tasks, stopped answering (killed, out of memory, or its node stopped){again}")
        try:
            self.lost.set_result(message)
        except Exception:  # noqa: BLE001 - declared meanwhile by the other thread
            pass

    def _run(self) -> None:
        missed = 0
        while not self._stop.wait(self.every_s) and not self.lost.done():
            answered = self.answers()
            if answered is None:  # could not try: neither a miss nor an answer
                continue
            missed = 0 if answered else missed + 1
            if missed >= self.misses:
                self._declare()

    def stop(self) -> None:
        self._stop.set()
