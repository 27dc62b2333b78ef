"""SageMaker launchers without AWS: request dicts checked against botocore's service model
(Stubber + our stricter validator), the create/describe/stop flow under moto (``mock_aws`` and a
real moto server on 127.0.0.1), the watchdog, the processing entrypoint on two simulated
instances with a whole pipeline's S3 round trip, and the cost model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
import typer
import yaml
from _scale_fixtures import cc_spec, copy_cc_docs, run_outputs, upload_dir
from botocore.exceptions import ParamValidationError
from botocore.stub import Stubber
from typer.testing import CliRunner

from refinery.cli_scale import register
from refinery.config import parse_config
from refinery.io import fs
from refinery.launch import package, plan
from refinery.launch.launcher import launch
from refinery.launch.sagemaker import (
    JobSpec,
    RequestError,
    build_request,
    describe,
    job_name,
    processing_request,
    submit,
    training_request,
    validate_request,
)
from refinery.launch.watch import EXIT_STALLED, Watcher
from refinery.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/refinery"
ROLE = "arn:aws:iam::123456789012:role/refinery-sagemaker"
ACCOUNT = "123456789012"


def _spec(**kw) -> JobSpec:
    base = dict(name="refinery-pipeline-test-20260101-000000", kind="processing", image=f"{IMAGE}:abc123",
                role_arn=ROLE, input_uri="s3://crawl-bucket/cc/2024-10", output_uri="s3://out-bucket/runs/r1",
                config_uri="s3://out-bucket/runs/r1/_jobs/x/config.yaml", step="pipeline", instances=8,
                region="us-east-1", tags={"refinery:git-sha": "f" * 40}, env={"REFINERY_GIT_SHA": "f" * 40})
    base.update(kw)
    return JobSpec(**base)


@pytest.fixture(autouse=True)
def _keep_root_logging():
    """The CLI commands configure logging onto CliRunner's (then closed) stderr: undo it."""
    import logging

    root = logging.getLogger()
    saved = list(root.handlers), root.level
    yield
    root.handlers[:], _ = saved[0], root.setLevel(saved[1])


@pytest.fixture()
def offline_aws(monkeypatch):
    """Fake credentials, no endpoint override: clients aim at AWS, which mock_aws/Stubber intercept."""
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREFINERYTESTKEY03")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "refinery-test-secret-offline")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


# -- requests against the service model ----------------------------------------------------------------
def test_processing_request_passes_the_api_model_and_shards_the_input(offline_aws):
    operation, request = build_request(_spec())
    assert operation == "CreateProcessingJob"
    s3_input = request["ProcessingInputs"][0]["S3Input"]
    assert s3_input["S3DataDistributionType"] == "ShardedByS3Key" and s3_input["S3DataType"] == "S3Prefix"
    assert s3_input["S3Uri"] == "s3://crawl-bucket/cc/2024-10/"  # a prefix, not "2024-10*"
    assert request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3UploadMode"] == "Continuous"
    assert request["ProcessingResources"]["ClusterConfig"] == {
        "InstanceCount": 8, "InstanceType": "ml.c5.18xlarge", "VolumeSizeInGB": 100}
    env = request["Environment"]
    assert env["REFINERY_INPUT"] == s3_input["LocalPath"] and env["REFINERY_OUTPUT"] == "s3://out-bucket/runs/r1"
    assert env["REFINERY_GIT_SHA"] == "f" * 40
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["refinery:git-sha"] == "f" * 40 and tags["refinery:output"] == "s3://out-bucket/runs/r1"

    sm = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(sm) as stub:  # the Stubber runs botocore's parameter validation on the real call
        arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:processing-job/{request['ProcessingJobName']}"
        stub.add_response("create_processing_job", {"ProcessingJobArn": arn}, expected_params=request)
        assert submit(sm, operation, request) == arn
        stub.assert_no_pending_responses()


def test_training_request_with_spot_checkpoint_and_shared_ray_token(offline_aws):
    spec = _spec(kind="ray", step="dedup", instances=4, spot=True, max_runtime_s=7200,
                 checkpoint_uri="s3://out-bucket/ckpt/r1")
    operation, request = build_request(spec)
    assert operation == "CreateTrainingJob"
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400}
    assert request["CheckpointConfig"] == {"S3Uri": "s3://out-bucket/ckpt/r1", "LocalPath": "/opt/ml/checkpoints"}
    assert request["AlgorithmSpecification"]["ContainerEntrypoint"][-1] == "train"
    env = request["Environment"]
    assert env["RAY_AUTH_MODE"] == "token" and len(env["RAY_AUTH_TOKEN"]) == 48
    assert env["REFINERY_INPUT"] == "s3://crawl-bucket/cc/2024-10"  # the cluster reads S3 itself
    assert training_request(spec)["Environment"]["RAY_AUTH_TOKEN"] != env["RAY_AUTH_TOKEN"]  # fresh per job

    sm = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(sm) as stub:
        arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/{request['TrainingJobName']}"
        stub.add_response("create_training_job", {"TrainingJobArn": arn}, expected_params=request)
        assert submit(sm, operation, request) == arn
    with pytest.raises(RequestError, match="at least --max-runtime"):
        training_request(_spec(kind="ray", spot=True, max_runtime_s=7200, max_wait_s=3600))


