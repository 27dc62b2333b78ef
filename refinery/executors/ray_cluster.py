"""Start or join a Ray cluster the same way everywhere (pipeline executor, dedup, SageMaker jobs).

``ensure_ray()`` connects to an existing cluster when an address is given (argument, then
``RAY_ADDRESS``), otherwise starts a local one. What it sets, and why:

- ``object_store_memory`` explicitly: Ray's default is 30% of RAM, which on a small machine
  fights the workers for memory, and our shard tasks pass only small objects (specs, stats);
  documents travel through storage, not the object store. Default: :data:`DEFAULT_OBJECT_STORE_BYTES`.
- usage stats off (``RAY_USAGE_STATS_ENABLED=0``): nothing phones home.
- no dashboard (``include_dashboard=False``): it costs a process and ports we don't use.
- token auth (on by default since Ray 2.5x): a *local* cluster we start listens on loopback
  only, so we set ``RAY_AUTH_MODE=disabled`` for it unless the user configured auth
  (``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH`` in the environment). A
  multi-node cluster (``refinery.launch.bootstrap``) uses ``RAY_AUTH_MODE=token`` with one
  shared ``RAY_AUTH_TOKEN`` on every node and driver; connecting to such a cluster needs the
  same two variables in the driver's environment.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("refinery.executors.ray_cluster")

#: object store size for local clusters when the config does not say (small objects only)
DEFAULT_OBJECT_STORE_BYTES = 512 * 2**20
#: environment variables through which a user configures Ray's token authentication
AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def auth_configured() -> bool:
    return any(os.environ.get(k) for k in AUTH_ENV)


def configure_environment(local: bool) -> None:
    """Environment every Ray process we start inherits (workers are spawned with it)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if local and not auth_configured():
        # A loopback-only cluster of our own: no token (see the module docstring).
        os.environ["RAY_AUTH_MODE"] = "disabled"


def ensure_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    log_to_driver: bool = True,
) -> bool:
    """Make sure this process is connected to Ray.

    Returns True when this call initialised Ray (the caller then owns it and should call
    ``ray.shutdown()`` when done), False when Ray was already initialised in this process.
    ``num_cpus``/``object_store_memory`` apply only to a local cluster started here.
    """
    configure_environment(local=not (address or os.environ.get("RAY_ADDRESS")))
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=log_to_driver, namespace="refinery")
        return True
    store = object_store_memory or DEFAULT_OBJECT_STORE_BYTES
    log.info("starting a local Ray cluster (%s CPUs, %d MB object store)", num_cpus or "all", store // 2**20)
    ray.init(
        # "local": always a new cluster of our own; without it Ray joins whatever cluster
        # /tmp/ray/ray_current_cluster names (another user's `ray start`, or a dead one)
        address="local",
        num_cpus=num_cpus,
        object_store_memory=store,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",  # listen on loopback only: this cluster is ours alone
        log_to_driver=log_to_driver,
        namespace="refinery",
    )
    return True


def cluster_cpus() -> int:
    """CPUs the connected cluster offers (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]
