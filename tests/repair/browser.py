"""A real headless Chromium driven over the Chrome DevTools Protocol (CDP), for tests.

Just enough of CDP to use a page as a person does: open a URL, read the DOM,
type into a field, click, wait for a condition (with a deadline), take a
screenshot. One browser process and one page per `Browser`; it talks to
Chromium's DevTools WebSocket with aiohttp (no driver, no extra dependency).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import REPO_ROOT

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--window-size=1280,2000", "--remote-debugging-port=0", "--remote-allow-origins=*"]
START_SECONDS = 60.0
CALL_SECONDS = 30.0


def chromium_path() -> str:
    """Chromium's binary; scripts/ensure_chromium.sh installs it when missing."""
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    result = subprocess.run([str(REPO_ROOT / "scripts" / "ensure_chromium.sh")], capture_output=True, text=True,
                            timeout=900)
    if result.returncode != 0:
        pytest.skip(f"headless Chromium cannot be installed here: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]


class CdpError(Exception):
    pass


class Browser:
    def __init__(self, process: asyncio.subprocess.Process, session: aiohttp.ClientSession,
                 socket: aiohttp.ClientWebSocketResponse) -> None:
        self.process = process
        self._http = session
        self._socket = socket
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())
        self.session_id = ""

    @classmethod
    async def start(cls, profile: Path) -> Browser:
        process = await asyncio.create_subprocess_exec(
            chromium_path(), *FLAGS, f"--user-data-dir={profile}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert process.stderr is not None
        deadline = time.monotonic() + START_SECONDS
        url = ""
        while not url:
            line = await asyncio.wait_for(process.stderr.readline(), timeout=max(0.1, deadline - time.monotonic()))
            if not line:
                raise AssertionError("chromium exited before it opened DevTools")
            if match := re.search(rb"DevTools listening on (ws://\S+)", line):
                url = match.group(1).decode()
        # Keep draining stderr so Chromium never blocks on a full pipe.
        asyncio.get_running_loop().create_task(_drain(process.stderr))
        http = aiohttp.ClientSession()
        socket = await http.ws_connect(url, max_msg_size=64 * 1024 * 1024)
        browser = cls(process, http, socket)
        target = await browser.call("Target.createTarget", {"url": "about:blank"}, page=False)
        attached = await browser.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                      page=False)
        browser.session_id = attached["sessionId"]
        await browser.call("Page.enable")
        return browser

    async def _read(self) -> None:
        async for message in self._socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            future = self._waiting.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)

    async def call(self, method: str, params: dict[str, Any] | None = None, *, page: bool = True) -> dict[str, Any]:
        number = next(self._ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self.session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        await self._socket.send_str(json.dumps(message))
        answer = await asyncio.wait_for(future, timeout=CALL_SECONDS)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        return dict(answer["result"])

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", {"url": url})
        await self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'",
                            what=f"{url} loaded")

    async def wait_for(self, expression: str, *, what: str, timeout: float = 30.0) -> Any:
        """Evaluate `expression` in the page until it is truthy (bounded); page loads in between are fine."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await self.evaluate(expression)
            except CdpError as exc:  # the page is being replaced: its context went away
                last = str(exc)
            else:
                if last:
                    return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"browser: timed out waiting for {what}; last value {last!r}")

    async def dom(self) -> str:
        return str(await self.evaluate("document.documentElement.outerHTML"))

    async def path(self) -> str:
        return str(await self.evaluate("location.pathname"))

    async def type_into(self, selector: str, text: str) -> None:
        """Focus the field and type, key by key, as a person would."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.call("Input.insertText", {"text": text})

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView(); "
            f"const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        assert box, f"no element {selector}"
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                         "clickCount": 1})

    async def cookies(self) -> list[dict[str, Any]]:
        return list((await self.call("Network.getCookies"))["cookies"])

    async def screenshot(self, path: Path) -> None:
        data = await self.call("Page.captureScreenshot", {"format": "png"})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.call("Browser.close", page=False), timeout=5)
        except (CdpError, asyncio.TimeoutError, ConnectionError):
            pass
        self._reader.cancel()
        await self._socket.close()
        await self._http.close()
        try:
            await asyncio.wait_for(self.process.wait(), timeout=10)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass
