"""The extraction helper process: HTML -> text with trafilatura or Resiliparse, killable.

Started by :class:`refinery.stages.extract.TrafilaturaExtractor` as
``python _extract_helper.py FD PARENT_PID CONFIG_JSON`` (by file path: it imports only the standard
library and the backend, not refinery or pyarrow). It talks over the inherited socket ``FD``
(``multiprocessing.connection`` framing): it sends ``("ready", pid)`` once the backend is imported
and warmed up (or ``("error", message)`` if it cannot be), then answers each ``(html, url)``
request with ``("ok", text_or_None)`` or ``("failed", "ExceptionType: message")``. It exits when
the socket closes. The parent enforces the deadline by killing this process (SIGKILL): a parser
stuck in C code cannot be interrupted any other way.

If the parent dies, the helper dies too: ``PR_SET_PDEATHSIG`` (Linux; only when started from the
parent's main thread, since the signal follows the thread that started it) and a watchdog thread
that notices being re-parented.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from multiprocessing.connection import Connection


def _die_with_parent(parent_pid: int, pdeathsig: bool) -> None:
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - best effort; the watchdog below still runs
            pass
    if os.getppid() != parent_pid:  # the parent died before we got here
        os._exit(3)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _make_extract(config: dict):
    backend = config["backend"]
    kwargs = config["kwargs"]
    if backend == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        return lambda html, url: extract_plain_text(html, **kwargs)
    import logging

    import trafilatura

    # trafilatura logs a WARNING for every page without content; the parent records the reason
    logging.getLogger("trafilatura").setLevel(config.get("log_level") or logging.ERROR)
    extract = trafilatura.extract
    return lambda html, url: extract(html, url=url, **kwargs)


def main(argv: list[str]) -> None:
    fd, parent_pid, config = int(argv[1]), int(argv[2]), json.loads(argv[3])
    _die_with_parent(parent_pid, config.get("pdeathsig", False))
    conn = Connection(fd)
    try:
        extract = _make_extract(config)
        extract("<html><body><article><p>warm up the parser and the backend's lazy set-up</p>"
                "</article></body></html>", None)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            html, url = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = ("ok", extract(html, url))
        except Exception as exc:  # noqa: BLE001 - any parser failure fails just this document
            reply = ("failed", f"{type(exc).__name__}: {exc}"[:500])
        del html
        conn.send(reply)


if __name__ == "__main__":
    main(sys.argv)
