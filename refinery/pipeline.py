"""Where the layers meet: a validated config + input/output URIs -> a plan of passes -> one executor.

``run_pipeline`` plans the recipe (:mod:`refinery.plan`), refuses a rerun that would mix configs,
then runs every pass in order on one executor (its process pool or Ray cluster is started once and
reused by every pass): the document stages per input shard, each dedup pass, tokenization. A pass
that finished with the same fingerprint is skipped; an unfinished one resumes where it stopped.
``<output>/stats.json`` is the funnel over every document pass.
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from refinery.config import ConfigError, PipelineConfig
from refinery.executors import Executor, TaskOutcome, make_executor
from refinery.io import fs
from refinery.io.runlock import confirm_claim, run_guard
from refinery.plan import (
    Pass,
    Plan,
    RerunError,
    claim_run_json,
    finish_pass,
    first_pass_to_redo,
    forget_pass,
    load_previous,
    marker_set_aside,
    pass_finished,
    pass_launch,
    pass_started,
    read_marker,
    plan_run,
    set_aside_shards,
    shards_with_markers,
    write_plan,
)
from refinery.rundir import (
    PassDir,
    PassFiles,
    RunDir,
    ShardListing,
    clear_shard_outputs,
    damaged_outputs,
    remove_dropped_passes,
    remove_orphan_shards,
)
from refinery.runner import (PassWrites, ShardTask, failed_stage, finished_marker_text, outcome_stats, run_shard_task,
                             shard_log_every_s)
from refinery.stages import registry
from refinery.stats.funnel import combine_pass_stats, merge_pass_stats

log = logging.getLogger("refinery.pipeline")


@dataclass
class RunSummary:
    """What :func:`run_pipeline` did: ``passes`` (pass -> done | skipped | failed | blocked), the
    document pass's shard ``outcomes`` (``failed``: those that stopped the run), the run's merged
    ``stats`` (as ``<output>/stats.json``; empty when a pass failed)."""

    output: str
    outcomes: list[TaskOutcome] = field(default_factory=list)  # the filter pass's shards
    stats: dict[str, Any] = field(default_factory=dict)
    passes: dict[str, str] = field(default_factory=dict)  # pass -> done | skipped | failed | blocked
    failed_pass: str | None = None
    #: failed shards the run went on without (``executor.max_failed_fraction``)
    set_aside: list[TaskOutcome] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every pass of the plan done or finished before, none failed, no shard set aside: a
        rerun has nothing to do."""
        return (bool(self.passes) and all(s in ("done", "skipped") for s in self.passes.values())
                and not self.failed and not self.set_aside)

    @property
    def failed(self) -> list[TaskOutcome]:
        """The failed shards that stopped the run (not those set aside)."""
        aside = {o.name for o in self.set_aside}
        return [o for o in self.outcomes if o.status == "failed" and o.name not in aside]

    def __repr__(self) -> str:
        # the dataclass repr printed every shard's stats and histograms: 160 KB for the 6-file
        # sample, as the value of a notebook cell that ends with run_pipeline(...)
        counts = {k: self.stats[k] for k in ("docs_read", "docs_kept", "docs_removed") if k in self.stats}
        statuses: dict[str, int] = {}
        for o in self.outcomes:
            statuses[o.status] = statuses.get(o.status, 0) + 1
        return (f"RunSummary(output={self.output!r}, passes={self.passes!r}, shards={statuses!r}, {counts!r}"
                + (f", failed_pass={self.failed_pass!r}" if self.failed_pass else "")
                + (f", set_aside={[o.name for o in self.set_aside]!r}" if self.set_aside else "") + ")")


def plan_tasks(input_uri: str, output_uri: str) -> list[ShardTask]:
    """One shard task per input file (WARC, Parquet or JSONL) under ``input_uri``, writing into
    the run directory ``output_uri`` as a one-pass run."""
    from refinery.plan import input_root, list_inputs, unique_shard_names

    files = list_inputs(input_uri)
    names = unique_shard_names(files, input_root(input_uri, files), input_uri)
    return [ShardTask(f, PassDir(output_uri), name) for f, name in zip(files, names)]


