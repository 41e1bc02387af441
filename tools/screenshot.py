"""Headless Chromium driven over the DevTools protocol: load the dashboard, wait, screenshot.

    python tools/screenshot.py http://127.0.0.1:8000/ --out artifacts/dashboard.png --theme dark
    python tools/screenshot.py http://127.0.0.1:8000/ --out artifacts/phone.png --width 390 --phone

Unlike `chromium --screenshot`, the page runs in real time, so WebSocket updates arrive as they
would for a person and the connection badge is not fast-forwarded into "stale".
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install it with `apt-get install -y chromium`"

# The dashboard is ready when both cards hold a value, the socket is live and the table is filled.
DASHBOARD_READY = """(() => {
  const cards = [...document.querySelectorAll('.card')];
  return document.querySelector('#conn')?.dataset.state === 'live'
    && cards.length > 0 && cards.every((c) => c.dataset.seq)
    && document.querySelectorAll('#constituents tbody tr[data-secid]').length > 0;
})()"""


class BrowserError(RuntimeError):
    """Chromium could not be started, or a DevTools command failed."""


def find_chromium() -> str:
    """The path of a Chromium binary on PATH, or a BrowserError saying how to get one."""
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    looked = ", ".join(BROWSER_NAMES)
    raise BrowserError(f"no Chromium on PATH (looked for {looked}); {INSTALL_HINT}")


class Chromium:
    """One headless Chromium with one page, controlled over the DevTools protocol."""

    def __init__(self, binary: str | None = None, start_timeout: float = 30.0) -> None:
        self.binary = binary or find_chromium()
        self.start_timeout = start_timeout
        self._ids = itertools.count(1)
        self._profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: ClientConnection | None = None
        self._sockets = contextlib.ExitStack()

    def __enter__(self) -> Chromium:
        self._process = subprocess.Popen(
            [
                self.binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = self._wait_for_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            targets = json.load(resp)
        page = next(t for t in targets if t.get("type") == "page")
        self._socket = self._sockets.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sockets.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def _wait_for_port(self) -> int:
        # Chromium writes the port it picked into the profile once DevTools listens.
        marker = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BrowserError(f"{self.binary} exited with {self._process.returncode}")
            if marker.exists():
                lines = marker.read_text().split()
                if lines:
                    return int(lines[0])
            time.sleep(0.05)
        raise BrowserError(f"{self.binary} did not open DevTools in {self.start_timeout} s")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result, skipping events in between."""
        if self._socket is None:
            raise BrowserError("browser not started")
        ident = next(self._ids)
        self._socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            reply = json.loads(self._socket.recv(timeout=60))
            if reply.get("id") != ident:
                continue
            if "error" in reply:
                raise BrowserError(f"{method}: {reply['error']}")
            result: dict[str, Any] = reply.get("result", {})
            return result

    def open(
        self, url: str, width: int = 1280, height: int = 900, phone: bool = False, theme: str = ""
    ) -> None:
        """Load a URL at a viewport in CSS pixels; theme '' follows the default (light) scheme."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=2 if phone else 1,
            mobile=phone,
        )
        features = [{"name": "prefers-color-scheme", "value": theme}] if theme else []
        self.call("Emulation.setEmulatedMedia", features=features)
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises are awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, interval: float = 0.1) -> Any:
        """Poll an expression until it is truthy and return it; BrowserError after the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError as error:
                value = None  # the page may still be loading the elements it refers to
                failure = f"; last error: {error}"
            else:
                failure = ""
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"still falsy after {timeout} s: {expression}{failure}")
            time.sleep(interval)

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """Save a PNG of the page (the whole scroll height when full_page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": size["height"],
                "scale": 1,
            }
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--out", type=Path, default=Path("artifacts/dashboard.png"))
    parser.add_argument("--width", type=int, default=1280, help="viewport width, CSS pixels")
    parser.add_argument("--height", type=int, default=900, help="viewport height, CSS pixels")
    parser.add_argument("--phone", action="store_true", help="mobile emulation at 2x density")
    parser.add_argument("--theme", choices=["", "light", "dark"], default="")
    parser.add_argument("--wait-for", default=DASHBOARD_READY, help="JS expression to wait for")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds to wait")
    args = parser.parse_args(argv)
    try:
        with Chromium() as browser:
            browser.open(args.url, args.width, args.height, args.phone, args.theme)
            browser.wait_for(args.wait_for, timeout=args.timeout)
            time.sleep(0.3)  # one more animation frame for the charts
            print(browser.screenshot(args.out))
    except BrowserError as err:
        print(f"screenshot: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
