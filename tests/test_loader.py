"""The training loader over real token shards: exactly-once across ranks, determinism, resume, S3, bad input."""

from __future__ import annotations

import functools
import gc
import hashlib
import itertools
import json
import logging
import os
import shutil
from collections import Counter

import numpy as np
import pytest

from _fault_fixtures import FaultPolicy, through_proxy  # noqa: F401 - fixture
from refinery.io import fs
from refinery.loader import (
    IGNORE_INDEX,
    LoaderRanksError,
    LoaderStateError,
    TokenDataset,
    TokenLoader,
    _ranks_disagreement,
    torch_dataset,
)
from refinery.tokens import TokenizerMismatchError, TokenShardError, load_tokenizer
from refinery.tokens.writer import read_manifest_bytes, resolve_token_dir, tokenize_run

from tests._tokens_fixtures import GPT_NEO_JSON

# Fixtures: s3_root (a prefix on the session's moto server), kept_run / gpt2_tokens (real CC text).
pytest_plugins = ["tests._s3_fixtures", "tests._tokens_fixtures"]

SEQ = 127  # windows of 128 tokens


def _stream(token_dir: str) -> np.ndarray:
    """The whole token stream, read directly from the .bin files (independently of the loader)."""
    manifest = json.loads(fs.read_bytes(fs.join(token_dir, "manifest.json")))
    return np.concatenate([np.frombuffer(fs.read_bytes(fs.join(token_dir, s["bin"])), manifest["dtype"])
                           for s in manifest["shards"]])


def _rows(batch: dict, seq_len: int = SEQ) -> list[tuple[int, ...]]:
    """The real windows in a batch, rebuilt from input_ids / labels / lengths."""
    rows = []
    for ids, labels, n in zip(batch["input_ids"], batch["labels"], batch["lengths"]):
        n = int(n)
        if n == 0:
            assert (labels == IGNORE_INDEX).all()
            continue
        window = ids[: min(n, seq_len)].tolist() + ([int(labels[-1])] if n == seq_len + 1 else [])
        assert (labels[: n - 1] == ids[1:n]).all() if n <= seq_len else (labels[:-1] == ids[1:]).all()
        assert (labels[max(n - 1, 0):] == IGNORE_INDEX).all()
        rows.append(tuple(window))
    return rows


def _epoch(loader: TokenLoader) -> list[dict]:
    return [{k: v.copy() for k, v in b.items()} for b in loader]


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("block_size", [None, 5, 64])
def test_every_token_exactly_once_across_ranks(gpt2_tokens, world_size, block_size):
    stream = _stream(gpt2_tokens)
    expected = sorted(tuple(stream[i : i + SEQ + 1].tolist()) for i in range(0, len(stream), SEQ + 1))
    data = TokenDataset(gpt2_tokens)
    assert data.n_tokens == len(stream) and len(data.shards) == 4  # 4 uneven shards, not a multiple of ranks
    got, counts = [], []
    for rank in range(world_size):
        loader = TokenLoader(data, SEQ, 8, seed=11, rank=rank, world_size=world_size, block_size=block_size)
        batches = _epoch(loader)
        counts.append(len(batches))
        assert len(batches) == len(loader)
        got.extend(r for b in batches for r in _rows(b))
    assert len(set(counts)) == 1  # every rank takes the same number of steps (DDP lockstep)
    assert sorted(got) == expected  # nothing dropped, nothing repeated
    assert sum(len(r) for r in got) == len(stream)


def test_deterministic_and_seeded(gpt2_tokens):
    data = TokenDataset(gpt2_tokens)
    a = _epoch(TokenLoader(data, SEQ, 4, seed=1, rank=1, world_size=3, block_size=8))
    b = _epoch(TokenLoader(gpt2_tokens, SEQ, 4, seed=1, rank=1, world_size=3, block_size=8))
    c = _epoch(TokenLoader(data, SEQ, 4, seed=2, rank=1, world_size=3, block_size=8))
    assert _same(a, b) and not _same(a, c)
    other = {r for x in _epoch(TokenLoader(data, SEQ, 4, seed=1, rank=0, world_size=3, block_size=8)) for r in _rows(x)}
    assert not other & {r for x in a for r in _rows(x)}  # ranks never share a window


def test_unshuffled_is_the_stream_in_order(gpt2_tokens):
    stream = _stream(gpt2_tokens)
    rows = [r for b in TokenLoader(gpt2_tokens, SEQ, 16, shuffle=False, block_size=10) for r in _rows(b)]
    assert np.array_equal(np.concatenate([np.array(r) for r in rows]), stream)


def test_epochs_reshuffle_and_each_is_complete(gpt2_tokens):
    loader = TokenLoader(gpt2_tokens, SEQ, 8, seed=3, block_size=6)
    first, second = _epoch(loader), _epoch(loader)
    assert loader.epoch == 2 and loader.position == 0
    assert not _same(first, second)
    assert sorted(r for b in first for r in _rows(b)) == sorted(r for b in second for r in _rows(b))


@pytest.mark.parametrize("stop_after", [1, 17, 40])
def test_resume_mid_epoch_gives_the_same_remaining_batches(gpt2_tokens, stop_after):
    kwargs = {"seed": 5, "rank": 1, "world_size": 2, "block_size": 7, "shuffle_window": 3}
    reference = TokenLoader(gpt2_tokens, SEQ, 8, **kwargs)
    full = _epoch(reference) + _epoch(reference)  # two epochs

    loader = TokenLoader(gpt2_tokens, SEQ, 8, **kwargs)
    it = iter(loader)
    seen = [{k: v.copy() for k, v in next(it).items()} for _ in range(stop_after)]
    state = json.loads(json.dumps(loader.state_dict()))  # what a checkpoint would store
    del it, loader  # the training job dies

    resumed = TokenLoader(gpt2_tokens, SEQ, 8, **kwargs)
    resumed.load_state_dict(state)
    rest = _epoch(resumed) + _epoch(resumed)
    assert _same(seen + rest, full)


def test_resume_at_epoch_end_starts_next_epoch(gpt2_tokens):
    loader = TokenLoader(gpt2_tokens, SEQ, 8, seed=9, block_size=4)
    _epoch(loader)
    state = loader.state_dict()
    assert (state["epoch"], state["position"]) == (1, 0)
    nxt = _epoch(loader)
    resumed = TokenLoader(gpt2_tokens, SEQ, 8, seed=9, block_size=4)
    resumed.load_state_dict(state)
    assert _same(_epoch(resumed), nxt)


def test_state_from_another_setup_is_refused(gpt2_tokens):
    loader = TokenLoader(gpt2_tokens, SEQ, 8, seed=1, world_size=2)
    first = {k: v.copy() for k, v in next(iter(loader)).items()}  # mid-epoch: this rank's share is dealt
    state = loader.state_dict()
    # h189's way to another world size mid-epoch (before h201 the only one): finish the epoch as saved, both
    # saved ranks in this process: epoch 0 once, then epoch 1 dealt to world_size=1
    other = TokenLoader(gpt2_tokens, SEQ, 8, seed=1, rank=1, world_size=2)
    seen = _rows(first) + _rows(next(iter(other)))
    for rank, saved in enumerate((state, other.state_dict())):
        finishing = TokenLoader(gpt2_tokens, SEQ, 8, seed=1, rank=rank, world_size=2)
        finishing.load_state_dict(saved)
        seen += [row for b in _epoch(finishing) for row in _rows(b)]
    stream = _stream(gpt2_tokens)
    assert sorted(seen) == sorted(tuple(stream[i : i + SEQ + 1].tolist()) for i in range(0, len(stream), SEQ + 1))
    shrunk, fresh = (TokenLoader(gpt2_tokens, SEQ, 8, seed=1) for _ in range(2))
    shrunk.load_state_dict(finishing.state_dict())
    _epoch(fresh)
    assert _same(_epoch(shrunk), _epoch(fresh))
    with pytest.raises(LoaderStateError, match="seq_len"):
        TokenLoader(gpt2_tokens, 63, 8, seed=1, world_size=2).load_state_dict(state)
    # rank 0's state loaded on rank 1 (a checkpoint saved on rank 0 only): the message says what to save
    with pytest.raises(LoaderStateError, match=r"rank: saved 0 vs now 1\).*mid-epoch each rank resumes from its own "
                                               r"state: save every rank's state_dict\(\)"):
        TokenLoader(gpt2_tokens, SEQ, 8, seed=1, rank=1, world_size=2).load_state_dict(state)
    at_start = TokenLoader(gpt2_tokens, SEQ, 8, seed=1, world_size=2).state_dict()
    for other in ({"seed": 2}, {"block_size": 5}, {"shuffle": False}):  # these change the epoch's plan itself
        with pytest.raises(LoaderStateError, match=next(iter(other))):
            TokenLoader(gpt2_tokens, SEQ, 8, **{"seed": 1, "world_size": 2, **other}).load_state_dict(at_start)


