"""``refinery launch``, ``refinery watch`` and ``refinery plan``: leaving one machine (docs/scale.md)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from refinery.cli_common import VERBOSE_HELP, aws_region, check_numbers, check_stall_settings, err, fail, note, setup_logging
from refinery.cli_common import out


def register(app: typer.Typer) -> None:
    app.command("launch")(launch)
    app.command("watch")(watch)
    app.command("plan")(plan)


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    result = {}
    for v in values or []:
        key, sep, value = v.partition("=")
        if not sep or not key:
            fail(f"{what} must be KEY=VALUE, got {v!r}")
        result[key] = value
    return result


def launch(
    config: Path = typer.Argument(..., help="recipe YAML (configs/refinedweb.yaml) or, with --stage dedup, a dedup YAML"),
    input: Optional[str] = typer.Option(None, "--input", "-i", metavar="URI", help="s3:// input (default: the config's)"),
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="URI", help="s3:// run output (default: the config's)"),
    stage: Optional[str] = typer.Option(None, help="default: the whole recipe | pipeline-ray (all passes on Ray) | "
                                                   "dedup (CONFIG is a dedup YAML) | a stage name of CONFIG (that stage alone)"),
    instances: int = typer.Option(1, min=1, help="instances of the Processing job (the document pass)"),
    instance_type: str = typer.Option("ml.c5.18xlarge", help="SageMaker instance type"),
    ray_instances: Optional[int] = typer.Option(None, min=1, help="instances of the Ray Training job (default: --instances)"),
    ray_instance_type: Optional[str] = typer.Option(None, help="instance type of the Ray job (default: --instance-type)"),
    image: Optional[str] = typer.Option(None, envvar="REFINERY_IMAGE",
                                        help="ECR repository[:tag] of jobs/Dockerfile's image (tag default: git SHA)"),
    role: Optional[str] = typer.Option(None, envvar="REFINERY_SAGEMAKER_ROLE",
                                       help="SageMaker execution role ARN (runs the pipeline and its jobs)"),
    region: Optional[str] = typer.Option(None, envvar="AWS_REGION", help="AWS region"),
    volume_gb: int = typer.Option(100, min=1, help="EBS volume per instance (scratch: inputs are streamed from S3)"),
    max_runtime_hours: float = typer.Option(24.0, help="stop each job after this long"),
    workers: Optional[int] = typer.Option(None, min=1, help="worker processes per instance (default: all vCPUs)"),
    spot: bool = typer.Option(False, help="managed spot capacity for the Ray Training job"),
    max_wait_hours: Optional[float] = typer.Option(None, help="spot: total time to wait + run (default 2x runtime)"),
    checkpoint: Optional[str] = typer.Option(None, hidden=True),  # removed: refused with the reason
    subnet: Optional[list[str]] = typer.Option(None, help="VPC subnet id (repeatable)"),
    security_group: Optional[list[str]] = typer.Option(None, help="VPC security group id (repeatable)"),
    tag: Optional[list[str]] = typer.Option(None, metavar="KEY=VALUE", help="extra tag KEY=VALUE (repeatable)"),
    env: Optional[list[str]] = typer.Option(None, metavar="KEY=VALUE", help="extra container environment KEY=VALUE (repeatable)"),
    name: Optional[str] = typer.Option(None, help="pipeline name (default: refinery-<config>-<UTC time>; with --stage: refinery-pipeline-ray-<config>-..., refinery-dedup-<config>-..., refinery-<config>-<stage>-...)"),
    build: Optional[bool] = typer.Option(None, "--build/--no-build",
                                         help="build+push the image (default: when a Docker engine answers)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print every request as JSON; send, upload and list nothing"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Run a recipe on SageMaker as a pipeline of jobs.

    The document pass runs as a Processing job (its instances share the input files through
    ShardedByS3Key), the dedup and tokenize passes after it as one multi-instance Training job
    running a Ray cluster, chained by a SageMaker Pipeline."""
    from refinery.config import ConfigError, load_config
    from refinery.io.fs import StorageError
    from refinery.launch.launcher import LaunchError
    from refinery.launch.launcher import launch as do_launch
    from refinery.launch.sagemaker import RequestError

    setup_logging(verbose)
    try:
        if (input is None or output is None) and stage != "dedup":
            cfg = load_config(config)
            input, output = input or cfg.input, output or cfg.output
        if not input or not output:
            raise LaunchError("give --input and --output (s3:// URIs)")
        if checkpoint is not None:  # exported to the job and never read: a spot restart resumed from the output anyway
            raise LaunchError("--checkpoint is gone: the run output on S3 is the job's checkpoint (a restarted job "
                              "skips finished passes and shards by their markers); drop the option")
        if not image:
            raise LaunchError("give --image (an ECR repository URI) or set REFINERY_IMAGE")
        if not role:
            raise LaunchError("give --role (a SageMaker execution role ARN) or set REFINERY_SAGEMAKER_ROLE")
        for option, hours in (("--max-runtime-hours", max_runtime_hours), ("--max-wait-hours", max_wait_hours)):
            # nan was "cannot convert float NaN to integer", 0 or -1 SageMaker's field name, not the option's
            if hours is not None and not (math.isfinite(hours) and hours * 3600 >= 1):
                raise LaunchError(f"{option} must be a positive number of hours, got {hours}")
        result = do_launch(
            config, input, output, image, role, stage=stage, instances=instances, instance_type=instance_type,
            ray_instances=ray_instances, ray_instance_type=ray_instance_type, volume_gb=volume_gb,
            max_runtime_s=int(max_runtime_hours * 3600), region=region, workers=workers, spot=spot,
            max_wait_s=int(max_wait_hours * 3600) if max_wait_hours else None,
            subnets=subnet, security_groups=security_group, extra_tags=_pairs(tag, "--tag"),
            extra_env=_pairs(env, "--env"), name=name, build=build, dry_run=dry_run,
        )
    except (LaunchError, ConfigError, RequestError, StorageError, ValueError) as exc:
        fail(exc)
    if not result.built:
        err.print("# image build (run where Docker works):" if not dry_run else "# image build (not run in a dry run):")
        for line in result.build_commands:
            err.print(f"  {line}")  # copy-pastable lines
    for line in result.notes:
        note(line)
    if dry_run:
        err.print(f"# pipeline {result.name}: " + " -> ".join(f"{g.step} ({g.job})" for g in result.groups)
                  + " (dry run: nothing sent, uploaded or listed)")
        print(result.printable())  # stdout: JSON only
        return
    out.print(Text.assemble("launched pipeline ", (result.name, "bold"), f": {result.execution_arn}"))
    out.print(f"follow it with: refinery watch {result.name}")


