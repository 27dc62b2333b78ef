"""The ``refinery`` package of an earlier commit, from the repository's history, and runs made with
it in a subprocess: how compatibility tests make a run "written by the code of before"."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import refinery

ROOT = Path(__file__).resolve().parents[1]


def archived_package(tmp_path_factory, commit: str, name: str, todays_version: bool = True) -> Path:
    """``refinery/`` as it was at ``commit`` (git archive), by default under today's version number:
    what such a test checks is how the code of before wrote a run, not a version bump (which refuses
    or redoes old runs on purpose); ``todays_version=False`` keeps its own. Skipped without the
    repository's history."""
    try:
        blob = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "refinery"],
                              capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"the repository's history (commit {commit[:7]}) is not available")
    dest = tmp_path_factory.mktemp(name)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=blob, check=True)
    init = dest / "refinery" / "__init__.py"
    if todays_version:
        init.write_text(re.sub(r'__version__ = "[^"]*"', f'__version__ = "{refinery.__version__}"', init.read_text()))
    return dest


def run_with(old_code: Path, spec: dict, inp: Path | str, out: Path | str, cwd: Path) -> None:
    """``run_pipeline(spec, inp, out)`` in a process that imports ``old_code`` (not this checkout),
    from ``cwd`` (a relative ``out`` is spelled as given)."""
    script = ("import json, sys, refinery\n"
              f"assert refinery.__file__.startswith({str(old_code)!r}), refinery.__file__\n"
              "from refinery.config import parse_config\nfrom refinery.pipeline import run_pipeline\n"
              "r = run_pipeline(parse_config(json.loads(sys.argv[1])), sys.argv[2], sys.argv[3], workers=1, "
              "progress=False)\nassert not r.failed_pass, r\n")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(spec), str(inp), str(out)], cwd=cwd,
                          env=os.environ | {"PYTHONPATH": str(old_code)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
