"""What a launch ships (a recipe, a recipe cut to one stage, or a standalone dedup YAML) and what
a job's container runs (a *step*).

Container steps (``REFINERY_STEP``; the passes come from ``REFINERY_PASSES``):

- ``filter`` (Processing job): the recipe's document pass over this instance's share of the
  shards (``run_pipeline(only_passes=["filter"], only_shards=...)``, local process pool).
- ``passes`` (Training job + Ray; alias ``pipeline-ray``): the named passes -- by default every
  pass -- on the job's Ray cluster (``run_pipeline(only_passes=..., executor="ray")``).
- ``dedup`` (Training job + Ray): a standalone dedup YAML (``configs/dedup.yaml``) over a run
  directory, as ``refinery dedup`` does.

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

from refinery.yaml_safe import load_yaml

log = logging.getLogger("refinery.launch")

JobKind = Literal["processing", "ray"]


@dataclass(frozen=True)
class Step:
    name: str
    job: JobKind
    config_kind: Literal["pipeline", "dedup"]
    description: str


STEPS: dict[str, Step] = {
    "filter": Step("filter", "processing", "pipeline", "the document pass over this instance's share of the shards"),
    "passes": Step("passes", "ray", "pipeline", "the recipe's passes (REFINERY_PASSES, default all) on one Ray cluster"),
    "pipeline-ray": Step("pipeline-ray", "ray", "pipeline", "alias of 'passes'"),
    "dedup": Step("dedup", "ray", "dedup", "a standalone dedup YAML over a run directory on one Ray cluster"),
}

#: ``--stage`` values besides a stage name of the config
STAGES = {
    "recipe": "the whole recipe: the document pass as a Processing job, later passes on one Ray Training job",
    "pipeline-ray": "the whole recipe on one Ray Training job",
    "dedup": "CONFIG is a standalone dedup YAML (configs/dedup.yaml) and --input a run directory",
}


@dataclass(frozen=True)
class Shipment:
    """What a launch ships: the config the jobs read and how its passes are placed."""

    kind: Literal["recipe", "dedup"]
    config_yaml: str  # what the jobs read (a single-stage selection is cut down here)
    config_name: str
    label: str  # "", "pipeline-ray" or "dedup": goes into the pipeline's name, before the config's
    config: Any = None  # the validated PipelineConfig (recipes)
    dedup_config: Any = None  # the validated DedupConfig (``--stage dedup``)
    all_on_ray: bool = False


def resolve_shipment(stage: str | None, config_path: str | Path) -> Shipment:
    """Validate CONFIG for ``stage`` now (not an hour later on an instance) and return what to ship."""
    from refinery.config import ConfigError, load_config, parse_config

    text = Path(config_path).read_text()
    stage = stage or "recipe"
    if stage == "dedup":
        from refinery.dedup.config import load_dedup_config

        return Shipment("dedup", text, Path(config_path).stem, "dedup", dedup_config=load_dedup_config(config_path))
    config = load_config(config_path)
    if stage in ("recipe", "pipeline", "pipeline-ray"):
        label = "pipeline-ray" if stage == "pipeline-ray" else ""
        return Shipment("recipe", text, config.name, label, config, all_on_ray=stage == "pipeline-ray")
    names = [s.stage_name for s in config.stages]
    if stage not in names:
        raise ConfigError(f"unknown --stage {stage!r}: use one of {sorted(STAGES)} or a stage of {config_path}: {names}")
    # one stage alone: a recipe of that stage (no dedup, no tokens) under its own name
    data = load_yaml(text)
    data["stages"] = [s for s in data["stages"] if (s.get("name") or s["type"]) == stage]
    data.pop("dedup", None)
    data.pop("tokenize", None)
    data["name"] = f"{config.name}-{stage}"
    cut = parse_config(data, source=f"{config_path} (--stage {stage})")
    return Shipment("recipe", yaml.safe_dump(data, sort_keys=False), cut.name, "", cut)


# -- the job side -----------------------------------------------------------------------------------
OK_PASS = ("done", "skipped")


def run_step(step_name: str, config_path: str, input_uri: str, output_uri: str, workers: int | None = None,
             passes: list[str] | None = None, shards: set[str] | None = None,
             footer_record: str | None = None) -> dict[str, Any]:
    """Run a step here (in the job's container); returns a small JSON-able report. ``footer_record``:
    the launch's record of the input footers it checked (:func:`refinery.plan.plan_run`)."""
    step = STEPS[step_name]
    started = time.time()
    report: dict[str, Any] = {"step": step_name, "input": input_uri, "output": output_uri}
    if step.config_kind == "dedup":
        report.update(_run_dedup(config_path, input_uri, output_uri, workers))
    else:
        report.update(_run_passes(step, config_path, input_uri, output_uri, workers, passes, shards, footer_record))
    if step.job == "ray":
        from refinery.executors.ray_cluster import alive_nodes, ensure_ray

        ensure_ray()
        report["nodes"] = [{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"],
                            "cpus": n.get("Resources", {}).get("CPU")} for n in alive_nodes()]
    report["seconds"] = round(time.time() - started, 3)
    return report


def _run_dedup(config_path: str, input_uri: str, output_uri: str, workers: int | None) -> dict[str, Any]:
    from refinery.dedup.config import load_dedup_config
    from refinery.dedup.driver import run_dedup
    from refinery.executors import make_executor

    cfg = load_dedup_config(config_path, {"executor.type": "ray"})
    # the cluster the bootstrap formed (RAY_ADDRESS)
    with make_executor("ray", workers, ray_address=os.environ.get("RAY_ADDRESS"),
                       max_retries=cfg.executor.max_retries, progress=False) as executor:
        stats = run_dedup(input_uri, output_uri, cfg, executor)
    return {"ok": True, "docs_read": stats["docs_read"], "docs_kept": stats["docs_kept"],
            "docs_removed": stats["docs_removed"], "shards": stats["shards"]}


def _run_passes(step: Step, config_path: str, input_uri: str, output_uri: str, workers: int | None,
                passes: list[str] | None, shards: set[str] | None, footer_record: str | None) -> dict[str, Any]:
    from refinery.config import load_config
    from refinery.pipeline import run_pipeline

    config = load_config(config_path)
    if step.job == "processing":
        passes = passes or ["filter"]
    # a Processing instance runs its share on its own cores whatever the config says
    executor = "ray" if step.job == "ray" else "local"
    summary = run_pipeline(config, input_uri, output_uri, executor=executor, workers=workers, progress=False,
                           only_passes=passes, only_shards=shards, footer_record=footer_record)
    ran = passes or list(summary.passes)
    # "partial": this instance's share is done, another instance's is still running
    allowed = OK_PASS + (("partial",) if shards is not None else ())
    counts = {s: sum(o.status == s for o in summary.outcomes) for s in ("done", "skipped", "failed")}
    report: dict[str, Any] = {
        "ok": not summary.failed and all(summary.passes.get(p) in allowed for p in ran),
        "passes": {p: summary.passes.get(p) for p in ran}, "shards": len(summary.outcomes), **counts,
        "failed_shards": [o.name for o in summary.failed],
        "set_aside_shards": [o.name for o in summary.set_aside],
        "docs_read": sum(int(o.stats.get("docs_read", 0)) for o in summary.outcomes if o.status == "done"),
    }
    if executor == "ray":
        report["placement"] = {o.name: o.node for o in summary.outcomes if o.status == "done"}  # shard -> node
    return report
