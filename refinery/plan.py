"""A recipe as a plan of passes over one run directory, and the rules for re-running into it.

``plan_run(config, input, output)`` turns a validated config into passes, in order:

- ``filter``: the document stages, one task per input file (share-nothing);
- one pass per ``dedup`` entry (``url_dedup``, ``minhash_dedup``, ``exact_dedup``,
  ``substring_dedup``): index passes that shuffle data between tasks, then a removal run;
- ``tokens``: the last document pass's kept shards into token shards (when ``tokenize`` is set).

Each pass has a *fingerprint*: a hash of its own config section and of what it reads (the input
files for ``filter``; the previous pass's fingerprint for the others). ``run.json`` records the
plan; a pass writes ``passes/<pass>.json`` when it finishes. A rerun compares fingerprints: a
finished pass with the same fingerprint is skipped, an unfinished one resumes (its finished shards
are skipped), and a changed one is refused with the keys that changed -- unless ``--force``, which
redoes that pass and every pass after it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Literal

from refinery import __version__
from refinery.config import ConfigError, PipelineConfig
from refinery.config import same_json as _same
from refinery.input_footers import FooterCheck, check_parquet_inputs
from refinery.input_record import InputRecord, record_of
from refinery.io import fs
from refinery.io.manifest import DEFAULT_SUBSETS, ManifestError, common_root, in_subsets, is_manifest, read_manifest
from refinery.io.runlock import RunDirBusy
from refinery.rundir import (INPUT_RECORD, PassDir, PassFiles, RunDir, clear_shard_outputs, damaged_outputs,
                             holds_a_run, inner_directory_refusal, output_sizes, pass_of_run, runs_inside_refusal,
                             shards_with_outputs)
from refinery.runner import INPUT_SUFFIXES, WARC_SUFFIXES, shard_name
from refinery.stage_order import check_html_before_extract, check_text_before_use

log = logging.getLogger("refinery.plan")

PassKind = Literal["documents", "dedup", "tokenize"]
RUN_FORMAT = 2  # run.json with a plan of passes
#: the byte size and version of every input file by shard name, as the run last planned it (beside run.json)
INPUT_SIZES_FILE = INPUT_RECORD


class RerunError(ConfigError):
    """A rerun into an existing run directory would mix results of different configs or inputs."""


@dataclass(frozen=True)
class Pass:
    name: str
    kind: PassKind
    params: dict[str, Any]  # the config section this pass runs: what its fingerprint covers
    fingerprint: str
    #: True when tasks exchange data (dedup index passes): on SageMaker a Ray Training job,
    #: otherwise a share-nothing Processing job
    shuffles: bool = False
    #: where a document pass writes: "only" (at the top of OUT), "last" (keeps into OUT/kept, the
    #: corpus) or "" (its own directory); part of the fingerprint, so a plan that gains or loses
    #: passes never reads a pass's old output from the wrong place
    role: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    config: PipelineConfig
    input: str
    output: str
    input_files: list[str]
    passes: list[Pass]
    limit: int | None = None
    #: shard name -> input file size in bytes (None for a manifest's files: listed by name only)
    input_sizes: dict[str, int] | None = None
    #: shard name -> the input file's version (modification time in ns locally, ETag on S3)
    input_versions: dict[str, str] | None = None
    #: the input as the fingerprints hash it and run.json records it: ``input`` as given, or the
    #: spelling an earlier run of the same directory used for the same place (see ``respell_input``)
    input_key: str = ""
    #: the parts of the fingerprints a run made by an earlier refinery did not have, left out so
    #: it resumes as it would have then (see ``adopt_legacy``): "models", "code"
    legacy: frozenset[str] = frozenset()
    #: reader settings an earlier run fingerprinted that no longer change the output
    #: (:data:`OUTPUT_FREE_READER`), as it recorded them: hashed so that run resumes
    recorded_reader: dict[str, Any] = field(default_factory=dict)
    #: the same for the tokens pass (:data:`OUTPUT_FREE_TOKENIZE`), as an earlier run recorded them
    recorded_tokenize: dict[str, Any] = field(default_factory=dict)
    #: dedup pass name -> the params an earlier run fingerprinted it with when they were its whole
    #: section (before session 37): fingerprinted in those terms, so that run resumes
    recorded_dedup: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: stage name -> the stage as an earlier run fingerprinted it, where that means what this
    #: config's does (written otherwise: ``name`` its type, ``phone_region: us``; see
    #: :func:`same_stage_meaning`): hashed as recorded, so that run resumes
    recorded_stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: distribution -> version the stages run with, when not this interpreter's (a SageMaker
    #: launch plans with its image's lock file: the instances re-plan with what they have)
    pinned_libraries: dict[str, str] | None = None
    #: the run directory as the previous ``run.json`` named it (before this run rewrote it): where
    #: the run lived when moved since; dedup indexes an earlier refinery began hashed paths under it
    recorded_output: str | None = None
    #: the Parquet footers read before the run, recorded in input_files.json so a rerun skips the
    #: files found good and unchanged since (:mod:`refinery.input_footers`)
    footer_check: FooterCheck | None = None
    #: what the run read of its input when it last planned (``input_files.json``), read at most once
    #: for the whole command (it was read up to three times, each reader with its own rules)
    recorded_input: InputRecord | None = None
    #: fingerprints of the first pass under an earlier file list of the same input, whose shard
    #: markers count as this pass's: a grown input's ``--force`` (or an unfinished file removed)
    #: records them in ``run.json`` rather than rewriting each finished shard's marker (a GET and
    #: a PUT each; see :func:`_keep_finished_shards`)
    first_pass_accepts: tuple[str, ...] = ()
    #: shards of the first pass that finished over an input file rewritten since (another size or
    #: version), which a forced run redoes while it keeps the pass's other finished shards: the
    #: run clears them (:func:`refinery.pipeline.run_plan`) once the passes after it are cleared
    first_pass_redo: tuple[str, ...] = ()
    run: RunDir = field(init=False)

    def __post_init__(self) -> None:
        self.run = RunDir(self.output)
        self.input_key = self.input_key or self.input
        if self.recorded_input is None:
            self.recorded_input = InputRecord(fs.join(self.output, INPUT_RECORD))

    @property
    def input_record(self) -> InputRecord:
        """:attr:`recorded_input` (set by ``__post_init__``)."""
        assert self.recorded_input is not None
        return self.recorded_input

    def shard_fingerprints(self, p: Pass) -> frozenset[str]:
        """The fingerprints a finished shard marker of pass ``p`` may carry to count as finished:
        the pass's own, and for the first pass those of :attr:`first_pass_accepts`."""
        first = p.name == self.passes[0].name
        return frozenset((p.fingerprint, *(self.first_pass_accepts if first else ())))

    def respell_input(self, key: str) -> None:
        """Fingerprint the input as ``key``: an earlier spelling of the same place (``in`` from
        one directory, ``/data/in`` from another), so a rerun that names it differently resumes
        instead of looking like a run of other input. The files are still read as ``input``."""
        self.input_key = key
        self.passes = plan_passes(self.config, key, self._relative_files(), self.limit, self.legacy,
                                  self.pinned_libraries, self.recorded_reader, self.recorded_tokenize,
                                  self.recorded_dedup, self.recorded_stages)

    def _relative_files(self) -> list[str]:
        """The input files' names under the input's root, as the fingerprints hash them."""
        root = input_root(self.input, self.input_files)
        key = self.input_key
        if not is_manifest(self.input) and self.input_files != [root] and root.endswith("/") != key.endswith("/"):
            # relative names as the earlier spelling made them: "/a.jsonl" under "in", "a.jsonl"
            # under "in/" (a rerun spelled with or without the trailing "/" was refused)
            root = root.rstrip("/") + ("/" if key.endswith("/") else "")
        return [f[len(root):] for f in self.input_files]

    def adopt_legacy(self, previous: dict[str, Any] | None) -> None:
        """A run made by a refinery whose fingerprints lacked parts this one has resumes as it
        would have then, without checking them, instead of every finished shard being refused:
        model files (fingerprinted since session 27), and the code (stages' default params,
        refinery's and the stages' libraries' versions; since session 28). A change the old
        fingerprints do see is still refused, and named in their terms."""
        by_name = {p.get("name"): p for p in (previous or {}).get("passes", []) if isinstance(p, dict)}
        tokens = next((p for p in self.passes if p.kind == "tokenize"), None)
        old_tokens = by_name.get(tokens.name) if tokens else None
        token_params = old_tokens.get("params") if old_tokens else None
        # hashed as recorded: a tokens pass made at another batch size still resumes
        self.recorded_tokenize = ({k: token_params[k] for k in OUTPUT_FREE_TOKENIZE if k in token_params}
                                  if isinstance(token_params, dict) else {})
        # dedup passes fingerprinted with their whole section: hashed in those terms, so a setting
        # their method does not read may change and the run still resumes
        dedup = {p.name for p in self.passes if p.kind == "dedup"}
        self.recorded_dedup = {name: old["params"] for name, old in by_name.items()
                               if name in dedup and recorded_whole_section(old.get("params"))}
        old = by_name.get(self.passes[0].name)
        params = old.get("params") if old else None
        if not isinstance(params, dict):
            if self.recorded_tokenize or self.recorded_dedup:
                self.respell_input(self.input_key)
            return
        reader = params.get("reader")
        recorded = {k: reader[k] for k in OUTPUT_FREE_READER if k in reader} if isinstance(reader, dict) else {}
        self.recorded_reader = recorded  # hashed as recorded: a batch size changed since then still resumes
        if "code" not in params:
            self.legacy = frozenset({"code"} | ({"models"} if "models" not in params else set()))
        else:
            self.recorded_stages = _stages_meaning_the_same(params.get("stages"), self.passes[0].params["stages"])
        if recorded or self.recorded_tokenize or self.recorded_dedup or self.recorded_stages or self.legacy:
            # the passes' fingerprints in those terms, planned once
            self.respell_input(self.input_key)
        if "code" in params:
            return
        if self.passes[0].fingerprint == old.get("fingerprint"):
            log.info("%s was made by an earlier refinery that did not fingerprint %s: resuming it without checking "
                     "them (a rerun that redoes every pass adds them)", self.output,
                     " or ".join(sorted({"models": "model files", "code": "default params and library versions"}[k]
                                        for k in self.legacy)))
        # otherwise a change the old fingerprints see: refused naming it in their terms (--force
        # plans in today's)

    def drop_legacy(self) -> None:
        """Plan in today's terms again (every pass is being redone)."""
        self.legacy = frozenset()
        self.recorded_reader = {}
        self.recorded_tokenize = {}
        self.recorded_dedup = {}
        self.recorded_stages = {}
        self.respell_input(self.input_key)

    @property
    def input_fingerprint(self) -> str:
        """The hash of the input alone (its spelling and file names), where the passes' chain of
        fingerprints starts."""
        return _input_fingerprint(self.input_key, self._relative_files())

    @property
    def document_passes(self) -> list[Pass]:
        return [p for p in self.passes if p.kind != "tokenize"]

    def pass_dir(self, name: str) -> PassDir:
        docs = [p.name for p in self.document_passes]
        return self.run.pass_dir(name, only=len(docs) == 1, last=name == docs[-1])

    def shard_names(self) -> list[str]:
        # asked ~11 times a run (each pass's tasks, listings and checks), and planning named each
        # file three times more: named once per input (55,000 -> 5,000 calls in a 5,000-shard
        # no-op rerun; ~2 us each, so ~0.1 s, ~2 s at 90,000)
        if self.__dict__.get("_shard_names_of") != (self.input, tuple(self.input_files)):
            root = input_root(self.input, self.input_files)
            self.remember_shard_names([shard_name(f, root) for f in self.input_files])
        return list(self.__dict__["_shard_names"])

    def remember_shard_names(self, names: list[str]) -> None:
        """``names``: :meth:`shard_names` of this input, already computed (by :func:`plan_run`)."""
        self.__dict__["_shard_names"] = list(names)
        self.__dict__["_shard_names_of"] = (self.input, tuple(self.input_files))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RUN_FORMAT,
            "refinery_version": __version__,
            "name": self.config.name,
            "config": self.config.model_dump(mode="json"),
            "input": self.input_key,
            # where that is, so a later spelling of the same place is recognised (respell_input)
            "input_canonical": fs.canonical(self.input),
            "output": self.output,
            "limit": self.limit,
            "shards": len(self.input_files),
            "passes": [p.to_json() | {"dir": self.pass_dir(p.name).root if p.kind != "tokenize" else self.run.tokens_dir}
                       | ({"accepts": list(self.first_pass_accepts)} if i == 0 and self.first_pass_accepts else {})
                       for i, p in enumerate(self.passes)],
        }


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _input_fingerprint(input_key: str, relative_files: list[str]) -> str:
    return _hash({"input": input_key, "files": relative_files})