def watch(
    job: str = typer.Argument(..., help="pipeline name (what `refinery launch` prints) or SageMaker job name"),
    stall_minutes: float = typer.Option(60.0, help="stop the job after this long without progress"),
    start_grace_minutes: float = typer.Option(180.0, help="leave a job whose containers have not started "
                                              "(provisioning, image pull, input copy) alone this long"),
    interval: float = typer.Option(60.0, help="seconds between polls"),
    once: bool = typer.Option(False, help="poll once and exit"),
    stop_stalled: bool = typer.Option(True, "--stop/--no-stop", help="stop a stalled job (else only report)"),
    output: Optional[str] = typer.Option(None, metavar="URI", help="run output s3:// (default: from the job)"),
    region: Optional[str] = typer.Option(None, envvar="AWS_REGION", help="AWS region"),
    cloudwatch: bool = typer.Option(True, help="report CPU/memory utilisation from CloudWatch when allowed"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Follow a pipeline's jobs (or one job) and stop a job when its progress stalls.

    Shows status and progress markers (shards finished, docs/s, ETA). Exit code: 0 completed,
    1 failed/stopped, 3 stopped here for stalling."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from refinery.io import fs
    from refinery.launch.watch import PipelineWatcher, Watcher, latest_execution

    from botocore.exceptions import NoCredentialsError, NoRegionError

    setup_logging(verbose)
    check_stall_settings(stall_minutes, start_grace_minutes, interval)
    region = aws_region(region)
    try:
        sm = boto3.client("sagemaker", region_name=region)
        cw = boto3.client("cloudwatch", region_name=region) if cloudwatch else None
    except NoRegionError:
        fail("no AWS region: pass --region (e.g. --region us-east-1) or set AWS_REGION")
    kw = dict(stall_minutes=stall_minutes, stop_stalled=stop_stalled, output_uri=output, cloudwatch=cw,
              start_grace_minutes=start_grace_minutes)
    try:
        if latest_execution(sm, job) is not None:
            watcher = PipelineWatcher(sm, fs.s3_client(), job, **kw)
        else:
            watcher = Watcher(sm, fs.s3_client(), job, **kw)
        code = watcher.run(interval_s=interval, once=once, echo=lambda line: out.print(line))
    except NoCredentialsError:
        fail("no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or run where a role is attached)")
    except (ClientError, BotoCoreError, ValueError) as exc:
        fail(exc)
    raise typer.Exit(code)


def plan(
    config: Path = typer.Argument(..., help="pipeline YAML"),
    input_tb: float = typer.Option(..., "--input-tb", help="input size in TB (10^12 bytes, as stored: gzipped WARC)"),
    docs_per_core_s: Optional[float] = typer.Option(None, help="skip the measurement: docs/s per core"),
    bytes_per_doc: Optional[float] = typer.Option(None, help="skip the measurement: input bytes per document"),
    sample: Optional[str] = typer.Option(None, metavar="URI", help="your input to measure on: a directory, file or paths manifest, "
                                         "local or s3:// (default: the bundled data/sample/warc or cc_docs)"),
    sample_files: int = typer.Option(4, min=1, help="measure on this many files of --sample"),
    repeat: int = typer.Option(1, min=1, help="measure over the sample this many times"),
    instances: Optional[int] = typer.Option(None, min=1, help="instances (default: fewest meeting --target-hours)"),
    target_hours: float = typer.Option(24.0, help="wall-time target when choosing the instance count"),
    price_per_hour: Optional[float] = typer.Option(None, help="USD per instance-hour (default: ml.c5.18xlarge us-east-1)"),
    spot_discount: float = typer.Option(0.0, min=0.0, max=0.95, help="e.g. 0.6 for spot at 40% of on-demand"),
    vcpu_efficiency: Optional[float] = typer.Option(None, help="per-vCPU throughput vs one process per core"),
    cross_region: bool = typer.Option(False, "--cross-region", help="the input is in another region than the jobs (transfer costs)"),
    startup_minutes: float = typer.Option(8.0, help="provisioning + image pull per job (minutes)"),
    json_out: bool = typer.Option(False, "--json", help="print the plan as JSON"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Estimate instance-hours, wall time and cost of a run on SageMaker.

    The estimate is for ml.c5.18xlarge, from docs/s per core and bytes per document measured on a
    sample of your input (model: docs/scale.md); it proposes parallel jobs when one 100-instance
    job cannot meet the target."""
    from refinery.config import ConfigError, load_config
    from refinery.launch import plan as model

    check_numbers({"--input-tb": input_tb, "--docs-per-core-s": docs_per_core_s, "--bytes-per-doc": bytes_per_doc,
                   "--target-hours": target_hours, "--price-per-hour": price_per_hour},
                  {"--startup-minutes": startup_minutes})
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        fail(exc)
    source = "given"
    given_bytes, measured_on = bytes_per_doc is not None, None
    rate_range = None
    if docs_per_core_s is None or bytes_per_doc is None:
        setup_logging(verbose, level=None if verbose else logging.WARNING)
        if sample:  # `--sample s3://` (no bucket) went to S3 for "s3://run.json", 8 attempts (h133)
            from refinery.io.fs import StorageError, validate_uri

            try:
                validate_uri(sample)
            except StorageError as exc:
                fail(f"--sample: {exc}")
        err.print(f"measuring {cfg.name} on {sample or model.default_sample(cfg)} (one core)...")
        try:
            m = model.measure(cfg, sample, repeat, max_files=sample_files)
        except ConfigError as exc:
            fail(exc)
        if docs_per_core_s is None:
            rate_range = m.rate_range
        docs_per_core_s = docs_per_core_s or m.docs_per_core_s
        bytes_per_doc = bytes_per_doc or m.bytes_per_doc
        source = f"measured: {m.docs} docs in {m.core_seconds:.1f} s on {m.sample}"
        measured_on = None if given_bytes else f"{m.docs} docs of {m.sample}"
    kwargs = {}
    if price_per_hour is not None:
        if price_per_hour <= 0:
            fail(f"--price-per-hour must be positive, got {price_per_hour}")
        kwargs["price_per_hour"] = price_per_hour
    if vcpu_efficiency is not None:
        if not 0 < vcpu_efficiency <= 2:  # 0 divided by zero, a negative gave negative hours
            fail(f"--vcpu-efficiency must be in (0, 2], got {vcpu_efficiency}")
        kwargs["vcpu_efficiency"] = vcpu_efficiency
    try:
        result = model.estimate(input_tb, docs_per_core_s, bytes_per_doc, instances=instances, target_hours=target_hours,
                                spot_discount=spot_discount, startup_minutes=startup_minutes,
                                docs_per_core_s_range=rate_range, cross_region=cross_region, **kwargs)
    except OverflowError:  # --input-tb 1e308: "unexpected OverflowError: cannot convert float infinity to integer"
        fail(f"--input-tb {input_tb:g} with {bytes_per_doc:g} bytes/doc at {docs_per_core_s:g} docs/s per core "
             "is too large to estimate (an instance count beyond any float)")
    verdict = model.target_verdict(result)
    bytes_note = _bytes_per_doc_note(bytes_per_doc, measured_on, sample) if any(s.type == "extract" for s in cfg.stages) else None
    if json_out:
        # the note too: --json printed every figure but not the warning that the bytes/doc behind
        # them may not be the input's (review h101); null when there is none
        print(json.dumps({**result.as_dict(), "throughput_source": source, "target_verdict": verdict,
                          "bytes_per_doc_note": bytes_note}, indent=1))
        return
    out.print(model.render(result, source))
    if verdict:
        err.print(Text.assemble(("target not met:", "bold red"), verdict[len("target not met:"):]))
    for warning in result.warnings:
        err.print(f"note: {warning}")
    if bytes_note:
        err.print(f"note: {bytes_note}")


def _bytes_per_doc_note(bytes_per_doc: float, measured_on: str | None, sample: str | None) -> str | None:
    """A note when the bytes/doc measured on ``measured_on`` (None: given by --bytes-per-doc, the
    user's choice, no note) is far from Common Crawl's WARCs: "the bundled sample is small" was
    said of a --sample s3://... of the user's own input too (review h98)."""
    from refinery.launch import plan as model

    typical = model.CC_WARC_BYTES_PER_DOC
    if measured_on is None or abs(bytes_per_doc - typical) / typical <= 0.5:
        return None
    head = f"{bytes_per_doc:,.0f} bytes/doc differs from Common Crawl's ~{typical:,}"
    if sample is None:
        return f"{head} (the bundled sample is small): consider --sample with your input, or --bytes-per-doc"
    return (f"{head} (measured on {measured_on}): if those files are not typical of your input, measure on more "
            f"of them (--sample-files) or give --bytes-per-doc")