def test_validator_catches_what_botocore_skips(offline_aws):
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateProcessingJob").input_shape
    bad_type = processing_request(_spec(instance_type="ml.c5.19xlarge"))
    validate_parameters(bad_type, shape)  # botocore alone lets an unknown instance type through...
    with pytest.raises(RequestError, match="InstanceType.*not one of"):  # ...we do not
        validate_request("CreateProcessingJob", bad_type)
    with pytest.raises(RequestError, match="ProcessingJobName.*does not match"):
        validate_request("CreateProcessingJob", processing_request(_spec(name="bad_name!")))
    with pytest.raises(RequestError, match="at most 256"):
        validate_request("CreateProcessingJob", processing_request(_spec(env={"REFINERY_X": "x" * 300})))
    with pytest.raises(RequestError, match="above the maximum 100"):
        validate_request("CreateProcessingJob", processing_request(_spec(instances=101)))
    missing = processing_request(_spec())
    del missing["RoleArn"]
    with pytest.raises(RequestError, match="RoleArn"):
        validate_request("CreateProcessingJob", missing)
    # and the Stubber-wrapped client rejects a wrongly typed request before anything is sent
    sm = boto3.client("sagemaker", region_name="us-east-1")
    wrong = processing_request(_spec())
    wrong["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = "8"
    with Stubber(sm) as stub:
        stub.add_response("create_processing_job", {"ProcessingJobArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:x"})
        with pytest.raises(ParamValidationError, match="InstanceCount"):
            sm.create_processing_job(**wrong)


def test_job_names_fit_sagemaker_rules():
    name = job_name("stage:language_id", "refinedweb with a very long configuration name indeed", now=0)
    assert len(name) <= 63 and name.startswith("refinery-stage-language-id-refinedweb")
    assert name.endswith("-19700101-000000")
    validate_request("CreateProcessingJob", processing_request(_spec(name=name)))


# -- create / describe / stop under mock_aws ---------------------------------------------------------------
def _backend_job(name: str, kind: str = "processing"):
    from moto.sagemaker.models import sagemaker_backends

    backend = sagemaker_backends[ACCOUNT]["us-east-1"]
    return (backend.processing_jobs if kind == "processing" else backend.training_jobs)[name]


def test_create_describe_stop_and_watch_a_stalled_job_under_mock_aws(offline_aws):
    from moto import mock_aws

    with mock_aws():
        sm = boto3.client("sagemaker", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="out-bucket")
        # a marker from an earlier run of the same output: not this job's progress
        s3.put_object(Bucket="out-bucket", Key="runs/r1/stats/old-shard.json", Body=b'{"docs_read": 1000}')
        time.sleep(1.1)
        operation, request = build_request(_spec(tags={"refinery:total-shards": "3"}))
        arn = submit(sm, operation, request)
        status = describe(sm, request["ProcessingJobName"])
        assert (status.arn, status.kind) == (arn, "processing")
        assert status.output_uri == "s3://out-bucket/runs/r1"  # from the job's tags

        _backend_job(status.name).processing_job_status = "InProgress"  # the job runs
        for shard, docs in (("a", 120), ("b", 80)):
            s3.put_object(Bucket="out-bucket", Key=f"runs/r1/stats/{shard}.json", Body=json.dumps({"docs_read": docs}))
        s3.put_object(Bucket="out-bucket", Key="runs/r1/_jobs/x/algo-1.log", Body=b"log lines are not progress")
        created = status.created

        lively = Watcher(sm, s3, status.name, stall_minutes=30, clock=lambda: created + timedelta(minutes=20)).poll()
        assert not lively.stalled and lively.action is None
        assert (lively.progress.markers, lively.progress.new_markers, lively.progress.docs_read) == (3, 2, 200)
        assert lively.total_shards == 3 and "shards 3/3 (+2 this job)" in lively.line()
        assert describe(sm, status.name).status == "InProgress"

        lines: list[str] = []
        code = Watcher(sm, s3, status.name, stall_minutes=30,
                       clock=lambda: created + timedelta(hours=2)).run(echo=lines.append, sleep=lambda s: None)
        assert code == EXIT_STALLED and "STOPPED" in lines[-1]
        assert describe(sm, status.name).status == "Stopped"

        report_only = Watcher(sm, s3, status.name, stall_minutes=30, stop_stalled=False,
                              clock=lambda: created + timedelta(hours=2))
        _backend_job(status.name).processing_job_status = "InProgress"
        assert report_only.poll().stalled and describe(sm, status.name).status == "InProgress"

        # a training job: created and described under moto too
        t_op, t_req = build_request(_spec(kind="ray", name="refinery-dedup-test-20260101-000000", step="dedup"))
        submit(sm, t_op, t_req)
        t_status = describe(sm, t_req["TrainingJobName"])
        assert (t_status.kind, t_status.status) == ("ray", "Completed")


def test_watch_stops_a_stalled_training_job(offline_aws):
    """moto has no StopTrainingJob: the Stubber plays SageMaker, with responses checked against
    the service model."""
    from datetime import datetime, timezone

    from moto import mock_aws

    name = "refinery-dedup-x-20260101-000000"
    arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/{name}"
    started = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="out-bucket")
        sm = boto3.client("sagemaker", region_name="us-east-1")
        with Stubber(sm) as stub:
            stub.add_client_error("describe_processing_job", "ValidationException", "not found",
                                  expected_params={"ProcessingJobName": name})
            stub.add_response("describe_training_job", {
                "TrainingJobName": name, "TrainingJobArn": arn, "TrainingJobStatus": "InProgress",
                "SecondaryStatus": "Training", "CreationTime": started, "TrainingStartTime": started,
                "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": IMAGE},
                "ResourceConfig": {"InstanceType": "ml.c5.18xlarge", "InstanceCount": 2, "VolumeSizeInGB": 100},
                "StoppingCondition": {"MaxRuntimeInSeconds": 3600}, "ModelArtifacts": {"S3ModelArtifacts": "s3://o/m"},
                "Environment": {"REFINERY_OUTPUT": "s3://out-bucket/runs/dedup"},
            }, expected_params={"TrainingJobName": name})
            stub.add_response("list_tags", {"Tags": []}, expected_params={"ResourceArn": arn})
            stub.add_response("stop_training_job", {}, expected_params={"TrainingJobName": name})
            poll = Watcher(sm, s3, name, stall_minutes=45, clock=lambda: started + timedelta(minutes=46)).poll()
            stub.assert_no_pending_responses()
    assert poll.stalled and poll.action == "stopped" and poll.progress.markers == 0


