"""Exactly one repair instance acts; a standby takes over when the leader dies.

Method: run two real `symphony repair` processes against one database; read
which session holds the advisory lock from pg_locks/pg_stat_activity (each
instance names its session `symphony-repair:<instance>`); SIGKILL the leader
and measure how long the standby takes to hold the lock. The time is recorded
(junit property `leader_takeover_seconds`), bounded by a generous wait, never
asserted against a number.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from repair.config import RepairConfig
from symphony.db import connect
from tests.conftest import REPO_ROOT, own_postgres

WAIT_SECONDS = 30.0
_HOLDER = """
SELECT a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND ((l.classid::bigint << 32) | l.objid::bigint) = $1
"""


def _start(instance: str, database_url: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """`symphony repair`; its log goes to `log` if given (to read while it runs), else to a pipe."""
    env = {**os.environ, "SYMPHONY_REPAIR_INSTANCE_ID": instance, "SYMPHONY_REPAIR_CYCLE_SECONDS": "0.5",
           "SYMPHONY_REPAIR_LEADER_RETRY_SECONDS": "0.2", "SYMPHONY_DATABASE_URL": database_url}
    if log is None:
        return subprocess.Popen([sys.executable, "-m", "symphony", "repair"], cwd=REPO_ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "symphony", "repair"], cwd=REPO_ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=out)


async def _holders(db: asyncpg.Connection) -> list[str]:
    return [row["application_name"] for row in await db.fetch(_HOLDER, RepairConfig().leader_lock_key)]


async def _wait_for_holder(db: asyncpg.Connection, expected: str, processes: list[subprocess.Popen[bytes]]) -> float:
    started = time.monotonic()
    while time.monotonic() - started < WAIT_SECONDS:
        for process in processes:
            if process.poll() is not None and process.returncode not in (-signal.SIGKILL,):
                raise AssertionError(f"repair exited with {process.returncode}: {process.stderr.read().decode()}")
        if await _holders(db) == [f"symphony-repair:{expected}"]:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{expected} did not become leader within {WAIT_SECONDS} s; holders {await _holders(db)}")


@pytest.mark.slow
async def test_standby_takes_over_when_the_leader_is_killed(
        db: asyncpg.Connection, database_url: str, record_property: pytest.RecordProperty) -> None:
    first = _start("repair-a", database_url)
    processes = [first]
    try:
        await _wait_for_holder(db, "repair-a", processes)
        second = _start("repair-b", database_url)
        processes.append(second)
        # The standby is up (it reports itself) but does not act.
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            role = await db.fetchval("SELECT role FROM repair_instances WHERE instance_id = 'repair-b'")
            if role == "STANDBY":
                break
            await asyncio.sleep(0.05)
        assert role == "STANDBY"
        assert await _holders(db) == ["symphony-repair:repair-a"]
        assert await db.fetchval("SELECT role FROM repair_instances WHERE instance_id = 'repair-a'") == "LEADER"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        takeover_seconds = await _wait_for_holder(db, "repair-b", processes)
        record_property("leader_takeover_seconds", round(takeover_seconds, 3))
        print(f"leader takeover after SIGKILL: {takeover_seconds:.2f} s")
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            row = await db.fetchrow("SELECT role, last_cycle_at FROM repair_instances WHERE instance_id = 'repair-b'")
            if row["role"] == "LEADER" and row["last_cycle_at"] is not None:
                break
            await asyncio.sleep(0.05)
        assert row["role"] == "LEADER" and row["last_cycle_at"] is not None
        # A graceful stop releases the lock and says so.
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0, second.stderr.read().decode()
        assert await _holders(db) == []
        assert await db.fetchval("SELECT role FROM repair_instances WHERE instance_id = 'repair-b'") == "STOPPED"
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


async def _wait_for_cycle_after(db: asyncpg.Connection, instance: str, after: object,
                                processes: list[subprocess.Popen[bytes]]) -> asyncpg.Record:
    """The instance's row once it is LEADER with a term and a cycle newer than `after`."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"repair exited with {process.returncode}: {process.stderr.read().decode()}")
        try:
            row = await db.fetchrow("SELECT role, became_leader_at, last_cycle_at FROM repair_instances "
                                    "WHERE instance_id = $1", instance)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            row = None  # our own session may not have reconnected yet
        if row is not None and row["role"] == "LEADER" and row["last_cycle_at"] is not None \
                and row["last_cycle_at"] > after:
            return row
        await asyncio.sleep(0.1)
    raise AssertionError(f"{instance} ran no cycle as leader after {after} within {WAIT_SECONDS} s")


@pytest.mark.slow
async def test_a_restarted_leader_with_the_same_id_starts_a_new_term(db: asyncpg.Connection,
                                                                     database_url: str) -> None:
    """A supervisor restarts a killed instance under its old id: the row still
    says LEADER, yet the new process's takeover is a new term (became_leader_at
    moves), so an operator or the chaos check sees the takeover."""
    first = _start("repair-same", database_url)
    processes = [first]
    try:
        before = await _wait_for_cycle_after(db, "repair-same", await db.fetchval("SELECT now() - interval '1 h'"),
                                             processes)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = await db.fetchval("SELECT now()")
        processes = [_start("repair-same", database_url)]
        after = await _wait_for_cycle_after(db, "repair-same", killed_at, processes)
        assert after["became_leader_at"] > killed_at > before["became_leader_at"]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.evidence("failure_injection")
async def test_the_leader_survives_a_postgres_crash_and_leads_again(tmp_path: Path) -> None:
    """PostgreSQL killed and restarted under a running leader: the daemon must
    not exit (its sessions die mid-query, reconnects are refused while the
    server is down); it takes the lock again and resumes its cycles."""
    process: subprocess.Popen[bytes] | None = None
    async with own_postgres("repair-outage") as (server, url):
        try:
            conn = await connect(url)
            start = await conn.fetchval("SELECT now() - interval '1 h'")
            log = tmp_path / "repair-outage.log"
            process = _start("repair-outage", url, log)
            await _wait_for_cycle_after(conn, "repair-outage", start, [process])
            await conn.close()
            server.kill()
            # Positive evidence that it ran into the dead server several times
            # (lost its session, then failed elections) before judging that it survived.
            deadline = time.monotonic() + WAIT_SECONDS
            while log.read_text(errors="replace").count("leader election failed") < 3:
                assert process.poll() is None, log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, f"no failed elections logged: {log.read_text()[-3000:]}"
                await asyncio.sleep(0.1)
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            server.restart()
            conn = await connect(url)
            restarted_at = await conn.fetchval("SELECT now()")
            row = await _wait_for_cycle_after(conn, "repair-outage", restarted_at, [process])
            assert row["became_leader_at"] > start
            await conn.close()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0, log.read_text(errors="replace")[-3000:]
        finally:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)