# -- the document pass ----------------------------------------------------------------------------
def run_documents_pass(plan: Plan, p: Pass, executor: Executor, force: bool,
                       only_shards: set[str] | None = None,
                       launch: str | None = None) -> tuple[list[TaskOutcome], dict[str, Any]]:
    """The config's stages over every input shard (or ``only_shards``: one instance's share of a
    multi-instance job); finished shards are skipped here, before any worker starts (so a rerun of
    a finished pass loads no model). Returns the outcomes and the pass's merged stats, which are
    empty while some shard of the pass has not finished. ``launch`` (see :func:`run_plan`) is
    recorded in the shard markers; under ``force`` only the shards marked with it count as done."""
    out = plan.pass_dir(p.name)
    # workers need the stages only: the dedup and tokenize sections stay with the driver
    spec = plan.config.model_dump(mode="json", exclude={"dedup", "tokenize"})
    versions = plan.input_versions or {}
    tasks = [ShardTask(f, out, name, versions.get(name)) for f, name in zip(plan.input_files, plan.shard_names())]
    if only_shards is not None:
        unknown = sorted(only_shards - {t.shard for t in tasks})
        if unknown:
            raise ConfigError(f"shard(s) {unknown[:3]} are not in the plan of {plan.output}")
        share = [t for t in tasks if t.shard in only_shards]
    else:
        share = tasks
    # a listing per directory, not requests per shard (on S3, a 90k-file crawl spent hours here)
    listing = ShardListing.of(out)
    remove_orphan_shards(out, {t.shard for t in tasks}, p.name, listing)
    outcomes: dict[str, TaskOutcome] = {}
    todo: list[ShardTask] = []
    accepted = plan.shard_fingerprints(p)
    writes = PassWrites(out, [t.shard for t in tasks])  # what the close need not read back
    for t in share:
        done = None
        if (not force or launch) and t.shard in listing.stats:
            found = finished_marker_text(t, accepted, outputs_present=t.shard in listing.written)
            done = _done_in(found[0] if found else None, launch if force else None)
        if done is not None:
            outcomes[t.shard] = TaskOutcome(t.shard, "skipped", outcome_stats(done))
            writes.finished(t.shard, found[1])  # read once: the close merges it as it is (session 50, h210)
        else:
            # a shard being redone loses its earlier outputs first: should it fail now, the outputs
            # of another config (a --force rerun) must not stay in the corpus and the funnel
            clear_shard_outputs(out, t.shard, listing.any_output)
            todo.append(replace(t, unmarked=True))  # its marker is gone, or never was
    if todo:
        log.info("[%s] %d shard(s) to run, %d already finished", p.name, len(todo), len(tasks) - len(todo))
    ran = executor.map(run_shard_task, [{"task": t} for t in todo], label=p.name, names=[t.shard for t in todo],
                       units="docs_read", shared={"spec": spec, "force": force, "fingerprint": p.fingerprint,
                                                  "limit": plan.limit, **_registered_stages(),
                                                  **({"launch": launch} if launch else {})},
                       on_outcome=writes)
    outcomes.update({o.name: o for o in ran})
    ordered = [outcomes[t.shard] for t in share]
    for o in ordered:
        try:
            if o.status == "failed":
                # a worker killed after writing its kept file but before its marker left that file
                # in the corpus directory (found by adversarial testing)
                clear_shard_outputs(out, o.name)
                # the report's "Failed shards" table shows the pass, the stage and the attempts (it
                # had the shard's name alone; session 45, h152)
                record = {"shard": o.name, "error": o.error, "pass": p.name, "stage": failed_stage(o.error),
                          "attempts": o.attempts}
                fs.write_bytes(out.failed(o.name), json.dumps(record, indent=1).encode())
            elif o.name in listing.failed:
                # a shard that had failed before succeeded (a record written after the listing is
                # this loop's: the others' DELETE, one per shard on S3, found nothing; h186)
                fs.delete(out.failed(o.name))
        except (fs.StorageError, OSError) as exc:  # e.g. a bucket that went read-only: report, don't crash
            log.warning("[%s] could not record the outcome of %s: %s", p.name, o.name, str(exc).splitlines()[0])
    others = [t for t in tasks if t.shard not in (only_shards or ())]
    if share is not tasks and not _others_finished(out, accepted, others, launch if force else None, writes):
        return ordered, {}  # other instances' shares are still running: the last one to finish closes the pass
    try:
        return ordered, finish_documents(out, p.name, writes)
    except (fs.StorageError, OSError) as exc:
        if not any(o.status == "failed" for o in ordered):
            raise
        log.warning("[%s] could not write the pass's stats: %s", p.name, str(exc).splitlines()[0])
        return ordered, {}


def _registered_stages() -> dict[str, Any]:
    """The task argument that ships the driver's own stage types to the workers (none: no argument)."""
    return {"registered": dict(registry.REGISTERED)} if registry.REGISTERED else {}


def check_registered_stages_reach_workers(executor: Executor) -> None:
    """A class of an interactive ``__main__`` (a notebook) cannot reach a worker process: refused
    before the run, not with every shard failing on "unknown stage type"."""
    stranded = registry.unimportable_in_workers()
    if stranded and not getattr(executor, "inline", False):
        raise ConfigError(f"stage type(s) {stranded} are classes of this interactive session (__main__), which "
                          f"worker processes cannot import: define them in a module (a .py file on sys.path) "
                          f"and register that, or run with workers=1")


