"""``refinery plan``: instance-hours, wall time and cost of a run on SageMaker, from docs/s per core
and bytes per document measured on a sample of the user's own input. The model (docs/scale.md
explains each term):

    docs            = input_bytes / bytes_per_doc
    core_hours      = docs / docs_per_core_s / 3600
    instance_hours  = core_hours / (vcpus * vcpu_efficiency)            # compute only
    N instances     = the fewest that finish within the target (and within the 5-day job limit)
    jobs            = ceil(N / 100): a Processing job has at most 100 instances; jobs run in parallel
    per instance    : startup + instance_hours / N * (1 + straggler)      # inputs stream from S3
    billed hours    = N * wall;   compute cost = billed hours * price_per_hour (* (1 - spot_discount))
    S3              = GETs (input bytes / bytes per ranged read) + PUTs (objects written per shard)
                      + cross-region transfer when the input lives in another region

``docs_per_core_s`` and ``bytes_per_doc`` come from running the config in one process on a sample
(after a warm-up shard, so model loading is not counted) unless given; the spread across the
sample's shards gives the range the plan prints (the sample is small: treat it as the uncertainty).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: ml.c5.18xlarge: 72 vCPUs (36 cores x 2 hyperthreads), 144 GiB
C5_18XLARGE_VCPUS = 72
#: SageMaker on-demand list price of ml.c5.18xlarge (Processing and Training), us-east-1, USD/hour,
#: as published on https://aws.amazon.com/sagemaker/pricing/ when this was written. Prices vary by
#: region and change: pass --price-per-hour.
C5_18XLARGE_USD_PER_HOUR = 3.672
#: throughput of one vCPU of a fully loaded instance relative to one process alone on a core: two
#: hyperthreads share a core's execution units (typically ~1.2-1.3x one thread's throughput together)
VCPU_EFFICIENCY = 0.65
#: Common Crawl reference: ~100 TiB of gzipped WARC for ~3.4 billion pages per crawl (~32 KB/page,
#: request and metadata records included). For comparison with the sample's measured figure.
CC_WARC_BYTES_PER_DOC = 32_000
#: SageMaker limits a plan must respect (see refinery.launch.sagemaker.SERVICE_LIMITS)
MAX_INSTANCES_PER_JOB = 100
MAX_PROCESSING_HOURS = 5 * 24
#: S3 Standard request prices, us-east-1, USD per 1,000 requests (GET/LIST-class and PUT-class)
S3_GET_USD_PER_1000 = 0.0004
S3_PUT_USD_PER_1000 = 0.005
#: inter-region data transfer, USD per GB (the crawl bucket in another region than the jobs)
CROSS_REGION_USD_PER_GB = 0.02
#: bytes per ranged GET when streaming an input object (pyarrow's S3 reads); objects per input
#: shard written over the whole recipe (kept/removed/samples/stats per pass, dedup work files)
GET_BYTES = 8 * 2**20
PUTS_PER_SHARD = 60
#: a Common Crawl WARC object is ~1.1 GB
CC_WARC_OBJECT_BYTES = 1.1e9
#: what one instance can stream from S3 in the same region (MB/s), for the bandwidth check
S3_MB_S_PER_INSTANCE = 1000.0

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_WARC = ROOT / "data" / "sample" / "warc"
SAMPLE_DOCS = ROOT / "data" / "sample" / "cc_docs"


@dataclass
class Measurement:
    docs: int
    input_bytes: int
    #: the first pass's shards' own seconds plus the later passes' wall time (one core)
    core_seconds: float
    sample: str
    #: docs/s per core and bytes/doc of each measured shard (with at least MIN_SHARD_DOCS docs)
    shard_rates: list[float] = field(default_factory=list)
    shard_bytes_per_doc: list[float] = field(default_factory=list)

    @property
    def docs_per_core_s(self) -> float:
        return self.docs / self.core_seconds if self.core_seconds else 0.0

    @property
    def bytes_per_doc(self) -> float:
        return self.input_bytes / self.docs if self.docs else 0.0

    @property
    def rate_range(self) -> tuple[float, float] | None:
        """Slowest and fastest shard: the plan's uncertainty (None with fewer than two shards)."""
        return (min(self.shard_rates), max(self.shard_rates)) if len(self.shard_rates) >= 2 else None


