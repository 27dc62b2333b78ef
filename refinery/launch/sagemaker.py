"""SageMaker job requests as plain dicts, checked against botocore's service model, sent with boto3.

No ``sagemaker`` SDK: it is ~1 GB and calls IAM when constructed. The two request kinds:

- :func:`processing_request` (CreateProcessingJob): the share-nothing document pass. Its one input
  channel is a prefix of *shard stubs* (one tiny JSON object per input file, see
  :mod:`refinery.launch.recipe`) with ``ShardedByS3Key``, so each instance receives its own subset
  of the stubs in ``/opt/ml/processing/input/shards`` and reads those shards' documents straight
  from S3 (nothing big is copied to instance disks). Results go straight to the run output on S3
  (resumable, progress visible while running); logs go to a ``Continuous`` ProcessingOutput under
  ``<output>/_jobs/<job>/logs/``.
- :func:`training_request` (CreateTrainingJob): passes whose workers must talk (dedup) and what
  follows them. Every instance runs ``entrypoint.py train``, which forms one Ray cluster; optional
  managed spot capacity (no CheckpointConfig: the run output on S3 is the job's checkpoint).

:func:`validate_request` checks a request against the service model: botocore's own validator
(required members, types, minimums), plus what it skips -- enums, maximum lengths/values and
name patterns -- so a bad request fails here rather than at the API.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # this module runs in the watchdog's Lambda too: stdlib and boto3 only at import
    from refinery.launch.steps import JobKind

#: where the container sees things (see refinery/launch/container.py and jobs/Dockerfile)
ENTRYPOINT = ["python3", "/opt/refinery/jobs/entrypoint.py"]
PROCESSING_INPUT = "/opt/ml/processing/input/shards"  # this instance's shard stubs
PROCESSING_LOGS = "/opt/ml/processing/output/logs"

OPERATIONS = {"processing": "CreateProcessingJob", "ray": "CreateTrainingJob"}
_TAG_VALUE_BAD = re.compile(r"[^\w\s.:/=+\-@]")


class RequestError(ValueError):
    """A request does not match the SageMaker API model; the message says where."""


@dataclass
class JobSpec:
    """Everything a launch needs; :func:`build_request` turns it into an API request."""

    name: str
    kind: JobKind
    image: str
    role_arn: str
    input_uri: str  # what the passes read (s3://): the crawl, or a run directory for a dedup YAML
    output_uri: str
    config_uri: str
    step: str  # REFINERY_STEP: what the container runs (refinery.launch.steps.STEPS)
    instances: int = 1
    instance_type: str = "ml.c5.18xlarge"
    volume_gb: int = 100
    max_runtime_s: int = 24 * 3600
    region: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    workers: int | None = None
    spot: bool = False
    max_wait_s: int | None = None
    subnets: list[str] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=list)
    ray_token: str | None = None  # shared Ray auth token (training jobs); generated when None
    passes: list[str] = field(default_factory=list)  # REFINERY_PASSES: the recipe's passes this job runs
    stubs_uri: str | None = None  # processing: the prefix of shard stubs split over the instances


def job_name(*parts: str, now: float | None = None) -> str:
    """``refinery-<parts>-<UTC timestamp>``, within SageMaker's 63 characters ``[a-zA-Z0-9-]``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    body = "-".join(re.sub(r"[^a-zA-Z0-9]+", "-", p).strip("-") for p in ("refinery", *parts) if p)
    body = re.sub(r"-+", "-", body)[: 63 - len(stamp) - 1].rstrip("-")
    return f"{body}-{stamp}"


def tag_value(value: str) -> str:
    """Tag values allow letters, digits, spaces and ``_.:/=+-@`` (max 256)."""
    return _TAG_VALUE_BAD.sub("_", str(value))[:256]


def _prefix(uri: str) -> str:
    # "s3://b/crawl" would also match "s3://b/crawl-old/..." as an S3 prefix
    return uri.rstrip("/") + "/"