def check_separate(input_uri: str, output_uri: str) -> None:
    """Outputs are never read back as inputs: refuse an output inside the input and vice versa."""
    a, b = fs.canonical(input_uri), fs.canonical(output_uri)
    if a == b:
        raise ConfigError(f"output {output_uri} is the input: writing there would replace what is read; choose another output")
    if b.startswith(a + "/"):
        raise ConfigError(f"output {output_uri} is inside input {input_uri}: its shards would be read back as input; "
                          f"choose an output outside the input")
    if a.startswith(b + "/"):
        raise ConfigError(f"input {input_uri} is inside output {output_uri}: a run directory is not read back as "
                          f"input; choose another output")


def check_not_inside_a_run(output_uri: str) -> None:
    """Refuse an output inside another run directory (an ancestor holding a ``run.json``): its
    Parquet files would be read with that run's by a reader of the whole directory
    (``run/**/*.parquet``), and the outer run's ``--force`` would leave them (found by the session-42
    S3 trial). One existence check per ancestor (a HEAD each on S3)."""
    here = fs.canonical(output_uri)
    fs.resolve(here)  # an unreachable endpoint is said for the output, not for an ancestor's run.json
    if fs.is_s3(here):
        parts = here[len("s3://"):].split("/")
        ancestors = ["s3://" + "/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
    else:
        ancestors = [str(p) for p in Path(here).parents]
    for ancestor in ancestors:
        try:
            held = holds_a_run(ancestor)
        except fs.MissingCredentials:
            raise ConfigError(fs.no_credentials_for("write the output", output_uri)) from None
        if held:
            raise ConfigError(f"output {output_uri} is inside the run directory {ancestor} (it has a run.json): its "
                              f"files would mix with that run's; choose an output outside it")


def list_inputs(input_uri: str, subsets: tuple[str, ...] = DEFAULT_SUBSETS, manifest_base: str | None = None) -> list[str]:
    """The input files of a run: the files under a directory (or the file itself), or the entries
    of a paths manifest (``warc.paths.gz``); Common Crawl's non-page subsets (``robotstxt/``,
    ``crawldiagnostics/``, ``wat/``, ``wet/``) are left out unless ``subsets`` names them."""
    return list_input_versions(input_uri, subsets, manifest_base)[0]


def list_input_versions(input_uri: str, subsets: tuple[str, ...] = DEFAULT_SUBSETS, manifest_base: str | None = None
                        ) -> tuple[list[str], dict[str, tuple[int, str]] | None]:
    """:func:`list_inputs`, with each listed file's ``(byte size, version)`` from the same listing
    (None for a manifest's entries: they are named, not listed)."""
    try:
        if is_manifest(input_uri):
            files = read_manifest(input_uri, manifest_base, subsets)
            unknown = [f for f in files if not f.lower().endswith(INPUT_SUFFIXES)]
            if unknown:
                raise ConfigError(f"input manifest {input_uri} lists {unknown[0]}, which is not one of "
                                  f"{', '.join(INPUT_SUFFIXES)}")
            return files, None
        if fs.is_run_directory(input_uri):
            # its removed/ shards and its JSON records would be read back as documents
            raise ConfigError(f"input {input_uri} is a refinery run directory: its documents are in "
                              f"{fs.join(input_uri, 'kept')}; give that as the input")
        if (of_run := pass_of_run(input_uri)) is not None:
            # its kept/, removed/ and samples/ would all be read as documents (found by review, h98)
            run, pass_dir = of_run
            kept = (f"its documents (the run's corpus) are in {run.kept_dir}; give that" if pass_dir.kept_dir == run.kept_dir
                    else f"what it kept is in {pass_dir.kept_dir}, the run's corpus in {run.kept_dir}; give one of those")
            raise ConfigError(f"input {input_uri} is the {fs.basename(pass_dir.root)!r} pass of the refinery run "
                              f"{run.root}: {kept} as the input")
        runs_below: list[str] = []
        by_file = fs.list_file_versions(input_uri, INPUT_SUFFIXES, log_skipped=True, runs=runs_below)
        # after the listing: a path that is not there is "not found", whatever run holds it
        if refusal := inner_directory_refusal(input_uri, give_the_run=False):
            raise ConfigError(f"input {refusal}")  # a run's removed/, samples/, stats/ were read as documents
        # a run below, beside other files or alone: left out with a warning, its corpus was lost (h178)
        if refusal := runs_inside_refusal(input_uri, runs_below, len(by_file), give_the_run=False):
            raise ConfigError(f"input {refusal}")
    except fs.MissingCredentials:
        raise ConfigError(fs.no_credentials_for("read the input", input_uri)) from None
    except (fs.StorageError, ManifestError) as exc:
        raise ConfigError(str(exc)) from None
    return _input_files(input_uri, by_file, subsets)


def _input_files(input_uri: str, by_file: dict[str, tuple[int, str]], subsets: tuple[str, ...], quiet: bool = False
                 ) -> tuple[list[str], dict[str, tuple[int, str]]]:
    """The input files among those listed under ``input_uri`` (``by_file``: each one's size and
    version), as :func:`list_input_versions` returns them. ``quiet``: no line about the files left
    out or empty (`refinery status` looking whether the input changed, not a run)."""
    listed = list(by_file)
    _refuse_run_outputs(input_uri, listed)
    files = [f for f in listed if in_subsets(f, subsets)]
    if len(files) < len(listed) and not quiet:
        log.info("left out %d Common Crawl file(s) outside the subset(s) %s under %s", len(listed) - len(files),
                 ", ".join(subsets), input_uri)
    not_lines = [(f, why) for f in files if f.lower().endswith(".json") and (why := _not_json_lines(f, by_file[f][0]))]
    if not_lines:
        if not quiet:
            fs.log_skipped_files(not_lines, input_uri, listed_root=_listed_root(input_uri))
        files = [f for f in files if f not in dict(not_lines)]
    if not files:
        hint = f": {not_lines[0][0]} is {not_lines[0][1]}" if not_lines else ""
        raise ConfigError(f"no input shards under {input_uri} (looked for {', '.join(INPUT_SUFFIXES)}){hint}")
    if not quiet:
        _warn_empty(input_uri, [f for f in files if by_file[f][0] == 0])
    return files, {f: by_file[f] for f in files}


#: how much of a plain ``.json`` input the listing reads to tell JSON lines from one JSON value
_JSON_PEEK = 1 << 16


def _not_json_lines(uri: str, size: int) -> str | None:
    """Why the plain ``.json`` input ``uri`` is not JSON lines, or None (read as JSON lines, as
    ``.json.gz`` is): a JSON array, or one JSON value over several lines -- a pretty-printed
    metadata file beside the data (a ``save_to_disk`` directory's ``dataset_info.json`` and
    ``state.json``, a ``_metadata.json``), which was read as a shard of ``bad_json`` rows. Exact: a
    file whose first line parses is JSON lines; one that does not is one value when the whole file
    parses (read whole up to :data:`_JSON_PEEK`; past it, when its first line is a lone ``{``,
    which begins no JSON line)."""
    if not size:
        return None
    try:
        with fs.open_input(uri) as f:
            head = f.read(_JSON_PEEK)
    except (fs.StorageError, OSError):
        return None  # the read of the shard names it
    text = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    if text.startswith("["):
        return "a JSON array, not JSON lines (one object per line; `jq -c '.[]'` converts it)"
    first = text.split("\n", 1)[0].strip()
    try:
        json.loads(first)
        return None
    except ValueError:
        pass
    if len(head) >= size:
        try:
            json.loads(text)
        except ValueError:
            return None  # not JSON at all: read, and its lines counted as bad_json
    elif first != "{":
        return None
    return "one JSON value over several lines (metadata?), not JSON lines (one object per line)"


def _refuse_run_outputs(input_uri: str, listed: list[str]) -> None:
    """Refuse a directory holding ``kept/`` and ``removed/`` shards: a refinery run's output or one
    of its passes' whose ``run.json`` is damaged, or a copy without it. ``is_run_directory`` and
    ``pass_of_run`` read ``run.json``; without it kept/, removed/ and samples/ were all read as
    documents (review h99: the removed documents back in the corpus, 13 shards failing). One
    below the input too (``-i two`` for ``two/run``; session 47, h172)."""
    refusal = run_outputs_refusal(input_uri, listed)
    if refusal:
        raise ConfigError(refusal)


def run_outputs_refusal(input_uri: str, listed: list[str]) -> str | None:
    """The one line refusing ``input_uri`` when it, or a directory below it, holds ``kept/`` and
    ``removed/`` shards as a refinery run or one of its passes does (the shallowest such directory
    named), from its listed files; None otherwise. ``refinery run`` and ``refinery dedup`` say it."""
    root = _listed_root(input_uri).rstrip("/") + "/"
    dirs = {tuple(f[len(root):].split("/")[:-1]) for f in listed if f.startswith(root)}
    found = []
    for d in dirs:
        for i in (i for i, part in enumerate(d) if part == "kept"):
            # a multi-pass run's removed/ are in its pass directories (OUT/filter/removed)
            if any(e[:i] == d[:i] and "removed" in e[i:i + 2] for e in dirs):
                found.append(d[:i])
    if not found:
        return None
    run = min(found, key=lambda prefix: (len(prefix), prefix))
    at = fs.join(input_uri, *run) if run else input_uri
    return (f"input {input_uri} holds kept/ and removed/ shards{f' at {at}' if run else ''}, as a refinery run or "
            f"one of its passes does (its run.json missing or unreadable): its documents are in "
            f"{fs.join(at, 'kept')}; give that as the input")


def _listed_root(input_uri: str) -> str:
    """``input_uri`` as its listed files spell it (local listings are absolute)."""
    return input_uri if fs.is_s3(input_uri) else fs.absolute(input_uri)


def _warn_empty(input_uri: str, empty: list[str]) -> None:
    """One line naming the 0-byte input files: each is an empty shard (a 0-byte Parquet file as
    much as a WARC or JSONL one), but one is more often a failed write or download than a choice."""
    if empty:
        root = (input_uri if fs.is_s3(input_uri) else fs.absolute(input_uri)).rstrip("/") + "/"
        names = [f[len(root):] if f.startswith(root) else f for f in empty[:3]]
        more = f" and {len(empty) - 3} more" if len(empty) > 3 else ""
        log.warning("%d input file(s) are empty (0 bytes), each read as an empty shard (a failed write or "
                    "download?): %s%s", len(empty), ", ".join(names), more)


def input_root(input_uri: str, files: list[str]) -> str:
    """What shard names are relative to: the input directory, the directory of a single input
    file, or the deepest directory holding every entry of a manifest."""
    if is_manifest(input_uri):
        return common_root(files)
    if not fs.is_s3(input_uri) and not input_uri.startswith("/"):
        # listings give absolute paths: a relative root would name shards by their basenames only
        # (``a/part-0`` and ``b/part-0`` clash) and fingerprint them by the current directory
        input_uri = fs.absolute(input_uri) + ("/" if input_uri.endswith("/") else "")
    return input_uri.rstrip("/").rsplit("/", 1)[0] if files == [input_uri] else input_uri


def pass_layout(config: PipelineConfig) -> list[tuple[str, PassKind, bool]]:
    """``(name, kind, shuffles)`` of the passes ``config`` plans, in order, without looking at any
    input (what a launcher's dry run needs)."""
    layout: list[tuple[str, PassKind, bool]] = [("filter", "documents", False)]
    layout += [(d.pass_name, "dedup", True) for d in config.dedup]
    if config.tokenize is not None:
        layout.append(("tokens", "tokenize", False))
    return layout


#: the libraries whose versions decide a dedup method's removals (the hashes are xxhash's and
#: numpy's, whose algorithms are fixed; rensa's MinHash permutations are its own)
DEDUP_LIBRARIES = {"minhash": ("rensa",)}


def _dedup_section(raw: dict[str, Any], code: bool = True, pinned: dict[str, str] | None = None) -> dict[str, Any]:
    """A dedup pass's whole section as plans fingerprinted it until session 37 (every method's
    settings, the partitioning and batch size; decontamination's benchmark files' identity, and
    ``code``: the versions of the libraries that decide the method's removals, if any)."""
    from refinery.dedup.config import without_added_defaults

    params = {k: v for k, v in without_added_defaults(raw).items() if k not in ("executor", "name")}
    libraries = DEDUP_LIBRARIES.get(raw.get("method", ""), ()) if code else ()
    if libraries:
        params["code"] = {dist: library_version(dist, pinned) for dist in libraries}
    if raw.get("method") != "decontaminate":
        params.pop("decontaminate", None)
        return params
    from refinery.dedup.config import BenchmarkSpec
    from refinery.dedup.decontaminate import benchmark_identity

    specs = [BenchmarkSpec.model_validate(b) for b in raw["decontaminate"]["benchmarks"]]
    return params | {"benchmark_files": benchmark_identity(specs)}


def _check_benchmarks(config: PipelineConfig) -> None:
    """Each decontamination benchmark's first record (a Parquet's schema), once per plan: an empty
    benchmark or a missing field stopped the run only when its pass began, after the document
    pass (found by adversarial testing)."""
    from refinery.dedup.decontaminate import read_benchmark

    for dedup in config.dedup:
        if dedup.method == "decontaminate":
            for spec in dedup.decontaminate.benchmarks:
                read_benchmark(spec, check_only=True, keep=False)


#: what each dedup method reads of its section (``True``: the whole key), as standalone ``refinery
#: dedup`` fingerprints it (``dedup.driver._method_params``): partitions, batch size and the other
#: methods' settings do not change its removals
_DEDUP_READS: dict[str, dict[str, Any]] = {
    "minhash": {"method": True, "minhash": True, "code": True},
    "url": {"method": True, "minhash": {"seed": True}},
    "exact": {"method": True, "minhash": {"seed": True}},
    "substring": {"method": True, "substring": True, "memory_budget": True},
    "lines": {"method": True, "lines": True},
    "decontaminate": {"method": True, "decontaminate": True, "memory_budget": True, "partitions": True,
                      "benchmark_files": True},
}


def _dedup_reads(section: dict[str, Any]) -> dict[str, Any]:
    """:data:`_DEDUP_READS` of the section's method; MinHash's ``preset`` (it only fills num_perm,
    bands and rows, which are read as resolved) and, without verification, the settings only
    verification reads (``dedup.driver.VERIFY_ONLY``) are left out."""
    from refinery.dedup.driver import VERIFY_ONLY

    reads = dict(_DEDUP_READS.get(section.get("method", ""), {"method": True}))
    minhash = section.get("minhash")
    if reads.get("minhash") is True and isinstance(minhash, dict):
        unread = {"preset"} | (set(VERIFY_ONLY) if not minhash.get("verify", True) else set())
        reads["minhash"] = {k: True for k in minhash if k not in unread}
    return reads


def _pick(section: dict[str, Any], reads: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``section`` that ``reads`` names."""
    out = {}
    for key, sub in reads.items():
        if key in section:
            out[key] = section[key] if sub is True or not isinstance(section[key], dict) else _pick(section[key], sub)
    return out


def _in_recorded_terms(section: dict[str, Any], reads: dict[str, Any], recorded: dict[str, Any]) -> dict[str, Any]:
    """``section`` with every key its method does not read as ``recorded`` has it (absent if it
    has none): hashed like the whole section an earlier run fingerprinted, it gives that run's
    fingerprint unless a key that is read changed."""
    out = {k: v for k, v in recorded.items() if k not in reads}
    for key, sub in reads.items():
        if sub is True or not isinstance(section.get(key), dict):
            if key in section:
                out[key] = section[key]
        else:
            before = recorded.get(key)
            out[key] = _in_recorded_terms(section[key], sub, before if isinstance(before, dict) else {})
    return out


def recorded_whole_section(params: Any) -> bool:
    """Whether a dedup pass's recorded params are the whole section (runs made before session 37,
    whose fingerprints covered it): it always held ``batch_size``, which no method reads."""
    return isinstance(params, dict) and "batch_size" in params


def _dedup_params(raw: dict[str, Any], code: bool = True, pinned: dict[str, str] | None = None,
                  recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """A dedup pass's fingerprinted params: what its method reads (:data:`_DEDUP_READS`), with
    decontamination's benchmark files' identity (path, size, mtime: a changed benchmark re-runs
    the pass; a missing one is a ConfigError) and (``code``) the versions of the libraries that
    decide the method's removals, if any. A MinHash threshold without verification, or a MinHash
    setting for a URL pass, changes nothing, so it neither re-runs nor refuses the pass.
    ``recorded``: the params an earlier run fingerprinted the whole section with
    (:func:`recorded_whole_section`): the section in its terms, so that run resumes."""
    section = _dedup_section(raw, code, pinned)
    reads = _dedup_reads(section)
    if recorded_whole_section(recorded):
        assert recorded is not None
        return _in_recorded_terms(section, reads, recorded)
    return _pick(section, reads)


def _tokenize_params(raw: dict[str, Any] | None, code: bool = True, pinned: dict[str, str] | None = None,
                     recorded: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The tokenize pass's fingerprinted params: with a tokenizer file, its content's SHA-256 too
    (the tokens depend on the file, not on its path: a retrained tokenizer.json redoes the pass),
    and (``code``) the version of the tokenizers library that applies it. The settings of
    :data:`OUTPUT_FREE_TOKENIZE` are left out, or hashed as an earlier run ``recorded`` them."""
    bos, bos_token = (raw or {}).get("bos", False), (raw or {}).get("bos_token")
    if raw is None:
        return None
    # bos and bos_token are fingerprinted as the token they resolve to (_resolved_bos)
    raw = {k: v for k, v in raw.items() if k not in OUTPUT_FREE_TOKENIZE + ("bos", "bos_token")} | (recorded or {})
    raw = raw | _resolved_bos(raw, bos, bos_token)
    if code:
        raw = raw | {"code": {"tokenizers": library_version("tokenizers", pinned)}}
    if raw.get("tokenizer", "gpt2") == "gpt2":
        return raw
    try:
        data = fs.read_bytes(raw["tokenizer"])
    except (fs.StorageError, OSError) as exc:
        raise ConfigError(f"tokenize.tokenizer: cannot read {raw['tokenizer']}: {exc}") from None
    raw = raw | {"tokenizer_sha256": hashlib.sha256(data).hexdigest()}
    try:  # a file that asks for padding or truncation: load_tokenizer switches them off (session 36),
        # so its tokens differ from those of a run that applied them; such a run is not resumed
        asked = [k for k in ("padding", "truncation") if json.loads(data).get(k)]
    except (ValueError, AttributeError):
        asked = []  # not a tokenizer JSON: loading it says so
    return raw | ({"switched_off": asked} if asked else {})


def _resolved_bos(raw: dict[str, Any], bos: bool | str, bos_token: str | None = None) -> dict[str, Any]:
    """``tokenize.bos`` (or ``bos_token``, which implies it) as the fingerprint holds it: the token
    it resolves to (``bos_token``), or nothing when there is none, so runs from before the setting
    keep their fingerprints and ``auto``, ``true`` and a named token picking the same token share
    one. A tokenizer without a BOS for ``bos: true``, or a named token that is not a special one:
    ConfigError naming the key."""
    if bos is False and bos_token is None:
        return {}
    from refinery.tokens.tokenizer import TokenizerError, load_tokenizer, set_bos

    try:
        tok = load_tokenizer(raw.get("tokenizer", "gpt2"), eos_token=raw.get("eos_token"))
    except TokenizerError as exc:
        raise ConfigError(f"tokenize.tokenizer: {exc}") from None
    try:
        set_bos(tok, bos, bos_token)  # type: ignore[arg-type] - the config's type: a bool or "auto"
    except TokenizerError as exc:
        raise ConfigError(f"tokenize.{'bos' if bos_token is None else 'bos_token'}: {exc}") from None
    return {"bos_token": tok.bos_token} if tok.bos_token is not None else {}


def unique_shard_names(files: list[str], root: str, input_uri: str) -> list[str]:
    """The shard name of each input file; ConfigError naming two files that would share one
    (names drop the suffix: ``a.warc.gz`` and ``a.parquet`` are both ``a``)."""
    names = [shard_name(f, root) for f in files]
    first: dict[str, str] = {}
    for f, name in zip(files, names):
        if name in first:
            raise ConfigError(f"input files {first[name]} and {f} under {input_uri} map to the same shard name {name!r} "
                              f"(a shard is named by its path without the suffix): rename one")
        first[name] = f
    return names


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def _file_sha256(path: Path) -> str:
    from refinery.classifiers.common import sha256_file

    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = sha256_file(path)
    return _FILE_DIGESTS[key]


def _stage_identity(config: PipelineConfig, pinned: dict[str, str] | None = None
                    ) -> tuple[list[dict[str, Any]], dict[str, list[str]], dict[str, str]]:
    """What decides each stage's output besides the code of refinery itself: the stages with
    their effective params (defaults included), ``{stage name: ["<file name> <sha256>", ...]}``
    of the model files each would load now (:meth:`Stage.model_files`: a resumed run whose
    classifier was retrained in place scored its shards with two models, silently), and the
    versions of the libraries they use (:attr:`Stage.libraries`)."""
    stages, digests, libraries = [], {}, {}
    for spec in config.stages:
        stage = spec.build()
        stages.append(spec.fingerprint(stage))
        files = stage.model_files()
        if files:
            digests[spec.stage_name] = [f"{f.name} {_file_sha256(f)[:16]}" for f in files]
        libraries.update({dist: library_version(dist, pinned) for dist in stage.libraries})
    return stages, digests, dict(sorted(libraries.items()))


def _stage_name(stage: dict[str, Any]) -> str:
    """A fingerprinted stage's name, as the funnel and refusals name it (its type, when none is given)."""
    return str(stage.get("name") or stage.get("type"))


def same_stage_meaning(recorded: Any, now: dict[str, Any]) -> bool:
    """Whether a stage as an earlier run fingerprinted it runs as ``now`` (one of this plan's):
    the same record, or one that today's normalization makes it (the record rebuilt as a stage:
    ``name`` its type, a value the stage normalizes written otherwise, by a refinery that
    fingerprinted them as written). A record that no longer builds (a param since removed, a model
    gone) is not."""
    if _same(recorded, now):
        return True
    if not isinstance(recorded, dict) or not isinstance(recorded.get("params"), dict):
        return False
    from refinery.config import StageConfig

    try:
        again = StageConfig(type=recorded.get("type"), name=recorded.get("name"), params=recorded["params"]).fingerprint()
    except Exception:  # noqa: BLE001 - whatever stops it building, it is not this stage
        return False
    return _same(again, now)


def _stages_meaning_the_same(recorded: Any, now: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """By stage name, the stages an earlier run recorded (its first pass's ``stages``) that differ
    from this plan's as written but mean the same (:func:`same_stage_meaning`): what
    :attr:`Plan.recorded_stages` hashes, so that run resumes, and a refusal for another change
    names that change only."""
    if not isinstance(recorded, list):
        return {}
    by_name = {_stage_name(s): s for s in recorded if isinstance(s, dict)}
    out = {}
    for stage in now:
        old = by_name.get(_stage_name(stage))
        if old is not None and not _same(old, stage) and same_stage_meaning(old, stage):
            out[_stage_name(stage)] = old
    return out


def library_version(dist: str, pinned: dict[str, str] | None = None) -> str:
    """The version of the distribution ``dist``: as ``pinned`` (normalised names, see
    :func:`read_lock_versions`) when given, else as installed; "absent" when neither has it."""
    if pinned is not None:
        return pinned.get(_normalise_dist(dist), "absent")
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _normalise_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock_versions(text: str) -> dict[str, str]:
    """``{normalised name: version}`` of the ``name==version`` pins of a pip lock file."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", text, flags=re.M)
    return {_normalise_dist(name): version for name, version in pins}


#: reader settings that change how a shard is read, not what its outputs hold (a test runs the
#: same input at two batch sizes and compares every output file's bytes): left out of the fingerprint
OUTPUT_FREE_READER = ("batch_size",)
#: the same for the tokens pass: each document is encoded alone (the tokenizer's padding and
#: truncation are switched off), so token shards, sidecars and manifest are byte-identical at any
#: ``tokenize.batch_size`` (tests/test_batch_size.py)
OUTPUT_FREE_TOKENIZE = ("batch_size",)


def plan_passes(config: PipelineConfig, input_key: str, relative_files: list[str], limit: int | None,
                legacy: frozenset[str] = frozenset(), pinned: dict[str, str] | None = None,
                recorded_reader: dict[str, Any] | None = None,
                recorded_tokenize: dict[str, Any] | None = None,
                recorded_dedup: dict[str, dict[str, Any]] | None = None,
                recorded_stages: dict[str, dict[str, Any]] | None = None) -> list[Pass]:
    """The passes of ``config`` with their fingerprints, over the input spelled ``input_key``
    holding ``relative_files`` (paths under the input's root). ``legacy``: the parts of the
    fingerprints an earlier refinery did not have, left out ("models", "code"). ``pinned``: the
    library versions the stages will run with, when not the installed ones. ``recorded_reader``:
    output-free reader settings an earlier run fingerprinted, hashed as it recorded them;
    ``recorded_tokenize`` the same for the tokens pass; ``recorded_dedup``: by pass name, the whole
    dedup section an earlier run fingerprinted a pass with (see :func:`_dedup_params`);
    ``recorded_stages``: by stage name, stages as an earlier run fingerprinted them, meaning what
    this config's do (:attr:`Plan.recorded_stages`), hashed in their place."""
    dump = config.model_dump(mode="json")
    reader = {k: v for k, v in dump["reader"].items() if k not in OUTPUT_FREE_READER} | (recorded_reader or {})
    stages, models, libraries = _stage_identity(config, pinned)
    stages = [(recorded_stages or {}).get(_stage_name(s), s) for s in stages]
    code = "code" not in legacy
    filter_params = {"stages": stages if code else dump["stages"], "reader": reader, "stats": dump["stats"],
                     "limit": limit}
    if models and "models" not in legacy:  # only then: runs without models keep the fingerprints they had
        filter_params["models"] = models
    if code:  # a resumed run never mixes shards made by two versions of the code that decides them
        filter_params["code"] = {"refinery": __version__} | libraries
    sections = {"documents": [filter_params],
                "dedup": [_dedup_params(raw, code, pinned, (recorded_dedup or {}).get(d.pass_name))
                          for raw, d in zip(dump["dedup"], config.dedup)],
                "tokenize": [_tokenize_params(dump["tokenize"], code, pinned, recorded_tokenize)]}
    passes: list[Pass] = []
    fp = _input_fingerprint(input_key, relative_files)
    layout = pass_layout(config)
    documents = [name for name, kind, _ in layout if kind != "tokenize"]
    for name, kind, shuffles in layout:
        params = sections[kind].pop(0)
        role = "" if kind == "tokenize" else "only" if len(documents) == 1 else "last" if name == documents[-1] else ""
        fp = _hash({"kind": kind, "params": params, "input": fp, "role": role})  # chained: changes flow downstream
        passes.append(Pass(name, kind, params, fp, shuffles, role))
    return passes


def plan_run(config: PipelineConfig, input_uri: str, output_uri: str, limit: int | None = None,
             pinned_libraries: dict[str, str] | None = None, footer_record: str | None = None,
             check_footers: bool = True) -> Plan:
    """The passes of ``config`` over ``input_uri`` into the run directory ``output_uri``.
    ``pinned_libraries``: the library versions the run's stages will have (see ``Plan``).
    ``footer_record``: an ``input_files.json`` beside the run's own whose Parquet footer check is
    reused where it is exact (a SageMaker launch's, see :func:`input_record`); ``check_footers``
    False reads no footer (a plan that runs nothing, followed by one that does)."""
    input_uri, output_uri = fs.validate_uri(input_uri), fs.validate_uri(output_uri)
    check_separate(input_uri, output_uri)
    check_not_inside_a_run(output_uri)
    check_html_before_extract(config)
    files, by_file = list_input_versions(input_uri, tuple(config.reader.cc_subsets), config.reader.manifest_base)
    if any(f.lower().endswith(WARC_SUFFIXES) for f in files):
        check_text_before_use(config, input_uri)
    root = input_root(input_uri, files)
    names = unique_shard_names(files, root, input_uri)  # refuses two files that would share a shard
    recorded = InputRecord(fs.join(output_uri, INPUT_RECORD))  # read once, when first asked
    records = [recorded] + ([InputRecord(footer_record)] if footer_record else [])
    footers = check_parquet_inputs(config, files, names, by_file, records) if check_footers else None
    passes = plan_passes(config, input_uri, [f[len(root):] for f in files], limit, pinned=pinned_libraries)
    _check_benchmarks(config)
    sizes = versions = None
    if by_file is not None:  # a manifest's files are not listed: sizing them is a request each
        sizes = {name: by_file[f][0] for f, name in zip(files, names)}
        versions = {name: by_file[f][1] for f, name in zip(files, names)}
    plan = Plan(config, input_uri, output_uri, files, passes, limit, sizes, versions,
                pinned_libraries=pinned_libraries, footer_check=footers, recorded_input=recorded)
    plan.remember_shard_names(names)
    return plan


# -- reruns -------------------------------------------------------------------------------------
def load_previous(run: RunDir) -> dict[str, Any] | None:
    """The plan an earlier run recorded in ``run.json`` (None for a new or legacy directory)."""
    return run.recorded_plan()


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list) and obj and all(isinstance(x, dict) and ("name" in x or "type" in x) for x in obj):
        out = {}
        for x in obj:  # stages by name, not by position: a message names the stage
            out.update(_flatten({k: v for k, v in x.items() if k != "name"}, f"{prefix}.{x.get('name') or x.get('type')}"))
        return out
    return {prefix: obj}


def _order(obj: Any) -> list[str] | None:
    """The stage names of a ``stages`` list, in order."""
    stages = obj.get("stages") if isinstance(obj, dict) else None
    if isinstance(stages, list) and all(isinstance(x, dict) for x in stages):
        return [str(x.get("name") or x.get("type")) for x in stages]
    return None


def _limit_words(limit: Any) -> str:
    """A run's ``--limit`` as a refusal names it: ``20``, or ``none (the whole input)``."""
    return "none (the whole input)" if limit is None else str(limit)


def describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``"stages.language_id.params.min_score 0.65 -> 0.85"`` for the keys that differ, or the
    stages' new order. Both sides are fingerprinted params, values as the stages hold them (a float
    param's ``2`` is ``2.0`` on both); a number left as written, ``2`` -> ``2.0`` (a param typed for
    both, which may run otherwise), counts: the fingerprint differs."""
    a, b = _flatten(old), _flatten(new)
    changes = []
    # a stage added or taken out is named once, not as each of its params set or unset (a stage
    # added read "stages.gq2.params.max_words '<unset>' -> 100000 (+6 more)": adversarial testing)
    before, after = _order(old) or [], _order(new) or []
    for label, names, side in (("added", [n for n in after if n not in before], new),
                               ("removed", [n for n in before if n not in after], old)):
        for name in names:
            kind = next((x.get("type") for x in side["stages"] if str(x.get("name") or x.get("type")) == name), None)
            changes.append(f"stage {name!r}{f' ({kind})' if kind and kind != name else ''} {label}")
            def mine(key: str, name: str = name) -> bool:  # its params and its model files
                return key.startswith(f"stages.{name}.") or key == f"models.{name}"

            a = {k: v for k, v in a.items() if not mine(k)}
            b = {k: v for k, v in b.items() if not mine(k)}
    if set(before) != set(after):
        # a library only a stage added or taken out runs with came or went with it: it read as an
        # upgrade, "code.datatrove '<unset>' -> '0.10.1'" (a review); a version changed stays named
        a, b = ({k: v for k, v in side.items() if not (k.startswith("code.") and (k not in a or k not in b))}
                for side in (a, b))
    for key in sorted(set(a) | set(b)):
        if not _same(a.get(key, "<unset>"), b.get(key, "<unset>")):
            if key == "limit":  # the command line's option, not a config key: "limit 20 -> None" named neither
                # the option nor what None meant (session 49, h197)
                changes.append(f"--limit {_limit_words(a.get(key))} -> {_limit_words(b.get(key))}")
                continue
            changes.append(f"{key} {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    if _order(old) != _order(new) and set(before) == set(after):
        # named even with params that changed: the order decides some (line_corrections takes
        # gopher_quality's min_words only after it), and they alone hid the reordering
        changes.insert(0, f"the order of its stages {_order(old)} -> {_order(new)}")
    return "; ".join(changes[:5]) + (f" (+{len(changes) - 5} more)" if len(changes) > 5 else "")


def first_pass_to_redo(plan: Plan, previous: dict[str, Any] | None, force: bool,
                       files: PassFiles | None = None, keep_finished_shards: bool = True) -> int | None:
    """Index of the first pass ``--force`` redoes (every pass from it on), or None when passes
    just resume. Raises :class:`RerunError` naming what changed when a rerun would mix configs.
    ``files``: where the check of the finished shards' inputs keeps its listing of the first
    pass's stats/, for the caller's finished check (h165). ``keep_finished_shards``: when the
    input's file list alone changed (files added or removed), ``--force`` keeps the first pass's
    finished shards of the files still there and redoes the passes after it (1 is returned; the
    first pass then runs the other shards); so it does when files whose shards finished were
    rewritten since (another size or version), whatever else changed but the first pass's config:
    their shards are redone (:attr:`Plan.first_pass_redo`), the others kept. False for a share of
    a multi-instance launch, which redoes as a forced launch does."""
    if previous is None:
        return 0 if force else None
    # a run made by an earlier refinery is compared in its own terms, --force too: a change to a
    # later pass redoes from that pass (in those terms), not every pass (found by adversarial testing)
    plan.adopt_legacy(previous)
    redo = _first_pass_to_redo(plan, previous, force, files, keep_finished_shards)
    if redo == 0:
        plan.first_pass_accepts = ()  # every shard of the first pass is redone under its fingerprint
    if redo == 0 and (plan.legacy or plan.recorded_reader or plan.recorded_tokenize or plan.recorded_dedup
                      or plan.recorded_stages):  # every pass redone: today's terms
        plan.drop_legacy()
    return redo


def _first_pass_to_redo(plan: Plan, previous: dict[str, Any], force: bool, files: PassFiles | None,
                        keep_finished_shards: bool = True) -> int | None:
    before = {p["name"]: p for p in previous.get("passes", [])}
    if not set(before) & {p.name for p in plan.passes}:
        raise RerunError(f"{plan.output} holds another run (passes {sorted(before)}), not this plan's "
                         f"({[p.name for p in plan.passes]}); choose a new --output")
    recorded, place = previous.get("input"), previous.get("input_canonical")
    if isinstance(recorded, str) and recorded != plan.input_key and _same_place(previous, plan.input):
        log.info("input %s is %s, as %s records it: resuming", plan.input, recorded, fs.join(plan.output, "run.json"))
        plan.respell_input(recorded)
    elif isinstance(place, str) and place != fs.canonical(plan.input):
        # the same spelling from another directory (or a link pointed elsewhere) is other input
        if force:
            return 0
        raise RerunError(f"{plan.output} was made with a different {plan.passes[0].name!r} pass: input changed: "
                         f"{recorded} ({place}) -> {plan.input} ({fs.canonical(plan.input)}); rerun with --force to "
                         f"redo every pass, or choose a new --output")
    # markers rewritten only once the whole plan is accepted: a refused rerun changes nothing
    # (it re-fingerprinted the finished shards, and the next run redid them all)
    adopt: list[Callable[[], None]] = []
    dropped: set[str] = set()  # input files whose shards never finished, gone from the input
    for i, p in enumerate(plan.passes):
        old = before.get(p.name)
        if old is None and i and _left_out_and_made_otherwise(plan, p):
            # a rerun left this pass out of the recipe (the last one, tokens, may go without a
            # refusal) and it comes back with other settings: its finished outputs were replaced
            # without --force (review h111)
            if force:
                return i
            raise RerunError(f"{plan.output} was made with a different {p.name!r} pass: a rerun left it out of the "
                             f"recipe, and its outputs ({_pass_outputs(plan, p)}) were made with other settings; rerun "
                             f"with --force to redo {p.name!r} and the passes after it, or choose a new --output")
        if old is None or old.get("fingerprint") == p.fingerprint:
            if i == 0 and old is not None:  # its finished shards' markers may still carry them
                plan.first_pass_accepts = _accepted(old)
            continue
        grown = i == 0 and _file_list_changed_only(plan, previous, old, p)
        if grown and force and keep_finished_shards and _finished_inputs_recorded(plan, log_none=True):
            _keep_finished_shards(plan, p, old, rewritten_finished_shards(plan, files), files)
            return 1
        if force:  # a file rewritten in place also redoes its shard of the first pass, whatever else changed
            rewritten = rewritten_finished_shards(plan, files) if i else []
            if rewritten and keep_finished_shards:
                _keep_finished_shards(plan, plan.passes[0], before.get(plan.passes[0].name) or {}, rewritten, files)
                return 1
            return 0 if rewritten else i
        if i and not pass_started(plan, p):
            continue  # it wrote nothing under its old plan: nothing to mix (it was blocked, or killed before)
        same_pass = _same(old.get("params"), p.params) and old.get("role", p.role) == p.role
        if i == 0 and same_pass and previous.get("input") == plan.input_key:
            dropped = _unfinished_inputs_removed(plan, files)
        if i == 0 and dropped:
            check_finished_inputs_unchanged(plan, files, keep_finished_shards)  # raises before anything is changed
            adopt.append(lambda p=p, old=old: _resume_without_unfinished(plan, p, old, files))
            continue
        if i and dropped and same_pass and _made_without(plan, p.name, str(old.get("fingerprint")), dropped):
            # a later pass made while those files' shards were set aside: made over the same
            # shards this plan has (found by adversarial testing: it was refused as "input changed")
            adopt.append(lambda p=p, old=old: _adopt_pass_marker(plan, p, str(old.get("fingerprint")), dropped))
            continue
        redo = f"redo {p.name!r} and the passes after it"
        if i == 0 and previous.get("input") != plan.input_key:
            what = f"input changed: {previous.get('input')} -> {plan.input}"
        elif old.get("role", p.role) != p.role:
            what = f"the plan's passes changed (it wrote {old.get('role') or 'its own directory'}, now {p.role or 'its own directory'})"
        elif i == 0 and _same(old.get("params"), p.params) and "input_canonical" not in previous \
                and not fs.is_s3(plan.input) and not plan.input.startswith("/"):
            what = (f"it was made by an earlier refinery from the relative input {plan.input}, which names and "
                    f"fingerprints shards by their full paths now")
        elif i == 0 and _same(old.get("params"), p.params):
            rewritten = rewritten_finished_shards(plan, files) if grown else []
            what = "input files changed since the run was made" + _input_set_change(plan, rewritten)
            if grown and _finished_inputs_recorded(plan):
                redo = _force_keeps(plan, rewritten, files) if keep_finished_shards else redo
        else:
            recorded_names = [q.get("name") for q in previous.get("passes", [])]
            now_names = [q.name for q in plan.passes]
            what = describe_change(old.get("params", {}), p.params) or (
                f"the passes before it changed: {recorded_names} -> {now_names}" if recorded_names != now_names
                else "its input changed")
        raise RerunError(f"{plan.output} was made with a different {p.name!r} pass: {what}; rerun with --force to "
                         f"{redo}, or choose a new --output")
    if not force:
        check_finished_inputs_unchanged(plan, files, keep_finished_shards)
    elif keep_finished_shards and (rewritten := rewritten_finished_shards(plan, files)):
        # no pass changed but the content of some finished shards' files: those shards, and every
        # pass after the first (it read them), are redone; the other finished shards are kept
        _keep_finished_shards(plan, plan.passes[0], before.get(plan.passes[0].name) or {}, rewritten, files)
        return 1
    for step in adopt:
        step()
    return 0 if force else None


def _file_list_changed_only(plan: Plan, previous: dict[str, Any], old: dict[str, Any], p: Pass) -> bool:
    """Whether the first pass's fingerprint changed by its input's file list alone: the same
    params and role, the input spelled as recorded (its place was checked before), shards named
    as this refinery names them (a relative input recorded without its canonical path named them
    by base name). A finished shard of a file still there is then what this plan would make."""
    return (_same(old.get("params"), p.params) and old.get("role", p.role) == p.role
            and previous.get("input") == plan.input_key
            and ("input_canonical" in previous or fs.is_s3(plan.input) or plan.input.startswith("/")))


def _keep_finished_shards(plan: Plan, p: Pass, old: dict[str, Any], rewritten: list[str],
                          files: PassFiles | None) -> None:
    """``--force`` after files were added to, removed from or rewritten in the input: each shard of
    the first pass reads its own file and the config, both unchanged for the files still there and
    not rewritten, so their finished shards are kept (redoing them made the same bytes: 10,000
    shards redone for 100 files added, or for 1 file fixed); the pass runs the new files' shards
    and the ``rewritten`` ones' (:attr:`Plan.first_pass_redo`: cleared by the run, after the later
    passes), drops the removed ones', and every later pass, which reads the whole corpus (dedup;
    tokens), is redone from its start. ``files``: the caller's listings of the pass (the input
    check listed its stats/ already)."""
    _accept_finished_shards(plan, p, old, files, set(rewritten))
    plan.first_pass_redo = tuple(rewritten)
    later = [q.name for q in plan.passes[1:]]
    # (how many: the pass says, "N already finished", once it has read their markers)
    log.info("[%s] input files changed since the run was made%s: keeping its finished shards of the files "
             "still there%s, running it on the others%s", p.name, _input_set_change(plan, rewritten),
             " and unchanged" if rewritten else "", f"; redoing {', '.join(later)} over the whole input" if later else "")


def _resume_without_unfinished(plan: Plan, p: Pass, old: dict[str, Any], files: PassFiles | None) -> None:
    _accept_finished_shards(plan, p, old, files)
    log.info("[%s] input files whose shards never finished were removed: resuming with the finished shards", p.name)


def _accepted(old: dict[str, Any]) -> tuple[str, ...]:
    """The fingerprints the first pass's record in ``run.json`` accepts (see ``Plan.first_pass_accepts``)."""
    accepts = old.get("accepts")
    return tuple(f for f in accepts if isinstance(f, str)) if isinstance(accepts, list) else ()


