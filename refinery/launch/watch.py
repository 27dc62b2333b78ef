"""``refinery watch JOB``: follow a SageMaker job through its status *and* its progress, and stop
it when progress stalls (an idle job still bills every instance-hour).

Progress is what the job's containers report in their heartbeats
(``_jobs/<job>/heartbeat/<host>.json``, rewritten every few minutes): per pass, the shards their
process was given, finished and failed, the documents read, and when a shard last finished. A
poll lists ``_jobs/<job>/started/`` and ``heartbeat/`` only, whatever the size of the run. For images whose heartbeats carry
no progress, it is read from the run output instead, listing all of it: every finished shard of a
document pass publishes ``<pass>/stats/<shard>.json`` last (``stats/<shard>.json`` in a run of one
pass), the shard-finished marker, and any write under the output counts. The job counts as
*stalled* when it is ``InProgress`` and no shard finished (nothing was written) for
``stall_minutes`` -- counting from when the job's containers announced themselves
(``_jobs/<job>/started/<host>.json``, written by the entrypoint before any work). Before that the
job is provisioning, pulling its image or copying inputs: it is left alone for
``start_grace_minutes`` after its creation (a training job whose SecondaryStatus says it is still
starting or downloading is never stopped for that). Pick ``stall_minutes`` above the slowest
shard's time.

Utilisation: CloudWatch's per-host ``CPUUtilization``/``MemoryUtilization`` when the caller may
read them (optional); shard and document throughput from the markers always.

A *pipeline* name (what ``refinery launch`` prints) is followed through its latest execution
(:class:`PipelineWatcher`): each poll watches the job of the step that runs, until the execution
ends.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from refinery.launch.sagemaker import JobStatus, describe, stop

log = logging.getLogger("refinery.watch")

#: vCPUs per instance type, to turn CloudWatch's summed CPUUtilization into % per vCPU
VCPUS = {"ml.c5.18xlarge": 72, "ml.c5.9xlarge": 36, "ml.c5.4xlarge": 16, "ml.c5.2xlarge": 8, "ml.c5.xlarge": 4,
         "ml.m5.24xlarge": 96, "ml.m5.12xlarge": 48, "ml.m5.4xlarge": 16, "ml.m5.xlarge": 4,
         "ml.c6i.32xlarge": 128, "ml.c7i.48xlarge": 192, "ml.r5.24xlarge": 96}

TERMINAL = ("Completed", "Failed", "Stopped")
PIPELINE_TERMINAL = ("Succeeded", "Failed", "Stopped")
#: the plan's tokenize pass writes token shards, not shard markers
NO_MARKERS = ("tokens",)
#: training-job secondary statuses before the containers run our code (never "stalled")
STARTING = ("Starting", "Pending", "LaunchingMLInstances", "PreparingTrainingStack", "Downloading",
            "DownloadingTrainingImage", "Restarting")
EXIT_COMPLETED, EXIT_FAILED, EXIT_STALLED = 0, 1, 3


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(t: Any) -> datetime | None:
    if t is None:
        return None
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _fmt_age(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


@dataclass
class Progress:
    markers: int = 0  # shard markers of the job's passes under the output (from any run)
    new_markers: int = 0  # of those, written since this job started
    docs_read: int = 0  # documents in the new markers
    last_write: datetime | None = None  # newest write under the output since the job started
    by_pass: dict[str, int] = field(default_factory=dict)  # markers per pass ("" = a one-pass run)
    #: the job's containers: earliest ``started`` announcement and latest heartbeat (None: none yet)
    containers_started: datetime | None = None
    last_heartbeat: datetime | None = None
    #: "heartbeats": reported by the job's containers (this job's shards only; ``tasks`` = the
    #: shards its passes under way were given); "markers": listed under the run output
    source: str = "markers"
    tasks: int = 0


def marker_pass(rel: str) -> str | None:
    """The pass whose shard marker ``rel`` (a key below the run output) is, else None:
    ``filter/stats/a.json`` -> ``filter``; ``stats/a.json`` (a one-pass run) -> ``""``."""
    parts = rel.split("/")
    if not parts[-1].endswith(".json") or len(parts) not in (2, 3) or parts[-2] != "stats":
        return None
    return parts[0] if len(parts) == 3 else ""


@dataclass
class Poll:
    at: datetime
    job: JobStatus
    progress: Progress
    total_shards: int | None
    idle_s: float | None  # seconds since the last progress (running jobs)
    stalled: bool
    action: str | None = None  # "stopped" when we stopped the job
    utilisation: dict[str, float] = field(default_factory=dict)
    phase: str = ""  # "starting (...)" before the containers announced themselves, else "running"

    def line(self) -> str:
        p, j = self.progress, self.job
        started = _aware(j.started) or _aware(j.created)
        elapsed = (self.at - started).total_seconds() if started else 0.0
        parts = [f"{self.at:%H:%M:%S} {j.name} {j.status}"]
        per_pass = ", ".join(f"{k} {v}" for k, v in p.by_pass.items() if k)
        if p.source == "heartbeats":
            # the containers report this job's shards: those its passes under way were given
            parts.append(f"shards +{p.new_markers}/{p.tasks} this job{f' ({per_pass})' if len(p.by_pass) > 1 else ''}")
            total, remaining = p.tasks, p.tasks - p.new_markers
        else:
            total = self.total_shards or 0
            remaining = total - p.markers
            parts.append(f"shards {p.markers}{f'/{total}' if total else ''}"
                         f"{f' ({per_pass})' if len(p.by_pass) > 1 else ''} (+{p.new_markers} this job)")
        if elapsed > 0 and p.new_markers:
            rate = p.new_markers / elapsed
            docs = f", {p.docs_read / elapsed:,.0f} docs/s" if p.docs_read else ""  # unread by the watchdog
            parts.append(f"{rate * 3600:.1f} shards/h{docs}")
            if total and remaining > 0:
                eta = _fmt_age(remaining / rate)
                parts.append(f"ETA {eta}{' (passes under way)' if p.source == 'heartbeats' else ''}")
        if self.phase.startswith("starting"):
            parts.append(f"{self.phase} for {_fmt_age(self.idle_s or 0)}")
        elif self.idle_s is not None:
            parts.append(f"last progress {_fmt_age(self.idle_s)} ago")
        for k, v in self.utilisation.items():
            parts.append(f"{k} {v:.0f}%")
        if self.action:
            parts.append(f"-> {self.action.upper()} (no progress for {_fmt_age(self.idle_s or 0)})")
        return " | ".join(parts)


class NoRunOutput(ValueError):
    """The job names no refinery run output: not refinery's, or launched without one."""