@pytest.mark.parametrize(("old_world", "new_world", "new_batch"), [(2, 3, 8), (3, 1, 8), (2, 4, 5)])
def test_world_size_changes_at_an_epoch_boundary(gpt2_tokens, old_world, new_world, new_batch):
    """An elastic restart: a job saved at the end of epoch 0 on ``old_world`` ranks resumes on
    ``new_world`` ranks (each loading rank 0's state): epoch 1 is dealt to the new ranks exactly as
    a fresh loader of that shape deals it, every window once."""
    data = TokenDataset(gpt2_tokens)
    saved = TokenLoader(data, SEQ, 8, seed=6, rank=0, world_size=old_world, block_size=9)
    _epoch(saved)
    state = json.loads(json.dumps(saved.state_dict()))
    assert (state["epoch"], state["position"]) == (1, 0)
    got = []
    for rank in range(new_world):
        resumed = TokenLoader(data, SEQ, new_batch, seed=6, rank=rank, world_size=new_world, block_size=9)
        resumed.load_state_dict(state)
        assert resumed.epoch == 1
        batches = _epoch(resumed)
        fresh = TokenLoader(data, SEQ, new_batch, seed=6, rank=rank, world_size=new_world, block_size=9)
        _epoch(fresh)  # epoch 0
        assert _same(batches, _epoch(fresh))
        got.extend(r for b in batches for r in _rows(b))
    stream = _stream(gpt2_tokens)
    assert sorted(got) == sorted(tuple(stream[i : i + SEQ + 1].tolist()) for i in range(0, len(stream), SEQ + 1))


# -- Session 49 (h201): a job restarted mid-epoch on another shape continues the epoch -----------------

def _shape(world_size: int, batch_size: int = 8, drop_last: bool = False) -> dict:
    return {"world_size": world_size, "batch_size": batch_size, "drop_last": drop_last}


def _left_epoch(data, old: dict, stop: int, epoch: int = 0) -> tuple[list, list[dict]]:
    """Every rank of ``old`` iterates ``stop`` batches into ``epoch``: their rows and states (JSON)."""
    rows, states = [], []
    for rank in range(old["world_size"]):
        loader = TokenLoader(data, SEQ, old["batch_size"], seed=6, rank=rank, world_size=old["world_size"],
                             drop_last=old["drop_last"], block_size=9)
        loader.load_state_dict(loader.state_at(epoch, 0))
        rows += [r for b in itertools.islice(loader, stop) for r in _rows(b)]
        states.append(json.loads(json.dumps(loader.state_dict())))
    return rows, states


def _rest_on(data, new: dict, states: list[dict], crash: int | None = None) -> tuple[list, list[TokenLoader]]:
    """Each rank of ``new`` loads one saved state (new rank j: old rank j's, else rank 0's) and runs the
    epoch's rest, crashing after ``crash`` batches and resuming from its state: the rows, the loaders."""
    rows, loaders, counts = [], [], set()
    for rank in range(new["world_size"]):
        make = lambda: TokenLoader(data, SEQ, new["batch_size"], seed=6, rank=rank, world_size=new["world_size"],  # noqa: E731
                                   drop_last=new["drop_last"], block_size=9)
        loader = make()
        loader.load_state_dict(states[rank] if rank < len(states) else states[0])
        if crash is not None:
            whole = _epoch(_loaded(make(), loader.state_dict()))
            head = [{k: v.copy() for k, v in b.items()} for b in itertools.islice(loader, crash)]
            loader, saved = make(), json.loads(json.dumps(loader.state_dict()))
            loader.load_state_dict(saved)  # the crashed rest resumes exactly
            batches = head + _epoch(loader)
            assert _same(batches, whole)
        else:
            batches = _epoch(loader)
        assert min(_targets_per_batch(batches)) > 0  # no batch without a target
        counts.add(len(batches))
        rows += [r for b in batches for r in _rows(b)]
        loaders.append(loader)
    assert len(counts) == 1  # DDP lockstep in the rest too
    return rows, loaders


def _loaded(loader: TokenLoader, state: dict) -> TokenLoader:
    loader.load_state_dict(state)
    return loader


@functools.cache  # per token directory (the session's gpt2_tokens, never changed): ~0.1-0.3 s a call
def _all_windows(tokens: str) -> Counter:
    stream = _stream(tokens)
    return Counter(tuple(stream[i : i + SEQ + 1].tolist()) for i in range(0, len(stream) - 1, SEQ + 1))


@pytest.mark.parametrize(("old_world", "new_world", "new_batch"), [(4, 2, 8), (4, 3, 8), (4, 1, 8), (2, 4, 8), (4, 2, 5)])
@pytest.mark.parametrize("stop", [1, 150, 296])
def test_a_job_restarted_mid_epoch_on_another_world_size_reads_every_window_once(gpt2_tokens, old_world, new_world,
                                                                                 new_batch, stop):
    """Session 49 (h201): a mid-epoch state of another world size / batch size was refused (session 48:
    with how to finish the epoch as saved). Now each new rank loads one saved state (any old rank's) and
    the old ranks' unread windows are dealt to the new ranks: every window of the epoch once across old
    and new ranks, the new ranks in lockstep, a crash inside the rest resumed exactly, then the normal
    epochs of the new shape. 9,451 windows: 296 batches of 8 per rank on 4 ranks (stop 296: the last)."""
    data = TokenDataset(gpt2_tokens)
    old, new = _shape(old_world), _shape(new_world, new_batch)
    stop = min(stop, len(TokenLoader(data, SEQ, 8, world_size=old_world, block_size=9)) - 1)
    head, states = _left_epoch(data, old, stop)
    assert len({(s["epoch"], s["position"]) for s in states}) == 1 and states[0]["position"] == stop * 8
    rest, loaders = _rest_on(data, new, states, crash=3 if stop == 150 else None)
    assert Counter(head + rest) == _all_windows(gpt2_tokens)  # none repeated, none lost
    for rank, loader in enumerate(loaders):  # then epoch 1 as the new shape deals it
        assert loader.state_dict()["epoch"] == 1 and "reshaped" not in loader.state_dict()
        fresh = TokenLoader(data, SEQ, new_batch, seed=6, rank=rank, world_size=new_world, block_size=9)
        fresh.load_state_dict(fresh.state_at(1, 0))
        assert _same(list(itertools.islice(loader, 5)), list(itertools.islice(fresh, 5)))


def test_a_rest_left_again_and_drop_last_either_side(gpt2_tokens):
    """The rest of an epoch left again (4 -> 3, crash, -> 2: the state keeps both shapes), in epoch 1; and
    drop_last on either side: the windows the old shape dropped stay dropped, none is repeated."""
    data = TokenDataset(gpt2_tokens)
    head, states = _left_epoch(data, _shape(4), 40, epoch=1)
    middle, loaders = [], []
    for rank in range(3):
        loader = TokenLoader(data, SEQ, 8, seed=6, rank=rank, world_size=3, block_size=9)
        loader.load_state_dict(states[0])
        middle += [r for b in itertools.islice(loader, 60) for r in _rows(b)]
        loaders.append(json.loads(json.dumps(loader.state_dict())))
    assert loaders[0]["reshaped"] == [{"world_size": 4, "batch_size": 8, "drop_last": False, "position": 320}]
    rest, _ = _rest_on(data, _shape(2, 6), loaders)
    assert Counter(head + middle + rest) == _all_windows(gpt2_tokens)
    # drop_last=True saved, resumed without: exactly the windows the old shape would have trained
    head, states = _left_epoch(data, _shape(3, 8, True), 100)
    whole = [r for rank in range(3) for b in TokenLoader(data, SEQ, 8, seed=6, rank=rank, world_size=3,
                                                            drop_last=True, block_size=9) for r in _rows(b)]
    rest, _ = _rest_on(data, _shape(2, 5), states, crash=2)
    assert Counter(head + rest) == Counter(whole)
    # resumed with drop_last=True: full batches only; nothing repeated, fewer than ranks x (batch + 1) dropped
    head, states = _left_epoch(data, _shape(2), 100)
    rest, _ = _rest_on(data, _shape(3, 8, True), states)
    assert not Counter(head + rest) - _all_windows(gpt2_tokens)
    assert 0 < sum(_all_windows(gpt2_tokens).values()) - len(head + rest) < 3 * 9


