"""A recipe on SageMaker: which of its passes run in which job, and the shard stubs that split the
document pass over a Processing job's instances.

:func:`refinery.plan.plan_run` lists a recipe's passes in order. On SageMaker they form (at most)
two jobs, chained by a SageMaker Pipeline (:mod:`refinery.launch.pipelines`):

- ``filter``, the document pass, share-nothing per input file: a **Processing job**. Its N
  instances each run ``run_pipeline(only_passes=["filter"], only_shards=<their share>)``; the last
  instance to finish closes the pass.
- every pass after it -- the dedup passes, whose tasks shuffle data between workers, and
  ``tokens`` -- on one **Training job** running one Ray cluster, so the cluster starts once for
  all of them: ``run_pipeline(only_passes=[...], executor="ray")``.

An instance's share comes from ``ShardedByS3Key`` over *stubs*: the launcher writes one tiny JSON
object per input file, ``<output>/_jobs/<job>/shards/<shard>.json`` (``{"shard", "uri",
"fingerprint"}``), and makes that prefix the job's input channel. SageMaker copies each instance
its subset of the stubs (bytes, not terabytes) and the container reads its shards' documents from
S3 itself. Every instance plans the same recipe over the same S3 listing, so pass fingerprints
agree; the stubs carry the launch-time fingerprint, and an instance refuses to run when its own
differs (the input changed after the launch).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from refinery.launch.steps import JobKind

FILTER_STEP = "filter"
RAY_STEP = "ray-passes"


class PassLike(Protocol):
    name: str
    kind: str
    shuffles: bool


class PassInfo(NamedTuple):
    name: str
    kind: str
    shuffles: bool


@dataclass(frozen=True)
class JobGroup:
    """Passes that run in one SageMaker job (one pipeline step)."""

    step: str  # the pipeline step's name
    job: JobKind  # processing | ray
    passes: tuple[str, ...]
    container_step: str  # REFINERY_STEP: filter | passes

    @property
    def description(self) -> str:
        where = "share-nothing, split over the instances" if self.job == "processing" else "on one Ray cluster"
        return f"passes {', '.join(self.passes)} ({where})"


def recipe_passes(config: Any) -> list[PassInfo]:
    """The passes ``plan_run`` makes of ``config``, without listing the input (a dry run touches no
    network). ``tests/test_sagemaker.py`` checks that the two agree."""
    from refinery.plan import pass_layout

    return [PassInfo(*entry) for entry in pass_layout(config)]


def group_passes(passes: list[PassLike], all_on_ray: bool = False) -> list[JobGroup]:
    """The document pass as a Processing job, every later pass in one Ray Training job (or, with
    ``all_on_ray``, the whole recipe on the Ray cluster)."""
    names = tuple(p.name for p in passes)
    first = passes[0]
    if first.kind != "documents" or first.shuffles:
        raise ValueError(f"a recipe starts with its share-nothing document pass, not {first.name!r}")
    if all_on_ray:
        return [JobGroup(RAY_STEP, "ray", names, "passes")]
    groups = [JobGroup(FILTER_STEP, "processing", names[:1], "filter")]
    if names[1:]:
        groups.append(JobGroup(RAY_STEP, "ray", names[1:], "passes"))
    return groups


# -- stubs -------------------------------------------------------------------------------------------
def stubs_prefix(output_uri: str, job: str) -> str:
    from refinery.io import fs

    return fs.join(output_uri, "_jobs", job, "shards")


def launch_input_record(output_uri: str, job: str) -> str:
    """Where a launch records the input files it listed and the Parquet footers it checked (as a
    run's ``input_files.json``): the instances read no footer it found good, unchanged since."""
    from refinery.io import fs
    from refinery.rundir import INPUT_RECORD

    return fs.join(output_uri, "_jobs", job, INPUT_RECORD)


def stubs(plan: Any) -> dict[str, dict[str, str]]:
    """shard name -> stub for every input file of ``plan`` (a :class:`refinery.plan.Plan`):
    the filter pass's fingerprint, and its input's alone (which of the two changed)."""
    fingerprint, listing = plan.passes[0].fingerprint, plan.input_fingerprint
    return {name: {"shard": name, "uri": uri, "fingerprint": fingerprint, "input_fingerprint": listing}
            for uri, name in zip(plan.input_files, plan.shard_names())}


def write_stubs(plan: Any, prefix: str, threads: int = 32) -> int:
    """Upload one stub per shard under ``prefix`` (in parallel: a crawl has ~10^5 files)."""
    from refinery.io import fs

    items = stubs(plan)

    def put(name: str) -> None:
        fs.write_bytes(fs.join(prefix, f"{name}.json"), json.dumps(items[name]).encode())

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(put, items))
    return len(items)


def read_stubs(directory: str) -> list[dict[str, str]]:
    """The stubs SageMaker copied to this instance (none when it got no share)."""
    if not os.path.isdir(directory):
        return []
    return [json.loads(p.read_text()) for p in sorted(Path(directory).rglob("*.json"))]


def check_stubs(plan: Any, mine: list[dict[str, str]]) -> set[str]:
    """The shard names of this instance's stubs, after checking they belong to ``plan``."""
    expected = stubs(plan)
    for stub in mine:
        want = expected.get(stub["shard"])
        if want is None:
            raise ValueError(f"stub {stub['shard']!r} ({stub['uri']}) is not an input shard of {plan.input} any more")
        if stub["fingerprint"] == want["fingerprint"]:
            continue
        if stub.get("input_fingerprint", want["input_fingerprint"]) != want["input_fingerprint"]:
            raise ValueError(f"the input under {plan.input} changed since the launch (filter fingerprint "
                             f"{stub['fingerprint']} at launch, {want['fingerprint']} now): launch again")
        raise ValueError(f"this image plans the filter pass unlike the launch did (fingerprint {stub['fingerprint']} "
                         f"at launch, {want['fingerprint']} here) over the same input: its refinery, stage defaults "
                         f"or library versions differ from the launching checkout's jobs/requirements.lock; "
                         f"build the image from that checkout (refinery launch builds it) and launch again")
    return {s["shard"] for s in mine}
