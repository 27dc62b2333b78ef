"""Chain the dedup passes over a run directory's ``kept/*.parquet`` shards and produce a new run
directory (``kept/``, ``removed/``, ``stats/``, ``stats.json``) exactly like a pipeline run.

Fuzzy (``minhash``), ``exact`` and ``url`` dedup share one flow::

    signatures (per shard) -> buckets (per shard, P key ranges) -> candidates (per key range)
      -> connected components (large-star / small-star rounds, Q node partitions)
      -> removal lists (per shard) -> removal run (per shard, the normal ShardRunner + a stage)

``substring`` (EXACTSUBSTR-CUT) runs suffix-array partitions, then the runner with a cutting stage.
Intermediate files live in the *dedup directory* (default ``<output>/dedup``), next to
``manifest.json`` (what the removal stage reads) and ``dedup_stats.json``. A pass that finished
writes ``passes/<pass>.json``; re-running the same command resumes after the last finished pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from refinery import __version__
from refinery.dedup import components
from refinery.dedup.config import DedupConfig
from refinery.executors import Executor, make_executor
from refinery.dedup.passes import (
    DedupInputError,
    bucket_task,
    candidate_task,
    footer_text_bytes,
    index_version,
    large_star_task,
    removal_list_task,
    removal_run_task,
    signature_task,
    small_star_task,
    text_bytes_by_uri,
    verify_attach_task,
    verify_task,
)
from refinery.dedup.resume import PLAN_FILE, resumable_step
from refinery.dedup.substring import (
    SUBSTRING_BYTES_PER_CHAR,
    SUBSTRING_BYTES_PER_TOKEN,
    substring_task,
)
from refinery.io import fs, parquet
from refinery.io.runlock import CLAIM_FILE, LOCK_FILE, OutputClaim, confirm_claim, output_guard
from refinery.rundir import (
    PassDir,
    RunDir,
    clear_shard_outputs,
    damaged_outputs,
    inner_directory_refusal,
    last_pass_refusal,
    output_sizes,
    parent_dir,
    pass_of_run,
    remove_orphan_shards,
    runs_inside_refusal,
    shard_files,
)
from refinery.runner import PassWrites, shard_name

log = logging.getLogger("refinery.dedup")

MANIFEST_VERSION = 1
#: resident memory of a fresh worker before it loads any data (interpreter, numpy, pyarrow); the
#: floor of :func:`worker_baseline_bytes`, which measures the workers a pass will really run on
TASK_BASELINE_BYTES = 160 * 2**20
#: peak bytes per bucket row in a candidate task: 16 read + sorting, star edges and the shuffle
#: write. Measured 75 B/row on synthetic signatures (1M docs x 14 bands, one partition: 1.1 GiB)
#: but 96-98 B/row on real-text corpora at 7-9M rows per partition (the 1M-document scale run:
#: 9.1M rows peaked at 1,155 MB over a 300 MB worker; 7.0M rows at 906 MiB over 261 MiB)
CANDIDATE_BYTES_PER_ROW = 104
#: peak bytes per directed edge in a large-star task: 16 read + ~93 for dedup, grouping, output
EDGE_BYTES_PER_ROW = 112
MAX_CC_ROUNDS = 64

#: stage registry type and removal reason per method
STAGE_OF_METHOD = {"minhash": "minhash_dedup", "exact": "exact_dedup", "url": "url_dedup", "substring": "substring_dedup"}
STAGE_OF_METHOD["lines"] = "lines_dedup"  # corpus-level repeated-line removal (refinery/dedup/lines.py)
STAGE_OF_METHOD["decontaminate"] = "decontaminate"


class DedupError(RuntimeError):
    pass


@dataclass
class Shard:
    name: str
    uri: str
    index: int


def list_shards(input_dir: str) -> list[Shard]:
    """The Parquet shards a run directory kept (its last document pass), or of ``input_dir`` itself.

    A run directory's shard is finished only once its ``stats/<shard>.json`` marker exists (the
    runner writes it last): a kept shard without it (a shard that failed after publishing kept/,
    e.g. when its removed/ upload was refused) is not read, and the run is refused, naming them."""
    of_run = pass_of_run(input_dir)
    # the last pass keeps into the run's kept/: its own directory holds removed/, samples/ and
    # its index, read as documents (review h99: "lacks column(s) ['id', 'text']")
    if of_run is not None and (refusal := last_pass_refusal(input_dir, *of_run)):
        raise DedupInputError(refusal)
    run = RunDir(input_dir)
    unfinished = run.unfinished_last_pass()
    if unfinished:
        # its kept/ is not the corpus yet (a run in its first pass has none, and every Parquet file
        # under it, removed/ and samples/ included, was read as input; found by adversarial testing)
        raise DedupInputError(f"{input_dir} has not finished its {unfinished!r} pass (the run is still at work, or "
                              f"was stopped or failed: `refinery status {input_dir}`): finish the run first (run "
                              f"the same `refinery run` command again)")
    last = run.document_pass_dirs()[-1]
    kept = last.kept_dir
    is_run = fs.exists(kept)
    root = kept if is_run else input_dir
    runs_below: list[str] = []
    try:
        files = fs.list_files(root, (".parquet",), runs=runs_below)
    except fs.StorageError as exc:
        raise DedupInputError(str(exc)) from None
    # after the listing, as `refinery run -i`: a path that is not there is "not found", whatever
    # run holds it (it was "the x/ directory of the refinery run": session 47, h175)
    if of_run is None and (refusal := inner_directory_refusal(input_dir, give_the_run=True)):
        raise DedupInputError(refusal)
    # a run below (`two` for `two/run`, or beside other shards): its documents would be left out
    if refusal := runs_inside_refusal(input_dir, runs_below, len(files), give_the_run=True):
        raise DedupInputError(refusal)
    if not files:
        raise DedupInputError(f"no Parquet shards under {root}")
    if not is_run:
        from refinery.plan import run_outputs_refusal

        # a run below without its run.json: its kept/, removed/ and samples/ were read as documents,
        # failing in the tasks on samples' missing `text` (session 47, h172)
        if refusal := run_outputs_refusal(input_dir, files):
            raise DedupInputError(refusal)
    names = [shard_name(f, root) for f in files]
    first: dict[str, str] = {}
    for f, name in zip(files, names):
        if name in first:  # two shards' outputs would overwrite each other's
            raise DedupInputError(f"input files {first[name]} and {f} under {root} map to the same shard name "
                                  f"{name!r} (a shard is named by its path without the suffix): rename one")
        first[name] = f
    if is_run and _is_run_dir(input_dir, last):
        try:  # no stats/ at all: no shard finished
            finished = {fs.basename(u)[: -len(".json")] for u in fs.list_files_if_any(last.stats_dir, (".json",))}
        except fs.StorageError as exc:  # a failed listing: not "every shard is unfinished"
            raise DedupInputError(str(exc)) from None
        unfinished = sorted(set(names) - finished)
        if unfinished:
            raise DedupInputError(
                f"{input_dir} has unfinished shards (kept/ without stats/<shard>.json), {len(unfinished)} of "
                f"{len(names)}: "
                f"{', '.join(unfinished[:5])}{' ...' if len(unfinished) > 5 else ''}; their removed documents "
                f"may be missing: finish the run first (run the same `refinery run` command again)")
    order = sorted(range(len(files)), key=lambda i: names[i])
    return [Shard(names[i], files[i], k) for k, i in enumerate(order)]


def _warn_failed_shards(input_dir: str, read: set[str]) -> None:
    """Name, in one warning, the shards of the run ``input_dir`` comes from (a run directory, a
    pass directory, or a ``kept/`` of either) that failed there (``failed/<shard>.json``) and so
    are not read: as ``refinery run`` names the shards it sets aside (executor.max_failed_fraction)
    and runs its later passes without them. Deduplicating the finished shards was silent."""
    failed: dict[str, str] = {}
    for pass_dir in _upstream_passes(input_dir):
        # no failed/: none failed (a failed listing is no answer: raised)
        failed |= {fs.basename(u)[: -len(".json")]: pass_dir.failed_dir
                   for u in fs.list_files_if_any(pass_dir.failed_dir, (".json",))}
    missing = sorted(set(failed) - read)
    if missing:
        where = sorted({failed[m] for m in missing})
        log.warning("input %s: %d shard(s) of its run failed there and have no kept documents (their errors are in %s): "
                    "deduplicating without them; rerun that run to retry them first: %s%s", input_dir, len(missing),
                    ", ".join(where), ", ".join(missing[:5]), " ..." if len(missing) > 5 else "")


def _upstream_passes(input_dir: str) -> list[PassDir]:
    """The document passes of the run whose documents ``input_dir`` holds, up to the one that
    kept them: a run directory's every pass, a pass directory's passes up to it, and for a
    ``kept/`` directory those of the directory holding it."""
    root = input_dir
    if fs.basename(input_dir) == "kept" and not fs.exists(fs.join(input_dir, "kept")):
        root = parent_dir(input_dir) or input_dir
    of_run = pass_of_run(root)
    if of_run is not None:
        run, this = of_run
        passes = run.document_pass_dirs()
        return passes[: [p.root for p in passes].index(this.root) + 1]
    if fs.is_run_directory(root):
        return RunDir(root).document_pass_dirs()
    return [PassDir(root)]


def _is_run_dir(root: str, last: PassDir) -> bool:
    """A run directory (``run.json``, or a pass that records stats or failures), as opposed to a
    plain directory of Parquet shards under ``kept/``."""
    return fs.file_exists(RunDir(root).run_json) or any(fs.exists(u) for u in (last.stats_dir, last.failed_dir))


class WorkDir:
    """The dedup directory: paths, the manifest and per-pass markers."""

    def __init__(self, root: str, fingerprint: str, force: bool, output: str | None = None, *, method: str) -> None:
        self.root = root
        #: names the pass in its steps' progress labels: a recipe's url and minhash passes both
        #: ran "dedup/signatures", and the per-label progress counts added them together
        self.method = method
        self.fingerprint = fingerprint
        self.force = force
        #: where the removal run writes, recorded in the manifest: a shared --work-dir's manifest
        #: names another output's shards, which are not this output's leftovers (_indexed_by)
        self.output = output
        #: an index begun by refinery 0.8.8 or before: the run directory's spelling its fingerprint
        #: hashed the shards' full paths under, kept in the manifest for the next resume elsewhere
        self.hashed_root: str | None = None

    def path(self, *parts: str) -> str:
        return fs.join(self.root, *parts)

    def done(self, name: str) -> dict[str, Any] | None:
        uri = self.path("passes", f"{name}.json")
        data = None if self.force else fs.read_bytes_if_any(uri)  # one GET (was a look, then the read)
        if data is None:
            return None
        marker = json.loads(data)
        if marker.get("fingerprint") != self.fingerprint:
            return None
        return marker

    def finish(self, name: str, summary: dict[str, Any]) -> dict[str, Any]:
        summary = {"fingerprint": self.fingerprint, **summary}
        fs.write_bytes(self.path("passes", f"{name}.json"), json.dumps(summary, indent=1).encode())
        return summary

    def planned(self, step: str, plan: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The plan (partition counts, the measured worker baseline) ``step`` began with under this
        fingerprint, else ``plan()``, recorded before the step's first task runs: partitions follow
        a worker baseline measured anew on each run, and a rerun that planned other partitions
        would redo every task its stop had left finished."""
        uri = self.path("tasks", step, PLAN_FILE)  # (beside the step's task records: resume.StepRecords)
        try:
            record = None if self.force else json.loads(fs.read_bytes_if_any(uri) or b"null")
        except ValueError:  # a damaged record plans nothing
            record = None
        if isinstance(record, dict) and record.get("fingerprint") == self.fingerprint and isinstance(record.get("plan"), dict):
            return record["plan"]
        made = plan()
        fs.write_bytes(uri, json.dumps({"fingerprint": self.fingerprint, "plan": made}).encode())
        return made