def test_a_rest_that_cannot_be_exact_is_refused(gpt2_tokens):
    data = TokenDataset(gpt2_tokens)
    one = TokenLoader(data, SEQ, 8, seed=6)  # 9,451 windows: 1,182 batches, the last of 3 windows
    state = one.state_at(0, 1181 * 8)
    with pytest.raises(LoaderStateError, match=r"^the rest of epoch 0 \(3 windows, left at position 9448 with "
                                               r"world_size 1\) dealt to world_size 4 with batch_size 8 would give "
                                               r"rank\(s\) 0 a batch without any target \(a NaN loss: fewer windows "
                                               r"left than ranks\); resume it with drop_last=True, or to change it "
                                               r"now, finish epoch 0 as saved: one TokenLoader per saved rank"):
        TokenLoader(data, SEQ, 8, seed=6, world_size=4).load_state_dict(state)
    dropped = TokenLoader(data, SEQ, 8, seed=6, world_size=4, drop_last=True)
    dropped.load_state_dict(state)  # drop_last: a rest of no full batch is dropped, the next epoch starts
    assert (dropped.epoch, dropped.position) == (1, 0)
    # batch_size 1 on 13 ranks (9,451 = 13 x 727 windows: no padding in an epoch): 9,443 left, unequal ranks
    with pytest.raises(LoaderStateError, match=r"would give rank\(s\) 0, 1, 3, 4, 6, 8, 9, 11 a batch without any "
                                               r"target \(a NaN loss\)"):
        TokenLoader(data, SEQ, 1, seed=6, world_size=13).load_state_dict(one.state_at(0, 8))
    with pytest.raises(LoaderStateError, match=r"position 5 is not a batch boundary of the epoch as dealt to "
                                               r"world_size 1, batch_size 8"):
        TokenLoader(data, SEQ, 8, seed=6, world_size=2).load_state_dict(one.state_at(0, 5))
    for bad in ("4", [], [{"world_size": 4}], [{"world_size": 0, "batch_size": 8, "drop_last": False, "position": 8}]):
        with pytest.raises(LoaderStateError, match=r"^loader state reshaped "):
            one.load_state_dict(one.state_at(0, 8) | {"reshaped": bad})
    rest = TokenLoader(data, SEQ, 8, seed=6, world_size=2)
    rest.load_state_dict(one.state_at(0, 8))
    with pytest.raises(LoaderStateError, match=r"rank: saved 0 vs now 1\).*mid-epoch each rank resumes from its own"):
        TokenLoader(data, SEQ, 8, seed=6, rank=1, world_size=2).load_state_dict(rest.state_dict())
    with pytest.raises(LoaderStateError, match="seq_len: saved 127 vs now 63"):  # only the shape may change
        TokenLoader(data, 63, 8, seed=6, world_size=2).load_state_dict(one.state_at(0, 8))


def test_the_rest_of_an_epoch_in_dataloader_workers(gpt2_tokens):
    """The rest of a reshaped epoch through torch_dataset and 2 DataLoader workers: the numpy loader's
    batches, and state_dict(batches=N) inside the rest resumes exactly."""
    pytest.importorskip("torch")
    data = TokenDataset(gpt2_tokens)
    _, states = _left_epoch(data, _shape(3), 100)
    make = lambda: _loaded(TokenLoader(data, SEQ, 32, seed=6, rank=1, world_size=2, block_size=9), states[2])  # noqa: E731
    one = make()
    want = _epoch(one) + _epoch(one)[:3]
    ds = torch_dataset(make())
    got = _dataloader_batches(ds, 4, num_workers=2)
    state = json.loads(json.dumps(ds.state_dict(batches=4)))
    assert state["reshaped"][0]["position"] == 800 and state["position"] == 128
    resumed = torch_dataset(TokenLoader(data, SEQ, 32, seed=6, rank=1, world_size=2, block_size=9))
    resumed.load_state_dict(state)
    got += _dataloader_batches(resumed, num_workers=2) + _dataloader_batches(resumed, 3)  # then epoch 1
    assert _same(got, want)


def test_a_rerun_that_redid_nothing_keeps_saved_states_valid(gpt2_tokens, tmp_path):
    """Found by adversarial testing: the dataset fingerprint was the manifest's SHA-256, and a
    rerun that redid nothing rewrote the manifest (the tokenizer's path as typed, the installed
    tokenizers version), so every saved training state was refused. It is the tokens' now."""
    data = _copy(gpt2_tokens, tmp_path / "tok")
    loader = TokenLoader(data, SEQ, 8, seed=1)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    manifest = json.loads((tmp_path / "tok" / "manifest.json").read_text())
    manifest["tokenizer"]["id"] = "./elsewhere/gpt2.json"
    manifest["tokenizer"]["tokenizers_version"] = "0.99.0"
    manifest["source"]["run_dir"] = "/another/spelling"
    (tmp_path / "tok" / "manifest.json").write_text(json.dumps(manifest, indent=2))
    resumed = TokenLoader(data, SEQ, 8, seed=1)
    resumed.load_state_dict(state)
    assert resumed.position == loader.position
    # a state saved before (the manifest's SHA-256) still loads; other tokens are refused
    import hashlib

    old = dict(state, dataset=hashlib.sha256((tmp_path / "tok" / "manifest.json").read_bytes()).hexdigest())
    TokenLoader(data, SEQ, 8, seed=1).load_state_dict(old)
    manifest["shards"][0]["bin_sha256"] = "0" * 64
    (tmp_path / "tok" / "manifest.json").write_text(json.dumps(manifest, indent=2))
    sidecar = json.loads((tmp_path / "tok" / "shard-00.json").read_text())  # as tokens redone write both
    (tmp_path / "tok" / "shard-00.json").write_text(json.dumps(dict(sidecar, bin_sha256="0" * 64)))
    with pytest.raises(LoaderStateError, match="dataset") as refused:
        TokenLoader(data, SEQ, 8, seed=1).load_state_dict(state)
    # what to do, in the same line: tokens redone (an upgrade's) cannot take a state of the old ones
    assert "\n" not in str(refused.value) and "resume on the token shards it was saved on" in str(refused.value)


def test_s3_loader_matches_local_and_resumes(gpt2_tokens, s3_root, through_proxy):
    for name in os.listdir(gpt2_tokens):
        fs.write_bytes(f"{s3_root}/tok/{name}", fs.read_bytes(os.path.join(gpt2_tokens, name)))
    # the manifest's own path, as Megatron takes file paths, and a trailing slash: the same directory
    # (the manifest was read as a directory: "no token manifest at .../manifest.json/manifest.json")
    for spelling in (f"{s3_root}/tok/manifest.json", f"{s3_root}/tok/", os.path.join(gpt2_tokens, "manifest.json")):
        assert resolve_token_dir(spelling).rstrip("/") == spelling.removesuffix("/").removesuffix("/manifest.json")
    kwargs = {"seed": 4, "rank": 2, "world_size": 3, "block_size": 16, "prefetch": 3, "threads": 4}
    local = _epoch(TokenLoader(gpt2_tokens, SEQ, 8, **kwargs))
    requests: list[tuple[str, str]] = []
    through_proxy(FaultPolicy(when=lambda method, path: requests.append((method, path)) or False))
    remote_loader = TokenLoader(f"{s3_root}/tok", SEQ, 8, **kwargs)
    # each shard's .idx in one GET (pinned to the listing's ETag): it was a HEAD and 4 ranged GETs (h141)
    assert [m for m, p in requests if p.endswith(".idx")] == ["GET"] * len(remote_loader.data.shards)
    it = iter(remote_loader)
    head = [{k: v.copy() for k, v in next(it).items()} for _ in range(5)]
    state = remote_loader.state_dict()
    resumed = TokenLoader(f"{s3_root}/tok", SEQ, 8, **kwargs)
    resumed.load_state_dict(state)
    assert _same(head + _epoch(resumed), local)


def _copy(src: str, dst) -> str:
    shutil.copytree(src, dst)
    return str(dst)


