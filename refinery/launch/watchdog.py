"""The unattended watchdog: an AWS Lambda function on an EventBridge schedule that stops refinery's
SageMaker jobs whose progress has stalled, so a hung 100-instance job does not bill until its
MaxRuntime while nobody watches a terminal.

Every run of :func:`handler` lists the InProgress processing and training jobs whose names start
with ``refinery-`` or are a SageMaker Pipeline's step jobs (``pipelines-*``: how ``refinery
launch`` runs) naming a refinery run output, judges each with
:class:`refinery.launch.watch.Watcher` (progress = shards finished, as the job's heartbeats report
them; the stall clock starts when the job's containers announce themselves, so provisioning and
input copies are never "stalls") and stops those idle past the threshold. Throttled SageMaker/S3 calls are retried with exponential backoff and jitter; a job
that cannot be judged is reported and left alone (the watchdog never stops what it cannot see).

:func:`deploy_requests` spells out the whole deployment as plain API requests (IAM role with a
least-privilege inline policy, the Lambda function from :func:`package_zip`, the EventBridge rule,
its target and the permission for EventBridge to invoke the function); :func:`deploy` sends them
with boto3. ``refinery watchdog deploy --dry-run`` prints them.

This module and what it imports (``watch``, ``sagemaker``) use only the standard library and boto3
at import time: the Lambda runtime provides nothing else.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

log = logging.getLogger("refinery.watchdog")

#: error codes AWS uses for "slow down" (SageMaker, S3, IAM, Lambda, EventBridge)
THROTTLING = {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
              "SlowDown", "ProvisionedThroughputExceededException", "RequestThrottled"}
JOB_PREFIX = "refinery-"
#: how SageMaker names a Pipeline's step jobs (``pipelines-<execution>-<step>-...``), which is how
#: ``refinery launch`` runs: such a job is refinery's when it names a run output (environment or
#: ``refinery:output`` tag); the watchdog saw only ``refinery-*`` names, so none of them (found by
#: adversarial testing)
PIPELINE_JOB_PREFIX = "pipelines-"
FUNCTION = "refinery-watchdog"
#: the modules the Lambda package holds (stdlib + boto3 at import time)
PACKAGE_FILES = ("refinery/__init__.py", "refinery/launch/__init__.py", "refinery/launch/sagemaker.py",
                 "refinery/launch/watch.py", "refinery/launch/watchdog.py")
HANDLER = "refinery.launch.watchdog.handler"
RUNTIME = "python3.12"

T = TypeVar("T")


def with_backoff(call: Callable[[], T], attempts: int = 6, base_s: float = 0.5, cap_s: float = 20.0,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, retried on throttling errors with capped exponential backoff and full jitter."""
    from botocore.exceptions import ClientError

    for attempt in range(attempts):
        try:
            return call()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in THROTTLING or attempt == attempts - 1:
                raise
            delay = random.uniform(0, min(cap_s, base_s * 2**attempt))
            log.warning("throttled (%s), retrying in %.1f s (attempt %d/%d)", code, delay, attempt + 1, attempts)
            sleep(delay)
    raise AssertionError("unreachable")


@dataclass
class Settings:
    """The handler's settings, from the function's environment (set by ``watchdog deploy``)."""

    stall_minutes: float = 60.0
    start_grace_minutes: float = 180.0
    job_prefix: str = JOB_PREFIX
    dry_run: bool = False  # report stalled jobs, stop nothing

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        return cls(stall_minutes=float(env.get("REFINERY_WATCHDOG_STALL_MINUTES", cls.stall_minutes)),
                   start_grace_minutes=float(env.get("REFINERY_WATCHDOG_START_GRACE_MINUTES",
                                                     cls.start_grace_minutes)),
                   job_prefix=env.get("REFINERY_WATCHDOG_JOB_PREFIX", JOB_PREFIX),
                   dry_run=env.get("REFINERY_WATCHDOG_DRY_RUN", "").lower() in ("1", "true", "yes"))

    def environment(self) -> dict[str, str]:
        return {"REFINERY_WATCHDOG_STALL_MINUTES": f"{self.stall_minutes:g}",
                "REFINERY_WATCHDOG_START_GRACE_MINUTES": f"{self.start_grace_minutes:g}",
                "REFINERY_WATCHDOG_JOB_PREFIX": self.job_prefix,
                "REFINERY_WATCHDOG_DRY_RUN": "true" if self.dry_run else "false"}


