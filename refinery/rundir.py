"""The run directory: the one place that spells out where a run's files live.

A run (``refinery run CONFIG -i IN -o OUT``) is a plan of passes over one run directory::

    OUT/
      run.json                   the plan: input, config, every pass with its fingerprint
      passes/<pass>.json         a pass's completion marker (its fingerprint + summary), written last
      stats.json                 the funnel over every pass (documents and words, per stage, per reason)
      report.html                ``refinery report OUT``
      kept/<shard>.parquet       the corpus: documents every document pass kept
      <pass>/                    one directory per document pass (``filter``, ``url_dedup``, ...):
        kept/<shard>.parquet       what the pass kept (the next pass's input; the last pass keeps
                                   into OUT/kept instead)
        removed/<shard>.parquet    what it removed, with removed_stage / removed_reason / removed_metric
        samples/<shard>.parquet    sampled removed documents per (stage, reason)
        stats/<shard>.json         per-shard counters: written last, the "shard finished" marker
        failed/<shard>.json        the error of a shard that failed
        stats.json                 the pass's funnel
        index/                     a dedup pass's index and intermediate files
      tokens/                    token shards + manifest.json (the tokenize pass)

A plan with a single document pass (a config with ``stages`` only, or ``refinery dedup``) keeps
that pass's files at the top of OUT, as runs always did: ``OUT/kept``, ``OUT/removed``, ...

This module sits in the bottom layer: it imports only :mod:`refinery.io`.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from refinery.io import fs

#: the run's record of its input files' sizes and versions (written just before ``run.json``; read
#: by :class:`refinery.input_record.InputRecord`, once a command)
INPUT_RECORD = "input_files.json"

log = logging.getLogger("refinery.rundir")


@dataclass(frozen=True)
class PassDir:
    """Where one document pass writes. ``kept_root`` defaults to ``<root>/kept``."""

    root: str
    kept_root: str | None = None

    def _dir(self, name: str) -> str:
        return fs.join(self.root, name)

    @property
    def kept_dir(self) -> str:
        return self.kept_root or self._dir("kept")

    @property
    def removed_dir(self) -> str:
        return self._dir("removed")

    @property
    def samples_dir(self) -> str:
        return self._dir("samples")

    @property
    def stats_dir(self) -> str:
        return self._dir("stats")

    @property
    def failed_dir(self) -> str:
        return self._dir("failed")

    @property
    def index_dir(self) -> str:
        return self._dir("index")

    @property
    def stats_json(self) -> str:
        return self._dir("stats.json")

    def kept(self, shard: str) -> str:
        return fs.join(self.kept_dir, f"{shard}.parquet")

    def removed(self, shard: str) -> str:
        return fs.join(self.removed_dir, f"{shard}.parquet")

    def samples(self, shard: str) -> str:
        return fs.join(self.samples_dir, f"{shard}.parquet")

    def stats(self, shard: str) -> str:
        return fs.join(self.stats_dir, f"{shard}.json")

    def failed(self, shard: str) -> str:
        return fs.join(self.failed_dir, f"{shard}.json")

    def relative(self, uri: str) -> str:
        """``uri`` relative to this pass's root (for paths recorded inside stats)."""
        root = self.root.rstrip("/") + "/"
        return uri[len(root):] if uri.startswith(root) else uri


