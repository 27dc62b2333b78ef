"""Tokenize a run's kept documents into token shards plus a manifest (``refinery tokenize``).

Without shuffling, each ``kept/<shard>.parquet`` becomes one token shard of the same name. With
``shuffle=True`` documents are shuffled globally with a fixed seed in two passes that read every
byte at most twice and never hold more than one shard in memory:

1. each kept shard is tokenized into a work shard whose documents are grouped by a random
   destination bucket (one of ``num_shards``; drawn from ``(seed, shard name)``);
2. output shard ``j`` gathers bucket ``j`` from every work shard (one contiguous range read each)
   and permutes those documents with ``(seed, j)``.

Every document lands in exactly one uniformly random output shard at a uniformly random position.
Each finished shard has a marker, so re-runs skip it; the manifest is written last.

The per-shard work runs on the executor layer (:mod:`refinery.executors`) as top-level task
functions over small task dicts: :func:`tokenize_shard_task` (one kept shard -> one token or work
shard) and :func:`gather_bucket_task` (one output bucket of the shuffle). Workers get a
:class:`~refinery.tokens.tokenizer.TokenizerSpec`, never a loaded tokenizer, and return the shard's
manifest entry; the driver decides what is already finished, and writes the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.executors.base import TASK_SUMMARY, Executor, TaskFn, summary_level
from refinery.executors.local import LocalExecutor
from refinery.io import fs, parquet
from refinery.io.runlock import OutputClaim, confirm_claim, output_guard
from refinery.rundir import PassFiles, RunDir, last_pass_refusal, pass_of_run
from refinery.tokens.format import (
    FORMAT,
    RETOKENIZE,
    SHARD_FORMAT,
    VERSION,
    ShardFile,
    TokenizerMismatchError,
    TokenShardError,
    file_sizes,
    read_marker,
    shard_damage,
    shard_uris,
    write_shard,
)
from refinery.tokens.tokenizer import (
    LoadedTokenizer,
    TokenizerSpec,
    load_tokenizer,
    remember_tokenizer,
    worker_tokenizer,
)

log = logging.getLogger("refinery.tokens")

MANIFEST = "manifest.json"


class TokenizeError(RuntimeError):
    """The run directory cannot be tokenized as asked (no kept shards, unfinished run, ...)."""


@dataclass
class TokenizeResult:
    output: str
    manifest: dict
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _check_not_a_pass(run_dir: str) -> None:
    """A pass directory of a multi-pass run (``OUT/filter``) given as the run: the last pass's
    documents are the run's ``kept/``, so it has none of its own (refused, naming the run);
    an earlier pass's ``kept/`` is what it kept before the passes after it (e.g. not deduplicated
    yet): tokenized as asked, with a warning naming the run's corpus (review h99: it was silent)."""
    of_run = pass_of_run(run_dir)
    if of_run is None:
        return
    run, pass_dir = of_run
    refusal = last_pass_refusal(run_dir, run, pass_dir)
    if refusal:
        raise TokenizeError(refusal)
    name = fs.basename(pass_dir.root)
    names = [fs.basename(p.root) for p in run.document_pass_dirs()]
    after = names[names.index(name) + 1:] if name in names else []
    log.warning("%s is the %r pass of the refinery run %s: tokenizing what that pass kept, before %s; the run's "
                "corpus is %s (give the run, %s)", run_dir, name, run.root,
                ", ".join(after) if after else "the passes after it", run.kept_dir, run.root)


def kept_shards(run_dir: str, allow_unfinished: bool = False, files: PassFiles | None = None) -> dict[str, str]:
    """``{shard name: kept parquet URI}`` of a run (its last document pass), refusing shards the
    run has not finished. ``files``: the command's listings (:class:`PassFiles`): `report` had
    listed kept/ already for the run's state, and listed it again here (h165)."""
    _check_not_a_pass(run_dir)
    run = RunDir(run_dir)
    unfinished = None if allow_unfinished else run.unfinished_last_pass()
    if unfinished:  # its kept/ is not the corpus yet: some shards, or none (found by adversarial testing)
        raise TokenizeError(f"run {run_dir} has not finished its {unfinished!r} pass (the run is still at work, or was "
                            f"stopped or failed: `refinery status {run_dir}`): finish the run (run the same "
                            "`refinery run` command again) or pass --allow-unfinished")
    last = run.document_pass_dirs()[-1]
    kept_dir = last.kept_dir
    try:
        # PassFiles lists a missing kept/ as empty: refused just below, in other words
        found = files.files(kept_dir, (".parquet",)) if files is not None else fs.list_files(kept_dir, (".parquet",))
    except fs.StorageError as exc:
        raise TokenizeError(f"{run_dir} has no kept/ directory: is it a refinery run output? ({exc})") from exc
    if not found:
        raise TokenizeError(f"no kept/*.parquet shards under {run_dir}")
    base = kept_dir if fs.is_s3(kept_dir) else fs.resolve(kept_dir)[1]  # list_files gives absolute paths
    prefix = base.rstrip("/") + "/"
    shards = {}
    for uri in found:
        rel = uri[len(prefix):] if uri.startswith(prefix) else fs.basename(uri)
        name = rel[: -len(".parquet")].replace("/", "__")
        if name in shards:  # one file's documents would be silently left out (found by adversarial testing)
            raise TokenizeError(f"kept files {shards[name]} and {uri} map to the same token shard name {name!r}: "
                                f"rename one")
        shards[name] = uri
    stats_dir = last.stats_dir
    # A run directory (run.json, or a pass recording stats or failures) as opposed to bare kept/ shards:
    # (looked at only when unfinished shards are refused: a HEAD or two on S3 that `report` made for nothing)
    if not allow_unfinished and any(fs.exists(u) for u in (RunDir(run_dir).run_json, stats_dir, last.failed_dir)):
        # The runner writes stats/<shard>.json last: without it the shard's outputs are not final
        # (e.g. its kept/ was published but its removed/ upload was refused).
        try:
            finished = {fs.basename(u)[: -len(".json")] for u in fs.list_files(stats_dir, (".json",))}
        except fs.StorageError:  # no stats/ at all: no shard finished
            finished = set()
        unfinished = sorted(set(shards) - finished)
        if unfinished:
            raise TokenizeError(f"run {run_dir} has unfinished shards (kept/ without stats/<shard>.json), "
                                f"{len(unfinished)} of {len(shards)}: {', '.join(unfinished[:5])}{' ...' if len(unfinished) > 5 else ''}; "
                                "finish the run (run the same `refinery run` command again) or pass --allow-unfinished")
    return shards