def test_shard_from_another_tokenizer_is_refused(kept_run, gpt2_tokens, tmp_path):
    neo = str(tmp_path / "neo")
    # (that shard alone, 7 documents: the whole run's 717 cost ~1.5-4 s)
    tokenize_run(kept_run, neo, str(GPT_NEO_JSON), shards={"shard-01": os.path.join(kept_run, "kept", "shard-01.parquet")},
                 progress=False)
    mixed = _copy(gpt2_tokens, tmp_path / "mixed")
    for ext in (".bin", ".idx", ".ids.parquet", ".json"):  # swap in shard-01 from the other tokenizer
        shutil.copy(os.path.join(neo, "shard-01" + ext), os.path.join(mixed, "shard-01" + ext))
    with pytest.raises(TokenizerMismatchError, match=r"shard-01\.bin was tokenized with .*vocab 50280.*vocab 50257"):
        TokenDataset(mixed)
    edited = _copy(gpt2_tokens, tmp_path / "edited")  # a manifest claiming another vocabulary
    manifest = json.loads(fs.read_bytes(os.path.join(edited, "manifest.json")))
    manifest["tokenizer"]["vocab_size"] = 32003
    manifest["tokenizer"]["eos_id"] = 2  # within that vocabulary: the shards' own header is what is refused
    fs.write_bytes(os.path.join(edited, "manifest.json"), json.dumps(manifest).encode())
    with pytest.raises(TokenizerMismatchError, match=r"shard-00\.bin was tokenized .*\(vocab 50257\) but .*vocab 32003"):
        TokenLoader(edited, SEQ, 8)
    with pytest.raises(TokenizerMismatchError, match="not the expected tokenizer"):
        TokenLoader(gpt2_tokens, SEQ, 8, expected_tokenizer=load_tokenizer(str(GPT_NEO_JSON)))
    with pytest.raises(TokenizerMismatchError, match="not the expected tokenizer"):
        TokenLoader(TokenDataset(gpt2_tokens), SEQ, 8, expected_tokenizer=load_tokenizer(str(GPT_NEO_JSON)).sha256)
    TokenLoader(gpt2_tokens, SEQ, 8, expected_tokenizer=load_tokenizer("gpt2"))  # the right one is accepted
    # a spec names a tokenizer as `refinery tokenize --tokenizer` does ("gpt2" was read as a SHA-256
    # and refused the gpt2 run it named: found by adversarial testing)
    TokenLoader(gpt2_tokens, SEQ, 8, expected_tokenizer="gpt2")
    with pytest.raises(TokenizerMismatchError, match="not the expected tokenizer"):
        TokenLoader(gpt2_tokens, SEQ, 8, expected_tokenizer=str(GPT_NEO_JSON))
    with pytest.raises(TokenizerMismatchError, match="'no-such-tokenizer' is neither a SHA-256 nor a tokenizer"):
        TokenLoader(gpt2_tokens, SEQ, 8, expected_tokenizer="no-such-tokenizer")


def test_a_run_whose_tokens_pass_has_not_finished_is_named(tmp_path):
    from refinery.config import parse_config
    from refinery.pipeline import run_pipeline

    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.jsonl").write_text(json.dumps({"id": "a", "text": "some words " * 30}) + "\n")
    run = tmp_path / "run"
    run_pipeline(parse_config({"stages": [{"type": "gopher_quality", "params": {"min_words": 5}}]}), str(inp), str(run),
                 workers=1, progress=False)  # a recipe without tokens
    with pytest.raises(TokenShardError, match=rf"{run}/tokens/manifest.json: the run {run} has no tokens pass"):
        TokenLoader(str(run), SEQ, 8)
    recorded = json.loads((run / "run.json").read_text())
    recorded["passes"].append({"name": "tokens", "kind": "tokenize"})  # as a recipe with tokenize: records it
    (run / "run.json").write_text(json.dumps(recorded))
    with pytest.raises(TokenShardError, match=rf"{run}/tokens/manifest.json: the tokens pass of the run {run} has not finished"):
        TokenLoader(str(run), SEQ, 8)


def test_truncated_shard_is_detected_by_the_index(gpt2_tokens, tmp_path):
    bad = _copy(gpt2_tokens, tmp_path / "trunc")
    path = os.path.join(bad, "shard-02.bin")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 1000)
    with pytest.raises(TokenShardError, match=rf"truncated token shard .*shard-02\.bin: its index says {size // 2} tokens"):
        TokenDataset(bad)
    bad_idx = _copy(gpt2_tokens, tmp_path / "trunc-idx")
    path = os.path.join(bad_idx, "shard-00.idx")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 8)
    with pytest.raises(TokenShardError, match=r"truncated token index .*shard-00\.idx"):
        TokenLoader(bad_idx, SEQ, 8)
    os.unlink(os.path.join(bad, "shard-01.bin"))
    with pytest.raises(TokenShardError, match=r"shard-01 is missing its \.bin file"):
        TokenDataset(bad)


def test_truncated_shard_on_s3_is_detected(gpt2_tokens, s3_root, monkeypatch):
    for name in os.listdir(gpt2_tokens):
        data = fs.read_bytes(os.path.join(gpt2_tokens, name))
        if name == "shard-03.bin":
            data = data[: len(data) // 2]  # an upload that stopped halfway
        fs.write_bytes(f"{s3_root}/tok/{name}", data)
    with pytest.raises(TokenShardError, match=r"truncated token shard s3://.*/shard-03\.bin"):
        TokenLoader(f"{s3_root}/tok", SEQ, 8)
    # wrong credentials: pyarrow's raw "When getting information for key 'tok/manifest.json' in
    # bucket ...: AWS Error ACCESS_DENIED" (no s3://, no word of credentials) reached a training
    # script, and a refused GET said "no token manifest: run `refinery tokenize` first" (h129)
    import moto.settings

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # the in-process server now checks keys
    with pytest.raises(fs.StorageError, match=rf"^S3 refused access to {s3_root}/tok/manifest\.json \(HeadObject: 403 "
                                              r"Access Denied\): the AWS credentials this process uses are wrong"):
        TokenLoader(f"{s3_root}/tok", SEQ, 8)
    # (one GET reads the manifest since session 44's h139: it was a HEAD, then a GET)
    with pytest.raises(fs.StorageError, match=rf"^S3 refused access to {s3_root}/tok/manifest\.json \(GetObject: 403 InvalidAccessKeyId\)"):
        read_manifest_bytes(f"{s3_root}/tok")


def test_a_shard_deleted_under_a_running_loader_is_named(gpt2_tokens, tmp_path, s3_root):
    """Found by adversarial testing: a shard deleted while a loader read it gave pyarrow's
    FileNotFoundError (on S3 its path without s3://), not the TokenShardError a training loop
    catches for every other damaged shard."""
    local = _copy(gpt2_tokens, tmp_path / "gone")
    for name in os.listdir(gpt2_tokens):
        fs.write_bytes(f"{s3_root}/tok/{name}", fs.read_bytes(os.path.join(gpt2_tokens, name)))
    for root in (local, f"{s3_root}/tok"):
        loader = TokenLoader(root, SEQ, 4, shuffle=False, prefetch=0, block_size=64)  # shard-03 (last) is read later
        batches = iter(loader)
        next(batches)
        fs.delete(f"{root}/shard-03.bin")
        with pytest.raises(TokenShardError, match=rf"token shard {root}/shard-03\.bin went missing while being read"):
            for _ in batches:
                pass


def test_torch_iterable_dataset(gpt2_tokens):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    numpy_batches = _epoch(TokenLoader(gpt2_tokens, SEQ, 4, seed=2, block_size=8))
    ds = torch_dataset(TokenLoader(gpt2_tokens, SEQ, 4, seed=2, block_size=8))
    assert isinstance(ds, torch.utils.data.IterableDataset) and len(ds) == len(numpy_batches)
    got = []
    for i, batch in enumerate(DataLoader(ds, batch_size=None, num_workers=0)):
        assert batch["input_ids"].dtype == torch.int64 and batch["input_ids"].shape == (4, SEQ)
        got.append({k: v.numpy() for k, v in batch.items()})
        if i == 9:
            state = ds.state_dict()
            break
    resumed = torch_dataset(TokenLoader(gpt2_tokens, SEQ, 4, seed=2, block_size=8))
    resumed.load_state_dict(state)
    got += [{k: v.numpy() for k, v in b.items()} for b in DataLoader(resumed, batch_size=None)]
    assert _same(got, numpy_batches)
    # Session 46 (h157): a loop that left an iteration early and iterates again starts the next epoch,
    # with workers or without (without, it continued the left epoch; with, it could not: workers run ahead)
    for epoch, workers in [(1, 0), (2, 2), (3, 0)]:
        one = TokenLoader(gpt2_tokens, SEQ, 4, seed=2, block_size=8)
        one.load_state_dict(one.state_at(epoch, 0))
        assert _same(_dataloader_batches(ds, 3, num_workers=workers), list(itertools.islice(one, 3)))
    assert (ds.state_dict()["epoch"], ds.state_dict()["position"]) == (3, 12)
    # DataLoader(ds) without batch_size=None batched the batches again into (1, 4, SEQ): refused
    with pytest.raises(ValueError, match="pass batch_size=None"):
        next(iter(DataLoader(torch_dataset(TokenLoader(gpt2_tokens, SEQ, 4)))))
    # the loss a model would compute: cross-entropy ignores the padding targets
    logits = torch.zeros(4, SEQ, 50257)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.from_numpy(got[-1]["labels"]).flatten())
    assert torch.isfinite(loss)


def _dataloader_batches(ds, n: int | None = None, **kw) -> list[dict]:
    from torch.utils.data import DataLoader

    out = []
    for batch in DataLoader(ds, batch_size=None, **kw):
        out.append({k: v.numpy() for k, v in batch.items()})
        if len(out) == n:
            break
    return out


