"""``refinery watchdog deploy|check``: the unattended watchdog (an AWS Lambda on an EventBridge
schedule) that stops stalled refinery jobs; see :mod:`refinery.launch.watchdog` and docs/scale.md."""

from __future__ import annotations

import json
import logging
from typing import Optional

import typer

from refinery.cli_common import fail, out, setup_logging

watchdog_app = typer.Typer(add_completion=False, no_args_is_help=True,
                           help="Deploy or run the watchdog, a Lambda that stops stalled refinery jobs.")


def register(app: typer.Typer) -> None:
    app.add_typer(watchdog_app, name="watchdog")


def _settings(stall_minutes: float, start_grace_minutes: float, dry_run_stops: bool):
    from refinery.launch.watchdog import Settings

    return Settings(stall_minutes=stall_minutes, start_grace_minutes=start_grace_minutes, dry_run=dry_run_stops)


@watchdog_app.command("deploy")
def deploy(
    bucket: list[str] = typer.Option(..., "--bucket", help="S3 bucket(s) holding run outputs (read-only access)"),
    region: Optional[str] = typer.Option(None, envvar="AWS_REGION", help="AWS region"),
    account: Optional[str] = typer.Option(None, help="AWS account id (default: from STS)"),
    stall_minutes: float = typer.Option(60.0, help="stop a job after this long without progress"),
    start_grace_minutes: float = typer.Option(180.0, help="leave jobs whose containers have not started alone this long"),
    schedule: str = typer.Option("rate(10 minutes)", help="EventBridge schedule expression"),
    report_only: bool = typer.Option(False, help="deploy a watchdog that reports stalled jobs but stops nothing"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the requests as JSON; send nothing"),
) -> None:
    """Deploy (or update) the watchdog Lambda and its schedule.

    It creates an IAM role with a least-privilege policy, the Lambda function, an EventBridge
    schedule and its permission to invoke the function."""
    from refinery.launch import watchdog

    setup_logging(False)
    region = region or "us-east-1" if dry_run else region
    if not region:
        fail("no AWS region: pass --region (e.g. --region us-east-1) or set AWS_REGION")
    buckets = [b.removeprefix("s3://").split("/", 1)[0] for b in bucket]
    settings = _settings(stall_minutes, start_grace_minutes, report_only)
    if dry_run:
        requests = watchdog.deploy_requests(region, account or "123456789012", buckets, settings, schedule)
        for service, operation, request in requests:
            watchdog.validate(service, operation, request)
        out.print(json.dumps(watchdog.printable(requests), indent=1), soft_wrap=True)
        return
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


@watchdog_app.command("check")
def check(
    region: Optional[str] = typer.Option(None, envvar="AWS_REGION", help="AWS region"),
    stall_minutes: float = typer.Option(60.0, help="a job this long without progress is stalled"),
    start_grace_minutes: float = typer.Option(180.0, help="leave jobs whose containers have not started alone this long"),
    stop: bool = typer.Option(False, "--stop/--no-stop", help="stop stalled jobs (default: only report)"),
) -> None:
    """Run the watchdog's check once from here: judge every running refinery job."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

    from refinery.io import fs
    from refinery.launch import watchdog

    setup_logging(False, level=logging.INFO)
    try:
        sm = boto3.client("sagemaker", region_name=region)
        result = watchdog.check_jobs(sm, fs.s3_client(), _settings(stall_minutes, start_grace_minutes, not stop))
    except NoRegionError:
        fail("no AWS region: pass --region (e.g. --region us-east-1) or set AWS_REGION")
    except NoCredentialsError:
        fail("no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    except (ClientError, BotoCoreError) as exc:
        fail(exc)
    out.print(json.dumps(result, indent=1, default=str), soft_wrap=True)
