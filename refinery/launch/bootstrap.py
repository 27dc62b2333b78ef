"""Form one Ray cluster over the instances of a SageMaker multi-instance Training job, run a
command on the head, then take every node down cleanly with exit code 0 on the workers.

SageMaker starts the same container on every instance (``algo-1``, ``algo-2``, ...). Protocol:

1. **Hosts** come from ``/opt/ml/input/config/resourceconfig.json`` (``hosts``, ``current_host``),
   falling back to the ``SM_HOSTS``/``SM_CURRENT_HOST`` environment. The head is ``hosts[0]`` *as
   listed*: every instance receives the same list, so no sorting is needed, and sorting would
   pick ``algo-10`` over ``algo-2``.
2. **Head**: serves a one-line status beacon (``starting``/``running``/``done <rc>``) on
   ``--beacon-port``, runs ``ray start --head``, waits until all hosts joined (or a timeout, then
   goes on with the nodes it has), runs the command with ``RAY_ADDRESS`` set, sets the beacon to
   ``done``, waits until every worker has seen it (or a grace period), stops its Ray processes
   and exits with the command's exit code -- the job's result.
3. **Workers** resolve the head's name with retries (``algo-1`` appears in DNS only some seconds
   after the container starts), wait for its Ray port, join with ``ray start --address`` (without
   ``--block``: ``--block`` makes the worker's exit status depend on how the head went away, and a
   non-zero worker exit fails the whole Training job), then poll the beacon. ``done``, or a head
   unreachable for ``--head-gone-after`` seconds, means the job is over: stop Ray, exit 0.

Auth: Ray 2.60 enables token auth. The launcher gives every instance the same ``RAY_AUTH_TOKEN``
in the job environment; we then set ``RAY_AUTH_MODE=token`` so nodes and drivers all use it.
Without a token the cluster runs with auth disabled (with a warning).

Stopping: each node runs with its own ``--temp-dir``; we stop exactly the processes whose command
line names that directory (and their children) -- never ``ray stop``, which kills every Ray
process on the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("refinery.bootstrap")

TRAINING_RESOURCECONFIG = "/opt/ml/input/config/resourceconfig.json"
PROCESSING_RESOURCECONFIG = "/opt/ml/config/resourceconfig.json"
DEFAULT_PORT = 6379
DEFAULT_BEACON_PORT = 6380


class BootstrapError(RuntimeError):
    """The cluster could not be formed; the message says which host and step."""


@dataclass(frozen=True)
class Hosts:
    hosts: list[str]
    current: str

    @property
    def head(self) -> str:
        return self.hosts[0]

    @property
    def is_head(self) -> bool:
        return self.current == self.head

    @property
    def workers(self) -> list[str]:
        return self.hosts[1:]


def _hosts(hosts: object, current: object, source: str) -> Hosts:
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise BootstrapError(f"{source}: 'hosts' must be a non-empty list of host names, got {hosts!r}")
    if len(set(hosts)) != len(hosts):
        raise BootstrapError(f"{source}: repeated host names in {hosts}")
    if current not in hosts:
        raise BootstrapError(f"{source}: current host {current!r} is not in hosts {hosts}")
    return Hosts(list(hosts), str(current))


def read_hosts(path: str | None = None) -> Hosts:
    """This job's hosts: ``path``, else ``$REFINERY_RESOURCECONFIG``, else SageMaker's
    resourceconfig.json (training, then processing location), else ``SM_HOSTS``."""
    candidates = [path] if path else [os.environ.get("REFINERY_RESOURCECONFIG"), TRAINING_RESOURCECONFIG,
                                      PROCESSING_RESOURCECONFIG]
    for p in candidates:
        if p and os.path.isfile(p):
            try:
                data = json.loads(Path(p).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise BootstrapError(f"unreadable resource config {p}: {exc}") from None
            return _hosts(data.get("hosts"), data.get("current_host"), p)
    if path:
        raise BootstrapError(f"resource config not found: {path}")
    if os.environ.get("SM_HOSTS"):
        try:
            hosts = json.loads(os.environ["SM_HOSTS"])
        except json.JSONDecodeError as exc:
            raise BootstrapError(f"SM_HOSTS is not a JSON list: {exc}") from None
        return _hosts(hosts, os.environ.get("SM_CURRENT_HOST"), "SM_HOSTS")
    raise BootstrapError(f"no host list: neither {TRAINING_RESOURCECONFIG} nor SM_HOSTS exists (not on SageMaker?)")


# -- network ------------------------------------------------------------------------------------
def resolve(host: str, timeout_s: float, interval_s: float = 2.0) -> str:
    """``host``'s IPv4 address, retrying while DNS does not know it yet."""
    deadline = time.monotonic() + timeout_s
    attempts = 0
    while True:
        try:
            return socket.gethostbyname(host)
        except OSError as exc:
            attempts += 1
            if time.monotonic() >= deadline:
                raise BootstrapError(f"cannot resolve {host!r} after {attempts} attempts in {timeout_s:.0f}s: {exc}") from None
            if attempts == 1 or attempts % 10 == 0:
                log.info("waiting for DNS to know %s (%s)", host, exc)
            time.sleep(interval_s)


