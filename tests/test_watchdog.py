"""The unattended watchdog: its handler against moto's SageMaker and S3 (a stale job is stopped; a
job still starting or making progress is left alone; throttled calls are retried), its deployment
requests validated with botocore and sent to moto's IAM, Lambda and EventBridge, and its package
importable with nothing but the standard library and boto3."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.stub import Stubber
from typer.testing import CliRunner

from refinery.launch import watchdog
from refinery.launch.sagemaker import JobSpec, JobStatus, build_request, submit
from refinery.launch.watch import Progress, Watcher

ACCOUNT = "123456789012"
IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/refinery:abc"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/refinery-sagemaker"


def _job(sm, name: str, output: str, pipeline: str | None = None) -> None:
    """A processing job as refinery submits it; ``pipeline``: a pipeline step's, whose containers
    announce themselves under the pipeline's name (REFINERY_JOB_NAME), not the job's."""
    spec = JobSpec(name=pipeline or name, kind="processing", image=IMAGE, role_arn=ROLE, input_uri="s3://crawl/cc",
                   output_uri=output, config_uri=f"{output}/_jobs/x/config.yaml", step="filter", instances=2,
                   region="us-east-1", passes=["filter"], stubs_uri=f"{output}/_jobs/x/shards")
    operation, request = build_request(spec)
    submit(sm, operation, {**request, "ProcessingJobName": name})
    from moto.sagemaker.models import sagemaker_backends

    sagemaker_backends[ACCOUNT]["us-east-1"].processing_jobs[name].processing_job_status = "InProgress"


def test_handler_stops_the_stale_job_and_leaves_starting_and_progressing_jobs_alone(offline_aws):
    from moto import mock_aws

    with mock_aws():
        sm = boto3.client("sagemaker", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="runs")
        stale, copying, busy = ("refinery-stale-20260101-000000", "refinery-copying-20260101-000000",
                                "refinery-busy-20260101-000000")
        for name in (stale, copying, busy):
            _job(sm, name, f"s3://runs/{name}")
        _job(sm, "someone-elses-job", "s3://runs/other")  # not refinery's: never judged
        # how `refinery launch` runs: a Pipeline's step job, named by SageMaker (the watchdog saw
        # only refinery-* names: found by adversarial testing); and another team's pipeline job
        piped, pipeline = "pipelines-kb5bcmrv3dw9-filter-Qx1Ab2Cd3E", "refinery-cc-20260101-000000"
        _job(sm, piped, f"s3://runs/{piped}", pipeline)
        # a healthy pipeline step: its containers announced themselves under the pipeline's name,
        # and it writes markers (stopped by the watchdog once the start grace was over: found by
        # adversarial testing)
        healthy, healthy_pipeline = "pipelines-hh7-filter-Zz9Yy8Xx7W", "refinery-web-20260101-000000"
        _job(sm, healthy, f"s3://runs/{healthy}", healthy_pipeline)
        sm.create_processing_job(
            ProcessingJobName="pipelines-zz9-train-other", RoleArn=ROLE,
            AppSpecification={"ImageUri": IMAGE},
            ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5}})
        from moto.sagemaker.models import sagemaker_backends

        sagemaker_backends[ACCOUNT]["us-east-1"].processing_jobs["pipelines-zz9-train-other"].processing_job_status = "InProgress"
        s3.put_object(Bucket="runs", Key=f"{piped}/_jobs/{pipeline}/started/algo-1.json", Body=b"{}")
        s3.put_object(Bucket="runs", Key=f"{piped}/filter/stats/a.json", Body=b'{"docs_read": 10}')
        # the stale job: its container started and finished a shard, then nothing
        s3.put_object(Bucket="runs", Key=f"{stale}/_jobs/{stale}/started/algo-1.json", Body=b"{}")
        s3.put_object(Bucket="runs", Key=f"{stale}/filter/stats/a.json", Body=b'{"docs_read": 10}')
        time.sleep(4.2)
        # the busy job writes markers right now; the copying job's containers have not started
        s3.put_object(Bucket="runs", Key=f"{busy}/_jobs/{busy}/started/algo-1.json", Body=b"{}")
        s3.put_object(Bucket="runs", Key=f"{busy}/filter/stats/a.json", Body=b'{"docs_read": 10}')
        s3.put_object(Bucket="runs", Key=f"{copying}/_jobs/{copying}/algo-1.log", Body=b"logs are no progress")
        s3.put_object(Bucket="runs", Key=f"{healthy}/_jobs/{healthy_pipeline}/started/algo-1.json", Body=b"{}")
        s3.put_object(Bucket="runs", Key=f"{healthy}/filter/stats/a.json", Body=b'{"docs_read": 10}')

        settings = watchdog.Settings(stall_minutes=3 / 60, start_grace_minutes=10)
        gets: list[str] = []
        s3.meta.events.register("before-call.s3.GetObject", lambda **kw: gets.append(kw["params"]["Key"]))
        result = watchdog.check_jobs(sm, s3, settings)
        assert gets == []  # the listing decides: a fresh Lambda read every marker of a crawl each run
        assert sorted(j["job"] for j in result["jobs"]) == sorted([stale, copying, busy, piped, healthy])
        assert sorted(result["stopped"]) == sorted([stale, piped]) and sorted(result["stalled"]) == sorted([stale, piped])
        by_job = {j["job"]: j for j in result["jobs"]}
        assert by_job[copying]["phase"] == "starting" and by_job[busy]["phase"] == "running"
        assert by_job[healthy]["phase"] == "running"
        statuses = {n: sm.describe_processing_job(ProcessingJobName=n)["ProcessingJobStatus"]
                    for n in (stale, copying, busy, piped, healthy, "pipelines-zz9-train-other")}
        assert statuses == {stale: "Stopped", copying: "InProgress", busy: "InProgress", piped: "Stopped",
                            healthy: "InProgress", "pipelines-zz9-train-other": "InProgress"}

        # past the start grace, a job whose containers never started is stopped too; report-only stops nothing
        report_only = watchdog.Settings(stall_minutes=3 / 60, start_grace_minutes=1 / 60, dry_run=True)
        result = watchdog.check_jobs(sm, s3, report_only)
        assert copying in result["stalled"] and result["stopped"] == []
        assert healthy not in result["stalled"] and busy not in result["stalled"]


def test_a_training_job_still_downloading_is_never_stalled():
    created = datetime(2026, 1, 1, tzinfo=timezone.utc)
    job = JobStatus("refinery-t", "ray", "arn", "InProgress", created, None, None, 2, "ml.c5.18xlarge", {}, {}, None,
                    secondary_status="Downloading")
    watcher = Watcher(None, None, "refinery-t", stall_minutes=30, start_grace_minutes=60)
    idle, stalled, phase = watcher.judge(job, Progress(), created + timedelta(hours=10))
    assert (stalled, phase) == (False, "starting (Downloading)") and idle == 36000
    job.secondary_status = "Training"
    assert watcher.judge(job, Progress(), created + timedelta(hours=10))[1] is True
    # once the containers announced themselves, the clock counts from the last write
    p = Progress(containers_started=created + timedelta(hours=9, minutes=50), last_write=created + timedelta(hours=9, minutes=55))
    assert watcher.judge(job, p, created + timedelta(hours=10))[:2] == (300, False)


def test_throttled_calls_are_retried_with_backoff(offline_aws):
    sm = boto3.client("sagemaker", region_name="us-east-1")
    waits: list[float] = []
    with Stubber(sm) as stub:
        stub.add_client_error("list_processing_jobs", "ThrottlingException", "Rate exceeded")
        stub.add_client_error("list_processing_jobs", "ThrottlingException", "Rate exceeded")
        stub.add_response("list_processing_jobs", {"ProcessingJobSummaries": []})
        stub.add_response("list_training_jobs", {"TrainingJobSummaries": []})
        assert watchdog.running_jobs(sm, sleep=waits.append) == []
        stub.assert_no_pending_responses()
    assert len(waits) == 2 and all(0 <= w <= 20 for w in waits)
    # other errors are not retried
    with Stubber(sm) as stub:
        stub.add_client_error("list_processing_jobs", "AccessDeniedException", "no")
        with pytest.raises(Exception, match="AccessDenied"):
            watchdog.running_jobs(sm, sleep=waits.append)
    assert len(waits) == 2


def test_deployment_requests_validate_and_deploy_to_moto(offline_aws):
    from moto import mock_aws

    settings = watchdog.Settings(stall_minutes=45, start_grace_minutes=120)
    requests = watchdog.deploy_requests("us-east-1", ACCOUNT, ["runs"], settings, "rate(5 minutes)")
    assert [op for _, op, _ in requests] == ["CreateRole", "PutRolePolicy", "CreateFunction", "PutRule",
                                             "AddPermission", "PutTargets"]
    for service, operation, request in requests:
        watchdog.validate(service, operation, request)
    policy = json.loads(requests[1][2]["PolicyDocument"])
    stops = [s for s in policy["Statement"] if "sagemaker:StopProcessingJob" in s["Action"]]
    assert [(s["Resource"], s.get("Condition")) for s in stops] == [
        ([f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:processing-job/refinery-*",
          f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/refinery-*"], None),
        ([f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:processing-job/pipelines-*",
          f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/pipelines-*"],
         {"Null": {"aws:ResourceTag/refinery:output": "false"}})]
    assert not any(a.endswith(("*", ":PutObject", ":DeleteObject")) for s in policy["Statement"] for a in s["Action"])
    with mock_aws():
        clients = {s: boto3.client(s, region_name="us-east-1") for s in ("iam", "lambda", "events")}
        for _ in range(2):  # deploying again updates in place
            watchdog.deploy(requests, clients, role_wait_s=0)
        fn = clients["lambda"].get_function(FunctionName=watchdog.FUNCTION)["Configuration"]
        assert fn["Handler"] == watchdog.HANDLER and fn["Environment"]["Variables"]["REFINERY_WATCHDOG_STALL_MINUTES"] == "45"
        rule = clients["events"].describe_rule(Name=watchdog.FUNCTION)
        assert rule["ScheduleExpression"] == "rate(5 minutes)" and rule["State"] == "ENABLED"
        targets = clients["events"].list_targets_by_rule(Rule=watchdog.FUNCTION)["Targets"]
        assert targets[0]["Arn"] == fn["FunctionArn"]


def test_a_redeploy_waits_for_the_code_update_before_the_configuration():
    """Real Lambda refuses UpdateFunctionConfiguration while UpdateFunctionCode is in progress: the
    redeploy waits on GetFunctionConfiguration's LastUpdateStatus (a Stubber: moto updates at once)."""
    from botocore.stub import ANY

    settings = watchdog.Settings(stall_minutes=30, start_grace_minutes=120)
    requests = [r for r in watchdog.deploy_requests("us-east-1", ACCOUNT, ["runs"], settings, "rate(5 minutes)")
                if r[1] == "CreateFunction"]
    lam = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    waits: list[float] = []
    with Stubber(lam) as stub:
        stub.add_client_error("create_function", "ResourceConflictException", "exists")
        stub.add_response("update_function_code", {}, {"FunctionName": watchdog.FUNCTION, "ZipFile": ANY})
        for status in ("InProgress", "InProgress", "Successful"):
            stub.add_response("get_function_configuration", {"LastUpdateStatus": status},
                              {"FunctionName": watchdog.FUNCTION})
        stub.add_response("update_function_configuration", {}, {"FunctionName": watchdog.FUNCTION, "Environment": ANY,
                                                                "Role": ANY})
        stub.add_response("get_function_configuration", {"LastUpdateStatus": "Successful"},
                          {"FunctionName": watchdog.FUNCTION})
        watchdog.deploy(requests, {"lambda": lam}, sleep=waits.append, role_wait_s=0)
        stub.assert_no_pending_responses()
    assert waits == [2.0, 2.0]