@dataclass(frozen=True)
class RunDir:
    root: str

    @property
    def run_json(self) -> str:
        return fs.join(self.root, fs.RUN_MARKER)

    @property
    def stats_json(self) -> str:
        return fs.join(self.root, "stats.json")

    @property
    def report_html(self) -> str:
        return fs.join(self.root, "report.html")

    @property
    def kept_dir(self) -> str:
        return fs.join(self.root, "kept")

    @property
    def tokens_dir(self) -> str:
        return fs.join(self.root, "tokens")

    def pass_marker(self, name: str) -> str:
        return fs.join(self.root, "passes", f"{name}.json")

    def pass_dir(self, name: str, *, only: bool = False, last: bool = False) -> PassDir:
        """The directory of document pass ``name``: OUT itself when it is the plan's only document
        pass; the last document pass of a longer plan keeps into ``OUT/kept``."""
        if only:
            return PassDir(self.root)
        return PassDir(fs.join(self.root, name), self.kept_dir if last else None)

    def as_pass(self) -> PassDir:
        """This directory read as a single pass (a run of one document pass)."""
        return PassDir(self.root)

    def _record(self) -> tuple[Any, str | None]:
        """(``run.json`` parsed, or None when absent or unreadable; why it cannot be read)."""
        data = fs.read_bytes_if_any(self.run_json)
        if data is None:
            return None, None
        try:
            record = json.loads(data)
        except ValueError as exc:
            return None, f"not JSON ({str(exc).splitlines()[0]})"
        return record, None if isinstance(record, dict) else f"a JSON {type(record).__name__}, not an object"

    def recorded_plan(self) -> dict[str, Any] | None:
        """``run.json`` if it records a plan of passes (``"passes"``), else None (a legacy run)."""
        record, _ = self._record()
        return record if isinstance(record, dict) and isinstance(record.get("passes"), list) else None

    def damaged_plan(self) -> str | None:
        """Why ``run.json`` cannot be read as a record (None when it is absent or readable)."""
        return self._record()[1]

    def foreign_files(self, limit: int = 3) -> list[str]:
        """Files under the directory that no refinery run wrote, when it holds no ``run.json``:
        anything listed (hidden and ``_``-names aside: temporaries, ``_jobs/`` of a launch). Empty
        for a run directory, or a new or empty place."""
        if not fs.exists(self.root):
            return []
        # a local listing spells files absolute: a relative OUTPUT's input record was someone else's
        top = fs.absolute(self.root).rstrip("/")
        runs: list[str] = []  # a run below (``-o runs`` for runs/run3): its files are not listed
        files = fs.list_files(self.root, runs=runs)
        at_top = [f for f in files if posixpath.dirname(f.rstrip("/")) == top]
        if any(fs.basename(f) == fs.RUN_MARKER for f in at_top):
            return []  # another share of the same job planned it meanwhile
        # the plan writes the input record just before run.json: a run killed between the two, or
        # a share starting meanwhile, found "someone else's file" (found by a review)
        ours = {f for f in at_top if fs.basename(f) == INPUT_RECORD}
        # a directory holding runs is no place for one: it was taken as empty, the run's kept/ and
        # stats written beside them, and each then read as a directory of the new run (session 49)
        return ([f"{r}/ (a refinery run)" for r in runs] + [f for f in files if f not in ours])[:limit]

    def unfinished_last_pass(self) -> str | None:
        """The name of the last document pass of the plan ``run.json`` records, when that pass has
        not finished under it (no ``passes/<pass>.json`` with its fingerprint): a run still at work,
        stopped, or failed. Its ``kept/`` is not the corpus yet: a multi-pass run in its first pass
        has no ``OUT/kept`` at all, and one pass's finished shards are part of it. None when it
        finished, or no plan is recorded (a legacy run, a directory of Parquet shards)."""
        record = self.recorded_plan()
        docs = [p for p in (record or {}).get("passes", []) if isinstance(p, dict) and p.get("kind") != "tokenize"]
        if not docs:
            return None
        last, uri = docs[-1], self.pass_marker(str(docs[-1].get("name")))
        try:
            marker = fs.read_json_if_any(uri)
        except fs.DamagedRecord:
            marker = None  # damaged: not a finished pass (a failed read is raised: it is no answer)
        recorded = last.get("fingerprint")  # a record without one (older dedup outputs): its marker's presence
        return None if marker and (recorded is None or marker.get("fingerprint") == recorded) else str(last.get("name"))

    def orphan_pass_markers(self) -> list[str]:
        """The pass markers (``passes/<pass>.json``: a pass name and fingerprint) of a directory
        without ``run.json``: a refinery run whose plan was deleted. Empty otherwise."""
        folder = fs.join(self.root, "passes")
        if fs.exists(self.run_json) or not fs.exists(folder):
            return []
        found = []
        for uri in shard_files(folder, (".json",)):
            try:
                marker = fs.read_json(uri)
            except (fs.StorageError, OSError):
                continue
            if isinstance(marker.get("pass"), str) and "fingerprint" in marker:
                found.append(uri)
        return found

    def marked_pass_names(self) -> list[str]:
        """The pass names the markers in ``passes/`` record (a plain name each: a marker is read,
        not trusted, before a directory of that name is deleted)."""
        names = []
        for uri in shard_files(fs.join(self.root, "passes"), (".json",)):
            try:
                name = fs.read_json(uri).get("pass")
            except (fs.StorageError, OSError, AttributeError):
                continue
            if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) and ".." not in name:
                names.append(name)
        return names

    def document_pass_dirs(self) -> list[PassDir]:
        """The directories of the run's document passes, in order (just OUT for a one-pass run)."""
        return self.pass_dirs_of(self.recorded_plan())

    def pass_dirs_of(self, record: dict[str, Any] | None) -> list[PassDir]:
        """:meth:`document_pass_dirs` under ``record`` (:meth:`recorded_plan`, read once by its caller)."""
        if not record:
            return [self.as_pass()]
        docs = [p for p in record["passes"] if p.get("kind") != "tokenize"]
        if len(docs) <= 1:
            return [self.as_pass()]
        return [self.pass_dir(p["name"], last=i == len(docs) - 1) for i, p in enumerate(docs)]