def _done_in(marker: dict[str, Any] | None, launch: str | None) -> dict[str, Any] | None:
    """A finished shard's ``marker`` if it counts: any (``launch`` None), or only one this launch wrote
    (a forced share: an earlier run's shard of the same fingerprint is to be redone, not counted)."""
    return marker if marker is not None and (launch is None or marker.get("launch") == launch) else None


def _others_finished(out: PassDir, accepted: frozenset[str], others: list[ShardTask], launch: str | None = None,
                     writes: PassWrites | None = None) -> bool:
    """Whether the other instances' shards have finished (``launch``: in that launch, see
    :func:`_done_in`): one listing of the markers decides for every instance but the last; only
    that one reads the markers (to check their fingerprint), and hands them to the close
    (``writes``), which then reads them no more (session 50, h210)."""
    listed = shards_with_markers(out.stats_dir)
    if any(t.shard not in listed for t in others):
        return False
    for t in others:
        found = finished_marker_text(t, accepted)
        if found is None or _done_in(found[0], launch) is None:
            return False
        if writes is not None:
            writes.finished(t.shard, found[1])
    return True


def finish_documents(out: PassDir, pass_name: str, writes: PassWrites | None = None) -> dict[str, Any]:
    """Give every kept/removed shard of the pass one schema, merge its stats into its funnel
    (``writes``: what this command's tasks wrote, not read back)."""
    from refinery.io.dataset import unify_pass_schemas

    merged = merge_pass_stats(out, writes and writes.stats) | {"pass": pass_name}  # a chunk of markers at a time
    if not merged["shards"]:
        return {}
    unify_pass_schemas(out.kept_dir, out.removed_dir, writes and writes.footers)
    fs.write_bytes(out.stats_json, json.dumps(merged, indent=1).encode())
    return merged


def check_launch(force: bool, only_shards: set[str] | None, launch: str | None) -> None:
    """A forced share of a multi-instance launch needs the launch's id (see :func:`run_plan`)."""
    if force and only_shards is not None and not launch:
        raise ConfigError("force with only_shards (one instance's share of a multi-instance launch) needs launch=<an "
                          "id every share of that launch gets, e.g. its job name>: without it a share cannot tell its "
                          "siblings' shards redone in this launch from the previous run's")


# -- dedup and tokenize passes ------------------------------------------------------------------
def _kept_shards(plan: Plan, previous: Pass) -> list:
    """The previous pass's kept shards, without those the document pass set aside."""
    from refinery.dedup.driver import Shard

    out = plan.pass_dir(previous.name)
    names = sorted(set(plan.shard_names()) - set(set_aside_shards(plan)))
    return [Shard(name, out.kept(name), i) for i, name in enumerate(names)]


def run_dedup_pass(plan: Plan, p: Pass, previous: Pass, executor: Executor, force: bool) -> dict[str, Any]:
    from refinery.dedup.driver import run_dedup

    entry = next(d for d in plan.config.dedup if d.pass_name == p.name)
    out = plan.pass_dir(p.name)
    remove_orphan_shards(out, set(plan.shard_names()), p.name)
    stats = run_dedup(plan.pass_dir(previous.name).kept_dir, out.root, entry, executor, force=force,
                      shards=_kept_shards(plan, previous), out=out, upstream=previous.fingerprint,
                      run_root=plan.output, recorded_root=plan.recorded_output)
    merged = fs.read_json(out.stats_json) | {"pass": p.name}
    fs.write_bytes(out.stats_json, json.dumps(merged, indent=1).encode())
    return {k: stats[k] for k in ("docs_read", "docs_kept", "docs_removed", "wall_seconds") if k in stats}


def run_tokenize_pass(plan: Plan, p: Pass, previous: Pass, executor: Executor, force: bool) -> dict[str, Any]:
    from refinery.tokens import load_tokenizer
    from refinery.tokens.writer import tokenize_run

    cfg = plan.config.tokenize
    assert cfg is not None
    tok = load_tokenizer(cfg.tokenizer, eos_token=cfg.eos_token, bos=cfg.bos, bos_token=cfg.bos_token)
    shards = {s.name: s.uri for s in _kept_shards(plan, previous)}
    # the manifest records the run, not the last pass's directory (its kept/ is the run's kept/)
    result = tokenize_run(plan.run.root, plan.run.tokens_dir, tok, shuffle=cfg.shuffle, seed=cfg.seed,
                          num_shards=cfg.num_shards, batch_size=cfg.batch_size, force=force, executor=executor,
                          shards=shards)
    return {"tokens": result.manifest["totals"]["n_tokens"], "docs": result.manifest["totals"]["n_docs"],
            "shards": result.manifest["totals"]["n_shards"],
            "tokenizer_sha256": result.manifest["tokenizer"]["sha256"],
            # only with a BOS: the pass is finished only while RUN/tokens has the same (plan._token_outputs_present)
            **({"bos_id": tok.bos_id} if tok.bos_id is not None else {})}