MIN_SHARD_DOCS = 10


def default_sample(config: Any) -> Path:
    """WARCs when the config extracts HTML, else already-extracted documents."""
    return SAMPLE_WARC if any(s.type == "extract" for s in config.stages) else SAMPLE_DOCS


def _fetch_sample(sample: str, into: Path, max_files: int) -> list[Path]:
    """The first ``max_files`` input files of ``sample`` (a directory, a file, a paths manifest;
    local or s3://), copied to ``into``: a real sample of the user's own input."""
    from refinery.io import fs
    from refinery.plan import list_inputs

    files = list_inputs(sample)[:max_files]
    local = []
    for i, uri in enumerate(files):
        target = into / f"{i:03d}-{fs.basename(uri)}"
        target.write_bytes(fs.read_bytes(uri))
        local.append(target)
    return local


def measure(config: Any, sample: str | Path | None = None, repeat: int = 1, max_files: int = 4) -> Measurement:
    """Run ``config`` in this process (one core) over ``sample`` (default: the bundled one; else up to
    ``max_files`` files of the user's input, local or on S3); time the shards after a warm-up."""
    import json

    from refinery.pipeline import run_pipeline

    with tempfile.TemporaryDirectory(prefix="refinery-plan-") as tmp:
        fetched, warm, data = Path(tmp, "sample"), Path(tmp, "warm"), Path(tmp, "in")
        for d in (fetched, warm, data):
            d.mkdir()
        files = _fetch_sample(str(sample or default_sample(config)), fetched, max_files)
        shutil.copy(files[0], warm / files[0].name)
        for i in range(repeat):
            for f in files:
                shutil.copy(f, data / f"r{i}-{f.name}")
        run_pipeline(config, str(warm), str(Path(tmp, "warm-out")), executor="local", workers=1, progress=False)
        summary = run_pipeline(config, str(data), str(Path(tmp, "out")), executor="local", workers=1, progress=False)
        docs_read = summary.stats["docs_read"]
        if not docs_read:  # was "input size, docs/s per core and bytes per document must be positive"
            from refinery.config import ConfigError

            raise ConfigError(f"sample {sample or default_sample(config)}: no documents in its {len(files)} file(s) to "
                              "measure on: give --sample with documents, or --docs-per-core-s and --bytes-per-doc")
        out = Path(tmp, "out")
        # the passes after the first (dedup, tokens) by their wall time: their cost per document,
        # added to every shard's; the first pass by its shards' own seconds. The wall time of the
        # whole call also held a process pool's start-up per pass, a fixed cost that made the
        # estimate 3-6x its own range on a small sample (found by adversarial testing).
        markers = [json.loads(m.read_text()) for m in sorted((out / "passes").glob("*.json"))]
        first_pass = next(iter(summary.passes), None)
        later_s = sum(m.get("summary", {}).get("wall_seconds", 0.0) for m in markers if m.get("pass") != first_pass)
        later_per_doc = later_s / docs_read if docs_read else 0.0
        rates, sizes, first_s = [], [], 0.0
        sizes_by_name = {p.name: p.stat().st_size for p in data.iterdir()}
        for marker in sorted(out.rglob("stats/*.json")):
            if marker.parent.parent != out and marker.parent.parent.name != "filter":
                continue  # the first document pass reads the input
            shard = json.loads(marker.read_text())
            docs, seconds = shard.get("docs_read", 0), shard.get("seconds", 0.0)
            first_s += seconds
            size = next((v for k, v in sizes_by_name.items() if k.startswith(marker.stem)), None)
            if docs >= MIN_SHARD_DOCS and seconds > 0:
                rates.append(1.0 / (seconds / docs + later_per_doc))
                if size:
                    sizes.append(size / docs)
        total_bytes = sum(f.stat().st_size for f in files) * repeat
        return Measurement(docs_read, total_bytes, first_s + later_s, str(sample or default_sample(config)),
                           rates, sizes)


