"""The extraction helper process: HTML -> text with trafilatura or Resiliparse, killable.

Started by :class:`refinery.stages.extract.TrafilaturaExtractor` as
``python _extract_helper.py FD PARENT_PID CONFIG_JSON`` (by file path: it imports only the standard
library and the backend, not refinery or pyarrow). It talks over the inherited socket ``FD``
(``multiprocessing.connection`` framing): it sends ``("ready", pid)`` once the backend is imported
and warmed up (or ``("error", message)`` if it cannot be), then answers each ``(html, url)``
request with ``("ok", (text_or_None, path))`` or ``("failed", "ExceptionType: message")``. It exits
when the socket closes. ``path`` names the extraction path that produced the text (see
:func:`make_extract`); the stage records it in its ``extract_path`` column. The parent enforces
the deadline by killing this process (SIGKILL): a parser stuck in C code cannot be interrupted any
other way.

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


#: extraction path names (the ``extract_path`` column) and their numbers (``extract_pass``)
PATHS = {"input": 0, "precision": 1, "balanced": 1, "main_content": 1, "fallback": 2, "baseline": 3}


def make_extract(config: dict):
    """``fn(html, url) -> (text or None, path)`` for a helper configuration (also used in-process).

    Trafilatura with ``config["fallback"]`` (a dict) runs a cascade, because one setting cannot
    both keep boilerplate out of articles and find the text of table-layout pages (issue 13):

    1. the configured first pass (default: precision mode, tables on, fast = no readability/justext
       comparison); path ``"precision"`` (``"balanced"`` when ``favor_precision`` is off);
    2. if its text is shorter than ``below_chars``: trafilatura's recall mode (``mode="recall"``) or
       balanced mode (``"balanced"``: its recall escalation re-extracts short pages, ~2x the CPU of
       recall mode on them), with tables and the readability/justext comparison; kept only if it is
       more than ``min_gain`` times longer (a longer text that is not much longer is mostly the
       boilerplate precision mode cut); path ``"fallback"``;
    3. if both are empty: trafilatura's ``baseline`` (JSON-LD article body, ``<article>``,
       paragraphs, else the page's body text); path ``"baseline"``.
    """
    backend = config["backend"]
    kwargs = config["kwargs"]
    if backend == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        return lambda html, url: (extract_plain_text(html, **kwargs), "main_content")
    import logging

    import trafilatura
    from trafilatura import baseline

    # trafilatura logs a WARNING for every page without content; the parent records the reason
    logging.getLogger("trafilatura").setLevel(config.get("log_level") or logging.ERROR)
    extract = trafilatura.extract
    first_path = "precision" if kwargs.get("favor_precision") else "balanced"
    fallback = config.get("fallback")
    if not fallback:
        return lambda html, url: (extract(html, url=url, **kwargs), first_path)
    below_chars = int(fallback["below_chars"])
    min_gain = float(fallback["min_gain"])
    second_kwargs = {**kwargs, "favor_precision": False, "favor_recall": fallback.get("mode", "recall") == "recall",
                     "include_tables": True, "fast": False}
    use_baseline = bool(fallback.get("baseline", True))

    def cascade(html: str, url: str | None) -> tuple[str | None, str]:
        text = extract(html, url=url, **kwargs) or ""
        if len(text) >= below_chars:
            return text, first_path
        if second_kwargs != {"favor_recall": False, **kwargs}:  # the same settings would give the same text
            second = extract(html, url=url, **second_kwargs) or ""
            if len(second) > min_gain * len(text):
                return second, "fallback"
        if text.strip() or not use_baseline:
            return text, first_path
        _, rescued, _ = baseline(html)
        return rescued, "baseline"

    return cascade


def main(argv: list[str]) -> None:
    fd, parent_pid, config = int(argv[1]), int(argv[2]), json.loads(argv[3])
    _die_with_parent(parent_pid, config.get("pdeathsig", False))
    conn = Connection(fd)
    try:
        extract = make_extract(config)
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