# -- the plan --------------------------------------------------------------------------------------
def check_output_is_ours(plan: Plan, force: bool) -> bool:
    """Refuse an output that a run cannot safely write into: a ``run.json`` that cannot be read (its
    plan cannot be checked against this config: a rerun with another config redid every pass
    without a word) unless ``force``, and a directory that holds other files but no run (a rerun
    deletes and rewrites ``kept/`` and ``tokens/``: another team's files there were deleted; both
    found by adversarial testing). True when a damaged run.json is to be redone (``force``): the
    caller clears its outputs (:func:`_clear_unrecorded_run`, under the run-directory lock)."""
    damaged = plan.run.damaged_plan()
    if damaged is not None:
        if not force:
            raise RerunError(f"{plan.run.run_json} is damaged ({damaged}): this config cannot be checked against "
                             "the run's; pass --force to `refinery run` to redo every pass into it, or choose another "
                             "output")
        return True
    foreign = plan.run.foreign_files()
    markers = plan.run.orphan_pass_markers() if foreign else []
    if markers:
        # a run whose run.json was deleted: its plan cannot be checked, as for a damaged one; it
        # was refused as "not a refinery run", --force too, and only deleting it all went on
        # (found by adversarial testing)
        if force:
            return True
        raise RerunError(f"output {plan.output} is a refinery run without its run.json (it holds {markers[0]}): this "
                         "config cannot be checked against the run's; pass --force to `refinery run` to redo every "
                         "pass into it, or choose another output")
    if foreign:
        raise RerunError(f"output {plan.output} is not empty and is not a refinery run (no run.json): it holds "
                         f"{', '.join(foreign)}{' ...' if len(foreign) == 3 else ''}; choose a new or empty "
                         "output directory")
    return False


def _clear_unrecorded_run(plan: Plan) -> None:
    """Nothing records what a run with a damaged run.json wrote: clear what this plan's passes
    write, the directories its pass markers name, the tokens and every pass marker (the old tokens
    stayed and the loader served them:
    found by a review)."""
    log.warning("%s is %s: --force redoes every pass", plan.run.run_json,
                "damaged" if fs.exists(plan.run.run_json) else "missing")
    # its funnel first: it stayed over the new outputs until the run's end (a review, h226)
    fs.delete(plan.run.stats_json)
    # the directories of the old run's passes, named by their markers (read before they go): they
    # stayed beside the corpus as another config's output (a recipe's filter/ after a one-pass --force)
    old = [{"name": n} for n in plan.run.marked_pass_names() if n not in ("kept", "tokens", "passes")]
    for p in plan.passes:
        _clear_pass_outputs(plan, p)
    remove_dropped_passes(plan.run, old, {p.name: p.role for p in plan.passes})
    fs.delete_tree(plan.run.tokens_dir)
    fs.delete_tree(fs.join(plan.output, "passes"))


