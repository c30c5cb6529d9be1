"""`symphony dashboard` as a real process for tests, and its login form.

Every dashboard test starts the dashboard the same way: a token file (or none,
for client-certificate tests), a free port on 127.0.0.1, and a wait (with a
deadline) until it listens or exits. The login form's CSRF token is read the
way a browser would get it: GET /login, then the hidden field.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from tests.conftest import REPO_ROOT, free_port

TOKEN = "supervisor-token-0123456789abcdef"
LISTEN_SECONDS = 30.0


async def start_dashboard(database_url: str, tmp_path: Path, *, token: str | None = TOKEN,
                          env: Mapping[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """A listening `symphony dashboard` (bearer `token`, or none when None) with
    `env` added to its environment; returns the process and its port."""
    args = [sys.executable, "-m", "symphony", "dashboard", "--database-url", database_url]
    if token is not None:
        token_file = tmp_path / "dashboard-token"
        token_file.write_text(token + "\n")
        args += ["--token-file", str(token_file)]
    port = free_port()
    process = subprocess.Popen([*args, "--port", str(port)], cwd=REPO_ROOT, env={**os.environ, **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await wait_listening(process, port)
    except AssertionError:
        process.kill()
        process.wait(timeout=20)
        raise
    return process, port


async def wait_listening(process: subprocess.Popen[bytes], port: int) -> None:
    """Wait (bounded) until `process` accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + LISTEN_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise AssertionError(f"dashboard exited with {process.returncode}: {stderr}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)  # poll interval while waiting for the port
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"dashboard did not listen within {LISTEN_SECONDS} s")


def form_csrf(form: str) -> str:
    """The CSRF token in the login form's hidden field."""
    found = re.search(r'name="csrf" value="([^"]+)"', form)
    assert found, "the login form has no CSRF field"
    return found.group(1)


async def login_csrf(http: aiohttp.ClientSession, base: str) -> str:
    """The CSRF token of a fresh login form (its cookie lands in `http`'s jar)."""
    async with http.get(base + "/login") as response:
        assert response.status == 200
        return form_csrf(await response.text())
