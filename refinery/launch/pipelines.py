"""Chaining jobs with SageMaker Pipelines: one ``CreatePipeline`` whose definition holds the job
requests, then ``StartPipelineExecution``. SageMaker starts each step when the steps it depends on
have succeeded, so a whole recipe runs unattended from one ``refinery launch``.

The definition follows the SageMaker pipeline definition JSON schema (version ``2020-12-01``,
github.com/aws-sagemaker-mlops/sagemaker-model-building-pipeline-definition-JSON-schema)::

    {"Version": "2020-12-01", "Metadata": {}, "Parameters": [],
     "Steps": [{"Name": "filter", "Type": "Processing", "Arguments": {<CreateProcessingJob minus its name>}},
               {"Name": "ray-passes", "Type": "Training", "DependsOn": ["filter"],
                "Arguments": {<CreateTrainingJob minus its name>}}]}

A step's ``Arguments`` are exactly the request body of the job it starts, minus the job name
(SageMaker names pipeline jobs itself), which is what the sagemaker SDK's ``ProcessingStep`` and
``TrainingStep`` emit too. :func:`validate_definition` checks the envelope against the schema and
each step's Arguments against botocore's model of the job operation.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from refinery.launch.sagemaker import RequestError, redacted, validate_request

VERSION = "2020-12-01"
#: job operation -> (pipeline step Type, the request member SageMaker fills in for pipeline jobs)
STEP_TYPES = {"CreateProcessingJob": ("Processing", "ProcessingJobName"),
              "CreateTrainingJob": ("Training", "TrainingJobName")}
_OPERATIONS = {t: (op, name) for op, (t, name) in STEP_TYPES.items()}
_STEP_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,64}$")
_STEP_KEYS = {"Name", "Type", "Arguments", "DependsOn", "DisplayName", "Description", "RetryPolicies"}
#: what a step retries by itself: no capacity for the instance type, SageMaker's own faults and
#: throttling (an unattended pipeline failed on one CAPACITY_ERROR; found by adversarial testing).
#: A job failing in refinery's code is not retried here: relaunching resumes it.
RETRY_POLICIES = [
    {"ExceptionType": ["SageMaker.CAPACITY_ERROR", "SageMaker.JOB_INTERNAL_ERROR", "SageMaker.RESOURCE_LIMIT"],
     "IntervalSeconds": 300, "BackoffRate": 2.0, "MaxAttempts": 4},
    {"ExceptionType": ["Step.SERVICE_FAULT", "Step.THROTTLING"], "IntervalSeconds": 30, "BackoffRate": 2.0,
     "MaxAttempts": 5},
]


def operation_of(step_type: str) -> str:
    """``"Processing"`` -> ``"CreateProcessingJob"``."""
    return _OPERATIONS[step_type][0]


@dataclass
class PipelineStep:
    name: str  # ^[A-Za-z0-9\-_]{1,64}$
    operation: str  # CreateProcessingJob | CreateTrainingJob
    request: dict[str, Any]  # the full job request (its name is dropped in the definition)
    depends_on: list[str] = field(default_factory=list)
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        step_type, name_key = STEP_TYPES[self.operation]
        step: dict[str, Any] = {"Name": self.name, "Type": step_type,
                                "Arguments": {k: v for k, v in self.request.items() if k != name_key}}
        if self.depends_on:
            step["DependsOn"] = list(self.depends_on)
        if self.description:
            step["Description"] = self.description[:4096]
        step["RetryPolicies"] = [dict(p) for p in RETRY_POLICIES]
        return step


def definition(steps: list[PipelineStep]) -> dict[str, Any]:
    return {"Version": VERSION, "Metadata": {}, "Parameters": [], "Steps": [s.to_json() for s in steps]}


def create_request(name: str, role_arn: str, defn: dict[str, Any], tags: list[dict[str, str]],
                   description: str = "") -> dict[str, Any]:
    """CreatePipeline with the definition inline (``PipelineDefinition`` holds up to 1 MB)."""
    validate_definition(defn)
    request = {"PipelineName": name, "PipelineDisplayName": name, "RoleArn": role_arn,
               "PipelineDefinition": json.dumps(defn, separators=(",", ":")),
               "PipelineDescription": description[:3072], "ClientRequestToken": uuid.uuid4().hex, "Tags": tags}
    validate_request("CreatePipeline", request)
    return request


def start_request(name: str) -> dict[str, Any]:
    request = {"PipelineName": name, "PipelineExecutionDisplayName": name[:82].rstrip("-"),
               "ClientRequestToken": uuid.uuid4().hex}
    validate_request("StartPipelineExecution", request)
    return request


def step_requests(defn: dict[str, Any], job_name: str = "refinery-pipeline-step") -> list[tuple[str, str, dict[str, Any]]]:
    """(step name, operation, request) per step: its Arguments with ``job_name`` put back as the
    job name, i.e. the request SageMaker sends when the step starts (it picks its own name)."""
    out = []
    for step in defn.get("Steps", []):
        operation, name_key = _OPERATIONS[step["Type"]]
        out.append((step["Name"], operation, {name_key: job_name, **step.get("Arguments", {})}))
    return out


def validate_definition(defn: dict[str, Any]) -> None:
    """Raise :class:`RequestError` unless ``defn`` is a pipeline of Processing/Training steps whose
    Arguments are valid job requests and whose DependsOn name earlier steps."""
    problems: list[str] = []
    if defn.get("Version") != VERSION:
        problems.append(f"Version must be {VERSION!r}")
    steps = defn.get("Steps")
    if not isinstance(steps, list) or not steps:
        raise RequestError("pipeline definition: Steps must be a non-empty list")
    seen: set[str] = set()
    for i, step in enumerate(steps):
        where = f"Steps[{i}]"
        name = step.get("Name", "")
        if not isinstance(name, str) or not _STEP_NAME.match(name):
            problems.append(f"{where}.Name {name!r} does not match {_STEP_NAME.pattern}")
        if name in seen:
            problems.append(f"{where}.Name {name!r} is repeated")
        if set(step) - _STEP_KEYS:
            problems.append(f"{where}: unknown keys {sorted(set(step) - _STEP_KEYS)}")
        if step.get("Type") not in _OPERATIONS:
            problems.append(f"{where}.Type {step.get('Type')!r}: this launcher emits only {sorted(_OPERATIONS)}")
        for dep in step.get("DependsOn", []):
            if dep not in seen:
                problems.append(f"{where}.DependsOn {dep!r} is not an earlier step")
        seen.add(name)
    if problems:
        raise RequestError("pipeline definition: " + "; ".join(problems))
    for step_name, operation, request in step_requests(defn):
        try:
            validate_request(operation, request)
        except RequestError as exc:
            raise RequestError(f"pipeline step {step_name!r}: {exc}") from None


def printable(request: dict[str, Any]) -> dict[str, Any]:
    """A CreatePipeline request for printing: its definition parsed, secrets in steps redacted."""
    out = copy.deepcopy(request)
    defn = json.loads(out["PipelineDefinition"])
    for step in defn["Steps"]:
        step["Arguments"] = redacted(step["Arguments"])
    out["PipelineDefinition"] = defn
    return out


def submit(sm: Any, create: dict[str, Any], start: dict[str, Any]) -> tuple[str, str]:
    """Create the pipeline and start it; returns (pipeline ARN, execution ARN)."""
    pipeline_arn = sm.create_pipeline(**create)["PipelineArn"]
    execution_arn = sm.start_pipeline_execution(**start)["PipelineExecutionArn"]
    return pipeline_arn, execution_arn
