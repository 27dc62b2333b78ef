"""What every ``refinery`` command shares: consoles that never read user data as markup, one-line
errors, and logging that never prints credentials.

- ``out`` / ``err``: rich consoles with markup off, so a path, a stage name or an error message
  carrying ``[/bold]`` prints as it is (styled words are passed as :class:`rich.text.Text`).
- :func:`fail`: ``error: <one line>`` on stderr and exit code 2 (a user error: a file, key,
  column or option is named in the message).
- :func:`plain_help` (:class:`PlainHelpGroup`, :class:`PlainHelpCommand`): ``--help`` pages with
  plain metavars (``PATH``, ``INT``, no ``<bool>`` on flags) and arguments as ``CONFIG`` in usage
  lines, not ``{config}``.
- :func:`setup_logging`: ``-v`` turns on DEBUG for refinery only; botocore, boto3, s3transfer,
  urllib3 and the AWS SDK stay at WARNING (their DEBUG logs print request headers: session
  tokens, access key ids, signatures), and every handler redacts credentials that still get
  through (:class:`RedactCredentials`).
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NoReturn, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup
from rich.console import Console
from rich.table import Table
from rich.text import Text

from refinery.noisy_loggers import NOISY_LOGGERS

out = Console(markup=False, highlight=False, soft_wrap=True)  # writes to sys.stdout as it is at each print
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def one_line(message: object) -> str:
    """``message`` on one line: its lines joined with "; " (a pasted multi-line error stays greppable)."""
    lines = [ln.strip() for ln in str(message).strip().splitlines() if ln.strip()]
    text = ""
    for ln in lines:
        # a list continues on the next line ("Choose from:\n\ttoxicity,\n\tquality."): no "; " inside it
        text = ln if not text else (f"{text} {ln}" if text.endswith((":", ",")) else f"{text}; {ln}")
    return text or type(message).__name__


def error_text(message: object, label: str = "error:") -> Text:
    return Text.assemble((label, "bold red"), " ", one_line(message))


class PipeSafeStdout:
    """``sys.stdout`` that drops what is written once its reader has gone (``refinery status RUN |
    head -2``): the command finishes and exits with its own code, as with all its output read,
    instead of failing with a BrokenPipeError halfway (and a run being stopped by its last print)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        # the descriptor now goes to /dev/null: what is still buffered, and the interpreter's
        # flush at exit, no longer fail
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self.stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def print_error(message: object, label: str = "error:") -> None:
    err.print(error_text(message, label))


#: every command's ``-v``: ``main`` tells users to "rerun with -v", and 9 commands refused it (h121)
VERBOSE_HELP = "debug logs, and the traceback of an error"

#: set by ``refinery.cli.main`` when the command line has ``-v``: errors then come with their traceback
VERBOSE = False


def fail(message: object, code: int = 2) -> NoReturn:
    """Print ``error: <message>`` on one line and exit with ``code`` (2: a user error); with
    ``-v``, the traceback of the exception being handled first. After a Ctrl-C (or SIGTERM) the
    error is most likely what the interrupt was turned into (a stage's constructor reports the
    TypeError an interrupted import raised as a bad config): the command is interrupted instead."""
    from refinery import interrupts

    if interrupts.requested():
        raise KeyboardInterrupt
    if VERBOSE and sys.exc_info()[0] is not None:
        import traceback

        traceback.print_exc()
    if isinstance(message, BaseException):  # a raw S3 refusal (botocore's or pyarrow's text) said as what it means
        from refinery.io.fs import explain_s3_failure

        message = explain_s3_failure(str(message)) or message
    print_error(message)
    raise typer.Exit(code)


def note(message: object) -> None:
    err.print(Text.assemble(("note:", "yellow"), " ", str(message)))


def check_numbers(positive: dict[str, float | None], non_negative: dict[str, float | None]) -> None:
    """Refuse an option's number the command cannot use, naming the option, before any work: a
    negative ``plan --target-hours`` gave an estimate, nan and inf an error naming neither the
    option nor the value (found by adversarial testing). None: not given."""
    import math

    for option, value in positive.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            fail(f"{option} must be positive, got {value}")
    for option, value in non_negative.items():
        if value is not None and not (math.isfinite(value) and value >= 0):
            fail(f"{option} must be a number >= 0, got {value}")