def run_plan(plan: Plan, executor: Executor, force: bool = False, only_passes: list[str] | None = None,
             only_shards: set[str] | None = None, launch: str | None = None) -> RunSummary:
    """Run the plan's passes in order (``only_passes``: just these; the passes before them must
    have finished). ``only_shards`` restricts the document pass to one instance's share, and the
    run to that pass: the share that closes it runs no later pass (a run of the whole plan does).
    ``launch``: an id every share of one multi-instance launch gets (its job name), required with
    ``force`` and ``only_shards``: it is recorded in the shard and pass markers, and a forced share
    redoes what does not carry it and skips what does (its siblings' work in this launch). Without
    it the shares of a forced launch, started seconds apart, counted a sibling's shard of the
    previous run (same fingerprint) as done and deleted each other's pass marker."""
    check_launch(force, only_shards, launch)
    # S3 has no lock: the run.json this plan is made from is known by its ETag (read first: should
    # it change in between, the plan's write is refused, never wrongly let through)
    conditional = fs.is_s3(plan.output)
    tag = fs.etag(plan.run.run_json) if conditional else None
    previous_record = load_previous(plan.run)
    if previous_record and isinstance(previous_record.get("output"), str):
        plan.recorded_output = previous_record["output"]  # write_plan replaces it with this run's
    if previous_record is None and check_output_is_ours(plan, force):
        _clear_unrecorded_run(plan)
    # the input check's listing of the first pass's stats/, for its finished check below: nothing
    # writes there in between when no pass is redone (a no-op rerun listed it twice; h165)
    planned = PassFiles()
    redo_from = first_pass_to_redo(plan, previous_record, force, planned, keep_finished_shards=only_shards is None)
    if conditional and redo_from is not None and previous_record and only_shards is None:
        tag = claim_run_json(plan, previous_record, tag)  # before this replan deletes anything
    if redo_from is not None and previous_record and only_shards is None:
        # the funnel first: it describes the outputs cleared below, and a run stopped while they
        # went left it over no corpus, or the new one (a review, h226); rewritten at the end
        fs.delete(plan.run.stats_json)
    if redo_from is not None and len(plan.document_passes) > 1:
        # a run that had one pass kept its removed/, samples/, stats/ at the top of OUT; with more
        # passes each has its own directory, and those would stay as another config's output
        top = plan.run.as_pass()
        for directory in (top.removed_dir, top.samples_dir, top.stats_dir, top.failed_dir):
            for uri in fs.list_files_if_any(directory, (".parquet", ".json")):
                fs.delete(uri)
    if redo_from is not None and previous_record:
        remove_dropped_passes(plan.run, previous_record.get("passes", []), {p.name: p.role for p in plan.passes})
    if redo_from is not None and previous_record and only_shards is None:
        # every pass to redo loses its outputs now, not when it runs: should an earlier one fail,
        # the corpus and tokens of the previous config must not stay in place, nor count as this
        # run's progress in `refinery status` (found by adversarial testing)
        for p in plan.passes[redo_from:]:
            # (every one, whatever only_passes says, when shards of the first are redone: each
            # later pass read their old content under the fingerprint it keeps)
            if only_passes is None or p.name in only_passes or plan.first_pass_redo:
                _clear_pass_outputs(plan, p)
        if plan.first_pass_redo:
            _clear_rewritten_shards(plan)
    write_plan(plan, previous_record, tag, conditional=conditional, share=only_shards is not None,
               new_run=redo_from == 0 and (only_passes is None or plan.passes[0].name in only_passes),
               launch=launch if force else None)
    summary = RunSummary(plan.output)
    previous: Pass | None = None
    # the listings of each pass skipped as finished: nothing writes its directories afterwards, and
    # the funnel's look at it reuses them (a no-op rerun listed kept/ and removed/ three times; h156)
    skipped: dict[str, PassFiles] = {}
    names = [p.name for p in plan.passes]
    unknown = sorted(set(only_passes or ()) - set(names))
    if unknown:
        raise ConfigError(f"unknown pass(es) {unknown}: the plan has {names}")
    for i, p in enumerate(plan.passes):
        if only_passes is not None and p.name not in only_passes:
            if i < max(names.index(n) for n in only_passes) and not pass_finished(plan, p):
                raise ConfigError(f"pass {p.name!r} of {plan.output} has not finished: run it before {only_passes}")
            previous = p
            continue
        forced = redo_from is not None and i >= redo_from
        if forced and not (launch and pass_launch(plan, p) == launch):  # a sibling share closed it in this launch
            forget_pass(plan, p)
            if only_shards is not None and p.kind == "documents":
                _clear_later_passes_of_share(plan, plan.passes[i + 1:])
        # the damage check's listings, for the finished check unless it cleared a shard
        files = planned if i == 0 and redo_from is None and only_shards is None else PassFiles()
        if not forced and only_shards is None and p.kind != "tokenize" and redo_damaged_shards(plan, p, files):
            files = PassFiles()
        finished = pass_finished(plan, p, files)  # None when forced: its marker went above
        # a rerun (or a launch's share) retries the shards the document pass set aside; the
        # finished ones are skipped
        if finished and not (p.kind == "documents" and marker_set_aside(finished)):
            log.info("[%s] finished already, skipping the pass", p.name)
            summary.passes[p.name] = "skipped"
            skipped[p.name] = files
            if p.kind == "documents":
                summary.outcomes = [TaskOutcome(n, "skipped") for n in plan.shard_names()]
            previous = p
            if only_shards is not None and p.kind == "documents":
                break  # a share run again after the pass closed: the later passes are still not a share's
            continue
        log.info("[%s] pass %d/%d (%s) starting", p.name, i + 1, len(plan.passes), p.kind)
        started = time.time()
        if p.kind == "documents":
            before = finished
            summary.outcomes, result = run_documents_pass(plan, p, executor, forced, only_shards, launch)
            if summary.failed and result and only_shards is None and _may_set_aside(plan, summary):
                summary.set_aside = summary.failed
                aside = sorted(o.name for o in summary.set_aside)
                log.warning("[%s] %d of %d shard(s) failed and are set aside (executor.max_failed_fraction %g): the "
                            "later passes run without them; a rerun retries them: %s", p.name, len(aside),
                            len(summary.outcomes), plan.config.executor.max_failed_fraction, ", ".join(aside[:5])
                            + (" ..." if len(aside) > 5 else ""))
                result = {**result, "set_aside": aside}
            if summary.failed:
                summary.passes[p.name] = "failed"
                summary.failed_pass = p.name
                if before is not None:
                    # it had finished with shards set aside, which now stop the run (a lower
                    # max_failed_fraction, or a launch's shares, which set none aside): no longer
                    # finished, as `status` and the funnel then say
                    forget_pass(plan, p)
                break
            if not result:  # a share of a multi-instance pass: other shares still running
                if only_shards is None:  # every shard ran here, yet the pass found no finished shard
                    raise RuntimeError(f"[{p.name}] every shard reported done, but {plan.pass_dir(p.name).stats_dir} "
                                       f"holds no shard's stats: did the workers write elsewhere (a path relative to "
                                       f"another directory)?")
                summary.passes[p.name] = "partial"
                break
            # whoever closes the pass (a launch's last share too) clears what was made over another set
            _clear_passes_made_over_other_shards(plan, plan.passes[i + 1:], sorted(o.name for o in summary.set_aside),
                                                 None if before is None else marker_set_aside(before))
        elif p.kind == "dedup":
            assert previous is not None
            result = run_dedup_pass(plan, p, previous, executor, forced)
        else:
            assert previous is not None
            result = run_tokenize_pass(plan, p, previous, executor, forced)
        keep = ("shards", "docs_read", "docs_kept", "docs_removed", "tokens", "docs", "tokenizer_sha256", "bos_id",
                "set_aside")
        made_without = set_aside_shards(plan) if p.kind != "documents" else []
        if made_without:
            result = {**result, "set_aside": made_without}  # the shards it was made without
        finish_pass(plan, p, {k: result[k] for k in keep if k in result} | {"wall_seconds": round(time.time() - started, 3)},
                    launch)
        summary.passes[p.name] = "done"
        previous = p
        if only_shards is not None and p.kind == "documents":
            # a share closed the document pass: the later passes are one run's (dedup reads every
            # shard), not each share's; two shares finishing together could both run them at once
            log.info("[%s] closed by this share; the later passes run in a run of the whole plan", p.name)
            break
    for p in plan.passes:
        summary.passes.setdefault(p.name, "blocked")
    try:
        summary.stats = write_run_stats(plan, [o.name for o in summary.failed], skipped)
    except (fs.StorageError, OSError) as exc:
        if not summary.failed:
            raise
        # shards failed because the output refuses writes: the funnel cannot be stored either
        log.warning("could not write %s: %s", plan.run.stats_json, str(exc).splitlines()[0])
    return summary


