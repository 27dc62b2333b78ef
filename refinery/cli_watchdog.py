"""``refinery watchdog deploy|check``: the unattended watchdog (an AWS Lambda on an EventBridge
schedule) that stops stalled refinery jobs; see :mod:`refinery.launch.watchdog` and docs/scale.md."""

from __future__ import annotations

import json
import logging
import re
from typing import Optional

import typer

from refinery.cli_common import VERBOSE_HELP, aws_region, check_stall_settings, fail, note, out, setup_logging

watchdog_app = typer.Typer(add_completion=False, no_args_is_help=True,
                           help="Deploy or run the watchdog, a Lambda that stops stalled refinery jobs.")


def register(app: typer.Typer) -> None:
    app.add_typer(watchdog_app, name="watchdog")


def _settings(stall_minutes: float, start_grace_minutes: float, dry_run_stops: bool):
    from refinery.launch.watchdog import Settings

    check_stall_settings(stall_minutes, start_grace_minutes)  # 0 or less: every running job stopped
    return Settings(stall_minutes=stall_minutes, start_grace_minutes=start_grace_minutes, dry_run=dry_run_stops)


@watchdog_app.command("deploy")
def deploy(
    bucket: list[str] = typer.Option(..., "--bucket", help="S3 bucket(s) holding run outputs (read-only access)"),
    region: Optional[str] = typer.Option(None, envvar="AWS_REGION", help="AWS region"),
    account: Optional[str] = typer.Option(None, help="AWS account id (default: from STS)"),
    stall_minutes: float = typer.Option(60.0, help="stop a job after this long without progress"),
    start_grace_minutes: float = typer.Option(180.0, help="leave jobs whose containers have not started alone this long"),
    schedule: str = typer.Option("rate(10 minutes)", help="EventBridge schedule: rate(N minutes|hours|days) or cron(6 fields)"),
    report_only: bool = typer.Option(False, "--report-only", help="deploy a watchdog that reports stalled jobs but stops nothing"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the requests as JSON; send nothing"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Deploy (or update) the watchdog Lambda and its schedule.

    It creates an IAM role with a least-privilege policy, the Lambda function, an EventBridge
    schedule and its permission to invoke the function."""
    from refinery.launch import watchdog
    from refinery.launch.sagemaker import NO_REGION

    setup_logging(verbose)
    settings = _settings(stall_minutes, start_grace_minutes, report_only)
    buckets = _bucket_names(bucket)
    if account is not None and not re.fullmatch(r"\d{12}", account):
        fail(f"--account {account!r}: an AWS account id is 12 digits")
    if problem := watchdog.schedule_problem(schedule):  # before any AWS call: PutRule comes after the Lambda
        fail(f"--schedule {schedule!r}: {problem}")
    region = aws_region(region, configured=not dry_run)
    if dry_run:
        # the ARNs need both: say which ones are stand-ins, not the user's (found by trials, h121)
        if not region:
            note("no --region (or AWS_REGION): the requests below show us-east-1; a deploy needs the region")
        if not account:
            note("no --account: the ARNs below show the stand-in account 123456789012; a deploy asks STS for yours")
        region = region or "us-east-1"
        requests = watchdog.deploy_requests(region, account or "123456789012", buckets, settings, schedule)
        for service, operation, request in requests:
            watchdog.validate(service, operation, request)
        out.print(json.dumps(watchdog.printable(requests), indent=1), soft_wrap=True)
        return
    if not region:
        fail(NO_REGION)
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        account = account or boto3.client("sts", region_name=region).get_caller_identity()["Account"]
        requests = watchdog.deploy_requests(region, account, buckets, settings, schedule)
        clients = {s: boto3.client(s, region_name=region) for s in ("iam", "lambda", "events")}
        result = watchdog.deploy(requests, clients)
    except NoCredentialsError:
        fail("no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    except (ClientError, BotoCoreError) as exc:
        fail(exc)
    out.print(f"deployed {result['function']} on schedule {schedule!r} in {region} "
              f"(stall {stall_minutes:g} min, start grace {start_grace_minutes:g} min)", soft_wrap=True)


def _bucket_names(values: list[str]) -> list[str]:
    """The bucket of each ``--bucket`` (a name or an s3:// URI): an empty or invalid one made a
    policy granting ``arn:aws:s3:::/*`` (found by trials, h121)."""
    from refinery.io import fs

    names = []
    for value in values:
        name = value.removeprefix("s3://").split("/", 1)[0]
        try:
            fs.validate_uri(f"s3://{name}")
        except fs.StorageError:
            fail(f"--bucket {value!r}: not an S3 bucket name (3-63 lower-case letters, digits, dots, hyphens)")
        names.append(name)
    return names


@watchdog_app.command("check")
def check(
    region: Optional[str] = typer.Option(None, envvar="AWS_REGION", help="AWS region"),
    stall_minutes: float = typer.Option(60.0, help="a job this long without progress is stalled"),
    start_grace_minutes: float = typer.Option(180.0, help="leave jobs whose containers have not started alone this long"),
    stop: bool = typer.Option(False, "--stop/--no-stop", help="stop stalled jobs (default: only report)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Run the watchdog's check once from here: judge every running refinery job."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

    from refinery.io import fs
    from refinery.launch import watchdog
    from refinery.launch.sagemaker import NO_REGION

    setup_logging(verbose, level=None if verbose else logging.INFO)
    settings = _settings(stall_minutes, start_grace_minutes, not stop)
    region = aws_region(region)
    try:
        sm = boto3.client("sagemaker", region_name=region)
        result = watchdog.check_jobs(sm, fs.s3_client(), settings)
    except NoRegionError:
        fail(NO_REGION)
    except NoCredentialsError:
        fail("no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    except (ClientError, BotoCoreError) as exc:
        fail(exc)
    out.print(json.dumps(result, indent=1, default=str), soft_wrap=True)