def test_dataloader_workers_yield_every_window_once_in_the_same_order(gpt2_tokens):
    """Session 45 (h150): with num_workers > 0 each worker yields every num_workers-th batch of its
    rank, so ranks x workers yield every window once, in the order of num_workers=0 (each worker
    yielded the whole rank's data, or was refused), epoch after epoch, persistent workers too."""
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    stream = _stream(gpt2_tokens)
    windows = Counter(tuple(stream[i : i + SEQ + 1].tolist()) for i in range(0, len(stream) - 1, SEQ + 1))
    seen: Counter = Counter()
    for rank, (workers, persistent) in enumerate([(2, False), (3, True)]):
        ds = torch_dataset(TokenLoader(gpt2_tokens, SEQ, 32, seed=4, rank=rank, world_size=2, block_size=8))
        one = TokenLoader(gpt2_tokens, SEQ, 32, seed=4, rank=rank, world_size=2, block_size=8)
        dl = DataLoader(ds, batch_size=None, num_workers=workers, persistent_workers=persistent)
        for _ in range(2):  # the second iteration is the next epoch, as without workers
            got = [{k: v.numpy() for k, v in b.items()} for b in dl]
            assert _same(got, _epoch(one))
            seen.update(r for b in got for r in _rows(b))
    assert seen == Counter({w: 2 * n for w, n in windows.items()})  # each window once per epoch, two epochs


def test_dataloader_workers_resume_exactly_with_another_worker_count(gpt2_tokens):
    """Mid-epoch with workers only the training loop knows how many batches it took:
    state_dict() says so in one line, state_dict(batches=N) resumes exactly, with other workers."""
    pytest.importorskip("torch")
    make = lambda: torch_dataset(TokenLoader(gpt2_tokens, SEQ, 32, seed=6, block_size=8))  # noqa: E731
    one = TokenLoader(gpt2_tokens, SEQ, 32, seed=6, block_size=8)
    want = _epoch(one) + _epoch(one)
    ds = make()
    got = _dataloader_batches(ds, 5, num_workers=2)
    with pytest.raises(RuntimeError, match=r"state_dict\(batches=N\)"):
        ds.state_dict()
    state = ds.state_dict(batches=5)
    assert (state["epoch"], state["position"]) == (0, 160)
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(state)))
    got += _dataloader_batches(resumed, num_workers=3)
    got += _dataloader_batches(resumed, num_workers=2)  # the next iteration: the next epoch
    assert _same(got, want)


def test_a_state_after_an_out_of_order_dataloader_is_refused_even_once_it_is_gone(gpt2_tokens):
    """Session 48 (h182): in_order=False hands out batches as workers finish them (docs/tokens.md: measured), so
    the loop's first N are not the iteration's first N: state_dict(batches=N) resumed repeating and skipping
    batches, silently; it was refused only while such a DataLoader was alive (a heap scan, ~63 ms per
    checkpoint with 5M live objects), and also when one merely existed. Session 49 (h199): the workers learn it
    from the DataLoader iterator that starts them and tell the training process (shared memory): ~0.02 ms."""
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    ds = torch_dataset(TokenLoader(gpt2_tokens, SEQ, 32, seed=6, block_size=8))
    _dataloader_batches(ds, 5, num_workers=2, in_order=False)
    gc.collect()  # the DataLoader and its iterator are gone now (a reference cycle kept them for a while)
    with pytest.raises(RuntimeError, match=r"^DataLoader\(in_order=False\) hands out .* would resume repeat"):
        ds.state_dict(batches=5)
    idle = DataLoader(ds, batch_size=None, num_workers=2, in_order=False)  # made, never iterated: no matter
    _dataloader_batches(ds, 3, num_workers=2)  # the next iteration (epoch 1), in order: exact again
    assert (ds.state_dict(batches=3)["epoch"], ds.state_dict(batches=3)["position"]) == (1, 96)
    del idle


def _window_digest(row: tuple[int, ...]) -> str:
    return hashlib.blake2b(np.asarray(row, np.int64).tobytes(), digest_size=8).hexdigest()


def _two_rank_job(rank: int, port: int, tokens: str, out: str) -> None:
    """One process of a real 2-rank gloo group on 127.0.0.1 (test below): what its loaders did, as JSON."""
    import datetime

    import torch.distributed as dist

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=30))
    # session 49 (h199): the ranks meet in the store through public torch only (ProcessGroup.get_group_store);
    # the private function it used is gone here, as a torch release may remove it (it then waited 30 s, unnamed)
    from torch.distributed import distributed_c10d

    del distributed_c10d._get_default_store
    data = TokenDataset(tokens)  # opened once: each loader would open every shard again
    make = lambda **kw: TokenLoader(data, SEQ, 32, block_size=8, world_size=2, **{"seed": 5, "rank": rank, **kw})  # noqa: E731
    errors = {}
    for case, kw in {"seed + rank": {"seed": 5 + rank}, "rank=LOCAL_RANK": {"rank": 0}}.items():
        try:
            next(iter(make(**kw)))
        except LoaderRanksError as exc:
            errors[case] = str(exc)
    try:  # DataLoader workers cannot run collectives: checked when the dataset is made
        torch_dataset(make(seed=5 + rank))
    except LoaderRanksError as exc:
        errors["torch_dataset"] = str(exc)
    next(iter(make(seed=5 + rank, check_ranks=False)))  # skipped: no collective, no error
    loader = make()
    epochs = [[_window_digest(r) for b in _epoch(loader) for r in _rows(b)]]
    at_start = loader.state_dict()
    it = iter(loader)
    head = [next(it) for _ in range(7)]
    mid = json.loads(json.dumps(loader.state_dict()))  # each rank saves its own state
    tail = [{k: v.copy() for k, v in b.items()} for b in it]
    epochs.append([_window_digest(r) for b in head + tail for r in _rows(b)])
    resumed = make()
    resumed.load_state_dict(mid)
    resumed_exactly = _same(_epoch(resumed), tail)
    stale = make()  # rank 1 resumes from an older checkpoint than rank 0
    stale.load_state_dict(at_start if rank else mid)
    try:
        next(iter(stale))
    except LoaderRanksError as exc:
        errors["stale state"] = str(exc)
    reshaped = _resumed_from_three_ranks(data, make, rank, errors)
    said: list[str] = []  # what refinery.loader logs (session 48: one-line warnings)
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("refinery.loader").addHandler(handler)
    if rank == 0:  # a loader of every window (evaluation) on one rank alone: no collective, no hang, no warning
        next(iter(TokenLoader(data, SEQ, 32)))
    dist.barrier()
    warned = {"rank 0 alone": list(said)}
    # Session 48 (h182): every rank forgot rank=/world_size=: each reads every window (the data twice), warned
    next(iter(TokenLoader(data, SEQ, 32)))
    dist.barrier()
    warned["every rank"] = said[len(warned["rank 0 alone"]):]
    if rank == 0:  # mixed world sizes: rank 1 never reaches the check; it hung rank 0 (pg timeout, then gloo's error)
        try:
            next(iter(make(check_ranks_timeout=0.3)))
        except LoaderRanksError as exc:
            errors["mixed world sizes"] = str(exc)
    dist.destroy_process_group()
    with open(out, "w") as f:
        json.dump({"errors": errors, "epochs": epochs, "resumed_exactly": resumed_exactly, "warned": warned,
                   "reshaped": reshaped}, f)


def _resumed_from_three_ranks(data, make, rank: int, errors: dict) -> dict:
    """Session 49 (h201), in a real 2-rank group: a 3-rank job left 20 batches into epoch 0 (its ranks
    simulated here) resumes on these 2 ranks, each loading the old rank of its number's state; the ranks'
    check passes, a crash inside the rest resumes exactly, and a rank loading another step's state is refused."""
    old = [TokenLoader(data, SEQ, 32, block_size=8, world_size=3, seed=5, rank=r, check_ranks=False) for r in range(3)]
    head = [_window_digest(r) for loader in old for b in itertools.islice(loader, 20) for r in _rows(b)]
    states = [json.loads(json.dumps(loader.state_dict())) for loader in old]
    loader = make()
    loader.load_state_dict(states[rank])
    it = iter(loader)
    rest = [{k: v.copy() for k, v in next(it).items()} for _ in range(5)]
    saved = json.loads(json.dumps(loader.state_dict()))
    tail = [{k: v.copy() for k, v in b.items()} for b in it]
    resumed = make()
    resumed.load_state_dict(saved)  # the crash inside the rest
    exact = _same(_epoch(resumed), tail)
    epoch1 = [_window_digest(r) for b in _epoch(resumed) for r in _rows(b)]
    stale = make()  # rank 1 loads a state of one step later than rank 0's
    next(itertools.islice(old[0], 1))
    stale.load_state_dict(states[0] if rank == 0 else old[0].state_dict())
    try:
        next(iter(stale))
    except LoaderRanksError as exc:
        errors["stale reshaped"] = str(exc)
    return {"head": head, "rest": [_window_digest(r) for b in rest + tail for r in _rows(b)], "exact": exact,
            "epoch1": epoch1, "batches": len(rest + tail)}