def max_runtime_hours(plan: "Plan") -> float:
    """The ``--max-runtime-hours`` to launch ``plan`` with: its wall time's upper end plus a
    quarter, in whole hours (launch's default of 24 stopped a plan of 99 h a quarter of the way;
    found by adversarial testing), within a Processing job's 5 days."""
    upper = plan.wall_h_range[1] if plan.wall_h_range else plan.wall_h
    return float(min(MAX_PROCESSING_HOURS, max(1, math.ceil(upper * 1.25))))


@dataclass
class Plan:
    input_tb: float
    docs: float
    docs_per_core_s: float
    bytes_per_doc: float
    instances: int  # in all, over every job
    instance_type: str
    vcpus: int
    vcpu_efficiency: float
    core_hours: float
    compute_instance_hours: float
    startup_h: float
    compute_h_per_instance: float
    wall_h: float
    billed_instance_hours: float
    price_per_hour: float
    spot_discount: float
    compute_cost_usd: float
    volume_gb: int
    jobs: int = 1  # Processing jobs run in parallel, each over its share of the input
    instances_per_job: int = 1
    s3_get_requests: float = 0.0
    s3_put_requests: float = 0.0
    s3_request_cost_usd: float = 0.0
    transfer_cost_usd: float = 0.0
    cost_usd: float = 0.0  # compute + S3 requests + transfer
    #: the wall time and cost at the slowest and fastest measured shard's docs/s (None: not measured)
    wall_h_range: tuple[float, float] | None = None
    cost_usd_range: tuple[float, float] | None = None
    s3_mb_s_per_instance: float = 0.0
    #: the wall-time target and whether this plan meets it; when it does not, what would:
    target_hours: float = 24.0
    max_instances: int = MAX_INSTANCES_PER_JOB
    meets_target: bool = True
    #: instances that would meet the target (None: no count can, start-up alone exceeds it)
    instances_needed: int | None = None
    #: docs/s per core that would meet the target on this plan's instances (None: no speed can)
    docs_per_core_s_needed: float | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def rnd(v: Any) -> Any:
            if isinstance(v, float):
                return round(v, 4)
            if isinstance(v, (tuple, list)):
                return [rnd(x) for x in v]
            return v

        return {k: rnd(v) for k, v in asdict(self).items()} | {"max_runtime_hours": max_runtime_hours(self)}


