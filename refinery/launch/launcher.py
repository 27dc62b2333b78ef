"""``refinery launch``: one command from a recipe to a running chain of SageMaker jobs.

1. resolve what ships (the recipe, one stage of it, or a standalone dedup YAML) and validate it
   locally; plan the recipe's passes and group them into jobs (:mod:`refinery.launch.recipe`):
   the document pass as a Processing job, every later pass on one Ray Training job;
2. pack the code version: git SHA (+ dirty flag) into tags, environment and the image tag;
3. build and push ``jobs/Dockerfile`` where a Docker engine answers (else print the commands);
4. build one job request per group, chain them in a SageMaker Pipeline definition, and validate
   every request against the API model;
5. upload the config and one shard stub per input file under ``<output>/_jobs/<name>/``, then
   ``CreatePipeline`` + ``StartPipelineExecution`` -- or, with ``dry_run``, only describe it all.

A dry run makes no network call at all: no S3 listing or upload, no AWS client, no credential or
region lookup, no ``docker info``. What needs the input listing (the stubs, the shard count, the
pass fingerprints) is described instead of computed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refinery.io import fs
from refinery.launch import package, pipelines
from refinery.launch.recipe import (JobGroup, group_passes, launch_input_record, recipe_passes, stubs_prefix,
                                    write_stubs)
from refinery.launch.sagemaker import (NO_REGION, JobSpec, build_request, client, instance_type_problem, job_name,
                                       job_name_problem, region_problem, region_source)
from refinery.launch.steps import Shipment, resolve_shipment

log = logging.getLogger("refinery.launch")


#: an IAM role's ARN, as SageMaker's request model has it (RoleArn)
_ROLE_ARN = re.compile(r"arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+")


class LaunchError(RuntimeError):
    """The job cannot be launched as asked; the message says what to change."""


@dataclass
class LaunchResult:
    name: str  # the pipeline's name (also REFINERY_JOB_NAME: <output>/_jobs/<name>/)
    groups: list[JobGroup]
    create: dict[str, Any]  # CreatePipeline
    start: dict[str, Any]  # StartPipelineExecution
    uploads: list[dict[str, str]]
    build_commands: list[str]
    built: bool
    dry_run: bool
    pipeline_arn: str | None = None
    execution_arn: str | None = None
    notes: list[str] = field(default_factory=list)
    region: str | None = None  # where the requests go (None: a dry run given none)

    def to_json(self) -> dict[str, Any]:
        """Everything the launch sends, secrets redacted (what ``--dry-run`` prints)."""
        defn = json.loads(self.create["PipelineDefinition"])
        steps = []
        for group, step in zip(self.groups, defn["Steps"]):
            args = step["Arguments"]
            resources = args.get("ProcessingResources", {}).get("ClusterConfig") or args.get("ResourceConfig", {})
            steps.append({"name": group.step, "operation": pipelines.operation_of(step["Type"]),
                          "passes": list(group.passes), "depends_on": step.get("DependsOn", []),
                          "instances": resources.get("InstanceCount"), "instance_type": resources.get("InstanceType")})
        return {"dry_run": self.dry_run, "pipeline": self.name, "region": self.region, "steps": steps,
                "uploads": self.uploads,
                "requests": [{"operation": "CreatePipeline", "request": pipelines.printable(self.create)},
                             {"operation": "StartPipelineExecution", "request": self.start}],
                "image_build": self.build_commands, "notes": self.notes,
                **({"pipeline_arn": self.pipeline_arn, "execution_arn": self.execution_arn}
                   if self.pipeline_arn else {})}

    def printable(self) -> str:
        return json.dumps(self.to_json(), indent=1, default=str)


def _check_uris(input_uri: str, output_uri: str) -> None:
    for uri, what in ((input_uri, "--input"), (output_uri, "--output")):
        if not fs.is_s3(uri):
            raise LaunchError(f"{what} must be an s3:// URI for a SageMaker job, got {uri!r}")
        fs.validate_uri(uri)
    from refinery.config import ConfigError
    from refinery.plan import check_separate

    try:  # a real launch refused it when planning, a dry run let it through (found by adversarial testing)
        check_separate(input_uri, output_uri)
    except ConfigError as exc:
        raise LaunchError(str(exc)) from None


def _region_to_send_to(region: str | None) -> str:
    """The region a launch's requests go to: ``region`` or the AWS configuration's (a profile's).
    Without one the launch uploaded the config and the shard stubs, then failed with botocore's
    "You must specify a region." (found by the session-42 trials, h121)."""
    if not region:
        import boto3

        region = boto3.session.Session().region_name
    if not region:
        raise LaunchError(NO_REGION)
    return region


def _aws_unreachable(region: str) -> str | None:
    """Why this machine cannot reach AWS's S3 endpoint of ``region`` (one TCP connect, at most
    ``fs.PROBE_TIMEOUT_S``), or None. Only a name lookup and a connect: what AWS answers is not
    probed, and an endpoint or proxy the variables name is left to ``fs.check_endpoint``."""
    import socket

    host = f"s3.{region}.amazonaws.com{'.cn' if region.startswith('cn-') else ''}"
    try:
        socket.create_connection((host, 443), timeout=fs.PROBE_TIMEOUT_S).close()
    except socket.gaierror as exc:
        return f"no such host {host!r} ({exc.strerror})"
    except TimeoutError:
        return f"{host} port 443 did not answer within {fs.PROBE_TIMEOUT_S:g} s"
    except OSError as exc:
        return f"cannot connect to {host} port 443 ({exc.strerror or exc})"
    return None


def _check_aws_reachable(region: str) -> None:
    """Refuse at once a launch from a machine with no route to AWS: its first S3 request (planning
    over the input listing) was retried by pyarrow for ~85 s before one line (found by session
    48's trial, h187). Skipped when ``AWS_ENDPOINT_URL`` or a proxy is set (``fs.check_endpoint``
    probes those) and with ``REFINERY_S3_PROBE=0``."""
    if fs.s3_endpoint() or fs.s3_proxy() or not fs.probe_enabled():
        return
    problem = _aws_unreachable(region)
    if problem:
        raise LaunchError(f"cannot reach AWS from this machine: {problem}; check the network (or a proxy: HTTPS_PROXY), "
                          f"or --dry-run to print every request without sending any ({fs.PROBE_SWITCH}=0 skips this check)")


def _groups_offline(shipment: Shipment) -> list[JobGroup]:
    """The job groups of ``shipment`` from its config alone (a dry run's; the real plan's passes are the same)."""
    if shipment.kind == "dedup":
        return [JobGroup("dedup", "ray", (), "dedup")]
    return group_passes(recipe_passes(shipment.config), shipment.all_on_ray)


def _image_region_problem(image: str, region: str | None, given_region: str | None) -> str | None:
    """Why the jobs cannot pull ``image``: SageMaker pulls from its own region's ECR only, and an
    image in another region's passed every check, the uploads and CreatePipeline, to fail when
    the first job started (found by the session-43 trials, h133)."""
    where = package.image_region(image)
    if not region or not where or where == region:
        return None
    return (f"--image {image} is in the ECR of {where}, and the jobs run in {region} (from {region_source(given_region)}): "
            f"SageMaker pulls images from its own region's ECR only; push the image to {region}'s ECR "
            f"(<account>.dkr.ecr.{region}.amazonaws.com/...) or launch in {where} (--region {where})")


def _check_options(shipment: Shipment, instance_type: str, ray_instance_type: str | None, name: str | None,
                   region: str | None, given_region: str | None, image: str = "") -> None:
    """The options a user typed, each checked offline and named, before anything is built, uploaded
    or listed: SageMaker's refusal named its request field (``ClusterConfig.InstanceType``,
    ``ProcessingJobName``), and ``--region mars-1 --dry-run`` passed (found by trials, h121)."""
    refused: dict[str, str] = {}  # option -> its first problem (one line, not one per job kind)
    for kind in sorted({group.job for group in _groups_offline(shipment)}):
        option, value = ("--ray-instance-type", ray_instance_type) if kind == "ray" and ray_instance_type \
            else ("--instance-type", instance_type)
        if option not in refused and (problem := instance_type_problem(kind, value)):
            refused[option] = f"{option} {problem}"
    problems = list(refused.values())
    if name is not None and (problem := job_name_problem(name)):
        problems.append(f"--name {problem}")
    if region and (problem := region_problem(region)):
        problems.append(f"{region_source(given_region)} {problem}")
    elif problem := _image_region_problem(image, region, given_region):
        problems.append(problem)
    if problems:
        raise LaunchError("; ".join(problems))


def _check_ray_options(groups: list[JobGroup], ray_instances: int | None, ray_instance_type: str | None,
                       spot: bool) -> None:
    """Refuse the Ray job's options for a launch without one, each named: --spot was refused, while
    --ray-instances and --ray-instance-type were silently ignored (h137)."""
    if any(g.job == "ray" for g in groups):
        return
    given = [f"{option} {value}" for option, value in (("--ray-instances", ray_instances),
                                                      ("--ray-instance-type", ray_instance_type)) if value is not None]
    if given:
        raise LaunchError(f"{' and '.join(given)}: {'they size' if len(given) > 1 else 'it sizes'} the Ray Training job, "
                          f"and this recipe has no Ray step (its Processing jobs are sized by --instances and "
                          f"--instance-type)")
    if spot:
        raise LaunchError("--spot: managed spot capacity is a Training-job option, and this recipe has no Ray step")


def _plan(shipment: Shipment, input_uri: str, output_uri: str, dry_run: bool) -> tuple[Any, list[JobGroup]]:
    """(plan or None, job groups). A real launch plans over the S3 listing -- the fingerprints the
    instances will compute -- and refuses a rerun that would mix configs now, not on a fleet."""
    if shipment.kind == "dedup" or dry_run:
        return None, _groups_offline(shipment)
    from refinery.plan import first_pass_to_redo, load_previous, plan_run

    plan = plan_run(shipment.config, input_uri, output_uri, pinned_libraries=package.image_library_versions())
    previous = load_previous(plan.run)
    if previous is None:  # another team's files, or a damaged run.json: every instance would refuse it
        from refinery.pipeline import check_output_is_ours

        check_output_is_ours(plan, force=False)
    first_pass_to_redo(plan, previous, force=False)  # raises RerunError
    return plan, group_passes(plan.passes, shipment.all_on_ray)


def _pipeline_steps(groups: list[JobGroup], base: dict[str, Any], ray: dict[str, Any]) -> list[pipelines.PipelineStep]:
    """One validated job request per group, each step depending on the one before. ``base``:
    :class:`JobSpec` fields of every job; ``ray``: those the Ray job overrides (size, spot)."""
    steps: list[pipelines.PipelineStep] = []
    for group in groups:
        fields = {**base, **(ray if group.job == "ray" else {}),
                  "tags": {**base["tags"], "refinery:job-kind": group.job, "refinery:passes": " ".join(group.passes)}}
        spec = JobSpec(**fields, kind=group.job, step=group.container_step, passes=list(group.passes),
                       stubs_uri=stubs_prefix(base["output_uri"], base["name"]) if group.job == "processing" else None)
        operation, request = build_request(spec)
        steps.append(pipelines.PipelineStep(group.step, operation, request, [s.name for s in steps[-1:]],
                                            group.description))
    return steps


def check_models_shipped(config: Any) -> None:
    """Refuse a stage that would load a model file of this machine: the image has the packaged
    models and its installed packages' files only, so every instance failed after provisioning
    ("model not found"), or planned the filter pass unlike the launch, whose fingerprint covered
    the local file (found by adversarial testing: ``~/.cache/refinery/models`` wins over the
    packaged models even without ``REFINERY_MODELS``)."""
    import sysconfig

    import refinery

    shipped = [Path(refinery.__file__).resolve().parent] + [
        Path(p).resolve() for p in {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}]
    for spec in config.stages:
        for f in spec.build().model_files():
            path = Path(f).resolve()
            if not any(path.is_relative_to(root) for root in shipped):
                raise LaunchError(
                    f"stage {spec.stage_name!r} would load {path}, a model file on this machine that the SageMaker "
                    f"image does not have (it has refinery's packaged models and its installed packages' files): "
                    f"put the model under refinery/resources/models and rebuild the image, or remove it from "
                    f"{path.parent} (REFINERY_MODELS, ~/.cache/refinery/models, or the stage's model_path)")


def check_files_reachable(shipment: Any) -> None:
    """Refuse a config naming a file of this machine that the jobs read: a decontamination
    benchmark or a tokenizer.json path. The image holds neither, so the Ray job failed when its
    pass started, after the whole filter pass (found by adversarial testing); on S3 they work."""
    if shipment.config is not None:
        passes = [(f"dedup[{i}]", d) for i, d in enumerate(shipment.config.dedup)]
        tokenize = shipment.config.tokenize
        files = [("tokenize.tokenizer", tokenize.tokenizer)] if tokenize is not None and tokenize.tokenizer != "gpt2" else []
    else:  # a dedup YAML (--stage dedup)
        passes, files = [("", shipment.dedup_config)], []
    for where, d in passes:
        if d.method == "decontaminate" and d.decontaminate is not None:
            files += [(f"{where + '.' if where else ''}decontaminate.benchmarks[{j}].path", b.path)
                      for j, b in enumerate(d.decontaminate.benchmarks)]
    for key, path in files:
        if not path.startswith("s3://"):
            raise LaunchError(f"{key}: {path} is a file of this machine, which the SageMaker jobs cannot read: "
                              f"copy it to S3 and give its s3:// URI")


def launch(
    config_path: str | Path,
    input_uri: str,
    output_uri: str,
    image: str,
    role_arn: str,
    stage: str | None = None,
    instances: int = 1,
    instance_type: str = "ml.c5.18xlarge",
    ray_instances: int | None = None,
    ray_instance_type: str | None = None,
    volume_gb: int = 100,
    max_runtime_s: int = 24 * 3600,
    region: str | None = None,
    workers: int | None = None,
    spot: bool = False,
    max_wait_s: int | None = None,
    subnets: list[str] | None = None,
    security_groups: list[str] | None = None,
    extra_tags: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
    name: str | None = None,
    build: bool | None = None,
    dry_run: bool = False,
    sagemaker_client: Any = None,
) -> LaunchResult:
    """Launch (or with ``dry_run`` only describe) the pipeline of jobs; see the module docstring.

    ``instances``/``instance_type`` size the Processing job; ``ray_instances``/``ray_instance_type``
    the Ray Training job (default: the same). ``build``: True = build and push the image (fails
    without Docker), False = the image already exists, None = build when Docker answers, otherwise
    print the commands and require ``build=False`` to go on (a job with a missing image fails only
    after provisioning).
    """
    _check_uris(input_uri, output_uri)
    if not package.is_ecr(image):  # the jobs would fail after provisioning, pulling nothing
        raise LaunchError(f"--image must be an Amazon ECR repository (<account>.dkr.ecr.<region>.amazonaws.com/"
                          f"<name>[:tag]), which SageMaker Processing jobs pull from, got {image!r}")
    if not _ROLE_ARN.fullmatch(role_arn):  # it was refused as "CreateProcessingJob.RoleArn ... does not match <regex>"
        raise LaunchError(f"--role {role_arn!r} is not an IAM role ARN: give arn:aws:iam::<12-digit account>:role/<name> "
                          "(or set REFINERY_SAGEMAKER_ROLE)")
    if security_groups and not subnets:  # a VpcConfig needs both: the groups were dropped without a word
        raise LaunchError("--security-group needs --subnet (a VPC config has both); give the subnets too")
    given_region = region
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not dry_run and sagemaker_client is None:
        region = _region_to_send_to(region)
    shipment = resolve_shipment(stage, config_path)
    _check_options(shipment, instance_type, ray_instance_type, name, region, given_region, image)
    # offline, before the S3 listing: the launch's job kinds are the real plan's
    _check_ray_options(_groups_offline(shipment), ray_instances, ray_instance_type, spot)
    if shipment.config is not None:
        check_models_shipped(shipment.config)
    check_files_reachable(shipment)
    if not dry_run:  # before the first request: S3, when planning
        _check_aws_reachable(region or "us-east-1")  # pyarrow's default, as fs._region()
    plan, groups = _plan(shipment, input_uri, output_uri, dry_run)
    if any(g.job == "processing" for g in groups) and instances > 100:
        raise LaunchError("a Processing job has at most 100 instances (use --ray-instances for the Ray job)")

    version = package.code_version()
    notes: list[str] = []
    if version.dirty:
        notes.append(f"uncommitted changes: the jobs are tagged {version.describe()}")
    full_image = package.image_uri(image, version)
    # a dry run builds nothing, so it does not ask Docker either (a remote DOCKER_HOST is network)
    docker = False if dry_run else package.docker_available()
    run_build = bool(build) if build is not None else docker
    if run_build and not docker and not dry_run:
        raise LaunchError("--build needs a Docker engine, and none answers here (`docker info` failed)")
    try:
        commands = package.build_and_push(full_image, version, run=run_build and not dry_run)
    except package.ImageError as exc:
        raise LaunchError(str(exc)) from None
    if build is None and not docker and not dry_run:
        raise LaunchError("no Docker engine to build the image:\n  " + "\n  ".join(commands)
                          + "\nrun these where Docker works, then launch again with --no-build")

    name = name or job_name(shipment.label, shipment.config_name)
    config_uri = fs.join(output_uri, "_jobs", name, "config.yaml")
    shards = len(plan.input_files) if plan is not None else None
    tags = {"refinery:git-sha": version.sha, "refinery:git-dirty": str(version.dirty).lower(),
            "refinery:config": shipment.config_name, "refinery:pipeline": name, "refinery:image": full_image,
            **({"refinery:total-shards": str(shards)} if shards is not None else {}), **(extra_tags or {})}
    env = {"REFINERY_GIT_SHA": version.describe(), **({"REFINERY_TOTAL_SHARDS": str(shards)} if shards else {}),
           **(extra_env or {})}
    if dry_run and not region:
        notes.append("no --region (or AWS_REGION): a launch sends these requests to the region of the AWS "
                      "configuration, and refuses to start without one")
    base = dict(name=name, image=full_image, role_arn=role_arn, input_uri=input_uri, output_uri=output_uri,
                config_uri=config_uri, instances=instances, instance_type=instance_type, volume_gb=volume_gb,
                max_runtime_s=max_runtime_s, region=region, env=env, tags=tags, workers=workers,
                subnets=list(subnets or []), security_groups=list(security_groups or []))
    ray = dict(instances=ray_instances or instances, instance_type=ray_instance_type or instance_type, spot=spot,
               max_wait_s=max_wait_s)
    steps = _pipeline_steps(groups, base, ray)
    per_job = ("refinery:step", "refinery:job-kind", "refinery:passes")
    pipeline_tags = [t for t in steps[0].request["Tags"] if t["Key"] not in per_job]
    description = f"refinery {shipment.config_name}: {input_uri} -> {output_uri}; " + "; ".join(
        f"{g.step}: {g.description}" for g in groups)
    create = pipelines.create_request(name, role_arn, pipelines.definition(steps), pipeline_tags, description)
    start = pipelines.start_request(name)
    uploads = [{"uri": config_uri, "what": f"the config the jobs read ({shipment.config_name})"}]
    if any(g.job == "processing" for g in groups):
        uploads.append({"uri": fs.join(stubs_prefix(output_uri, name), "<shard>.json"),
                        "what": (f"one stub per input file under {input_uri} ({shards} files)" if shards is not None
                                 else f"one stub per input file under {input_uri} (listed at launch; "
                                      "a dry run does not list it)")})
    result = LaunchResult(name, groups, create, start, uploads, commands, run_build and not dry_run, dry_run,
                          notes=notes, region=region)
    if dry_run:
        return result
    fs.write_bytes(config_uri, shipment.config_yaml.encode())
    from refinery.plan import input_record

    if plan is not None and (record := input_record(plan)) is not None:
        # the footers planning read: every instance plans again before any writes the run's record
        fs.write_bytes(launch_input_record(output_uri, name), json.dumps(record).encode())
    if plan is not None and any(g.job == "processing" for g in groups):
        log.info("writing %d shard stubs under %s", write_stubs(plan, stubs_prefix(output_uri, name)),
                 stubs_prefix(output_uri, name))
    sm = sagemaker_client or client(region)
    result.pipeline_arn, result.execution_arn = pipelines.submit(sm, create, start)
    log.info("launched pipeline %s: %s", name, result.execution_arn)
    return result