def test_two_real_ranks_agree_read_every_window_once_and_resume(gpt2_tokens, tmp_path):
    """Session 46 (h157): under a real torch.distributed group (2 processes, gloo on 127.0.0.1) the
    first iteration compares the ranks' settings in one all_gather_object and refuses per-rank seeds,
    duplicate ranks and mismatched resume positions in one line on every rank (before, silently
    overlapping windows); with matching settings the ranks read every window once per epoch and
    each rank's mid-epoch state continues exactly."""
    pytest.importorskip("torch")
    import multiprocessing
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("fork")  # torch is imported already: no second import per rank
    procs = [ctx.Process(target=_two_rank_job, args=(r, port, gpt2_tokens, str(tmp_path / f"rank{r}.json")))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        if p.exitcode is None:
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    mixed = ranks[0]["errors"].pop("mixed world sizes", "")
    for r in ranks:
        assert r["resumed_exactly"]
        errors = r["errors"]
        assert set(errors) == {"seed + rank", "rank=LOCAL_RANK", "torch_dataset", "stale state", "stale reshaped"}
        assert ("reshaped differs: [{'world_size': 3, 'batch_size': 32, 'drop_last': False, 'position': 640}] on "
                "rank 0; [{'world_size': 3, 'batch_size': 32, 'drop_last': False, 'position': 672}] on rank 1 (the rest "
                "of an epoch left in another shape: every rank must load a state saved at the same step)"
                in errors["stale reshaped"])
        assert "seed differs: 5 on rank 0; 6 on rank 1 (pass every rank the same seed" in errors["seed + rank"]
        assert "rank=0 on ranks 0, 1; rank=1 on none" in errors["rank=LOCAL_RANK"]
        assert "seed differs" in errors["torch_dataset"]
        assert "position differs: 224 on rank 0; 0 on rank 1 (each rank must load the state it saved" in errors["stale state"]
        assert all("\n" not in e for e in errors.values())
    assert ranks[0]["errors"] == ranks[1]["errors"]  # every rank raises the same error: none hangs
    # session 48 (h182): a rank iterating a world_size=1 loader where the others iterate world_size=2 is named
    # after check_ranks_timeout (default: the process group's); every rank with world_size=1 is warned once
    assert mixed.startswith("rank 1 did not reach the TokenLoaders' check of the ranks within 0.3 s (check_ranks")
    assert "rank 1 has iterated a TokenLoader with world_size=1 (every window) where this rank's has world_size=2" in mixed
    assert [r["warned"]["rank 0 alone"] for r in ranks] == [[], []]
    every_rank = ranks[0]["warned"]["every rank"] + ranks[1]["warned"]["every rank"]
    assert 1 <= len(every_rank) <= 2 and all(w.startswith("TokenLoader: all 2 ranks iterate a TokenLoader with "
                                                          "world_size=1 over ") for w in every_rank)
    stream = _stream(gpt2_tokens)
    windows = Counter(_window_digest(tuple(stream[i : i + SEQ + 1].tolist())) for i in range(0, len(stream) - 1, SEQ + 1))
    for epoch in range(2):
        assert Counter(ranks[0]["epochs"][epoch] + ranks[1]["epochs"][epoch]) == windows  # each window once
    # session 49 (h201): 3 ranks' 20 batches + the rest on 2 ranks: each window once; then epoch 1 on 2 ranks
    rest = [r["reshaped"] for r in ranks]
    assert rest[0]["exact"] and rest[1]["exact"] and rest[0]["batches"] == rest[1]["batches"]
    assert Counter(rest[0]["head"] + rest[0]["rest"] + rest[1]["rest"]) == windows
    assert Counter(rest[0]["epoch1"] + rest[1]["epoch1"]) == windows


# -- issue 18 item 15: no batch without a target (an all-padding batch is a NaN loss) ----------------

def _targets_per_batch(batches: list[dict]) -> list[int]:
    return [int((b["labels"] != IGNORE_INDEX).sum()) for b in batches]


def _nan_free_losses(batches: list[dict]) -> None:
    """The loss a model computes on each batch is finite (skipped without torch)."""
    try:
        import torch
    except ImportError:
        return
    for b in batches:
        logits = torch.zeros(*b["labels"].shape, 8)
        labels = torch.from_numpy(np.where(b["labels"] == IGNORE_INDEX, IGNORE_INDEX, b["labels"] % 8))
        assert torch.isfinite(torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()))


# (world_size, batch_size): real shards, 9,451 windows of 128 tokens; with padding only at the end
# some ranks' last batch would hold no window at all (rank windows a multiple of batch_size, one
# fewer than the busiest rank's)
@pytest.mark.parametrize(("world_size", "batch_size"), [(2, 3), (3, 2), (4, 2), (7, 5)])
def test_no_batch_without_targets_on_any_rank(gpt2_tokens, world_size, batch_size):
    data = TokenDataset(gpt2_tokens)
    stream = _stream(gpt2_tokens)
    expected = sorted(tuple(stream[i : i + SEQ + 1].tolist()) for i in range(0, len(stream), SEQ + 1))
    got, counts, windows = [], [], []
    for rank in range(world_size):
        loader = TokenLoader(data, SEQ, batch_size, seed=11, rank=rank, world_size=world_size)
        batches = _epoch(loader)
        counts.append(len(batches))
        windows.append(sum(int((b["lengths"] > 0).sum()) for b in batches))
        assert min(_targets_per_batch(batches)) > 0, f"rank {rank} has a batch without targets"
        _nan_free_losses(batches[-2:])
        got.extend(r for b in batches for r in _rows(b))
    assert len(set(counts)) == 1  # DDP lockstep
    # the case of the issue: some rank's windows fill exactly one batch fewer than every rank takes
    assert any(n == (counts[0] - 1) * batch_size for n in windows)
    assert sorted(got) == expected  # still nothing dropped, nothing repeated


def test_no_batch_without_targets_resumes_across_the_moved_padding_row(gpt2_tokens):
    kwargs = {"seed": 3, "rank": 0, "world_size": 2}
    full = _epoch(TokenLoader(gpt2_tokens, SEQ, 3, **kwargs))
    assert (full[-2]["lengths"] > 0).sum() == 2 and (full[-1]["lengths"] > 0).sum() == 1  # the moved row
    for stop in (len(full) - 2, len(full) - 1):
        loader = TokenLoader(gpt2_tokens, SEQ, 3, **kwargs)
        it = iter(loader)
        head = [{k: v.copy() for k, v in next(it).items()} for _ in range(stop)]
        resumed = TokenLoader(gpt2_tokens, SEQ, 3, **kwargs)
        resumed.load_state_dict(json.loads(json.dumps(loader.state_dict())))
        assert _same(head + _epoch(resumed), full)


def test_no_batch_without_targets_lone_last_token(gpt2_tokens, tmp_path):
    # shard-02 alone: 483,243 tokens = 3,961 windows of 122 + 1 token, the final EOS. As a window
    # of its own it has no target; alone in the last batch (3,961 = 233 x 17) it was a NaN loss.
    sub = _copy(gpt2_tokens, tmp_path / "sub")
    manifest = json.loads(fs.read_bytes(os.path.join(sub, "manifest.json")))
    manifest["shards"] = [s for s in manifest["shards"] if s["name"] == "shard-02"]
    manifest["totals"] = {"n_shards": 1, "n_docs": manifest["shards"][0]["n_docs"],
                          "n_tokens": manifest["shards"][0]["n_tokens"]}
    fs.write_bytes(os.path.join(sub, "manifest.json"), json.dumps(manifest).encode())
    stream = _stream(sub)
    assert len(stream) % 122 == 1 and (len(stream) - 1) // 122 == 233 * 17
    loader = TokenLoader(sub, 121, 17, shuffle=False)
    batches = _epoch(loader)
    assert len(batches) == 233 and min(_targets_per_batch(batches)) > 0
    _nan_free_losses(batches[-1:])
    rows = [r for b in batches for r in _rows(b, 121)]
    assert np.array_equal(np.concatenate([np.array(r) for r in rows]), stream[:-1])  # all but the final EOS


