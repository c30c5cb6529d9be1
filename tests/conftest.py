"""Shared fixtures: one real PostgreSQL 18 per test run, a fresh database per test.

The embedded server starts once (fsync off: the tests are about logic, not
power loss) in a temporary directory. A template database is migrated once;
each test that asks for `database_url` gets its own copy (CREATE DATABASE …
TEMPLATE, ~0.1 s), so tests never see each other's rows and can run in any order.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from symphony.db import connect, migrate

# The `evidence` marker (a test proves a named result of the evidence bundle).
pytest_plugins = ["tests.evidence_plugin"]
from symphony.embedded import EmbeddedPostgres, EmbeddedState
from tests.notify_sink import NotifySink

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DB = "symphony_template"


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[EmbeddedPostgres]:
    """The run's PostgreSQL server (use `database_url` unless you need the server)."""
    root = Path(tempfile.mkdtemp(prefix="symphony-test-pg-"))
    server = EmbeddedPostgres(root, fast=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_state(embedded_pg: EmbeddedPostgres) -> EmbeddedState:
    assert embedded_pg.state is not None
    return embedded_pg.state


def _dsn_for(state: EmbeddedState, database: str) -> str:
    base, _, _ = state.dsn.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session")
async def template_database(pg_state: EmbeddedState) -> str:
    """A database with every migration applied, copied for each test."""
    admin = await connect(pg_state.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await admin.close()
    conn = await connect(_dsn_for(pg_state, TEMPLATE_DB))
    try:
        await migrate.apply(conn)
    finally:
        await conn.close()
    return TEMPLATE_DB


@pytest.fixture
async def database_url(pg_state: EmbeddedState, template_database: str) -> AsyncIterator[str]:
    """DSN of a fresh, fully migrated database for this test only."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await connect(pg_state.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await admin.close()
    yield _dsn_for(pg_state, name)
    admin = await connect(pg_state.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def empty_database_url(pg_state: EmbeddedState) -> AsyncIterator[str]:
    """DSN of an empty database (no migrations applied)."""
    name = f"e_{uuid.uuid4().hex[:16]}"
    admin = await connect(pg_state.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _dsn_for(pg_state, name)
    admin = await connect(pg_state.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's fresh database."""
    conn = await connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@contextlib.contextmanager
def server_user_dir(name: str) -> Iterator[Path]:
    """A fresh directory for an embedded PostgreSQL's data (or a whole `symphony
    up`), removed afterwards. Not under pytest's tmp_path: as root the server
    runs as another user, who must traverse every parent directory, and every
    pytest session that starts (anyone's, on a shared machine) sets
    /tmp/pytest-of-root back to mode 0700, locking the server out of its own
    data directory mid-test."""
    root = Path(tempfile.mkdtemp(prefix=f"symphony-{name}-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


UP_READY_SECONDS = 240


def wait_up_ready(process: subprocess.Popen[str]) -> list[str]:
    """The lines `symphony up` printed up to its "ready" line, waited for with a
    deadline (UP_READY_SECONDS); fails with what it printed, and its stderr when
    it exited, otherwise."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + UP_READY_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.strip() == "ready":
            return lines
    stderr = process.stderr.read() if process.stderr is not None and process.poll() is not None else ""
    raise AssertionError(f"symphony up not ready (exit {process.poll()}): {lines}\n{stderr[-3000:]}")


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """server_user_dir for one test: where a test's own `symphony up` keeps its data."""
    with server_user_dir("test") as root:
        yield root


@contextlib.asynccontextmanager
async def own_postgres(name: str, *, fast: bool = True) -> AsyncIterator[tuple[EmbeddedPostgres, str]]:
    """A migrated PostgreSQL of the test's own, for tests that crash it
    (`server.kill()`) and start it again (`server.restart()`); yields the
    server and its URL, and removes it afterwards."""
    with server_user_dir(name) as root:
        server = EmbeddedPostgres(root, fast=fast)
        try:
            url = server.start().dsn
            conn = await connect(url)
            try:
                await migrate.apply(conn)
            finally:
                await conn.close()
            yield server, url
        finally:
            server.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def symphony_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
                 cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `symphony ARGS` as a real process, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "symphony", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO_ROOT,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def notify_sink(tmp_path: Path) -> Iterator[NotifySink]:
    """A stand-in for systemd's notify socket in this test's directory (tests/notify_sink.py)."""
    sink = NotifySink(tmp_path)
    try:
        yield sink
    finally:
        sink.close()
