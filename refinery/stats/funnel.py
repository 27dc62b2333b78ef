"""Merge per-shard stats into a run summary (the funnel) and render it as a table."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any, Iterable, Iterator

from refinery.io import fs
from refinery.io.readahead import read_ahead
from refinery.rundir import PassDir, PassFiles, RunDir, pass_dir_refusal
from refinery.stats.counters import StageListMerge, check_conservation, est_tokens, merge_stage_lists
from refinery.stats.domains import TopDomainsMerge, merge_top_domains
from refinery.stats.histograms import HistogramMapMerge, merge_histogram_maps

log = logging.getLogger("refinery.stats")

#: registered domains kept per (stage, reason) in the merged run summary
RUN_TOP_DOMAINS = 100
#: stage kinds of the readers (a later pass's reader only re-reads the previous pass's kept shards)
READER_KINDS = ("warc_reader", "parquet_reader", "jsonl_reader")
#: stage kinds of the corpus-level passes (refinery.dedup.driver.STAGE_OF_METHOD's; stats imports no driver)
PASS_KINDS = ("url_dedup", "minhash_dedup", "exact_dedup", "lines_dedup", "substring_dedup", "decontaminate")


def reader_name(summary: dict[str, Any]) -> str | None:
    """The name of the run's reader row (its first stage; ``warc_reader+jsonl_reader`` for mixed
    inputs), or None."""
    stages = summary.get("stages") or []
    if not stages:
        return None
    first = stages[0]
    parts = str(first.get("stage", "")).split("+")
    return first["stage"] if first.get("kind") in READER_KINDS or all(p in READER_KINDS for p in parts) else None


def funnel_stage(summary: dict[str, Any], stage: str) -> str:
    """The funnel row that counts a document removed by ``stage`` (its ``removed_stage`` in
    ``removed/`` and ``samples/``): a reader's removals are the reader row's, which inputs of several
    formats name ``jsonl_reader+warc_reader`` (the rows keep the reader that removed them)."""
    reader = reader_name(summary)
    return reader if reader is not None and stage in reader.split("+") else stage


def stage_groups(summary: dict[str, Any]) -> dict[str, int]:
    """Each stage row's group: 0 the reader, 1 a document stage, 2 a corpus pass after the stages
    (dedup, decontamination; tokens have no row). A plan's later passes are its last rows, one
    each; a summary without ``passes`` (one pass: a recipe of stages, or `refinery dedup`'s output)
    counts its trailing rows of a pass kind."""
    stages = summary.get("stages") or []
    groups = {s["stage"]: 1 for s in stages}
    reader = reader_name(summary)
    if reader is not None:
        groups[reader] = 0
    later = len(summary.get("passes") or [None]) - 1
    if not summary.get("passes"):
        while later < len(stages) - 1 and stages[-1 - later].get("kind") in PASS_KINDS:
            later += 1
    for s in stages[len(stages) - later:]:
        groups[s["stage"]] = 2
    return groups


class LanguagesMerge:
    """Per-shard ``languages`` sections (``{lang: {docs_in, docs_kept, chars_kept, removed}}``) added one at a time."""

    def __init__(self) -> None:
        self.column: str | None = None
        self.merged: dict[str, dict[str, Any]] = {}

    def add(self, section: dict[str, Any] | None) -> None:
        if self.column is None and section and section.get("column"):
            self.column = section["column"]
        for lang, d in ((section or {}).get("by_language") or {}).items():
            m = self.merged.setdefault(lang, {"docs_in": 0, "docs_kept": 0, "chars_kept": 0, "removed": {}})
            for key in ("docs_in", "docs_kept", "chars_kept"):
                m[key] += d.get(key, 0)
            for stage, n in d.get("removed", {}).items():
                m["removed"][stage] = m["removed"].get(stage, 0) + n

    def result(self) -> dict[str, Any]:
        ordered = dict(sorted(self.merged.items(), key=lambda kv: (-kv[1]["docs_in"], kv[0])))
        return {"column": self.column or "language", "by_language": ordered}


def merge_languages(sections: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Merge per-shard ``languages`` sections (``{lang: {docs_in, docs_kept, chars_kept, removed}}``)."""
    merge = LanguagesMerge()
    for section in sections:
        merge.add(section)
    return merge.result()


def combine_pass_languages(sections: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's ``languages`` over a plan's document passes (each a merged pass section, in
    order): documents in from the first pass, kept (and their characters) from the last, removals
    of every pass. The filter pass's alone counted documents a dedup pass removed as kept (found
    by adversarial testing)."""
    first = sections[0] or {}
    merged: dict[str, dict[str, Any]] = {
        lang: {"docs_in": d.get("docs_in", 0), "docs_kept": 0, "chars_kept": 0, "removed": dict(d.get("removed", {}))}
        for lang, d in (first.get("by_language") or {}).items()}
    zero = {"docs_in": 0, "docs_kept": 0, "chars_kept": 0, "removed": {}}
    for section in sections[1:]:
        for lang, d in ((section or {}).get("by_language") or {}).items():
            m = merged.setdefault(lang, {**zero, "removed": {}})
            for stage, n in d.get("removed", {}).items():
                m["removed"][stage] = m["removed"].get(stage, 0) + n
    for lang, d in ((sections[-1] or {}).get("by_language") or {}).items():
        m = merged.setdefault(lang, {**zero, "removed": {}})
        m["docs_kept"], m["chars_kept"] = d.get("docs_kept", 0), d.get("chars_kept", 0)
    ordered = dict(sorted(merged.items(), key=lambda kv: (-kv[1]["docs_in"], kv[0])))
    return {"column": first.get("column", "language"), "by_language": ordered}


class ShardStatsMerge:
    """A pass's funnel, its shards' stats added one at a time: a shard's marker (~30 KB of JSON
    with its histograms) is dropped once added. Holding every marker to merge them held 1.6 GB in
    the driver at 4,000 shards, and would need ~35 GB at 90,000 (session 43, h130)."""

    def __init__(self) -> None:
        self.shards = self.docs_read = self.docs_kept = self.docs_removed = self.sample_rows = 0
        self.skipped: dict[str, int] = {}
        self.notes: dict[str, int] = {}
        self.stages = StageListMerge()
        self.histograms = HistogramMapMerge()
        self.languages = LanguagesMerge()
        self.top_domains = TopDomainsMerge(RUN_TOP_DOMAINS)

    def add(self, s: dict[str, Any]) -> None:
        self.shards += 1
        self.stages.add(s["stages"])
        add_counts(self.skipped, s.get("reader_skipped_records"))
        add_counts(self.notes, s.get("reader_notes"))  # a marker without it (older): 0
        self.docs_read += s["docs_read"]
        self.docs_kept += s["docs_kept"]
        self.docs_removed += s["docs_removed"]
        self.histograms.add(s.get("histograms", {}))
        self.languages.add(s.get("languages", {}))
        self.top_domains.add(s.get("top_domains", {}))
        self.sample_rows += s.get("samples", {}).get("rows", 0)

    def result(self) -> dict[str, Any]:
        stages = self.stages.result()
        check_conservation(stages)
        if self.docs_read != self.docs_kept + self.docs_removed:
            raise AssertionError(f"run totals do not reconcile: read {self.docs_read} != kept {self.docs_kept} + "
                                 f"removed {self.docs_removed}")
        return {
            "shards": self.shards,
            "docs_read": self.docs_read,
            "docs_kept": self.docs_kept,
            "docs_removed": self.docs_removed,
            "reader_skipped_records": dict(sorted(self.skipped.items())),
            "reader_notes": dict(sorted(self.notes.items())),
            "stages": stages,
            "histograms": self.histograms.result(),
            "languages": self.languages.result(),
            "top_domains": self.top_domains.result(),
            "samples": {"rows": self.sample_rows, "path": "samples/"},
        }


def add_counts(into: dict[str, int], counts: dict[str, int] | None) -> None:
    """Add named counts (``reader_notes``, ``reader_skipped_records``) into ``into``: by addition, so any order of shards (or
    passes) gives the same sums; the merged dict is sorted by name where it is written."""
    for k, v in (counts or {}).items():
        into[k] = into.get(k, 0) + v


def merge_shard_stats(shard_stats: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One pass's funnel from its shards' stats (an iterable: see :func:`iter_shard_stats`)."""
    merge = ShardStatsMerge()
    for s in shard_stats:
        merge.add(s)
    return merge.result()


