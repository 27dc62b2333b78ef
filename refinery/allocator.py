"""The memory allocator of the processes refinery starts for its heavy work: mimalloc where installed.

Why: trafilatura's work is lxml trees and Python objects made and freed by the thousand per page,
and glibc's ``malloc``/``free`` were ~18% of the extraction helper's CPU samples (``perf``, session
38). mimalloc (Microsoft's allocator, MIT; shipped as a wheel by ``cmeel-mimalloc``), preloaded with
``LD_PRELOAD`` into a process as it starts, takes ~6-11% off its CPU with byte-identical output
(docs/extraction.md, "The helper's allocator"). A preload binds every ``malloc`` from the process's
first instruction, so only processes started for it get one:

- the extraction helper (the extract stage's ``helper_allocator``), started by path;
- the local executor's pool workers (the config's ``executor: allocator``,
  :class:`refinery.executors.local.LocalExecutor`);
- the ``run``/``dedup``/``tokenize`` command itself (``REFINERY_ALLOCATOR``, read before any config:
  :func:`preload_this_command` re-executes it once, when started as refinery itself).

Each puts the added variables back (:func:`restore_environment`) before it runs anything, so what
it starts inherits nothing. ``auto`` preloads mimalloc when the wheel is installed (Linux) and the
environment preloads nothing already (a user's own ``LD_PRELOAD``, e.g. jemalloc, stands);
``mimalloc`` requires it; ``system`` never preloads.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import sys
from typing import Literal

Allocator = Literal["auto", "mimalloc", "system"]
ALLOCATORS: tuple[str, ...] = ("auto", "mimalloc", "system")
#: the wheel that ships the library, and how a missing one is put right
MIMALLOC_DIST = "cmeel-mimalloc"
MIMALLOC_MISSING = f"helper_allocator 'mimalloc' needs the {MIMALLOC_DIST} package (Linux): pip install {MIMALLOC_DIST}"
#: the versioned shared object inside the wheel (``cmeel.prefix/lib/libmimalloc.so.3``)
_LIBRARY_NAME = re.compile(r"libmimalloc\.so\.\d+")


#: what ``LD_PRELOAD`` splits its list at: a library path holding one cannot be preloaded
_PRELOAD_SEPARATORS = re.compile(r"[\s:]")


def mimalloc_library() -> str | None:
    """The path of the installed mimalloc shared library, or None (no wheel, not Linux: the
    preload is ``LD_PRELOAD``, which only Linux's loader reads as we use it; or a library the
    loader could not preload: see :func:`mimalloc_problem`)."""
    return _find_library()[0]


def mimalloc_problem() -> str | None:
    """Why there is no library to preload (None: there is one)."""
    return _find_library()[1]


@functools.cache
def _find_library() -> tuple[str | None, str | None]:
    # imported here: every command imports this module first thing, before its Ctrl-C handling
    from importlib import metadata

    if not sys.platform.startswith("linux"):
        return None, MIMALLOC_MISSING
    try:
        files = metadata.files(MIMALLOC_DIST) or []
    except metadata.PackageNotFoundError:
        return None, MIMALLOC_MISSING
    for file in files:
        if _LIBRARY_NAME.fullmatch(file.name):
            path = os.path.realpath(str(file.locate()))
            problem = _unloadable(path)
            return (None, problem) if problem else (path, None)
    return None, f"{MIMALLOC_DIST} is installed without a libmimalloc.so: pip install --force-reinstall {MIMALLOC_DIST}"


def _unloadable(path: str) -> str | None:
    """Why the loader would refuse to preload ``path`` (None: it would not). Each refusal was an
    "ERROR: ld.so: ... cannot be preloaded" line on stderr at every helper start, the helper on
    the system's malloc all the same (found by review h99: a virtualenv under a path with a space)."""
    if _PRELOAD_SEPARATORS.search(path):
        return (f"{path} cannot be preloaded: LD_PRELOAD splits paths at spaces and colons "
                f"(install {MIMALLOC_DIST} in an environment whose path has none)")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror}): pip install --force-reinstall {MIMALLOC_DIST}"
    if head != b"\x7fELF":
        return f"{path} is not a shared library: pip install --force-reinstall {MIMALLOC_DIST}"
    return None