def _environment(spec: JobSpec) -> dict[str, str]:
    env = {
        "REFINERY_STEP": spec.step,
        "REFINERY_CONFIG_URI": spec.config_uri,
        "REFINERY_INPUT": spec.input_uri,
        "REFINERY_OUTPUT": spec.output_uri,
        "REFINERY_JOB_NAME": spec.name,
        "PYTHONUNBUFFERED": "1",
    }
    if spec.region:
        env["AWS_REGION"] = spec.region  # pyarrow's S3 client does not follow region redirects
    if spec.workers:
        # --workers is per instance; a Ray job's executor caps the whole cluster with it: 36 tasks
        # at once on 8 instances of 72 vCPUs (found by adversarial testing)
        env["REFINERY_WORKERS"] = str(spec.workers * (spec.instances if spec.kind == "ray" else 1))
    if spec.passes:
        env["REFINERY_PASSES"] = ",".join(spec.passes)
    env.update(spec.env)
    return env


def check_tag_key(key: str) -> None:
    """AWS tag keys: 1-128 letters, digits, spaces and ``_.:/=+-@``, not starting ``aws:``. The
    request model's pattern is one botocore skips, so ``team!=x`` passed the dry run and AWS
    would refuse CreatePipeline after the config and stubs were uploaded (adversarial testing)."""
    if not 1 <= len(key) <= 128 or key.lower().startswith("aws:") or _TAG_VALUE_BAD.search(key):
        raise RequestError(f"tag key {key!r}: use 1-128 letters, digits, spaces and _.:/=+-@, not starting 'aws:'")


def _tags(spec: JobSpec) -> list[dict[str, str]]:
    for key in spec.tags:
        check_tag_key(key)
    tags = {"refinery:step": spec.step, "refinery:output": spec.output_uri, "refinery:input": spec.input_uri,
            "refinery:job": spec.name, **spec.tags}
    return [{"Key": k[:128], "Value": tag_value(v)} for k, v in tags.items()]


def processing_request(spec: JobSpec) -> dict[str, Any]:
    """CreateProcessingJob for the share-nothing document pass over the stubs under ``stubs_uri``."""
    if not spec.stubs_uri:
        raise RequestError("a processing job needs stubs_uri: the prefix of shard stubs its instances share")
    request: dict[str, Any] = {
        "ProcessingJobName": spec.name,
        "RoleArn": spec.role_arn,
        "AppSpecification": {"ImageUri": spec.image, "ContainerEntrypoint": [*ENTRYPOINT, "processing"]},
        "ProcessingResources": {"ClusterConfig": {
            "InstanceCount": spec.instances, "InstanceType": spec.instance_type, "VolumeSizeInGB": spec.volume_gb}},
        "StoppingCondition": {"MaxRuntimeInSeconds": spec.max_runtime_s},
        "ProcessingInputs": [{
            "InputName": "shards",
            "S3Input": {"S3Uri": _prefix(spec.stubs_uri), "LocalPath": PROCESSING_INPUT, "S3DataType": "S3Prefix",
                        "S3InputMode": "File", "S3DataDistributionType": "ShardedByS3Key",
                        "S3CompressionType": "None"},
        }],
        "ProcessingOutputConfig": {"Outputs": [{
            "OutputName": "logs",
            "S3Output": {"S3Uri": _prefix(f"{spec.output_uri.rstrip('/')}/_jobs/{spec.name}/logs"),
                         "LocalPath": PROCESSING_LOGS, "S3UploadMode": "Continuous"},
        }]},
        # documents are read from the S3 input itself; the channel only says which shards are ours
        "Environment": {**_environment(spec), "REFINERY_LOG_DIR": PROCESSING_LOGS,
                        "REFINERY_SHARDS_DIR": PROCESSING_INPUT},
        "Tags": _tags(spec),
    }
    if spec.subnets:
        request["NetworkConfig"] = {"VpcConfig": {"Subnets": spec.subnets, "SecurityGroupIds": spec.security_groups}}
    return request


