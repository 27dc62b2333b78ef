"""Stream fixed-length training sequences from token shards on local disk or S3.

Semantics (details and rationale in docs/tokens.md):

- The manifest's shards, in manifest order, form one token stream of ``T`` tokens (documents
  already EOS-separated). It is cut into ``ceil(T / (seq_len + 1))`` non-overlapping *windows* of
  ``seq_len + 1`` tokens (the last one may be shorter): a window gives ``input_ids = w[:-1]`` and
  ``labels = w[1:]``. Documents are packed: windows cross document and shard boundaries.
  Non-overlapping windows are what makes "every token exactly once per epoch" hold; the cost is that
  the pair straddling two windows is not trained (1 in ``seq_len + 1``).
- Windows are grouped into *blocks* of ``block_size`` consecutive windows (~4 MiB by default, one
  ranged read each). Per epoch, full blocks are permuted with ``(seed, epoch)`` and dealt out in
  equal numbers to ranks; the few left over, plus the stream's tail, are split into one contiguous
  slice per rank (sizes differ by at most one window). Each rank then shuffles windows inside
  groups of ``shuffle_window`` blocks (and inside its leftover slice).
- Ranks differ by at most one window; every rank yields the same number of batches (DDP lockstep):
  missing rows are padding (``lengths == 0``, ``labels == -100``). Every token of the epoch is
  yielded exactly once across ranks; nothing is dropped and nothing repeated (but a final window of
  one token, the stream's last EOS, which has no next token to predict, is not emitted).
- No batch is without a target on any rank (an all-padding batch gives a NaN mean loss, which DDP
  spreads to every rank): a rank that would end on an all-padding batch moves one padding row into
  its previous batch instead. Where that is impossible (``batch_size == 1`` with unequal ranks) the
  constructor refuses unless ``drop_last=True``, which yields only full batches (the same number on
  every rank) and drops the rest of each rank's windows; with fewer windows than ranks x
  batch_size (a small corpus) ``drop_last`` would leave no batch either, and the refusal says so.
- Every rank must pass the same seed and settings: under ``torch.distributed`` the first iteration
  checks that they do (one small collective) and refuses a per-rank seed in one line.
- Deterministic in ``(seed, rank, world_size)`` (and the loader settings); ``state_dict()`` after
  any batch and ``load_state_dict()`` in a new loader continue with exactly the same batches;
  between epochs the rank, world size and batch size may change (elastic restarts). Mid-epoch too
  the world size, batch size and ``drop_last`` may change: every new rank loads one saved state
  (any old rank's), and the old ranks' unread windows are dealt to the new ranks
  (:mod:`refinery.epoch_rest`), every window once, then normal epochs.

Reads are ``read_at`` byte ranges (pread locally, ranged GETs on S3) issued ahead of use by a
thread pool (``prefetch`` groups ahead).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import operator
import re
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from refinery import epoch_rest
from refinery.tokens.format import (
    ShardFile,
    TokenizerMismatchError,
    TokenShardError,
    TokensChangedError,
    list_versions,
)
from refinery.tokens.tokenizer import LoadedTokenizer, token_dtype
from refinery.tokens.writer import parse_manifest, read_manifest_bytes, resolve_token_dir

if TYPE_CHECKING:  # torch is an optional extra
    from torch.utils.data import IterableDataset

log = logging.getLogger("refinery.loader")

IGNORE_INDEX = -100  # PyTorch cross-entropy's default ignore_index
STATE_VERSION = 1
_TARGET_BLOCK_BYTES = 4 << 20


class LoaderStateError(ValueError):
    """A saved loader state does not belong to this loader (other data, seed, ranks or shapes)."""


class LoaderRanksError(ValueError):
    """The loaders of a ``torch.distributed`` job disagree on what all ranks must share (the seed,
    the tokens, the shapes, the position) or do not cover every rank once: some windows would be
    read twice and others never."""


def content_fingerprint(manifest: dict) -> str:
    """SHA-256 of what decides a token stream: the tokenizer's identity (its BOS id too), the dtype, the shuffle
    plan, and each shard's name, document and token counts and content hashes, in order."""
    tk = manifest["tokenizer"]
    # a BOS id only when there is one: fingerprints of outputs without (saved states) stay as they were
    bos = [tk["bos_id"]] if tk.get("bos_id") is not None else []
    identity = {"tokenizer": [tk.get("sha256"), tk.get("vocab_size"), tk.get("eos_id"), *bos], "dtype": manifest.get("dtype"),
                "shuffle": manifest.get("shuffle"),
                "shards": [[e.get(k) for k in ("name", "n_docs", "n_tokens", "bin_sha256", "idx_sha256")]
                           for e in manifest["shards"]]}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class TokenDataset:
    """A manifest's shards as one token stream, validated on open and read by ranges.

    ``expected_tokenizer`` (a :class:`LoadedTokenizer` or a SHA-256) refuses data tokenized with
    anything else, e.g. shards made for another model's vocabulary.
    """

    def __init__(self, uri: str, expected_tokenizer: LoadedTokenizer | str | None = None, threads: int = 8) -> None:
        uri = resolve_token_dir(uri)  # a run directory works too
        data, manifest_uri = read_manifest_bytes(uri)
        self.uri = uri
        self.manifest = parse_manifest(data, manifest_uri)
        #: what a training checkpoint's loader state names the data by: the tokens themselves
        #: (tokenizer, dtype, shuffle plan, each shard's name, counts and content hashes, in
        #: order), not the manifest's bytes, which a rerun that redid nothing rewrote with the
        #: tokenizer path as typed and the installed library's version (found by adversarial
        #: testing: saved states were refused). ``manifest_sha256``: the former fingerprint,
        #: still accepted from states saved before.
        self.fingerprint = content_fingerprint(self.manifest)
        self.manifest_sha256 = hashlib.sha256(data).hexdigest()
        tk = self.manifest["tokenizer"]
        self.tokenizer_sha256: str = tk["sha256"]
        self.vocab_size: int = int(tk["vocab_size"])
        self.eos_id: int = int(tk["eos_id"])
        self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
        if self.dtype != token_dtype(self.vocab_size):
            raise TokenizerMismatchError(f"{manifest_uri}: dtype {self.dtype.name} does not fit vocab size {self.vocab_size}")
        self.check_tokenizer(expected_tokenizer)
        entries = self.manifest["shards"]
        # one listing instead of a metadata request per file; it also fixes each .bin's version,
        # which every later read checks (a shard rewritten under the job is refused, not mixed in)
        self._listing = list_versions(uri)
        with ThreadPoolExecutor(max(1, min(threads, len(entries)))) as pool:
            self.shards: list[ShardFile] = list(pool.map(lambda e: self._open(e, manifest_uri), entries))
        sizes = np.array([s.header.n_tokens for s in self.shards], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_tokens = int(self.starts[-1])

    def check_tokenizer(self, expected: LoadedTokenizer | str | None) -> None:
        """Refuse data tokenized with anything but ``expected``: a loaded tokenizer, its SHA-256,
        or a tokenizer spec as ``refinery tokenize --tokenizer`` takes it (``"gpt2"``, a
        ``tokenizer.json``; "gpt2" was read as a SHA-256 and refused the gpt2 run it named)."""
        if expected is None:
            return
        if isinstance(expected, str) and re.fullmatch(r"[0-9a-fA-F]{64}", expected):
            expected = expected.lower()  # a SHA-256 copied in capitals
        elif isinstance(expected, str):
            from refinery.tokens.tokenizer import load_tokenizer

            try:  # with the run's end-of-document token: one outside the usual names must not refuse it
                expected = load_tokenizer(expected, eos_token=self.manifest["tokenizer"].get("eos_token"))
            except Exception as exc:  # noqa: BLE001 - a spec that names nothing loadable
                try:  # another tokenizer, without the run's token: a mismatch, said as one below
                    expected = load_tokenizer(expected)
                except Exception:  # noqa: BLE001
                    raise TokenizerMismatchError(f"expected_tokenizer {expected!r} is neither a SHA-256 nor a "
                                                 f"tokenizer refinery can load ({str(exc).splitlines()[0]})") from None
        elif not isinstance(expected, LoadedTokenizer):
            # a Hugging Face Tokenizer object was printed whole as the "expected sha256" (testing)
            raise TokenizerMismatchError(
                f"expected_tokenizer is a {type(expected).__name__}: give refinery.tokens.load_tokenizer(PATH), a "
                f"tokenizer spec ('gpt2', a tokenizer.json path) or the tokenizer's SHA-256")
        tk = self.manifest["tokenizer"]
        want = expected.sha256 if isinstance(expected, LoadedTokenizer) else expected
        if want != self.tokenizer_sha256:
            raise TokenizerMismatchError(
                f"{self.uri} was tokenized with {tk['id']} (sha256 {self.tokenizer_sha256}, vocab {self.vocab_size}), "
                f"not the expected tokenizer (sha256 {want})")
        if isinstance(expected, LoadedTokenizer) and expected.vocab_size != self.vocab_size:
            raise TokenizerMismatchError(f"{self.uri}: vocab size {self.vocab_size} != expected {expected.vocab_size}")
        if isinstance(expected, LoadedTokenizer) and expected.eos_id != self.eos_id:
            # one vocabulary, another document separator (tokenized with --eos-token "<s>" for a
            # model that ends documents with "</s>"): training would learn the wrong separator
            raise TokenizerMismatchError(
                f"{self.uri} ends documents with id {self.eos_id} ({tk.get('eos_token')!r}), the expected tokenizer "
                f"with id {expected.eos_id} ({expected.eos_token!r}): retokenize with --eos-token "
                f"{expected.eos_token!r}")

    def _open(self, entry: dict, manifest_uri: str) -> ShardFile:
        shard = ShardFile(self.uri, entry["name"], self._listing)  # checks sizes against its own index: truncation
        h, name = shard.header, entry["name"]
        if h.tokenizer_sha256 != self.tokenizer_sha256 or h.vocab_size != self.vocab_size:
            shard.close()
            raise TokenizerMismatchError(
                f"token shard {shard.uris['bin']} was tokenized with tokenizer sha256 {h.tokenizer_sha256} "
                f"(vocab {h.vocab_size}) but {manifest_uri} says {self.manifest['tokenizer']['id']} "
                f"(sha256 {self.tokenizer_sha256}, vocab {self.vocab_size}); refusing to mix vocabularies")
        if h.dtype != self.dtype:
            shard.close()
            raise TokenizerMismatchError(f"token shard {name} stores {h.dtype.name} tokens; manifest says {self.dtype.name}")
        if h.n_tokens != entry["n_tokens"] or h.n_docs != entry["n_docs"]:
            shard.close()
            raise TokenShardError(
                f"token shard {shard.uris['bin']} holds {h.n_docs} docs / {h.n_tokens} tokens but {manifest_uri} "
                f"lists {entry['n_docs']} / {entry['n_tokens']}: shard replaced or manifest stale")
        stale = [k for k in ("bin_sha256", "idx_sha256") if entry.get(k) and shard.meta.get(k) not in (None, entry[k])]
        if stale:
            # redone since the manifest was read (tokenize --force in progress or finished), same counts
            raise TokensChangedError(
                f"token shard {shard.uris['bin']}: its sidecar {shard.uris['marker']} records {stale[0]} "
                f"{shard.meta[stale[0]]} but {manifest_uri} lists {entry[stale[0]]}: the tokens were redone after the "
                f"manifest was read (tokenize --force running?) or the manifest is stale; open the directory again "
                f"once tokenize has finished")
        return shard

    def read(self, start: int, stop: int) -> np.ndarray:
        """Global tokens ``[start, stop)``, across shard boundaries if need be."""
        parts = []
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < stop and i < len(self.shards):
            base = int(self.starts[i])
            end = min(stop, int(self.starts[i + 1]))
            if end > start:
                parts.append(self.shards[i].read_tokens(start - base, end - base))
            start = max(start, end)
            i += 1
        if start < stop:
            raise TokenShardError(f"read past the end of {self.uri}: token {start} >= {self.n_tokens}")
        return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0, self.dtype)

    def close(self) -> None:
        for s in self.shards:
            s.close()