def test_cli_dry_run_prints_the_validated_requests():
    from refinery.cli import app

    result = CliRunner().invoke(app, ["watchdog", "deploy", "--bucket", "s3://runs/x", "--dry-run",
                                      "--region", "eu-west-1", "--stall-minutes", "30"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert [r["operation"] for r in printed][:3] == ["CreateRole", "PutRolePolicy", "CreateFunction"]
    assert printed[2]["request"]["Code"]["ZipFile"].startswith("<")  # the package, not its bytes
    # no --account: the ARNs' stand-in account is said to be one (it read as the user's: trials, h121)
    assert "arn:aws:iam::123456789012:role/" in printed[2]["request"]["Role"]
    assert result.stderr.strip() == ("note: no --account: the ARNs below show the stand-in account 123456789012; "
                                     "a deploy asks STS for yours")
    # what EventBridge takes is taken (refusals: tests/test_cli_errors.py)
    for schedule in ("rate(1 minute)", "rate(2 hours)", "rate(10 minutes)", "cron(0/10 * * * ? *)", "cron(0 12 ? * MON-FRI *)"):
        assert watchdog.schedule_problem(schedule) is None, schedule


def test_package_imports_with_stdlib_and_boto3_only(tmp_path):
    with zipfile.ZipFile(io.BytesIO(watchdog.package_zip())) as z:
        assert sorted(z.namelist()) == sorted(watchdog.PACKAGE_FILES)
        z.extractall(tmp_path)
    # the Lambda runtime has boto3 and nothing else of ours: refuse the heavy imports
    probe = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('yaml', 'pydantic', 'pyarrow', 'numpy', 'typer', 'rich', 'ray'):\n"
        "            raise ImportError('not in the Lambda runtime: ' + name)\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "import refinery.launch.watchdog as w\n"
        f"assert w.__file__.startswith({str(tmp_path)!r}), w.__file__\n"
        "print(w.handler.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "handler"