def _left_out_and_made_otherwise(plan: Plan, p: Pass) -> bool:
    """Whether pass ``p``, which the recorded plan does not have, finished in this run directory
    under another fingerprint (its marker outlived a rerun that left it out of the recipe)."""
    uri = plan.run.pass_marker(p.name)
    try:
        # one GET, not a look then a read: only a missing marker is "no"; a failed read is raised
        # as the failed look was, never a "yes" or a "no" (session 45, h148)
        marker = fs.read_json_if_any(uri)
    except fs.DamagedRecord:
        return True  # unreadable: its outputs' settings cannot be told
    return marker is not None and marker.get("fingerprint") != p.fingerprint


def _pass_outputs(plan: Plan, p: Pass) -> str:
    return plan.run.tokens_dir if p.kind == "tokenize" else plan.pass_dir(p.name).root


def _made_without(plan: Plan, name: str, old_fingerprint: str, dropped: set[str]) -> bool:
    """Whether pass ``name`` finished under ``old_fingerprint`` with every shard of ``dropped`` set aside."""
    marker = fs.read_json_if_any(plan.run.pass_marker(name))
    return isinstance(marker, dict) and marker.get("fingerprint") == old_fingerprint \
        and dropped <= set(marker_set_aside(marker))


def _adopt_pass_marker(plan: Plan, p: Pass, old_fingerprint: str, dropped: set[str]) -> None:
    """Pass ``p``'s marker under this plan's fingerprint, without the set-aside shards that left the input."""
    uri = plan.run.pass_marker(p.name)
    marker = fs.read_json(uri)
    if marker.get("fingerprint") != old_fingerprint:
        return
    summary = dict(marker.get("summary") or {})
    aside = [s for s in marker_set_aside(marker) if s not in dropped]
    summary.pop("set_aside", None)
    if aside:
        summary["set_aside"] = aside
    fs.write_bytes(uri, json.dumps(marker | {"fingerprint": p.fingerprint, "summary": summary}, indent=1).encode())
    log.info("[%s] made without the %d set-aside shard(s) removed from the input: kept", p.name, len(dropped))