def check_stall_settings(stall_minutes: float, start_grace_minutes: float, interval_s: float | None = None) -> None:
    """A watcher's limits: ``--stall-minutes 0`` (or below) judged every running job stalled at its
    first poll and stopped it, a negative ``--start-grace-minutes`` every job whose containers had
    not announced themselves yet, nan never any (a watchdog that watches nothing); a negative
    ``--interval`` failed after the first poll, 0 polled SageMaker without a pause (found by the
    session-42 trials, h121)."""
    check_numbers({"--stall-minutes": stall_minutes, "--interval": interval_s},
                  {"--start-grace-minutes": start_grace_minutes})


def check_uris(**named: str | None) -> None:
    """Refuse a URI no command can read or write, naming the argument or option it came from
    (``RUN_DIR``, ``--output``), before any work: ``status s3://`` (no bucket) asked S3 for
    "s3://run.json" 8 times (~50 s), ``tokenize -o s3://`` said which URI but not which option
    (the CLI trials, h133). ``named``: the name shown -> the URI (None: not given)."""
    from refinery.io.fs import StorageError, validate_uri

    for name, uri in named.items():
        if uri is not None:
            try:
                validate_uri(uri)
            except StorageError as exc:
                fail(f"{name}: {exc}")


def check_shard_log_interval() -> None:
    """Refuse a ``REFINERY_SHARD_LOG_EVERY_S`` that is not a number of seconds before any work, as
    ``refinery run`` does: each worker reads it when a shard starts, so ``refinery dedup`` failed
    its removal run shard by shard (exit 1) after the whole MinHash index was built (h133).
    ``tokenize`` does not read it, and refuses it all the same: the environment a user set for a
    run gets one verdict from run, dedup and tokenize."""
    from refinery.runner import shard_log_every_s

    try:
        shard_log_every_s()
    except ValueError as exc:
        fail(exc)


def aws_region(given: str | None, configured: bool = True) -> str | None:
    """The region a command's AWS requests go to (:func:`refinery.launch.sagemaker.resolve_region`):
    ``given`` (``--region`` or AWS_REGION), AWS_DEFAULT_REGION, or (``configured``) the AWS
    configuration's; a region that is not one is one line naming where it came from: watchdog
    deploy blamed ``--region`` for a bad AWS_REGION, and a bad AWS_DEFAULT_REGION reached
    ``watch`` and ``watchdog check`` as a connection error after botocore's retries (h133)."""
    from refinery.launch.sagemaker import resolve_region

    try:
        return resolve_region(given, configured)
    except ValueError as exc:
        fail(exc)


# -- help pages: plain metavars --------------------------------------------------------------------
#: what an option's value is called in help when it names none itself (typer shows ``<str>``)
_TYPE_METAVARS: dict[Any, str] = {str: "TEXT", int: "INT", float: "FLOAT", Path: "PATH"}