def _clear_stale_index(work: WorkDir) -> None:
    """Delete an index built for another fingerprint (or any, with ``--force``) before redoing it.

    Index steps write one file per partition (``candidates/part-00002.parquet``), and the number of
    partitions follows the data and the memory budget: a redo with fewer partitions left the old
    run's extra parts beside the new ones, so the directory read as a dataset mixed two configs'
    results (found by h112). An index with a step finished under this fingerprint is resumed, kept.
    A directory without a step marker is no index a dedup finished a step of: left alone (a user's
    own ``OUTPUT/dedup/``, which `refinery dedup` took as its work dir, was deleted whole; h122)."""
    fingerprints = _step_fingerprints(work)
    if not fingerprints or (not work.force and work.fingerprint in fingerprints):
        return
    # the step markers go last: killed midway, the index left still shows it is one to delete
    top = fs.absolute(work.root).rstrip("/") + "/"
    for name in sorted({f.removeprefix(top).split("/", 1)[0] for f in fs.list_files(work.root)} - {"passes"}):
        fs.delete_tree(work.path(name))
        fs.delete(work.path(name))  # (a file: delete_tree deletes directories only)
    fs.delete_tree(work.root)


def _step_fingerprints(work: WorkDir) -> set[str]:
    """The fingerprints of the index steps finished in ``work`` (its ``passes/<step>.json``)."""
    markers = work.path("passes")
    found: set[str] = set()
    for uri in fs.list_files_if_any(markers, (".json",)):
        try:
            marker = json.loads(fs.read_bytes(uri))
        except ValueError:  # a marker that cannot be read is not this index's
            continue
        if isinstance(marker, dict) and isinstance(marker.get("fingerprint"), str):
            found.add(marker["fingerprint"])
    return found