def check_allocator(allocator: str, key: str = "helper_allocator") -> None:
    """Raise ValueError for an unknown allocator, or for ``mimalloc`` where it cannot be preloaded
    (``key``: the setting's name, for the message)."""
    if allocator not in ALLOCATORS:
        raise ValueError(f"{key} must be one of {', '.join(ALLOCATORS)}, not {allocator!r}")
    problem = mimalloc_problem() if allocator == "mimalloc" else None
    if problem:
        raise ValueError(problem.replace("helper_allocator", key, 1) if problem == MIMALLOC_MISSING
                         else f"{key} 'mimalloc': {problem}")


def preloaded_library(allocator: str) -> str | None:
    """The library a helper started now with ``allocator`` preloads, or None (the system's)."""
    if allocator == "system":
        return None
    if allocator == "auto" and os.environ.get("LD_PRELOAD", "").strip():
        return None  # the user preloads something already (their allocator, a profiler): theirs stands
    return mimalloc_library()


def preload_variables(allocator: str) -> tuple[dict[str, str], dict[str, str | None]] | None:
    """The variables a process started now with ``allocator`` gets on top of this process's
    environment, and their values here (None: unset) to put back once it is running, so that what
    it starts in turn does not inherit the preload; or None: nothing to add."""
    library = preloaded_library(allocator)
    if library is None:
        return None
    previous = os.environ.get("LD_PRELOAD", "").strip()
    added = {"LD_PRELOAD": f"{library} {previous}".strip()}  # mimalloc first: its malloc is the one bound
    # its arenas in transparent huge pages: each first touch zeroes 2 MB, and the helper's sys time
    # was 2-5x glibc's with them (~0.1-0.3 ms per page); a value the user set stands
    if "MIMALLOC_ALLOW_THP" not in os.environ:
        added["MIMALLOC_ALLOW_THP"] = "0"
    return added, {name: os.environ.get(name) for name in added}


def helper_environment(allocator: str) -> dict[str, str] | None:
    """The environment to start a helper process with (this process's, plus the preload), or
    None: start it with this process's environment as it is."""
    variables = preload_variables(allocator)
    return None if variables is None else {**os.environ, **variables[0]}


def restore_environment(previous: dict[str, str | None]) -> None:
    """Put back the variables :func:`preload_variables` added (in the process started with them):
    the library is bound already, and the processes this one starts must not inherit it."""
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# -- the command's own process ----------------------------------------------------------------------
#: the commands whose own process does the work (``workers: 1`` runs every task in it; the dedup and
#: token passes' drivers): started by the console script, they re-execute once with the preload
HEAVY_COMMANDS = frozenset({"run", "dedup", "tokenize"})
#: the driver's choice, read before any config is: ``auto`` (default), ``mimalloc`` or ``system``
DRIVER_SETTING = "REFINERY_ALLOCATOR"
#: set in the re-executed command's environment: the values of the variables added, to put back
PUT_BACK = "REFINERY_ALLOCATOR_PUT_BACK"
#: set when SIGINT was blocked across the re-execution, to unblock with the put-back
HELD_SIGINT = "REFINERY_ALLOCATOR_HELD_SIGINT"


#: why this command's process was not re-executed with the preload although it would have been
#: (None: it was, or there was nothing to do); ``-v`` says it (cli_common.setup_logging)
kept_as_it_is: str | None = None


