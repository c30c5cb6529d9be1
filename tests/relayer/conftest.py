"""Relayer test fixtures: outbox rows inserted as the service writes them, rail
simulators and relayers as real processes on 127.0.0.1, bounded waits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from relayer.store import OutboxStore
from symphony.db import create_pool
from tests.conftest import REPO_ROOT, free_port

WAIT_SECONDS = 60.0


def wait_port(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {timeout} s")


async def add_participant(db: asyncpg.Connection, participant_id: str = "bank-a") -> None:
    await db.execute("INSERT INTO participants (participant_id) VALUES ($1) ON CONFLICT DO NOTHING", participant_id)


_attestations = iter(range(10_000_000, 2**40))


async def add_payments(db: asyncpg.Connection, count: int, *, rail: str, participant: str = "bank-a",
                       account: str = "254700000001", max_attempts: int = 5,
                       payload_override: dict[str, object] | None = None) -> list[uuid.UUID]:
    """Insert `count` intents and their PENDING outbox rows in one statement each."""
    await add_participant(db, participant)
    attestation_ids = [next(_attestations) for _ in range(count)]
    keys = [f"k-{uuid.uuid4().hex}" for _ in range(count)]
    intents = await db.fetch(
        """INSERT INTO payment_intents (participant_id, idempotency_key, amount_minor, currency, rail,
                                        destination_account, attestation_id)
           SELECT $1, k, 1234, 'KES', $2, $3, a FROM unnest($4::text[], $5::bigint[]) AS t(k, a)
           RETURNING intent_id, attestation_id""",
        participant, rail, account, keys, attestation_ids)
    payloads = []
    for intent in intents:
        payload = {"amount_minor": 1234, "currency": "KES", "destination_account": account,
                   "client_reference": "", "intent_id": str(intent["intent_id"])}
        if payload_override is not None:
            payload = payload_override
        payloads.append(json.dumps(payload))
    rows = await db.fetch(
        """INSERT INTO payment_outbox (intent_id, participant_id, attestation_id, ingress_node_id,
                                       ingress_stream_id, ingress_seq, rail, payload, max_attempts)
           SELECT i, $1, a, 'node-t', 0, a, $2, p::jsonb, $3
           FROM unnest($4::uuid[], $5::bigint[], $6::text[]) AS t(i, a, p)
           RETURNING id""",
        participant, rail, max_attempts, [r["intent_id"] for r in intents],
        [r["attestation_id"] for r in intents], payloads)
    return [r["id"] for r in rows]


async def statuses(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch("SELECT status::text AS s, count(*) AS n FROM payment_outbox GROUP BY 1")
    return {r["s"]: r["n"] for r in rows}


class Processes:
    """Child processes of one test, stopped (SIGKILL if need be) at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"{name}.log", "ab")  # noqa: SIM115
        child = subprocess.Popen([sys.executable, "-m", "symphony", *args], cwd=REPO_ROOT,
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**os.environ, **(env or {})})
        log.close()
        self.children.append(child)
        return child

    def rail_sim(self, profile: str, *extra: str, state_dir: Path | None = None) -> str:
        port = free_port()
        state = state_dir or (self.tmp_path / f"sim-{profile}")
        child = self.start(f"sim-{profile}-{port}", "rail-sim", "--profile", profile, "--port", str(port),
                           "--state-dir", str(state), "--seed", "7", "--settle-ms", "20", *extra)
        wait_port(port, child)
        return f"http://127.0.0.1:{port}"

    def relayer(self, name: str, database_url: str, rails: dict[str, tuple[str, str]], *,
                extra_toml: str = "", lease_seconds: float = 3.0, concurrency: int = 16,
                wait: bool = True, shutdown_seconds: float = 5.0,
                rail_toml: str = "") -> tuple[subprocess.Popen[bytes], int]:
        admin_port = free_port()
        lines = [f'worker_id = "{name}"', f"admin_port = {admin_port}", "poll_interval_seconds = 0.2",
                 "backoff_base_seconds = 0.05", "backoff_max_seconds = 0.5", f"lease_seconds = {lease_seconds}",
                 "lease_margin_seconds = 0.5", f"shutdown_timeout_seconds = {shutdown_seconds}", extra_toml]
        for rail, (kind, url) in rails.items():
            lines += [f"[rails.{rail}]", f'kind = "{kind}"', f'url = "{url}"', "timeout_seconds = 1.0",
                      f"concurrency = {concurrency}", "breaker_failure_threshold = 5", "breaker_reset_seconds = 0.5",
                      "status_poll_interval_seconds = 0.02", "status_poll_max_seconds = 0.5", rail_toml]
        config = self.tmp_path / f"{name}.toml"
        config.write_text("\n".join(lines) + "\n")
        child = self.start(name, "relayer", "--config", str(config), "--database-url", database_url)
        if wait:
            wait_port(admin_port, child)
        return child, admin_port

    def stop_all(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool set up as the relayer sets up its own (codecs, settings)."""
    pool = await create_pool(database_url, min_size=1, max_size=4, init=OutboxStore.init_connection)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


async def wait_until(predicate: Callable[[], object], timeout: float = WAIT_SECONDS, what: str = "condition") -> None:
    """Poll an async predicate until it is truthy, or fail after `timeout`."""
    import asyncio

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = await predicate()  # type: ignore[misc]
        if last:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last value {last!r}")
