"""`symphony migrate --check [--wait-seconds N]`: what the daemons' init containers run.

Goal: a daemon never starts on an older schema: the check exits 0 only when
every migration of this release is applied, 1 (naming them) when some are
pending, changes nothing itself, and with a wait returns 0 as soon as another
process (the migration Job) has applied them. Method: real `symphony`
processes against the embedded PostgreSQL: a migrated database, an empty one,
and a waiting check released by a concurrent `symphony migrate`.
"""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg

from tests.conftest import REPO_ROOT, symphony_cli


def test_a_migrated_database_passes(database_url: str) -> None:
    """Every migration applied: exit 0."""
    result = symphony_cli("migrate", "--check", "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


async def test_pending_migrations_fail_then_a_waiting_check_is_released(empty_database_url: str) -> None:
    """Empty database: exit 1 naming the files, nothing created; a waiting check exits 0 once
    `symphony migrate` has run."""
    result = symphony_cli("migrate", "--check", "--database-url", empty_database_url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0001_schema_v1.sql" in result.stderr
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None, "--check created something"
    finally:
        await conn.close()
    waiter = subprocess.Popen([sys.executable, "-m", "symphony", "migrate", "--check", "--wait-seconds", "120",
                               "--database-url", empty_database_url], cwd=REPO_ROOT, env=dict(os.environ),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        applied = symphony_cli("migrate", "--database-url", empty_database_url, timeout=120)
        assert applied.returncode == 0, applied.stderr
        out, err = waiter.communicate(timeout=120)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 0, out + err
    assert "up to date" in out