def redo_damaged_shards(plan: Plan, p: Pass, files: PassFiles | None = None) -> list[str]:
    """Clear the outputs of the shards of finished pass ``p`` whose files no longer match the sizes
    its marker recorded (cut short by a partial sync, replaced), one warning each naming the file:
    they are then missing, and redone as a deleted shard is (the pass is no longer finished). One
    listing per directory, no read. Not for a share of a multi-instance job (the whole plan's run
    checks): a share must not reopen a pass its siblings closed. Returns the shards cleared."""
    marker = read_marker(plan, p)
    if marker is None:
        return []
    out = plan.pass_dir(p.name)
    damaged = damaged_outputs(out, marker.get("outputs"), set(plan.shard_names()), files)
    for shard, problem in damaged.items():
        log.warning("[%s] %s: redoing shard %s", p.name, problem, shard)
        clear_shard_outputs(out, shard)
    return sorted(damaged)


def _may_set_aside(plan: Plan, summary: RunSummary) -> bool:
    """Whether the failed shards are few enough (``executor.max_failed_fraction`` of the input's)
    for the run to go on without them; never all of them."""
    failed, total = len(summary.failed), len(summary.outcomes)
    # compared as a share with a margin: 29 of 100 at 0.29 was refused (0.29 * 100 = 28.999...)
    return 0 < failed < total and failed / total <= plan.config.executor.max_failed_fraction + 1e-9


def _clear_passes_made_over_other_shards(plan: Plan, later: list[Pass], set_aside: list[str],
                                         before: list[str] | None) -> None:
    """The document pass just closed with ``set_aside``: a later pass that finished over another set
    of shards loses its outputs before it runs, so dedup and tokens never mix two sets. So does
    one that started and has no marker (a run stopped in it), unless the pass's previous marker
    (``before``: its set, None if there was none) says it was made over the same set: a kill
    inside dedup then resumes it, as without shards set aside."""
    for p in later:
        marker = read_marker(plan, p)
        if marker is not None and marker_set_aside(marker) == set_aside:
            continue
        if marker is None and before == set_aside:
            continue  # started under the document pass's marker of the same set: resumable
        if marker is not None or pass_started(plan, p):
            log.info("[%s] made over another set of shards than the %d now set aside: redoing it", p.name,
                     len(set_aside))
            _clear_pass_outputs(plan, p)


