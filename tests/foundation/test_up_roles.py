"""`symphony up` runs every daemon as its own database role, with no secret in argv.

Method: start a real `symphony up` on an empty data dir and wait for `ready`.
Then (1) read /proc/<pid>/cmdline of every process descending from `up` and
find none of the database passwords (the embedded superuser's and each login
role's) nor a DSN with credentials; (2) drive real payments through the
sidecar and wait until they are executed on the rail and their attestations
shipped, which exercises the service's, relayer's and forwarder's grants;
(2b) fetch the end-of-day statement of each of the three real rails from the
URL `up` prints, drop it into <data_dir>/statements/<rail>/, and wait until the
repair daemon's schedule (under its own role) has reconciled all three clean; (3)
map each child's TCP connections to PostgreSQL backends (its socket inodes ->
local ports -> pg_stat_activity.client_port) and check that each connects as
its own login role, which is neither a superuser nor the tables' owner.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg

from symphony.db import connect, roles
from symphony.embedded import EmbeddedState
from tests.conftest import REPO_ROOT, symphony_cli, wait_up_ready

SETTLE_TIMEOUT_SECONDS = 120
# Children that talk to PostgreSQL, and the daemon (role) each one is.
DATABASE_CHILDREN = {"sidecar": "sidecar", "service": "service", "forwarder": "forwarder",
                     "relayer": "relayer", "repair": "repair", "dashboard": "dashboard"}
CREDENTIALS_IN_URL = re.compile(r"postgres(?:ql)?://[^:/@\s]+:[^@/\s]+@")


def _children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children_of(), [], [pid]
    while todo:
        current = todo.pop()
        for child in tree.get(current, []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _local_ports(pids: list[int]) -> set[int]:
    """Local TCP ports of the sockets these processes hold (IPv4 and IPv6)."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path("/proc") / str(pid) / "fd"
        try:
            links = [os.readlink(fd_dir / name) for name in os.listdir(fd_dir)]
        except OSError:
            continue
        inodes.update(link[8:-1] for link in links if link.startswith("socket:["))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def _settled(admin_dsn: str, expected: int) -> bool:
    conn = await connect(admin_dsn)
    try:
        done = await conn.fetchval("SELECT count(*) FROM payment_outbox WHERE status IN ('SUCCESS', 'FAILED')")
        shipped = await conn.fetchval(
            "SELECT count(*) FROM execution_attestation_v1 WHERE classification = 'ATTESTED'")
        ghosts = await conn.fetchval("SELECT count(*) FROM attestation_ghosts")
        return bool(done >= expected and shipped >= expected and ghosts == 0)
    finally:
        await conn.close()


async def _repair_cycle_errors(admin_dsn: str) -> tuple[bool, list[str]]:
    """Whether the repair leader has finished a cycle since the traffic, and its errors."""
    conn = await connect(admin_dsn)
    try:
        rows = await conn.fetch("""SELECT last_error FROM repair_instances
                                   WHERE role = 'LEADER' AND last_cycle_at > now() - interval '3 seconds'""")
        return bool(rows), [row["last_error"] for row in rows if row["last_error"]]
    finally:
        await conn.close()


async def _statements(admin_dsn: str) -> list[dict[str, object]]:
    conn = await connect(admin_dsn)
    try:
        return [dict(r) for r in await conn.fetch("SELECT rail, lines, matched, unmatched, mismatched "
                                                  "FROM rail_statements")]
    finally:
        await conn.close()


async def _backends(admin_dsn: str) -> list[asyncpg.Record]:
    conn = await connect(admin_dsn)
    try:
        return await conn.fetch(
            """SELECT a.client_port, a.usename::text AS usename, r.rolsuper,
                      EXISTS (SELECT FROM pg_tables t WHERE t.schemaname = 'public' AND t.tableowner = a.usename)
                          AS owner
               FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename
               WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()""")
    finally:
        await conn.close()


