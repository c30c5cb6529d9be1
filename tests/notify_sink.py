"""A stand-in for systemd's notify socket: a real AF_UNIX datagram socket in the test.

A daemon started with NOTIFY_SOCKET pointing here and WATCHDOG_USEC set sends
READY=1, WATCHDOG=1 and STOPPING=1 datagrams to it exactly as it would to
systemd. The helpers wait for messages with a deadline and observe a window in
which no ping may arrive (a stalled work loop); `held_lock` stalls a daemon on
a real blocked dependency. Tests get a sink from the `notify_sink` fixture
(tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

WAIT_SECONDS = 30.0
# 1 s: pings every 0.25 s while healthy, none once a loop is 0.5 s late.
WATCHDOG_USEC = 1_000_000
# Three watchdog periods: how long a stalled daemon must stay silent.
WINDOW_SECONDS = 3 * WATCHDOG_USEC / 1_000_000


class NotifySink:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(self.path))
        self.socket.setblocking(False)
        self.messages: list[str] = []

    def env(self) -> dict[str, str]:
        """What systemd puts in a Type=notify unit's environment with WatchdogSec=1s."""
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}

    def drain(self) -> list[str]:
        """Every datagram received since the last drain."""
        got = []
        while True:
            try:
                got.append(self.socket.recv(4096).decode())
            except BlockingIOError:
                break
        self.messages.extend(got)
        return got

    def pings(self) -> int:
        return sum(1 for message in self.drain() if "WATCHDOG=1" in message.split("\n"))

    async def wait_pings(self, count: int, process: subprocess.Popen[bytes] | None = None,
                         what: str = "watchdog pings") -> None:
        """Wait (bounded) until `count` WATCHDOG=1 datagrams have arrived."""
        deadline = time.monotonic() + WAIT_SECONDS
        seen = 0
        while seen < count:
            if process is not None and process.poll() is not None:
                raise AssertionError(f"the daemon exited with {process.returncode} before {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {seen} of {count} WATCHDOG=1 within {WAIT_SECONDS} s; "
                                     f"got {self.messages[-5:]}")
            seen += self.pings()
            await asyncio.sleep(0.05)

    async def pings_during(self, seconds: float) -> int:
        """WATCHDOG=1 datagrams that arrive in the next `seconds` (an observation window)."""
        self.drain()
        end = time.monotonic() + seconds
        count = 0
        while time.monotonic() < end:
            count += self.pings()
            await asyncio.sleep(0.05)
        return count + self.pings()

    async def assert_silent(self, what: str, lead_seconds: float = WINDOW_SECONDS / 3) -> None:
        """No WATCHDOG=1 for WINDOW_SECONDS, after `lead_seconds` in which a ping
        already on its way may still arrive (it is not the point)."""
        await self.pings_during(lead_seconds)
        assert await self.pings_during(WINDOW_SECONDS) == 0, what

    def close(self) -> None:
        self.socket.close()


async def wait_for_lock_waiter(db: asyncpg.Connection, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait (bounded) until another session of this database waits on a lock:
    the daemon's work loop is now blocked on the test's lock."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")
        if waiting:
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the daemon exited with {process.returncode} while the test held the lock")
        if time.monotonic() > deadline:
            raise AssertionError("no session of the daemon ever waited on the test's lock")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def held_lock(database_url: str, tables: str) -> AsyncIterator[None]:
    """Another session holds an ACCESS EXCLUSIVE lock on `tables` for the block,
    then rolls back: whatever the daemon waits on it with goes on."""
    blocker = await asyncpg.connect(database_url)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")
        yield
        await transaction.rollback()
    finally:
        await blocker.close()
