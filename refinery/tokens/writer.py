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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from refinery.io import fs, parquet
from refinery.tokens.format import (
    FORMAT,
    VERSION,
    ShardFile,
    TokenizerMismatchError,
    TokenShardError,
    read_marker,
    shard_uris,
    write_shard,
)
from refinery.tokens.tokenizer import LoadedTokenizer, load_tokenizer

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


def kept_shards(run_dir: str, allow_unfinished: bool = False) -> dict[str, str]:
    """``{shard name: kept parquet URI}`` of a run, refusing shards the run has not finished."""
    kept_dir = fs.join(run_dir, "kept")
    try:
        files = fs.list_files(kept_dir, (".parquet",))
    except fs.StorageError as exc:
        raise TokenizeError(f"{run_dir} has no kept/ directory: is it a refinery run output? ({exc})") from exc
    if not files:
        raise TokenizeError(f"no kept/*.parquet shards under {run_dir}")
    base = kept_dir if fs.is_s3(kept_dir) else fs.resolve(kept_dir)[1]  # list_files gives absolute paths
    prefix = base.rstrip("/") + "/"
    shards = {}
    for uri in files:
        rel = uri[len(prefix):] if uri.startswith(prefix) else fs.basename(uri)
        shards[rel[: -len(".parquet")].replace("/", "__")] = uri
    stats_dir = fs.join(run_dir, "stats")
    if not allow_unfinished and fs.exists(stats_dir):
        # The runner writes stats/<shard>.json last: without it the shard's outputs are not final.
        finished = {fs.basename(u)[: -len(".json")] for u in fs.list_files(stats_dir, (".json",))}
        unfinished = sorted(set(shards) - finished)
        if unfinished:
            raise TokenizeError(f"run {run_dir} has unfinished shards (kept/ without stats/): {unfinished[:5]}"
                                f"{' ...' if len(unfinished) > 5 else ''}; finish the run or pass allow_unfinished")
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


def _encode(tok: LoadedTokenizer, texts: list[str], batch_size: int) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(texts), batch_size):
        # encode_batch_fast skips offset tracking; the Rust side runs the batch on all cores.
        encs = tok.tokenizer.encode_batch_fast(texts[i : i + batch_size], add_special_tokens=False)
        out.extend(e.ids for e in encs)
    return out