def running_jobs(sm: Any, prefix: str = JOB_PREFIX, sleep: Callable[[float], None] = time.sleep,
                 prefixes: tuple[str, ...] | None = None) -> list[str]:
    """Names of the InProgress processing and training jobs whose names start with ``prefix``
    (or any of ``prefixes``)."""
    names: list[str] = []
    for operation, key, name_key in (("list_processing_jobs", "ProcessingJobSummaries", "ProcessingJobName"),
                                     ("list_training_jobs", "TrainingJobSummaries", "TrainingJobName")):
        for start in prefixes or (prefix,):
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {"StatusEquals": "InProgress", "NameContains": start.rstrip("-"),
                                          "MaxResults": 100}
                if token:
                    kwargs["NextToken"] = token
                page = with_backoff(lambda: getattr(sm, operation)(**kwargs), sleep=sleep)
                names += [s[name_key] for s in page.get(key, [])
                          if s[name_key].startswith(start) and s[name_key] not in names]
                token = page.get("NextToken")
                if not token:
                    break
    return names


def check_jobs(sm: Any, s3: Any, settings: Settings, clock: Callable[[], Any] | None = None,
               sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Judge every running refinery job once; stop the stalled ones (unless ``dry_run``)."""
    from refinery.launch.watch import NoRunOutput, Watcher, _utcnow

    results = []
    for name in running_jobs(sm, sleep=sleep, prefixes=(settings.job_prefix, PIPELINE_JOB_PREFIX)):
        watcher = Watcher(sm, s3, name, stall_minutes=settings.stall_minutes, stop_stalled=not settings.dry_run,
                          clock=clock or _utcnow, start_grace_minutes=settings.start_grace_minutes, read_docs=False)
        try:
            poll = with_backoff(watcher.poll, sleep=sleep)
        except NoRunOutput:
            if name.startswith(PIPELINE_JOB_PREFIX):
                log.debug("%s: another pipeline's job (it names no refinery run output): not judged", name)
                continue
            raise
        except Exception as exc:  # one job we cannot judge must not keep the others unwatched
            log.error("%s: cannot judge it, leaving it alone: %s", name, str(exc).splitlines()[0])
            results.append({"job": name, "error": str(exc).splitlines()[0]})
            continue
        log.info("%s", poll.line())
        results.append({"job": name, "status": poll.job.status, "phase": poll.phase, "idle_s": poll.idle_s,
                        "stalled": poll.stalled, "action": poll.action, "shards": poll.progress.markers})
    return {"checked": len(results), "stopped": [r["job"] for r in results if r.get("action") == "stopped"],
            "stalled": [r["job"] for r in results if r.get("stalled")], "jobs": results}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (EventBridge schedule event)."""
    import boto3
    from botocore.config import Config

    logging.getLogger().setLevel(logging.INFO)
    config = Config(retries={"mode": "adaptive", "max_attempts": 10})
    result = check_jobs(boto3.client("sagemaker", config=config), boto3.client("s3", config=config),
                        Settings.from_env())
    return json.loads(json.dumps(result, default=str))


# -- deployment -----------------------------------------------------------------------------------------
def package_zip(root: Path | None = None) -> bytes:
    """The Lambda deployment package: the few modules the handler imports, from this checkout or
    the installed package (deterministic: fixed timestamps, sorted)."""
    root = root or Path(__file__).resolve().parents[2]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for rel in sorted(PACKAGE_FILES):
            info = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, (root / rel).read_bytes())
    return buf.getvalue()


