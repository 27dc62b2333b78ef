"""Where a run stands: every pass (finished / running / stopped / failed / pending), and for the document passes the
shards planned, finished, failed and pending, documents so far.

Read from the run directory alone (``run.json``, ``passes/*.json``, ``stats/*.json`` shard markers,
``failed/*.json``), so it works for a run in progress on another machine, locally or on S3; with
``check_input`` (the ``status`` command) the run's input is also listed once, to say what changed
in it since the run read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from refinery.io import fs
from refinery.io.runlock import CLAIM_FILE, Holder, holder_now, run_dir_active
from refinery.plan import force_keeps_words, input_changes, marker_set_aside
from refinery.rundir import PassDir, PassFiles, RunDir, damaged_outputs, pass_dir_refusal, shards_with_outputs


@dataclass
class RunStatus:
    run_dir: str
    name: str
    shards_planned: int
    shards_finished: int
    shards_failed: int
    docs_read: int
    docs_kept: int
    shard_seconds: float  # summed over finished shards (CPU-side time, not wall time)
    failed: dict[str, str] = field(default_factory=dict)  # shard -> first line of its error
    passes: list[dict[str, Any]] = field(default_factory=list)  # name, kind, state, detail
    #: failed shards the run went on without (executor.max_failed_fraction): shard -> error
    set_aside: dict[str, str] = field(default_factory=dict)
    #: pass -> its shards with a finished marker whose kept or removed file is gone (a rerun redoes them);
    #: they count as neither finished nor in the documents above
    outputs_missing: dict[str, list[str]] = field(default_factory=dict)
    #: pass -> what no longer matches in its finished shards' files (``<uri> has 1,000 bytes, not the
    #: 52,538 recorded ...``: cut short or replaced since the pass finished; a rerun redoes them), and
    #: they count as neither finished nor in the documents above
    outputs_damaged: dict[str, list[str]] = field(default_factory=dict)
    #: the command holding the run directory now (its lock, or its S3 claim with the claim's age), if
    #: any: ``--json`` gives its fields (kind, command, pid, host, since in UTC, age_s, ...), the text its line
    held_by: Holder | None = None
    #: the run's ``--limit N`` (a sample run: at most N documents read per input shard), None for
    #: the whole input: ``status`` said nothing of it while ``stats``, ``report`` and ``run`` did (h192)
    limit: int | None = None
    #: how the input differs now from what the run read (``added``/``removed``/``changed`` names),
    #: when asked for (``check_input``) and it differs: a finished run said `finished` with a file
    #: added to its input that it never read (session 49, h197)
    input_changes: dict[str, list[str]] | None = None

    @property
    def shards_pending(self) -> int:
        return max(0, self.shards_planned - self.shards_finished - self.shards_failed - len(self.set_aside))

    @property
    def complete(self) -> bool:
        if self.passes:
            return all(p["state"] == "finished" for p in self.passes)
        return self.shards_finished == self.shards_planned

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"shards_pending": self.shards_pending, "complete": self.complete}


#: what status reads of a shard's marker: the rest (~30 KB of histograms a shard) held for every
#: shard took 1.6 GB at 4,000 shards (session 43, h130)
STATUS_FIELDS = ("shard", "docs_read", "docs_kept", "seconds", "input")


def _shards(out: PassDir, counts: bool = True, files: PassFiles | None = None
            ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The pass's finished shards (their markers' :data:`STATUS_FIELDS`; without ``counts`` only
    their names, from one listing: a pass's state needs no marker read, and reading every pass's
    took 9 of `status`'s 13 s at 4,000 shards) and its failed shards' first error lines.
    ``files``: the command's listings of the pass (:class:`PassFiles`)."""
    from refinery.stats.funnel import iter_shard_stats  # (stats imports status: not at the top)

    files = files or PassFiles()
    if counts:
        finished = [{k: s[k] for k in STATUS_FIELDS if k in s} for s in iter_shard_stats(out, files)]
    else:
        markers = files.files(out.stats_dir, (".json",))  # as refinery.plan.shards_with_markers names them
        finished = [{"shard": name} for name in sorted({fs.basename(u)[: -len(".json")] for u in markers})]
    failed: dict[str, str] = {}
    for uri in files.files(out.failed_dir, (".json",)):
        record = fs.read_json(uri)
        line = (record.get("error") or "").strip().splitlines()[0] if record.get("error") else ""
        failed[record["shard"]] = fs.explain_s3_failure(line, "this run uses") or line  # a raw S3 refusal said so
    done = {s["shard"] for s in finished}
    return finished, {k: v for k, v in failed.items() if k not in done}  # a later attempt finished it


