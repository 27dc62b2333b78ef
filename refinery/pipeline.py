"""Where the layers meet: a validated config + input/output URIs -> shard tasks -> an executor.

``run_pipeline`` plans one task per input file, checks input and output before any work, runs
the tasks on the configured executor (skipping finished shards), and merges the per-shard stats
into ``<output>/stats.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from refinery import __version__
from refinery.config import ConfigError, PipelineConfig
from refinery.executors import ShardOutcome
from refinery.io import fs
from refinery.runner import INPUT_SUFFIXES, ShardTask, shard_name
from refinery.stats.funnel import load_shard_stats, merge_shard_stats

log = logging.getLogger("refinery.pipeline")


@dataclass
class RunSummary:
    output: str
    outcomes: list[ShardOutcome] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[ShardOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def plan_tasks(input_uri: str, output_uri: str) -> list[ShardTask]:
    """One task per input file (WARC, Parquet or JSONL) under ``input_uri``."""
    try:
        files = fs.list_files(input_uri, INPUT_SUFFIXES)
    except fs.StorageError as exc:
        raise ConfigError(str(exc)) from None
    if not files:
        raise ConfigError(f"no input shards under {input_uri} (looked for {', '.join(INPUT_SUFFIXES)})")
    root = input_uri.rstrip("/").rsplit("/", 1)[0] if files == [input_uri] else input_uri
    tasks = [ShardTask(f, output_uri, shard_name(f, root)) for f in files]
    names = [t.shard for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"input files map to duplicate shard names under {input_uri}")
    return tasks


def _write_run_manifest(config: PipelineConfig, input_uri: str, output_uri: str, n_tasks: int) -> None:
    manifest = {
        "refinery_version": __version__,
        "config": config.model_dump(mode="json"),
        "input": input_uri,
        "output": output_uri,
        "shards": n_tasks,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        fs.write_bytes(fs.join(output_uri, "run.json"), json.dumps(manifest, indent=1).encode())
    except Exception as exc:  # noqa: BLE001 - any storage failure here means "unwritable output"
        raise ConfigError(f"output {output_uri} is not writable: {exc}") from None


def run_pipeline(
    config: PipelineConfig,
    input_uri: str | None = None,
    output_uri: str | None = None,
    executor: str | None = None,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> RunSummary:
    input_uri = fs.validate_uri(input_uri or config.input or "")
    output_uri = fs.validate_uri(output_uri or config.output or "")
    tasks = plan_tasks(input_uri, output_uri)
    config.build_stages()  # fail on bad stage params before anything is written
    _write_run_manifest(config, input_uri, output_uri, len(tasks))
    spec = config.model_dump(mode="json")
    kind = executor or config.executor.type
    workers = workers or config.executor.workers
    log.info("run %s: %d shard(s) from %s to %s on the %s executor", config.name, len(tasks), input_uri, output_uri, kind)
    if kind == "local":
        from refinery.executors.local import run_local

        outcomes = run_local(spec, tasks, workers=workers, force=force, progress=progress)
    elif kind == "ray":
        from refinery.executors.ray import run_ray

        outcomes = run_ray(spec, tasks, config.executor, workers=workers, force=force, progress=progress)
    else:
        raise ConfigError(f"unknown executor {kind!r}: use 'local' or 'ray'")
    summary = RunSummary(output_uri, outcomes)
    for o in summary.outcomes:
        if o.status != "failed":
            fs.delete(fs.join(output_uri, "failed", f"{o.shard}.json"))  # a retried shard succeeded
    for o in summary.failed:
        fs.write_bytes(fs.join(output_uri, "failed", f"{o.shard}.json"),
                       json.dumps({"shard": o.shard, "error": o.error}, indent=1).encode())
    finished = load_shard_stats(output_uri)
    if finished:
        summary.stats = merge_shard_stats(finished)
        summary.stats["failed_shards"] = [o.shard for o in summary.failed]
        fs.write_bytes(fs.join(output_uri, "stats.json"), json.dumps(summary.stats, indent=1).encode())
    return summary