def _flatten(pieces: list[list[int]], eos: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(p) + 1 for p in pieces), np.int64, count=len(pieces))
    offsets = np.zeros(len(pieces) + 1, np.uint64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    tokens = np.fromiter(chain.from_iterable(chain(p, (eos,)) for p in pieces), np.int64, count=total)
    return tokens, offsets


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
    extra = {"source": uri, "docs_read": docs_read, "docs_empty": docs_read - len(keep)}
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
    tokens, offsets = _flatten(pieces, tok.eos_id, tok.dtype)
    if len(tokens) and int(tokens.max()) >= tok.vocab_size:
        raise TokenizeError(f"tokenizer {tok.name} produced id {int(tokens.max())} >= its vocab size {tok.vocab_size}")
    entry = write_shard(out_dir, name, tokens.astype(tok.dtype), offsets, ids, tok.vocab_size, tok.sha256,
                        extra=extra, ids_row_groups=row_groups)
    elapsed = max(time.time() - started, 1e-9)
    log.info("tokenize [%s]: %d docs (%d empty), %d tokens in %.1fs (%.0f docs/s, %.0f tokens/s)", name,
             entry["n_docs"], extra["docs_empty"], entry["n_tokens"], elapsed, docs_read / elapsed,
             entry["n_tokens"] / elapsed)
    return entry


def _check_marker(marker: dict, tok: LoadedTokenizer, where: str, plan: dict | None = None) -> None:
    if marker.get("tokenizer_sha256") != tok.sha256 or marker.get("vocab_size") != tok.vocab_size:
        raise TokenizerMismatchError(
            f"{where} already holds shard {marker.get('name')} tokenized with tokenizer sha256 "
            f"{marker.get('tokenizer_sha256')} (vocab {marker.get('vocab_size')}), not {tok.name} "
            f"(sha256 {tok.sha256}, vocab {tok.vocab_size}); use a fresh --output or --force")
    if plan is not None and marker.get("plan") != plan:
        raise TokenizeError(f"{where} holds shard {marker.get('name')} from a different shuffle plan "
                            f"{marker.get('plan')} (now {plan}); use a fresh --output or --force")


def _gather_bucket(work_dir: str, sources: list[dict], j: int, seed: int) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Output shard ``j``: bucket ``j`` of every work shard (contiguous range reads), then permuted."""
    tokens, lengths, ids = [], [], []
    for src in sources:
        counts = src["buckets"]
        first, n = sum(counts[:j]), counts[j]
        if n == 0:
            continue
        shard = ShardFile(work_dir, src["name"])
        try:
            offs = shard.read_offsets(first, first + n)
            tokens.append(shard.read_tokens(int(offs[0]), int(offs[-1])))
            lengths.append(np.diff(offs))
        finally:
            shard.close()
        filesystem, path = fs.resolve(shard_uris(work_dir, src["name"])["ids"])
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


def _progress(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, unit="shard", desc=desc, disable=not enabled, dynamic_ncols=True)


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
) -> TokenizeResult:
    """Tokenize ``run_dir/kept/*.parquet`` into token shards + ``manifest.json`` under ``output``.

    ``work_dir`` (shuffle only) holds the pass-1 shards; point it at fast local disk when ``output``
    is on S3 and the corpus is large. It is deleted once the manifest is written unless ``keep_work``.
    """
    fs.validate_uri(output)
    tok = tokenizer if isinstance(tokenizer, LoadedTokenizer) else load_tokenizer(tokenizer)
    shards = kept_shards(run_dir, allow_unfinished)
    names = sorted(shards)
    manifest_uri = fs.join(output, MANIFEST)
    if not force and fs.exists(manifest_uri):
        old = json.loads(fs.read_bytes(manifest_uri))
        if old.get("tokenizer", {}).get("sha256") != tok.sha256:
            raise TokenizerMismatchError(
                f"{output} already holds tokens from tokenizer {old.get('tokenizer', {}).get('id')} "
                f"(sha256 {old.get('tokenizer', {}).get('sha256')}); refusing to mix in {tok.name} "
                f"(sha256 {tok.sha256}): use a fresh --output or --force")
    result = TokenizeResult(output, {})
    started = time.time()
    plan = None
    if shuffle:
        k = num_shards or len(names)
        if k < 1:
            raise TokenizeError(f"num_shards must be >= 1, got {k}")
        plan = {"seed": seed, "num_shards": k,
                "sources_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()}
        work = work_dir or fs.join(output, "_work")
        final_names = [f"part-{j:05d}" for j in range(k)]
    else:
        work = output
        final_names = names

    def pass_one(out_dir: str, shard_plan: dict | None, label: str) -> list[dict]:
        entries = []
        bar = _progress(len(names), f"refinery[{label}]", progress)
        for name in names:
            marker = None if force else read_marker(out_dir, name)
            if marker is not None:
                _check_marker(marker, tok, out_dir, shard_plan)
                result.skipped.append(name)
            else:
                marker = _tokenize_shard(shards[name], name, out_dir, tok, batch_size, shard_plan)
                result.done.append(name)
            entries.append(marker)
            bar.update(1)
            bar.set_postfix(tokens=sum(e["n_tokens"] for e in entries))
        bar.close()
        return entries

    if plan is None:
        entries = pass_one(output, None, "tokenize")
        source = {"docs_read": sum(e["docs_read"] for e in entries), "docs_empty": sum(e["docs_empty"] for e in entries)}
    else:
        finals = {} if force else {n: read_marker(output, n) for n in final_names}
        for marker in finals.values():
            if marker is not None:
                _check_marker(marker, tok, output, plan)
        if finals and all(finals.values()):
            entries = [finals[n] for n in final_names]  # pass 2 finished earlier: pass 1 is not needed
            result.skipped.extend(final_names)
        else:
            sources = pass_one(work, plan, "tokenize:pass1")
            totals = {"docs_read": sum(s["docs_read"] for s in sources), "docs_empty": sum(s["docs_empty"] for s in sources)}
            entries = []
            bar = _progress(len(final_names), "refinery[tokenize:shuffle]", progress)
            for j, name in enumerate(final_names):
                marker = finals.get(name)
                if marker is None:
                    t0 = time.time()
                    tokens, offsets, ids = _gather_bucket(work, sources, j, seed)
                    marker = write_shard(output, name, tokens.astype(tok.dtype), offsets, ids, tok.vocab_size,
                                         tok.sha256, extra={"plan": plan, "source_totals": totals})
                    log.info("shuffle [%s]: %d docs, %d tokens gathered from %d shards in %.1fs", name,
                             marker["n_docs"], marker["n_tokens"], len(sources), time.time() - t0)
                    result.done.append(name)
                else:
                    result.skipped.append(name)
                entries.append(marker)
                bar.update(1)
            bar.close()
        source = dict(entries[0]["source_totals"]) if entries else {"docs_read": 0, "docs_empty": 0}

    n_docs = sum(e["n_docs"] for e in entries)
    # Nothing lost: every kept document is either in a shard or counted as empty.
    if source["docs_read"] != n_docs + source["docs_empty"]:
        raise TokenizeError(f"document accounting failed: read {source['docs_read']}, wrote {n_docs}, "
                            f"empty {source['docs_empty']}")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "tokenizer": tok.describe(),
        "dtype": tok.dtype.name,
        "shuffle": plan,
        "source": {"run_dir": run_dir, "kept_shards": names, **source},
        "totals": {"n_shards": len(entries), "n_docs": n_docs, "n_tokens": sum(e["n_tokens"] for e in entries)},
        "shards": [{k: v for k, v in e.items() if k not in ("plan", "source_totals", "buckets")} for e in entries],
    }
    fs.write_bytes(manifest_uri, json.dumps(manifest, indent=1).encode())
    if plan is not None and not keep_work:
        for name in names:
            for uri in shard_uris(work, name).values():
                fs.delete(uri)
        if work_dir is None and not fs.is_s3(work):
            try:
                os.rmdir(fs.resolve(work)[1])
            except OSError:
                pass  # not empty (someone else's files) or already gone
    elapsed = max(time.time() - started, 1e-9)
    log.info("tokenize %s -> %s: %d shards (%d done, %d skipped), %d docs, %d tokens, %.0f tokens/s",
             run_dir, output, len(entries), len(result.done), len(result.skipped), n_docs,
             manifest["totals"]["n_tokens"], manifest["totals"]["n_tokens"] / elapsed)
    result.manifest = manifest
    return result


def parse_manifest(data: bytes, uri: str) -> dict:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise TokenShardError(f"corrupt token manifest {uri}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TokenShardError(f"{uri} is not a refinery token manifest")
    if manifest.get("version") != VERSION:
        raise TokenShardError(f"{uri} has token format version {manifest.get('version')}; this refinery reads {VERSION}")
    return manifest


def read_manifest_bytes(output: str) -> tuple[bytes, str]:
    uri = fs.join(output, MANIFEST)
    try:
        return fs.read_bytes(uri), uri
    except fs.StorageError as exc:
        raise TokenShardError(f"no token manifest at {uri}: run `refinery tokenize` first ({exc})") from exc


def load_manifest(output: str) -> dict:
    return parse_manifest(*read_manifest_bytes(output))