def _read_docs(uri: str, name: str) -> tuple[list, pa.Array]:
    try:
        table = parquet.read_table(uri, columns=["id", "text"])
    except parquet.ShardReadError:
        # A shard with no kept rows may have no columns at all; a foreign one may lack ids.
        table = parquet.read_table(uri)
        if table.num_rows == 0:
            return [], pa.array([], pa.string())
        if "text" not in table.column_names:
            raise parquet.ShardReadError(f"kept shard {uri} has no 'text' column (columns: {table.column_names})") from None
        if "id" not in table.column_names:  # fall back to "<shard>/<row>", like the readers do
            table = table.append_column("id", pa.array([f"{name}/{i}" for i in range(table.num_rows)], pa.string()))
    return table.column("text").to_pylist(), table.column("id").combine_chunks().cast(pa.string())


#: documents longer than this many characters are encoded in pieces cut where the tokenizer
#: splits anyway: one call on a 45 MB document took 5.4 GB (the tokenizer's per-token objects;
#: ~150 bytes per character, found by adversarial testing), pieces of 1M characters ~120 MB
LONG_DOC_CHARS = 1_000_000
#: characters each side of a candidate cut that are encoded to check it
CUT_WINDOW = 2_000
#: candidate cuts tried per piece (none checks out: the rest of the document is encoded at once)
CUT_TRIES = 32
#: where a cut may go: before a line's first character, before a space that follows a
#: non-space (the space goes with the right side, as byte-level BPE pre-tokenizes " word"), or
#: after sentence punctuation (CJK text has no spaces)
_CUT_CANDIDATE = re.compile(r"(?<=\n)(?=\S)|(?<=\S)(?= \S)|(?<=[。！？；．])(?=\S)")


def _encode(tok: LoadedTokenizer, texts: list[str], batch_size: int) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(texts), batch_size):
        batch = texts[i : i + batch_size]
        short = [t for t in batch if len(t) <= LONG_DOC_CHARS]
        # encode_batch_fast skips offset tracking; the Rust side runs the batch on all cores.
        encs = iter(tok.tokenizer.encode_batch_fast(short, add_special_tokens=False) if short else [])
        out.extend(next(encs).ids if len(t) <= LONG_DOC_CHARS else _encode_long(tok.tokenizer, t) for t in batch)
    return out