def port_open(ip: str, port: int, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def local_ip_towards(ip: str) -> str:
    """The address of this host's interface that routes to ``ip`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((ip, 9))
        return s.getsockname()[0]


def default_object_store_bytes() -> int:
    """10% of RAM, between 256 MiB and 8 GiB: shard tasks pass only small objects."""
    import psutil

    return int(min(max(psutil.virtual_memory().total * 0.10, 256 * 2**20), 8 * 2**30))


def configure_auth() -> None:
    """One token for the whole cluster (see the module docstring)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if os.environ.get("RAY_AUTH_TOKEN"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    elif not os.environ.get("RAY_AUTH_MODE"):
        log.warning("RAY_AUTH_TOKEN is not set: the Ray cluster runs without token authentication")
        os.environ["RAY_AUTH_MODE"] = "disabled"


# -- status beacon ---------------------------------------------------------------------------------
class Beacon:
    """The head's status, one line per TCP connection: ``starting``, ``running`` or ``done <rc>``.
    Counts how many times ``done`` was delivered, so the head knows its workers saw it."""

    def __init__(self, port: int, bind: str = "") -> None:
        self.state = "starting"
        self.done_delivered = 0
        self._lock = threading.Lock()
        beacon = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                state = beacon.state
                if state.startswith("done"):
                    with beacon._lock:  # counted before sending: the worker acts on it at once
                        beacon.done_delivered += 1
                try:
                    self.request.sendall(f"{state}\n".encode())
                except OSError:
                    pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer((bind, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="beacon", daemon=True)

    def start(self) -> "Beacon":
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def query_beacon(ip: str, port: int, timeout_s: float = 5.0) -> str | None:
    """The head's status line, or None when the head cannot be reached."""
    try:
        with socket.create_connection((ip, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(64)
                if not chunk:
                    break
                data += chunk
        return data.decode().strip() or None
    except OSError:
        return None


# -- one Ray node ------------------------------------------------------------------------------------
class RayNode:
    """The Ray processes of this host, started with ``ray start`` under a temp dir of our own."""

    def __init__(self, temp_dir: str, num_cpus: int | None = None, object_store_memory: int | None = None,
                 agent_port: int | None = None) -> None:
        self.temp_dir = temp_dir
        self.num_cpus = num_cpus
        self.object_store_memory = object_store_memory or default_object_store_bytes()
        self.agent_port = agent_port

    def _start(self, extra: list[str]) -> None:
        args = [sys.executable, "-m", "ray.scripts.scripts", "start", "--temp-dir", self.temp_dir,
                "--disable-usage-stats", "--object-store-memory", str(self.object_store_memory), *extra]
        if self.num_cpus:
            args += ["--num-cpus", str(self.num_cpus)]
        if self.agent_port:
            args += ["--dashboard-agent-listen-port", str(self.agent_port)]
        log.info("$ %s", " ".join(args))
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BootstrapError(f"ray start failed (exit {proc.returncode}):\n{tail}")

    def start_head(self, ip: str, port: int) -> None:
        self._start(["--head", "--node-ip-address", ip, "--port", str(port), "--include-dashboard", "false"])

    def start_worker(self, head_ip: str, port: int, ip: str) -> None:
        self._start(["--address", f"{head_ip}:{port}", "--node-ip-address", ip])

    def _ours(self, proc: Any) -> bool:
        """``proc`` names our temp dir, or writes its output there: the head's client server
        (``ray.util.client.server``, orphaned at once) names neither our temp dir nor our port,
        and outlived every stop, holding port 10001 (found by adversarial testing)."""
        import psutil

        if self.temp_dir in " ".join(proc.info["cmdline"] or []):
            return True
        try:
            return any(f.path.startswith(self.temp_dir.rstrip("/") + "/") for f in proc.open_files())
        except psutil.Error:  # another user's process, or gone
            return False

    def processes(self) -> list:
        """Our node's processes: those naming our temp dir or writing into it, and their descendants."""
        import psutil

        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if proc.pid != os.getpid() and self._ours(proc):
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
            except psutil.Error:
                continue
        found.pop(os.getpid(), None)
        return list(found.values())

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``: the job's results are already in S3, and
        gcs_server ignores SIGTERM for a long while."""
        import psutil

        procs = self.processes()
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=timeout_s)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        log.info("stopped %d Ray process(es) of this node", len(procs))


def wait_for_nodes(address: str, expected: int, timeout_s: float, poll_s: float = 2.0) -> list[dict]:
    """Alive nodes of the cluster once ``expected`` joined (looked at every ``poll_s``), or
    whatever joined by the timeout."""
    import ray

    from refinery.executors.ray_cluster import ensure_ray

    ensure_ray(address, log_to_driver=False)  # the one place Ray is initialised
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            alive = [n for n in ray.nodes() if n.get("Alive")]
            if len(alive) >= expected:
                return alive
            if time.monotonic() >= deadline:
                log.warning("only %d of %d nodes joined in %.0fs; going on with them", len(alive), expected, timeout_s)
                return alive
            time.sleep(poll_s)
    finally:
        ray.shutdown()


@dataclass
class Options:
    port: int = DEFAULT_PORT
    beacon_port: int = DEFAULT_BEACON_PORT
    num_cpus: int | None = None
    object_store_memory: int | None = None
    agent_port: int | None = None
    temp_dir: str | None = None
    dns_timeout_s: float = 900.0
    join_timeout_s: float = 900.0
    wait_nodes_s: float = 900.0
    head_gone_s: float = 120.0
    poll_s: float = 5.0
    done_grace_s: float = 120.0
    #: how often the head looks for joined nodes and a worker for the head's Ray port (tests: less)
    join_poll_s: float = 2.0
    #: seconds a node's Ray processes get after SIGTERM before SIGKILL (RayNode.stop); a head's
    #: take all of them (tests: less)
    stop_grace_s: float = 5.0

    def node(self, host: str) -> RayNode:
        # short and unique per host and process: Ray's socket paths under it must stay < 108 chars
        temp = self.temp_dir or f"/tmp/rfy-{hashlib.sha1(host.encode()).hexdigest()[:6]}-{os.getpid()}"
        return RayNode(temp, self.num_cpus, self.object_store_memory, self.agent_port)


def _run_command(command: list[str], env: dict[str, str]) -> int:
    child = subprocess.Popen(command, env=env)
    try:
        return child.wait()
    except BaseException:
        child.terminate()  # SIGTERM from SageMaker (stop, spot interruption): pass it on
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
        raise


def run_head(hosts: Hosts, opts: Options, command: list[str]) -> int:
    head_ip = resolve(hosts.head, opts.dns_timeout_s)
    beacon = Beacon(opts.beacon_port).start()
    node = opts.node(hosts.current)
    rc = 1
    try:
        node.start_head(head_ip, opts.port)
        address = f"{head_ip}:{opts.port}"
        nodes = wait_for_nodes(address, len(hosts.hosts), opts.wait_nodes_s, opts.join_poll_s)
        log.info("cluster up: %d node(s) at %s; running %s", len(nodes), address, " ".join(command))
        beacon.state = "running"
        env = dict(os.environ, RAY_ADDRESS=address, REFINERY_HOSTS=json.dumps(hosts.hosts))
        rc = _run_command(command, env)
        log.info("command finished with exit code %d", rc)
    finally:
        beacon.state = f"done {rc}"
        deadline = time.monotonic() + (opts.done_grace_s if hosts.workers else 0)
        while beacon.done_delivered < len(hosts.workers) and time.monotonic() < deadline:
            time.sleep(0.5)
        node.stop(opts.stop_grace_s)
        beacon.close()
    return rc


def run_worker(hosts: Hosts, opts: Options) -> int:
    head_ip = resolve(hosts.head, opts.dns_timeout_s)
    my_ip = local_ip_towards(head_ip)
    deadline = time.monotonic() + opts.join_timeout_s
    while not port_open(head_ip, opts.port):
        if (query_beacon(head_ip, opts.beacon_port) or "").startswith("done"):
            log.info("the head finished before this worker joined; nothing to do")
            return 0
        if time.monotonic() >= deadline:
            raise BootstrapError(f"head {hosts.head} ({head_ip}) did not open Ray port {opts.port} in {opts.join_timeout_s:.0f}s")
        time.sleep(opts.join_poll_s)
    node = opts.node(hosts.current)
    try:
        for attempt in range(1, 4):
            try:
                node.start_worker(head_ip, opts.port, my_ip)
                break
            except BootstrapError as exc:
                log.warning("joining %s:%d failed (attempt %d): %s", head_ip, opts.port, attempt, exc)
                node.stop(opts.stop_grace_s)
                if attempt == 3:
                    raise
                time.sleep(5 * attempt)
        log.info("joined the cluster at %s:%d as %s (%s)", head_ip, opts.port, hosts.current, my_ip)
        unreachable_since: float | None = None
        while True:
            state = query_beacon(head_ip, opts.beacon_port)
            if state and state.startswith("done"):
                log.info("head says %r: leaving", state)
                return 0
            if state is None:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since >= opts.head_gone_s:
                    log.info("head unreachable for %.0fs: the job is over, leaving", opts.head_gone_s)
                    return 0
            else:
                unreachable_since = None
            time.sleep(opts.poll_s)
    finally:
        node.stop(opts.stop_grace_s)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="ray_bootstrap", description="Form a Ray cluster over SageMaker hosts and "
                                "run COMMAND on the head:  ray_bootstrap.py [options] -- COMMAND ...")
    p.add_argument("--resourceconfig", help=f"hosts file (default: {TRAINING_RESOURCECONFIG}, then SM_HOSTS)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="Ray GCS port on the head")
    p.add_argument("--beacon-port", type=int, default=DEFAULT_BEACON_PORT, help="head status port")
    p.add_argument("--num-cpus", type=int, help="CPUs per node for Ray (default: all)")
    p.add_argument("--object-store-memory", type=int, help="bytes per node (default: 10%% of RAM, 256 MiB..8 GiB)")
    p.add_argument("--agent-port", type=int, help="Ray dashboard-agent HTTP port (default: Ray's)")
    p.add_argument("--temp-dir", help="Ray temp dir of this node (default: /tmp/rfy-<host>-<pid>)")
    p.add_argument("--dns-timeout", type=float, default=900.0, help="seconds to wait for the head's name")
    p.add_argument("--join-timeout", type=float, default=900.0, help="seconds a worker waits for the head's Ray")
    p.add_argument("--wait-nodes", type=float, default=900.0, help="seconds the head waits for all hosts to join")
    p.add_argument("--head-gone-after", type=float, default=120.0, help="seconds of unreachable head => job over")
    p.add_argument("--poll", type=float, default=5.0, help="worker's beacon polling interval (s)")
    p.add_argument("--done-grace", type=float, default=120.0, help="seconds the head waits for workers to see 'done'")
    p.add_argument("--join-poll", type=float, default=2.0,
                   help="seconds between the head's looks for joined nodes and a worker's for the head's Ray port")
    p.add_argument("--stop-grace", type=float, default=5.0,
                   help="seconds this node's Ray processes get after SIGTERM before SIGKILL when it stops")
    return p.parse_args(argv), command


def main(argv: list[str] | None = None, default_command: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s bootstrap: %(message)s")
    args, command = parse_args(argv)
    command = command or list(default_command or [])
    # SageMaker stops a job (or reclaims a spot instance) with SIGTERM: unwind so that `finally`
    # blocks stop the Ray processes and the head's command.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    opts = Options(args.port, args.beacon_port, args.num_cpus, args.object_store_memory, args.agent_port,
                   args.temp_dir, args.dns_timeout, args.join_timeout, args.wait_nodes, args.head_gone_after,
                   args.poll, args.done_grace, args.join_poll, args.stop_grace)
    try:
        hosts = read_hosts(args.resourceconfig)
        configure_auth()
        log.info("host %s of %s (head: %s)", hosts.current, hosts.hosts, hosts.head)
        if hosts.is_head:
            if not command:
                raise BootstrapError("the head needs a command to run (after --)")
            return run_head(hosts, opts, command)
        return run_worker(hosts, opts)
    except BootstrapError as exc:
        log.error("%s", exc)
        return 2
