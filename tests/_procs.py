"""Helpers for tests that stop a real `refinery` process group."""

from __future__ import annotations

import os
import time


def assert_group_gone(pid: int, what: str, timeout_s: float = 5.0) -> None:
    """Wait up to ``timeout_s`` for the process group led by ``pid`` to be gone (its workers
    stopped with it); fail naming ``what`` if any of its processes is still alive."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of {what} are still alive")