def estimate(
    input_tb: float,
    docs_per_core_s: float,
    bytes_per_doc: float,
    instances: int | None = None,
    target_hours: float = 24.0,
    instance_type: str = "ml.c5.18xlarge",
    vcpus: int = C5_18XLARGE_VCPUS,
    vcpu_efficiency: float = VCPU_EFFICIENCY,
    price_per_hour: float = C5_18XLARGE_USD_PER_HOUR,
    spot_discount: float = 0.0,
    startup_minutes: float = 8.0,
    straggler_frac: float = 0.05,
    max_instances: int = MAX_INSTANCES_PER_JOB,
    docs_per_core_s_range: tuple[float, float] | None = None,
    cross_region: bool = False,
    object_bytes: float = CC_WARC_OBJECT_BYTES,
    volume_gb: int = 100,
) -> Plan:
    """The cost model (module docstring). Without ``instances``: the fewest instances that finish
    within ``target_hours`` (and a Processing job's 5 days), split into parallel jobs of at most
    ``max_instances``."""
    if input_tb <= 0 or docs_per_core_s <= 0 or bytes_per_doc <= 0:
        raise ValueError("input size, docs/s per core and bytes per document must be positive")
    input_bytes = input_tb * 1e12
    docs = input_bytes / bytes_per_doc
    startup_h = startup_minutes / 60

    def compute_ih(rate: float) -> float:
        return docs / rate / 3600 / (vcpus * vcpu_efficiency)

    def wall(n: int, rate: float = docs_per_core_s) -> float:
        return startup_h + compute_ih(rate) / n * (1 + straggler_frac)

    limit_h = min(target_hours, MAX_PROCESSING_HOURS)
    room = limit_h - startup_h
    fewest = max(1, math.ceil(compute_ih(docs_per_core_s) * (1 + straggler_frac) / room - 1e-9)) if room > 0 else None
    chosen = instances if instances is not None else (fewest or 1)
    jobs = max(1, math.ceil(chosen / max_instances))
    per_job = math.ceil(chosen / jobs)
    wall_h = wall(chosen)
    compute_h = wall_h - startup_h
    billed = chosen * wall_h
    compute_cost = billed * price_per_hour * (1 - spot_discount)
    gets = input_bytes / GET_BYTES + input_bytes / object_bytes  # ranged reads + one HEAD-class call per object
    shards = input_bytes / object_bytes
    puts = shards * PUTS_PER_SHARD
    s3_cost = gets / 1000 * S3_GET_USD_PER_1000 + puts / 1000 * S3_PUT_USD_PER_1000
    transfer = input_bytes / 1e9 * CROSS_REGION_USD_PER_GB if cross_region else 0.0
    meets = wall_h <= target_hours
    needed = speed_needed = None
    if not meets:
        needed = fewest if target_hours <= MAX_PROCESSING_HOURS else None
        if target_hours > startup_h:
            per_n = compute_ih(docs_per_core_s) * (1 + straggler_frac)
            needed = max(1, math.ceil(per_n / (target_hours - startup_h) - 1e-9))
        compute_room = target_hours - startup_h
        if compute_room > 0:
            speed_needed = docs_per_core_s * compute_h / compute_room
    wall_range = cost_range = None
    if docs_per_core_s_range:
        lo, hi = sorted(docs_per_core_s_range)
        wall_range = (wall(chosen, hi), wall(chosen, lo))
        cost_range = tuple(chosen * w * price_per_hour * (1 - spot_discount) + s3_cost + transfer for w in wall_range)
    mb_s = input_bytes / chosen / max(compute_h * 3600, 1e-9) / 1e6
    warnings = []
    if spot_discount:
        # the model sizes Processing jobs, which have no managed spot: `launch --spot` discounts the
        # Ray Training step only (found by adversarial testing: the discount was applied silently)
        warnings.append(f"the {spot_discount:.0%} spot discount holds only for Training jobs: launch with --stage "
                        f"pipeline-ray --spot (the default pipeline runs the document pass as a Processing job, "
                        f"which has no spot capacity: at on-demand prices this is "
                        f"${billed * price_per_hour:,.0f} of compute)")
    if wall_h > MAX_PROCESSING_HOURS:
        warnings.append(f"{wall_h:,.1f} h exceeds a Processing job's {MAX_PROCESSING_HOURS} h limit: "
                        f"use at least {fewest} instances" if fewest else "no instance count fits the 5-day limit")
    if mb_s > S3_MB_S_PER_INSTANCE:
        warnings.append(f"each instance must stream {mb_s:,.0f} MB/s from S3 (~{S3_MB_S_PER_INSTANCE:,.0f} is "
                        "realistic): reading, not compute, would bound this plan")
    if jobs > 1:
        warnings.append(f"{chosen} instances run as {jobs} parallel jobs of <= {per_job} (a job has at most "
                        f"{max_instances}); they need an account quota of {chosen} {instance_type} for processing "
                        "job usage (the default is far lower: request an increase); split the input's paths manifest into "
                        f"{jobs} parts and launch one job per part; each part is then deduplicated within "
                        "itself only (duplicates across parts stay): a longer target or a faster config keeps "
                        "one job and one dedup")
    if cross_region:
        warnings.append(f"the input is in another region: ${transfer:,.0f} of transfer; run the jobs in the "
                        "input's region (Common Crawl: us-east-1)")
    return Plan(input_tb, docs, docs_per_core_s, bytes_per_doc, chosen, instance_type, vcpus, vcpu_efficiency,
                docs / docs_per_core_s / 3600, compute_ih(docs_per_core_s), startup_h, compute_h, wall_h, billed,
                price_per_hour, spot_discount, compute_cost, volume_gb, jobs, per_job, gets, puts, s3_cost, transfer,
                compute_cost + s3_cost + transfer, wall_range, cost_range, mb_s, target_hours, max_instances, meets,
                needed, speed_needed, warnings)