# -- the launcher and the CLI against a moto server on 127.0.0.1 ------------------------------------------
def _cli():
    app = typer.Typer()
    register(app)
    return app


def test_launch_dry_run_prints_a_valid_request_and_the_image_build(tmp_path, s3_bucket):
    upload_dir(copy_cc_docs(tmp_path / "in"), f"{s3_bucket}/crawl")
    args = ["launch", str(ROOT / "configs" / "refinedweb.yaml"), "--input", f"{s3_bucket}/crawl",
            "--output", f"{s3_bucket}/runs/r1", "--image", IMAGE, "--role", ROLE, "--instances", "4",
            "--tag", "team=data", "--dry-run"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    request = json.loads(result.stdout)
    validate_request("CreateProcessingJob", request)
    version = package.code_version()
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["refinery:git-sha"] == version.sha and len(version.sha) == 40
    assert tags["refinery:total-shards"] == "3" and tags["team"] == "data"
    assert request["Environment"]["REFINERY_GIT_SHA"].startswith(version.sha)
    assert request["AppSpecification"]["ImageUri"].startswith(f"{IMAGE}:{version.short}")
    assert request["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 4
    if not package.docker_available():  # this machine: a docker client, no engine
        assert "docker build -f" in result.stderr and "jobs/Dockerfile" in result.stderr
        assert "aws ecr get-login-password --region us-east-1" in result.stderr
    assert not fs.exists(request["Environment"]["REFINERY_CONFIG_URI"])  # a dry run uploads nothing

    # a stage of the config -> that stage alone; dedup -> a Training job with a Ray cluster
    one = CliRunner().invoke(_cli(), args[:2] + ["--stage", "language_id"] + args[2:])
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout)["ProcessingJobName"].startswith("refinery-language-id-refinedweb-language-id")
    dedup = CliRunner().invoke(_cli(), ["launch", str(ROOT / "configs" / "dedup.yaml"), "--stage", "dedup",
                                        "--input", f"{s3_bucket}/runs/r1", "--output", f"{s3_bucket}/runs/r2",
                                        "--image", IMAGE, "--role", ROLE, "--instances", "3", "--spot",
                                        "--checkpoint", f"{s3_bucket}/ckpt", "--dry-run"])
    assert dedup.exit_code == 0, dedup.output
    t = json.loads(dedup.stdout)
    validate_request("CreateTrainingJob", t)
    assert t["ResourceConfig"]["InstanceCount"] == 3 and t["EnableManagedSpotTraining"] is True
    assert t["Environment"]["RAY_AUTH_TOKEN"] == "<redacted>"  # printed requests hide the token
    bad = CliRunner().invoke(_cli(), args[:2] + ["--stage", "no_such_stage"] + args[2:])
    assert bad.exit_code == 2 and "no_such_stage" in bad.stderr


def test_launch_without_docker_engine_refuses_unless_image_exists(tmp_path, s3_bucket, monkeypatch):
    monkeypatch.setattr(package, "docker_available", lambda: False)
    kw = dict(config_path=ROOT / "configs" / "refinedweb.yaml", stage="pipeline", input_uri=f"{s3_bucket}/in",
              output_uri=f"{s3_bucket}/out", image=IMAGE, role_arn=ROLE)
    with pytest.raises(Exception, match="(?s)no Docker engine.*docker build -f.*--no-build"):
        launch(**kw)
    with pytest.raises(Exception, match="needs a Docker engine"):
        launch(**kw, build=True)


def test_launch_and_watch_through_a_moto_server(tmp_path, s3_bucket, s3_server):
    upload_dir(copy_cc_docs(tmp_path / "in"), f"{s3_bucket}/crawl")
    sm = boto3.client("sagemaker", endpoint_url=s3_server, region_name="us-east-1")
    result = launch(ROOT / "configs" / "refinedweb.yaml", "pipeline", f"{s3_bucket}/crawl", f"{s3_bucket}/runs/r1",
                    IMAGE, ROLE, instances=2, build=False, sagemaker_client=sm)
    config_uri = result.request["Environment"]["REFINERY_CONFIG_URI"]
    assert yaml.safe_load(fs.read_bytes(config_uri))["name"] == "refinedweb"  # uploaded for the job
    status = describe(sm, result.job_name)
    assert status.arn == result.arn and status.output_uri == f"{s3_bucket}/runs/r1"

    done = CliRunner().invoke(_cli(), ["watch", result.job_name, "--once", "--no-cloudwatch"])
    assert done.exit_code == 0 and "Completed" in done.stdout, done.output  # moto's jobs complete at once

    _backend_job(result.job_name).processing_job_status = "InProgress"
    time.sleep(0.5)
    stalled = CliRunner().invoke(_cli(), ["watch", result.job_name, "--stall-minutes", "0.005", "--no-cloudwatch"])
    assert stalled.exit_code == EXIT_STALLED and "STOPPED" in stalled.stdout, stalled.output
    assert describe(sm, result.job_name).status == "Stopped"


# -- a whole pipeline through S3, and the processing entrypoint on two instances -----------------------------
def test_pipeline_s3_round_trip_and_processing_entrypoint_on_two_instances(tmp_path, s3_bucket):
    data = copy_cc_docs(tmp_path / "in")
    upload_dir(data, f"{s3_bucket}/crawl")
    spec = cc_spec(name="s3-roundtrip")

    # the whole pipeline reading and writing S3, against the same pipeline on local disk
    summary = run_pipeline(parse_config(spec), f"{s3_bucket}/crawl", f"{s3_bucket}/runs/direct", workers=2,
                           progress=False)
    assert not summary.failed
    local = run_pipeline(parse_config(spec), str(data), str(tmp_path / "local"), workers=2, progress=False)
    assert not local.failed
    from refinery.stats.funnel import load_run_stats

    assert load_run_stats(f"{s3_bucket}/runs/direct")["docs_read"] == 717
    assert run_outputs(f"{s3_bucket}/runs/direct") == run_outputs(str(tmp_path / "local"))

    # two Processing-job instances: ShardedByS3Key gave algo-1 one file and algo-2 the other two
    fs.write_bytes(f"{s3_bucket}/runs/sm/_jobs/job1/config.yaml", yaml.safe_dump(spec).encode())
    files = sorted(data.iterdir())
    procs = {}
    for host, mine in (("algo-1", files[:1]), ("algo-2", files[1:])):
        local_in = tmp_path / host / "input"
        local_in.mkdir(parents=True)
        for f in mine:
            (local_in / f.name).write_bytes(f.read_bytes())
        rc = tmp_path / host / "resourceconfig.json"
        rc.write_text(json.dumps({"current_host": host, "hosts": ["algo-1", "algo-2"]}))
        env = dict(os.environ, REFINERY_STEP="pipeline", REFINERY_CONFIG_URI=f"{s3_bucket}/runs/sm/_jobs/job1/config.yaml",
                   REFINERY_INPUT=str(local_in), REFINERY_OUTPUT=f"{s3_bucket}/runs/sm", REFINERY_JOB_NAME="job1",
                   REFINERY_GIT_SHA="cafe", REFINERY_WORKERS="1", REFINERY_RESOURCECONFIG=str(rc),
                   REFINERY_LOG_DIR=str(tmp_path / host / "logs"))
        procs[host] = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "entrypoint.py"), "processing"], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outputs = {h: p.communicate(timeout=300)[0] for h, p in procs.items()}
    assert {h: p.returncode for h, p in procs.items()} == {"algo-1": 0, "algo-2": 0}, outputs
    reports = {h: json.loads(fs.read_bytes(f"{s3_bucket}/runs/sm/_jobs/job1/{h}.json")) for h in procs}
    assert reports["algo-1"]["shards"] == 1 and reports["algo-2"]["shards"] == 2
    assert all(r["ok"] and r["git_sha"] == "cafe" for r in reports.values())
    assert (tmp_path / "algo-2" / "logs" / "algo-2.log").read_text()  # the Continuous-upload log file
    # the instances' shards together are the same run: same kept/removed rows and shard stats
    sm_run, direct = run_outputs(f"{s3_bucket}/runs/sm"), run_outputs(f"{s3_bucket}/runs/direct")
    assert {k: v for k, v in sm_run.items() if k != "_run"} == {k: v for k, v in direct.items() if k != "_run"}
    # and the watchdog's progress count sees all three markers
    progress = Watcher(None, fs.s3_client(), "job1").progress(f"{s3_bucket}/runs/sm", since=None)
    assert (progress.markers, progress.docs_read) == (3, 717)


