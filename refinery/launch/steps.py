"""What a launched job runs (a *step*) and which kind of SageMaker job it needs.

- ``pipeline``: the config's document stages, share-nothing per shard -> a Processing job whose
  instances each get a slice of the input files (``ShardedByS3Key``).
- any stage name of the config (``--stage language_id``): the config cut down to that one stage,
  same job kind as ``pipeline``.
- ``pipeline-ray``: the same pipeline as Ray tasks on a multi-instance Training job (one cluster
  draining one shard queue: better balance when shards vary a lot in size).
- ``dedup``: cross-shard deduplication (:mod:`refinery.dedup`), whose passes exchange data
  between workers -> a multi-instance Training job running a Ray cluster; CONFIG is a dedup YAML
  (``configs/dedup.yaml``) and the input is a previous run directory.

``run_step`` is the job side: it runs inside the container (``refinery.launch.container``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

log = logging.getLogger("refinery.launch")

JobKind = Literal["processing", "ray"]


@dataclass(frozen=True)
class Step:
    name: str
    job: JobKind
    config_kind: Literal["pipeline", "dedup"]
    description: str


STEPS: dict[str, Step] = {
    "pipeline": Step("pipeline", "processing", "pipeline", "the config's stages, share-nothing per shard"),
    "pipeline-ray": Step("pipeline-ray", "ray", "pipeline", "the config's stages as Ray tasks on a multi-instance cluster"),
    "dedup": Step("dedup", "ray", "dedup", "cross-shard deduplication on a multi-instance Ray cluster"),
}


@dataclass(frozen=True)
class ResolvedStep:
    step: Step
    config_yaml: str  # what the job will read (a single-stage selection is cut down here)
    config_name: str
    label: str  # "pipeline", "dedup" or "stage:<name>"


def resolve_step(stage: str, config_path: str | Path) -> ResolvedStep:
    """Validate CONFIG for ``stage`` now (not an hour later on an instance) and return what to ship."""
    from refinery.config import ConfigError, load_config

    text = Path(config_path).read_text()
    if stage in STEPS:
        step = STEPS[stage]
        if step.config_kind == "dedup":
            from refinery.dedup.config import load_dedup_config

            load_dedup_config(config_path)
            return ResolvedStep(step, text, Path(config_path).stem, step.name)
        config = load_config(config_path)
        return ResolvedStep(step, text, config.name, step.name)
    config = load_config(config_path)
    names = [s.stage_name for s in config.stages]
    if stage not in names:
        raise ConfigError(f"unknown --stage {stage!r}: use one of {sorted(STEPS)} or a stage of {config_path}: {names}")
    data = yaml.safe_load(text)
    data["stages"] = [s for s in data["stages"] if (s.get("name") or s["type"]) == stage]
    data["name"] = f"{config.name}-{stage}"
    return ResolvedStep(STEPS["pipeline"], yaml.safe_dump(data, sort_keys=False), data["name"], f"stage:{stage}")


def run_step(step_name: str, config_path: str, input_uri: str, output_uri: str,
             workers: int | None = None) -> dict[str, Any]:
    """Run a step here (in the job's container); returns a small JSON-able report."""
    step = STEPS[step_name]
    started = time.time()
    report: dict[str, Any] = {"step": step_name, "input": input_uri, "output": output_uri}
    if step.config_kind == "dedup":
        from refinery.dedup.config import load_dedup_config
        from refinery.dedup.driver import run_dedup
        from refinery.dedup.parallel import Executor
        from refinery.executors.ray_cluster import ensure_ray

        cfg = load_dedup_config(config_path, {"executor.type": "ray"})
        ensure_ray()  # the cluster the bootstrap formed (RAY_ADDRESS)
        with Executor("ray", workers, os.environ.get("RAY_ADDRESS"), max_retries=cfg.executor.max_retries,
                      progress=False) as executor:
            stats = run_dedup(input_uri, output_uri, cfg, executor)
        report.update(ok=True, docs_read=stats["docs_read"], docs_kept=stats["docs_kept"],
                      docs_removed=stats["docs_removed"], shards=stats["shards"])
    else:
        from refinery.config import load_config
        from refinery.pipeline import run_pipeline

        config = load_config(config_path)
        executor = "ray" if step.job == "ray" else None
        summary = run_pipeline(config, input_uri, output_uri, executor=executor, workers=workers, progress=False)
        counts = {s: sum(o.status == s for o in summary.outcomes) for s in ("done", "skipped", "failed")}
        report.update(ok=not summary.failed, shards=len(summary.outcomes), **counts,
                      failed_shards=[o.shard for o in summary.failed],
                      docs_read=sum(int(o.stats.get("docs_read", 0)) for o in summary.outcomes if o.status == "done"))
        if executor == "ray":
            from refinery.executors.ray import placements

            report["placement"] = placements()
    if step.job == "ray":
        from refinery.executors.ray_cluster import alive_nodes, ensure_ray

        ensure_ray()
        report["nodes"] = [{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"],
                            "cpus": n.get("Resources", {}).get("CPU")} for n in alive_nodes()]
    report["seconds"] = round(time.time() - started, 3)
    return report