#: shard markers read ahead (in parallel: a request each on S3) of the one being merged: only
#: these are held, whatever the number of shards
STATS_READ_CHUNK = 64


def iter_shard_stats(run_dir: "str | PassDir", files: PassFiles | None = None) -> Iterator[dict[str, Any]]:
    """Every finished shard's stats of one pass (a run of one pass: its directory), in listing
    order, read up to :data:`STATS_READ_CHUNK` ahead of the one being used. ``files``: the
    command's listings (no listing of its own when it listed stats/ already)."""
    stats_dir = (run_dir if isinstance(run_dir, PassDir) else PassDir(run_dir)).stats_dir
    listed = (files or PassFiles()).files(stats_dir, (".json",))
    yield from read_ahead(fs.read_json, listed, ahead=STATS_READ_CHUNK)


#: markers of shards that finished before their turn in the merge, held (as their text) in memory
#: at most: past it the one whose turn is last is set aside in a local temporary file
STATS_HELD_MAX = 256


class StreamedShardStats:
    """A pass's funnel merged while its tasks finish, from the marker text each task's outcome
    carries (:meth:`wrote`), in the order :func:`iter_shard_stats` reads the markers: the close
    (:meth:`result`) then reads only the markers it was not given, a GET per shard per pass on S3
    before (session 49, h194). Same order, same merge: the same funnel, key order included.

    ``markers``: the marker URIs the pass's tasks may write, all of them. The markers of shards
    finished before are given too, by whatever read them to skip their shard (session 50, h210);
    those not given (another instance's) wait for the close, which reads them. A shard's marker is
    merged at its turn once every marker before it is merged; those waiting are held, up to
    :data:`STATS_HELD_MAX` in memory (the driver's: ~30 KB a marker), the others in a local
    temporary file (they were dropped and read again at the close: on a resumed pass, every marker
    finished before after a shard still to run). The close checks the markers it merged are the
    first ones listed, else merges every listed marker anew (a marker its tasks did not write:
    another instance's, one deleted since)."""

    def __init__(self, markers: Iterable[str], held_max: int = STATS_HELD_MAX) -> None:
        self._order = sorted(markers)  # the listing's order (fs.list_files sorts)
        self._merged = 0  # markers _order[:_merged] are in _merge
        self._merge = ShardStatsMerge()
        self._held: dict[str, bytes] = {}
        self._held_max = held_max
        self._aside: dict[str, tuple[int, int]] = {}  # marker -> (offset, length) in _aside_file
        self._aside_file: Any = None

    def wrote(self, marker: str, text: bytes) -> None:
        """``text`` is ``marker``'s (its shard's stats): written by a task, or read by the driver."""
        self._held[marker] = text
        while self._merged < len(self._order) and self._has(self._order[self._merged]):
            self._merge.add(json.loads(self._take(self._order[self._merged])))
            self._merged += 1
        if len(self._held) > self._held_max:
            last = max(self._held)
            self._set_aside(last, self._held.pop(last))

    def result(self, listed: list[str]) -> dict[str, Any]:
        """The pass's funnel over the ``listed`` markers (its stats/ listing at the close)."""
        merge, rest = self._merge, listed[self._merged:]
        if listed[:self._merged] != self._order[:self._merged]:
            log.debug("the pass's markers are not the ones its tasks wrote: every marker is read")
            merge, rest = ShardStatsMerge(), listed
        try:
            for stats in read_ahead(self._read, rest, ahead=STATS_READ_CHUNK):
                merge.add(stats)
        finally:
            if self._aside_file is not None:
                self._aside_file.close()
        return merge.result()

    def _has(self, marker: str) -> bool:
        return marker in self._held or marker in self._aside

    def _take(self, marker: str) -> bytes | None:
        """The text given for ``marker`` (None: not given), no longer kept."""
        text = self._held.pop(marker, None)
        if text is None and marker in self._aside:
            offset, length = self._aside.pop(marker)
            text = os.pread(self._aside_file.fileno(), length, offset)  # (threads of the close read at once)
        return text

    def _set_aside(self, marker: str, text: bytes) -> None:
        try:
            if self._aside_file is None:
                self._aside_file = tempfile.TemporaryFile(prefix="refinery-markers-")
            offset = self._aside_file.seek(0, os.SEEK_END)
            self._aside_file.write(text)
            self._aside_file.flush()
        except OSError as exc:  # a full local disk: the close reads it from the pass's stats/
            log.debug("a marker not set aside (%s): read at the close", exc)
            return
        self._aside[marker] = (offset, len(text))

    def _read(self, marker: str) -> dict[str, Any]:
        text = self._take(marker)
        return fs.read_json(marker) if text is None else json.loads(text)