def preload_this_command(args: list[str], *, only_as_refinery: bool = False) -> None:
    """Re-execute this command (the console script or ``python -m refinery``) with mimalloc
    preloaded when it is one of :data:`HEAVY_COMMANDS`, or, in the re-executed process, put the
    environment back, so the processes it starts inherit nothing (they get their own allocator:
    the pool's workers, the extraction helper). Returns when there is nothing to do or the
    re-execution cannot happen (this process then runs on as it is). Why: with ``workers: 1``
    every task runs in this process (the filter chain: +8.7% docs per CPU-second on mimalloc).

    ``only_as_refinery``: re-execute only a process started as refinery itself
    (:func:`started_as_refinery`): a wrapper script calling ``refinery.__main__.main()`` was run
    whole a second time, whatever it did before the call twice (found by review h101)."""
    global kept_as_it_is
    put_back = os.environ.pop(PUT_BACK, None)
    held = os.environ.pop(HELD_SIGINT, None)
    if put_back is not None:  # the re-executed command: the library is bound, the variables go
        import json

        try:
            restore_environment(json.loads(put_back))
        except (ValueError, TypeError, AttributeError):
            pass
        if held:  # a Ctrl-C pressed meanwhile is raised now, where the caller says one line for it
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        return
    choice = os.environ.get(DRIVER_SETTING, "auto")
    if not args or args[0] not in HEAVY_COMMANDS:
        return
    try:  # a typo ("mimaloc") or an uninstalled mimalloc is one line, as the config's keys say it
        check_allocator(choice, DRIVER_SETTING)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    if choice == "system":
        return
    original = getattr(sys, "orig_argv", None)  # the interpreter's own command line, flags included
    if not original or not sys.executable or not _replayable(sys.argv[0]):
        return
    variables = preload_variables(choice)
    if variables is None:
        return
    if only_as_refinery and not started_as_refinery():
        kept_as_it_is = (f"started by {sys.argv[0]}, not as refinery itself (the console script or python -m "
                         "refinery): re-executing it would run the program twice")
        return
    import json

    added, previous = variables
    env = {**os.environ, **added, PUT_BACK: json.dumps(previous)}
    # the signal mask outlives exec: SIGINT is held through the new interpreter's start, where a
    # Ctrl-C ended in Python's own traceback (site's .pth files, ~20 ms more per command: review
    # h101), until the put-back above lets it through
    held = signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    if held:
        env[HELD_SIGINT] = "1"
    try:
        os.execve(sys.executable, original, env)
    except OSError:  # cannot exec (a vanished interpreter, a seccomp policy): run on, unpreloaded
        if held:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        return


def _replayable(program: str) -> bool:
    """Whether the program this interpreter runs can be read again by the re-executed one: a file
    (the console script, ``-m``'s ``__main__.py``, a script) or ``-c``'s code. A program read from
    stdin (``python - run ...``) or a pipe (``python <(...)``) is gone once read: re-executed, the
    command ran an empty program and exited 0 having done nothing (found by review h101)."""
    return program == "-c" or os.path.isfile(program)


#: what a console script (pip's, uv's, setuptools') imports: a script importing more is a wrapper
_CONSOLE_SCRIPT_IMPORTS = frozenset({"re", "sys", "refinery", "refinery.__main__", "refinery.cli",
                                     "importlib.metadata", "importlib_metadata", "pkg_resources"})