def _clear_later_passes_of_share(plan: Plan, later: list[Pass]) -> None:
    """A forced share of a launch redoes the document pass: the passes after it, which no share
    runs and whose fingerprints do not change with the content of its input files, were made over
    the shards before this launch. They lose their outputs now, as a forced run of the whole plan
    clears them before its first pass: a file rewritten in place left its old documents in the
    corpus (OUT/kept), and the launch's later step skipped the finished dedup pass over them (h226)."""
    for p in later:
        if pass_started(plan, p):
            _clear_pass_outputs(plan, p)


def _clear_rewritten_shards(plan: Plan) -> None:
    """Clear the first pass's shards whose input files were rewritten since they finished
    (:attr:`Plan.first_pass_redo`), after the later passes (made over them) lost their outputs:
    the pass's marker first (its fingerprint, which holds the files' names alone, is unchanged),
    then each shard's stats marker, then its files, as a shard about to be redone is cleared. A
    crash after this leaves them unfinished (never finished over the old content) and the passes
    after them empty, so the same command ends the run; a crash before it leaves the pass finished,
    and a plain rerun refuses the changed files as before."""
    first = plan.passes[0]
    forget_pass(plan, first)
    out = plan.pass_dir(first.name)
    for shard in plan.first_pass_redo:
        clear_shard_outputs(out, shard)


def _clear_pass_outputs(plan: Plan, p: Pass) -> None:
    """Delete what pass ``p`` wrote (its marker first): its directory (its index too) and, for the
    last document pass, the corpus in ``OUT/kept``; a one-pass run's outputs at the top of OUT."""
    forget_pass(plan, p)
    if p.kind == "tokenize":
        fs.delete_tree(plan.run.tokens_dir)
        return
    out = plan.pass_dir(p.name)
    if p.role == "only":
        for directory in (out.stats_dir, out.kept_dir, out.removed_dir, out.samples_dir, out.failed_dir):
            fs.delete_tree(directory)
        return
    fs.delete_tree(out.root)
    if p.role == "last":
        fs.delete_tree(out.kept_dir)


def write_run_stats(plan: Plan, failed_shards: list[str],
                    listed: dict[str, PassFiles] | None = None) -> dict[str, Any]:
    """The funnel over every document pass that has stats, into ``OUT/stats.json``. ``listed``:
    pass name -> its directories' listings, for passes whose files have not changed since."""
    passes = []
    for i, p in enumerate(plan.document_passes):
        out = plan.pass_dir(p.name)
        finished = pass_finished(plan, p, (listed or {}).get(p.name))
        if i and not finished:
            break  # a later pass not finished under this plan: another config's, or another set's
        pass_stats = fs.read_json_if_any(out.stats_json)
        if pass_stats is not None:
            passes.append(pass_stats)
        if not finished:
            # the first pass unfinished ends the funnel: its own stats count (a failed shard's pass)
            break
    if not passes:
        return {}
    stats = combine_pass_stats(passes) | {"failed_shards": failed_shards}
    aside = set_aside_shards(plan)
    if aside:
        # what the funnel does not count: each input set aside, with the error that failed it
        out, inputs = plan.pass_dir(plan.passes[0].name), dict(zip(plan.shard_names(), plan.input_files))
        stats["set_aside_shards"] = [{"shard": name, "input": inputs.get(name), "error": _failure(out, name)}
                                     for name in aside]
    fs.write_bytes(plan.run.stats_json, json.dumps(stats, indent=1).encode())
    return stats


def _failure(out: PassDir, shard: str) -> str:
    """The first line of the error a shard failed with (its ``failed/<shard>.json``)."""
    try:
        error = fs.read_json(out.failed(shard)).get("error") or ""
    except (fs.StorageError, OSError, ValueError):
        return ""
    return error.strip().splitlines()[0] if error.strip() else ""


_EXIT_GC_SKIPPED = False


def skip_exit_gc() -> None:
    """Freeze the cyclic garbage collector's objects when this process exits (registered once).

    Why: at exit the interpreter ran full collections over every object of the libraries a run
    loads (pyarrow, pandas, fastText, tldextract's trie...): ~0.25 s of a short run's wall time,
    for nothing a run needs, since its outputs are written and closed before :func:`run_pipeline`
    returns. The cost: objects left in reference cycles at exit are not finalized then (Python
    does not promise that they are), so only refinery's own process asks for it (the console
    script, ``refinery.cli.main(exiting=True)``): :func:`run_pipeline` called from another program
    leaves that program's exit as it was."""
    global _EXIT_GC_SKIPPED
    if not _EXIT_GC_SKIPPED:
        _EXIT_GC_SKIPPED = True
        atexit.register(gc.freeze)