def test_batch_size_one_with_unequal_ranks_is_refused_unless_drop_last(gpt2_tokens):
    # 9,451 windows over 2 ranks, batch 1: rank 0 would end on an all-padding batch; no layout avoids it
    with pytest.raises(ValueError, match=r"rank\(s\) 0 would get an all-padding batch .*drop_last=True"):
        TokenLoader(gpt2_tokens, SEQ, 1, world_size=2)
    with pytest.raises(ValueError, match="all-padding"):
        TokenLoader(gpt2_tokens, SEQ, 1, world_size=2, rank=1)  # every rank refuses, not only the short one
    counts = [len(TokenLoader(gpt2_tokens, SEQ, 1, world_size=2, rank=r, drop_last=True, block_size=500))
              for r in range(2)]
    assert counts == [4725, 4725]
    TokenLoader(gpt2_tokens, SEQ, 1, world_size=1)  # one rank: nothing to balance


@pytest.mark.parametrize("world_size", [2, 3, 7])
def test_drop_last_yields_only_full_batches_in_lockstep(gpt2_tokens, world_size):
    data = TokenDataset(gpt2_tokens)
    stream = _stream(gpt2_tokens)
    windows = Counter(tuple(stream[i : i + SEQ + 1].tolist()) for i in range(0, len(stream), SEQ + 1))
    n_windows = sum(windows.values())  # 9,451 (a few real windows have the same content)
    got, counts = [], []
    for rank in range(world_size):
        batches = _epoch(TokenLoader(data, SEQ, 5, seed=2, rank=rank, world_size=world_size, drop_last=True))
        counts.append(len(batches))
        assert all((b["lengths"] > 0).all() for b in batches)  # no padding row at all
        got.extend(r for b in batches for r in _rows(b))
    assert len(set(counts)) == 1 and counts[0] == (n_windows // world_size) // 5
    assert not Counter(got) - windows  # nothing repeated
    assert n_windows - len(got) < world_size * (5 + 1)  # few dropped


def test_a_corpus_with_no_batch_is_refused(gpt2_tokens):
    # found by adversarial testing: zero batches per epoch, and a step-counting loop spun forever
    with pytest.raises(ValueError, match=r"no batch to train on: .* with drop_last"):
        TokenLoader(gpt2_tokens, SEQ, 100_000, drop_last=True)


def test_drop_last_is_part_of_the_state(gpt2_tokens):
    loader = TokenLoader(gpt2_tokens, SEQ, 8, drop_last=True)
    next(iter(loader))
    with pytest.raises(LoaderStateError, match="seed: saved 0 vs now 2, drop_last: saved True vs now False"):
        TokenLoader(gpt2_tokens, SEQ, 8, seed=2).load_state_dict(loader.state_dict())
    resumed = TokenLoader(gpt2_tokens, SEQ, 8)  # mid-epoch: the epoch's rest, dealt without drop_last (h201)
    resumed.load_state_dict(loader.state_dict())
    assert resumed.state_dict()["reshaped"] == [{"world_size": 1, "batch_size": 8, "drop_last": True, "position": 8}]
    TokenLoader(gpt2_tokens, SEQ, 8).load_state_dict(TokenLoader(gpt2_tokens, SEQ, 8, drop_last=True).state_dict())
    old = TokenLoader(gpt2_tokens, SEQ, 8).state_dict()
    del old["drop_last"]  # saved before the option existed: the default
    TokenLoader(gpt2_tokens, SEQ, 8).load_state_dict(old)


def test_loader_refuses_what_it_cannot_train_on_faithfully(gpt2_tokens, tmp_path):
    """Found by testing the loader as a training job: a manifest listing a shard twice was read
    twice per epoch, wrong totals and an eos_id outside the vocabulary were taken, the model's own
    tokenizer with another end-of-document token was accepted, numpy integers failed at the first
    batch and seed=3.0 resumed a seed-3 state with another order."""
    good = json.loads(fs.read_bytes(os.path.join(gpt2_tokens, "manifest.json")))
    for name, edit, message in [
        ("twice", lambda m: m["shards"].append(m["shards"][0]), r"lists shard\(s\) \['shard-00'\] more than once"),
        ("totals", lambda m: m["totals"].update(n_tokens=m["totals"]["n_tokens"] + 1), r"totals\.n_tokens is \d+, its shards sum to"),
        ("eos", lambda m: m["tokenizer"].update(eos_id=60000), r"eos_id 60000 is not an id of its vocabulary of 50257"),
    ]:
        edited = _copy(gpt2_tokens, tmp_path / name)
        manifest = json.loads(json.dumps(good))
        edit(manifest)
        fs.write_bytes(os.path.join(edited, "manifest.json"), json.dumps(manifest).encode())
        with pytest.raises(TokenShardError, match=message):
            TokenDataset(edited)

    import dataclasses

    # the same vocabulary and definition, another separator (as --eos-token "<s>" against "</s>")
    other_eos = dataclasses.replace(load_tokenizer("gpt2"), eos_token="!", eos_id=0)
    with pytest.raises(TokenizerMismatchError, match=r"ends documents with id 50256 \('<\|endoftext\|>'\), the "
                                                     r"expected tokenizer with id 0 \('!'\)"):
        TokenDataset(gpt2_tokens, expected_tokenizer=other_eos)
    TokenDataset(gpt2_tokens, expected_tokenizer=load_tokenizer("gpt2"))  # its own: accepted

    loader = TokenLoader(gpt2_tokens, SEQ, 4, seed=np.int64(3), rank=np.int64(0), world_size=np.int32(1))
    assert type(loader.seed) is int and json.dumps(loader.state_dict())  # a checkpoint can hold it
    next(iter(loader))
    with pytest.raises(TypeError, match=r"seed must be an integer, not 3\.0"):
        TokenLoader(gpt2_tokens, SEQ, 4, seed=3.0)
    with pytest.raises(ValueError, match=r"pad_id 70000 is outside the vocabulary"):
        TokenLoader(gpt2_tokens, SEQ, 4, pad_id=70000)
    state = loader.state_dict()
    for bad in ({"epoch": -1}, {"epoch": "1"}, {"position": 4.0}):
        with pytest.raises(LoaderStateError, match="must be integers"):
            TokenLoader(gpt2_tokens, SEQ, 4, seed=3).load_state_dict({**state, **bad})


def test_a_state_saved_after_an_epochs_last_batch_resumes_at_the_next_epoch(gpt2_tokens):
    loader = TokenLoader(gpt2_tokens, SEQ, 8, seed=1)
    inside = None
    for i, _ in enumerate(loader):
        if i == len(loader) - 1:
            inside = loader.state_dict()  # a checkpoint after the epoch's last step
    assert inside == loader.state_dict() and inside["epoch"] == 1 and inside["position"] == 0
    resumed = TokenLoader(gpt2_tokens, SEQ, 8, seed=1)
    resumed.load_state_dict(inside)
    assert resumed.epoch == 1
    assert _same(_epoch(resumed), _epoch(loader))  # epoch 1, whole, as the loader that went on
    # a loop that stops after len(loader) steps leaves the epoch's iterator before its end (zip, a
    # break at the last step): the next iterator is the next epoch, not an epoch of no batch first
    # (every second epoch of `for epoch in range(E): for _, b in zip(range(len(loader)), loader)` was empty; h129)
    stopping = TokenLoader(gpt2_tokens, SEQ, 8, seed=1)
    epochs = [[b["input_ids"].copy() for _, b in zip(range(len(stopping)), stopping)] for _ in range(3)]
    assert [len(e) for e in epochs] == [len(stopping)] * 3 and stopping.state_dict()["epoch"] == 3
    epoch_1 = TokenLoader(gpt2_tokens, SEQ, 8, seed=1)
    epoch_1.load_state_dict(inside)
    assert all(np.array_equal(a, b["input_ids"]) for a, b in zip(epochs[1], _epoch(epoch_1), strict=True))


def test_expected_tokenizer_messages_name_the_mismatch(gpt2_tokens):
    """Found by testing the loader: a path to another tokenizer (llama on GPT-2 data) was called
    "neither a SHA-256 nor a tokenizer refinery can load"; a SHA-256 in capitals was refused; a
    Hugging Face Tokenizer object was printed whole where the SHA-256 should be."""
    from tests.conftest import SHARED_DATA

    llama = SHARED_DATA / "tokenizers" / "tokenizer_llama-test-tokenizer.json"  # no '<|endoftext|>' of its own
    if llama.is_file():  # (../shared: not copied into the project)
        with pytest.raises(TokenizerMismatchError, match=r"was tokenized with gpt2 .*not the expected tokenizer"):
            TokenDataset(gpt2_tokens, expected_tokenizer=str(llama))
    sha = load_tokenizer("gpt2").sha256
    TokenDataset(gpt2_tokens, expected_tokenizer=sha.upper())  # the same SHA-256: accepted
    with pytest.raises(TokenizerMismatchError, match=r"^expected_tokenizer is a Tokenizer: give "):
        TokenDataset(gpt2_tokens, expected_tokenizer=load_tokenizer("gpt2").tokenizer)


def test_review_of_the_loader_checks(gpt2_tokens, kept_run, tmp_path):
    """A review: states holding numpy integers (a framework's) resume; a state saved with
    seed=3.0 is refused (it shuffled otherwise than seed 3); copy.copy of the torch dataset works;
    rerunning `tokenize` rewrites a manifest the checks refuse, as their message says."""
    import copy

    loader = TokenLoader(gpt2_tokens, SEQ, 4, seed=3)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    numpy_state = {**state, "epoch": np.int64(state["epoch"]), "position": np.int64(state["position"]),
                   "seed": np.int64(3)}
    resumed = TokenLoader(gpt2_tokens, SEQ, 4, seed=3)
    resumed.load_state_dict(numpy_state)
    assert _same([next(iter(resumed))], [next(it)])
    # flags by their truth: shuffle=1 (kept as given before) and numpy's True are True (a review)
    flagged = TokenLoader(gpt2_tokens, SEQ, 4, seed=3, shuffle=np.True_)
    flagged.load_state_dict({**state, "shuffle": 1})
    flagged.load_state_dict(flagged.state_dict())
    with pytest.raises(LoaderStateError, match=r"seed: saved 3\.0 vs now 3"):
        TokenLoader(gpt2_tokens, SEQ, 4, seed=3).load_state_dict({**state, "seed": 3.0})
    pytest.importorskip("torch")
    ds = torch_dataset(loader)
    assert copy.copy(ds).loader is loader

    out = _copy(gpt2_tokens, tmp_path / "tok")
    manifest = json.loads(fs.read_bytes(os.path.join(out, "manifest.json")))
    manifest["totals"]["n_docs"] += 1
    fs.write_bytes(os.path.join(out, "manifest.json"), json.dumps(manifest).encode())
    with pytest.raises(TokenShardError, match="inconsistent token manifest"):
        TokenDataset(out)
    tokenize_run(kept_run, out, "gpt2", progress=False)  # the same command again: rewritten
    assert TokenDataset(out).n_tokens == TokenDataset(gpt2_tokens).n_tokens


def test_an_epoch_end_state_of_an_older_refinery_starts_the_next_epoch_in_any_shape(gpt2_tokens):
    """Older refinery saved an epoch's end as (epoch, end), not (epoch + 1, 0): such a state
    resumed into an epoch of no batch, and on another world size it was refused as mid-epoch
    (a review). It now starts the next epoch, reshaped like any state saved between epochs."""
    data = TokenDataset(gpt2_tokens)
    old = TokenLoader(data, SEQ, 8, seed=6, world_size=2, block_size=9)
    _epoch(old)
    state = old.state_dict()
    state = json.loads(json.dumps(state | {"epoch": state["epoch"] - 1, "position": old.batches_per_epoch * 8}))
    same = TokenLoader(data, SEQ, 8, seed=6, world_size=2, block_size=9)
    same.load_state_dict(state)
    reference = TokenLoader(data, SEQ, 8, seed=6, world_size=2, block_size=9)
    _epoch(reference)
    assert (same.epoch, same.position) == (1, 0) and _same(_epoch(same), _epoch(reference))
    for rank in range(3):
        other = TokenLoader(data, SEQ, 5, seed=6, rank=rank, world_size=3, block_size=9)
        other.load_state_dict(state)
        assert (other.epoch, other.position) == (1, 0)
    mid = state | {"position": 8}  # one batch in: the rest of epoch 0 on another shape (h201; it was refused)
    other = TokenLoader(data, SEQ, 5, seed=6, rank=0, world_size=3, block_size=9)
    other.load_state_dict(mid)
    assert (other.epoch, other.position, other.state_dict()["reshaped"][0]["position"]) == (0, 0, 8)


def test_tokens_redone_under_a_running_loader_are_refused(tmp_path, s3_root):
    """Found by adversarial testing (session 38): `tokenize --force` after the content changed,
    while a job streamed the same output, went unnoticed: the loader kept the old offsets and read
    the new shards' tokens at them (73 windows of one epoch, 7 from the new tokens, 8 from the
    old, the rest straddling both), locally and on S3. Every read now checks the .bin it opened."""
    from tests._tokens_fixtures import cc_documents, write_kept_run

    docs = [d for d in cc_documents() if d["text"]][:5]
    redone = [{"id": d["id"], "text": d["text"].upper()} for d in docs]  # another config's output
    for root in (str(tmp_path), s3_root):
        write_kept_run(f"{root}/run", docs, [3, 2])
        tokenize_run(f"{root}/run", f"{root}/tok", "gpt2", progress=False)
        loader = TokenLoader(f"{root}/tok", SEQ, 2, shuffle=False, prefetch=0, block_size=1)
        batches = iter(loader)
        next(batches)
        write_kept_run(f"{root}/run", redone, [3, 2])
        tokenize_run(f"{root}/run", f"{root}/tok", "gpt2", progress=False, force=True)
        with pytest.raises(TokenShardError, match=rf"token shard {root}/tok/shard-00\.bin changed while it was being "
                                                  r"read .*tokenize --force") as refused:
            for _ in batches:
                pass
        assert "\n" not in str(refused.value)
        assert len(_epoch(TokenLoader(f"{root}/tok", SEQ, 2))) > 0  # opened anew: the new tokens


def test_a_small_corpus_over_more_ranks_than_windows(gpt2_tokens, tmp_path):
    """Session 38, a corpus of one small shard over 4 ranks: the refusal for fewer windows than
    ranks advised drop_last=True, which then refused too ("no batch to train on"). It names the
    numbers and what does help. With enough windows, every rank gets disjoint windows, together
    all of them, the same number of batches, and resumes at every step."""
    sub = _copy(gpt2_tokens, tmp_path / "one")
    manifest = json.loads(fs.read_bytes(os.path.join(sub, "manifest.json")))
    manifest["shards"] = [s for s in manifest["shards"] if s["name"] == "shard-01"]  # 7 documents
    n = manifest["shards"][0]["n_tokens"]
    manifest["totals"] = {"n_shards": 1, "n_docs": 7, "n_tokens": n}
    fs.write_bytes(os.path.join(sub, "manifest.json"), json.dumps(manifest).encode())
    seq = (n - 2) // 3  # 3 windows (the last one shorter) for 4 ranks
    with pytest.raises(ValueError, match=rf"3 windows of {seq + 1} tokens \({n} tokens\) over 4 ranks with batch_size 1: "
                                         r"fewer windows than ranks x batch_size \(4\)") as refused:
        TokenLoader(sub, seq, 1, world_size=4)
    assert "pass drop_last" not in str(refused.value)
    seq = (n - 2) // 9  # 9 windows, 4 ranks, batch 2: 3, 2, 2, 2 windows
    stream = _stream(sub)
    got = []
    for rank in range(4):
        full = _epoch(TokenLoader(sub, seq, 2, seed=5, rank=rank, world_size=4, block_size=2))
        assert len(full) == 2 and min(_targets_per_batch(full)) > 0
        got += [r for b in full for r in _rows(b, seq)]
        for stop in range(1, len(full)):
            loader = TokenLoader(sub, seq, 2, seed=5, rank=rank, world_size=4, block_size=2)
            head = [b for _, b in zip(range(stop), _epoch_iter(loader))]
            resumed = TokenLoader(sub, seq, 2, seed=5, rank=rank, world_size=4, block_size=2)
            resumed.load_state_dict(json.loads(json.dumps(loader.state_dict())))
            assert _same(head + _epoch(resumed), full)
    assert sorted(got) == sorted(tuple(stream[i : i + seq + 1].tolist()) for i in range(0, len(stream), seq + 1))


def _epoch_iter(loader: TokenLoader):
    for b in loader:
        yield {k: v.copy() for k, v in b.items()}


@pytest.mark.parametrize("reader", ["load_manifest", "TokenLoader"])
def test_a_directory_without_a_token_manifest_is_one_plain_line(tmp_path, reader):
    """``load_manifest`` and the loader on a directory with no manifest said pyarrow's text ("cannot
    open .../manifest.json: [Errno 2] Failed to open local file ... Detail: [errno 2] No such file
    or directory"): now the directory and what is missing (session 46, h154)."""
    from refinery.tokens.writer import load_manifest

    def read(directory: str) -> None:
        load_manifest(directory) if reader == "load_manifest" else TokenLoader(directory, SEQ, 8)

    for directory, hint in ((tmp_path, ""), (tmp_path / "nope", " (no such directory)")):
        with pytest.raises(TokenShardError) as info:
            read(str(directory))
        assert str(info.value) == (f"no token manifest at {directory}/manifest.json{hint}: is {directory} a token "
                                   "directory written by `refinery tokenize`?"), info.value
