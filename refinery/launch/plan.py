"""``refinery plan``: instance-hours, wall time and cost of a run on SageMaker, from docs/s per core
measured on a sample. The model (docs/scale.md explains each term):

    docs            = input_bytes / bytes_per_doc
    core_hours      = docs / docs_per_core_s / 3600
    instance_hours  = core_hours / (vcpus * vcpu_efficiency)            # compute only
    per instance    : startup + download(input_bytes / N / download_MBps) + compute / N * (1 + straggler)
    wall            = that per-instance time (instances run in parallel)
    billed hours    = N * wall;   cost = billed hours * price_per_hour (* (1 - spot_discount))

``docs_per_core_s`` and ``bytes_per_doc`` come from running the config in one process on a sample
(after a warm-up shard, so model loading is not counted) unless given.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
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

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_WARC = ROOT / "data" / "sample" / "warc"
SAMPLE_DOCS = ROOT / "data" / "sample" / "cc_docs"


@dataclass
class Measurement:
    docs: int
    input_bytes: int
    core_seconds: float
    sample: str

    @property
    def docs_per_core_s(self) -> float:
        return self.docs / self.core_seconds if self.core_seconds else 0.0

    @property
    def bytes_per_doc(self) -> float:
        return self.input_bytes / self.docs if self.docs else 0.0


def default_sample(config: Any) -> Path:
    """WARCs when the config extracts HTML, else already-extracted documents."""
    return SAMPLE_WARC if any(s.type == "extract" for s in config.stages) else SAMPLE_DOCS


def measure(config: Any, sample: Path | None = None, repeat: int = 1) -> Measurement:
    """Run ``config`` in this process (one core) over ``sample``; time the shards after a warm-up."""
    from refinery.pipeline import run_pipeline
    from refinery.runner import INPUT_SUFFIXES

    sample = Path(sample or default_sample(config))
    files = sorted(p for p in (sample.rglob("*") if sample.is_dir() else [sample]) if p.name.lower().endswith(INPUT_SUFFIXES))
    if not files:
        raise ValueError(f"no input files under {sample}")
    with tempfile.TemporaryDirectory(prefix="refinery-plan-") as tmp:
        warm, data = Path(tmp, "warm"), Path(tmp, "in")
        warm.mkdir()
        data.mkdir()
        shutil.copy(files[0], warm / files[0].name)
        for i in range(repeat):
            for f in files:
                shutil.copy(f, data / f"r{i}-{f.name}")
        run_pipeline(config, str(warm), str(Path(tmp, "warm-out")), executor="local", workers=1, progress=False)
        t0 = time.perf_counter()
        summary = run_pipeline(config, str(data), str(Path(tmp, "out")), executor="local", workers=1, progress=False)
        elapsed = time.perf_counter() - t0
    return Measurement(summary.stats["docs_read"], sum(f.stat().st_size for f in files) * repeat, elapsed, str(sample))


@dataclass
class Plan:
    input_tb: float
    docs: float
    docs_per_core_s: float
    bytes_per_doc: float
    instances: int
    instance_type: str
    vcpus: int
    vcpu_efficiency: float
    core_hours: float
    compute_instance_hours: float
    startup_h: float
    download_h: float
    compute_h_per_instance: float
    wall_h: float
    billed_instance_hours: float
    price_per_hour: float
    spot_discount: float
    cost_usd: float
    volume_gb: int
    #: the wall-time target and whether this plan meets it; when it does not, what would:
    target_hours: float = 24.0
    max_instances: int = 100
    meets_target: bool = True
    #: instances that would meet the target (None: no count can, start-up alone exceeds it)
    instances_needed: int | None = None
    #: docs/s per core that would meet the target on this plan's instances (None: no speed can)
    docs_per_core_s_needed: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


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
    download_mb_s: float = 200.0,
    straggler_frac: float = 0.05,
    max_instances: int = 100,
) -> Plan:
    """The cost model (module docstring). Without ``instances``: the fewest instances (up to
    ``max_instances``, the Processing job limit) that finish within ``target_hours``."""
    if input_tb <= 0 or docs_per_core_s <= 0 or bytes_per_doc <= 0:
        raise ValueError("input size, docs/s per core and bytes per document must be positive")
    input_bytes = input_tb * 1e12
    docs = input_bytes / bytes_per_doc
    core_hours = docs / docs_per_core_s / 3600
    compute_instance_hours = core_hours / (vcpus * vcpu_efficiency)
    startup_h = startup_minutes / 60

    def per_instance(n: int) -> tuple[float, float, float]:
        download = input_bytes / n / (download_mb_s * 1e6) / 3600  # File mode copies inputs first
        compute = compute_instance_hours / n * (1 + straggler_frac)
        return download, compute, startup_h + download + compute

    if instances is None:
        instances = max_instances
        for n in range(1, max_instances + 1):
            if per_instance(n)[2] <= target_hours:
                instances = n
                break
    download_h, compute_h, wall_h = per_instance(instances)
    billed = instances * wall_h
    meets = wall_h <= target_hours
    needed = speed_needed = None
    if not meets:
        # wall(n) = startup + per_n / n: the fewest n with wall <= target, if start-up leaves room
        per_n = per_instance(1)[0] + per_instance(1)[1]
        room = target_hours - startup_h
        needed = max(1, math.ceil(per_n / room - 1e-9)) if room > 0 else None
        # the speed at which this plan's instances would finish in time (compute scales as 1/speed)
        compute_room = target_hours - startup_h - download_h
        if compute_room > 0:
            speed_needed = docs_per_core_s * compute_h / compute_room
    cost = billed * price_per_hour * (1 - spot_discount)
    # the instance's volume holds its share of the input (File mode) plus working space
    volume_gb = int(math.ceil(input_bytes / instances / 1e9 * 1.2 + 30))
    return Plan(input_tb, docs, docs_per_core_s, bytes_per_doc, instances, instance_type, vcpus, vcpu_efficiency,
                core_hours, compute_instance_hours, startup_h, download_h, compute_h, wall_h, billed,
                price_per_hour, spot_discount, cost, volume_gb, target_hours, max_instances, meets, needed,
                speed_needed)


def target_verdict(plan: Plan) -> str | None:
    """One line when ``plan`` misses its wall-time target: by how much, and what would meet it
    (more instances than the cap, the wall time reachable at the cap, a faster config); None when
    the target is met."""
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

    t = Table(title=f"refinery plan: {plan.input_tb:g} TB on {plan.instances} x {plan.instance_type}")
    t.add_column("")
    t.add_column("value", justify="right")
    rows = [
        ("documents", f"{plan.docs:,.0f}  ({plan.bytes_per_doc:,.0f} bytes/doc)"),
        ("throughput", f"{plan.docs_per_core_s:,.1f} docs/s per core  [{source}]"),
        ("core-hours", f"{plan.core_hours:,.0f}"),
        ("instance capacity", f"{plan.vcpus} vCPU x {plan.vcpu_efficiency:.2f} efficiency"),
        ("compute instance-hours", f"{plan.compute_instance_hours:,.1f}"),
        ("per instance", f"start {plan.startup_h:.2f} h + input copy {plan.download_h:.2f} h "
                         f"+ compute {plan.compute_h_per_instance:.2f} h"),
        ("wall time", f"{plan.wall_h:,.2f} h"),
        ("billed instance-hours", f"{plan.billed_instance_hours:,.1f}"),
        ("price", f"${plan.price_per_hour:.3f}/h" + (f" - {plan.spot_discount:.0%} spot" if plan.spot_discount else "")),
        ("cost", f"${plan.cost_usd:,.0f}"),
        ("suggested --volume-gb", f"{plan.volume_gb:,}"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t