def _with_outputs(out: PassDir, finished: list[dict[str, Any]], damaged: dict[str, str] | None = None,
                  files: PassFiles | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The finished shards whose kept and removed files are both there (and not ``damaged``), and
    the names of the others: a shard whose file went missing is not finished (a rerun redoes it),
    and its marker's counts describe documents no longer in the run directory."""
    if not finished:
        return finished, []
    present = shards_with_outputs(out, files) - set(damaged or ())
    return ([f for f in finished if f.get("shard") in present],
            sorted(str(f.get("shard")) for f in finished if f.get("shard") not in present))


def _pass_states(run: RunDir, record: dict[str, Any], shards_planned: int,
                 active: bool | None = None, missing: dict[str, list[str]] | None = None,
                 damaged: dict[str, dict[str, str]] | None = None, files: PassFiles | None = None,
                 aside: set[str] | None = None) -> list[dict[str, Any]]:
    """Each pass's state. ``active``: whether a run holds the run directory now (None: unknown, as
    on S3), which tells a pass being run from one whose run was interrupted. ``missing``, if given,
    receives each pass's finished shards whose outputs went missing; ``damaged``, those whose files
    no longer have the sizes its marker recorded (shard -> what is wrong). ``files``: the
    command's listings; ``aside``: :func:`_set_aside`, if its caller has it."""
    # each pass's directory under the run directory as given here, not as run.json spells it: a run
    # made with a relative --output records relative paths, which mean nothing from another directory
    files = files or PassFiles()
    documents = [p["name"] for p in record["passes"] if p.get("kind") != "tokenize"]
    dirs = dict(zip(documents, run.pass_dirs_of(record)))
    aside = _set_aside(run, record) if aside is None else aside
    states = []
    for p in record["passes"]:
        marker_uri = run.pass_marker(p["name"])
        marker = fs.read_json_if_any(marker_uri)
        pass_dir = dirs.get(p["name"])
        finished, failed = (_shards(pass_dir, counts=False, files=files)
                            if p["kind"] != "tokenize" and pass_dir is not None else ([], {}))
        if pass_dir is not None:
            current = marker if marker and marker.get("fingerprint") == p.get("fingerprint") else {}
            changed = damaged_outputs(pass_dir, current.get("outputs"), files=files)  # what a rerun finds
            finished, lost = _with_outputs(pass_dir, finished, changed, files)
            present = shards_with_outputs(pass_dir, files) if changed else set()
            gone = [s for s in lost if s not in present]  # a kept or removed file deleted
            if gone and missing is not None:
                missing[p["name"]] = gone
            if len(gone) < len(lost) and damaged is not None:
                damaged[p["name"]] = {s: changed[s] for s in lost if s in present}
        whole = p["kind"] == "tokenize" or len(finished) + len(aside) >= shards_planned
        # a later pass made without other shards than the document pass now sets aside is not
        # finished under the plan (as refinery.plan.pass_finished says; the review found them apart)
        same_set = p is record["passes"][0] or set(marker_set_aside(marker)) == aside
        if marker and marker.get("fingerprint") == p.get("fingerprint") and whole and same_set:
            summary = dict(marker.get("summary") or {})
            if summary.get("set_aside"):
                summary["set_aside"] = len(summary["set_aside"])  # the shards are listed below
            detail = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in summary.items())
            states.append({"name": p["name"], "kind": p["kind"], "state": "finished", "detail": detail})
            continue
        detail = ""
        if p["kind"] != "tokenize" and pass_dir is not None:
            steps = _index_steps(pass_dir) if not finished else []
            detail = (f"{len(finished)}/{shards_planned} shards finished" + (f", {len(failed)} failed" if failed else "")
                      + (f", index steps finished: {', '.join(steps)}" if steps else ""))
            # a dedup pass builds its index before it writes a shard: stopped there, it read "pending"
            state = "failed" if failed else "running" if finished or steps else "pending"
            if state == "running" and active is False:
                state = "stopped"  # shards done but no run holds the directory: interrupted, resumable
        else:
            state = "pending"
        if state == "pending" and active is not None and all(s["state"] == "finished" for s in states):
            # the first unfinished pass of a run at work: a dedup pass building its index or the
            # tokens pass writes no shard marker for a while, and read "pending" while it ran; of a
            # run nobody holds, it was begun (run.json) and stopped before its first shard or step:
            # it read "pending", like a pass never begun (h187)
            state = "running" if active else "stopped"
        states.append({"name": p["name"], "kind": p["kind"], "state": state, "detail": detail})
    return states


def _index_steps(out: PassDir) -> list[str]:
    """The steps of a dedup pass's index that finished (``index/passes/<step>.json``): a rerun skips them."""
    steps_dir = fs.join(out.index_dir, "passes")
    return [fs.basename(u)[:-len(".json")] for u in fs.list_files_if_any(steps_dir, (".json",))]


def _set_aside(run: RunDir, record: dict[str, Any]) -> set[str]:
    """The shards the run's document pass set aside when it finished (its marker, if current)."""
    first = record["passes"][0] if record.get("passes") else None
    marker = fs.read_json_if_any(run.pass_marker(first["name"])) if first is not None else None
    if marker is None or marker.get("fingerprint") != first.get("fingerprint"):
        return set()
    return set(marker_set_aside(marker))


def _s3_active(run_dir: str, held_by: str | None) -> bool | None:
    """Whether a command is at work on an S3 run directory: a live claim says so; a claim in place but
    released or lapsed says nobody is (every command of a version that claims holds one while it
    works: a stopped run read as "running"); no claim at all cannot be told (a run made before claims)."""
    if held_by:
        return True
    return False if fs.file_exists(fs.join(run_dir, CLAIM_FILE)) else None


