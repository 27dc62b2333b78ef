"""``refinery launch``: one command from a config to a running SageMaker job.

1. resolve the step (pipeline / one stage / dedup) and validate the config locally;
2. pack the code version: git SHA (+ dirty flag) into tags, environment and the image tag;
3. build and push ``jobs/Dockerfile`` where a Docker engine answers (else print the commands);
4. count the input shards (for ``refinery watch``'s ETA) and upload the config next to the
   run's output (``<output>/_jobs/<job>/config.yaml``);
5. build the request, validate it against the API model, and send it (or print it: ``--dry-run``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refinery.io import fs
from refinery.launch import package
from refinery.launch.sagemaker import (
    JobSpec,
    build_request,
    client,
    job_name,
    redacted,
    submit,
)
from refinery.launch.steps import resolve_step

log = logging.getLogger("refinery.launch")


class LaunchError(RuntimeError):
    """The job cannot be launched as asked; the message says what to change."""


@dataclass
class LaunchResult:
    job_name: str
    operation: str
    request: dict[str, Any]
    build_commands: list[str]
    built: bool
    arn: str | None = None
    notes: list[str] = field(default_factory=list)

    def printable(self) -> str:
        return json.dumps(redacted(self.request), indent=1, default=str)


def count_input_shards(input_uri: str, step_kind: str) -> int | None:
    """Input files the job will process (None when the input cannot be listed from here)."""
    from refinery.runner import INPUT_SUFFIXES

    try:
        if step_kind == "dedup":
            kept = fs.join(input_uri, "kept")
            return len(fs.list_files(kept if fs.exists(kept) else input_uri, (".parquet",)))
        return len(fs.list_files(input_uri, INPUT_SUFFIXES))
    except Exception as exc:
        log.warning("cannot list the input %s: %s", input_uri, exc)
        return None


def launch(
    config_path: str | Path,
    stage: str,
    input_uri: str,
    output_uri: str,
    image: str,
    role_arn: str,
    instances: int = 1,
    instance_type: str = "ml.c5.18xlarge",
    volume_gb: int = 100,
    max_runtime_s: int = 24 * 3600,
    region: str | None = None,
    workers: int | None = None,
    spot: bool = False,
    max_wait_s: int | None = None,
    checkpoint_uri: str | None = None,
    subnets: list[str] | None = None,
    security_groups: list[str] | None = None,
    extra_tags: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
    name: str | None = None,
    build: bool | None = None,
    dry_run: bool = False,
    sagemaker_client: Any = None,
) -> LaunchResult:
    """Launch (or with ``dry_run`` only prepare) a job; see the module docstring.

    ``build``: True = build and push the image (fails without Docker), False = the image already
    exists, None = build when Docker answers, otherwise print the commands and require
    ``build=False`` to go on (a job with a missing image fails only after provisioning).
    """
    for uri, what in ((input_uri, "--input"), (output_uri, "--output")):
        if not fs.is_s3(uri):
            raise LaunchError(f"{what} must be an s3:// URI for a SageMaker job, got {uri!r}")
        fs.validate_uri(uri)
    if checkpoint_uri and not fs.is_s3(checkpoint_uri):
        raise LaunchError(f"--checkpoint must be an s3:// URI, got {checkpoint_uri!r}")
    resolved = resolve_step(stage, config_path)
    step = resolved.step
    if spot and step.job != "ray":
        raise LaunchError("managed spot capacity is a Training-job option: use it with a Ray step (e.g. dedup)")
    if step.job == "processing" and instances > 100:
        raise LaunchError("a Processing job has at most 100 instances")

    version = package.code_version()
    notes: list[str] = []
    if version.dirty:
        notes.append(f"uncommitted changes: the job is tagged {version.describe()}")
    full_image = package.image_uri(image, version)
    docker = package.docker_available()
    run_build = bool(build) if build is not None else docker
    if run_build and not docker:
        raise LaunchError("--build needs a Docker engine, and none answers here (`docker info` failed)")
    commands = package.build_and_push(full_image, version, run=run_build and not dry_run)
    if build is None and not docker:
        notes.append("no Docker engine here: build and push the image elsewhere with the commands above, "
                     "then launch with --no-build")
        if not dry_run:
            raise LaunchError("no Docker engine to build the image:\n  " + "\n  ".join(commands)
                              + "\nrun these where Docker works, then launch again with --no-build")

    name = name or job_name(resolved.label.replace("stage:", ""), resolved.config_name)
    config_uri = fs.join(output_uri, "_jobs", name, "config.yaml")
    shards = count_input_shards(input_uri, step.config_kind)
    tags = {"refinery:git-sha": version.sha, "refinery:git-dirty": str(version.dirty).lower(),
            "refinery:config": resolved.config_name, "refinery:job-kind": step.job, "refinery:image": full_image,
            **({"refinery:total-shards": str(shards)} if shards is not None else {}), **(extra_tags or {})}
    env = {"REFINERY_GIT_SHA": version.describe(), **({"REFINERY_TOTAL_SHARDS": str(shards)} if shards else {}),
           **(extra_env or {})}
    spec = JobSpec(name=name, kind=step.job, image=full_image, role_arn=role_arn, input_uri=input_uri,
                   output_uri=output_uri, config_uri=config_uri, step=step.name, instances=instances,
                   instance_type=instance_type, volume_gb=volume_gb, max_runtime_s=max_runtime_s,
                   region=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
                   env=env, tags=tags, workers=workers, spot=spot, max_wait_s=max_wait_s,
                   checkpoint_uri=checkpoint_uri, subnets=list(subnets or []),
                   security_groups=list(security_groups or []))
    operation, request = build_request(spec)
    result = LaunchResult(name, operation, request, commands, run_build and not dry_run, notes=notes)
    if dry_run:
        return result
    fs.write_bytes(config_uri, resolved.config_yaml.encode())
    sm = sagemaker_client or client(spec.region)
    result.arn = submit(sm, operation, request)
    log.info("launched %s (%s): %s", name, operation, result.arn)
    return result
