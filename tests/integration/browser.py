"""A headless Chromium driven over the DevTools protocol through a pipe
(``--remote-debugging-pipe``: commands on fd 3, answers on fd 4, each message ended
by NUL), so a test can click, read the live DOM and take screenshots without a
WebSocket client or a driver binary. Chromium comes from scripts/chromium."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import eventually


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Chromium is not installed. Install it with: scripts/chromium", pytrace=False)
    return found


# Headless, sandbox-less (no user namespaces here) and quiet: no network of its own.
HEADLESS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
)

GUARDED = "(function () { try { return (EXPRESSION); } catch (e) { return null; } })()"


class BrowserError(Exception):
    pass


class Browser:
    def __init__(self, profile: Path, width: int = 1280, height: int = 860) -> None:
        commands_read, self._commands = os.pipe()
        answers, answers_write = os.pipe()
        # Above 4, so that placing them at 3 and 4 in the child cannot clobber one another.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_read, answers_write)]
        for fd in (commands_read, answers_write):
            os.close(fd)

        def at_3_and_4() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [
                chromium(),
                *HEADLESS,
                "--hide-scrollbars",
                f"--window-size={width},{height}",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(3, 4),
            preexec_fn=at_3_and_4,  # noqa: PLW1509 - no threads touch the fds meanwhile
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for fd in high:
            os.close(fd)
        self._answers = os.fdopen(answers, "rb", buffering=0)
        self._next_id = 0
        self._results: dict[int, dict[str, Any]] = {}
        self._ready = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )
        self.call("Page.enable", session=True)
        # In front, as a person's tab would be: a background tab paints no frames.
        self.call("Page.bringToFront", session=True)

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = self._answers.read(65536)
            if not chunk:
                with self._ready:
                    self._results[-1] = {"error": {"message": "the browser closed its pipe"}}
                    self._ready.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._ready:
                        self._results[message["id"]] = message
                        self._ready.notify_all()

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: bool = False,
        timeout_s: float = 30,
    ) -> dict[str, Any]:
        with self._ready:
            self._next_id += 1
            number = self._next_id
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        with self._ready:
            while number not in self._results and -1 not in self._results:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"{method}: no answer in {timeout_s} s")
                self._ready.wait(left)
            answer = self._results.pop(number, None) or self._results[-1]
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error'].get('message')}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(str(details.get("exception", {}).get("description") or details))
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", {"url": url}, session=True)

    def wait_for(self, expression: str, timeout_s: float = 30, what: str = "") -> Any:
        """Poll ``expression`` until truthy; while the page loads it may throw."""
        guarded = GUARDED.replace("EXPRESSION", expression)
        return eventually(lambda: self.evaluate(guarded), timeout_s, what or expression)

    def click(self, selector: str, timeout_s: float = 20) -> None:
        """Click the element at ``selector`` once it is there and enabled: a page draws
        its buttons after its own reads, which a busy machine may finish after what
        the test waited for (the traceback, the status)."""
        clicked = (
            f"(function () {{ var e = document.querySelector({json.dumps(selector)});"
            " if (!e || e.disabled) { return false; } e.click(); return true; })()"
        )
        eventually(lambda: self.evaluate(clicked), timeout_s, f"something enabled at {selector}")

    def screenshot(self, path: Path) -> Path:
        shot = self.call("Page.captureScreenshot", {"format": "png"}, session=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(BrowserError):
            self.call("Browser.close", timeout_s=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        self._answers.close()