@dataclass(frozen=True)
class _Group:
    """Windows a rank emits together, read as a few runs of consecutive windows (one range read each)."""

    windows: np.ndarray  # global window ids, in read order (runs concatenated)
    order: np.ndarray  # emission order: indices into ``windows``

    def runs(self, max_len: int) -> list[tuple[int, int]]:
        """``(first window, count)`` runs of consecutive ids, each at most ``max_len`` long."""
        out = []
        breaks = np.flatnonzero(np.diff(self.windows) != 1) + 1
        for run in np.split(self.windows, breaks):
            for i in range(0, len(run), max_len):
                out.append((int(run[i]), len(run[i : i + max_len])))
        return out


class TokenLoader:
    """Batches of packed ``seq_len + 1`` windows for one rank; numpy in, numpy out.

    Each batch is ``{"input_ids": (B, seq_len) int64, "labels": (B, seq_len) int64, "lengths": (B,) int64}``:
    ``lengths`` counts the real tokens of each window (``seq_len + 1`` except for the stream's last
    window and padding rows); ``labels`` is ``IGNORE_INDEX`` where there is no real next token and
    padded inputs are ``pad_id`` (default: EOS). Iterating runs to the end of the current epoch.

    Under ``torch.distributed`` the first iteration (or :func:`torch_dataset`) compares the ranks'
    loaders in one ``all_gather_object`` over ``process_group`` (default: every rank) and raises
    :class:`LoaderRanksError` when they differ in seed, tokens, shapes or position, or their ``rank``
    values do not cover ``0 .. world_size - 1``; ``check_ranks=False`` skips it (a loader with
    ``world_size=1`` never runs it: evaluation on one rank alone would hang in it). Before the
    collective each rank waits at most ``check_ranks_timeout`` seconds (default: the process group's
    timeout) for the others to reach it, then raises naming the ranks that did not (a rank iterating
    a ``world_size=1`` loader instead is named as such); a ``world_size=1`` loader iterated on every
    rank of a group (each rank reads every window: the data N times) logs one warning.
    """

    def __init__(
        self,
        data: str | TokenDataset,
        seq_len: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        block_size: int | None = None,
        shuffle_window: int = 4,
        prefetch: int = 2,
        threads: int = 8,
        pad_id: int | None = None,
        expected_tokenizer: LoadedTokenizer | str | None = None,
        drop_last: bool = False,
        check_ranks: bool = True,
        process_group: Any = None,
        check_ranks_timeout: float | None = None,
    ) -> None:
        # plain ints: a numpy integer failed at the first batch (not JSON), and seed=3.0 equalled a
        # saved 3 but shuffled otherwise (its JSON text differs; found by testing the loader)
        seq_len, batch_size, seed, rank, world_size, shuffle_window, prefetch, threads = (
            _integer(name, value) for name, value in (
                ("seq_len", seq_len), ("batch_size", batch_size), ("seed", seed), ("rank", rank),
                ("world_size", world_size), ("shuffle_window", shuffle_window), ("prefetch", prefetch),
                ("threads", threads)))
        block_size = None if block_size is None else _integer("block_size", block_size)
        pad_id = None if pad_id is None else _integer("pad_id", pad_id)
        if seq_len < 1 or batch_size < 1:
            raise ValueError("seq_len and batch_size must be >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        self.data = data if isinstance(data, TokenDataset) else TokenDataset(data, expected_tokenizer, threads)
        self.data.check_tokenizer(expected_tokenizer)
        self.seq_len, self.batch_size = seq_len, batch_size
        self.window = seq_len + 1
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, bool(shuffle)
        self.block_size = block_size or max(1, _TARGET_BLOCK_BYTES // (self.window * self.data.dtype.itemsize))
        self.shuffle_window = max(1, shuffle_window)
        self.prefetch, self.threads = max(0, prefetch), max(1, threads)
        self.pad_id = self.data.eos_id if pad_id is None else pad_id
        if not 0 <= self.pad_id < self.data.vocab_size:
            raise ValueError(f"pad_id {self.pad_id} is outside the vocabulary (0 to {self.data.vocab_size - 1})")
        self.drop_last = bool(drop_last)
        # a window needs two tokens to hold one (input, target) pair: a last window of a single
        # token (the stream's final EOS) would be a row with no target at all, so it is not counted
        self.n_windows = math.ceil((self.data.n_tokens - 1) / self.window) if self.data.n_tokens > 1 else 0
        full = self.n_windows // self.block_size
        self._blocks_per_rank = full // world_size
        self._loose = self.n_windows - self._blocks_per_rank * world_size * self.block_size
        #: real windows of the busiest rank (without drop_last every rank yields this many rows,
        #: rounded up to batches); the others have at most one fewer
        self.windows_per_rank = self._blocks_per_rank * self.block_size + math.ceil(self._loose / world_size)
        self.batches_per_epoch = _batches_per_epoch(self.n_windows, self.block_size, world_size, batch_size,
                                                    self.drop_last)
        if not self.drop_last:
            self._check_no_empty_batch()
        if self.batches_per_epoch == 0:
            # an epoch of no batch would end at once, forever: a step-counting training loop spins
            raise ValueError(
                f"no batch to train on: {self.data.uri} holds {self.data.n_tokens} tokens ({self.n_windows} windows "
                f"of {self.window} tokens) for {world_size} rank(s) x batch_size {batch_size}"
                + (" with drop_last (only full batches)" if self.drop_last else "")
                + ": an empty or tiny corpus (did every document get filtered out?)")
        self.epoch = 0
        self.position = 0  # rows of the current epoch already yielded
        self._active: Iterator | None = None
        #: the rest of an epoch left in another shape of ranks, while the loader is in it (a state's ``reshaped``)
        self._rest: _Rest | None = None
        #: (worker, workers): in a DataLoader worker process this loader yields only that worker's
        #: share of the rank's batches (set by the torch dataset); its position counts them all
        self._split: tuple[int, int, int | None] = (0, 1, None)
        #: compare settings with the other ranks (one all_gather_object) at the first iteration when
        #: torch.distributed is initialized; ``process_group``: the group of this loader's ranks
        #: (default: the whole world; with tensor parallelism peers share a rank, see check_ranks_agree)
        self.check_ranks, self.process_group = bool(check_ranks), process_group
        seconds = isinstance(check_ranks_timeout, (int, float)) and not isinstance(check_ranks_timeout, bool)
        if check_ranks_timeout is not None and not (seconds and check_ranks_timeout > 0):
            raise ValueError(f"check_ranks_timeout must be a number of seconds > 0 or None, not {check_ranks_timeout!r}")
        #: seconds the check waits for every rank to reach it (None: the process group's timeout)
        self.check_ranks_timeout = check_ranks_timeout
        self._ranks_checked = False

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn/forkserver get a copy: not the live iterator, nor the
        # process group (not picklable; workers never run collectives)
        return {**self.__dict__, "_active": None, "process_group": None}

    # -- the plan: pure arithmetic on (seed, epoch, rank, world_size), no I/O ---------------------
    def _rank_windows(self, rank: int) -> int:
        """Real windows of ``rank`` per epoch (what :meth:`_groups` deals it)."""
        return sum(self._group_sizes(rank, self.world_size))

    def _gap_slot(self, n_real: int, total: int) -> int | None:
        """Row slot of the padding row moved forward on a rank of ``n_real`` windows in an epoch of
        ``total`` rows that would otherwise end on an all-padding batch, else None."""
        return epoch_rest.gap_slot(n_real, total, self.batch_size, self.drop_last)

    def _check_no_empty_batch(self) -> None:
        """Refuse a plan in which some rank would get a batch without any target (NaN loss)."""
        b, w = self.batch_size, self.world_size
        bad = epoch_rest.without_target([self._rank_windows(r) for r in range(w)], self.batches_per_epoch * b, b)
        if bad and self.n_windows < w * b:
            # drop_last would leave no batch either: advising it sent users from one refusal to the next
            raise ValueError(
                f"{self.n_windows} windows of {self.window} tokens ({self.data.n_tokens} tokens) over {w} ranks with "
                f"batch_size {b}: fewer windows than ranks x batch_size ({w * b}), so rank(s) "
                f"{', '.join(map(str, bad[:8]))} would get an all-padding batch (a NaN loss) and drop_last=True leaves "
                f"no batch at all; use a smaller seq_len, batch_size or world_size, or more data")
        if bad:
            raise ValueError(
                f"{self.n_windows} windows of {self.window} tokens over {w} ranks with batch_size {b}: rank(s) "
                f"{', '.join(map(str, bad[:8]))} would get an all-padding batch (every label {IGNORE_INDEX}: a NaN "
                f"loss that DDP spreads to every rank); pass drop_last=True (only full batches; drops at most "
                f"{w * b + w - 1} windows per epoch) or change batch_size / world_size")

    def _rng(self, *key: Any) -> np.random.Generator:
        digest = hashlib.sha256(json.dumps([self.seed, *key]).encode()).digest()
        return np.random.default_rng(np.frombuffer(digest[:16], np.uint32))

    def _group_sizes(self, rank: int, world_size: int) -> list[int]:
        """Windows of each group :meth:`_group` deals ``rank`` of ``world_size`` in any epoch (no permutation)."""
        c, sw = self.block_size, self.shuffle_window
        per = (self.n_windows // c) // world_size
        loose = self.n_windows - per * world_size * c
        n_loose = (rank + 1) * loose // world_size - rank * loose // world_size
        return [min(sw, per - k) * c for k in range(0, per, sw)] + ([n_loose] if n_loose else [])

    def _block_order(self, epoch: int) -> np.ndarray:
        full = self.n_windows // self.block_size
        return self._rng("blocks", epoch).permutation(full) if self.shuffle else np.arange(full)

    def _group(self, epoch: int, order: np.ndarray, rank: int, world_size: int, index: int) -> _Group:
        """Group ``index`` of ``rank`` of ``world_size`` in ``epoch`` (``order``: its :meth:`_block_order`)."""
        c, w = self.block_size, world_size
        per = len(order) // w
        k = index * self.shuffle_window
        if k < per:  # the rank's blocks, dealt from the permuted full blocks
            blocks = order[rank * per + k : rank * per + min(k + self.shuffle_window, per)]
            windows = (blocks[:, None] * c + np.arange(c)[None, :]).ravel()
            perm = self._rng("group", epoch, rank, k).permutation(len(windows)) if self.shuffle else np.arange(len(windows))
            return _Group(windows, perm)
        # Leftover full blocks and the partial last block: split into `w` contiguous slices that
        # differ by at most one window, so each rank still reads a few long runs, not scattered windows.
        rest = order[per * w :]
        pool = np.concatenate([(rest[:, None] * c + np.arange(c)[None, :]).ravel(),
                               np.arange(len(order) * c, self.n_windows)])
        bounds = np.arange(w + 1) * len(pool) // w
        loose = pool[bounds[rank] : bounds[rank + 1]]
        perm = self._rng("loose", epoch, rank).permutation(len(loose)) if self.shuffle else np.arange(len(loose))
        return _Group(loose, perm)

    def _groups(self, epoch: int) -> list[_Group]:
        order = self._block_order(epoch)
        return [self._group(epoch, order, self.rank, self.world_size, i)
                for i in range(len(self._group_sizes(self.rank, self.world_size)))]

    def _plan(self, epoch: int) -> tuple[list[_Group], int]:
        """This rank's groups of ``epoch`` and the rows every rank yields in it: the epoch's own
        plan, or the rest of an epoch left in another shape (see :mod:`refinery.epoch_rest`)."""
        rest = self._rest
        if rest is None or rest.epoch != epoch:
            return self._groups(epoch), self.batches_per_epoch * self.batch_size
        order, built, groups = self._block_order(epoch), {}, []
        for rank, index, start, stop in rest.pieces:
            if (rank, index) not in built:
                built[rank, index] = self._group(epoch, order, rank, rest.levels[0].world_size, index)
            group = built[rank, index]
            groups.append(_Group(group.windows, group.order[start:stop]))  # reads only the runs of these rows
        return groups, rest.total

    def _epoch_rows(self, epoch: int) -> int:
        """Rows every rank yields in ``epoch`` (fewer in the rest of an epoch left in another shape)."""
        rest = self._rest
        return rest.total if rest is not None and rest.epoch == epoch else self.batches_per_epoch * self.batch_size

    # -- reading -----------------------------------------------------------------------------------
    def _read_run(self, first: int, count: int) -> np.ndarray:
        start = first * self.window
        return self.data.read(start, min(start + count * self.window, self.data.n_tokens))

    def _submit(self, pool: ThreadPoolExecutor, group: _Group, keep: np.ndarray | None) -> tuple[np.ndarray, list]:
        """Start reading ``group``'s runs; with ``keep`` (per emitted row) only the runs holding a kept row."""
        runs = group.runs(self.block_size)
        starts = np.cumsum([0] + [n for _, n in runs])
        needed = np.ones(len(runs), bool)
        if keep is not None or len(group.order) < len(group.windows):  # some rows: a part of an epoch's rest
            needed[:] = False
            needed[np.searchsorted(starts, group.order if keep is None else group.order[keep], side="right") - 1] = True
        return starts, [pool.submit(self._read_run, first, n) if need else None
                        for (first, n), need in zip(runs, needed)]

    def _rows(self, group: _Group, submitted: tuple[np.ndarray, list], skip: int,
              keep: np.ndarray | None) -> Iterator[np.ndarray | None]:
        """``group``'s windows in emission order from its ``skip``-th on; a row ``keep`` leaves out is None."""
        starts, futures = submitted
        parts = [f.result() if f is not None else None for f in futures]
        for k in range(skip, len(group.order)):
            if keep is not None and not keep[k]:
                yield None
                continue
            i = int(group.order[k])
            run = int(np.searchsorted(starts, i, side="right")) - 1
            j = i - int(starts[run])
            yield parts[run][j * self.window : (j + 1) * self.window]

    def _iter_rows(self, epoch: int, start: int, first: int = 0) -> Iterator[np.ndarray | None]:
        """This rank's windows of ``epoch`` from row ``start`` on; ``None`` rows are padding."""
        groups, total = self._plan(epoch)  # total: rows this epoch, on every rank
        n_real = sum(len(g.order) for g in groups)
        gap = self._gap_slot(n_real, total)
        real = self._real_rows(groups, start - 1 if gap is not None and start > gap else start, self._kept_rows(n_real, gap, first))
        try:
            for slot in range(start, total):
                yield None if slot == gap else next(real, None)
        finally:
            real.close()

    def _kept_rows(self, n_real: int, gap: int | None, first: int) -> np.ndarray | None:
        """Which of this rank's real rows the batches of this DataLoader worker hold (None: all).

        Worker ``k`` of ``n`` yields the rank's batches ``first + k, first + k + n, ...`` of the epoch
        (``first``: where the iteration starts); a DataLoader starts each iteration at worker 0 and
        takes batches from its workers in turn, so it hands out the very sequence one process would."""
        k, n, _ = self._split
        if n == 1:
            return None
        slots = np.arange(n_real)
        if gap is not None:
            slots[gap:] += 1  # the moved padding row takes slot ``gap``
        return (slots // self.batch_size - first) % n == k

    def _real_rows(self, groups: list[_Group], start: int, kept: np.ndarray | None = None) -> Iterator[np.ndarray | None]:
        """The real windows of ``groups`` from the ``start``-th on, read ahead in a thread pool;
        rows ``kept`` leaves out are None and not read (a group with none kept is not read at all)."""
        sizes = np.cumsum([0] + [len(g.order) for g in groups])
        if start >= sizes[-1]:
            return
        first = int(np.searchsorted(sizes, start, side="right")) - 1
        keeps = [None if kept is None else kept[sizes[k] : sizes[k + 1]] for k in range(len(groups))]
        pending: deque[tuple[_Group, tuple]] = deque()
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="refinery-loader")
        try:
            nxt = first
            for k in range(first, len(groups)):
                while nxt < len(groups) and nxt <= k + self.prefetch:
                    pending.append((groups[nxt], self._submit(pool, groups[nxt], keeps[nxt])))
                    nxt += 1
                group, futures = pending.popleft()
                yield from self._rows(group, futures, max(0, start - int(sizes[k])), keeps[k])
        finally:
            # never wait here: this generator may be finalized by the garbage collector in any
            # thread (even one that is still starting), and joining the pool there deadlocks
            pool.shutdown(wait=False, cancel_futures=True)

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        b, w = self.batch_size, self.window
        if self.position >= self._epoch_rows(self.epoch):
            # the epoch's last batch went out but its iterator was left before its end (a loop of
            # len(loader) steps: zip, a break): this iterator is the next epoch's, as state_dict()
            # says; it ran an epoch of no batch first, so every second epoch was empty (h129)
            self.epoch, self.position = self.epoch + 1, 0
        worker, n_workers, first = self._split
        first = self.position // b if first is None else first  # the batch this worker's iteration started at
        rows = self._iter_rows(self.epoch, self.position, first)
        end = self._epoch_rows(self.epoch)
        try:
            while self.position < end:
                if (self.position // b - first) % n_workers != worker:  # another DataLoader worker's batch
                    for _ in range(b):
                        next(rows)
                    self.position += b
                    continue
                tokens = np.full((b, w), self.pad_id, np.int64)
                lengths = np.zeros(b, np.int64)
                for r in range(b):
                    row = next(rows)
                    if row is not None:
                        tokens[r, : len(row)] = row
                        lengths[r] = len(row)
                labels = tokens[:, 1:].copy()
                labels[np.arange(self.seq_len)[None, :] + 1 >= lengths[:, None]] = IGNORE_INDEX
                self.position += b  # before yielding: state_dict() taken after this batch must skip it
                yield {"input_ids": np.ascontiguousarray(tokens[:, :-1]), "labels": labels, "lengths": lengths}
            self.epoch += 1
            self.position = 0
        finally:
            rows.close()

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if not self._ranks_checked:
            self._check_ranks_once()
        if self._active is not None:
            self._active.close()  # one live iterator: its position is the loader's position
        self._active = self._batches()
        return self._active

    def __len__(self) -> int:
        return self.batches_per_epoch

    # -- agreement across ranks ----------------------------------------------------------------------
    def _check_ranks_once(self, first_iteration: bool = True) -> None:
        """:meth:`check_ranks_agree` when torch.distributed is initialized in this process and the
        check is on; never in a DataLoader worker (a forked worker inherits the process group but
        must not use it) and never importing torch for a numpy user. A ``world_size=1`` loader (every
        window) runs no collective: evaluation, often on rank 0 alone, would hang in it; it only
        leaves a note in the process group's store (see :func:`_note_every_window_loader`)."""
        if not self.check_ranks:
            self._ranks_checked = True
            return
        dist = sys.modules.get("torch.distributed")
        if dist is None or not dist.is_available() or not dist.is_initialized():
            # at the first iteration only: no collective later, when ranks may be elsewhere
            self._ranks_checked = self._ranks_checked or first_iteration or self.world_size == 1
            return
        from torch.utils.data import get_worker_info

        if get_worker_info() is not None:
            return
        if self.world_size == 1:
            self._ranks_checked = True
            _note_every_window_loader(dist, self)
            return
        self.check_ranks_agree(self.process_group)

    def check_ranks_agree(self, group: Any = None) -> None:
        """Raise :class:`LoaderRanksError` unless the loaders of ``group`` (default: every rank) share
        the tokens, seed, shapes, shuffle settings and position, and their ``rank`` values cover
        ``0 .. world_size - 1`` equally often (once each; ``k`` times each when ``k`` ranks share
        data, as tensor-parallel peers do). A collective: every rank of ``group`` must call it (the
        first iteration does, when torch.distributed is initialized and ``check_ranks`` is on); each
        waits at most ``check_ranks_timeout`` seconds for the others to come (through the process
        group's store), then raises naming the ranks that did not instead of hanging in the collective."""
        import torch.distributed as dist

        # a rank that never calls the collective (a world_size=1 loader there, check_ranks=False)
        # hung the others in it for the process group's timeout, then a bare gloo/NCCL timeout
        _wait_for_ranks(dist, group, self.world_size, self.check_ranks_timeout)
        mine = {**self.state_dict(), "uri": self.data.uri}
        gathered: list[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(gathered, mine, group=group)
        self._ranks_checked = True  # every rank got the same list: all raise or none does
        problem = _ranks_disagreement(gathered)
        if problem:
            raise LoaderRanksError(f"the TokenLoaders of the {len(gathered)} torch.distributed ranks disagree (checked "
                                   f"once, at the first iteration or torch_dataset(); check_ranks=False skips it): "
                                   f"{problem}")

    # -- resumption ----------------------------------------------------------------------------------
    def _identity(self) -> dict:
        return {
            "dataset": self.data.fingerprint,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "block_size": self.block_size,
            "shuffle": self.shuffle,
            "shuffle_window": self.shuffle_window,
            "drop_last": self.drop_last,
        }

    def state_dict(self) -> dict:
        """JSON-serialisable position: the next batch after :meth:`load_state_dict` is the next one here."""
        return self.state_at(self.epoch, self.position)

    def state_at(self, epoch: int, position: int) -> dict:
        """The state of this loader at ``position`` rows into ``epoch``; in the rest of an epoch
        left in another shape, with ``reshaped``: the shapes it was left in and where (oldest first)."""
        if position >= self._epoch_rows(epoch):
            # after an epoch's last batch the next one is the next epoch's first: saved as
            # (epoch, end), a resumed loop that numbers epochs from the state ran an epoch of no
            # batch (found by testing the loader)
            epoch, position = epoch + 1, 0
        state = {"version": STATE_VERSION, "epoch": epoch, "position": position, **self._identity()}
        if self._rest is not None and self._rest.epoch == epoch:
            state["reshaped"] = [asdict(level) for level in self._rest.levels]
        return state

    def _saved_epoch_end(self, saved: dict) -> int | None:
        """Rows of an epoch in the shape a state was saved with (its world size, batch size,
        drop_last), or None when the state does not say them as integers."""
        try:
            world, batch = _integer("world_size", saved.get("world_size")), _integer("batch_size", saved.get("batch_size"))
        except TypeError:
            return None
        if world < 1 or batch < 1:
            return None
        return _batches_per_epoch(self.n_windows, self.block_size, world, batch, bool(saved.get("drop_last"))) * batch

    def _rest_of(self, epoch: int, levels: list[epoch_rest.Level]) -> _Rest:
        """This rank's share of the rest of ``epoch``, left in the shapes ``levels`` (oldest first),
        dealt to this loader's shape; refused when it cannot be exact."""
        first = levels[0].world_size
        plans = [[(r, i, 0, n) for i, n in enumerate(self._group_sizes(r, first))] for r in range(first)]
        try:
            ranks = epoch_rest.deal(plans, levels, self.world_size)
        except ValueError as exc:
            raise LoaderStateError(f"loader state of epoch {epoch}: {exc}") from None
        sizes = [epoch_rest.rows(p) for p in ranks]
        total = epoch_rest.epoch_rows(sizes, self.batch_size, self.drop_last)
        bad = epoch_rest.without_target(sizes, total, self.batch_size)
        if bad:
            left = levels[-1]
            raise LoaderStateError(
                f"the rest of epoch {epoch} ({sum(sizes)} windows, left at position {left.position} with world_size "
                f"{left.world_size}) dealt to world_size {self.world_size} with batch_size {self.batch_size} would give "
                f"rank(s) {', '.join(map(str, bad[:8]))} a batch without any target (a NaN loss"
                + (": fewer windows left than ranks" if min(sizes) < 1 else "") + "); resume it with drop_last=True, "
                f"or" + _finish_epoch_as_saved(left, epoch).removeprefix(";"))
        return _Rest(epoch, tuple(levels), ranks[self.rank], total)

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict`: the next batch is the one after the saved position.

        Mid-epoch, a state of another ``world_size``, ``batch_size`` or ``drop_last`` (a job restarted
        on more or fewer ranks) continues the epoch dealt to this shape: the saved ranks' unread
        windows, every one once, then normal epochs; every new rank loads the same saved state, any
        old rank's (ranks share their position). :class:`LoaderStateError` lists what differs when
        the state is another loader's (dataset, seed, shape; ``rank`` alone may change only between
        epochs: mid-epoch each rank loads its own state)."""
        if state.get("version") != STATE_VERSION:
            raise LoaderStateError(f"loader state version {state.get('version')} != {STATE_VERSION}")
        saved = {"drop_last": False, **state}  # states saved before drop_last existed
        if saved.get("dataset") == self.data.manifest_sha256:  # saved before content fingerprints
            saved["dataset"] = self.data.fingerprint
        # compared as JSON: a state saved with seed 3.0 equalled seed 3 but shuffled otherwise (a review)
        try:  # numpy integers too (a state kept by a framework); not floats, strings or bools
            epoch, position = (_integer(k, state.get(k)) for k in ("epoch", "position"))
        except TypeError:
            epoch = position = -1
        if epoch < 0:
            raise LoaderStateError(f"loader state epoch {state.get('epoch')!r} and position {state.get('position')!r} "
                                   f"must be integers, the epoch at least 0")
        levels = _saved_levels(state.get("reshaped"))
        diff = {k: (saved.get(k), v) for k, v in self._identity().items() if not _same_setting(saved.get(k), v)}
        if (not levels and position and set(diff) <= _RESHAPEABLE_AT_EPOCH_START
                and position == self._saved_epoch_end(saved)):
            # saved after an epoch's last batch by a refinery that wrote (epoch, end), not (epoch + 1, 0)
            epoch, position = epoch + 1, 0
        if position == 0 and not levels:
            # an epoch's plan is dealt from (seed, epoch, rank, world_size) at its start: a job that
            # resumes between epochs on more or fewer GPUs (elastic restarts) starts the saved epoch
            # dealt to its own ranks, every token still once
            diff = {k: v for k, v in diff.items() if k not in _RESHAPEABLE_AT_EPOCH_START}
        if diff and set(diff) <= _RESHAPEABLE_AT_EPOCH_START and set(diff) & _SHAPE:
            # mid-epoch in another shape (a job restarted on more or fewer ranks): the saved ranks'
            # unread windows are dealt to this shape; it used to be refused (sessions 48-49)
            try:
                left = epoch_rest.Level(*(_integer(k, saved.get(k)) for k in ("world_size", "batch_size")),
                                        bool(saved.get("drop_last")), position)
            except TypeError as exc:
                raise LoaderStateError(f"loader state: {exc}") from None
            levels, position, diff = [*levels, left], 0, {}
        if diff:
            detail = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            hint = ""
            if set(diff) == {"rank"}:
                # every rank loading rank 0's state (a checkpoint saved on rank 0 only) is the usual
                # way to get here; "can change only at an epoch's start" did not say what to do (h129)
                hint += (f"; rank can change only at an epoch's start (this state is {position} rows into epoch "
                         f"{epoch}): mid-epoch each rank resumes from its own state: save every rank's state_dict() "
                         f"(e.g. gathered with torch.distributed.all_gather_object) and load the one saved by this rank")
            if "dataset" in diff:
                # tokens redone (an upgrade of refinery, another config) or another directory: the
                # state's windows are not these tokens' windows, and no resume can map them
                hint += (f"; {self.data.uri} holds other tokens than the state was saved on (redone or another "
                         f"corpus): resume on the token shards it was saved on, or start these without the state")
            raise LoaderStateError(f"loader state does not match this loader ({detail}){hint}")
        rest = self._rest_of(epoch, levels) if levels else None
        end = rest.total if rest is not None else self.batches_per_epoch * self.batch_size
        if position % self.batch_size or not 0 <= position <= end:
            raise LoaderStateError(f"loader state position {position} is not a batch boundary of this epoch")
        if position == end and rest is not None:  # a rest of no batch (drop_last): the next epoch
            epoch, position, rest = epoch + 1, 0, None
        if self._active is not None:
            self._active.close()
            self._active = None
        self.epoch, self.position, self._rest = epoch, position, rest


@dataclass(frozen=True)
class _Rest:
    """The rest of an epoch left in other shapes of ranks (``levels``, oldest first): this rank's
    pieces of it (see :mod:`refinery.epoch_rest`) and the rows every rank yields in it."""

    epoch: int
    levels: tuple[epoch_rest.Level, ...]
    pieces: list[epoch_rest.Piece]
    total: int


def _saved_levels(saved: Any) -> list[epoch_rest.Level]:
    """A state's ``reshaped`` (the shapes its epoch was left in), checked; [] for a plain state."""
    if saved is None:
        return []
    try:
        if not isinstance(saved, list) or not saved:
            raise TypeError("must be a non-empty list")
        levels = [epoch_rest.Level(*(_integer(k, lv[k]) for k in ("world_size", "batch_size")), lv["drop_last"],
                                   _integer("position", lv["position"])) for lv in saved]
    except (TypeError, KeyError) as exc:
        raise LoaderStateError(f"loader state reshaped {saved!r} is not a list of {{world_size, batch_size, "
                               f"drop_last, position}} ({exc})") from None
    if any(lv.world_size < 1 or lv.batch_size < 1 or lv.position < 0 or not isinstance(lv.drop_last, bool)
           for lv in levels):
        raise LoaderStateError(f"loader state reshaped {saved!r}: world_size and batch_size must be >= 1, "
                               f"position >= 0, drop_last a bool")
    return levels


# What a state saved at an epoch's start may differ in: each rank's share of an epoch is dealt
# when the epoch starts, so only mid-epoch positions depend on them. Mid-epoch a change of shape
# deals the rest of the epoch to the new shape (h201); a change of rank alone is refused.
_RESHAPEABLE_AT_EPOCH_START = frozenset({"rank", "world_size", "batch_size", "drop_last"})
_SHAPE = frozenset({"world_size", "batch_size", "drop_last"})


def _finish_epoch_as_saved(saved: epoch_rest.Level, epoch: int) -> str:
    """How to reach the next epoch's start, where the shape may change, from a mid-epoch state of
    another shape: the saved ranks' loaders, all in this process if need be, to the epoch's end."""
    world, batch, drop_last = saved.world_size, saved.batch_size, saved.drop_last
    last = world - 1
    return (f"; to change it now, finish epoch {epoch} as saved: one TokenLoader per saved rank (rank=0..{last}, "
            f"world_size={world}, batch_size={batch}, drop_last={drop_last}; several may run in one process), each "
            f"loading its rank's state, iterated to the epoch's end; then their state_dict() (epoch {epoch + 1}, "
            f"position 0) loads into the new shape, every window once")


# What every rank's loader must share: each rank deals itself its windows from these, so a rank
# with another seed (``seed + rank``, a common mistake) reads windows others read too and misses others
_SHARED_BY_RANKS = ("dataset", "seed", "world_size", "seq_len", "batch_size", "block_size", "shuffle",
                    "shuffle_window", "drop_last", "epoch", "position", "reshaped")
_RANK_HINTS = {
    "seed": " (pass every rank the same seed, not seed + rank: ranks dealing with different seeds read some windows "
            "twice and others never)",
    "dataset": " (every rank must read the same tokens)",
    "epoch": " (each rank must load the state it saved itself at the same step)",
    "position": " (each rank must load the state it saved itself at the same step)",
    "reshaped": " (the rest of an epoch left in another shape: every rank must load a state saved at the same step)",
}


def _ranks_disagreement(settings: list[dict]) -> str | None:
    """What loaders' ``settings`` (one per process, in process-group rank order) disagree on, or None."""
    problems = []
    for key in _SHARED_BY_RANKS:
        by_value: dict[str, list[int]] = {}
        for proc, s in enumerate(settings):
            by_value.setdefault(json.dumps(s.get(key)), []).append(proc)
        if len(by_value) > 1:
            shown = "; ".join(f"{_setting_text(key, settings[procs[0]])} on {_ranks_text(procs)}"
                              for procs in by_value.values())
            problems.append(f"{key} differs: {shown}{_RANK_HINTS.get(key, '')}")
    if problems:
        return "; ".join(problems)
    world = int(settings[0]["world_size"])
    on: dict[int, list[int]] = {r: [] for r in range(world)}
    for proc, s in enumerate(settings):
        on.setdefault(int(s["rank"]), []).append(proc)
    if len({len(procs) for procs in on.values()}) > 1:
        # e.g. rank=LOCAL_RANK on two nodes: both nodes read rank 0's and 1's windows, none 2's and 3's
        shown = "; ".join(f"rank={r} on {_ranks_text(procs) if procs else 'none'}" for r, procs in sorted(on.items()))
        return (f"the loaders' rank values do not cover 0..{world - 1} equally ({shown}): give each data-parallel "
                f"rank its own rank (torch.distributed.get_rank(), not the node-local LOCAL_RANK) and "
                f"world_size the number of data-parallel ranks")
    return None


# -- the ranks' arrival at the check, through the process group's store (never a collective) --------
_STORE_PREFIX = "refinery.loader"
#: "r,r,...": the ranks that iterated a world_size=1 loader (every window), one request to read
_EVERY_WINDOW_RANKS = f"{_STORE_PREFIX}/every-window/ranks"
_ROUNDS: dict[str, int] = {}  # rank checks this process started, per group (a digest of its global ranks)
_NOTED_EVERY_WINDOW: set[str] = set()  # what this process noted or said of world_size=1 loaders


def _store_and_ranks(dist: Any, group: Any) -> tuple[Any, list[int]] | None:
    """The default process group's key-value store and ``group``'s global ranks, or None where
    this torch has no such store (the check then waits in the collective, as before).

    The store is ``ProcessGroup.get_group_store()`` of the default group (public; it was
    ``distributed_c10d._get_default_store()``, private): the one every rank rendezvoused through,
    with any backend (the process group holds it before any backend is made: NCCL, gloo or both).
    The default group's and not ``group``'s: a subgroup's store is its own key space, where the
    note of a world_size=1 loader, made outside any subgroup, would not be seen."""
    try:
        store = dist.group.WORLD.get_group_store()
        ranks = (dist.get_process_group_ranks(group) if group is not None
                 else list(range(dist.get_world_size())))
    except (AttributeError, RuntimeError, ValueError):
        return None
    return store, list(ranks)


def _every_window_ranks(store: Any) -> set[int]:
    """The ranks that iterated a ``world_size=1`` loader (every window) so far."""
    if not store.check([_EVERY_WINDOW_RANKS]):
        return set()
    return {int(r) for r in store.get(_EVERY_WINDOW_RANKS).decode().split(",") if r}


def _wait_for_ranks(dist: Any, group: Any, world_size: int, timeout: float | None) -> None:
    """Wait until every rank of ``group`` has reached its loader's check, at most ``timeout``
    seconds (None: the store's, i.e. the process group's timeout); then raise LoaderRanksError
    naming the ranks that did not. Polls a counter with non-blocking requests, fast for a second,
    then twice a second (a store ``wait`` that times out logs c10d socket warnings); a rank that
    iterates a world_size=1 loader instead is said at once. Ranks count their checks of each group
    alike, since every rank of a group checks the same loaders (a world_size=1 loader none)."""
    found = _store_and_ranks(dist, group)
    if found is None:
        return
    store, ranks = found
    tag = hashlib.sha256(",".join(map(str, ranks)).encode()).hexdigest()[:12]
    n = _ROUNDS[tag] = _ROUNDS.get(tag, 0) + 1
    key = f"{_STORE_PREFIX}/check/{tag}/{n}"
    store.set(f"{key}/{dist.get_rank()}", "1")
    arrived = int(store.add(f"{key}/arrived", 1))
    limit = store.timeout.total_seconds() if timeout is None else float(timeout)
    fast = min(0.5, max(0.02, len(ranks) * 1e-4))  # the store serves every rank's polls: fewer in a large job
    start, pause, look_at = time.monotonic(), 0.001, 1.0
    while arrived < len(ranks):
        waited = time.monotonic() - start
        if waited >= min(limit, look_at):
            users = _every_window_ranks(store).intersection(ranks)
            elsewhere = sorted(r for r in users if not store.check([f"{key}/{r}"]))
            if waited >= limit:
                missing = _first_missing(store, key, ranks, len(ranks) - arrived)
                raise LoaderRanksError(_missing_ranks_text(missing, len(ranks) - arrived, elsewhere, world_size, waited))
            if elsewhere and "waiting" not in _NOTED_EVERY_WINDOW:
                # said at once (and once per process: evaluation there is legitimate), the wait may be
                # the process group's timeout (30 min with gloo)
                _NOTED_EVERY_WINDOW.add("waiting")
                log.warning("TokenLoader: waiting up to %.0f s for every rank to reach the ranks' check: %s",
                            limit, _every_window_text(elsewhere, world_size))
                look_at = math.inf
            else:
                look_at = waited + 10.0
        time.sleep(min(pause, max(0.0, limit - waited)))
        # ranks usually arrive within milliseconds of each other: poll fast at first, then seldom
        pause = min(pause * 1.5, fast if waited < 1.0 else 0.5)
        arrived = int(store.add(f"{key}/arrived", 0))


def _first_missing(store: Any, key: str, ranks: list[int], n_missing: int, most: int = 8) -> list[int]:
    """Up to ``most`` of the ranks that have not reached check ``key`` (one request per rank looked at)."""
    missing: list[int] = []
    for r in ranks:
        if len(missing) >= min(most, n_missing):
            break
        if not store.check([f"{key}/{r}"]):
            missing.append(r)
    return missing


def _every_window_text(users: list[int], world_size: int) -> str:
    return (f"{_ranks_text(users)} {'has' if len(users) == 1 else 'have'} iterated a TokenLoader with world_size=1 "
            f"(every window) where this rank's has world_size={world_size}: evaluation there, or a rank that forgot "
            f"rank=/world_size= (then give every rank rank=torch.distributed.get_rank(), "
            f"world_size=torch.distributed.get_world_size())")


def _missing_ranks_text(missing: list[int], n_missing: int, elsewhere: list[int], world_size: int,
                        waited: float) -> str:
    why = (_every_window_text(elsewhere, world_size) if elsewhere else
           "every rank of the group must iterate its TokenLoader (or pass check_ranks=False on every rank)")
    seconds = f"{waited:.0f}" if waited >= 10 else f"{waited:.1f}"
    who = _ranks_text(missing) + (f", ... ({n_missing} ranks)" if n_missing > len(missing) else "")
    return (f"{who} did not reach the TokenLoaders' check of the ranks within {seconds} s "
            f"(check_ranks_timeout; the collective would have hung): {why}")


def _note_every_window_loader(dist: Any, loader: TokenLoader) -> None:
    """Leave in the process group's store that this rank iterates a ``world_size=1`` loader (a rank
    waiting for it in a check says so), and warn once when every rank of the group does with the
    same tokens: each reads every window, the data N times per step (a DDP job whose ranks forgot
    ``rank=``/``world_size=``). Non-blocking store requests only: never a wait, never a collective."""
    found = _store_and_ranks(dist, loader.process_group)
    if found is None or len(found[1]) < 2:
        return
    store, ranks = found
    me = dist.get_rank()
    if "marked" not in _NOTED_EVERY_WINDOW:
        store.append(_EVERY_WINDOW_RANKS, f"{me},")
        _NOTED_EVERY_WINDOW.add("marked")
    key = f"{_STORE_PREFIX}/every-window/{loader.data.fingerprint[:16]}"
    store.set(f"{key}/{me}", "1")
    if "warned" not in _NOTED_EVERY_WINDOW and store.check([f"{key}/{r}" for r in ranks]):
        _NOTED_EVERY_WINDOW.add("warned")
        log.warning("TokenLoader: all %d ranks iterate a TokenLoader with world_size=1 over %s: each reads every "
                    "window, the data %d times per step; give each rank rank=torch.distributed.get_rank(), "
                    "world_size=torch.distributed.get_world_size() (evaluating every window on every rank: "
                    "check_ranks=False silences this)", len(ranks), loader.data.uri, len(ranks))


def _setting_text(key: str, setting: dict) -> str:
    if key == "dataset":  # the tokens' fingerprint says little; where they were read says more
        return f"{setting.get('uri')} (tokens {str(setting.get(key))[:12]})"
    return repr(setting.get(key))


def _ranks_text(procs: list[int], most: int = 8) -> str:
    shown = ", ".join(map(str, procs[:most])) + (f", ... ({len(procs)} ranks)" if len(procs) > most else "")
    return f"rank{'s' if len(procs) > 1 else ''} {shown}"


def _batches_per_epoch(n_windows: int, block_size: int, world_size: int, batch_size: int, drop_last: bool) -> int:
    """Batches every rank yields per epoch: the busiest rank's windows in batches, or with
    ``drop_last`` only the full batches the least busy rank fills."""
    blocks_per_rank = (n_windows // block_size) // world_size
    loose = n_windows - blocks_per_rank * world_size * block_size
    if drop_last:
        return (blocks_per_rank * block_size + loose // world_size) // batch_size
    return math.ceil((blocks_per_rank * block_size + math.ceil(loose / world_size)) / batch_size)


def _same_setting(saved: Any, now: Any) -> bool:
    """Whether a saved identity value is this loader's: as JSON holds them (numpy integers as
    ints; seed 3.0 is not 3, whose shuffle differs), a flag as its truth (shuffle 1 is True)."""
    if isinstance(now, bool):
        return isinstance(saved, (bool, np.bool_, int, np.integer)) and bool(saved) == now
    if isinstance(saved, np.integer):
        saved = int(saved)
    return json.dumps(saved) == json.dumps(now)


def _integer(name: str, value: Any) -> int:
    """``value`` as a Python int (numpy integers too); floats and strings are refused, naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {value!r} ({type(value).__name__})") from None


_MAX_WORKERS = 256  # DataLoader workers per dataset: one shared counter each
_RECOLLATED = ("DataLoader(ds) without batch_size=None collates the dataset's ready batches again into (1, B, seq_len): "
               "pass batch_size=None (the loader batches itself)")
_WORKERS_STATE = ("this dataset was iterated in DataLoader worker processes, where its position advances ahead of "
                  "training (prefetch): pass the batches the training loop took from this iteration, "
                  "ds.state_dict(batches=N), or use torchdata's StatefulDataLoader")

_OUT_OF_ORDER = ("DataLoader(in_order=False) hands out the workers' batches as they are ready, so the N batches the "
                 "loop took are not the iteration's first N: state_dict(batches=N) would resume repeating some and "
                 "skipping others; use in_order=True (the default) to resume exactly")


def _started_by_out_of_order_loader(frame: Any) -> bool:
    """Whether the DataLoader iterator that started this worker process (or is starting one: spawn)
    hands out batches as its 2+ workers finish them (``in_order=False``): its ``__init__`` starts the
    workers, so its frame is on a forked worker's stack (fork copies it) and on the training
    process's while it pickles the dataset for a spawned one. Torch's and torchdata's iterators
    keep the flag as ``_in_order``; without such a frame, in order (as before)."""
    while frame is not None:
        it = frame.f_locals.get("self")
        if type(it).__name__.endswith("DataLoaderIter") and isinstance(getattr(it, "_in_order", None), bool):
            return not it._in_order and (getattr(it, "_num_workers", 0) or 0) > 1
        frame = frame.f_back
    return False


def _collated_again(caller: Any) -> bool:
    """Whether ``iter(dataset)`` was called by a DataLoader fetcher that batches what it yields
    (``DataLoader(ds)``: the default ``batch_size=1``). Torch's and torchdata's fetchers keep the
    flag as ``auto_collation``; a caller without it is left alone."""
    fetcher = caller.f_locals.get("self")
    return type(fetcher).__name__.endswith("IterableDatasetFetcher") and bool(getattr(fetcher, "auto_collation", False))


@cache
def _torch_dataset_class() -> type:
    import multiprocessing
    import sys

    import torch
    from torch.utils.data import IterableDataset, get_worker_info

    # the array shared with DataLoader workers: where iteration 0 starts (epoch, position: a load's,
    # or the last iteration in this process's), iterations run here since (0 or 1), whether the
    # workers' DataLoader hands out batches out of order (1: in_order=False), and each worker's
    # count of iterations since
    LOADED, HERE, OUT_OF_ORDER, COUNTS = 0, 2, 3, 4

    class TorchTokenDataset(IterableDataset):
        """A :class:`TokenLoader` as a PyTorch ``IterableDataset`` yielding ready batches.

        Use ``DataLoader(ds, batch_size=None, num_workers=N)``. With workers, worker ``k`` of ``N``
        yields the rank's batches ``k, k + N, ...`` and the DataLoader takes them in turn: the same
        batches in the same order as ``num_workers=0``, each once. An iteration runs one epoch, with
        workers or without: the first after a load starts at the loaded position, each later one at
        the start of the epoch after the previous iteration's (a loop that left an iteration early
        starts the next epoch, as torchdata's StatefulDataLoader and Mosaic's StreamingDataset do;
        workers ran ahead, so only the loop knows how far it got). Workers count their iterations in
        memory shared with the main process (no lock, no race).
        """

        def __init__(self, loader: TokenLoader) -> None:
            self.loader = loader
            # inherited by forked workers, sent along to spawned ones (see __getstate__)
            self._shared = multiprocessing.RawArray("q", COUNTS + _MAX_WORKERS)
            self._shared[LOADED:LOADED + 2] = [loader.epoch, loader.position]
            self._loaded_here: int | None = None  # a worker given its own state (torchdata): its iteration's first batch
            self._out_of_order: bool | None = None  # in a worker: whether its DataLoader hands out batches out of order
            if get_worker_info() is None and not loader._ranks_checked:
                # workers iterate in their own processes, where no collective may run: compare the
                # ranks' settings here if the process group is up (else at the first iteration here)
                loader._check_ranks_once(first_iteration=False)

        def __getstate__(self) -> dict:
            from multiprocessing.context import get_spawning_popen

            state = dict(self.__dict__)
            if get_spawning_popen() is None:  # pickled by the user, not sent to a worker: a copy
                state["_shared"] = list(self._shared)
            else:  # sent to a worker being started: by the DataLoader iterator on this stack
                state["_out_of_order"] = _started_by_out_of_order_loader(sys._getframe(1))
            return state

        def __reduce__(self):  # the class is made on first use (torch is optional): rebuilt by a module function
            return _rebuilt_torch_dataset, (self.__getstate__(),)

        def __setstate__(self, state: dict) -> None:
            if isinstance(state["_shared"], list):
                shared = multiprocessing.RawArray("q", len(state["_shared"]))
                shared[:] = state["_shared"]
                state["_shared"] = shared
            self.__dict__.update({"_out_of_order": None, **state})

        def __copy__(self):  # copy.copy worked before (a review): the same loader, its own shared state
            return type(self)(self.loader)

        def _iteration_start(self, i: int) -> tuple[int, int]:
            """Where the ``i``-th iteration since iteration 0 starts: each runs an epoch."""
            epoch, position = self._shared[LOADED], self._shared[LOADED + 1]
            if position >= self.loader._epoch_rows(epoch):
                epoch, position = epoch + 1, 0
            return (epoch, position) if i == 0 else (epoch + i, 0)

        def _iterations_started(self) -> int:
            """Iterations since iteration 0, here and in workers (each worker runs every one)."""
            return self._shared[HERE] + max(self._shared[COUNTS:])

        def _workers_ran(self) -> bool:
            return max(self._shared[COUNTS:]) > 0

        def __iter__(self):
            if _collated_again(sys._getframe(1)):
                raise ValueError(_RECOLLATED)
            info, loader = get_worker_info(), self.loader
            if info is None:
                loader._split = (0, 1, None)
                # the epoch after the previous iteration's, whether it ran here or in workers, to its
                # end or not (it continued a partial one here, so workers and none differed)
                start = self._iteration_start(self._iterations_started())
                self._reset_shared(*start)
                self._shared[HERE] = 1
                self._start_at(*start)
                return self._tensors()
            if info.num_workers > _MAX_WORKERS:
                raise ValueError(f"num_workers={info.num_workers}: at most {_MAX_WORKERS} DataLoader workers")
            if self._out_of_order is None:  # forked: the DataLoader iterator that started it is on the stack
                self._out_of_order = _started_by_out_of_order_loader(sys._getframe(1))
            # said to the training process, whose state_dict(batches=N) cannot be exact then (each
            # worker of one DataLoader writes the same value)
            self._shared[OUT_OF_ORDER] = int(self._out_of_order)
            count = self._shared[COUNTS + info.id]
            self._shared[COUNTS + info.id] = count + 1  # only this worker writes its count
            if self._loaded_here is None:
                self._start_at(*self._iteration_start(self._shared[HERE] + count))
                first = self.loader.state_dict()["position"] // self.loader.batch_size
            else:  # torchdata restored this worker's state: the iteration's first batch with it
                first, self._loaded_here = self._loaded_here, None
            loader._split = (info.id, info.num_workers, first)
            return self._tensors()

        def _tensors(self):
            for batch in self.loader:
                yield {k: torch.from_numpy(v) for k, v in batch.items()}

        def _start_at(self, epoch: int, position: int) -> None:
            loader = self.loader
            if (loader.epoch, loader.position) != (epoch, position):
                if loader._active is not None:
                    loader._active.close()
                    loader._active = None
                loader.epoch, loader.position = int(epoch), int(position)

        def _reset_shared(self, epoch: int, position: int) -> None:
            self._shared[:] = [epoch, position] + [0] * (len(self._shared) - 2)

        def __len__(self) -> int:
            return len(self.loader)

        def state_dict(self, batches: int | None = None) -> dict:
            """The loader's position (``TokenLoader.state_dict``). After iterating in DataLoader
            workers only the training loop knows how many batches it took: give that count of the
            current iteration as ``batches`` (without it, refused: the workers ran ahead)."""
            in_workers = get_worker_info() is None and self._workers_ran()
            if batches is None:
                if in_workers:
                    raise RuntimeError(_WORKERS_STATE)
                if get_worker_info() is not None:  # torchdata asks each worker: with its iteration's first batch
                    return {**self.loader.state_dict(), "worker_first_batch": self.loader._split[2]}
                return self.loader.state_dict()
            batches = _integer("batches", batches)
            if in_workers and self._shared[OUT_OF_ORDER]:
                raise RuntimeError(_OUT_OF_ORDER)
            # the current iteration's start (before any: where the next one starts)
            epoch, position = self._iteration_start(max(0, self._iterations_started() - 1))
            end = self.loader._epoch_rows(epoch)
            if position >= end:
                epoch, position = epoch + 1, 0
                end = self.loader._epoch_rows(epoch)
            left = (end - position) // self.loader.batch_size
            if not 0 <= batches <= left:
                raise ValueError(f"batches={batches}: the current iteration (epoch {epoch}) holds {left} batches")
            return self.loader.state_at(epoch, position + batches * self.loader.batch_size)

        def load_state_dict(self, state: dict) -> None:
            self.loader.load_state_dict(state)
            if get_worker_info() is not None:  # torchdata restores each worker's own state in the worker
                first = state.get("worker_first_batch")
                self._loaded_here = self.loader.position // self.loader.batch_size if first is None else int(first)
                return
            self._reset_shared(self.loader.epoch, self.loader.position)

    return TorchTokenDataset


def _rebuilt_torch_dataset(state: dict) -> IterableDataset:
    """A torch dataset sent to a spawned DataLoader worker (or pickled), from its ``__getstate__``."""
    cls = _torch_dataset_class()
    ds = cls.__new__(cls)
    ds.__setstate__(state)
    return ds


def torch_dataset(loader: TokenLoader) -> IterableDataset:
    """Wrap ``loader`` as a ``torch.utils.data.IterableDataset`` of dicts of tensors, with
    ``state_dict()`` / ``load_state_dict()`` and ``len()``; use it with ``DataLoader(ds, batch_size=None,
    num_workers=N)`` (workers split the rank's batches, same order as none). Raises ImportError without torch."""
    try:
        cls = _torch_dataset_class()
    except ImportError as exc:
        raise ImportError("torch is not installed: use TokenLoader directly (numpy batches) or pip install torch") from exc
    return cls(loader)