def _checked_uri(flag: str, key: str, given: str | None, configured: str | None) -> str:
    """``given`` (else the config's ``key``) as a valid URI; a bad one is named by where it came
    from: ``-o s3://`` said "invalid S3 bucket name '' in 's3://' (give --input and --output, or
    input/output in the config)", when both were given and only one was bad (h133)."""
    try:
        return fs.validate_uri(given or configured or "")
    except fs.StorageError as exc:
        where = f"{flag}:" if given else f"the config's {key}:"
        raise ConfigError(f"{where} {exc}") from None


def run_pipeline(
    config: PipelineConfig,
    input_uri: str | None = None,
    output_uri: str | None = None,
    executor: str | None = None,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    limit: int | None = None,
    only_passes: list[str] | None = None,
    only_shards: set[str] | None = None,
    launch: str | None = None,
    on_complete: Callable[[RunSummary], None] | None = None,
    footer_record: str | None = None,
) -> RunSummary:
    """Plan ``config`` over ``input_uri`` into the run directory ``output_uri`` and run every pass
    (or ``only_passes``; ``only_shards`` of the document pass and ``launch``, see :func:`run_plan`).
    ``footer_record``: a launch's record of the input footers it checked (see :func:`plan_run`).
    ``on_complete(summary)`` is called as soon as the run is complete (:attr:`RunSummary.complete`:
    its funnel written), before its workers are stopped and its lock let go."""
    check_launch(force, only_shards, launch)
    for flag, key, uri in (("--input", "input", input_uri or config.input), ("--output", "output", output_uri or config.output)):
        if not uri:  # name the one missing, not both
            raise ConfigError(f"no {flag} given (nor {key}: in the config)")
    input_uri = _checked_uri("--input", "input", input_uri, config.input)
    output_uri = _checked_uri("--output", "output", output_uri, config.output)
    kind = executor or config.executor.type
    if kind not in ("local", "ray"):
        raise ConfigError(f"unknown executor {kind!r}: use 'local' or 'ray'")
    try:
        shard_log_every_s()  # each worker reads it again: a bad value failed every shard, one by one
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    fs.executor_kind = kind  # before the input is listed: a missing-credentials error there advises for it
    if kind == "ray":
        from refinery.executors.ray_cluster import RayNotInstalled, check_ray_installed

        try:
            check_ray_installed()
        except RayNotInstalled as exc:
            raise ConfigError(str(exc)) from None
        # Ray workers run in their raylet's directory, not ours: a relative output went to the
        # directory `ray start` was run from (found by adversarial testing)
        output_uri = fs.absolute(output_uri)
    plan = plan_run(config, input_uri, output_uri, limit=limit, footer_record=footer_record)
    config.build_stages()  # fail on bad stage params before anything is written
    if load_previous(plan.run) is None:
        # before the lock file, so nothing is left in a place refused; it deletes nothing (run_plan
        # clears under the lock: a forced damaged run cleared outputs before finding the directory busy)
        check_output_is_ours(plan, force)
    log.info("run %s: %d shard(s) from %s to %s, passes %s, on the %s executor", config.name, len(plan.input_files),
             input_uri, output_uri, " -> ".join(p.name for p in plan.passes), kind)
    ex = config.executor
    # one run at a time per run directory (a local lock, an S3 claim), for the whole run; the shares
    # of a multi-instance job together. Held around the executor, so it is let go only once the
    # workers are gone: inside, a failed or interrupted run released it while its workers still
    # wrote, and a retried job could start beside them (a review)
    settings = {"config": config.name, "input": input_uri, "only_passes": only_passes,
                "only_shards": sorted(only_shards) if only_shards is not None else None}
    with run_guard(output_uri, only_shards is not None, settings) as claim:
        with make_executor(kind, workers or ex.workers, ray_address=ex.ray_address,
                           object_store_memory=ex.object_store_memory, max_retries=ex.max_retries,
                           progress=progress, allocator=ex.allocator) as runner:
            check_registered_stages_reach_workers(runner)
            if only_shards is None:  # the only run on this directory: whatever a killed one left is stale
                swept = fs.sweep_tree_temporaries(output_uri)
                if swept:
                    log.info("removed %d temporary file(s) left by an interrupted run", swept)
            summary = run_plan(plan, runner, force=force, only_passes=only_passes, only_shards=only_shards,
                               launch=launch)
            if on_complete is not None and summary.complete:
                on_complete(summary)
        confirm_claim(claim)  # S3: still this run's (not taken over while it stalled past the lapse)
        return summary


__all__ = ["RunDir", "RunSummary", "check_output_is_ours", "plan_tasks", "run_pipeline", "run_plan"]