def run_status(run_dir: str, counts: bool = True, files: PassFiles | None = None,
               check_input: bool = False) -> RunStatus:
    """Where the run stands. Without ``counts`` its finished shards come from one listing and no
    shard marker is read: ``docs_read``, ``docs_kept`` and ``shard_seconds`` are then 0 (what
    `stats` and `report` ask, whether the run finished, read every marker of the first and last
    pass: 10,000 at 5,000 shards, to print a finished run's stats.json; session 45, h145).
    ``files``: the command's listings, to fill or reuse (each pass directory is listed once).
    ``check_input``: list the run's input once and say what changed in it since the run
    (:func:`refinery.plan.input_changes`)."""
    run = RunDir(run_dir)
    manifest = fs.read_json_if_any(run.run_json)
    if manifest is None:
        raise FileNotFoundError(pass_dir_refusal(run_dir) or f"no run.json under {run_dir}{fs.missing_run_hint(str(run_dir))}: is it a refinery run directory?")
    # run.json read once (it was read four times) and each pass directory listed once (h156)
    record = manifest if isinstance(manifest.get("passes"), list) else None  # as run.recorded_plan()
    pass_dirs = run.pass_dirs_of(record)
    files = files if files is not None else PassFiles()
    first = pass_dirs[0]
    finished, failed = _shards(first, counts, files)
    # the input file each finished shard read: a removed file is named by it (it was by its shard)
    read_inputs = {str(s["shard"]): s.get("input") for s in finished} if counts else None
    planned = int(manifest.get("shards", len(finished)))
    missing: dict[str, list[str]] = {}
    damaged: dict[str, dict[str, str]] = {}
    held_by = holder_now(run_dir)
    active = run_dir_active(run_dir) if not fs.is_s3(run_dir) else _s3_active(run_dir, held_by)
    aside = _set_aside(run, record) if record else set()
    passes = _pass_states(run, record, planned, active, missing, damaged, files, aside) if record else []
    # counts from the shards whose files are there: the markers of shards whose kept file was
    # deleted said "178 in the corpus so far" with half of OUT/kept gone (found by trials)
    documents = [p["name"] for p in record["passes"] if p.get("kind") != "tokenize"] if record else ["filter"]
    finished, lost = _with_outputs(first, finished, damaged.get(documents[0]), files)
    if lost and not record:  # a run without a recorded plan: one pass at the top of OUT
        missing["filter"] = lost
    last = pass_dirs[-1]
    kept = 0 if not counts else sum(s["docs_kept"] for s in (
        finished if last == first
        else _with_outputs(last, _shards(last, files=files)[0], damaged.get(documents[-1]), files)[0]))
    changes = input_changes(run, manifest, read_inputs, files) if check_input and record else None
    set_aside = {k: v for k, v in failed.items() if k in aside}
    failed = {k: v for k, v in failed.items() if k not in aside}
    return RunStatus(
        run_dir=run_dir,
        name=manifest.get("name") or manifest.get("config", {}).get("name", ""),
        shards_planned=planned,
        shards_finished=len(finished),
        shards_failed=len(failed),
        docs_read=sum(s.get("docs_read", 0) for s in finished),
        docs_kept=kept,
        shard_seconds=round(sum(s.get("seconds", 0.0) for s in finished), 3),
        failed=failed,
        set_aside=set_aside,
        passes=passes,
        outputs_missing=missing,
        outputs_damaged={name: sorted(problems.values()) for name, problems in damaged.items()},
        held_by=held_by,
        limit=int(manifest["limit"]) if manifest.get("limit") else None,
        input_changes=asdict(changes) if changes else None,
    )


def input_changes_line(changes: dict[str, list[str]], passes: list[dict[str, Any]]) -> str:
    """`status`'s one line on :attr:`RunStatus.input_changes`: what the input gained, lost or had
    rewritten since the run read it (files by name; a file removed before its shard finished by
    its shard's, as nothing recorded the file's), and what a rerun does about it."""
    def few(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    kinds = (("added", "added ("), ("removed", "removed ("), ("changed", "rewritten ("),
             ("removed_unfinished", "removed before their shards finished (shards "))
    parts = [f"{len(changes[key])} {label}{few(changes[key])})" for key, label in kinds if changes.get(key)]
    parts[0] = parts[0].replace(" ", " file(s) ", 1)
    first = passes[0]["name"] if passes else "filter"
    if not (changes.get("added") or changes.get("removed") or changes.get("changed")):
        # nothing of them is in the run: a rerun goes on without them (refinery.plan's _unfinished_inputs_removed)
        return (f"input changed since this run read it: {', '.join(parts)}, none of them in its outputs; "
                f"the same command goes on without them")
    rerun = force_keeps_words(first, bool(changes.get("added")), bool(changes.get("removed")),
                              bool(changes.get("changed")), len(passes) > 1)
    return f"input changed since this run read it: {', '.join(parts)}, not reflected in its outputs; rerun with --force to {rerun}"
