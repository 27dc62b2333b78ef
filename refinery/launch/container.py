"""The job's entrypoint inside the container (``jobs/entrypoint.py`` calls :func:`main`).

Modes (first argument):

- ``processing``: a SageMaker Processing job instance running the recipe's document pass over its
  share of the shards. Its share is the shard stubs SageMaker copied to ``REFINERY_SHARDS_DIR``
  (``ShardedByS3Key``, see :mod:`refinery.launch.recipe`); the documents are read from
  ``REFINERY_INPUT`` on S3 and results go straight to ``REFINERY_OUTPUT`` on S3 (atomic objects;
  the per-shard ``<pass>/stats/*.json`` markers make a re-run skip finished shards and let ``refinery
  watch`` see progress while the job runs). An instance without stubs exits 0 at once.
- ``train``: a SageMaker Training job instance (SageMaker passes ``train``). Forms a Ray cluster
  over all instances (:mod:`refinery.launch.bootstrap`) and runs ``step`` mode on the head.
- ``step``: run the step against the cluster in ``RAY_ADDRESS`` (the head's command).

Environment (set by the launcher): ``REFINERY_STEP``, ``REFINERY_PASSES`` (comma-separated),
``REFINERY_CONFIG_URI`` (the config YAML, s3:// or a path), ``REFINERY_INPUT``,
``REFINERY_OUTPUT``, ``REFINERY_JOB_NAME``, ``REFINERY_GIT_SHA``, optional ``REFINERY_WORKERS``,
``REFINERY_SHARDS_DIR`` and ``REFINERY_LOG_DIR`` (a directory SageMaker uploads continuously).
Each instance writes a report to ``<output>/_jobs/<job>/<host>.json`` (``report.json`` for the
Ray head). Its plan reads no Parquet input footer the launch checked, unchanged since
(``<output>/_jobs/<job>/input_files.json``, :func:`refinery.launch.recipe.launch_input_record`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from refinery.executors.progress import PROCESS_PROGRESS  # what the heartbeat reports
from refinery.launch.sagemaker import PROCESSING_INPUT  # where SageMaker puts this instance's shard stubs

log = logging.getLogger("refinery.container")


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        raise SystemExit(f"entrypoint: environment variable {name} is required")
    return value


def _current_host() -> str:
    from refinery.launch.bootstrap import BootstrapError, read_hosts

    try:
        return read_hosts().current
    except BootstrapError:
        return socket.gethostname()


def _setup_logging(host: str) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    log_dir = os.environ.get("REFINERY_LOG_DIR")
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(log_dir, f"{host}.log")))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format=f"%(asctime)s %(levelname)s {host} %(name)s: %(message)s")


@contextlib.contextmanager
def fetched_config(uri: str) -> Iterator[str]:
    """A local path to the job's config: a download when it is on S3, removed afterwards (the
    Ray bootstrap runs the step command once per host, and tests run it many times)."""
    from refinery.io import fs

    if not fs.is_s3(uri):
        yield uri
        return
    fd, path = tempfile.mkstemp(prefix="refinery-config-", suffix=".yaml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(fs.read_bytes(uri))
        yield path
    finally:
        os.unlink(path)


def write_report(output: str, job: str, name: str, report: dict[str, Any]) -> str:
    from refinery.io import fs

    uri = fs.join(output, "_jobs", job, f"{name}.json")
    fs.write_bytes(uri, json.dumps(report, indent=1).encode())
    return uri


def announce(output: str, job: str, host: str, phase: str) -> str:
    """``_jobs/<job>/started/<host>.json``: this container runs our code now. The watchdog's stall
    clock starts here, never while SageMaker provisions instances or copies inputs."""
    return write_report(output, job, f"started/{host}", {"host": host, "phase": phase, "pid": os.getpid(),
                                                         "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


class Heartbeat:
    """Rewrites ``_jobs/<job>/heartbeat/<host>.json`` every ``interval_s`` from a daemon thread: a
    sign of life, and this process's task progress (shards done per pass, documents, when a shard
    last finished), which is what ``refinery watch`` and the watchdog judge stalls by."""

    def __init__(self, output: str, job: str, host: str, interval_s: float) -> None:
        import threading

        self.output, self.job, self.host, self.interval_s = output, job, host, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="refinery-heartbeat", daemon=True)

        self._beats = 0

    def beat(self) -> None:
        self._beats += 1
        try:
            write_report(self.output, self.job, f"heartbeat/{self.host}",
                         {"host": self.host, "beats": self._beats, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          "progress": PROCESS_PROGRESS.snapshot()})
        except Exception as exc:  # a missed beat is no reason to fail the job
            log.warning("heartbeat not written: %s", str(exc).splitlines()[0])

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Heartbeat:
        PROCESS_PROGRESS.reset()  # this container's work only
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.beat()  # the final count, for whoever looks after the job


def _heartbeat_s() -> float:
    return float(os.environ.get("REFINERY_HEARTBEAT_S", "300"))


def _my_shards(config_path: str, input_uri: str, output: str) -> set[str]:
    """This Processing instance's shard names, from its stubs, checked against the plan."""
    from refinery.config import load_config
    from refinery.launch.recipe import check_stubs, read_stubs
    from refinery.plan import load_previous, plan_run

    mine = read_stubs(os.environ.get("REFINERY_SHARDS_DIR", PROCESSING_INPUT))
    if not mine:
        return set()
    # no footer read: run_pipeline's plan, right after, checks them (reusing the launch's check)
    plan = plan_run(load_config(config_path), input_uri, output, check_footers=False)
    # in the terms of the run being resumed, as the launch planned it: a run made by an earlier
    # refinery was refused on every instance (found by adversarial testing)
    plan.adopt_legacy(load_previous(plan.run))
    return check_stubs(plan, mine)