def parent_dir(uri: str) -> str:
    """The directory holding ``uri`` ("" for a bucket or a filesystem root)."""
    if fs.is_s3(uri):
        inner = posixpath.dirname(uri[5:].rstrip("/"))
        return f"s3://{inner}" if inner else ""
    trimmed = uri.rstrip("/") or "/"
    return (posixpath.dirname(trimmed) or ".") if trimmed != "/" else ""


def holds_a_run(directory: str) -> bool:
    """Whether ``directory`` is a refinery run directory (its run.json is a run's record). Another
    tool's run.json is not one (a project's own run.json refused every output below it), nor is a
    place these credentials may not look (S3 credentials limited to a prefix: the HEAD of
    ``<bucket>/run.json`` refused, 403, failed every run into that prefix; h122). Any other error
    is raised: a throttle or an outage read as "no run here" let a run go on inside one (h137)."""
    try:
        return fs.is_run_directory(directory)
    except (fs.StorageError, OSError) as exc:
        if fs.access_denied(exc):
            return False
        raise


def inner_directory_refusal(uri: str, give_the_run: bool) -> str | None:
    """The one line refusing ``uri`` as a command's input when it is inside a refinery run's
    directory but not its documents (its ``removed/``, ``samples/``, ``stats/``, ``tokens/``, a
    dedup's index; a ``kept/`` and what is in it are documents): their files were read as
    documents (``removed/``: the removed documents back in a corpus; ``stats/``: its JSON records
    read as JSON lines) or failed every task (``samples/``: no ``text``) (session 47, h172, h174).
    None otherwise. ``give_the_run``: the command reads a run (``refinery dedup``), else its
    ``kept/`` is named (``refinery run``). One run.json read per ancestor, as for an output."""
    here = fs.canonical(uri)
    parts = here[len("s3://"):].split("/") if fs.is_s3(here) else here.split("/")
    for depth in range(len(parts) - 1, 0, -1):
        inner = parts[depth:]
        if "kept" in inner:  # a run's (or a pass's) kept/, or a shard in it
            return None
        ancestor = ("s3://" if fs.is_s3(here) else "") + "/".join(parts[:depth])
        if ancestor and holds_a_run(ancestor):
            inside = "/".join(inner)
            given = uri.rstrip("/")
            if given.endswith("/" + inside):  # the run as the user spelled its directory
                ancestor = given[: -len(inside) - 1]
            kept = fs.join(ancestor, "kept")
            give = f"give the run, {ancestor}" if give_the_run else f"give {kept} as the input"
            return (f"{uri} is the {inside}/ directory of the refinery run {ancestor}, not its documents "
                    f"(those are in {kept}): {give}")
    return None


def as_given(listed: str, input_uri: str) -> str:
    """A path a listing gives (absolute, locally) as under ``input_uri`` as the user wrote it."""
    root = fs.absolute(input_uri).rstrip("/") if not fs.is_s3(input_uri) else input_uri.rstrip("/")
    return fs.join(input_uri, listed[len(root) + 1:]) if listed.startswith(root + "/") else listed