def merge_pass_stats(out: PassDir, streamed: StreamedShardStats | None = None) -> dict[str, Any]:
    """One pass's funnel from its shards' markers (those ``streamed`` holds or merged: not read)."""
    if streamed is None:
        return merge_shard_stats(iter_shard_stats(out))
    return streamed.result(PassFiles().files(out.stats_dir, (".json",)))


def load_shard_stats(run_dir: "str | PassDir") -> list[dict[str, Any]]:
    """Every finished shard's stats of one pass, as a list (small runs, tests)."""
    return list(iter_shard_stats(run_dir))


def combine_pass_stats(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """One funnel over a plan's document passes (each a merged pass summary, in order): the first
    pass's reader and stages, then each later pass's stages (their reader only re-reads the kept
    shards); documents read by the run, kept by the last pass, removed by all of them."""
    if len(passes) == 1:
        return passes[0]
    first, last = passes[0], passes[-1]
    stages = list(first["stages"])
    for p in passes[1:]:
        stages.extend(s for s in p["stages"] if s.get("kind") not in READER_KINDS)
    combined = {
        **first,
        "docs_kept": last["docs_kept"],
        "docs_removed": sum(p["docs_removed"] for p in passes),
        "reader_notes": _pass_notes(passes),
        "stages": stages,
        "histograms": merge_histogram_maps([p.get("histograms", {}) for p in passes]),
        "languages": combine_pass_languages([p.get("languages", {}) for p in passes]),
        "top_domains": merge_top_domains([p.get("top_domains", {}) for p in passes], RUN_TOP_DOMAINS),
        "samples": {"rows": sum(p.get("samples", {}).get("rows", 0) for p in passes), "path": "*/samples/"},
        "passes": [p.get("pass") for p in passes],
    }
    if combined["docs_read"] != combined["docs_kept"] + combined["docs_removed"]:
        raise AssertionError(f"run totals do not reconcile over passes: read {combined['docs_read']} != kept "
                             f"{combined['docs_kept']} + removed {combined['docs_removed']}")
    return combined


def _pass_notes(passes: list[dict[str, Any]]) -> dict[str, int]:
    """Every pass's ``reader_notes`` summed (a later pass re-reads kept shards whose ids are unique
    already: its notes are 0, but a repair anywhere is counted)."""
    notes: dict[str, int] = {}
    for p in passes:
        add_counts(notes, p.get("reader_notes"))
    return dict(sorted(notes.items()))


def load_run_stats(run_dir: str, files: PassFiles | None = None) -> dict[str, Any]:
    """The run summary: ``stats.json`` if the run finished, else merged from finished shards.
    ``files``: the command's listings (:class:`PassFiles`), which `report` reads on with."""
    summary_uri = RunDir(run_dir).stats_json
    has_plan = fs.file_exists(RunDir(run_dir).run_json)
    if not has_plan and (refusal := pass_dir_refusal(run_dir)):  # its stats.json is one pass's
        raise FileNotFoundError(refusal)
    partial = partial_note(run_dir, files) if has_plan else None
    summary = None if partial and partial["unfinished"] else fs.read_json_if_any(summary_uri)
    if summary is not None:
        return summary
    # unfinished (a failed shard, a --force rerun under way): the run's stats.json is an earlier
    # state, another config's funnel after --force (found by adversarial testing); the finished
    # shards say where it is
    passes = _finished_so_far(RunDir(run_dir), partial, files)
    if not passes:
        if has_plan:
            raise FileNotFoundError(f"no shard of {run_dir} has finished yet: `refinery status {run_dir}` says "
                                    f"where it stands")
        raise FileNotFoundError(f"no stats under {run_dir}{fs.missing_run_hint(str(run_dir))}: is it a refinery run directory?")
    combined = combine_pass_stats(passes)
    if partial and partial["unfinished"]:  # a run still going, or stopped: say so (it read as final)
        combined["partial"] = partial
        if partial.get("failed_shards"):  # the report's "failed shards" card (a stopped run had none)
            combined["failed_shards"] = partial["failed_shards"]
    return combined


def _finished_so_far(run: RunDir, partial: dict[str, Any] | None,
                     files: PassFiles | None = None) -> list[dict[str, Any]]:
    """Each document pass's stats from its finished shards, in order, up to the first pass that
    has not finished: the first pass counts with the shards it has, a later one under way does not
    (its shards so far against all of the pass before it do not reconcile: `stats` and `report`
    failed while a dedup pass ran; found by adversarial testing)."""
    passes = []
    for name, pass_dir, _ in _passes_so_far(run, partial):
        merged = merge_shard_stats(iter_shard_stats(pass_dir, files))
        if not merged["shards"]:
            break
        passes.append(merged | ({"pass": name} if name else {}))
    return passes


def _passes_so_far(run: RunDir, partial: dict[str, Any] | None) -> list[tuple[str | None, PassDir, bool]]:
    """(name, directory, unfinished) of each document pass the funnel counts, in order: every pass
    of a finished run (``partial`` None or not unfinished); of an unfinished one, those before the
    first that has not finished, and that one only when it is the first."""
    states = {p.get("name"): p.get("state") for p in (partial or {}).get("passes", [])}
    record = run.recorded_plan() or {}
    names = [p.get("name") for p in record.get("passes", []) if p.get("kind") != "tokenize"]
    out: list[tuple[str | None, PassDir, bool]] = []
    for i, pass_dir in enumerate(run.pass_dirs_of(record or None)):
        name = names[i] if i < len(names) else None
        unfinished = partial is not None and states.get(name, "finished") != "finished"
        if i and unfinished:
            break
        out.append((name, pass_dir, unfinished))
        if unfinished:
            break
    return out


def counted_outputs(run_dir: str, stats: dict[str, Any],
                    files: PassFiles | None = None) -> tuple[list[PassDir], set[str] | None]:
    """The document passes whose ``removed/`` (and the last one's ``kept/``) hold the documents
    ``stats`` (:func:`load_run_stats`) counts, and the shards to read of them (None: every shard).
    A finished run: every pass. An unfinished one (``stats["partial"]``): the passes the funnel
    counts, and in a first pass still at work only its finished shards (a shard's stats are written
    after its outputs). The what-if read the plan's last pass's ``kept/``, absent until the run
    ends, and every pass's ``removed/``: on a run under way it counted the removed documents alone
    ("of 5 documents that reached gopher_quality" where the funnel said 54; session 48, h180)."""
    run = RunDir(run_dir)
    partial = stats.get("partial")
    if not partial:
        return run.document_pass_dirs(), None
    counted = _passes_so_far(run, partial)
    name, first, unfinished = counted[0]
    if len(counted) == 1 and unfinished:
        listed = (files or PassFiles()).files(first.stats_dir, (".json",))
        return [first], {fs.basename(u)[: -len(".json")] for u in listed}
    return [pass_dir for _, pass_dir, _ in counted], None


def pass_not_counted_yet(stats: dict[str, Any], name: str) -> str | None:
    """Why the funnel of an unfinished run (``stats["partial"]``) has no row ``name`` though its plan
    has a pass of that name still to finish (`stats --what-if lines_dedup.x=...` or `--pairs
    minhash_dedup` while the run is in its filter pass said "no stage ... (it has none)"), or None."""
    partial = stats.get("partial") or {}
    for p in partial.get("passes") or []:
        if p.get("name") == name and p.get("state") != "finished":
            return f"its pass {name} has not finished ({p.get('state')}): `refinery status` says where the run stands"
    return None


def partial_note(run_dir: str, files: PassFiles | None = None) -> dict[str, Any]:
    """How far an unfinished run got: ``{"note": one line, "passes": [{name, state, detail}]}``."""
    from refinery.status import run_status

    try:
        st = run_status(run_dir, counts=False, files=files)  # its state and shard counts: no marker read
    except FileNotFoundError as exc:
        return {"note": f"the run has not finished ({exc})", "passes": [], "unfinished": True}
    # a damaged run.json (a StorageError naming it) is raised: it read "no shard has finished yet"
    unfinished = [p for p in st.passes if p["state"] != "finished"]
    if st.complete:
        return {"note": "", "passes": [], "unfinished": False}
    done = f"{st.shards_finished} of {st.shards_planned} shards of its first pass"
    waiting = (f"; not finished: {', '.join(p['name'] + ' (' + p['state'] + ')' for p in unfinished)}"
               if unfinished else "")
    return {"note": f"the run has not finished ({done}{waiting}): these figures cover the shards finished so far",
            "passes": [{k: p.get(k) for k in ("name", "state", "detail")} for p in st.passes], "unfinished": True,
            "failed_shards": sorted(st.failed)}


def funnel_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (stage) and per (stage, reason), with % of the run's documents still kept."""
    first_in = summary["stages"][0]["docs_in"] if summary["stages"] else 0
    rows = []
    for s in summary["stages"]:
        rows.append({
            "stage": s["stage"], "reason": "", "docs_in": s["docs_in"], "docs_out": s["docs_out"],
            "removed": s["docs_removed"], "words_removed": sum(s.get("removed_words", {}).values()),
            "est_tokens_removed": est_tokens(sum(s.get("removed_chars", {}).values())),
            "removed_pct_of_stage": 100.0 * s["docs_removed"] / s["docs_in"] if s["docs_in"] else 0.0,
            # a run that read nothing has no share (its "0.0%" against another run's 100% read as
            # a loss of 100 points in compare: found by testing the stats)
            "removed_pct_of_input": 100.0 * s["docs_removed"] / first_in if first_in else None,
            "kept_pct_of_input": 100.0 * s["docs_out"] / first_in if first_in else None,
            "seconds": s.get("seconds", 0.0),
            # edits: text cut from documents the stage kept (see docs/stats.md)
            "docs_edited": s.get("docs_edited", 0), "words_cut": s.get("words_cut", 0),
            "chars_cut": s.get("chars_cut", 0), "est_tokens_cut": est_tokens(s.get("chars_cut", 0)),
            "counters": dict(s.get("counters") or {}),
        })
        for reason, n in sorted(s["removed"].items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append({
                "stage": s["stage"], "reason": reason, "docs_in": None, "docs_out": None, "removed": n,
                "words_removed": s.get("removed_words", {}).get(reason, 0),
                "est_tokens_removed": est_tokens(s.get("removed_chars", {}).get(reason, 0)),
                "removed_pct_of_stage": 100.0 * n / s["docs_in"] if s["docs_in"] else 0.0,
                "removed_pct_of_input": 100.0 * n / first_in if first_in else None,
                "kept_pct_of_input": None, "seconds": None,
                "docs_edited": None, "words_cut": None, "chars_cut": None, "est_tokens_cut": None, "counters": {},
            })
    return rows


def has_edits(summary: dict[str, Any]) -> bool:
    """Whether some stage of the run cut text from documents it kept."""
    return any(s.get("docs_edited") or s.get("words_cut") or s.get("chars_cut") for s in summary.get("stages", []))


def counter_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """``{stage, counter, count}`` for every named counter a stage reported (``Stage.take_counters``)."""
    return [{"stage": s["stage"], "counter": name, "count": n}
            for s in summary.get("stages", []) for name, n in sorted((s.get("counters") or {}).items())]


#: what each reader note counts (``reader_notes``: refinery/io/ids.py, refinery/io/parquet.py)
READER_NOTES = {
    "ids_derived": "documents with a null id, given <shard>/<row>",
    "ids_deduplicated": "documents with an id seen before in their shard, given <id>#dup<n>",
}


def reader_note_meaning(note: str) -> str:
    """What a reader note counts, in words (``<column>_utf8_replaced`` for any string column)."""
    if note in READER_NOTES:
        return READER_NOTES[note]
    if note.endswith("_utf8_replaced"):
        return f"documents whose '{note[: -len('_utf8_replaced')]}' had bytes not UTF-8, each replaced by U+FFFD"
    return ""


def reader_note_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """``{stage, note, count, meaning}`` for every non-zero note of what the readers repaired
    (``reader_notes``: no document is removed for them), under the reader row's name."""
    stage = reader_name(summary) or "reader"
    return [{"stage": stage, "note": k, "count": n, "meaning": reader_note_meaning(k)}
            for k, n in sorted((summary.get("reader_notes") or {}).items()) if n]


class FitWidth:
    """A table that fits the console: the first of ``layouts`` (most complete first) whose natural
    width fits, so numbers are never cut to ``12…`` and names never broken; the last layout is used
    (names folded) when none fits. ``layouts`` are functions of nothing returning a rich Table.
    ``after``: renderables printed below the table (e.g. the stage counters)."""

    def __init__(self, layouts: list[Any], after: list[Any] | None = None) -> None:
        self.layouts = layouts
        self.after = list(after or [])

    def table_for(self, console: Any, width: int) -> Any:
        from rich.measure import Measurement

        huge = console.options.update_width(10**6)
        table = None
        for build in self.layouts:
            table = build()
            if Measurement.get(console, huge, table).maximum <= width:
                return table
        table.columns[0].overflow = "fold"  # nothing fits: the name column folds, numbers stay whole
        table.columns[0].no_wrap = False
        return table

    def __rich_console__(self, console: Any, options: Any):
        yield self.table_for(console, options.max_width)
        yield from self.after

    def __rich_measure__(self, console: Any, options: Any):
        from rich.measure import Measurement

        return Measurement.get(console, options, self.table_for(console, options.max_width))


#: funnel columns: (key, header); the ones dropped first at narrow widths come last. The edit
#: columns (documents edited, words cut from kept documents) show only when some stage edited.
#: Words cut are net (out minus in): pii replaces an address with a placeholder, which cuts no
#: text yet changes the count (a trial read "words cut 0, ≈ tokens cut 5" as a contradiction).
FUNNEL_COLUMNS = (("docs_in", "docs in"), ("docs_out", "docs out"), ("removed", "removed"),
                  ("kept_pct_of_input", "kept %"), ("words_removed", "words removed"),
                  ("docs_edited", "edited"), ("words_cut", "words cut (net)"))
EDIT_COLUMNS = ("docs_edited", "words_cut")
#: dropped in this order when the table is too wide (docs in = the previous stage's docs out)
FUNNEL_DROP_ORDER = ("words_removed", "docs_edited", "docs_in", "docs_out")


def name_layouts(columns: list[str], drop_order: tuple[str, ...]) -> list[tuple[bool, list[str]]]:
    """(separate stage and reason columns?, value columns) from most to least complete: first the
    reason gets the stage's column (reasons indented under their stage), then columns are dropped."""
    layouts = [(True, list(columns)), (False, list(columns))]
    kept = list(columns)
    for key in drop_order:
        kept = [c for c in kept if c != key]
        layouts.append((False, list(kept)))
    return layouts


def render_funnel(summary: dict[str, Any], title: str = "refinery funnel") -> FitWidth:
    """The funnel table, fitted to the console's width (see :class:`FitWidth`): at 80 columns the
    reasons sit indented under their stage and "words removed", then "docs in" are left out
    (the caption says so); numbers are never truncated and names never broken. When some stage
    cut text from kept documents, "edited" and "words cut" columns show it; named stage counters
    follow in a table of their own."""
    rows = funnel_rows(summary)
    edits = has_edits(summary)
    columns = [(k, h) for k, h in FUNNEL_COLUMNS if edits or k not in EDIT_COLUMNS]
    headers = dict(columns)

    def cell(r: dict[str, Any], key: str) -> str:
        v = r[key]
        if v is None:
            return ""
        return f"{v:.1f}%" if key == "kept_pct_of_input" else f"{v:,}"

    def build(separate: bool, keys: list[str]) -> Any:
        from rich.table import Table

        from rich import box

        hidden = [headers[k] for k, _ in columns if k not in keys]
        caption = f"hidden at this width: {', '.join(hidden)} (see --json)" if hidden else None
        table = Table(title=title, box=box.SIMPLE_HEAD, caption=caption)
        # Names never wrap (they are what people grep for); numbers never either.
        return fill_stage_table(table, rows, keys, headers, cell, separate)

    order = [k for k, _ in columns if k != "words_removed"] + ["words_removed"]
    # wide: the historical column order (words removed before kept %), then the edits
    wide = ["docs_in", "docs_out", "removed", "words_removed", "kept_pct_of_input"] + \
        [k for k in EDIT_COLUMNS if k in headers]
    drop = tuple(k for k in FUNNEL_DROP_ORDER if k in headers)
    layouts = [(sep, wide if keys == order else keys) for sep, keys in name_layouts(order, drop)]
    return FitWidth([lambda sep=sep, keys=keys: build(sep, keys) for sep, keys in layouts],
                    after=[t for t in [reader_notes_table(summary), counters_table(summary)] if t is not None])


def reader_notes_table(summary: dict[str, Any], title: str = "reader notes (repaired, none removed)") -> Any:
    """What the readers repaired (``reader_notes``; a rich Table), or None when nothing was."""
    return _named_counts_table(title, "note", [(r["stage"], r["note"], r["count"], r["meaning"])
                                               for r in reader_note_rows(summary)])


def counters_table(summary: dict[str, Any], title: str = "stage counters") -> Any:
    """The named counters stages reported (a rich Table), or None when there are none."""
    return _named_counts_table(title, "counter", [(r["stage"], r["counter"], r["count"]) for r in counter_rows(summary)])


def _named_counts_table(title: str, name: str, rows: list[tuple]) -> Any:
    """A rich Table of (stage, name, count[, what]) rows, or None when there are none."""
    if not rows:
        return None
    from rich.table import Table

    from rich import box

    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("stage", no_wrap=True)
    table.add_column(name, no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    if len(rows[0]) > 3:
        table.add_column("what")
    for stage, key, count, *what in rows:
        table.add_row(stage, key, f"{count:,}", *what)
    return table


def fill_stage_table(table: Any, rows: list[dict[str, Any]], keys: list[str], headers: dict[str, str],
                     cell: Any, separate: bool) -> Any:
    """Add the name columns (stage and reason apart, or one indented column) and the ``keys``
    number columns to a rich ``table``, then one row per stage / reason (reasons dimmed)."""
    if separate:
        table.add_column("stage", no_wrap=True)
        table.add_column("reason", no_wrap=True)
    else:
        table.add_column("stage / reason", no_wrap=True)
    for key in keys:
        table.add_column(headers[key], justify="right", no_wrap=True)
    for r in rows:
        names = [r["stage"] if not r["reason"] else "", r["reason"]] if separate else \
            [r["stage"] if not r["reason"] else f"  {r['reason']}"]
        table.add_row(*names, *(cell(r, k) for k in keys), style="dim" if r["reason"] else None)
    return table
