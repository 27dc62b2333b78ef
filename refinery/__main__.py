"""``refinery`` (the console script) and ``python -m refinery``.

The command line is imported here, inside the Ctrl-C handling: importing it takes about half a
second, and a Ctrl-C then would otherwise end in a traceback instead of one line."""

from __future__ import annotations

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
        from refinery.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    cli_main(exiting=True)


if __name__ == "__main__":
    main()
