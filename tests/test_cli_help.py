"""``refinery --help`` and every command's ``--help`` read well (found by a new-user trial): one
short sentence per command in the command lists, plain metavars (TEXT, INT, PATH, URI; none on
flags) instead of typer's ``<bool>`` / ``<str>``, and arguments as ``CONFIG`` in usage lines, not
``{config}``."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from refinery.cli import app

WIDTH = 100  # a fixed terminal: a summary that needs a second row at this width is too long
#: typer's own type labels (``<name>.html`` in a help text is not one)
TYPER_TYPE = re.compile(r"<(?:bool|str|int|float|path|datetime|list\[\w+\]|[a-z]+,[a-z,]+)(?: range)?>")


def _command_paths() -> list[list[str]]:
    """Every command and sub-command of the app, as the words that name it."""
    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            paths.append([*path, name])
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def _help(path: list[str]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)})
    assert result.exit_code == 0, (path, result.output)
    return result.output


def _summaries(output: str) -> dict[str, list[str]]:
    """The Commands panel of a group's help: each command's summary, one entry per rendered row."""
    rows: dict[str, list[str]] = {}
    panel = output.split("─ Commands ─", 1)[1].split("╰", 1)[0]
    name = ""
    for line in panel.splitlines()[1:]:
        inner = line.strip().strip("│").rstrip()
        if not inner.strip():
            continue
        if inner[1:2] != " ":  # a new command: its name starts the row
            name, _, text = inner.strip().partition(" ")
            rows[name] = [text.strip()]
        else:  # the summary wrapped (or broke) onto another row
            rows[name].append(inner.strip())
    return rows


@pytest.mark.parametrize("path", [[]] + _command_paths(), ids=lambda p: " ".join(p) or "refinery")
def test_help_renders_with_plain_metavars(path):
    output = _help(path)
    assert not TYPER_TYPE.findall(output), TYPER_TYPE.findall(output)
    assert "{" not in output
    usage = next(line for line in output.splitlines() if "Usage:" in line).split("[OPTIONS]", 1)[1].split()
    for piece in usage:  # arguments: upper case, optional ones in [ ]
        assert re.fullmatch(r"\[?[A-Z][A-Z_]*\]?(?:\.\.\.)?|\[ARGS\]\.\.\.", piece), (path, usage)


@pytest.mark.parametrize("group", [[], ["watchdog"]], ids=["refinery", "watchdog"])
def test_each_command_summary_is_one_short_sentence(group):
    rows = _summaries(_help(group))
    assert sorted(rows) == sorted(p[-1] for p in _command_paths() if p[:-1] == group)
    for name, lines in rows.items():
        assert len(lines) == 1, (name, lines)  # no line break inside it, and it fits one row
        text = lines[0]
        assert text[0].isupper() and text.endswith("."), (name, text)
        assert ". " not in text, (name, text)  # one sentence, not two


def test_every_command_takes_verbose():
    """An unexpected error says "rerun with -v for the traceback", and 9 commands (stats, status,
    report, verify-tokens, eval-extract, watch, plan, watchdog deploy and check) refused -v as "No
    such option" (the session-42 trials, h121)."""
    group = typer.main.get_command(app)
    missing = []
    for path in _command_paths():
        command = group
        for name in path:
            command = command.commands[name]
        if getattr(command, "commands", None):
            continue  # a group: its commands are checked
        opts = {o for p in command.params for o in getattr(p, "opts", [])}
        if not {"-v", "--verbose"} <= opts:
            missing.append(" ".join(path))
    assert not missing, missing


def test_no_help_text_is_eaten_as_markup():
    """rich reads ``[word...]`` in a help text as a style tag and drops it: train-classifier's
    "[default: $REFINERY_MODELS or ~/.cache/refinery/models ...]" never reached --help (h121)."""
    group = typer.main.get_command(app)
    eaten = []
    for path in [[]] + _command_paths():
        command = group
        for name in path:
            command = command.commands[name]
        for param in command.params:
            text = getattr(param, "help", None) or ""
            if re.search(r"(?<!\\)\[[a-z#/@]", text):
                eaten.append((" ".join(path), param.name, text))
        output = " ".join(_help(path).split())
        for param in command.params:
            text = getattr(param, "help", None) or ""
            if "default:" in text:  # what a user most needs from it: shown whole
                tail = text.split("default:", 1)[1].split()[0]
                assert tail in output, (path, param.name, tail)
    assert not eaten, eaten


def _description(output: str) -> list[str]:
    """The rendered lines between a help's usage line and its first panel."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "Usage:" in line) + 1
    end = next(i for i, line in enumerate(lines) if line.lstrip().startswith("╭"))
    return [line.rstrip() for line in lines[start:end]]


@pytest.mark.parametrize("columns", [80, 60])
def test_help_reads_whole_at_80_columns(columns):
    """At 80 columns every option's name is shown whole and the description wraps only where the
    next word does not fit: typer kept each docstring line break, leaving stubs ("and a") between
    lines, and ``--allow-unfinished / --no-allow-unfinished`` pushed tokenize's option names
    to ``--allow-unfinish…`` (the session-42 trials, h121). Nothing is cut with "…", at 60 columns
    either: launch's --name patterns and dedup's --memory-budget at 80, at 60 option names
    (``--instance-…``) and ``[default: ...]`` values (h133)."""
    group = typer.main.get_command(app)
    for path in [[]] + _command_paths():
        command = group
        for name in path:
            command = command.commands[name]
        output = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)}).output
        assert "…" not in output, (path, [line for line in output.splitlines() if "…" in line])
        assert max(len(line) for line in output.splitlines()) <= columns, path
        if not path:
            continue
        words = set(output.replace("│", " ").replace(",", " ").split())
        names = {o for p in command.params if not getattr(p, "hidden", False)
                 for o in [*p.opts, *p.secondary_opts] if o.startswith("--")}
        assert names <= words, (path, sorted(names - words))
        text = _description(output)
        for line, after in zip(text, text[1:]):
            if line.strip() and after.strip():  # a break inside a paragraph: the next word did not fit
                assert len(line) + 1 + len(after.split()[0]) > columns - 2, (path, line, after)