class PlainArgument(TyperArgument):
    """An argument shown by its upper-case name alone: ``CONFIG`` / ``[RUN_DIR]`` in the usage line
    (typer writes ``{config}``) and no ``<path>`` type column beside the name."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.metavar or self.name.upper()
        name = name if self.required else f"[{name}]"
        return [name + ("..." if self.nargs != 1 else "")]


def _type_metavar(param: Any) -> str:
    annotation = param.type_descriptor.annotation
    if get_origin(annotation) is tuple:
        return " ".join(_value_metavar(a) for a in get_args(annotation))
    if get_origin(annotation) is list:  # a repeatable option: each use takes one value
        return _value_metavar(get_args(annotation)[0])
    return _value_metavar(annotation)


def _value_metavar(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "PATH"
    return _TYPE_METAVARS.get(annotation, "TEXT")


def plain_metavar(param: Any) -> None:
    """Give ``param`` a plain metavar unless it names one: a flag none, an option its value's type
    (TEXT, INT, FLOAT, PATH), an argument its name upper-cased. Help text only: parsing is unchanged."""
    if isinstance(param, TyperArgument):
        param.metavar = param.metavar or param.name.upper()
        # typer has no per-parameter class option; PlainArgument only overrides how it is shown
        param.__class__ = PlainArgument
    elif param.metavar is None:
        param.metavar = "" if getattr(param, "is_flag", False) else _type_metavar(param)


def unwrapped(help_text: str | None) -> str | None:
    """``help_text`` with each paragraph on one line: typer keeps a docstring's line breaks, so
    at 80 columns every source line wrapped on its own and left a stub line ("and a") behind
    (found by trials, h121). Paragraphs (blank-line separated) stay apart."""
    if not help_text:
        return help_text
    paragraphs = inspect.cleandoc(help_text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _folded(cell: Any) -> Any:
    """``cell`` (a help table's Text, or the Columns of an option's help, env var and default)
    with its texts folding a word longer than the column onto the next line instead of cutting
    it with "…" (rich's default in a table)."""
    for text in getattr(cell, "renderables", [cell]):
        if isinstance(text, Text) and text.overflow is None:
            text.overflow = "fold"
    return cell


def _names_cell(long: Text, short: Text, negative_long: Text, negative_short: Text) -> Text:
    """An option's names in one cell: ``--input, -i``, its negative flag (``--no-spot``) on the next
    line; an argument's name (``CONFIG``)."""
    cell = Text(overflow="fold")
    for i, (first, second) in enumerate(((long, short), (negative_long, negative_short))):
        names = [t for t in (first, second) if t.plain]
        if names and i:
            cell.append("\n")
        for j, name in enumerate(names):
            cell.append_text(Text(", ") + name if j else name)
    return cell


class _WholeWordsTable(Table):
    """typer's options table, where nothing is cut: a ``[default: ...]``, a name pattern
    (``refinery-pipeline-ray-<config>-<UTC time>``) or a path wider than the help column was cut
    to "refinery-pipeline-ray-<c…" at 80 columns, and at 60 option names to "--instance-…"
    with help 12 columns wide (found by the session-43 trials, h133). An option's names share one
    column (typer gives its short and negative forms a column each, mostly empty), which keeps
    its width; the type and help columns share what is left, and fold a word longer than their width."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        # typer's row: [required marker,] long, short, negative long, negative short, type, help
        if len(renderables) in (6, 7) and all(isinstance(c, Text) for c in renderables[-6:-1]):
            lead, names, rest = renderables[:-6], renderables[-6:-2], renderables[-2:]
            renderables = (*lead, _names_cell(*names), *rest)
        super().add_row(*(_folded(cell) for cell in renderables), **kwargs)
        for column in self.columns[:-2]:  # the names keep their width; the type and help wrap
            column.no_wrap = True


@contextmanager
def _whole_words_help() -> Iterator[None]:
    from typer import rich_utils

    table = rich_utils.Table
    rich_utils.Table = _WholeWordsTable
    try:
        yield
    finally:
        rich_utils.Table = table


class _PlainHelp:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.help = unwrapped(self.help)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        with _whole_words_help():
            super().format_help(ctx, formatter)  # type: ignore[misc]

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:  # --help itself is made here, not in self.params
            plain_metavar(param)
        return params


class PlainHelpCommand(_PlainHelp, TyperCommand):
    """A command whose ``--help`` shows plain metavars (see :func:`plain_metavar`)."""


class PlainHelpGroup(_PlainHelp, TyperGroup):
    """A command group whose ``--help`` shows plain metavars (see :func:`plain_metavar`)."""


def plain_help(app: typer.Typer) -> None:
    """``app``, every command registered on it and its sub-apps show plain metavars in their help."""
    app.info.cls = _plain_class(app.info.cls, PlainHelpGroup)
    for info in app.registered_commands:
        info.cls = _plain_class(info.cls, PlainHelpCommand)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            plain_help(group.typer_instance)


def _plain_class(cls: Any, plain: type) -> Any:
    """``plain`` in place of typer's own class (unset, or a base of ``plain``); another class stays."""
    return plain if not isinstance(cls, type) or issubclass(plain, cls) else cls


# -- credentials never reach a log ----------------------------------------------------------------
_SECRETS = [
    # header / query forms: X-Amz-Security-Token: ..., X-Amz-Credential=AKIA.../..., Signature=...
    (re.compile(r"(?i)(x-amz-security-token['\"]?\s*[:=]\s*['\"]?(?:b['\"])?)[^\s'\",&}]+"), r"\1***"),
    (re.compile(r"(?i)(x-amz-credential['\"]?\s*[:=]\s*['\"]?)[^\s'\",&}]+"), r"\1***"),
    (re.compile(r"(?i)(x-amz-signature['\"]?\s*[:=]\s*['\"]?)[^\s'\",&}]+"), r"\1***"),
    (re.compile(r"(?i)(signature\s*=\s*)[0-9a-f]{16,}"), r"\1***"),
    (re.compile(r"(?i)(credential\s*=\s*)[^\s,/]+"), r"\1***"),
    (re.compile(r"(?i)((?:aws_)?(?:secret_access_key|session_token|security_token|access_key_id)['\"]?\s*[:=]\s*['\"]?)"
                r"[^\s'\",}]+"), r"\1***"),
    (re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[0-9A-Z]{12,}\b"), "AKIA***"),
    # a proxy's credentials: in its URL (HTTPS_PROXY=http://user:password@host:port) or its header
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@'\"]+:[^/\s@'\"]*@"), r"\1***@"),
    (re.compile(r"(?i)(proxy-authorization['\"]?\s*[:=]\s*['\"]?(?:b['\"])?(?:basic\s+)?)[^\s'\",}]+"), r"\1***"),
]