def _encode_long(tokenizer: Any, text: str) -> list[int]:
    """The ids of ``text`` as one call would give them, encoded piece by piece: each cut is a
    point where encoding the text around it in one go equals encoding the two sides apart
    (checked on ``CUT_WINDOW`` characters each side: pre-tokenizers and normalizers act
    locally), so the pieces' ids join into the whole text's. A tokenizer that prepends a space
    marker to every text (SentencePiece-style ``Prepend("▁")``) is cut at a space that the right
    side's marker stands for: the space is left out of both sides."""
    def ids(piece: str) -> list[int]:
        return tokenizer.encode_batch_fast([piece], add_special_tokens=False)[0].ids

    out: list[int] = []
    start = 0
    while len(text) - start > LONG_DOC_CHARS:
        cut = _safe_cut(ids, text, start + LONG_DOC_CHARS // 2, start + LONG_DOC_CHARS)
        if cut is None:  # no checked cut in this piece: encode the rest at once
            break
        left_end, right_start = cut
        out += ids(text[start:left_end])
        start = right_start
    return out + ids(text[start:])


def _safe_cut(ids: Any, text: str, lo: int, hi: int) -> tuple[int, int] | None:
    """``(end of the left piece, start of the right piece)`` of a checked cut in ``[lo, hi)``."""
    tried = 0
    for m in _CUT_CANDIDATE.finditer(text, lo, hi):
        i = m.start()
        if i - CUT_WINDOW < 0 or i + CUT_WINDOW + 1 > len(text):
            continue
        left, right = text[i - CUT_WINDOW:i], text[i:i + CUT_WINDOW]
        whole = ids(left + right)
        if whole == ids(left) + ids(right):
            return i, i
        if right.startswith(" ") and whole == ids(left) + ids(right[1:]):
            return i, i + 1  # the right side's prepended marker is this space
        tried += 1
        if tried >= CUT_TRIES:
            return None
    return None


def _flatten(pieces: list[list[int]], eos: int, bos: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every document as ``[BOS] tokens EOS``, concatenated, and the documents' start offsets: the
    BOS is inside its document (its ``.idx`` length counts it), as Megatron's preprocessing puts it."""
    head = () if bos is None else (bos,)
    lengths = np.fromiter((len(head) + len(p) + 1 for p in pieces), np.int64, count=len(pieces))
    offsets = np.zeros(len(pieces) + 1, np.uint64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    tokens = np.fromiter(chain.from_iterable(chain(head, p, (eos,)) for p in pieces), np.int64, count=total)
    return tokens, offsets


def _added_tokens_from_text(tok: LoadedTokenizer, tokens: np.ndarray) -> dict[str, int]:
    """``{content: occurrences}`` of the tokenizer's non-special added tokens in ``tokens``."""
    ordinary = tok.ordinary_added_tokens()
    if not ordinary or not len(tokens):
        return {}
    ids, counts = np.unique(tokens[np.isin(tokens, np.fromiter(ordinary, np.int64))], return_counts=True)
    return {ordinary[int(i)]: int(n) for i, n in zip(ids, counts)}


def _shard_rng(seed: int, *key: str | int) -> np.random.Generator:
    digest = hashlib.sha256(json.dumps([seed, *key]).encode()).digest()
    return np.random.default_rng(np.frombuffer(digest[:16], np.uint32))


def _tokenize_shard(uri: str, name: str, out_dir: str, tok: LoadedTokenizer, batch_size: int,
                    plan: dict | None) -> dict:
    """Tokenize one kept shard; with a shuffle ``plan``, group its documents by destination bucket."""
    started = time.time()
    texts, ids = _read_docs(uri, name)
    docs_read = len(texts)
    keep = [i for i, t in enumerate(texts) if t]  # null/empty text has nothing to train on: counted, not written
    texts = [texts[i] for i in keep]
    ids = ids.take(pa.array(keep, pa.int64()))
    pieces = _encode(tok, texts, batch_size)
    extra = {"source": uri, "source_digest": source_digest(uri), "eos_id": tok.eos_id, "docs_read": docs_read,
             "docs_empty": docs_read - len(keep), **_switched_off(tok.switched_off), **_bos(tok.bos_id)}
    row_groups = None
    if plan is not None:
        k = plan["num_shards"]
        bucket = _shard_rng(plan["seed"], "bucket", name).integers(0, k, len(pieces))
        order = np.argsort(bucket, kind="stable")
        pieces = [pieces[i] for i in order]
        ids = ids.take(pa.array(order, pa.int64()))
        counts = np.bincount(bucket, minlength=k).tolist()
        extra.update(plan=plan, buckets=counts)
        row_groups = counts
    tokens, offsets = _flatten(pieces, tok.eos_id, tok.bos_id)
    if len(tokens) and int(tokens.max()) >= tok.vocab_size:
        raise TokenizeError(f"tokenizer {tok.name} produced id {int(tokens.max())} >= its vocab size {tok.vocab_size}")
    added = _added_tokens_from_text(tok, tokens)
    if added:  # only then: other shards' sidecars stay as they were
        extra["added_tokens_from_text"] = added
        log.warning("tokenize [%s]: the text produced %d non-special added token(s) of tokenizer %s: %s (its file "
                    "makes them ordinary vocabulary, so their strings in web text map to them; special tokens "
                    "are always encoded as text)", name, sum(added.values()), tok.name,
                    ", ".join(f"{c!r} x{n}" for c, n in list(added.items())[:5]))
    entry = write_shard(out_dir, name, tokens.astype(tok.dtype), offsets, ids, tok.vocab_size, tok.sha256,
                        extra=extra, ids_row_groups=row_groups)
    elapsed = max(time.time() - started, 1e-9)
    log.log(summary_level(), "tokenize [%s]: %d docs (%d empty), %d tokens in %.1fs (%.0f docs/s, %.0f tokens/s)", name,
             entry["n_docs"], extra["docs_empty"], entry["n_tokens"], elapsed, docs_read / elapsed,
             entry["n_tokens"] / elapsed, extra=TASK_SUMMARY)
    return entry


def source_digest(uri: str) -> str:
    """What identifies a kept shard's content, wherever it lies: its size and a SHA-256 of its last
    64 KiB (the Parquet footer: row counts, column offsets and statistics). A copy of the same
    file matches; another run's shard or a rewritten one does not. One ranged read: on S3 one
    suffix-range GET, whose answer gives the size too (pyarrow's file made a HEAD first: one per
    shard of the tokens pass; session 48, h186)."""
    with fs.open_parquet_input(uri) as f:
        size = f.size()
        f.seek(max(size - 65536, 0))
        tail = f.read()
    return f"{size}:{hashlib.sha256(tail).hexdigest()}"


def _same_source(marker: dict, source: str) -> bool:
    """Whether the shard was made from ``source``'s current content (markers from before it was
    recorded: assumed so)."""
    return marker.get("source_digest") in (None, source_digest(source))


def _check_marker(marker: dict, tok: LoadedTokenizer, where: str, plan: dict | None = None) -> None:
    """Refuse to reuse a finished shard made with another tokenizer, EOS token or shuffle plan
    (markers from before a field was recorded are not checked on it; the input: :func:`_finished`)."""
    if marker.get("shard_format") != SHARD_FORMAT:  # a shard of the old RFTOKIDX format: not resumable
        raise TokenizeError(f"{where} holds shard {marker.get('name')} in refinery's old token format; use a fresh "
                            "--output or --force to write Megatron indexed-dataset shards")
    if marker.get("tokenizer_sha256") != tok.sha256 or marker.get("vocab_size") != tok.vocab_size:
        raise TokenizerMismatchError(
            f"{where} already holds shard {marker.get('name')} tokenized with tokenizer sha256 "
            f"{marker.get('tokenizer_sha256')} (vocab {marker.get('vocab_size')}), not {tok.name} "
            f"(sha256 {tok.sha256}, vocab {tok.vocab_size}); use a fresh --output or --force")
    if marker.get("eos_id", tok.eos_id) != tok.eos_id:
        raise TokenizerMismatchError(
            f"{where} already holds shard {marker.get('name')} with end-of-document id {marker.get('eos_id')}, "
            f"not {tok.eos_id} ({tok.eos_token!r}); use a fresh --output or --force")
    if marker.get("bos_id") != tok.bos_id:  # sidecars from before the setting: no BOS, as they were made
        raise TokenizerMismatchError(
            f"{where} already holds shard {marker.get('name')} {_bos_words(marker.get('bos_id'))}; refusing to add "
            f"shards {_bos_words(tok.bos_id, tok.bos_token)}: use a fresh --output or --force")
    if plan is not None and marker.get("plan") != plan:
        raise TokenizeError(f"{where} holds shard {marker.get('name')} from a different shuffle plan "
                            f"{marker.get('plan')} (now {plan}); use a fresh --output or --force")


def _bucket_ranges(sources: list[dict], j: int) -> list[tuple[str, int, int]]:
    """``(work shard, first doc, n docs)`` of bucket ``j`` in every work shard that has some."""
    ranges = []
    for src in sources:
        counts = src["buckets"]
        if counts[j]:
            ranges.append((src["name"], sum(counts[:j]), counts[j]))
    return ranges


def _gather_bucket(work_dir: str, ranges: list[tuple[str, int, int]], j: int, seed: int,
                   tokenizer_sha256: str) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Output shard ``j``: bucket ``j`` of every work shard (contiguous range reads), then permuted."""
    tokens, lengths, ids = [], [], []
    for name, first, n in ranges:
        shard = ShardFile(work_dir, name)
        try:
            if shard.header.tokenizer_sha256 != tokenizer_sha256:  # a stale work dir from another run
                raise TokenizerMismatchError(f"work shard {shard.uris['bin']} was tokenized with tokenizer sha256 "
                                             f"{shard.header.tokenizer_sha256}, not {tokenizer_sha256}")
            offs = shard.read_offsets(first, first + n)
            tokens.append(shard.read_tokens(int(offs[0]), int(offs[-1])))
            lengths.append(np.diff(offs))
        finally:
            shard.close()
        filesystem, path = fs.resolve(shard_uris(work_dir, name)["ids"])
        with filesystem.open_input_file(path) as f:
            ids.append(pq.ParquetFile(f).read_row_group(j, columns=["id"]).column("id").combine_chunks())
    if not tokens:
        return np.empty(0, np.uint16), np.zeros(1, np.uint64), pa.array([], pa.string())
    all_tokens = np.concatenate(tokens)
    all_lengths = np.concatenate(lengths)
    all_ids = pa.concat_arrays(ids)
    starts = np.zeros(len(all_lengths), np.int64)
    np.cumsum(all_lengths[:-1], out=starts[1:])
    perm = _shard_rng(seed, "permute", j).permutation(len(all_lengths))
    out = np.concatenate([all_tokens[s : s + n] for s, n in zip(starts[perm], all_lengths[perm])])
    offsets = np.zeros(len(perm) + 1, np.uint64)
    np.cumsum(all_lengths[perm], out=offsets[1:])
    return out, offsets, all_ids.take(pa.array(perm, pa.int64()))


# -- task functions (run by the executor, possibly in another process or on another node) ---------

def tokenize_shard_task(*, tokenizer: TokenizerSpec, out_dir: str, batch_size: int, plan: dict | None,
                        name: str, uri: str) -> dict:
    """Tokenize kept shard ``uri`` into shard ``name`` under ``out_dir`` (a work shard with a shuffle
    ``plan``); the result carries its manifest entry."""
    entry = _tokenize_shard(uri, name, out_dir, worker_tokenizer(tokenizer), batch_size, plan)
    return {"entry": entry, "tokens": entry["n_tokens"], "docs_read": entry["docs_read"]}


def gather_bucket_task(*, work_dir: str, output: str, plan: dict, totals: dict, dtype: str, vocab_size: int,
                       tokenizer_sha256: str, name: str, j: int, ranges: list[tuple[str, int, int]],
                       switched_off: tuple[str, ...] = (), bos_id: int | None = None) -> dict:
    """Shuffle pass 2: write output shard ``name`` from bucket ``j`` of the work shards (``ranges``).

    Needs no tokenizer: the work shards hold token ids already."""
    t0 = time.time()
    tokens, offsets, ids = _gather_bucket(work_dir, ranges, j, plan["seed"], tokenizer_sha256)
    entry = write_shard(output, name, tokens.astype(np.dtype(dtype)), offsets, ids, vocab_size, tokenizer_sha256,
                        extra={"plan": plan, "source_totals": totals, **_switched_off(switched_off), **_bos(bos_id)})
    log.log(summary_level(), "shuffle [%s]: %d docs, %d tokens gathered from %d shards in %.1fs", name,
             entry["n_docs"], entry["n_tokens"], len(ranges), time.time() - t0, extra=TASK_SUMMARY)
    return {"entry": entry, "tokens": entry["n_tokens"]}


# -- the driver ---------------------------------------------------------------------------------

def _absolute(uri: str) -> str:
    """What tasks get: a worker may run in another directory than this process (``~`` expanded, as
    everywhere: a quoted ``-o "~/tok"`` wrote its manifest to ``$HOME/tok`` and its shards to ``./~/tok``)."""
    return uri if fs.is_s3(uri) else os.path.abspath(os.path.expanduser(uri))


def _input_shards(run_dir: str, shards: dict[str, str] | None, allow_unfinished: bool) -> dict[str, str]:
    if shards is None:
        return kept_shards(run_dir, allow_unfinished)
    if not shards:
        raise TokenizeError(f"no kept shards given to tokenize (run {run_dir})")
    bad = sorted(n for n in shards if not n or "/" in n)  # names become file names in the output
    if bad:
        raise TokenizeError(f"shard names must be plain file names: {bad[:5]}")
    return {name: _absolute(uri) for name, uri in shards.items()}


def _manifest_conflict(output: str, tok: LoadedTokenizer) -> str | None:
    """Why the tokens already under ``output`` cannot be mixed with ``tok``'s, or None."""
    manifest_uri = fs.join(output, MANIFEST)
    data = fs.read_bytes_if_any(manifest_uri)
    if data is None:
        return None
    # not checked for consistency: rerunning the command is how a damaged manifest is rewritten (a review)
    old = parse_manifest(data, manifest_uri, consistent=False)["tokenizer"]
    if old.get("sha256") != tok.sha256:
        return (f"{output} already holds tokens from tokenizer {old.get('id')} (sha256 {old.get('sha256')}); "
                f"refusing to mix in {tok.name} (sha256 {tok.sha256})")
    if old.get("eos_id", tok.eos_id) != tok.eos_id:
        return (f"{output} already holds tokens ending documents with {old.get('eos_token')!r} (id "
                f"{old.get('eos_id')}); refusing to mix in {tok.eos_token!r} (id {tok.eos_id})")
    if old.get("bos_id") != tok.bos_id:
        return (f"{output} already holds tokens {_bos_words(old.get('bos_id'), old.get('bos_token'))}; refusing to "
                f"mix in tokens {_bos_words(tok.bos_id, tok.bos_token)}")
    return None


def _finished(out_dir: str, names: list[str], tok: LoadedTokenizer, plan: dict | None, force: bool,
              sources: dict[str, str] | None = None, redo_stale: bool = False) -> dict[str, dict]:
    """Markers of the shards already finished under ``out_dir`` (checked against ``tok``/``plan``
    and, given ``sources`` (name -> kept shard URI), against the content they were made from).
    A shard made from other content is refused, or with ``redo_stale`` (a pass of a plan, which
    already decided the pass must run) left out, so it is tokenized again."""
    if force:
        return {}
    found = {}
    # one listing (with the sizes the damage check needs), then a read of the sidecars it shows:
    # a read per shard was a GET, a 404, per shard of a fresh pass on S3 (session 48, h186)
    sizes = file_sizes(out_dir, (".bin", ".idx", ".parquet", ".json"))
    for name in names:
        marker = read_marker(out_dir, name) if f"{name}.json" in sizes else None
        if marker is None:
            continue
        damage = shard_damage(marker, sizes)
        if damage:  # files deleted or cut short after the shard finished: redo it rather than skip it
            log.warning("tokenize [%s]: %s, redone", name, damage)  # as a document pass's (review h111)
            continue
        source = (sources or {}).get(name)
        if source is not None and not _same_source(marker, source):
            if redo_stale:
                log.info("tokenize [%s]: made from another version of %s, redone", name, source)
                continue
            raise TokenizeError(f"{out_dir} holds shard {name} tokenized from {marker.get('source')}, whose content "
                                f"differs from {source} now (another run, or the run changed since); use a fresh "
                                f"--output or --force")
        _check_marker(marker, tok, out_dir, plan)
        found[name] = marker
    return found


def _run_tasks(executor: Executor, fn: TaskFn, tasks: list[dict], label: str, shared: dict,
               finished: dict[str, dict], names: list[str], result: TokenizeResult) -> list[dict]:
    """Run the unfinished shards' tasks; every shard's entry, in ``names`` order."""
    todo = [t["name"] for t in tasks]
    results = executor.run(fn, tasks, label=label, names=todo, units="tokens", shared=shared)
    entries = {**finished, **{name: r["entry"] for name, r in zip(todo, results)}}
    result.done.extend(todo)
    result.skipped.extend(n for n in names if n in finished)
    return [entries[n] for n in names]


def _tokenize_pass(executor: Executor, tok: LoadedTokenizer, shards: dict[str, str], out_dir: str,
                   plan: dict | None, batch_size: int, force: bool, label: str, result: TokenizeResult,
                   redo_stale: bool = False) -> list[dict]:
    """Every kept shard tokenized into ``out_dir``, skipping finished ones before submitting anything."""
    names = sorted(shards)
    finished = _finished(out_dir, names, tok, plan, force, shards, redo_stale)
    tasks = [{"name": n, "uri": shards[n]} for n in names if n not in finished]
    shared = {"tokenizer": tok.spec(), "out_dir": _absolute(out_dir), "batch_size": batch_size, "plan": plan}
    return _run_tasks(executor, tokenize_shard_task, tasks, label, shared, finished, names, result)


def _shuffled(executor: Executor, tok: LoadedTokenizer, shards: dict[str, str], output: str, work: str,
              plan: dict, batch_size: int, force: bool, result: TokenizeResult) -> list[dict]:
    """The two shuffle passes; the output shards' entries."""
    final_names = [f"part-{j:05d}" for j in range(plan["num_shards"])]
    finals = _finished(output, final_names, tok, plan, force)
    if len(finals) == len(final_names):  # pass 2 finished earlier: pass 1 is not needed
        result.skipped.extend(final_names)
        return [finals[n] for n in final_names]
    sources = _tokenize_pass(executor, tok, shards, work, plan, batch_size, force, "tokenize:pass1", result,
                             redo_stale=True)  # the plan's sources_sha256 covers their content
    totals = {"docs_read": sum(s["docs_read"] for s in sources), "docs_empty": sum(s["docs_empty"] for s in sources)}
    tasks = [{"name": n, "j": j, "ranges": _bucket_ranges(sources, j)}
             for j, n in enumerate(final_names) if n not in finals]
    shared = {"work_dir": _absolute(work), "output": _absolute(output), "plan": plan, "totals": totals,
              "dtype": tok.dtype.str, "vocab_size": tok.vocab_size, "tokenizer_sha256": tok.sha256,
              "switched_off": tok.switched_off, "bos_id": tok.bos_id}
    return _run_tasks(executor, gather_bucket_task, tasks, "tokenize:shuffle", shared, finals, final_names, result)


def _delete_work(work: str, names: list[str], work_dir: str | None) -> None:
    for name in names:
        for uri in shard_uris(work, name).values():
            fs.delete(uri)
    if work_dir is None and not fs.is_s3(work):
        try:
            os.rmdir(fs.resolve(work)[1])
        except OSError:
            pass  # not empty (someone else's files) or already gone


def tokenize_run(
    run_dir: str,
    output: str,
    tokenizer: str | LoadedTokenizer = "gpt2",
    *,
    shuffle: bool = False,
    seed: int = 0,
    num_shards: int | None = None,
    batch_size: int = 1000,
    work_dir: str | None = None,
    keep_work: bool = False,
    force: bool = False,
    allow_unfinished: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
    shards: dict[str, str] | None = None,
    owns_executor: bool = False,
) -> TokenizeResult:
    """Tokenize ``run_dir/kept/*.parquet`` into token shards + ``manifest.json`` under ``output``.

    ``shards`` (name -> kept Parquet URI) gives the input shards explicitly instead (no check
    against ``run_dir/stats``: the caller knows they are finished); ``run_dir`` is then only recorded.
    ``executor`` runs the per-shard tasks (default: ``LocalExecutor(1)``, inline, showing progress
    if ``progress``); it is not closed here, unless ``owns_executor``: then it is closed (stopped,
    on Ctrl-C or SIGTERM) before the output's lock or claim is let go, so no worker outlives them.
    Shards whose marker exists are skipped before anything is submitted. ``work_dir`` (shuffle only) holds the pass-1 shards; point it at fast local disk
    when ``output`` is on S3 and the corpus is large. It is deleted once the manifest is written
    unless ``keep_work``. A failed shard raises :class:`~refinery.executors.TaskError` naming it.
    """
    fs.validate_uri(output)
    explicit = shards is not None
    if not explicit:
        _check_output_place(run_dir, output)
    tok = tokenizer if isinstance(tokenizer, LoadedTokenizer) else load_tokenizer(tokenizer)
    remember_tokenizer(tok)  # tasks run inline reuse it rather than loading it again
    shards = _input_shards(run_dir, shards, allow_unfinished)
    conflict = None if force else _manifest_conflict(output, tok)
    if conflict and not explicit:
        raise TokenizerMismatchError(f"{conflict}: use a fresh --output or --force")
    if not (force or explicit):  # a pass of a plan: its fingerprint says what the tokenizer asked for
        _check_switched_off(output, tok, fs.join(output, "_work") if work_dir is None else work_dir)
    # a pass of a plan owns its tokens/: tokens another tokenizer left there (a standalone
    # `refinery tokenize` wrote into RUN/tokens) are all redone (found by adversarial testing)
    force = force or conflict is not None
    owned = executor is None or owns_executor
    if executor is None:
        executor = LocalExecutor(1, progress=progress)  # inline: this process, as before
    # standalone (`refinery tokenize`): one at a time per output, like runs; a pass of a plan
    # (explicit shards) writes under the run directory whose lock the plan holds
    # writing into a local run directory (RUN/tokens): hold the run's lock too, or a standalone
    # tokenize ran beside the recipe's tokens pass into the same files (found by adversarial testing)
    inside = not explicit and fs.canonical(output).startswith(fs.canonical(run_dir).rstrip("/") + "/")
    # (on S3, which has no lock: a claim of the output, OUTPUT/.claim, see refinery/io/runlock.py)
    settings = {"input": run_dir, "tokenizer": tok.name, "shuffle": shuffle, "seed": seed, "num_shards": num_shards,
                "force": force}
    # (on S3 the run directory's claim: refused while a run of it is alive, and vice versa). An
    # executor owned here is closed (stopped, on Ctrl-C) inside them: let go after, no worker outlives them
    with (output_guard(run_dir, "tokenize", settings) if inside else nullcontext()), \
            (nullcontext() if explicit else output_guard(output, "tokenize", settings)) as claim, \
            (executor if owned else nullcontext()):
        return _tokenize(run_dir, output, tok, shards, executor, shuffle=shuffle, seed=seed,
                         num_shards=num_shards, batch_size=batch_size, work_dir=work_dir, keep_work=keep_work,
                         force=force, redo_stale=explicit, claim=claim)


def _bos(bos_id: int | None) -> dict[str, int]:
    """A shard sidecar's record of the BOS id before each document, when there is one (sidecars
    without it stay as they were: no BOS)."""
    return {} if bos_id is None else {"bos_id": bos_id}


def _bos_words(bos_id: int | None, bos_token: str | None = None) -> str:
    """How a refusal names a BOS setting: 'with no BOS' or 'beginning documents with '<s>' (id 1)'."""
    if bos_id is None:
        return "with no BOS before documents"
    return f"beginning documents with {bos_token!r} (id {bos_id})" if bos_token else f"beginning documents with id {bos_id}"


def _switched_off(what: tuple[str, ...] | list[str]) -> dict[str, list[str]]:
    """A shard sidecar's record of the tokenizer settings switched off, when there are any (other
    tokenizers' sidecars stay as they were)."""
    return {"switched_off": list(what)} if what else {}


#: what a refinery before 0.8.1 did with each setting a tokenizer.json asks for
_EFFECTS = {"padding": "pad ids inside documents", "truncation": "documents cut at its max_length"}


def _check_switched_off(output: str, tok: LoadedTokenizer, work: str) -> None:
    """Refuse to resume token shards made without ``tok.switched_off`` recorded: a refinery
    before 0.8.1 applied the padding and truncation a tokenizer.json asks for (documents cut at
    its max_length, pad ids inside documents), so a standalone ``refinery tokenize`` resumed
    into its output kept those shards and added untruncated ones (``refinery run`` refuses such
    a tokens pass by its fingerprint, which has ``switched_off``). Shards of 0.8.1 made before
    the record existed are refused too: nothing tells them apart, and --force only costs time."""
    if not tok.switched_off:
        return
    for directory in (output, work):
        for file in sorted(file_sizes(directory, (".json",))):
            if file == MANIFEST:
                continue
            try:
                marker = read_marker(directory, file[: -len(".json")])
            except TokenShardError:
                continue  # not a sidecar: the other checks name it
            if not isinstance(marker, dict) or marker.get("shard_format") != SHARD_FORMAT \
                    or marker.get("tokenizer_sha256") != tok.sha256:
                continue  # another tokenizer's or format's shards: refused by the other checks
            if marker.get("switched_off") != list(tok.switched_off):
                what = " and ".join(tok.switched_off)
                effect = ", ".join(_EFFECTS[k] for k in tok.switched_off)
                # not "tokenized with": 0.8.1 switched it off too and recorded nothing (its tokens are
                # this refinery's), so the line must not tell its users their tokens differ
                raise TokenizerMismatchError(
                    f"{directory} holds shard {marker.get('name')} with no record that the {what} {tok.name} asks "
                    f"for was switched off: refinery 0.8.0 and earlier applied it ({effect}), 0.8.1 switched it off "
                    f"and recorded nothing, so its tokens may differ from this refinery's: use --force to redo "
                    f"every shard, or a fresh --output")


def _check_output_place(run_dir: str, output: str) -> None:
    """Token shards go beside the documents they come from, never over them: not into the run
    directory itself (its root would then hold a second manifest beside the run's own files) nor
    into its ``kept/``. ``RUN/tokens`` (where the recipe's own token pass writes) is fine."""
    run, out, kept = fs.canonical(run_dir), fs.canonical(output), fs.canonical(fs.join(run_dir, "kept"))
    if out in (run, kept) or out.startswith(kept + "/"):
        where = f"the run directory {run_dir} itself" if out == run else f"the kept/ documents of {run_dir}"
        raise ValueError(f"token output {output} would be written into {where}: "
                         f"choose e.g. {fs.join(run_dir, 'tokens')} or a directory outside it")


def _manifest(run_dir: str, tok: LoadedTokenizer, plan: dict | None, names: list[str], entries: list[dict],
              source: dict) -> dict:
    n_docs = sum(e["n_docs"] for e in entries)
    # Nothing lost: every kept document is either in a shard or counted as empty.
    if source["docs_read"] != n_docs + source["docs_empty"]:
        raise TokenizeError(f"document accounting failed: read {source['docs_read']}, wrote {n_docs}, "
                            f"empty {source['docs_empty']}")
    return {
        "format": FORMAT,
        "version": VERSION,
        "shard_format": SHARD_FORMAT,
        "tokenizer": tok.describe(),
        "dtype": tok.dtype.name,
        "shuffle": plan,
        # the run as an absolute path: a rerun spelling it differently writes the same manifest
        # (its SHA-256 is the loader's dataset fingerprint, which training checkpoints record)
        "source": {"run_dir": fs.absolute(run_dir), "kept_shards": names, **source},
        "totals": {"n_shards": len(entries), "n_docs": n_docs, "n_tokens": sum(e["n_tokens"] for e in entries)},
        "shards": [{k: v for k, v in e.items()
                    if k not in ("plan", "source_totals", "buckets", "switched_off", "added_tokens_from_text")}
                   for e in entries],
    }


def _tokenize(run_dir: str, output: str, tok: LoadedTokenizer, shards: dict[str, str], executor: Executor, *,
              shuffle: bool, seed: int, num_shards: int | None, batch_size: int, work_dir: str | None,
              keep_work: bool, force: bool, redo_stale: bool, claim: OutputClaim | None = None) -> TokenizeResult:
    names = sorted(shards)
    result = TokenizeResult(output, {})
    started = time.time()
    plan = None
    k = len(names) if num_shards is None else num_shards  # 0 is an error, not "the default"
    if shuffle and k < 1:
        raise TokenizeError(f"num_shards must be >= 1, got {k}")
    _clear_foreign_shards(output, [f"part-{j:05d}" for j in range(k)] if shuffle else names, force or redo_stale)
    if shuffle:
        # the sources' names and contents: final shards of another input are not reused
        sources = "\n".join(f"{n}\t{source_digest(shards[n])}" for n in names)
        plan = {"seed": seed, "num_shards": k, "sources_sha256": hashlib.sha256(sources.encode()).hexdigest()}
        work = work_dir or fs.join(output, "_work")
        entries = _shuffled(executor, tok, shards, output, work, plan, batch_size, force, result)
        source = dict(entries[0]["source_totals"]) if entries else {"docs_read": 0, "docs_empty": 0}
    else:
        entries = _tokenize_pass(executor, tok, shards, output, None, batch_size, force, "tokenize", result,
                                 redo_stale=redo_stale)
        source = {"docs_read": sum(e["docs_read"] for e in entries), "docs_empty": sum(e["docs_empty"] for e in entries)}

    manifest = _manifest(run_dir, tok, plan, names, entries, source)
    if not result.done:  # nothing tokenized now: the tokens' provenance is the earlier run's (its
        # tokenizer path as spelled then, its tokenizers version), not this process's
        earlier = _earlier_tokenizer(output, tok)
        if earlier is not None:
            manifest["tokenizer"] = earlier
    confirm_claim(claim)  # S3: still this command's output (not claimed by one started since)
    fs.write_bytes(fs.join(output, MANIFEST), json.dumps(manifest, indent=1).encode())
    if plan is not None and not keep_work:
        _delete_work(work, names, work_dir)
    elapsed = max(time.time() - started, 1e-9)
    log.info("tokenize %s -> %s: %d shards (%d tasks run, %d skipped), %d docs, %d tokens, %.0f tokens/s",
             run_dir, output, len(entries), len(result.done), len(result.skipped), manifest["totals"]["n_docs"],
             manifest["totals"]["n_tokens"], manifest["totals"]["n_tokens"] / elapsed)
    result.manifest = manifest
    return result


def _earlier_tokenizer(output: str, tok: LoadedTokenizer) -> dict | None:
    """The ``tokenizer`` entry of the manifest already in ``output`` when it names ``tok``'s file
    (same SHA-256), else None."""
    uri = fs.join(output, MANIFEST)
    try:
        old = parse_manifest(fs.read_bytes(uri), uri)["tokenizer"]
    except (fs.StorageError, TokenShardError):
        return None
    return old if old.get("sha256") == tok.sha256 and old.get("bos_id") == tok.bos_id else None


def _clear_foreign_shards(output: str, expected: list[str], replace: bool) -> None:
    """Token shards in ``output`` that this tokenization will not write (another layout: shuffled
    into 3 shards, then 2, or unshuffled; or another run's) are refused, or with ``replace``
    (``--force``, or a pass of a plan, which owns its tokens/) deleted. They stayed beside the new
    shards, all with valid sidecars, and a ``--data-path`` built from ``ls *.bin`` trained on
    every document twice (found by adversarial testing)."""
    candidates = sorted({f[: -len(".json")] for f in file_sizes(output, (".json",)) if f != MANIFEST} - set(expected))
    foreign = []
    for name in candidates:
        try:
            marker = read_marker(output, name)
        except TokenShardError:
            marker = None
        if isinstance(marker, dict) and marker.get("shard_format") == SHARD_FORMAT:
            foreign.append(name)
    if not foreign:
        return
    if not replace:
        raise TokenizeError(f"{output} holds token shards this tokenization does not write ({', '.join(foreign[:3])}"
                            f"{' ...' if len(foreign) > 3 else ''}: another shard layout or another run's); use "
                            f"--force to replace them, or a fresh --output")
    for name in foreign:
        for uri in (shard_uris(output, name)[k] for k in ("marker", "bin", "idx", "ids")):  # the sidecar first
            fs.delete(uri)
    log.info("tokenize: removed %d token shard(s) of another layout from %s", len(foreign), output)


def parse_manifest(data: bytes, uri: str, consistent: bool = True) -> dict:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise TokenShardError(f"corrupt token manifest {uri}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TokenShardError(f"{uri} is not a refinery token manifest")
    if manifest.get("version") == 1:
        raise TokenShardError(f"{uri} is a token output in refinery's old RFTOKIDX format, no longer read: {RETOKENIZE}")
    if manifest.get("version") != VERSION:
        raise TokenShardError(f"{uri} has token format version {manifest.get('version')}; this refinery reads {VERSION}")
    tokenizer, shards = manifest.get("tokenizer"), manifest.get("shards")
    problem = ("no tokenizer object" if not isinstance(tokenizer, dict)
               else f"its tokenizer lacks {sorted({'sha256', 'vocab_size', 'eos_id'} - set(tokenizer))}"
               if not {"sha256", "vocab_size", "eos_id"} <= set(tokenizer)
               else "no dtype" if not isinstance(manifest.get("dtype"), str)
               else "no list of shards" if not isinstance(shards, list)
               else "a shard entry without a name" if not all(isinstance(e, dict) and e.get("name") for e in shards)
               else None)
    if problem:  # a KeyError naming a key, and no file, was all a user saw (found by adversarial testing)
        raise TokenShardError(f"corrupt token manifest {uri}: {problem}")
    problems = manifest_inconsistencies(manifest) if consistent else []
    if problems:  # a loader trusted these and read a shard twice per epoch (found by testing the loader)
        raise TokenShardError(f"inconsistent token manifest {uri}: {'; '.join(problems)} (retokenize to rewrite it)")
    return manifest


def resolve_token_dir(uri: str) -> str:
    """``uri`` itself, or its ``tokens/`` when ``uri`` is a run directory of the whole recipe (whose
    token pass writes there) and holds no manifest of its own."""
    try:
        if fs.basename(uri) == MANIFEST and _is_file(uri):
            # the manifest itself (as Megatron takes file paths): it was read as a directory and
            # refused as "no token manifest at .../manifest.json/manifest.json" (h129)
            return uri.rstrip("/").rsplit("/", 1)[0] if "/" in uri.rstrip("/") else "."
        if not fs.exists(fs.join(uri, MANIFEST)) and (fs.exists(fs.join(uri, "tokens", MANIFEST))
                                                      or fs.exists(fs.join(uri, fs.RUN_MARKER))):
            return fs.join(uri, "tokens")
    except OSError as exc:
        # pyarrow's raw text about a key, no s3:// and no word of credentials or the endpoint, was
        # what a training script calling TokenLoader saw for wrong credentials or a silent endpoint
        # (the CLI explains it at its top; the loader has no top; found by trying the loader, h129)
        raise fs.StorageError(fs.explain_s3_failure(str(exc)) or f"cannot open the token directory {uri}: {exc}") from None
    return uri


def data_path_prefixes(token_dir: str) -> tuple[list[tuple[str, int]], list[str]]:
    """``([(Megatron data-path prefix, tokens)], [names of empty shards])`` of a token directory, in
    manifest order: ``TOKEN_DIR/NAME`` of every shard that holds a document. An empty shard (a kept
    shard with nothing left, a shuffle bucket with no document) is left out: Megatron cannot read it
    (megatron-core 0.16: its 0-byte ``.bin`` cannot be mmapped, and read without mmap a dataset of no
    document fails ``GPTDataset``, or hangs it in ``_get_num_epochs`` when weighted; session 45).
    A listed shard whose files are missing or cut short is a TokenShardError naming the file."""
    manifest = load_manifest(token_dir)
    sizes = file_sizes(token_dir)
    prefixes, empty = [], []
    for entry in manifest["shards"]:
        damage = shard_damage(entry, sizes)
        if damage:  # a prefix Megatron would fail on, or read short
            raise TokenShardError(f"token shard {fs.join(token_dir, entry['name'])}: {damage} (`refinery tokenize` "
                                  "again redoes it)")
        if entry["n_docs"] > 0:
            prefixes.append((fs.join(token_dir, entry["name"]), int(entry["n_tokens"])))
        else:
            empty.append(entry["name"])
    return prefixes, empty


def _is_file(uri: str) -> bool:
    import pyarrow.fs as pafs

    filesystem, path = fs.resolve(uri)
    return filesystem.get_file_info(path).type == pafs.FileType.File


def read_manifest_bytes(output: str) -> tuple[bytes, str]:
    uri = fs.join(output, MANIFEST)
    try:
        return fs.read_bytes(uri), uri
    except fs.StorageError as exc:
        refused = fs.explain_s3_failure(str(exc))
        if refused:  # S3 said no (credentials): "no token manifest, run tokenize first" sent users astray
            raise fs.StorageError(refused) from None
        run = output.rstrip("/").rsplit("/", 1)[0] if output.rstrip("/").endswith("/tokens") else None
        if run and fs.exists(fs.join(run, fs.RUN_MARKER)):
            # a run directory's tokens (it was pointed at RUN/manifest.json and told to tokenize)
            from refinery.rundir import RunDir

            plan = RunDir(run).recorded_plan() or {}
            if not any(p.get("kind") == "tokenize" for p in plan.get("passes", []) if isinstance(p, dict)):
                raise TokenShardError(f"no token manifest at {uri}: the run {run} has no tokens pass (its config has "
                                      f"no `tokenize:`); make them with `refinery tokenize {run} OUT`") from exc
            raise TokenShardError(f"no token manifest at {uri}: the tokens pass of the run {run} has not finished "
                                  f"(`refinery status {run}`); run its `refinery run` command again") from exc
        if not fs.file_exists(uri):  # said plainly: pyarrow's "Failed to open local file ... [errno 2]" followed
            raise TokenShardError(f"no token manifest at {uri}{fs.missing_run_hint(output)}: is {output} a token "
                                  f"directory written by `refinery tokenize`?") from None
        raise TokenShardError(f"cannot read the token manifest {uri}: {fs.plain_reason(exc)}") from exc


def load_manifest(output: str) -> dict:
    return parse_manifest(*read_manifest_bytes(output))


def manifest_inconsistencies(manifest: dict) -> list[str]:
    """What makes a token manifest disagree with itself, without reading a shard: a shard listed
    twice, totals that are not the sums, an EOS id outside the vocabulary."""
    from collections import Counter

    problems: list[str] = []
    shards = manifest.get("shards", [])
    twice = sorted(n for n, k in Counter(str(e.get("name")) for e in shards).items() if k > 1)
    if twice:
        problems.append(f"manifest lists shard(s) {twice} more than once")
    totals = manifest.get("totals", {})
    sums = {"n_shards": len(shards), "n_docs": sum(e.get("n_docs", 0) for e in shards),
            "n_tokens": sum(e.get("n_tokens", 0) for e in shards)}
    for key, value in sums.items():
        if totals.get(key) != value:
            problems.append(f"manifest totals.{key} is {totals.get(key)}, its shards sum to {value}")
    tokenizer = manifest.get("tokenizer", {})
    eos, vocab = tokenizer.get("eos_id"), tokenizer.get("vocab_size")
    if not isinstance(eos, int) or not isinstance(vocab, int) or not 0 <= eos < vocab:
        problems.append(f"manifest tokenizer eos_id {eos!r} is not an id of its vocabulary of {vocab!r}")
    bos = tokenizer.get("bos_id")
    if bos is not None and (not isinstance(bos, int) or not isinstance(vocab, int) or not 0 <= bos < vocab or bos == eos):
        problems.append(f"manifest tokenizer bos_id {bos!r} is not an id of its vocabulary of {vocab!r} other than EOS")
    return problems


def manifest_problems(manifest: dict, token_dir: str) -> list[str]:
    """What makes a token manifest disagree with itself or with its shards' sidecars: a shard listed
    twice, file names that are not the shard's, totals that are not the sums, an EOS id outside the
    vocabulary, an ids file whose row count is not the shard's documents (``verify-tokens``)."""
    import pyarrow.parquet as pq

    from collections import Counter

    problems = manifest_inconsistencies(manifest)
    shards = manifest.get("shards", [])
    for e in shards:
        uris = shard_uris(token_dir, str(e.get("name")))
        for kind in ("bin", "idx", "ids"):
            if e.get(kind) != fs.basename(uris[kind]):
                problems.append(f"manifest entry {e.get('name')}: {kind} {e.get(kind)!r} is not {fs.basename(uris[kind])}")
    for e in shards:
        uris = shard_uris(token_dir, str(e.get("name")))
        try:
            filesystem, path = fs.resolve(uris["ids"])
            with filesystem.open_input_file(path) as f:
                rows = pq.ParquetFile(f).metadata.num_rows
        except Exception as exc:  # noqa: BLE001 - missing or unreadable: name the file
            problems.append(f"{uris['ids']}: unreadable ({exc})")
            continue
        if rows != e.get("n_docs"):
            problems.append(f"{uris['ids']}: {rows} ids for {e.get('n_docs')} documents")
        marker = read_marker(token_dir, str(e.get("name")))
        if marker is not None and any(marker.get(k) != e.get(k) for k in ("n_docs", "n_tokens", "bin_sha256", "idx_sha256")):
            problems.append(f"{uris['marker']}: the shard's sidecar disagrees with its manifest entry")
    return problems