class Watcher:
    def __init__(self, sm: Any, s3: Any, name: str, stall_minutes: float = 60.0, stop_stalled: bool = True,
                 output_uri: str | None = None, cloudwatch: Any = None,
                 clock: Callable[[], datetime] = _utcnow, start_grace_minutes: float = 180.0,
                 read_docs: bool = True) -> None:
        self.sm, self.s3, self.name = sm, s3, name
        #: read each new shard marker for the documents count (docs/s); the stall decision needs
        #: only the listing. The watchdog does not: a fresh Watcher per Lambda run read every
        #: marker of the job every run, 90k GETs for a crawl (found by adversarial testing)
        self.read_docs = read_docs
        self.stall_s = stall_minutes * 60
        self.start_grace_s = start_grace_minutes * 60
        self.stop_stalled = stop_stalled
        self.output_uri = output_uri
        self.cloudwatch = cloudwatch
        self.clock = clock
        self._docs: dict[str, int] = {}  # marker key@etag -> docs_read (each marker read once)
        self._heartbeats: dict[str, dict | None] = {}  # heartbeat key@etag -> its progress report

    # -- progress ---------------------------------------------------------------------------------------
    def progress(self, output_uri: str, since: datetime | None, passes: list[str] | None = None,
                 announced_as: str | None = None) -> Progress:
        """The job's progress: from its containers' heartbeats (``_jobs/<job>/heartbeat/<host>.json``
        carry their process's shards done per pass and when a shard last finished), else, for
        images whose heartbeats carry none, from the shard markers and other writes under
        ``output_uri`` (markers of ``passes`` only, when given). Container announcements and
        heartbeats count under the job's own name, or under ``announced_as`` (the
        ``REFINERY_JOB_NAME`` its containers write under: a pipeline's steps all use the pipeline's
        name) when written since the job started."""
        bucket, _, prefix = output_uri[5:].partition("/")
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        if since is not None:
            since = since.replace(microsecond=0)  # S3 LastModified has whole seconds
        reported = self._reported_progress(bucket, prefix, since, announced_as)
        if reported is not None:
            return reported
        return self._listed_progress(bucket, prefix, since, passes, announced_as)

    def _reported_progress(self, bucket: str, prefix: str, since: datetime | None,
                           announced_as: str | None) -> Progress | None:
        """Progress from the heartbeats alone: two LISTs per job name (announcements, heartbeats)
        and a GET per host, whatever the size of the run (None when no heartbeat of the job
        reports progress)."""
        p = Progress(source="heartbeats")
        names = [self.name] + ([announced_as] if announced_as and announced_as != self.name else [])
        heartbeats: list[dict] = []
        # the signals only: _jobs/<name>/ also holds a launch's shard stubs (one per input file) and logs
        for listed in (f"{prefix}_jobs/{name}/{kind}/" for name in names for kind in ("started", "heartbeat")):
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=listed):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(prefix):]
                    modified = _aware(obj["LastModified"])
                    if self._container_signal(p, rel, modified, since, announced_as) == "heartbeat":
                        heartbeats.append(obj)
        reports = [r for r in (self._heartbeat_progress(bucket, obj) for obj in heartbeats) if r is not None]
        if not reports:
            return None
        for report in reports:
            last = _aware(report.get("last_progress"))
            if last is not None and (p.last_write is None or last > p.last_write):
                p.last_write = last
            for label, counts in (report.get("passes") or {}).items():
                done = int(counts.get("done", 0))
                p.by_pass[label] = p.by_pass.get(label, 0) + done
                p.new_markers += done
                p.tasks += int(counts.get("tasks", 0))
                p.docs_read += int(counts.get("docs", 0))
        p.markers = p.new_markers
        return p

    def _heartbeat_progress(self, bucket: str, obj: dict) -> dict | None:
        key = f"{obj['Key']}@{obj.get('ETag', '')}"
        if key not in self._heartbeats:
            try:
                body = json.loads(self.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                report = body.get("progress")
                self._heartbeats[key] = report if isinstance(report, dict) else None
            except Exception as exc:  # a heartbeat being rewritten or unreadable: judged without it
                log.debug("cannot read heartbeat %s: %s", obj["Key"], exc)
                self._heartbeats[key] = None
        return self._heartbeats[key]

    def _listed_progress(self, bucket: str, prefix: str, since: datetime | None, passes: list[str] | None,
                         announced_as: str | None) -> Progress:
        p = Progress()
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):]
                modified = _aware(obj["LastModified"])
                if rel.startswith("_jobs/"):  # logs and reports are no progress; announcements say who runs
                    self._container_signal(p, rel, modified, since, announced_as)
                    continue
                new = since is None or modified >= since
                if new and (p.last_write is None or modified > p.last_write):
                    p.last_write = modified
                pass_name = marker_pass(rel)
                if pass_name is not None and (not passes or not pass_name or pass_name in passes):
                    p.markers += 1
                    p.by_pass[pass_name] = p.by_pass.get(pass_name, 0) + 1
                    if new:
                        p.new_markers += 1
                        if self.read_docs:
                            p.docs_read += self._marker_docs(bucket, obj)
        return p

    def _container_signal(self, p: Progress, rel: str, modified: datetime, since: datetime | None = None,
                          announced_as: str | None = None) -> str | None:
        """Notes this job's announcement or heartbeat ``rel`` in ``p``; returns which it was."""
        parts = rel.split("/")  # _jobs/<job>/<started|heartbeat>/<host>.json
        if len(parts) != 4:
            return None
        # a pipeline's step writes under the pipeline's name, which every step shares: its own
        # signals are those written since it started (the watchdog stopped every launched job once
        # the start grace was over: it looked under the SageMaker job's name only; found by
        # adversarial testing)
        shared = announced_as is not None and parts[1] == announced_as and (since is None or modified >= since)
        if parts[1] != self.name and not shared:
            return None
        if parts[2] == "started":
            if p.containers_started is None or modified < p.containers_started:
                p.containers_started = modified
        elif parts[2] == "heartbeat":
            if p.last_heartbeat is None or modified > p.last_heartbeat:
                p.last_heartbeat = modified
        else:
            return None
        return parts[2]

    def _marker_docs(self, bucket: str, obj: dict) -> int:
        key = f"{obj['Key']}@{obj.get('ETag', '')}"
        if key not in self._docs:
            try:
                body = self.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                self._docs[key] = int(json.loads(body).get("docs_read", 0))
            except Exception as exc:
                log.debug("cannot read marker %s: %s", obj["Key"], exc)
                self._docs[key] = 0
        return self._docs[key]

    # -- utilisation (optional) -------------------------------------------------------------------------
    def utilisation(self, job: JobStatus, now: datetime) -> dict[str, float]:
        if self.cloudwatch is None or not job.running:
            return {}
        namespace = "/aws/sagemaker/ProcessingJobs" if job.kind == "processing" else "/aws/sagemaker/TrainingJobs"
        out: dict[str, float] = {}
        for metric, label in (("CPUUtilization", "cpu"), ("MemoryUtilization", "mem")):
            values = []
            for i in range(1, max(job.instances, 1) + 1):
                try:
                    points = self.cloudwatch.get_metric_statistics(
                        Namespace=namespace, MetricName=metric,
                        Dimensions=[{"Name": "Host", "Value": f"{job.name}/algo-{i}"}],
                        StartTime=now - timedelta(minutes=10), EndTime=now, Period=300, Statistics=["Average"],
                    ).get("Datapoints", [])
                except Exception as exc:
                    log.debug("no %s for %s: %s", metric, job.name, exc)
                    return out
                if points:
                    values.append(max(points, key=lambda d: d["Timestamp"])["Average"])
            if values:
                avg = sum(values) / len(values)
                if metric == "CPUUtilization" and job.instance_type in VCPUS:
                    out["cpu/vCPU"] = avg / VCPUS[job.instance_type]
                else:
                    out[label] = avg
        return out

    # -- one poll ---------------------------------------------------------------------------------------------
    def poll(self) -> Poll:
        job = describe(self.sm, self.name)
        now = self.clock()
        output = self.output_uri or job.output_uri
        if not output:
            raise NoRunOutput(f"job {self.name} names no run output (REFINERY_OUTPUT / refinery:output tag): "
                              "pass --output")
        reference = _aware(job.started) or _aware(job.created)
        listed = job.environment.get("REFINERY_PASSES") or job.tags.get("refinery:passes", "").replace(" ", ",")
        passes = [p for p in listed.split(",") if p]
        progress = self.progress(output, reference, passes, job.announced_as)
        total = job.environment.get("REFINERY_TOTAL_SHARDS") or job.tags.get("refinery:total-shards")
        if total and passes:  # every pass with markers goes over every shard
            total = int(total) * max(1, len([p for p in passes if p not in NO_MARKERS]))
        idle = stalled = None
        phase = ""
        if job.running:
            idle, stalled, phase = self.judge(job, progress, now)
        poll = Poll(now, job, progress, int(total) if total else None, idle, bool(stalled),
                    utilisation=self.utilisation(job, now), phase=phase)
        if poll.stalled and self.stop_stalled:
            log.warning("%s: no progress for %s (limit %s): stopping it", job.name, _fmt_age(idle or 0),
                        _fmt_age(self.stall_s))
            stop(self.sm, job)
            poll.action = "stopped"
        return poll

    def judge(self, job: JobStatus, progress: Progress, now: datetime) -> tuple[float, bool, str]:
        """``(idle seconds, stalled, phase)`` of a running job. The stall clock starts when the job's
        containers announced themselves, never while instances are provisioned or inputs copied."""
        created = _aware(job.created) or now
        if progress.containers_started is None:
            waiting = (now - created).total_seconds()
            if job.secondary_status in STARTING:
                return waiting, False, f"starting ({job.secondary_status})"
            # an image without announcements, or a job stuck before its containers: the grace decides
            return waiting, waiting >= self.start_grace_s, "starting"
        last = max(t for t in (progress.last_write, progress.containers_started) if t is not None)
        idle = (now - last).total_seconds()
        return idle, idle >= self.stall_s, "running"

    def run(self, interval_s: float = 60.0, once: bool = False, echo: Callable[[str], None] = print,
            sleep: Callable[[float], None] = time.sleep) -> int:
        """Poll until the job ends (or once); exit code 0 completed, 1 failed/stopped, 3 stalled."""
        from refinery.launch.watchdog import with_backoff

        while True:
            poll = with_backoff(self.poll, sleep=sleep)  # a throttled call is no reason to stop watching
            echo(poll.line())
            if poll.action == "stopped":
                return EXIT_STALLED
            if poll.job.status in TERMINAL:
                if poll.job.failure_reason:
                    echo(f"failure reason: {poll.job.failure_reason}")
                return EXIT_COMPLETED if poll.job.status == "Completed" else EXIT_FAILED
            if once:
                return EXIT_COMPLETED
            sleep(interval_s)


