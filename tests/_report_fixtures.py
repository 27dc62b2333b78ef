"""Real headless Chromium for report tests, driven over the DevTools protocol on a pipe.

``--remote-debugging-pipe`` makes Chromium read CDP commands from fd 3 and write replies/events
to fd 4 as NUL-terminated JSON, so no websocket client (and no open port) is needed. Chromium
is Debian's ``chromium`` package (``.ci/run`` installs it); when it is missing the tests *fail*
with the install command, they do not skip.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
]


def chromium_binary() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "headless Chromium is required for the HTML report tests and was not found on PATH "
        f"(looked for {', '.join(CHROMIUM_NAMES)}). Install it: apt-get update && apt-get install -y chromium",
        pytrace=False,
    )


class Browser:
    """A headless Chromium with one page, recording console messages, exceptions, log entries
    and network requests."""

    def __init__(self, timeout_s: float = 60.0, startup_timeout_s: float = 180.0) -> None:
        # why a longer first wait: a cold Chromium builds its font cache before it answers, which
        # took over 60 s once on a loaded 2-core machine; later commands answer in milliseconds
        self.timeout_s = startup_timeout_s
        self.profile = tempfile.mkdtemp(prefix="refinery-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:  # in the child: fd 3 = commands in, fd 4 = replies out
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=wire_fds, close_fds=False,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.send(f"{domain}.enable")
        self.timeout_s = timeout_s

    # -- protocol -----------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                    raise RuntimeError(f"Chromium closed the DevTools pipe (exit {self.proc.poll()}): {stderr[-2000:]}")
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        for event in self.events:
            if event["method"] == method:
                return event
        while True:
            event = self._read_message(deadline)
            if "method" in event:
                self.events.append(event)
                if event["method"] == method:
                    return event

    # -- page ---------------------------------------------------------------------------------
    def open(self, url: str, width: int = 1280, height: int = 900) -> None:
        self.events.clear()
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")
        self.evaluate("1")  # flush events queued before the load event

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors/warnings, uncaught exceptions, error log entries, failed loads."""
        out = []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}")
            elif m == "Runtime.exceptionThrown":
                details = p.get("exceptionDetails", {})
                out.append(f"exception: {details.get('text')} {details.get('exception', {}).get('description', '')}")
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                out.append(f"log {p['entry']['level']}: {p['entry'].get('text')} ({p['entry'].get('url', '')})")
            elif m == "Network.loadingFailed":
                out.append(f"load failed: {p.get('errorText')}")
        return out

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = self.send("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - it may already be gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


# -- a real run directory ---------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
CC_DOCS = ROOT / "data" / "sample" / "cc_docs"

#: RefinedWeb's document-wise filters that run on extracted text (no extraction: cc_docs is text)
RUN_STAGES: list[dict[str, Any]] = [
    {"type": "url_filter"},
    {"type": "language_id", "params": {"languages": ["en"], "min_score": 0.65}},
    {"type": "gopher_repetition"},
    {"type": "gopher_quality", "params": {"min_words": 50}},
    {"type": "line_corrections"},
]

#: A document built to break a report that forgets to escape: markup in the text, the URL
#: (with a banned word, so url_filter removes it and it lands in the samples) and the id.
HOSTILE_TEXT = (
    "<script>console.error('xss-text')</script><img src=x onerror=\"console.error('xss-img')\">"
    " </textarea></td></table><b>bold?</b> &amp; &lt;ok&gt; \u202e right-to-left"
)
HOSTILE_URL = "http://porn-videos.example.com/<script>console.error('xss-url')</script>?q=\"><img src=y>"
HOSTILE_ID = "hostile-<i>1</i>"


def write_input(directory: Path) -> Path:
    """The bundled real CC documents plus one hostile shard, as JSONL shards under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for f in sorted(CC_DOCS.glob("*.jsonl.gz")):
        shutil.copy(f, directory / f.name)
    hostile = [
        {"id": HOSTILE_ID, "text": HOSTILE_TEXT, "metadata": {"url": HOSTILE_URL}},
        {"id": "hostile-2", "text": "A short English line that gopher will not like.",
         "metadata": {"url": "https://example.org/fine"}},
    ]
    (directory / "hostile.jsonl").write_text("".join(json.dumps(d) + "\n" for d in hostile))
    return directory


def run_config(name: str = "stats-test", stages: list[dict[str, Any]] | None = None) -> Any:
    from refinery.config import parse_config

    return parse_config({"name": name, "stages": stages or RUN_STAGES})


def make_run(tmp: Path, name: str = "stats-test", stages: list[dict[str, Any]] | None = None,
             output: str | None = None, input_dir: Path | None = None) -> tuple[str, Any]:
    from refinery.pipeline import run_pipeline

    input_dir = input_dir or write_input(tmp / "input")
    out = output or str(tmp / name)
    # inline (workers=1): a pool of two started per run and loaded the models in each worker,
    # ~7.5 s a run against ~3 s at load 7 (the pool's own path is tested elsewhere; the outputs
    # do not depend on the workers)
    summary = run_pipeline(run_config(name, stages), str(input_dir), out, workers=1, progress=False)
    assert not summary.failed, [o.error for o in summary.failed]
    return out, summary