def test_up_children_have_no_secret_in_argv_and_each_connects_as_its_own_role(
        tmp_path: Path, server_dir: Path) -> None:
    """Goal: issue 12 item 5 and issue 11 item 2 on a real `symphony up` (see the module docstring)."""
    data_dir = server_dir / "data"  # the server user must reach it (tests/conftest.py: server_user_dir)
    (tmp_path / "up.toml").write_text("embedded_fast = true\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("SYMPHONY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "symphony", "up", "--data-dir", str(data_dir), "--config", str(tmp_path / "up.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)
    try:
        lines = wait_up_ready(process)
        assert any(line.startswith("database roles: one login role per daemon") for line in lines), lines
        ingress = next(line.split(": ", 1)[1] for line in lines if line.startswith("sidecar ingress:"))
        state = EmbeddedState.read(data_dir)
        assert state is not None
        secrets = [(data_dir / "pg-password").read_text().strip()]
        secrets += [(data_dir / "secrets" / f"db-{daemon}.password").read_text().strip() for daemon in roles.DAEMONS]
        for daemon in roles.DAEMONS:
            assert (data_dir / "secrets" / f"db-{daemon}.password").stat().st_mode & 0o077 == 0
        assert all(len(secret) >= 16 for secret in secrets)

        # (1) No secret in any descendant's argv.
        descendants = _descendants(process.pid)
        assert len(descendants) >= 8, descendants  # every daemon, the sidecar's workers
        for pid in descendants:
            cmdline = _cmdline(pid)
            assert not CREDENTIALS_IN_URL.search(cmdline), (pid, cmdline)
            assert not any(secret in cmdline for secret in secrets), pid
            assert "--database-url" not in cmdline, (pid, cmdline)

        # (2) Real payments through the sidecar, executed and attested.
        traffic = symphony_cli("demo", "traffic", "--target", ingress, "--requests", "12", "--concurrency", "4",
                               "--data-dir", str(data_dir), env=env, timeout=120)
        assert traffic.returncode == 0, traffic.stderr
        created = json.loads(traffic.stdout)["by_status"].get("201", 0)
        assert created >= 1, traffic.stdout
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        while not asyncio.run(_settled(state.dsn, created)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert asyncio.run(_settled(state.dsn, created))
        # The repair daemon's detectors all run under its role (an error would name the detector).
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        while not asyncio.run(_repair_cycle_errors(state.dsn))[0] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert asyncio.run(_repair_cycle_errors(state.dsn)) == (True, [])
        for log in (data_dir / "logs").glob("*.log"):
            assert "permission denied" not in log.read_text(errors="replace"), log
        # (2b) The three real rails run, each publishes its statement, and repair's scheduled
        # reconciliation (as its own role: temporary tables, rail_statements, open_incident_v1)
        # reads a statement dropped into <data_dir>/statements/<rail>/.
        statement_urls = {line.split(" ", 1)[0].removeprefix("rail-sim-"): line.split(": ", 1)[1]
                          for line in lines if line.startswith("rail-sim-") and " statement: " in line}
        assert sorted(statement_urls) == ["airtel_money", "iso20022", "mtn_momo"], lines
        assert any(line.startswith("repair statements: ") for line in lines), lines
        for rail, url in statement_urls.items():
            with urllib.request.urlopen(url, timeout=30) as answer:
                (data_dir / "statements" / rail / "day-1.stmt").write_bytes(answer.read())
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        while len(asyncio.run(_statements(state.dsn))) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        reconciled = asyncio.run(_statements(state.dsn))
        assert sorted(r["rail"] for r in reconciled) == ["airtel_money", "iso20022", "mtn_momo"], reconciled
        assert sum(r["lines"] for r in reconciled) >= 1, reconciled  # the demo paid through a real rail
        assert all(r["lines"] == r["matched"] and r["unmatched"] == r["mismatched"] == 0 for r in reconciled), \
            reconciled
        assert asyncio.run(_repair_cycle_errors(state.dsn))[1] == []
        gap = symphony_cli("audit", "gap", "--json", "--data-dir", str(data_dir), env=env)
        assert gap.returncode == 0, gap.stdout + gap.stderr
        assert json.loads(gap.stdout)["total"]["unattested"] == 0

        # (3) Each child's connections belong to its own login role.
        run_state = json.loads((data_dir / "run" / "up.json").read_text())
        backends = asyncio.run(_backends(state.dsn))
        by_port = {row["client_port"]: row for row in backends}
        for child, daemon in DATABASE_CHILDREN.items():
            pid = run_state["children"][child]["pid"]
            mine = [by_port[port] for port in _local_ports([pid, *_descendants(pid)]) if port in by_port]
            assert mine, (child, backends)
            for row in mine:
                assert row["usename"] == roles.login_role(daemon), (child, dict(row))
                assert not row["rolsuper"] and not row["owner"], (child, dict(row))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_database_url_file_is_read_and_a_world_readable_one_refused(tmp_path: Path, database_url: str) -> None:
    """Goal: a DSN can come from a file (SYMPHONY_DATABASE_URL_FILE) instead of argv
    or the environment, and a file every local user may read is refused.
    Method: run the real `symphony audit gap` with only the file variable set."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SYMPHONY_")}
    url_file = tmp_path / "database-url"
    url_file.write_text(database_url + "\n")
    url_file.chmod(0o600)
    env["SYMPHONY_DATABASE_URL_FILE"] = str(url_file)
    ok = symphony_cli("audit", "gap", "--json", "--data-dir", str(tmp_path / "none"), env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["total"]["status"] == "PASS"
    url_file.chmod(0o644)
    refused = symphony_cli("audit", "gap", "--data-dir", str(tmp_path / "none"), env=env)
    assert refused.returncode == 3 and "every user may read it" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and database_url not in refused.stderr