def policy_document(region: str, account: str, buckets: list[str], prefix: str = JOB_PREFIX) -> dict[str, Any]:
    """Least privilege: list and describe jobs, stop only refinery's, read the run outputs, write
    the function's own logs."""
    kinds = ("processing-job", "training-job")
    jobs = [f"arn:aws:sagemaker:{region}:{account}:{kind}/{prefix}*" for kind in kinds]
    pipeline_jobs = [f"arn:aws:sagemaker:{region}:{account}:{kind}/{PIPELINE_JOB_PREFIX}*" for kind in kinds]
    stop = ["sagemaker:StopProcessingJob", "sagemaker:StopTrainingJob"]
    statements: list[dict[str, Any]] = [
        {"Sid": "ListJobs", "Effect": "Allow", "Action": ["sagemaker:ListProcessingJobs", "sagemaker:ListTrainingJobs"],
         "Resource": "*"},  # list actions take no resource
        {"Sid": "JudgeJobs", "Effect": "Allow",
         "Action": ["sagemaker:DescribeProcessingJob", "sagemaker:DescribeTrainingJob", "sagemaker:ListTags"],
         "Resource": jobs + pipeline_jobs},
        {"Sid": "StopRefineryJobs", "Effect": "Allow", "Action": stop, "Resource": jobs},
        # a pipeline's step job only when it carries refinery's run-output tag (another team's is not ours)
        {"Sid": "StopRefineryPipelineJobs", "Effect": "Allow", "Action": stop, "Resource": pipeline_jobs,
         "Condition": {"Null": {"aws:ResourceTag/refinery:output": "false"}}},
        {"Sid": "OwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{FUNCTION}*"},
    ]
    if buckets:
        statements += [
            {"Sid": "ListRunOutputs", "Effect": "Allow", "Action": ["s3:ListBucket"],
             "Resource": [f"arn:aws:s3:::{b}" for b in buckets]},
            {"Sid": "ReadProgressMarkers", "Effect": "Allow", "Action": ["s3:GetObject"],
             "Resource": [f"arn:aws:s3:::{b}/*" for b in buckets]},
        ]
    return {"Version": "2012-10-17", "Statement": statements}


TRUST = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                                 "Action": "sts:AssumeRole"}]}


#: EventBridge's schedule expressions: rate(1 minute), rate(10 minutes), ...; cron(6 fields)
_RATE = re.compile(r"rate\((\d+) (minute|hour|day)(s?)\)")
_CRON = re.compile(r"cron\(([^()]*)\)")
_CRON_FIELD = re.compile(r"[0-9A-Za-z*?,/#-]+")


def schedule_problem(expression: str) -> str | None:
    """Why EventBridge would refuse ``expression`` as a schedule (None: its syntax is right). A
    real deploy found out at PutRule, after creating the role and the Lambda (trials, h121)."""
    rate = _RATE.fullmatch(expression)
    if rate:
        value, plural = int(rate.group(1)), rate.group(3) == "s"
        if value < 1:
            return "a rate is at least 1"
        if plural != (value > 1):  # EventBridge's own rule: rate(1 minutes) and rate(5 minute) are refused
            return f"say rate({value} {rate.group(2)}{'s' if value > 1 else ''}) (singular for 1, plural above)"
        return None
    cron = _CRON.fullmatch(expression)
    if cron:
        fields = cron.group(1).split()
        if len(fields) != 6:
            return f"a cron expression has 6 fields (minutes hours day-of-month month day-of-week year), got {len(fields)}"
        bad = [f for f in fields if not _CRON_FIELD.fullmatch(f)]
        if bad:
            return f"{bad[0]!r} is not a cron field"
        if (fields[2] == "?") == (fields[4] == "?"):
            return "exactly one of day-of-month and day-of-week must be ?"
        return None
    return ("not an EventBridge schedule: give rate(N minutes|hours|days) or cron(minutes hours day-of-month "
            "month day-of-week year), e.g. rate(10 minutes) or cron(0/10 * * * ? *)")