def _summarize(results: list[dict[str, Any]], wall: float, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Sum numeric counters over tasks; keep the max of peaks."""
    summary: dict[str, Any] = {"tasks": len(results), "wall_seconds": round(wall, 3)}
    for r in results:
        for k, v in r.items():
            if k in skip or k in ("pid",) or isinstance(v, (bool, dict, list)) or v is None:
                continue
            if k in ("peak_rss", "max_partition_rows", "largest"):
                summary[f"{k}_max" if not k.endswith("_max") else k] = max(summary.get(f"{k}_max", 0), v)
            elif isinstance(v, (int, float)):
                summary[k] = summary.get(k, 0) + v
    if "seconds" in summary:
        summary["task_seconds"] = round(summary.pop("seconds"), 3)
    summary["worker_pids"] = sorted({r["pid"] for r in results if "pid" in r})
    return summary


def _run_pass(work: WorkDir, name: str, fn: Callable[..., dict[str, Any]], tasks: list[dict[str, Any]],
              executor: Executor, names: list[str], units: str = "docs",
              extra: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
              fresh_workers: bool = False) -> dict[str, Any]:
    marker = work.done(name)
    if marker is not None:
        log.info("[dedup] pass %s already finished, skipping", name)
        return marker
    started = time.time()
    with resumable_step(work, name, fn, tasks, executor, names, f"dedup/{work.method}/{name}", units,
                        fresh_workers) as results:
        summary = _summarize(results, time.time() - started)
        if extra:
            summary.update(extra(results))
        return work.finish(name, summary)  # the marker stands for every task: no record written


def _fingerprint(method: str, params: dict[str, Any], shards: list[Shard], upstream: str | None = None,
                 run_root: str | None = None) -> str:
    """The index's fingerprint. ``run_root``: the run directory of a pass of a plan, whose shards
    lie inside it and are hashed by their paths under it, so a run moved or copied elsewhere (``mv``,
    an S3 sync, another spelling of the same directory) resumes its index; a standalone dedup's
    shards are its input, hashed where they are."""
    return _hash_identity(method, params, [(s.name, _under(s.uri, run_root)) for s in shards], upstream)


def _hash_identity(method: str, params: dict[str, Any], shards: list[tuple[str, str]], upstream: str | None) -> str:
    from refinery.plan import DEDUP_LIBRARIES, library_version

    from refinery import __version__

    # refinery's version: what the methods decide changes with it (0.4.0's normalisation); a
    # standalone index of another version was reused silently (found by a review)
    identity = {"method": method, "params": params, "shards": shards, "upstream": upstream,
                "refinery": __version__}
    libraries = DEDUP_LIBRARIES.get(method, ())
    if libraries:  # a standalone index built by another rensa is not reused (found by adversarial testing)
        identity["code"] = {dist: library_version(dist) for dist in libraries}
    blob = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _under(uri: str, root: str | None) -> str:
    """``uri`` relative to ``root`` when ``root`` is given and ``uri`` is spelled under it, else ``uri``."""
    if root is None:
        return uri
    top = root.rstrip("/") + "/"
    return uri[len(top):] if uri.startswith(top) else uri


def _pass_fingerprint(work_root: str, method: str, params: dict[str, Any], shards: list[Shard], upstream: str | None,
                      run_root: str, recorded_root: str | None) -> tuple[str, str | None]:
    """A plan pass's index fingerprint: by the shards' paths under the run (:func:`_fingerprint`),
    or, for an index an earlier refinery (0.8.8 and before) began, the one it hashed with the
    shards' full paths, as the run directory was spelled then, so that run resumes its index and
    removal shards instead of redoing them. The spellings tried: the one of now (resumed in
    place), the run's previous ``run.json`` (``recorded_root``: moved since), and the one its
    index's manifest recorded (moved, then resumed and stopped again). Returns the fingerprint and,
    for such an index, the spelling it hashed (else None)."""
    current = _fingerprint(method, params, shards, upstream, run_root)
    found = _step_fingerprints(WorkDir(work_root, current, False, method=method))
    try:
        manifest = fs.read_json_if_any(fs.join(work_root, "manifest.json")) or {}
    except ValueError:  # a manifest that cannot be read names no fingerprint
        manifest = {}
    if isinstance(manifest, dict) and isinstance(manifest.get("fingerprint"), str):
        found.add(manifest["fingerprint"])
    if not found or current in found:
        return current, None
    relative = [(s.name, _under(s.uri, run_root)) for s in shards]
    for root in _earlier_spellings(run_root, recorded_root, manifest, relative):
        legacy = _hash_identity(method, params, [(n, f"{root}/{rel}") for n, rel in relative], upstream)
        if legacy in found:
            log.info("[dedup %s] resuming the index an earlier refinery began with the run at %s", method, root)
            return legacy, root
    return current, None


def _earlier_spellings(run_root: str, recorded_root: str | None, manifest: dict[str, Any],
                       relative: list[tuple[str, str]]) -> list[str]:
    """The run directory's spellings an index begun by an earlier refinery may have hashed."""
    hashed = manifest.get("hashed_root")  # an earlier resume of such an index elsewhere
    roots = [run_root, recorded_root or "", hashed if isinstance(hashed, str) else ""]
    manifest = manifest if isinstance(manifest, dict) else {}
    by_name = dict(relative)
    for s in manifest.get("shards") or []:  # a manifest's shard ends with its path under the run
        uri, rel = (s.get("uri"), by_name.get(s.get("name"))) if isinstance(s, dict) else (None, None)
        if isinstance(uri, str) and rel and uri.endswith("/" + rel):
            roots.append(uri[: -len(rel) - 1])
    return list(dict.fromkeys(r.rstrip("/") for r in roots if r))


def _method_params(config: DedupConfig) -> dict[str, Any]:
    if config.method == "decontaminate":  # includes the benchmark files' identity (size, mtime)
        from refinery.dedup.decontaminate import method_params

        return method_params(config)
    if config.method == "minhash":
        # a preset only fills num_perm/bands/rows, dumped here as resolved: `--preset default` is
        # the same pass as no preset (it was refused as another setting; found by adversarial testing)
        return _without_unread(config.minhash.model_dump() | {"preset": None})
    if config.method == "substring":
        return config.substring.model_dump() | {"memory_budget": config.memory_budget}
    if config.method == "lines":  # partitions do not change the result: memory_budget is not part of it
        from refinery.dedup.config import without_added_defaults
        from refinery.dedup.lines import KEEPER_KEY

        # settings added later are left out at their old value, as in a plan's fingerprint: the
        # index and removal shards of a `refinery dedup` made before them are reused, not redone
        lines = without_added_defaults({"lines": config.lines.model_dump()})["lines"]
        return lines | {"keeper_key": KEEPER_KEY}
    return {"seed": config.minhash.seed}


#: params of a pass (:func:`_method_params`) that sit at the top of a dedup YAML, not in a section
_TOP_LEVEL_PARAMS = frozenset({"memory_budget", "partitions", "benchmark_files", "keeper_key"})


def _as_config_keys(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A pass's params nested as a dedup YAML spells them, so that a refusal names the key to
    change (``minhash.threshold``, ``substring.min_words``; URL and exact dedup read
    ``minhash.seed``): flat, ``min_words`` and ``keep_first`` could be the substring or the
    lines section's, and the docs and ``refinery run`` name them with their section."""
    section = "minhash" if method in ("minhash", "url", "exact") else method
    inner = {k: v for k, v in params.items() if k not in _TOP_LEVEL_PARAMS}
    return {section: inner} | {k: v for k, v in params.items() if k in _TOP_LEVEL_PARAMS}


#: MinHash settings read only by candidate verification: without it (``verify: false``) the
#: signatures store no slots, no pair is checked and no removal is, so they change nothing
VERIFY_ONLY = ("threshold", "verify_slots")


def _without_unread(params: dict[str, Any]) -> dict[str, Any]:
    """MinHash params without :data:`VERIFY_ONLY` when verification is off."""
    return params if params.get("verify", True) else {k: v for k, v in params.items() if k not in VERIFY_ONLY}


def _resident_probe_task(pause: float) -> dict[str, Any]:
    from refinery.dedup.passes import drop_removal_runner
    from refinery.executors.base import resident_bytes

    drop_removal_runner()  # an earlier pass's index held for its removal run is not this pass's baseline
    time.sleep(pause)  # held briefly so that the probes spread over all of the pool's workers
    return {"resident": resident_bytes()}


def worker_baseline_bytes(executor: Executor, method: str | None = None) -> int:
    """What a worker already holds before a dedup task loads anything: in a recipe run the pool and
    Ray workers are long-lived and keep the filter stages' models (~300 MB), so a fixed fresh-worker
    figure would let a partition outgrow its budget. One short probe per worker slot; the largest
    resident set counts, never less than :data:`TASK_BASELINE_BYTES`."""
    slots = executor.capacity
    probes = [{"pause": 0.05 if slots > 1 else 0.0}] * slots  # one slot: nothing to spread over
    label = f"dedup/{method}/worker-memory" if method else "dedup/worker-memory"
    results = executor.run(_resident_probe_task, probes, label=label,
                           names=[f"probe-{i}" for i in range(len(probes))], units="probes")
    measured = max((int(r.get("resident", 0)) for r in results), default=0)
    return max(TASK_BASELINE_BYTES, measured)


def partitions_for(rows: int, bytes_per_row: int, budget: int, baseline: int = TASK_BASELINE_BYTES) -> int:
    usable = max(budget - max(baseline, TASK_BASELINE_BYTES), 16 * 2**20)
    return max(1, math.ceil(rows * bytes_per_row / usable))


def run_dedup(input_dir: str, output_dir: str, config: DedupConfig, executor: Executor | None = None,
              work_dir: str | None = None, force: bool = False, *, shards: list[Shard] | None = None,
              out: PassDir | None = None, upstream: str | None = None, run_root: str | None = None,
              recorded_root: str | None = None) -> dict[str, Any]:
    """Deduplicate the shards of ``input_dir`` into the run directory ``output_dir``; returns the
    dedup stats (also written to ``<work_dir>/dedup_stats.json`` and ``<output_dir>/dedup_stats.json``).

    As a pass of a plan: ``shards`` (the previous pass's finished kept shards), ``out`` (this
    pass's directory; its ``index/`` holds the work files) and ``upstream`` (the previous pass's
    fingerprint, so an index built from other inputs is never reused); the plan owns ``run.json``.
    ``run_root``: the run directory, under which the index hashes the shards' paths (so a moved
    run resumes it); ``recorded_root``: the run directory as its previous ``run.json`` named it.
    """
    if executor is None:  # before the input is listed: a missing-credentials error there advises for it
        fs.executor_kind = config.executor.type
    checked: set[str] = set()  # shards whose columns were checked before the lock
    if shards is None:
        # standalone (`refinery dedup`): writing into the run it reads would replace its run.json,
        # stats and kept shards with this pass's; refused before the lock is taken, which would
        # leave its .lock file in the input
        from refinery.plan import check_not_inside_a_run, check_separate

        check_separate(fs.validate_uri(input_dir), fs.validate_uri(output_dir))
        check_not_inside_a_run(fs.validate_uri(output_dir))
        checked = _refuse_before_the_lock(fs.validate_uri(input_dir), fs.validate_uri(output_dir), config, work_dir,
                                          force)
    owned = executor is None
    executor = executor or make_executor(config.executor.type, config.executor.workers,
                                         ray_address=config.executor.ray_address,
                                         object_store_memory=config.executor.object_store_memory,
                                         max_retries=config.executor.max_retries,
                                         allocator=config.executor.allocator)
    if getattr(executor, "kind", "") == "ray":  # Ray workers run in their raylet's directory, not ours
        input_dir, output_dir = fs.absolute(input_dir), fs.absolute(output_dir)
        work_dir = fs.absolute(work_dir) if work_dir else None
    # standalone (`refinery dedup`): two of them on one output would redo and rename each other's
    # shards, like two runs (on S3: overwrite them); a pass of a plan (explicit shards) runs under
    # the plan's lock. The guard wraps the executor it owns (as run_pipeline's does): it is let go
    # only once the workers are gone (closed, or stopped on Ctrl-C / SIGTERM); inside, an
    # interrupted dedup released it while its workers still wrote. (An executor passed in is the
    # caller's to close, and so to hold its output meanwhile.)
    settings = {"input": input_dir, "method": config.method, "force": force}
    with nullcontext() if shards is not None else output_guard(fs.validate_uri(output_dir), "dedup", settings) as claim:
        with executor if owned else nullcontext():
            return _run_dedup(input_dir, output_dir, config, executor, work_dir, force, shards, out, upstream, claim,
                              run_root, recorded_root, columns_of=checked)


def _refuse_before_the_lock(input_dir: str, output_dir: str, config: DedupConfig, work_dir: str | None,
                            force: bool) -> dict[str, int]:
    """Make a standalone dedup's refusals before its lock creates OUTPUT and OUTPUT/.lock (on S3:
    its claim, OUTPUT/.claim): a refused dedup left an empty OUTPUT holding only .lock (found by
    trials). Removing them afterwards could remove a directory the user made, or a lock file
    another process has open, so nothing is made. They are made again under the lock or claim
    (:func:`_run_dedup`); only for a lock or claim not there yet. Returns the checked shards'
    text bytes by URI (:func:`_check_columns`)."""
    if fs.file_exists(fs.join(output_dir, CLAIM_FILE if fs.is_s3(output_dir) else LOCK_FILE)):
        return {}  # an existing lock file or claim means nothing new is made
    shards = list_shards(input_dir)
    _check_output_is_dedup(RunDir(output_dir), {s.name for s in shards}, force,
                           fs.validate_uri(work_dir or fs.join(output_dir, "dedup")))
    checked = _check_columns(shards, config.method)
    if not force:  # with --force it replaces another method's marker: under the lock only
        _check_rerun(RunDir(output_dir), config, force)
    return checked


def _run_dedup(input_dir: str, output_dir: str, config: DedupConfig, executor: Executor, work_dir: str | None,
               force: bool, shards: list[Shard] | None, out: PassDir | None, upstream: str | None,
               claim: OutputClaim | None = None, run_root: str | None = None,
               recorded_root: str | None = None, columns_of: dict[str, int] | None = None) -> dict[str, Any]:
    """``columns_of``: the text bytes of the shards whose columns were checked before the lock, by
    URI (their footers are not read again)."""
    input_dir, output_dir = fs.validate_uri(input_dir), fs.validate_uri(output_dir)
    out = out or PassDir(output_dir)
    work_root = fs.validate_uri(work_dir or (out.index_dir if upstream else fs.join(output_dir, "dedup")))
    standalone = shards is None
    shards = shards if shards is not None else list_shards(input_dir)
    text_bytes: dict[str, int] = {}  # by URI, from the footers the column check read
    if standalone:
        _warn_failed_shards(input_dir, {s.name for s in shards})
        # what the input holds now, not only its file names: an index and removal shards built from
        # an earlier version of the run (redone since with other settings) are not reused
        versions = fs.file_versions(input_dir, [s.uri for s in shards])
        upstream = "files:" + hashlib.sha256(json.dumps(sorted(versions.items())).encode()).hexdigest()[:16]
        _check_output_is_dedup(RunDir(output_dir), {s.name for s in shards}, force, work_root)
        text_bytes = (columns_of or {}) | _check_columns([s for s in shards if s.uri not in (columns_of or {})],
                                                         config.method)
        recorded = _check_rerun(RunDir(output_dir), config, force)
        remove_orphan_shards(out, {s.name for s in shards}, f"dedup {config.method}")
    method = config.method
    params = _method_params(config)
    if standalone and recorded is not None:
        params = recorded  # the same pass, hashed as recorded: its index and removals are reused
    fingerprint, hashed_root = (_pass_fingerprint(work_root, method, params, shards, upstream, run_root, recorded_root)
                                if run_root is not None and not force
                                else (_fingerprint(method, params, shards, upstream, run_root), None))
    work = WorkDir(work_root, fingerprint, force, output=out.root, method=method)
    work.hashed_root = hashed_root
    if work_dir is None:  # the pass's own index directory (a shared --work-dir is the user's to clear)
        _clear_stale_index(work)
    if standalone:
        _redo_damaged_shards(out, _standalone_name(config), work.fingerprint, {s.name for s in shards})
    started = time.time()
    log.info("[dedup %s] %d shard(s) from %s -> %s (work dir %s, executor %s)", method, len(shards), input_dir,
             output_dir, work_root, executor.kind)
    passes: dict[str, Any] = {}
    if method == "substring":
        extra = _substring_passes(work, shards, config, executor, passes, text_bytes)
    elif method == "lines":
        from refinery.dedup.lines import lines_passes

        extra = lines_passes(work, shards, config, executor, passes, text_bytes)
    elif method == "decontaminate":
        from refinery.dedup.decontaminate import decontaminate_passes

        extra = decontaminate_passes(work, shards, config, executor, passes)
    else:
        extra = _cluster_passes(work, shards, config, executor, passes)

    # the removal run: the normal shard runner with the method's stage. Finished shards are
    # skipped only when they were produced from this very index (same fingerprint).
    stage_kind = STAGE_OF_METHOD[method]
    # a pass named in the run's config labels its removals (removed_stage, the funnel) with that name:
    # two lines passes both wrote "lines_dedup", and the report and compare merged them
    stage_params: dict[str, Any] = {"dedup_dir": work_root}
    if config.name:
        stage_params["name"] = config.name
    t0 = time.time()
    # one listing of stats/, not a marker read per task: a shard without a marker runs at once
    # (a GET, a 404, per shard on S3 before; session 48, h186)
    marked = {fs.basename(u)[: -len(".json")] for u in shard_files(out.stats_dir, (".json",))}
    tasks = [{"kept_uri": s.uri, "shard": s.name, "unmarked": s.name not in marked} for s in shards]
    # the index is built: its manifest's version is taken once here, not by each task (a HEAD per
    # shard on S3); the tasks read the manifest pinned to it (session 48, h186)
    writes = PassWrites(out, [s.name for s in shards])  # what the close need not read back
    results = executor.run(removal_run_task, tasks, label=f"dedup/{method}/remove", names=[s.name for s in shards],
                           shared={"out": out, "stage_kind": stage_kind, "stage_params": stage_params,
                                   "force": force, "fingerprint": work.fingerprint,
                                   "index_version": index_version(work_root)}, on_outcome=writes)
    passes["remove"] = _summarize(results, time.time() - t0)
    if method == "lines":  # what the cuts took, read back from the removal run's columns
        from refinery.dedup.lines import lines_summary

        extra = {**extra, **lines_summary(out.kept_dir, out.removed_dir)}
    # the index steps' time belongs to the pass's stage: its docs/s counted the removal step alone
    # (585,882 docs/s shown for a URL pass of 4,100; found by testing the stats)
    index_seconds = sum(float(v.get("task_seconds", v.get("wall_seconds", 0.0)) or 0.0)
                        for k, v in passes.items() if k != "remove" and isinstance(v, dict))
    confirm_claim(claim)  # S3: still this dedup's output (not claimed by one started since)
    run_stats = _finish_run(out, input_dir, config, work_root, len(shards), write_manifest=standalone,
                            fingerprint=work.fingerprint, index_seconds=index_seconds, writes=writes)
    expected = extra.get("docs_to_remove")
    if expected is not None and run_stats["docs_removed"] != expected:
        raise DedupError(f"the removal run removed {run_stats['docs_removed']} documents but the dedup index lists "
                         f"{expected}: the input changed since the index was built? (rerun with --force)")
    stats = {
        "method": method,
        "params": params,
        "input": input_dir,
        "output": output_dir,
        "work_dir": work_root,
        "shards": len(shards),
        "docs_read": run_stats["docs_read"],
        "docs_kept": run_stats["docs_kept"],
        "docs_removed": run_stats["docs_removed"],
        **{k: v for k, v in extra.items() if k != "docs_to_remove"},
        "passes": passes,
        "wall_seconds": round(time.time() - started, 3),
    }
    blob = json.dumps(stats, indent=1).encode()
    fs.write_bytes(fs.join(work_root, "dedup_stats.json"), blob)
    fs.write_bytes(fs.join(out.root, "dedup_stats.json"), blob)
    return stats


_NEEDED_COLUMNS = {"url": ("id", "url"), "lines": ("id", "text", "url")}


def _check_columns(shards: list[Shard], method: str) -> dict[str, int]:
    """Refuse an input without the columns the method reads, naming the first shard that lacks
    one, from footers only: a directory of other Parquet files (a run's tokens/) failed every
    signature task, an ERROR line each, then "dedup failed" (found by adversarial testing), and
    one whose later files differ (a run's samples/ beside its kept/) failed the same way, the first
    shard alone checked (h172). Every shard's footer, local (~0.2 ms each) and S3: one ranged GET
    each, 16 at a time (moto: 1,000 shards in ~7 s beside a 0.5 s listing; the signatures read
    every shard whole next). S3 checked the first shard of each directory only, so a later shard
    without ``text`` failed its signature task, "dedup failed", exit 1, its output begun (h178).
    Returns each shard's text bytes by URI, which the lines and substring passes plan with
    (:func:`footer_text_bytes`), so their drivers do not read the footers again (session 49, h205)."""
    text_bytes: dict[str, int] = {}

    def check(uri: str, schema: pa.Schema, meta: pq.FileMetaData) -> None:
        _check_shard_columns(uri, schema, method)
        text_bytes[uri] = footer_text_bytes(meta)

    # in shard order: the first shard that fails is the one named
    for _, why in parquet.footer_problems([s.uri for s in shards], check):
        if why:
            raise DedupInputError(why)
    return {s.uri: text_bytes[s.uri] for s in shards}


def _check_shard_columns(uri: str, schema: pa.Schema, method: str) -> None:
    from refinery.dedup.passes import check_dedup_schema

    check_dedup_schema(uri, schema)
    present = schema.names
    missing = [c for c in _NEEDED_COLUMNS.get(method, ("id", "text")) if c not in present]
    if missing:
        raise parquet.ShardReadError(f"shard {uri} lacks column(s) {missing} needed by {method} dedup "
                                     f"(columns: {', '.join(present[:10])}); is the input a run or a directory of documents?")


# what `refinery dedup` writes into OUTPUT: top-level files, and directories of per-shard files
_DEDUP_FILES = {fs.RUN_MARKER, "stats.json", "dedup_stats.json", "report.html"}
_DEDUP_SHARD_DIRS = {"kept", "removed", "samples", "stats", "failed"}
_DEDUP_OWN_DIRS = {"dedup", "passes"}


def _check_output_is_dedup(run: RunDir, shards: set[str], force: bool, work_root: str | None = None) -> None:
    """Refuse an OUTPUT that ``refinery dedup`` would destroy: a run of ``refinery run`` (its
    run.json, kept/ corpus and stats were replaced by this pass's without a word), a run.json that
    cannot be read (unless ``force``), and a directory without run.json holding files that a dedup
    of this input does not write (kept/ shards of other names were deleted as orphans). Found by
    adversarial testing, as ``refinery run`` refuses such outputs (:func:`check_output_is_ours`).
    A dedup killed before its run.json is resumed: its work dir (``work_root``, wherever it is
    inside OUTPUT) is its own, and so are the shard files of inputs removed since, once one of
    its stats markers shows a dedup wrote the directory (they are orphans to clean)."""
    damaged = run.damaged_plan()
    if damaged is not None:
        if not force:
            raise DedupInputError(f"{run.run_json} is damaged ({damaged}): it cannot be checked to be a refinery "
                                  "dedup output; pass --force to redo the dedup into it, or choose a new --output")
        return
    previous = run.recorded_plan()
    if previous is not None:
        if previous.get("kind") != "dedup":
            names = [p.get("name") for p in previous["passes"] if isinstance(p, dict)]
            raise DedupInputError(f"output {run.root} holds another run (passes {names}), not a refinery dedup "
                                  "output: writing there would replace its corpus; choose a new --output")
        return
    if fs.file_exists(run.run_json):
        return  # a run.json of an earlier refinery without passes: _check_rerun's business
    work = _relative_to(work_root, run.root) if work_root else None
    foreign = [f for f in _listed(run.root) if not _written_by_dedup(f, shards)
               and not (work is not None and (work == "" or f.startswith(work + "/")))]
    others = [f for f in foreign if not _is_shard_file(f)]
    if foreign and not others and (_written_by_a_dedup(run, foreign) or _indexed_by(work_root, foreign, run.root)):
        return  # orphans of a killed dedup (shards since removed from the input): cleaned, not refused
    if foreign:
        shown = [f"{f} (a refinery run)" if f.endswith("/") else f for f in foreign[:3]]
        raise DedupInputError(f"output {run.root} is not empty and is not a refinery run (no run.json): it holds "
                              f"{', '.join(shown)}{' ...' if len(foreign) > 3 else ''}; choose a new or "
                              "empty --output")


def _relative_to(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` when it is inside it or is it ("" then), however spelled."""
    inner, outer = fs.canonical(path), fs.canonical(root)
    if inner == outer:
        return ""
    return inner[len(outer) + 1:] if inner.startswith(outer.rstrip("/") + "/") else None


def _listed(root: str) -> list[str]:
    """Paths of the files under ``root``, relative to it (none when it does not exist), and of the
    refinery run directories below it, ending in ``/`` (``OUTPUT/r1/`` held a run: the check took
    OUTPUT for empty and wrote the dedup beside it; session 49)."""
    if not fs.exists(root):
        return []
    top = fs.absolute(root).rstrip("/") + "/"  # how listings spell the files, whatever ``root``'s spelling
    runs: list[str] = []  # a refinery run below: its files are left out of the listing, so named here
    files = [f.removeprefix(top) for f in fs.list_files(root, runs=runs)]  # (``root`` a file: its own path)
    return files + [r.removeprefix(top) + "/" for r in runs]


def _written_by_dedup(rel: str, shards: set[str]) -> bool:
    parts = rel.split("/")
    if any(p.startswith((".", "_")) for p in parts):  # the lock, temporaries
        return True
    if len(parts) == 1:
        return parts[0] in _DEDUP_FILES
    if parts[0] in _DEDUP_OWN_DIRS:
        return True
    return parts[0] in _DEDUP_SHARD_DIRS and len(parts) == 2 and parts[1].rsplit(".", 1)[0] in shards


def _is_shard_file(rel: str) -> bool:
    """A file where a removal run puts a shard's output (``kept/<shard>.parquet``, ``stats/<shard>.json``)."""
    parts = rel.split("/")
    return len(parts) == 2 and parts[0] in _DEDUP_SHARD_DIRS and parts[1].endswith((".parquet", ".json"))


def _written_by_a_dedup(run: RunDir, files: list[str]) -> bool:
    """Whether the stats marker of one of these shards (or, when none has one, of any shard)
    records a dedup's removal stage: the runner writes it last, so it is there for every shard
    a killed dedup finished."""
    markers = [f for f in files if f.startswith("stats/") and f.endswith(".json")]
    markers = markers or [f for f in _listed(fs.join(run.root, "stats")) if f.endswith(".json") and "/" not in f]
    for rel in markers[:3]:
        try:
            record = fs.read_json(fs.join(run.root, "stats", rel.removeprefix("stats/")))
        except (fs.StorageError, OSError, ValueError):
            continue
        stages = record.get("stages") if isinstance(record, dict) else None
        if isinstance(stages, list) and any(isinstance(s, dict) and s.get("kind") in STAGE_OF_METHOD.values()
                                            for s in stages):
            return True
    return False


def _indexed_by(work_root: str | None, files: list[str], output: str) -> bool:
    """Whether the dedup work dir's manifest (written before the removal run starts) was written
    for ``output`` and lists every shard of these shard files: a dedup killed in its removal run
    before any shard finished left them, and no stats marker yet says so (it was refused as "not
    a refinery run"). A shared --work-dir's manifest of a dedup into another output does not
    count: a user's directory given as OUTPUT lost its shards of the same names (found by
    adversarial testing)."""
    if not work_root:
        return False
    try:
        manifest = fs.read_json(fs.join(work_root, "manifest.json"))
        indexed = {s["name"] for s in manifest["shards"]}
        written_for = manifest.get("output")
    except (fs.StorageError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    if not isinstance(written_for, str):
        return False
    if fs.canonical(written_for) != fs.canonical(output) and not _moved_with_its_output(manifest, work_root, output):
        return False
    return bool(files) and {f.split("/")[1].rsplit(".", 1)[0] for f in files} <= indexed


def _moved_with_its_output(manifest: dict[str, Any], work_root: str, output: str) -> bool:
    """Whether the index was written inside its output, at the place it lies under ``output`` now:
    the output was moved (or copied) with its index in it, and the manifest still names the old
    place (a dedup killed before its run.json, then moved, was refused as "not a refinery run").
    A manifest of 0.8.8 or before does not say where its index lay: the default place,
    ``OUTPUT/dedup``, is taken for it. An index outside ``output`` did not move with it."""
    here = _relative_to(work_root, output)
    return here is not None and manifest.get("work_in_output", "dedup") == here


def _check_rerun(run: RunDir, config: DedupConfig, force: bool) -> dict[str, Any] | None:
    """The project's rerun rule for ``refinery dedup``: an OUTPUT made with another method or
    other params is refused, naming the change, as ``refinery run`` refuses a changed config (it
    was silently recomputed and replaced); with ``--force`` it is replaced, and the finished-pass
    marker of another method goes with it (it was left behind). Returns the params the output
    recorded when they are this config's in other terms (a preset, or the threshold of a pass
    without verification, recorded), so its index and removal shards are fingerprinted as made. An
    output made by another refinery is refused too, as `refinery run` refuses one (:func:`_version_change`)."""
    from refinery.plan import describe_change

    previous = run.recorded_plan()
    if previous is None or previous.get("kind") != "dedup" or not previous["passes"]:
        return None
    old = previous["passes"][0]
    name = _standalone_name(config)
    recorded = old_params = old.get("params")
    params = _method_params(config)
    if isinstance(old_params, dict) and config.method == "minhash":
        # recorded before presets, and the verification settings of a pass without it, were left out
        old_params = _without_unread(old_params | ({"preset": None} if "preset" in old_params else {}))
    same_pass = old.get("name") == name and (not isinstance(old_params, dict) or old_params == params)
    upgraded = _version_change(previous)
    if same_pass and (force or not upgraded):
        return recorded if isinstance(recorded, dict) else None
    if not force:
        what = (_renamed(previous, name, config.method) if old.get("name") != name
                else describe_change(_as_config_keys(config.method, old_params), _as_config_keys(config.method, params)))
        what = "; ".join(w for w in (what, upgraded) if w)
        raise DedupInputError(f"{run.root} was made by refinery dedup with other settings ({what}); rerun with "
                              f"--force to replace it, or choose a new --output")
    if old.get("name") != name and isinstance(old.get("name"), str):
        fs.delete(run.pass_marker(old["name"]))


def _redo_damaged_shards(out: PassDir, name: str, fingerprint: str, shards: set[str]) -> None:
    """A standalone dedup's :func:`refinery.pipeline.redo_damaged_shards`: clear the outputs of
    the finished shards whose files no longer match the sizes its marker recorded (cut short by a
    partial sync, replaced), one warning each naming the file; the removal run then redoes them
    (a rerun checked only that they existed). One listing per directory, no read."""
    uri = RunDir(out.root).pass_marker(name)
    try:
        marker = fs.read_json_if_any(uri)
    except fs.DamagedRecord:
        return  # damaged: the pass is redone whole anyway (a failed read skipped the check: raised)
    if marker is None or marker.get("fingerprint") != fingerprint:
        return  # another index: every shard is redone
    for shard, problem in damaged_outputs(out, marker.get("outputs"), shards).items():
        log.warning("[dedup %s] %s: redoing shard %s", name, problem, shard)
        clear_shard_outputs(out, shard)


def _standalone_name(config: DedupConfig) -> str:
    """The pass name ``refinery dedup`` records (run.json, ``passes/<name>.json``): the config's
    ``name``, else ``<method>_dedup`` (``decontaminate_dedup`` too, as recorded before names)."""
    return config.name or f"{config.method}_dedup"


def _renamed(previous: dict[str, Any], name: str, method: str) -> str:
    """How the pass OUTPUT records differs by its name: ``method url -> exact``, or, the method
    the same, ``name url_dedup -> my_urls`` (its removals' label)."""
    old_name = str(previous["passes"][0].get("name", "?"))
    standalone = previous.get("dedup")
    old_method = standalone.get("method") if isinstance(standalone, dict) else None
    old_method = old_method if isinstance(old_method, str) else old_name.removesuffix("_dedup")
    return f"method {old_method} -> {method}" if old_method != method else f"name {old_name} -> {name}"


def _version_change(previous: dict[str, Any]) -> str:
    """``"code.refinery '0.8.1' -> '0.8.2'"`` when OUTPUT was made by another refinery, as
    ``refinery run`` names it: the pass's fingerprint holds the version, so such an output's index
    and removals were all redone without a word, however long they took (found testing the
    0.8.1 -> 0.8.2 upgrade). An output recorded without a version says nothing."""
    from refinery import __version__  # as _fingerprint reads it

    from refinery.plan import library_version

    made_by = previous.get("refinery_version")
    changes = [f"code.refinery {made_by!r} -> {__version__!r}"] if isinstance(made_by, str) and made_by != __version__ else []
    # the libraries the method's index fingerprint holds (rensa), recorded since session 37: a
    # library upgrade redid the index without a word too (found by a review)
    recorded = previous.get("code")
    for dist, version in (recorded.items() if isinstance(recorded, dict) else ()):
        if version != library_version(dist):
            changes.append(f"code.{dist} {version!r} -> {library_version(dist)!r}")
    return "; ".join(changes)


def _finish_run(out: PassDir, input_dir: str, config: DedupConfig, work_root: str, n_shards: int,
                write_manifest: bool = True, fingerprint: str | None = None, index_seconds: float = 0.0,
                writes: PassWrites | None = None) -> dict[str, Any]:
    from refinery.io.dataset import unify_pass_schemas
    from refinery.plan import DEDUP_LIBRARIES, library_version
    from refinery.stats.funnel import merge_pass_stats

    merged = merge_pass_stats(out, writes and writes.stats)  # checks kept + removed = read
    for stage in merged.get("stages", [])[1:]:  # after the reader: the method's stage
        stage["index_seconds"] = round(index_seconds, 3)
        stage["seconds"] = round(float(stage.get("seconds", 0.0)) + index_seconds, 4)
    unify_pass_schemas(out.kept_dir, out.removed_dir, writes and writes.footers)  # one schema in every shard, empty ones too
    fs.write_bytes(out.stats_json, json.dumps(merged, indent=1).encode())
    if not write_manifest:
        return merged
    # `refinery dedup` is a one-pass plan: run.json lists its pass (what `refinery status` reads)
    # and passes/<pass>.json marks it finished, like every pass of `refinery run`
    output_dir = out.root
    name = _standalone_name(config)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run = RunDir(output_dir)
    fs.write_bytes(run.pass_marker(name), json.dumps({
        "pass": name, "fingerprint": fingerprint, "finished_at": now,
        "summary": {k: merged[k] for k in ("shards", "docs_read", "docs_kept", "docs_removed")},
        # its shards' sizes, as a recipe's pass records them: a rerun redoes one cut short since
        "outputs": output_sizes(out)}, indent=1).encode())
    manifest = {
        "refinery_version": __version__,
        "code": {dist: library_version(dist) for dist in DEDUP_LIBRARIES.get(config.method, ())},
        "kind": "dedup",
        "name": name,
        "passes": [{"name": name, "kind": "dedup", "fingerprint": fingerprint, "dir": output_dir, "shuffles": True,
                    "params": _method_params(config)}],
        # without a name when it has none: as recorded before a standalone pass could have one
        "dedup": {"method": config.method, "config": config.model_dump(mode="json", exclude=None if config.name else {"name"}),
                  "work_dir": work_root},
        "input": input_dir,
        "output": output_dir,
        "shards": n_shards,
        "finished_at": now,
    }
    fs.write_bytes(run.run_json, json.dumps(manifest, indent=1).encode())
    return merged


def _write_manifest(work: WorkDir, method: str, params: dict[str, Any], shards: list[Shard], input_results: list[dict[str, Any]],
                    **extra: Any) -> None:
    manifest = {
        "version": MANIFEST_VERSION,
        "method": method,
        "params": params,
        "fingerprint": work.fingerprint,
        "output": work.output,
        # where the index lies under that output (None: elsewhere): moved with it, it still names
        # its output's leftovers (_indexed_by), whatever the output's place now
        "work_in_output": _relative_to(work.root, work.output) if work.output else None,
        **({"hashed_root": work.hashed_root} if work.hashed_root else {}),
        "shards": [
            {"name": s.name, "index": s.index, "uri": s.uri, "docs": r.get("docs"), "sources": r.get("sources")}
            for s, r in zip(shards, input_results)
        ],
        **extra,
    }
    fs.write_bytes(work.path("manifest.json"), json.dumps(manifest, indent=1).encode())


def _cluster_passes(work: WorkDir, shards: list[Shard], config: DedupConfig, executor: Executor,
                    passes: dict[str, Any]) -> dict[str, Any]:
    method = config.method
    names = [s.name for s in shards]
    sig_uri = {s.name: work.path("signatures", f"{s.name}.parquet") for s in shards}
    lsh = config.minhash.lsh().__dict__ if method == "minhash" else {"seed": config.minhash.seed, "backend": "numpy"}
    tasks = [{"input_uri": s.uri, "shard": s.name, "shard_index": s.index, "output_uri": sig_uri[s.name], "method": method,
              "lsh": dict(lsh), "batch_size": config.batch_size,
              "sig_slots": config.minhash.stored_slots() if method == "minhash" else 0} for s in shards]
    sig = _run_pass(work, "signatures", signature_task, tasks, executor, names,
                    extra=lambda rs: {"per_shard": [{"docs": r["docs"], "sources": r.get("sources"), "width": r["width"]} for r in rs]})
    passes["signatures"] = {k: v for k, v in sig.items() if k != "per_shard"}
    return build_index(work, shards, config, executor, passes, sig["per_shard"], sig.get("with_key", 0))


def build_index(work: WorkDir, shards: list[Shard], config: DedupConfig, executor: Executor, passes: dict[str, Any],
                per_shard: list[dict[str, Any]], with_key: int) -> dict[str, Any]:
    """From ``signatures/<shard>.parquet`` to ``removals/<shard>.parquet``: buckets, candidates,
    connected components, removal lists (benchmarks start here with synthetic signatures)."""
    method = config.method
    names = [s.name for s in shards]
    sig_uri = {s.name: work.path("signatures", f"{s.name}.parquet") for s in shards}
    width = per_shard[0]["width"] if per_shard else 1
    rows = with_key * width
    budget = config.memory_budget
    bucketed = work.done("buckets")
    if bucketed is not None and "partitions" in bucketed:  # a resumed index keeps the partitioning it was written with
        P, Q, baseline = bucketed["partitions"], bucketed["cc_partitions"], bucketed.get("worker_baseline_bytes", 0)
    else:  # a step begun and stopped keeps the plan its finished tasks were written with (WorkDir.planned)
        def plan() -> dict[str, Any]:
            baseline = worker_baseline_bytes(executor, method) if not config.partitions else TASK_BASELINE_BYTES
            return {"partitions": config.partitions or partitions_for(rows, CANDIDATE_BYTES_PER_ROW, budget, baseline),
                    "cc_partitions": config.partitions or partitions_for(2 * rows, EDGE_BYTES_PER_ROW, budget, baseline),
                    "worker_baseline_bytes": baseline}

        planned = work.planned("buckets", plan)
        P, Q, baseline = planned["partitions"], planned["cc_partitions"], planned["worker_baseline_bytes"]
    _write_manifest(work, method, _method_params(config), shards, per_shard, partitions=P, cc_partitions=Q)
    log.info("[dedup %s] %d docs with keys, %d bucket rows -> %d key partitions, %d node partitions (budget %.0f MiB, "
             "workers hold %.0f MiB)", method, with_key, rows, P, Q, budget / 2**20, baseline / 2**20)

    bucket_uri = {s.name: work.path("buckets", f"{s.name}.parquet") for s in shards}
    tasks = [{"signature_uri": sig_uri[s.name], "shard_index": s.index, "output_uri": bucket_uri[s.name], "num_parts": P}
             for s in shards]
    passes["buckets"] = _run_pass(work, "buckets", bucket_task, tasks, executor, names, units="rows",
                                  extra=lambda rs: {"partitions": P, "cc_partitions": Q, "worker_baseline_bytes": baseline})

    # MinHash verification (docs/dedup.md "Candidate verification"): pairs are checked against
    # the stored signatures before clustering, and removals against the cluster's kept copy after
    verify = method == "minhash" and config.minhash.verify
    S = max((s.index for s in shards), default=-1) + 1  # shard indexes are 0..S-1: a doc key's high bits
    cand_uris = [work.path("candidates", f"part-{p:05d}.parquet") for p in range(P)]
    tasks = [{"bucket_uris": [bucket_uri[s.name] for s in shards], "part": p, "output_uri": cand_uris[p], "cc_parts": Q,
              "verify_shards": S if verify else 0} for p in range(P)]
    passes["candidates"] = _run_pass(work, "candidates", candidate_task, tasks, executor,
                                     [f"part-{p}" for p in range(P)], units="bucket_rows")
    if verify:
        cand_uris = _verify_passes(work, shards, config, executor, passes, cand_uris, Q)

    final_uris, cc = _components(work, cand_uris, Q, executor, method, num_shards=S if verify else 0)
    passes["components"] = cc
    root_attach: list[str] | None = None
    if verify:
        root_attach = [work.path("root_check", f"{s.name}.parquet") for s in shards]
        tasks = [{"pair_uris": cc["roots_uris"], "shard_index": s.index, "signature_uri": sig_uri[s.name],
                  "output_uri": root_attach[k], "num_shards": S, "slots": config.minhash.stored_slots(),
                  "a": "root", "b": "node"} for k, s in enumerate(shards)]
        passes["root_check"] = _run_pass(work, "root_check", verify_attach_task, tasks, executor, names, units="pairs",
                                         extra=_files_by_part)

    removal_uri = {s.name: work.path("removals", f"{s.name}.parquet") for s in shards}
    tasks = [{"shard": s.name, "shard_index": s.index, "signature_uri": sig_uri[s.name], "final_uris": final_uris,
              "output_uri": removal_uri[s.name],
              "root_attach_uris": _files_for(root_attach, passes["root_check"], s.index) if verify else None,
              "threshold": config.minhash.threshold} for s in shards]
    passes["removal_lists"] = _run_pass(work, "removal_lists", removal_list_task, tasks, executor, names, units="clustered")
    return {
        "docs_with_keys": with_key,
        "candidate_pairs": passes["candidates"].get("pairs", 0),
        "clusters": cc.get("clusters", 0),
        "docs_in_clusters": cc.get("nodes", 0),
        "largest_cluster": cc.get("largest_max", 0),
        "cluster_size_histogram": cc.get("histogram", {}),
        "docs_to_remove": passes["removal_lists"].get("removed", 0),
        **({"pairs_verified": passes["verify"].get("verified", 0), "pairs_rejected": passes["verify"].get("rejected", 0),
            "root_rejected": passes["removal_lists"].get("root_rejected", 0)} if verify else {}),
    }


def _files_by_part(results: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"files_by_part": {shard index: [indexes of the tasks' files with rows for it]}}``, from
    each task's ``parts`` (:func:`verify_attach_task`), for :func:`_files_for`."""
    by_part: dict[str, list[int]] = {}
    for k, r in enumerate(results):
        for p in r.get("parts") or ():
            by_part.setdefault(str(p), []).append(k)
    return {"files_by_part": by_part}


def _files_for(files: list[str], summary: dict[str, Any], part: int) -> list[str]:
    """The ``files`` (one per shard, in task order) with rows for partition ``part``: a shard's
    task opened every shard's file, shards x shards footers (0.8 s a task, 28 min for the MinHash
    verify hop at 4,000 shards of 4 documents; session 43, h130). A summary of an older refinery
    has no ``files_by_part``: every file, as then."""
    by_part = summary.get("files_by_part")
    if not isinstance(by_part, dict):
        return files
    return [files[k] for k in by_part.get(str(part), ())]


def _verify_passes(work: WorkDir, shards: list[Shard], config: DedupConfig, executor: Executor, passes: dict[str, Any],
                   cand_uris: list[str], Q: int) -> list[str]:
    """Candidate pairs -> verified edges (estimated Jaccard >= threshold), two hops per shard."""
    S, names = max(s.index for s in shards) + 1, [s.name for s in shards]
    sig_uri = {s.name: work.path("signatures", f"{s.name}.parquet") for s in shards}
    attach = [work.path("verify", "attach", f"{s.name}.parquet") for s in shards]
    tasks = [{"pair_uris": cand_uris, "shard_index": s.index, "signature_uri": sig_uri[s.name], "output_uri": attach[k],
              "num_shards": S, "slots": config.minhash.stored_slots()} for k, s in enumerate(shards)]
    passes["verify_attach"] = _run_pass(work, "verify_attach", verify_attach_task, tasks, executor, names, units="pairs",
                                        extra=_files_by_part)
    verified = [work.path("verify", "edges", f"{s.name}.parquet") for s in shards]
    tasks = [{"attach_uris": _files_for(attach, passes["verify_attach"], s.index), "shard_index": s.index, "signature_uri": sig_uri[s.name], "output_uri": verified[k],
              "cc_parts": Q, "threshold": config.minhash.threshold} for k, s in enumerate(shards)]
    passes["verify"] = _run_pass(work, "verify", verify_task, tasks, executor, names, units="checked")  # pairs checked
    return verified


def _components(work: WorkDir, cand_uris: list[str], Q: int, executor: Executor, method: str,
                num_shards: int = 0) -> tuple[list[str], dict[str, Any]]:
    """Large-star / small-star rounds until the graph is a forest of stars around each
    component's smallest node; returns the final ``(node, root)`` files and a summary."""
    marker = work.done("components")
    if marker is not None:
        return marker["final_uris"], marker
    started = time.time()
    inputs = cand_uris
    rounds: list[dict[str, Any]] = []
    for r in range(MAX_CC_ROUNDS):
        large = [work.path("components", f"round-{r:03d}", "large", f"part-{q:05d}.parquet") for q in range(Q)]
        final = [work.path("components", f"round-{r:03d}", "final", f"part-{q:05d}.parquet") for q in range(Q)]
        # with verification, the final step also groups (root, node) by the root's shard
        roots = [work.path("components", "roots", f"part-{q:05d}.parquet") for q in range(Q)] if num_shards else [None] * Q
        tasks = [{"input_uris": inputs, "part": q, "output_uri": large[q], "final_uri": final[q], "cc_parts": Q,
                  "roots_uri": roots[q], "num_shards": num_shards} for q in range(Q)]
        # each round's tasks resume as a step's do: a round's inputs are the last round's outputs,
        # the same files whichever run wrote them
        with resumable_step(work, f"large-star-{r}", large_star_task, tasks, executor, [f"part-{q}" for q in range(Q)],
                            f"dedup/{method}/large-star-{r}", units="edges", marked=False) as results:
            pass  # (no marker of its own: the round's records are written once it ends)
        summary = _summarize(results, 0.0)
        summary.pop("wall_seconds", None)
        rounds.append({"round": r, "step": "large", **summary})
        if all(res["star"] for res in results):
            out = {
                "rounds": r + 1,
                "steps": rounds,
                "clusters": sum(res.get("clusters", 0) for res in results),
                "nodes": sum(res.get("nodes", 0) for res in results),
                "largest_max": max([res.get("largest", 0) for res in results] or [0]),
                "histogram": components.merge_histograms([res.get("histogram", {}) for res in results]),
                "peak_rss_max": max(s.get("peak_rss_max", 0) for s in rounds),
                "wall_seconds": round(time.time() - started, 3),
                "partitions": Q,
                "final_uris": final,
                "roots_uris": roots,
            }
            return final, work.finish("components", out)
        small = [work.path("components", f"round-{r:03d}", "small", f"part-{q:05d}.parquet") for q in range(Q)]
        tasks = [{"input_uris": large, "part": q, "output_uri": small[q], "cc_parts": Q} for q in range(Q)]
        with resumable_step(work, f"small-star-{r}", small_star_task, tasks, executor, [f"part-{q}" for q in range(Q)],
                            f"dedup/{method}/small-star-{r}", units="edges", marked=False) as results:
            pass
        summary = _summarize(results, 0.0)
        summary.pop("wall_seconds", None)
        rounds.append({"round": r, "step": "small", **summary})
        inputs = small
    raise DedupError(f"connected components did not converge in {MAX_CC_ROUNDS} rounds")


def _substring_need(text_bytes: int) -> float:
    """Estimated bytes of a shard's suffix array and tokens, from its text's size (its Parquet footer's)."""
    return text_bytes * (SUBSTRING_BYTES_PER_CHAR + SUBSTRING_BYTES_PER_TOKEN / 5.0)  # ~5 characters per token


def _read_text_bytes(uri: str) -> int:
    with fs.open_parquet_input(uri) as f:
        return footer_text_bytes(pq.ParquetFile(f).metadata)


def plan_substring_groups(shards: list[Shard], budget: int, baseline: int = TASK_BASELINE_BYTES,
                          needs: dict[str, float] | None = None) -> tuple[list[list[Shard]], float]:
    """Consecutive shards grouped so each group's text fits the budget above what a worker already
    holds (sizes from Parquet footers), and the largest group's estimated bytes."""
    usable = max(budget - max(baseline, TASK_BASELINE_BYTES), 16 * 2**20)
    groups: list[list[Shard]] = []
    current: list[Shard] = []
    current_bytes = largest = 0.0
    for s in shards:
        need = needs[s.name] if needs is not None else _substring_need(_read_text_bytes(s.uri))
        if current and current_bytes + need > usable:
            groups.append(current)
            largest = max(largest, current_bytes)
            current, current_bytes = [], 0.0
        current.append(s)
        current_bytes += need
    if current:
        groups.append(current)
        largest = max(largest, current_bytes)
    return groups, largest


def _substring_passes(work: WorkDir, shards: list[Shard], config: DedupConfig, executor: Executor,
                      passes: dict[str, Any], known_text_bytes: dict[str, int] | None = None) -> dict[str, Any]:
    """``known_text_bytes``: the shards' text bytes by URI that the driver's column check read."""
    sub = config.substring
    # a fixed baseline, not the measured one: which shards share a suffix array decides what is cut,
    # so the grouping must follow from the config alone (memory_budget is in the fingerprint). When
    # the workers already hold more than that baseline leaves room for (Ray workers that ran the
    # filter pass hold ~330 MB: 1,041 MB against a 1,024 MB budget at 1M documents,
    # docs/benchmarks.md), each group runs in a fresh worker instead: same groups, same cuts.
    chars = text_bytes_by_uri([s.uri for s in shards], known_text_bytes, _read_text_bytes)  # a footer per shard at most
    needs = {s.name: _substring_need(chars[s.uri]) for s in shards}
    groups, largest = plan_substring_groups(shards, config.memory_budget, needs=needs)
    usable = max(config.memory_budget - TASK_BASELINE_BYTES, 16 * 2**20)  # as the plan's
    for group in groups:
        if len(group) == 1 and needs[group[0].name] > usable:
            # one shard is the smallest unit a suffix array is built over: it cannot be split
            # (a shard over the budget ran with no word: found by adversarial testing)
            log.warning("[dedup] substring: shard %s needs ~%.0f MiB for its suffix array, over the %.0f MiB "
                        "memory_budget leaves: it runs alone and will use more; split the input into smaller "
                        "shards or raise memory_budget", group[0].name, needs[group[0].name] / 2**20,
                        usable / 2**20)
    fresh = (work.done("suffix_arrays") is None and not getattr(executor, "inline", False)
             and worker_baseline_bytes(executor, "substring") + largest > config.memory_budget)
    if fresh:
        log.info("[dedup] substring: workers hold more than the plan's %.0f MiB baseline leaves room for; "
                 "each of the %d groups runs in a fresh worker", TASK_BASELINE_BYTES / 2**20, len(groups))
    tasks = [{"shards": [{"name": s.name, "input_uri": s.uri, "output_uri": work.path("cuts", f"{s.name}.parquet")} for s in g],
              "min_tokens": sub.min_tokens, "keep_first": sub.keep_first, "batch_size": config.batch_size,
              "min_words": sub.min_words} for g in groups]
    passes["suffix_arrays"] = _run_pass(
        work, "suffix_arrays", substring_task, tasks, executor, [f"{g[0].name}..{g[-1].name}" for g in groups],
        extra=lambda rs: {"shard_sources": {k: v for r in rs for k, v in r.get("shard_sources", {}).items()}},
        fresh_workers=fresh)
    sources = passes["suffix_arrays"].pop("shard_sources", {})
    _write_manifest(work, "substring", _method_params(config), shards, [{"sources": sources.get(s.name)} for s in shards],
                    partitions=len(groups), min_words=sub.min_words)
    passes["suffix_arrays"]["partitions"] = len(groups)
    s = passes["suffix_arrays"]
    return {"tokens": s.get("tokens", 0), "cut_tokens": s.get("cut_tokens", 0), "docs_cut": s.get("docs_cut", 0)}