def _run(mode: str) -> int:
    host = _current_host()
    _setup_logging(host)
    step = _env("REFINERY_STEP")
    output = _env("REFINERY_OUTPUT")
    job = os.environ.get("REFINERY_JOB_NAME", "local")
    input_uri = _env("REFINERY_INPUT")
    workers = int(os.environ["REFINERY_WORKERS"]) if os.environ.get("REFINERY_WORKERS") else None
    passes = [p for p in os.environ.get("REFINERY_PASSES", "").split(",") if p] or None
    base = {"job": job, "host": host, "git_sha": os.environ.get("REFINERY_GIT_SHA", "unknown"),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    log.info("%s: step %s, passes %s, %s -> %s (code %s)", mode, step, passes or "all", input_uri, output,
             base["git_sha"])
    image_sha = os.environ.get("REFINERY_IMAGE_GIT_SHA")
    if image_sha and image_sha != base["git_sha"]:
        # launched from a checkout other than the one the image was built from
        log.warning("image built from %s, launched from %s: the job runs the image's code", image_sha, base["git_sha"])
        base["image_git_sha"] = image_sha
    announce(output, job, host, mode)
    with Heartbeat(output, job, host, _heartbeat_s()), fetched_config(_env("REFINERY_CONFIG_URI")) as config_path:
        return _run_steps(mode, host, step, output, job, input_uri, workers, passes, base, config_path)


def _run_steps(mode: str, host: str, step: str, output: str, job: str, input_uri: str, workers: int | None,
               passes: list[str] | None, base: dict[str, Any], config_path: str) -> int:
    from refinery.launch.recipe import launch_input_record
    from refinery.launch.steps import run_step

    shards = None
    if mode == "processing":
        shards = _my_shards(config_path, input_uri, output)
        if not shards:
            # ShardedByS3Key with more instances than shards leaves some instances empty-handed
            log.info("no shard stubs on this instance: nothing to do")
            write_report(output, job, host, {**base, "step": step, "ok": True, "shards": 0})
            return 0
        log.info("this instance's share: %d shard(s)", len(shards))
    report = {**base, **run_step(step, config_path, input_uri, output, workers, passes=passes, shards=shards,
                                 footer_record=launch_input_record(output, job))}
    uri = write_report(output, job, "report" if mode == "step" else host, report)
    log.info("report: %s (%s)", uri, "ok" if report.get("ok") else "FAILED")
    return 0 if report.get("ok") else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = argv[0] if argv else "processing"
    if mode in ("processing", "step"):
        return _run(mode)
    if mode == "train":
        from refinery.launch import bootstrap

        output, job = os.environ.get("REFINERY_OUTPUT"), os.environ.get("REFINERY_JOB_NAME")
        if output and job:  # every instance of the cluster announces itself before the bootstrap
            try:
                announce(output, job, _current_host(), "train")
            except Exception as exc:
                log.warning("could not announce this container: %s", str(exc).splitlines()[0])

        return bootstrap.main(argv[1:], default_command=[sys.executable, "-m", "refinery.launch.container", "step"])
    print(f"usage: entrypoint.py processing|train|step (got {mode!r})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