def redact(text: str) -> str:
    """``text`` with AWS access key ids, secrets, session tokens and signatures masked."""
    import os

    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID"):
        value = os.environ.get(var)
        if value and len(value) >= 8 and value in text:
            text = text.replace(value, "***")
    return text


class RedactCredentials(logging.Filter):
    """A handler filter: the formatted message is redacted before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the logger's problem, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def setup_logging(verbose: bool, level: int | None = None) -> None:
    """Log to stderr: DEBUG with ``-v`` (refinery's own loggers), else INFO (or ``level``)."""
    root = logging.getLogger()
    chosen = level if level is not None else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=chosen, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    root.setLevel(chosen)
    for name in NOISY_LOGGERS:  # whatever the level (DEBUG with -v): the workers do it as well
        logging.getLogger(name).setLevel(logging.WARNING)
    for handler in root.handlers:
        if not any(isinstance(f, RedactCredentials) for f in handler.filters):
            handler.addFilter(RedactCredentials())
    if verbose:
        from refinery import allocator

        log = logging.getLogger("refinery")
        log.debug("this command's process runs on %s", allocator.this_process_allocator())
        if allocator.kept_as_it_is:
            log.debug("this command's process was not re-executed with mimalloc preloaded: %s", allocator.kept_as_it_is)


def remake_report(run_dir: str, only_if_stale: bool = False) -> None:
    """A report.html of this directory shows it as it was before this command (made while the run
    was going, or after an earlier run): remade now, as a user expects of a finished run, if
    ``refinery report`` wrote it; left alone, with a note, if not. Shared by run, dedup, tokenize.
    ``only_if_stale``: only if it shows other stats than the run has now (a rerun that redid
    nothing, after a run stopped while it remade the report)."""
    from refinery.io.fs import StorageError
    from refinery.io.parquet import ShardReadError
    from refinery.stats.report import NotARunReport
    from refinery.stats.report import remake_report as remake

    try:
        uri = remake(run_dir, only_if_stale=only_if_stale)
    except NotARunReport as exc:
        if not only_if_stale:  # said once, by the run that changed the directory
            err.print(f"note: {exc}", style="yellow", highlight=False, soft_wrap=True)
        return
    except (FileNotFoundError, StorageError, ShardReadError, ValueError, OSError) as exc:
        err.print(f"note: {run_dir.rstrip('/')}/report.html shows the run before this one and could not be remade "
                  f"({exc}): `refinery report {run_dir}` remakes it", style="yellow", highlight=False, soft_wrap=True)
        return
    if uri:
        err.print(f"note: {uri} showed the run before this one: remade", highlight=False, soft_wrap=True)