def pass_started(plan: Plan, p: Pass) -> bool:
    """Whether pass ``p`` (after the first) wrote anything: its marker, its directory, or the
    tokens directory. A pass that never started (blocked by a failed shard before it) may
    change its plan freely."""
    if fs.file_exists(plan.run.pass_marker(p.name)):
        return True
    # a file in its directories, not their existence: one holding only hidden files, or on S3 only
    # the directory marker pyarrow leaves (its index cleared), holds nothing to mix (h156)
    if p.kind == "tokenize":
        return fs.holds_files(plan.run.tokens_dir)
    out = plan.pass_dir(p.name)
    return (fs.holds_files(out.root if p.role != "only" else out.stats_dir)
            or (p.role == "last" and fs.holds_files(out.kept_dir)))


def _input_set_change(plan: Plan, rewritten: Collection[str] = ()) -> str:
    """``": added a.warc.gz; removed b.warc.gz; rewritten c.warc.gz"``: which shards' files the
    input gained and lost since the run recorded them, and which of ``rewritten`` (shards whose
    finished file changed) it holds ("" when unknown or none; the refusal named no file)."""
    if not plan.input_record.found:
        return ""
    recorded = set(plan.input_record.sizes)
    now = dict(zip(plan.shard_names(), plan.input_files))
    root = input_root(plan.input, plan.input_files).rstrip("/")
    parts = []
    for label, names in (("added", sorted(set(now) - recorded)), ("removed", sorted(recorded - set(now))),
                         ("rewritten", list(rewritten))):
        if names:
            shown = [_file_name(now.get(n) or _recorded_input(plan, n), root) or n for n in names[:3]]
            parts.append(f"{label} {', '.join(shown)}{f' and {len(names) - 3} more' if len(names) > 3 else ''}")
    return f" ({'; '.join(parts)})" if parts else ""


