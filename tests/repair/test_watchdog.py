"""systemd's watchdog for `symphony repair`, fed by the reconciliation loop.

Goal: under a unit with WatchdogSec=, repair pings WATCHDOG=1 while its cycles
run, and stops pinging when a cycle is stuck, so systemd restarts it (before,
repair never pinged and was killed every WatchdogSec). Method: a real repair
process with NOTIFY_SOCKET pointing at a datagram socket the test owns and
WATCHDOG_USEC=1 s; the stall is a real blocked dependency: the test holds an
ACCESS EXCLUSIVE lock on the tables the detectors read, waits until repair's
query is seen waiting on it in pg_stat_activity, and then sees no ping for a
window of three watchdog periods; released, the pings resume.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.conftest import REPO_ROOT
from tests.notify_sink import NotifySink, held_lock, wait_for_lock_waiter


def _start(database_url: str, notify_sink: NotifySink, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **notify_sink.env(), "SYMPHONY_REPAIR_INSTANCE_ID": "wd",
           "SYMPHONY_REPAIR_CYCLE_SECONDS": "0.2", "SYMPHONY_REPAIR_LEADER_RETRY_SECONDS": "0.2", "SYMPHONY_REPAIR_METRICS_PORT": "0",
           "SYMPHONY_DATABASE_URL": database_url}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "symphony", "repair"], cwd=REPO_ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=out, stdin=subprocess.DEVNULL)


async def test_repair_pings_the_watchdog_and_stops_when_a_cycle_is_stuck(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, notify_sink: NotifySink) -> None:
    """Pings while cycling; none while a detector waits on a lock; pings again after."""
    process = _start(database_url, notify_sink, tmp_path / "repair.log")
    try:
        await notify_sink.wait_pings(3, process, "repair pings while cycling")
        assert "READY=1" in notify_sink.messages
        async with held_lock(database_url, "payment_outbox, ingress_attestations, journal_checkpoints"):
            await wait_for_lock_waiter(db, process)
            await notify_sink.assert_silent("repair pinged while its cycle was stuck")
            assert process.poll() is None
        await notify_sink.wait_pings(2, process, "repair pings again once the lock is released")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0, (tmp_path / "repair.log").read_text()[-3000:]