def runs_inside_refusal(input_uri: str, runs: list[str], other_files: int, give_the_run: bool) -> str | None:
    """The one line refusing ``input_uri`` when refinery run directories are below it (``runs``,
    as :func:`fs.list_files` found them; at any depth): a run's files are its output, never input
    (its removed/ and samples/ would be read as documents), and leaving them out unsaid lost the
    documents of its corpus the user pointed at (session 48, h178: ``refinery dedup`` said nothing,
    ``refinery run`` one warning among its progress lines). ``other_files``: the input's own files
    beside them. ``give_the_run``: the command reads a run (``refinery dedup``), else its ``kept/``
    is named (``refinery run``). None when there is no run below."""
    if not runs:
        return None
    run = as_given(sorted(runs)[0], input_uri)
    more = f" (and {len(runs) - 1} more)" if len(runs) > 1 else ""
    below = RunDir(run)
    if unfinished := below.unfinished_last_pass():  # no corpus to name yet
        return _unfinished_run_inside(input_uri, below, more, unfinished, other_files, give_the_run)
    kept = below.kept_dir
    give = f"give the run, {run}" if give_the_run else f"give {kept} as the input"
    own = "Parquet shard" if give_the_run else "input file"  # what each command reads
    if not other_files:
        return f"{input_uri} holds the refinery run {run}{more}, and no {own}s of its own: {give}"
    beside = f"{other_files} {own}{'s' if other_files > 1 else ''} of its own"
    alone = f"give the run, {run}, to a dedup of its own" if give_the_run else f"give {kept} to a run of its own"
    return (f"{input_uri} holds the refinery run {run}{more} beside {beside}: a run's files are its output, "
            f"not input, and its documents ({kept}) would be left out: move the run out of {input_uri}, "
            f"or {alone}")


def _unfinished_run_inside(input_uri: str, run: RunDir, more: str, last_pass: str, other_files: int,
                           give_the_run: bool) -> str:
    """:func:`runs_inside_refusal` of a run that has not finished (``last_pass`` has no marker):
    it has no corpus yet (a run in its first pass has no ``kept/`` at all), so "give RUN/kept"
    named a directory that is not there, or not the corpus (session 48, h192)."""
    record = run.recorded_plan() or {}
    read = record.get("input")
    read_from = f" ({read})" if isinstance(read, str) and read and read.rstrip("/") != input_uri.rstrip("/") else ""
    own = "Parquet shard" if give_the_run else "input file"
    finish = (f"it has not finished its {last_pass!r} pass, so it has no corpus ({run.kept_dir}) yet "
              f"(`refinery status {run.root}`): finish it (the same `refinery run` command again), or give "
              f"the input files it read{read_from}")
    if not other_files:
        return f"{input_uri} holds the refinery run {run.root}{more}, and no {own}s of its own: {finish}"
    beside = f"{other_files} {own}{'s' if other_files > 1 else ''} of its own"
    return (f"{input_uri} holds the refinery run {run.root}{more} beside {beside}: a run's files are its output, "
            f"not input: move the run out of {input_uri}; {finish}")


def pass_of_run(uri: str) -> tuple[RunDir, PassDir] | None:
    """(the run, the pass) when ``uri`` is the directory of one document pass of a multi-pass run
    (``OUT/filter``), else None. Its kept/, removed/ and samples/ all hold Parquet shards."""
    parent = parent_dir(uri)
    if not parent or fs.basename(uri) in ("", ".", ".."):
        return None
    try:
        if not fs.is_run_directory(parent):
            return None
    except fs.MissingCredentials:  # named as given, not as the parent asked about
        raise fs.MissingCredentials(fs.no_credentials_for("open", uri)) from None
    run = RunDir(parent)
    if not run.recorded_plan():
        return None
    for pass_dir in run.document_pass_dirs():
        if pass_dir.root != run.root and fs.basename(pass_dir.root) == fs.basename(uri):
            return run, pass_dir
    return None


def last_pass_refusal(uri: str, run: RunDir, pass_dir: PassDir) -> str | None:
    """For ``uri``, the directory of ``pass_dir`` of ``run`` (:func:`pass_of_run`): the one line
    refusing it as a command's input when it is the run's last pass, whose documents are the run's
    ``kept/`` (its own directory holds removed/, samples/ and indexes only); None for an earlier pass."""
    if pass_dir.kept_dir != run.kept_dir:
        return None
    return (f"{uri} is the {fs.basename(pass_dir.root)!r} pass of the refinery run {run.root}, whose documents are "
            f"the run's corpus ({run.kept_dir}): give the run, {run.root}")


def pass_dir_refusal(uri: str) -> str | None:
    """The one line refusing ``uri`` where a run is wanted (``status``, ``stats``, ``report``) when
    it is one document pass's directory of a multi-pass run (``OUT/filter``), naming the run to
    give; None otherwise. Its own stats.json is that pass's funnel alone, without run.json's
    thresholds, and ``report`` wrote a report.html into it while ``status`` refused it (review h111)."""
    of_run = pass_of_run(uri)
    if of_run is None:
        return None
    run, pass_dir = of_run
    return (f"{uri} is the {fs.basename(pass_dir.root)!r} pass of the refinery run {run.root}, not a run: "
            f"give the run directory, {run.root} (its funnel and report show every pass)")