# -- the cost model ----------------------------------------------------------------------------------------------
def test_estimate_follows_the_documented_model():
    p = plan.estimate(10, docs_per_core_s=400, bytes_per_doc=32_000, instances=2, download_mb_s=250,
                      startup_minutes=6, straggler_frac=0.05)
    docs = 10e12 / 32_000
    core_h = docs / 400 / 3600
    compute_ih = core_h / (72 * 0.65)
    wall = 0.1 + 10e12 / 2 / 250e6 / 3600 + compute_ih / 2 * 1.05
    assert p.docs == pytest.approx(docs) and p.core_hours == pytest.approx(core_h)
    assert p.compute_instance_hours == pytest.approx(compute_ih)
    assert p.wall_h == pytest.approx(wall) and p.billed_instance_hours == pytest.approx(2 * wall)
    assert p.cost_usd == pytest.approx(2 * wall * 3.672)
    assert p.volume_gb >= 5000 * 1.2  # each instance holds its 5 TB share of the input
    # without --instances: the fewest instances that finish within the target
    auto = plan.estimate(10, docs_per_core_s=400, bytes_per_doc=32_000, target_hours=4)
    assert auto.wall_h <= 4 < plan.estimate(10, 400, 32_000, instances=auto.instances - 1).wall_h
    spot = plan.estimate(10, 400, 32_000, instances=2, spot_discount=0.6)
    assert spot.cost_usd == pytest.approx(plan.estimate(10, 400, 32_000, instances=2).cost_usd * 0.4)


def test_plan_measures_docs_per_core_on_the_sample(tmp_path):
    cfg = parse_config({"name": "plan-test", "stages": [{"type": "gopher_quality"}, {"type": "line_corrections"}]})
    m = plan.measure(cfg, plan.SAMPLE_DOCS)
    sample_bytes = sum(f.stat().st_size for f in plan.SAMPLE_DOCS.glob("*.jsonl.gz"))
    assert m.docs == 717 and m.bytes_per_doc == pytest.approx(sample_bytes / 717)
    assert 10 < m.docs_per_core_s < 1_000_000

    config = tmp_path / "plan.yaml"
    config.write_text(yaml.safe_dump({"name": "plan-test", "stages": [{"type": "gopher_quality"}]}))
    res = CliRunner().invoke(_cli(), ["plan", str(config), "--input-tb", "100", "--docs-per-core-s", "500",
                                      "--bytes-per-doc", "32000", "--instances", "50", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    want = plan.estimate(100, 500, 32000, instances=50).as_dict()
    assert got["cost_usd"] == want["cost_usd"] and got["instances"] == 50 and got["throughput_source"] == "given"
