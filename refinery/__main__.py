"""``refinery`` (the console script) and ``python -m refinery``.

The command line is imported here, inside the Ctrl-C handling: importing it takes about half a
second, and a Ctrl-C then would otherwise end in a traceback instead of one line."""

from __future__ import annotations

import os
import sys


def main() -> None:
    try:
        # a Ctrl-C here ended in a traceback: the re-execution below starts the interpreter twice
        # (found by review h101: SIGINT 18-75 ms after start, 14 of 54 tries)
        from refinery import allocator

        # first, before the imports: the heavy commands re-execute once with mimalloc preloaded
        # (only refinery itself: a wrapper script of the user's would run twice)
        allocator.preload_this_command(sys.argv[1:], only_as_refinery=True)
        from refinery import interrupts

        interrupts.ignore_at_exit()  # first: its exit handler runs last
        # the imports below build pydantic models, and a Ctrl-C inside pydantic-core's schema
        # build came out as its SchemaError ("unexpected SchemaError", review h101): the handler
        # remembers the press, so whatever error a Ctrl-C turned into is said as one
        interrupts.install()
        from refinery.cli import main as cli_main
    except BaseException as exc:
        if not _interrupted(exc):
            raise
        _leave_interrupted()
    cli_main(exiting=True)


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is a Ctrl-C (or SIGTERM), raised as itself or turned into another error."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    interrupts = sys.modules.get("refinery.interrupts")
    return interrupts is not None and not isinstance(exc, SystemExit) and interrupts.requested()


def _leave_interrupted() -> None:
    """One line, then exit 130 (143 after SIGTERM) at once. Not ``sys.exit``: under ``python -m``,
    a KeyboardInterrupt raised inside code run by ``exec``/``eval`` of a string (a dataclass or
    namedtuple being made by an import) marks the interpreter as ended by an unhandled Ctrl-C even
    though it was caught, and it then killed itself by SIGINT after the line (exit -2, review h101)."""
    interrupts = sys.modules.get("refinery.interrupts")
    sigterm = interrupts is not None and interrupts.terminated()
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - leaving whatever happens
        pass
    os.write(2, b"error: stopped by SIGTERM\n" if sigterm else b"error: interrupted\n")
    allocator = sys.modules.get("refinery.allocator")  # imported first by main(), unless interrupted
    if allocator is not None and not allocator.is_refinery_itself():
        # a program of the user's calling main(): its finally blocks and with statements around
        # the call run, as on any other exit (os._exit skipped its clean-up: review h106)
        sys.exit(143 if sigterm else 130)
    os._exit(143 if sigterm else 130)


if __name__ == "__main__":
    main()