# -- pipelines ------------------------------------------------------------------------------------------
def latest_execution(sm: Any, pipeline: str) -> dict[str, Any] | None:
    """The pipeline's most recent execution (``DescribePipelineExecution``), None when ``pipeline``
    is not a pipeline (a job name, then) or has never run."""
    from botocore.exceptions import ClientError

    try:
        sm.describe_pipeline(PipelineName=pipeline)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("ResourceNotFound", "ValidationException"):
            return None
        raise
    runs = sm.list_pipeline_executions(PipelineName=pipeline, SortBy="CreationTime", SortOrder="Descending",
                                       MaxResults=1).get("PipelineExecutionSummaries", [])
    if not runs:
        return None
    return sm.describe_pipeline_execution(PipelineExecutionArn=runs[0]["PipelineExecutionArn"])


def current_job(sm: Any, execution_arn: str) -> str | None:
    """The job of the execution's most recently started step that has one (None before any)."""
    steps = sm.list_pipeline_execution_steps(PipelineExecutionArn=execution_arn, SortOrder="Descending")
    for step in steps.get("PipelineExecutionSteps", []):
        meta = step.get("Metadata", {})
        job = meta.get("ProcessingJob") or meta.get("TrainingJob")
        if job and job.get("Arn"):
            return job["Arn"].rsplit("/", 1)[-1]
    return None