def started_as_refinery() -> bool:
    """Whether this process is refinery itself: ``python -m refinery``, ``python
    path/to/refinery/__main__.py`` or the console script installed for it, rather than a program
    of the user's that calls refinery's ``main()``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None:  # python -m ...
        return spec.name in ("refinery", "refinery.__main__")
    path = getattr(main, "__file__", None)
    if not path:
        return False
    # `python path/to/refinery/__main__.py`: this package's own entry point, run as a file
    own = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py")
    return os.path.realpath(str(path)) == os.path.realpath(own) or is_console_script(str(path))


def is_refinery_itself() -> bool:
    """:func:`started_as_refinery`, or true when that cannot be told: an interrupted command of
    refinery itself leaves by ``os._exit`` (refinery.cli, refinery.__main__), as it did before the
    question was asked; a program calling ``main()`` gets ``SystemExit``."""
    try:
        return started_as_refinery()
    except Exception:  # noqa: BLE001 - whatever happens: as refinery itself
        return True


def is_console_script(path: str) -> bool:
    """Whether the file at ``path`` is an installer's console-script wrapper: imports (of
    :data:`_CONSOLE_SCRIPT_IMPORTS`) and an ``if __name__ == "__main__":`` block that only tidies
    ``sys.argv[0]`` and calls ``sys.exit(main())``. Anything more is a program of the user's."""
    import ast

    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(65_536))
    except (OSError, SyntaxError, ValueError):
        return False
    guards = 0
    for node in tree.body:
        if isinstance(node, ast.Import) and all(a.name in _CONSOLE_SCRIPT_IMPORTS for a in node.names):
            continue
        if isinstance(node, ast.ImportFrom) and node.module in _CONSOLE_SCRIPT_IMPORTS and not node.level:
            continue
        if isinstance(node, ast.If) and _is_main_guard(node.test) and not node.orelse and _argv_fixes_then_exit(node.body):
            guards += 1
            continue
        return False
    return guards == 1


def _is_main_guard(test: ast.expr) -> bool:
    import ast

    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and len(test.comparators) == 1 and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _argv_fixes_then_exit(body: list) -> bool:
    """Statements that only set ``sys.argv[0]`` (pip's ``re.sub``, uv's suffix cuts), ending with
    ``sys.exit(main())`` (``main``: a name or a dotted one). Every expression on the way is inert:
    a script computing ``sys.argv[0]`` with a call of its own (a write, a print) did it twice on
    re-execution (review h106)."""
    import ast

    def argv0(target: ast.expr) -> bool:
        return isinstance(target, ast.Subscript) and ast.unparse(target.value) == "sys.argv" and _inert(target.slice)

    def fix(node: ast.stmt) -> bool:
        if isinstance(node, ast.Assign):
            return all(argv0(t) for t in node.targets) and _inert(node.value)
        if isinstance(node, ast.If):
            return _inert(node.test) and all(fix(n) for n in (*node.body, *node.orelse))
        return False

    *fixes, last = body
    exits = (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) and ast.unparse(last.value.func) == "sys.exit"
             and len(last.value.args) == 1 and not last.value.keywords and isinstance(last.value.args[0], ast.Call)
             and not last.value.args[0].args and not last.value.args[0].keywords
             and _dotted_name(last.value.args[0].func))
    return exits and all(fix(n) for n in fixes)


#: the calls a console script makes to tidy ``sys.argv[0]``: pip's ``re.sub``, uv's ``endswith``
_TIDYING_CALLS = frozenset({"sub", "endswith", "removesuffix", "startswith"})


def _inert(expr: ast.expr) -> bool:
    """Whether evaluating ``expr`` does nothing but compute: no call but the string tidying's, no
    lambda, no assignment expression."""
    import ast

    for node in ast.walk(expr):
        if isinstance(node, (ast.Lambda, ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)):
            return False
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Attribute) and node.func.attr in _TIDYING_CALLS
                                               and (node.func.attr != "sub" or ast.unparse(node.func.value) == "re")):
            return False
    return True


def _dotted_name(expr: ast.expr) -> bool:
    """``main`` or ``refinery.__main__.main``: a name, not an expression that runs code."""
    import ast

    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return isinstance(expr, ast.Name)


def this_process_allocator() -> str:
    """``"mimalloc"`` if this process maps the mimalloc library (preloaded), else ``"the system's malloc"``."""
    try:
        with open("/proc/self/maps") as maps:
            return "mimalloc" if "libmimalloc" in maps.read() else "the system's malloc"
    except OSError:
        return "the system's malloc"