def training_request(spec: JobSpec) -> dict[str, Any]:
    """CreateTrainingJob for passes that run on one Ray cluster over all instances."""
    token = spec.ray_token or secrets.token_hex(24)
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": spec.max_runtime_s}
    if spec.spot:
        # spot capacity may take a while and may be reclaimed: wait up to twice the runtime
        # the default (twice the runtime) never over SageMaker's 28 days: a 400 h runtime was refused
        # for a wait the user never set (found by adversarial testing)
        stopping["MaxWaitTimeInSeconds"] = spec.max_wait_s or max(min(2 * spec.max_runtime_s, 28 * 86400),
                                                                  spec.max_runtime_s)
        if stopping["MaxWaitTimeInSeconds"] < spec.max_runtime_s:
            raise RequestError("--max-wait-hours must be at least --max-runtime-hours for managed spot training")
    request: dict[str, Any] = {
        "TrainingJobName": spec.name,
        "RoleArn": spec.role_arn,
        "AlgorithmSpecification": {"TrainingImage": spec.image, "TrainingInputMode": "File",
                                   "ContainerEntrypoint": [*ENTRYPOINT, "train"]},
        "ResourceConfig": {"InstanceType": spec.instance_type, "InstanceCount": spec.instances,
                           "VolumeSizeInGB": spec.volume_gb},
        "OutputDataConfig": {"S3OutputPath": f"{spec.output_uri.rstrip('/')}/_jobs/{spec.name}/sagemaker"},
        "StoppingCondition": stopping,
        # one token on every instance: Ray 2.60's token auth across the cluster
        "Environment": {**_environment(spec), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
        "EnableManagedSpotTraining": spec.spot,
        "Tags": _tags(spec),
    }
    if spec.subnets:
        request["VpcConfig"] = {"Subnets": spec.subnets, "SecurityGroupIds": spec.security_groups}
    return request


def build_request(spec: JobSpec) -> tuple[str, dict[str, Any]]:
    """(operation name, validated request) for ``spec``."""
    request = processing_request(spec) if spec.kind == "processing" else training_request(spec)
    operation = OPERATIONS[spec.kind]
    validate_request(operation, request)
    return operation, request


# -- validation ---------------------------------------------------------------------------------------
#: SageMaker's documented limits that the API model does not encode (or encodes more loosely):
#: (operation, path) -> (maximum, what it is). Processing jobs run at most 5 days; training jobs
#: 28 days (MaxRuntimeInSeconds and, for spot, MaxWaitTimeInSeconds); EBS volumes 16 TB.
SERVICE_LIMITS: dict[tuple[str, tuple[str, ...]], tuple[int, str]] = {
    ("CreateProcessingJob", ("StoppingCondition", "MaxRuntimeInSeconds")): (5 * 86400, "5 days"),
    ("CreateProcessingJob", ("ProcessingResources", "ClusterConfig", "VolumeSizeInGB")): (16384, "16 TB"),
    ("CreateProcessingJob", ("ProcessingResources", "ClusterConfig", "InstanceCount")): (100, "100 instances"),
    ("CreateTrainingJob", ("StoppingCondition", "MaxRuntimeInSeconds")): (28 * 86400, "28 days"),
    ("CreateTrainingJob", ("StoppingCondition", "MaxWaitTimeInSeconds")): (28 * 86400, "28 days"),
    ("CreateTrainingJob", ("ResourceConfig", "VolumeSizeInGB")): (16384, "16 TB"),
}


def check_limits(operation: str, request: dict[str, Any]) -> list[str]:
    """What in ``request`` exceeds :data:`SERVICE_LIMITS` (one line each)."""
    problems = []
    for (op, path), (maximum, what) in SERVICE_LIMITS.items():
        if op != operation:
            continue
        value: Any = request
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int) and value > maximum:
            problems.append(f"{'.'.join(path)} = {value:,} exceeds SageMaker's limit of {maximum:,} ({what})")
    return problems