class PipelineWatcher:
    """Follow a pipeline's latest execution: each poll watches the job of the running step (with a
    :class:`Watcher`, which stops it when it stalls, failing the execution)."""

    def __init__(self, sm: Any, s3: Any, pipeline: str, clock: Callable[[], datetime] = _utcnow,
                 **watcher: Any) -> None:
        self.sm, self.s3, self.pipeline, self.clock = sm, s3, pipeline, clock
        self.watcher_kw = watcher
        self._watchers: dict[str, Watcher] = {}

    def run(self, interval_s: float = 60.0, once: bool = False, echo: Callable[[str], None] = print,
            sleep: Callable[[float], None] = time.sleep) -> int:
        """Poll until the execution ends (or once); exit code 0 succeeded, 1 failed/stopped, 3 stalled."""
        from refinery.launch.watchdog import with_backoff

        while True:
            execution = with_backoff(lambda: latest_execution(self.sm, self.pipeline), sleep=sleep)
            if execution is None:
                raise ValueError(f"pipeline {self.pipeline} has no execution")
            status = execution["PipelineExecutionStatus"]
            job = current_job(self.sm, execution["PipelineExecutionArn"])
            if job is None:
                echo(f"{self.clock():%H:%M:%S} {self.pipeline} {status}: no job started yet")
            else:
                watcher = self._watchers.setdefault(job, Watcher(self.sm, self.s3, job, clock=self.clock,
                                                                 **self.watcher_kw))
                poll = with_backoff(watcher.poll, sleep=sleep)
                echo(f"[{self.pipeline} {status}] {poll.line()}")
                if poll.action == "stopped":
                    return EXIT_STALLED
            if status in PIPELINE_TERMINAL:
                if execution.get("FailureReason"):
                    echo(f"failure reason: {execution['FailureReason']}")
                return EXIT_COMPLETED if status == "Succeeded" else EXIT_FAILED
            if once:
                return EXIT_COMPLETED
            sleep(interval_s)