def target_verdict(plan: Plan) -> str | None:
    """One line when ``plan`` misses its wall-time target: by how much, and what would meet it
    (more instances, as several parallel jobs when one job's 100 are not enough; a faster config);
    None when the target is met."""
    if plan.meets_target:
        return None
    head = (f"target not met: {plan.wall_h:,.1f} h wall time on {plan.instances} instance(s) misses the "
            f"{plan.target_hours:g} h target")
    options = []
    if plan.instances_needed is None:
        options.append(f"no instance count can: start-up alone takes {plan.startup_h:.2f} h")
    elif plan.instances_needed > plan.max_instances:
        jobs = math.ceil(plan.instances_needed / plan.max_instances)
        options.append(f"{plan.instances_needed} instances would (above the {plan.max_instances}-instance job "
                       f"limit: split the input into {jobs} jobs)")
    else:
        options.append(f"{plan.instances_needed} instances would (--instances {plan.instances_needed})")
    if plan.docs_per_core_s_needed is not None:
        options.append(f"or a config/backend doing {plan.docs_per_core_s_needed:,.0f} docs/s per core "
                       f"(now {plan.docs_per_core_s:,.0f}) on {plan.instances} instances")
    options.append(f"or accept {plan.wall_h:,.1f} h (--target-hours {math.ceil(plan.wall_h * 10) / 10:g})")
    return f"{head}: " + ", ".join(options)


def render(plan: Plan, source: str) -> "rich.table.Table":  # noqa: F821
    from rich.table import Table

    jobs = f"{plan.jobs} jobs x {plan.instances_per_job}" if plan.jobs > 1 else f"{plan.instances}"
    t = Table(title=f"refinery plan: {plan.input_tb:g} TB on {jobs} x {plan.instance_type}")
    t.add_column("")
    t.add_column("value", justify="right")

    def span(r: tuple[float, float] | None, fmt: str) -> str:
        return f"  (range {fmt.format(r[0])} - {fmt.format(r[1])})" if r else ""

    rows = [
        ("documents", f"{plan.docs:,.0f}  ({plan.bytes_per_doc:,.0f} bytes/doc)"),
        ("throughput", f"{plan.docs_per_core_s:,.1f} docs/s per core  [{source}]"),
        ("core-hours", f"{plan.core_hours:,.0f}"),
        ("instance capacity", f"{plan.vcpus} vCPU x {plan.vcpu_efficiency:.2f} efficiency"),
        ("compute instance-hours", f"{plan.compute_instance_hours:,.1f}"),
        ("per instance", f"start {plan.startup_h:.2f} h + compute {plan.compute_h_per_instance:.2f} h "
                         f"(streams {plan.s3_mb_s_per_instance:,.0f} MB/s from S3)"),
        ("wall time", f"{plan.wall_h:,.2f} h" + span(plan.wall_h_range, "{:,.1f} h")),
        ("billed instance-hours", f"{plan.billed_instance_hours:,.1f}"),
        ("price", f"${plan.price_per_hour:.3f}/h" + (f" - {plan.spot_discount:.0%} spot" if plan.spot_discount else "")),
        ("compute", f"${plan.compute_cost_usd:,.0f}"),
        ("S3 requests", f"${plan.s3_request_cost_usd:,.0f}  ({plan.s3_get_requests:,.0f} GET, "
                        f"{plan.s3_put_requests:,.0f} PUT)"),
        ("cross-region transfer", f"${plan.transfer_cost_usd:,.0f}"),
        ("cost", f"${plan.cost_usd:,.0f}" + span(plan.cost_usd_range, "${:,.0f}")),
        ("--volume-gb", f"{plan.volume_gb:,} (scratch: inputs stream from S3)"),
        ("--max-runtime-hours", f"{max_runtime_hours(plan):g} (the wall time's upper end + 25%; "
                                f"launch's default 24 stops a longer job)"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t