@functools.lru_cache(maxsize=1)  # ~0.1-0.2 s to load: once per process, not per check
def _service_model():
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


# -- what a user types, checked before any request is built (named by its option) ---------------
#: the service model's shape of each job kind's instance type
_INSTANCE_TYPE_SHAPES = {"processing": "ProcessingInstanceType", "ray": "TrainingInstanceType"}
_JOB_KINDS = {"processing": "a Processing job (the document pass)", "ray": "a Training job (the Ray passes)"}


def instance_type_problem(kind: JobKind, value: str) -> str | None:
    """Why ``value`` cannot be ``kind``'s instance type (None: it can). Checked against the
    service model's list, with a suggestion: ``c5.large`` was refused naming
    ``ClusterConfig.InstanceType`` and "207 choices" (found by trials, h121)."""
    import difflib

    allowed = _service_model().shape_for(_INSTANCE_TYPE_SHAPES[kind]).enum
    if value in allowed or _newer_family(value):
        return None
    guess = f"ml.{value}" if f"ml.{value}" in allowed else next(iter(difflib.get_close_matches(value, allowed, 1)), None)
    hint = f"; did you mean {guess!r}?" if guess else " (they look like ml.c5.18xlarge)"
    return f"{value!r} is not an instance type SageMaker offers {_JOB_KINDS[kind]}{hint}"


#: an instance type's shape: ml.<family>.<size> (ml.c7i.48xlarge, ml.p6-b200.48xlarge)
_INSTANCE_TYPE = re.compile(r"ml\.([a-z]+[0-9]+[a-z0-9-]*)\.[a-z0-9-]+")


def _newer_family(value: str) -> bool:
    """Whether ``value`` looks like an instance type of a family no instance-type list of this
    botocore knows: newer than the installed botocore (``boto3>=1.34`` is allowed, whose lists
    lack families SageMaker offers now, e.g. ml.c7i), so SageMaker, not this list, judges it (as
    for a region). A known family's size or job kind is still judged here (ml.c5.large)."""
    match = _INSTANCE_TYPE.fullmatch(value)
    return match is not None and match.group(1) not in _known_families()


@functools.lru_cache(maxsize=1)
def _known_families() -> frozenset[str]:
    """The instance families (c5, p6-b200) of every instance-type list in the service model."""
    model = _service_model()
    return frozenset(v.split(".")[1] for name in model.shape_names if "InstanceType" in name
                     for v in (getattr(model.shape_for(name), "enum", None) or []) if v.count(".") == 2)


def job_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name the pipeline and its jobs (None: it can): they share the job
    name's rule, the stricter one (``ProcessingJobName``, 63 characters)."""
    shape = _service_model().shape_for("ProcessingJobName")
    if len(name) <= shape.metadata["max"] and re.fullmatch(shape.metadata["pattern"], name):
        return None
    return (f"{name!r} is not a SageMaker job name: at most {shape.metadata['max']} letters, digits and hyphens, "
            "starting and ending with a letter or digit")


#: a region's shape (us-east-1, us-gov-west-1, cn-northwest-1, us-isob-east-1, the sovereign
#: cloud's eusc-de-east-1): a region this botocore does not list yet is still accepted when it has
#: it (the compass word is what a typo breaks)
_REGION_SHAPE = re.compile(r"([a-z]{2}(-gov|-iso[a-z]?)?|[a-z]{4}-[a-z]{2})"
                           r"-(central|(north|south)?(east|west)|north|south)-[1-9]\d*")


@functools.lru_cache(maxsize=1)  # ~0.1 s to read: once per process
def known_regions() -> tuple[str, ...]:
    """The regions of every partition that botocore's bundled endpoint data lists for SageMaker."""
    import botocore.session

    session = botocore.session.get_session()
    return tuple(sorted({r for partition in session.get_available_partitions()
                         for r in session.get_available_regions("sagemaker", partition_name=partition)}))