def deploy_requests(region: str, account: str, buckets: list[str], settings: Settings, schedule: str = "rate(10 minutes)",
                    zip_bytes: bytes | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """``(service, operation, request)`` in the order :func:`deploy` sends them."""
    role = f"{FUNCTION}-role"
    role_arn = f"arn:aws:iam::{account}:role/{role}"
    function_arn = f"arn:aws:lambda:{region}:{account}:function:{FUNCTION}"
    rule_arn = f"arn:aws:events:{region}:{account}:rule/{FUNCTION}"
    return [
        ("iam", "CreateRole", {"RoleName": role, "AssumeRolePolicyDocument": json.dumps(TRUST),
                               "Description": "refinery watchdog: stops stalled refinery SageMaker jobs"}),
        ("iam", "PutRolePolicy", {"RoleName": role, "PolicyName": f"{FUNCTION}-policy",
                                  "PolicyDocument": json.dumps(policy_document(region, account, buckets, settings.job_prefix))}),
        ("lambda", "CreateFunction", {
            "FunctionName": FUNCTION, "Runtime": RUNTIME, "Role": role_arn, "Handler": HANDLER,
            "Code": {"ZipFile": zip_bytes if zip_bytes is not None else package_zip()},
            "Description": "refinery watchdog (refinery watchdog deploy)", "Timeout": 300, "MemorySize": 256,
            "Environment": {"Variables": settings.environment()}, "Tags": {"refinery:component": "watchdog"}}),
        ("events", "PutRule", {"Name": FUNCTION, "ScheduleExpression": schedule, "State": "ENABLED",
                               "Description": "runs the refinery watchdog"}),
        ("lambda", "AddPermission", {"FunctionName": FUNCTION, "StatementId": f"{FUNCTION}-schedule",
                                     "Action": "lambda:InvokeFunction", "Principal": "events.amazonaws.com",
                                     "SourceArn": rule_arn}),
        ("events", "PutTargets", {"Rule": FUNCTION, "Targets": [{"Id": FUNCTION, "Arn": function_arn}]}),
    ]


def validate(service: str, operation: str, request: dict[str, Any]) -> None:
    """Check a request against botocore's model of the operation (raises ParamValidationError)."""
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model(service)
    validate_parameters(request, model.operation_model(operation).input_shape)


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


def deploy(requests: list[tuple[str, str, dict[str, Any]]], clients: dict[str, Any],
           sleep: Callable[[float], None] = time.sleep, role_wait_s: float = 10.0) -> dict[str, Any]:
    """Send the deployment requests (``clients``: service -> boto3 client), validated first. An
    existing role or function is updated in place, so deploying twice is safe."""
    from botocore.exceptions import ClientError

    for service, operation, request in requests:
        validate(service, operation, request)
    sent: dict[str, Any] = {}
    for service, operation, request in requests:
        client = clients[service]
        try:
            sent[operation] = with_backoff(lambda: getattr(client, _snake(operation))(**request), sleep=sleep)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if operation == "CreateRole" and code == "EntityAlreadyExists":
                sent[operation] = client.get_role(RoleName=request["RoleName"])
            elif operation == "CreateFunction" and code == "ResourceConflictException":
                client.update_function_code(FunctionName=request["FunctionName"], ZipFile=request["Code"]["ZipFile"])
                # Lambda refuses a configuration update while the code update is in progress
                # ("ResourceConflictException: An update is in progress"): the redeploy failed with
                # new code and old settings (found by adversarial testing)
                _wait_until_updated(client, request["FunctionName"], sleep)
                sent[operation] = client.update_function_configuration(
                    FunctionName=request["FunctionName"], Environment=request["Environment"], Role=request["Role"])
                _wait_until_updated(client, request["FunctionName"], sleep)
            elif operation == "AddPermission" and code == "ResourceConflictException":
                sent[operation] = {"existing": True}
            else:
                raise
        if operation == "CreateRole" and role_wait_s:
            sleep(role_wait_s)  # a new role takes a few seconds before Lambda may assume it
    return {"function": FUNCTION, "rule": FUNCTION, "operations": list(sent)}


def _wait_until_updated(client: Any, name: str, sleep: Callable[[float], None], polls: int = 60) -> None:
    """Until the function's last update is no longer in progress (what boto3's ``function_updated``
    waiter checks), polling every 2 s for at most two minutes."""
    for _ in range(polls):
        state = client.get_function_configuration(FunctionName=name)
        if state.get("LastUpdateStatus", "Successful") != "InProgress" and state.get("State", "Active") != "Pending":
            return
        sleep(2.0)
    raise TimeoutError(f"Lambda function {name} still updating after {2 * polls} s; deploy again later")


def printable(requests: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The requests as JSON-able dicts (the zip as its size and SHA-256)."""
    import hashlib

    out = []
    for service, operation, request in requests:
        shown = json.loads(json.dumps(request, default=lambda b: f"<{len(b)} bytes, sha256 "
                                                                  f"{hashlib.sha256(b).hexdigest()[:16]}>"))
        out.append({"service": service, "operation": operation, "request": shown})
    return out