def clear_shard_outputs(out: PassDir, shard: str, present: set[str] | None = None) -> None:
    """Delete one shard's outputs in a pass directory, its stats marker first (without it the
    shard counts as unfinished, whatever else a crash here leaves). ``present``: the names of the
    shards with some output (:attr:`ShardListing.any_output`, one listing per directory), so a
    shard with none costs no request (five per shard on S3 before the first task started)."""
    if present is not None and shard not in present:
        return
    for uri in (out.stats(shard), out.kept(shard), out.removed(shard), out.samples(shard), out.failed(shard)):
        fs.delete(uri)


@dataclass
class ShardListing:
    """Which shards have a file in each directory of a pass: one listing per directory, the
    driver's whole view of a pass (per-shard existence checks were requests per shard on S3)."""

    stats: set[str]
    kept: set[str]
    removed: set[str]
    samples: set[str]
    failed: set[str]

    @classmethod
    def of(cls, out: PassDir) -> ShardListing:
        return cls(*({_shard_name(u) for u in shard_files(d, (".parquet", ".json"))}
                     for d in (out.stats_dir, out.kept_dir, out.removed_dir, out.samples_dir, out.failed_dir)))

    @property
    def any_output(self) -> set[str]:
        return self.stats | self.kept | self.removed | self.samples | self.failed

    @property
    def written(self) -> set[str]:
        """Shards whose kept and removed files both exist."""
        return self.kept & self.removed



#: the directories of a pass whose files its marker records by size when the pass finishes, so a
#: rerun notices one cut short or replaced (a partial sync, a copy of a directory being written)
RECORDED_OUTPUTS = ("kept", "removed", "samples")


class PassFiles:
    """The files of a pass's directories for one command, each directory listed at most once:
    `status` (and so `stats` and `report`, which ask it whether the run finished) listed each
    pass's kept/ and removed/ three times and stats/ twice (18 listings of a three-pass run; on S3
    each a LIST paged by 1,000 keys; session 46, h156). Hold one only as long as a command's answer:
    it does not see files written after a directory was listed."""

    def __init__(self) -> None:
        self._listed: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        self._versions: dict[tuple[str, tuple[str, ...]], dict[str, tuple[int, str]]] = {}

    def files(self, directory: str, suffixes: tuple[str, ...]) -> list[str]:
        """:func:`fs.list_files_if_any` of ``directory``, listed once."""
        key = (directory, suffixes)
        if key not in self._listed:
            if fs.is_s3(directory):  # the LIST carries sizes and ETags: keep them for versions()
                self._versions[key] = fs.list_file_versions_if_any(directory, suffixes)
                self._listed[key] = list(self._versions[key])
            else:
                self._listed[key] = fs.list_files_if_any(directory, suffixes)
        return self._listed[key]

    def forget(self, *directories: str) -> None:
        """Drop the listings of ``directories``: files were deleted there since (listed again when asked)."""
        for key in [k for k in self._listed if k[0] in directories]:
            del self._listed[key]
            self._versions.pop(key, None)

    def versions(self, directory: str, suffixes: tuple[str, ...]) -> dict[str, tuple[int, str]]:
        """:func:`fs.list_file_versions_if_any` of ``directory``: from its one listing (locally a
        stat per file listed, as that function makes)."""
        key, listed = (directory, suffixes), self.files(directory, suffixes)
        if key not in self._versions:
            self._versions[key] = fs.file_versions(directory, listed)
        return self._versions[key]


def output_sizes(out: PassDir, files: PassFiles | None = None) -> dict[str, dict[str, int]]:
    """``{"kept": {shard: bytes}, "removed": ..., "samples": ...}`` of the pass's Parquet shards:
    one listing per directory (an S3 listing carries the sizes; locally a stat per file), no read;
    none at all for a directory ``files`` has listed."""
    return {kind: _shard_sizes(getattr(out, f"{kind}_dir"), files or PassFiles()) for kind in RECORDED_OUTPUTS}


def _shard_sizes(directory: str, files: PassFiles) -> dict[str, int]:
    listing = files.versions(directory, (".parquet",))
    here = fs.absolute(directory).rstrip("/")
    return {_shard_name(u): size for u, (size, _) in listing.items() if u.rsplit("/", 1)[0] == here}