def region_problem(region: str) -> str | None:
    """Why ``region`` is not an AWS region (None: it is one, or looks like a new one). Offline:
    ``--region mars-1 --dry-run`` passed, and a launch sent to it failed after the uploads."""
    import difflib

    known = known_regions()
    if region in known or _REGION_SHAPE.fullmatch(region):
        return None
    guesses = difflib.get_close_matches(region.strip().lower(), known, 2)  # two: us-esat-1 is as near us-west-1
    hint = "; did you mean " + " or ".join(map(repr, guesses)) + "?" if guesses else " (they look like us-east-1)"
    return f"{region!r} is not an AWS region{hint}"


#: the environment variables a region comes from, in botocore's order of precedence
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
NO_REGION = "no AWS region: pass --region (e.g. --region us-east-1) or set AWS_REGION"


def region_source(given: str | None) -> str:
    """Where the region a command uses came from, as the user would name it: ``--region``, the
    variable (typer fills ``--region`` from AWS_REGION, and botocore reads AWS_DEFAULT_REGION:
    the variable is what to fix; "--region 'mars-1'" sent the user to a command line that had
    none, h133) or the AWS configuration (a profile's region)."""
    for var in REGION_VARIABLES:
        value = os.environ.get(var)
        if value and (given is None or given == value):
            return var
    return "--region" if given else "the AWS configuration's region"


def resolve_region(given: str | None, configured: bool = True) -> str | None:
    """The region a command's requests go to: ``given`` (``--region`` or AWS_REGION), else
    AWS_DEFAULT_REGION, else (``configured``: not for a dry run, which reads no configuration)
    the AWS configuration's. None: there is none. Raises ValueError naming where a region that is
    not one came from, before any request (a bad one failed only at the first call, after retries)."""
    region = given or next((os.environ[v] for v in REGION_VARIABLES if os.environ.get(v)), None)
    if not region and configured:
        import boto3

        region = boto3.session.Session().region_name
    if region and (problem := region_problem(region)):
        raise ValueError(f"{region_source(given)} {problem}")
    return region or None


def validate_request(operation: str, request: dict[str, Any]) -> None:
    """Raise :class:`RequestError` unless ``request`` fits ``operation``'s input shape."""
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    shape = _service_model().operation_model(operation).input_shape
    try:
        validate_parameters(request, shape)
    except ParamValidationError as exc:
        raise RequestError(f"{operation}: {exc}") from None
    problems: list[str] = check_limits(operation, request)
    _check(request, shape, operation, problems)
    if problems:
        raise RequestError(f"{operation}: " + "; ".join(problems))


def _check(value: Any, shape: Any, where: str, problems: list[str]) -> None:
    """What botocore's validator leaves out: enums, maxima and patterns."""
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                _check(value[name], member, f"{where}.{name}", problems)
    elif kind == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{where}: {len(value)} items, at most {meta['max']}")
        for i, item in enumerate(value):
            _check(item, shape.member, f"{where}[{i}]", problems)
    elif kind == "map" and isinstance(value, dict):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{where}: {len(value)} entries, at most {meta['max']}")
        for k, v in value.items():
            _check(k, shape.key, f"{where} key {k!r}", problems)
            _check(v, shape.value, f"{where}[{k!r}]", problems)
    elif kind == "string" and isinstance(value, str):
        enum = getattr(shape, "enum", None) or meta.get("enum")
        if enum and value not in enum:
            problems.append(f"{where}: {value!r} is not one of the allowed values ({len(enum)} choices)")
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{where}: {len(value)} characters, at most {meta['max']}")
        pattern = meta.get("pattern")
        if pattern:
            try:
                regex = re.compile(pattern)
            except re.error:
                regex = None  # Java-only syntax (\p{L}): botocore's model is for the server to check
            if regex is not None and not regex.fullmatch(value):
                problems.append(f"{where}: {value!r} does not match {pattern}")
    elif kind in ("integer", "long") and isinstance(value, int) and "max" in meta and value > meta["max"]:
        problems.append(f"{where}: {value} is above the maximum {meta['max']}")