@dataclass
class InputChanges:
    """How a run's input differs now from what the run last read (``input_files.json``): files
    added, removed and rewritten (another size or version) whose shards finished (their outputs
    are in the run), by their names under the input; and the shards of files removed before they
    finished, by shard name (nothing records their file's name, and nothing of them is in the run).
    A file rewritten before its shard finished is none of them: the same command reads it as it is."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed_unfinished: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.removed_unfinished)


def input_changes(run: RunDir, record: dict[str, Any], finished: dict[str, str | None] | None = None,
                  listings: PassFiles | None = None) -> InputChanges | None:
    """What changed in the input of the run ``record`` (its ``run.json``) since the run listed it:
    one listing of the input (no file read but a plain ``.json``'s head, as a run's listing does),
    compared by shard name, size and version with ``input_files.json``. None when it cannot be
    told: a paths manifest (its files are named, not listed), a relative input recorded without
    its place, no record, or an input that cannot be listed now (gone, no credentials).
    ``finished``: the first pass's finished shards and the input file each one's marker names, as
    the caller read them (else the pass's stats/ is listed, unless ``listings``, the caller's,
    hold it, and the removed shards' markers read, one each): a removed file is known by its name
    only from there (``status`` named it by its shard), and a rewritten one counts only if its
    shard finished."""
    place = record.get("input_canonical") or record.get("input")
    if not isinstance(place, str) or not (fs.is_s3(place) or place.startswith("/")) or is_manifest(place):
        return None
    reader = ((record.get("config") or {}).get("reader") or {})
    try:
        recorded = InputRecord(fs.join(run.root, INPUT_SIZES_FILE), warn=False)
        if not recorded.found:
            return None
        # one listing (an S3 prefix's pages), without the checks a run makes before it: this input was accepted
        files, by_file = _input_files(place, fs.list_file_versions(place, INPUT_SUFFIXES),
                                      tuple(reader.get("cc_subsets") or DEFAULT_SUBSETS), quiet=True)
    except (ConfigError, fs.StorageError, OSError, ValueError, KeyError, TypeError) as exc:
        log.debug("input of %s not compared with its record: %s", run.root, exc)
        return None
    root = input_root(place, files)
    now = {shard_name(f, root): f for f in files}
    here = root.rstrip("/") + "/"

    def name(uri: str) -> str:
        return uri[len(here):] if uri.startswith(here) else fs.basename(uri)

    gone = sorted(set(recorded.sizes) - set(now))
    if finished is None:
        stats_dir = run.pass_dirs_of(record)[0].stats_dir
        done = shards_with_markers(stats_dir, listings)
        finished = {s: None for s in done} | _marker_inputs(stats_dir, [s for s in gone if s in done])
    changed = [name(now[s]) for s in sorted(set(now) & set(recorded.sizes) & set(finished))
               if recorded.change(s, *by_file[now[s]])]
    inputs = {s: finished[s] for s in gone if s in finished}
    return InputChanges(added=sorted(name(now[s]) for s in set(now) - set(recorded.sizes)),
                        removed=sorted(name(u) if isinstance(u, str) else s for s, u in inputs.items()),
                        changed=changed, removed_unfinished=[s for s in gone if s not in inputs])


def _marker_inputs(stats_dir: str, shards: list[str]) -> dict[str, str | None]:
    """The ``shards`` with a stats marker under ``stats_dir`` (finished) and the input file each
    marker names; a marker that cannot be read counts as finished, unnamed (its outputs may be there)."""
    out = {}
    for shard in shards:
        try:
            marker = fs.read_json_if_any(fs.join(stats_dir, f"{shard}.json"))
        except (fs.StorageError, OSError, ValueError):
            out[shard] = None
            continue
        if marker is not None:
            out[shard] = marker.get("input") if isinstance(marker.get("input"), str) else None
    return out


def _recorded_input(plan: Plan, shard: str) -> str | None:
    """The input file a shard read, as its stats marker in the first pass recorded it (None when
    it never finished): a removed file's name is known from nothing else, and the refusal named the
    shard ("removed cc_3") rather than the file the user moved (cc_3.jsonl; found by trials)."""
    return _marker_inputs(plan.pass_dir(plan.passes[0].name).stats_dir, [shard]).get(shard)


def _file_name(uri: str | None, root: str) -> str | None:
    """``uri`` relative to the input ``root`` (``sub/a.jsonl``), or its base name when outside it."""
    if not uri:
        return None
    return uri[len(root) + 1:] if uri.startswith(root + "/") else fs.basename(uri)


def _unfinished_inputs_removed(plan: Plan, files: PassFiles | None = None) -> set[str]:
    """The shards of the files the input lost, when it changed only by losing files whose shards
    never finished (a broken file moved away after its shard failed or was set aside): the
    finished shards are still what this plan would make. It was refused as "input files changed",
    and ``--force`` redid every healthy shard (found by adversarial testing). Else empty.
    ``files``: the caller's listings of the pass (without them, a refusal listed its stats/ twice)."""
    if not plan.input_record.found:
        return set()
    recorded = set(plan.input_record.sizes)
    now = set(plan.shard_names())
    removed = recorded - now
    if not removed or not now <= recorded:
        return set()
    return set() if removed & shards_with_markers(plan.pass_dir(plan.passes[0].name).stats_dir, files) else removed


def _accept_finished_shards(plan: Plan, p: Pass, old: dict[str, Any], files: PassFiles | None = None,
                            redone: Collection[str] = ()) -> None:
    """Keep the finished shards of the first pass under this plan: their inputs and config are
    unchanged, only the input's file list changed (files whose shards never finished left it, or
    files were added or removed under ``--force``), and a shard reads its own file alone. Their
    markers keep the fingerprint they were written with: the plan accepts it (and those the old
    plan accepted; ``Plan.first_pass_accepts``, recorded in ``run.json`` with the plan, so a run
    stopped since resumes with them). Each marker was rewritten under the new fingerprint: a GET and
    a PUT a shard in the driver, one after another (10,000 of each for a crawl of 10,000 files that
    grew by 100). Their outputs are kept; a removed file's outputs and failure record go with the
    orphans when the pass runs. A shard whose files no longer have the sizes the pass's old marker
    recorded (cut short, replaced) is cleared instead, and redone, as a rerun of the finished pass
    would. ``files``: the caller's listings of the pass (the damage check's). ``redone``: shards to
    be redone anyway (their files rewritten), not checked."""
    out = plan.pass_dir(p.name)
    names = set(plan.shard_names()) - set(redone)
    old_fingerprint = str(old.get("fingerprint"))
    pass_marker = fs.read_json_if_any(plan.run.pass_marker(p.name))
    if isinstance(pass_marker, dict) and pass_marker.get("fingerprint") == old_fingerprint:
        damaged = damaged_outputs(out, pass_marker.get("outputs"), names, files)
        for shard, problem in damaged.items():
            log.warning("[%s] %s: redoing shard %s", p.name, problem, shard)
            clear_shard_outputs(out, shard)
        if damaged and files is not None:  # listed before those shards were cleared
            files.forget(out.stats_dir, out.kept_dir, out.removed_dir, out.samples_dir, out.failed_dir)
    plan.first_pass_accepts = tuple(dict.fromkeys(f for f in (*_accepted(old), old_fingerprint) if f != p.fingerprint))


def _same_place(previous: dict[str, Any], input_uri: str) -> bool:
    """Whether the input an earlier run recorded is the place ``input_uri`` names now: by the
    canonical path it recorded, or (runs made before that was recorded) by its own spelling when
    that is absolute or S3. A relative spelling alone is not resolved: it was relative to a
    directory nobody recorded."""
    canonical = previous.get("input_canonical")
    if not isinstance(canonical, str):
        recorded = previous.get("input")
        if not isinstance(recorded, str) or not (fs.is_s3(recorded) or recorded.startswith(("/", "~"))):
            return False
        canonical = fs.canonical(recorded)
    return canonical == fs.canonical(input_uri)


def _finished_inputs_recorded(plan: Plan, log_none: bool = False) -> bool:
    """Whether the run has a sound record of the input files it read (damaged, or a run killed
    before it wrote one: none), so a grown input's ``--force`` may keep the finished shards whose
    files it shows unchanged (a paths manifest's files, never listed, are trusted as a plain rerun
    trusts them). ``log_none``: say so when there is none (every shard is then redone)."""
    recorded = plan.input_sizes is None or plan.input_record.found
    if not recorded and log_none:
        log.info("%s has no record of the input files its shards read: redoing every shard", plan.output)
    return recorded


def rewritten_finished_shards(plan: Plan, files: PassFiles | None = None) -> list[str]:
    """The shards of the first pass that finished and whose input file changed since the run
    recorded it (another size, or version: modification time locally, ETag on S3), sorted.
    Unfinished shards may change (a broken file replaced by a good copy is simply read). A run
    recorded before versions were (sizes only) is compared by size. No record, or a damaged one:
    nothing to compare with (:class:`InputRecord`), none. ``files``: the caller's listings."""
    record, sizes = plan.input_record, plan.input_sizes
    if sizes is None or not record.found:
        return []
    finished = shards_with_markers(plan.pass_dir(plan.passes[0].name).stats_dir, files)
    versions = plan.input_versions or {}
    return sorted(s for s in finished & set(sizes) if record.change(s, sizes[s], versions.get(s)))


def check_finished_inputs_unchanged(plan: Plan, files: PassFiles | None = None,
                                    keep_finished_shards: bool = True) -> None:
    """An input file rewritten in place under the same name (a re-exported dataset) would leave
    its finished shard's old results in the run: refuse when a file whose shard finished changed
    (:func:`rewritten_finished_shards`), naming the files and what ``--force`` does: run the first
    pass on them, keeping its other finished shards, and redo the passes after it (every pass for
    a share of a multi-instance launch, ``keep_finished_shards`` False)."""
    rewritten = rewritten_finished_shards(plan, files)
    if not rewritten:
        return
    names = dict(zip(plan.shard_names(), plan.input_files))
    sizes, versions = plan.input_sizes or {}, plan.input_versions or {}

    def how(s: str) -> str | None:
        return plan.input_record.change(s, sizes[s], versions.get(s))

    shown = [f"{names[s]} ({how(s)})" for s in rewritten[:3]] + (
        [f"{len(rewritten) - 3} more"] if len(rewritten) > 3 else [])
    what = (f"input file {names[rewritten[0]]} changed since its shard was processed ({how(rewritten[0])})"
            if len(shown) == 1 else
            f"input files {', '.join(shown[:-1])} and {shown[-1]} changed since their shards were processed")
    first = plan.passes[0].name
    redo = _force_keeps(plan, rewritten, files) if keep_finished_shards else f"redo {first!r} and the passes after it"
    raise RerunError(f"{plan.output}: {what}; rerun with --force to {redo}, or choose a new --output")


def force_keeps_words(first: str, added: bool, removed: bool, rewritten: bool, later: bool) -> str:
    """What ``--force`` does when the first pass's input gained, lost or had rewritten some files
    (its config unchanged), as the refusal and `refinery status` say it: ``run 'filter' on the new
    files only (its finished shards are kept) and redo the passes after it``."""
    which = " and ".join(w for w, on in (("new", added), ("rewritten", rewritten)) if on)
    todo = [f"run {first!r} on the {which} files only" if which else "",
            f"drop the removed files' shards from {first!r}" if removed else ""]
    kept = "its other finished shards are kept" if removed or rewritten else "its finished shards are kept"
    return f"{' and '.join(t for t in todo if t) or f'run {first!r} on the new files only'} ({kept})" + (
        " and redo the passes after it" if later else "")


def _force_keeps(plan: Plan, rewritten: list[str], files: PassFiles | None = None) -> str:
    """:func:`force_keeps_words` for this plan's input as its record shows it changed (files
    removed: those whose shards finished; the others left nothing to drop)."""
    recorded, now = set(plan.input_record.sizes), set(plan.shard_names())
    gone = recorded - now
    removed = gone and gone & shards_with_markers(plan.pass_dir(plan.passes[0].name).stats_dir, files)
    return force_keeps_words(plan.passes[0].name, bool(now - recorded), bool(removed), bool(rewritten),
                             len(plan.passes) > 1)


#: fields of run.json that say when and by whom, not what: two shares of one launch differ in them
#: only (a "claim" is not one of them: a replan is under way)
_WHEN = ("started_at", "updated_at", "writer", "launch")


def _busy(plan: Plan) -> RunDirBusy:
    return RunDirBusy(f"run directory {plan.output} is in use by another refinery run (it wrote {fs.basename(plan.run.run_json)} "
                      f"while this one was planning): wait for it to finish, or stop it; then run the same command again")


def _same_plan(plan: Plan) -> bool:
    """Whether ``run.json`` now records this very plan (another share of one launch wrote it)."""
    try:
        record = plan.run.recorded_plan()
    except (fs.StorageError, OSError):
        return False
    mine = json.loads(json.dumps(plan.to_json()))
    return record is not None and {k: v for k, v in record.items() if k not in _WHEN} == mine


def claim_run_json(plan: Plan, previous: dict[str, Any], tag: str | None) -> str | None:
    """Before a replan deletes anything in an S3 run directory: rewrite ``run.json`` as recorded
    (a crash after this leaves the old plan in place, as before), marked with a fresh claim, only
    if it is still the version ``tag`` read when planning. Of two replans of one run, one claims
    it and the other is refused here, before it deletes the winner's outputs. Returns the new
    ETag (None for a local directory, whose lock does this)."""
    if not fs.is_s3(plan.output):
        return tag
    record = previous | {"claim": uuid.uuid4().hex}
    try:
        return fs.write_bytes_if(plan.run.run_json, json.dumps(record, indent=1).encode(), tag)
    except fs.WriteConflict:
        raise _busy(plan) from None
    except fs.StorageError as exc:
        raise ConfigError(f"output {plan.output} is not writable: {fs.plain_reason(exc)}") from None


def _started_at(previous: dict[str, Any] | None, now: str, new_run: bool, launch: str | None) -> str:
    """When the run whose outputs ``run.json`` describes began: kept across resumes, ``now`` for a
    run that redoes every pass (``--force``: a forced rerun kept the old time, found by review
    h98), unless a sibling share of the same forced ``launch`` began it."""
    before = (previous or {}).get("started_at")
    if not isinstance(before, str) or (new_run and not (launch and (previous or {}).get("launch") == launch)):
        return now
    return before


def input_record(plan: Plan) -> dict[str, Any] | None:
    """What ``input_files.json`` records of the plan's input: each file's size and version, and
    the Parquet footer check (None for a manifest's files, which are not listed)."""
    if plan.input_sizes is None:
        return None
    return record_of(plan.input_sizes, plan.input_versions, plan.footer_check.to_json() if plan.footer_check else None)


def write_plan(plan: Plan, previous: dict[str, Any] | None = None, tag: str | None = None,
               conditional: bool = False, share: bool = False, new_run: bool = False,
               launch: str | None = None) -> None:
    """Record the plan in ``run.json``. ``conditional`` (an S3 run directory, whose runs no lock
    orders): only if ``run.json`` is still as read when planning, absent (``tag`` None) or that
    ETag; else :class:`RunDirBusy` naming the output (another run planned it meanwhile), unless
    ``share`` (one instance's share of a multi-instance job) and it now records this very plan:
    the shares of one launch all plan the same run. ``new_run``: every pass is redone, so the
    run starts now (``started_at``); ``launch``: recorded, so the shares of one forced launch
    keep the time the first of them wrote."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = plan.to_json() | {"started_at": _started_at(previous, now, new_run, launch), "updated_at": now}
    if launch:
        record["launch"] = launch
    if conditional:
        # each write its own bytes: a retried PUT finds them and goes on, while another run of this
        # config planned in the same second wrote the same bytes and went on beside it (a review)
        record["writer"] = uuid.uuid4().hex
    try:
        if (inputs := input_record(plan)) is not None:
            fs.write_bytes(fs.join(plan.output, INPUT_SIZES_FILE), json.dumps(inputs).encode())
        data = json.dumps(record, indent=1).encode()
        if conditional:
            fs.write_bytes_if(plan.run.run_json, data, tag)
        else:
            fs.write_bytes(plan.run.run_json, data)
    except fs.WriteConflict:
        if share and _same_plan(plan):
            log.info("%s records this plan already (another instance of the job wrote it)", plan.run.run_json)
            return
        raise _busy(plan) from None
    except Exception as exc:  # noqa: BLE001 - any storage failure here means "unwritable output"
        raise ConfigError(f"output {plan.output} is not writable: {fs.plain_reason(exc)}") from None


def shards_with_markers(stats_dir: str, files: PassFiles | None = None) -> set[str]:
    """Names of the shards whose ``stats/<shard>.json`` marker exists (one listing, or ``files``')."""
    return {fs.basename(u)[: -len(".json")] for u in (files or PassFiles()).files(stats_dir, (".json",))}


def read_marker(plan: Plan, p: Pass) -> dict[str, Any] | None:
    """The pass's marker if it was written under this fingerprint."""
    data = fs.read_bytes_if_any(plan.run.pass_marker(p.name))
    if data is None:
        return None
    marker = json.loads(data)
    return marker if isinstance(marker, dict) and marker.get("fingerprint") == p.fingerprint else None


def marker_set_aside(marker: dict[str, Any] | None) -> list[str]:
    """The shards a finished document pass set aside (``executor.max_failed_fraction``): their
    inputs failed, and the later passes ran without them."""
    return sorted((marker or {}).get("summary", {}).get("set_aside") or [])


def set_aside_shards(plan: Plan) -> list[str]:
    """The shards the plan's document pass set aside when it finished (see ``marker_set_aside``)."""
    return marker_set_aside(read_marker(plan, plan.passes[0]))


def pass_finished(plan: Plan, p: Pass, files: PassFiles | None = None) -> dict[str, Any] | None:
    """The pass's marker if it finished with this fingerprint and every shard it wrote is still
    there (a shard whose outputs went missing is redone, not silently skipped). The shards the
    document pass set aside are not expected in any pass. ``files``: listings of the pass's
    directories its caller made since they last changed (:class:`PassFiles`)."""
    marker = read_marker(plan, p)
    if marker is None:
        return None
    if p is not plan.passes[0] and marker_set_aside(marker) != set_aside_shards(plan):
        return None  # made over another set of shards than the document pass now leaves out
    if p.kind == "tokenize":
        summary = marker.get("summary") or {}
        made_with = summary.get("tokenizer_sha256")
        return marker if _token_outputs_present(plan.run.tokens_dir, made_with, summary.get("bos_id")) else None
    out = plan.pass_dir(p.name)
    names = set(plan.shard_names()) - set(marker_set_aside(marker))
    if not names <= shards_with_markers(out.stats_dir, files) or not names <= shards_with_outputs(out, files):
        return None
    if not fs.file_exists(out.stats_json):  # one HEAD on S3 (was a HEAD, and a LIST when absent)
        # the pass's funnel went missing: "redone" from its shard markers (every shard is skipped);
        # skipped, the run's funnel lost the pass's stages or failed to reconcile (found by
        # adversarial testing)
        return None
    return marker


def _token_outputs_present(tokens_dir: str, tokenizer_sha256: str | None = None, bos_id: int | None = None) -> bool:
    """The token manifest and every file of every shard it lists exist (one listing), and the
    manifest's tokenizer is the one the pass used (a standalone ``refinery tokenize`` with another
    tokenizer into ``RUN/tokens`` left the pass "finished"; found by adversarial testing), with
    the pass's BOS id (None: no BOS)."""
    from refinery.tokens.format import file_sizes, shard_damage

    try:
        manifest = json.loads(fs.read_bytes(fs.join(tokens_dir, "manifest.json")))
    except (fs.StorageError, OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        return False
    if tokenizer_sha256 is not None and (manifest.get("tokenizer") or {}).get("sha256") != tokenizer_sha256:
        return False
    if tokenizer_sha256 is not None and (manifest.get("tokenizer") or {}).get("bos_id") != bos_id:
        return False
    # one listing for the sidecars and the sizes (it was two; h156): files cut short count as
    # missing, and the pass redoes their shards; a listing that fails is {}, every shard missing
    sizes = file_sizes(tokens_dir, (".bin", ".idx", ".parquet", ".json"))
    present = {name for name in sizes if name.lower().endswith(".json")}
    return all(isinstance(s, dict) and f"{s.get('name')}.json" in present and shard_damage(s, sizes) is None
               for s in manifest["shards"])


def finish_pass(plan: Plan, p: Pass, summary: dict[str, Any], launch: str | None = None) -> None:
    marker = {"pass": p.name, "fingerprint": p.fingerprint,
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "summary": summary}
    if p.kind != "tokenize":  # (token shards' sidecars record their sizes already)
        # the sizes of its shards, as written (after their schemas were unified): a rerun redoes a
        # shard whose file was cut short or replaced since (it checked only that the file existed)
        marker["outputs"] = output_sizes(plan.pass_dir(p.name))
    if launch:  # the multi-instance launch that closed it: a forced sibling share keeps it
        marker["launch"] = launch
    fs.write_bytes(plan.run.pass_marker(p.name), json.dumps(marker, indent=1, default=str).encode())


def pass_launch(plan: Plan, p: Pass) -> str | None:
    """The launch id recorded in pass ``p``'s marker under this fingerprint (None: none, or no marker)."""
    marker = read_marker(plan, p)
    return str(marker["launch"]) if marker and marker.get("launch") else None


def forget_pass(plan: Plan, p: Pass) -> None:
    fs.delete(plan.run.pass_marker(p.name))