def damaged_outputs(out: PassDir, recorded: Any, shards: set[str] | None = None,
                    files: PassFiles | None = None) -> dict[str, str]:
    """Shard -> what no longer matches the sizes its pass recorded when it finished (``recorded``:
    the pass marker's ``outputs``, see :func:`output_sizes`): its first file missing or of another
    size, named by its URI. Sizes, not versions: a run directory copied without ``-p`` (or synced
    to S3, whose multipart ETags follow the part size) holds the same outputs and is not redone.
    ``shards``: only these. Empty when nothing is recorded (a marker of an older refinery: its
    outputs are trusted, as they were)."""
    if not isinstance(recorded, dict) or not recorded:
        return {}
    now = output_sizes(out, files)
    damaged: dict[str, str] = {}
    for kind in RECORDED_OUTPUTS:
        sizes = recorded.get(kind)
        for shard, size in sorted(sizes.items() if isinstance(sizes, dict) else ()):
            if shard in damaged or (shards is not None and shard not in shards):
                continue
            uri, have = fs.join(getattr(out, f"{kind}_dir"), f"{shard}.parquet"), now[kind].get(shard)
            if have is None:
                damaged[shard] = f"{uri} is missing"
            elif have != size:
                damaged[shard] = f"{uri} has {have:,} bytes, not the {size:,} recorded when its pass finished"
    return damaged


def shard_files(directory: str, suffixes: tuple[str, ...], listed: PassFiles | None = None) -> list[str]:
    """The files directly in ``directory`` (not in its subdirectories) ending in ``suffixes``;
    none when it does not exist; a listing that fails (S3 refusing it, a directory that cannot be
    read) raises. Listings spell local paths absolute, whatever ``directory`` is. ``listed``: the
    command's listings (:class:`PassFiles`), else a listing of its own."""
    files = listed.files(directory, suffixes) if listed is not None else fs.list_files_if_any(directory, suffixes)
    here = fs.absolute(directory).rstrip("/")
    return [u for u in files if u.rsplit("/", 1)[0] == here]


def _shard_name(uri: str) -> str:
    name = fs.basename(uri)
    return name[: -len(".parquet")] if name.endswith(".parquet") else name[: -len(".json")]


def shards_with_outputs(out: PassDir, files: PassFiles | None = None) -> set[str]:
    """Names of the shards whose kept and removed files both exist in ``out`` (a listing each, or
    ``files``' listings)."""
    kept, removed = ({_shard_name(u) for u in shard_files(d, (".parquet",), files)}
                     for d in (out.kept_dir, out.removed_dir))
    return kept & removed


def remove_orphan_shards(out: PassDir, shards: set[str], pass_name: str,
                         listing: ShardListing | None = None) -> list[str]:
    """Delete the outputs of shards that are no longer in the plan (their input file was removed
    or renamed since, and the rerun was forced): they would stay in the corpus and in every
    count. Found by adversarial testing. Returns their names."""
    orphans = sorted((listing or ShardListing.of(out)).any_output - shards)
    for shard in orphans:
        clear_shard_outputs(out, shard)
    if orphans:
        log.info("[%s] removed the outputs of %d shard(s) no longer in the input: %s", pass_name, len(orphans),
                 ", ".join(orphans[:5]) + (" ..." if len(orphans) > 5 else ""))
    return orphans


def remove_dropped_passes(run: RunDir, recorded: list[dict[str, Any]], planned: dict[str, str]) -> list[str]:
    """Delete the directory and marker of every pass an earlier plan of ``run`` had that the plan
    now redone (``planned``: pass name -> its role now) no longer has (a dedup method or the tokens
    taken out of the config, then ``--force``), and the own directory of a pass that now writes at
    the top of OUT (several passes, then one): their files would stay beside the corpus as another
    config's output. A pass that wrote at the top of OUT (a one-pass run) is cleared by its caller.
    Returns their names."""
    dropped = []
    for p in recorded:
        name = p.get("name")
        if not isinstance(name, str) or p.get("role") == "only":
            continue
        if name in planned and not (planned[name] == "only" and p.get("kind") != "tokenize"):
            continue
        directory = run.tokens_dir if p.get("kind") == "tokenize" else run.pass_dir(name).root
        if directory.rstrip("/") == run.root.rstrip("/"):
            continue
        fs.delete_tree(directory)
        fs.delete(run.pass_marker(name))
        dropped.append(name)
    if dropped:
        log.info("removed the directories of pass(es) the plan no longer writes there: %s", ", ".join(dropped))
    return dropped