# -- the API ----------------------------------------------------------------------------------------------
def client(region: str | None = None):
    import boto3

    return boto3.client("sagemaker", region_name=region)


def submit(sm, operation: str, request: dict[str, Any]) -> str:
    """Send a validated request; returns the job ARN."""
    if operation == "CreateProcessingJob":
        return sm.create_processing_job(**request)["ProcessingJobArn"]
    if operation == "CreateTrainingJob":
        return sm.create_training_job(**request)["TrainingJobArn"]
    raise RequestError(f"unknown operation {operation}")


SECRET_ENV = ("RAY_AUTH_TOKEN",)


def redacted(request: dict[str, Any]) -> dict[str, Any]:
    """A job request (or a pipeline step's Arguments) for printing: secrets replaced."""
    out = dict(request)
    env = out.get("Environment", {})
    if any(k in env for k in SECRET_ENV):
        out["Environment"] = {k: "<redacted>" if k in SECRET_ENV else v for k, v in env.items()}
    return out


@dataclass
class JobStatus:
    name: str
    kind: JobKind
    arn: str
    status: str  # InProgress | Completed | Failed | Stopping | Stopped
    created: Any
    started: Any  # when the containers started (None before)
    ended: Any
    instances: int
    instance_type: str
    environment: dict[str, str]
    tags: dict[str, str]
    failure_reason: str | None
    #: training jobs: Starting, Downloading, Training, ... (None for processing jobs)
    secondary_status: str | None = None

    @property
    def running(self) -> bool:
        return self.status == "InProgress"

    @property
    def output_uri(self) -> str | None:
        return self.environment.get("REFINERY_OUTPUT") or self.tags.get("refinery:output")

    @property
    def announced_as(self) -> str | None:
        """The name its containers write ``_jobs/<name>/`` under (a pipeline step's: the pipeline's)."""
        return self.environment.get("REFINERY_JOB_NAME") or self.tags.get("refinery:job")


def describe(sm, name: str) -> JobStatus:
    """Describe a processing or training job by name (whichever exists), tags included."""
    from botocore.exceptions import ClientError

    try:
        d = sm.describe_processing_job(ProcessingJobName=name)
        cluster = d.get("ProcessingResources", {}).get("ClusterConfig", {})
        status = JobStatus(name, "processing", d["ProcessingJobArn"], d["ProcessingJobStatus"], d.get("CreationTime"),
                           d.get("ProcessingStartTime"), d.get("ProcessingEndTime"), cluster.get("InstanceCount", 0),
                           cluster.get("InstanceType", ""), d.get("Environment", {}), {}, d.get("FailureReason"))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("ValidationException", "ResourceNotFound"):
            raise
        d = sm.describe_training_job(TrainingJobName=name)
        res = d.get("ResourceConfig", {})
        status = JobStatus(name, "ray", d["TrainingJobArn"], d["TrainingJobStatus"], d.get("CreationTime"),
                           d.get("TrainingStartTime"), d.get("TrainingEndTime"), res.get("InstanceCount", 0),
                           res.get("InstanceType", ""), d.get("Environment", {}), {}, d.get("FailureReason"),
                           d.get("SecondaryStatus"))
    try:
        status.tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=status.arn).get("Tags", [])}
    except ClientError:
        pass  # tags are a convenience (the output URI is in the environment too)
    return status


def stop(sm, status: JobStatus) -> None:
    if status.kind == "processing":
        sm.stop_processing_job(ProcessingJobName=status.name)
    else:
        sm.stop_training_job(TrainingJobName=status.name)
