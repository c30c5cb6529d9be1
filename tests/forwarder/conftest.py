"""Fixtures of the forwarder tests: journals written with the journal's own
Writer, and the forwarder run as a real process (`python -m symphony forwarder`).

Every wait is bounded; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

import journal
from symphony.attestation import RecordType
from tests.conftest import REPO_ROOT, free_port
from tests.forwarder import records as fake

NODE = "node-p"
START_TIMEOUT_SECONDS = 30.0
CATCH_UP_TIMEOUT_SECONDS = 90.0
SEGMENT_BYTES = 64 * 1024  # the journal's minimum: many segments, so rotation and release happen


def stream_dir(journal_dir: Path, stream_id: int) -> Path:
    return journal_dir / NODE / str(stream_id)


def open_writer(journal_dir: Path, stream_id: int) -> journal.Writer:
    return journal.Writer(stream_dir(journal_dir, stream_id), node_id=NODE, stream_id=stream_id,
                          durability="none", segment_bytes=SEGMENT_BYTES, prefault=False)


def fill(writer: journal.Writer, count: int) -> int:
    """Append `count` INGRESS records; returns the head seq."""
    seq = 0
    for _ in range(count):
        seq, _ = writer.append(RecordType.INGRESS, fake.ingress_body(writer.next_seq), writer.next_seq)
    return seq


class LiveWriters:
    """Writers that keep appending in a thread, as sidecar workers would."""

    def __init__(self, journal_dir: Path, stream_ids: list[int], records_per_second: int,
                 key: object | None = None) -> None:
        self.writers = {stream_id: open_writer(journal_dir, stream_id) for stream_id in stream_ids}
        self.key = key  # a CheckpointSigner: cut a signed CHECKPOINT every 500 records (retention needs them)
        self.interval = len(stream_ids) / records_per_second
        self.stop = threading.Event()
        self.appended_during: list[int] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LiveWriters:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                for stream_id, writer in self.writers.items():
                    fill(writer, 1)
                    if self.key is not None and writer.next_seq % 500 == 0:
                        from tests.forwarder.tlog_helpers import cut

                        cut(writer, self.key, stream_id)  # type: ignore[arg-type]
                time.sleep(self.interval)
        except BaseException as exc:  # reported by heads()
            self.errors.append(exc)

    def heads(self) -> dict[int, int]:
        assert not self.errors, self.errors
        return {stream_id: writer.head[0] for stream_id, writer in self.writers.items()}

    def finish(self) -> dict[int, int]:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        heads = self.heads()
        for writer in self.writers.values():
            writer.close()
        return heads

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive() or not self.stop.is_set():
            self.finish()


class ForwarderProcess:
    """`symphony forwarder` as an operator runs it, with settings as environment variables."""

    def __init__(self, database_url: str, journal_dir: Path, log_path: Path, **settings: object) -> None:
        self.admin_port = free_port()
        self.log_path = log_path
        self.env = {**os.environ,
                    "SYMPHONY_FORWARDER_NODE_ID": NODE,
                    "SYMPHONY_FORWARDER_JOURNAL_DIR": str(journal_dir),
                    "SYMPHONY_FORWARDER_ADMIN_PORT": str(self.admin_port),
                    "SYMPHONY_FORWARDER_BATCH_WAIT_MS": "20",
                    "SYMPHONY_FORWARDER_POLL_INTERVAL_MS": "10",
                    "SYMPHONY_FORWARDER_DISCOVERY_INTERVAL_SECONDS": "0.2",
                    "SYMPHONY_FORWARDER_RETRY_DELAY_MS_MAX": "1000"}
        self.env.pop("NOTIFY_SOCKET", None)
        for key, value in settings.items():
            self.env[f"SYMPHONY_FORWARDER_{key.upper()}"] = str(value)
        self.argv = [sys.executable, "-m", "symphony", "forwarder", "--database-url", database_url]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> ForwarderProcess:
        assert self.process is None or self.process.poll() is not None
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"forwarder exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.admin_port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"forwarder not listening within {START_TIMEOUT_SECONDS} s: {self.log_tail()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as answer:
            return answer.read().decode()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def forwarder_factory(tmp_path: Path) -> Iterator[Callable[..., ForwarderProcess]]:
    started: list[ForwarderProcess] = []

    def make(database_url: str, journal_dir: Path, **settings: object) -> ForwarderProcess:
        process = ForwarderProcess(database_url, journal_dir, tmp_path / f"forwarder-{len(started)}.log", **settings)
        started.append(process)
        return process

    yield make
    for process in started:
        process.close()


async def checkpoints(conn: asyncpg.Connection) -> dict[int, int]:
    found = await conn.fetch("SELECT stream_id, last_seq FROM journal_checkpoints WHERE node_id = $1", NODE)
    return {row["stream_id"]: row["last_seq"] for row in found}


async def wait_for(predicate: Callable[[], object], what: str, timeout: float = CATCH_UP_TIMEOUT_SECONDS,
                   diagnostics: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}. {diagnostics()}")
        await asyncio.sleep(0.1)


async def assert_shipped_exactly(conn: asyncpg.Connection, journal_dir: Path, heads: dict[int, int]) -> None:
    """PostgreSQL holds each (node, stream, seq) of the journal exactly once, 1..head,
    with the journal's chain hashes and canonical bytes, and the chain recomputed
    over PostgreSQL alone verifies from the zero hash (invariants 3 and 4)."""
    for stream_id, head in heads.items():
        found = await conn.fetch(
            "SELECT stream_seq, chain_hash, canonical FROM ingress_attestations "
            "WHERE node_id = $1 AND stream_id = $2 ORDER BY stream_seq", NODE, stream_id)
        seqs = [row["stream_seq"] for row in found]
        assert len(seqs) == len(set(seqs)), f"stream {stream_id}: duplicate rows"
        assert seqs == list(range(1, head + 1)), f"stream {stream_id}: holes or extra rows"
        prev = bytes(32)
        for row in found:
            prev = journal.chain_hash(prev, bytes(row["canonical"]))
            assert prev == bytes(row["chain_hash"]), f"stream {stream_id} seq {row['stream_seq']}: chain broken"
        oldest = None
        for record in journal.Reader(stream_dir(journal_dir, stream_id)).records(from_seq=_oldest_seq(journal_dir, stream_id)):
            oldest = oldest or record.seq
            assert bytes(found[record.seq - 1]["chain_hash"]) == record.chain_hash
        checkpoint = await conn.fetchrow("SELECT last_seq, last_hash, halted_at FROM journal_checkpoints "
                                         "WHERE node_id = $1 AND stream_id = $2", NODE, stream_id)
        assert checkpoint["last_seq"] == head and checkpoint["halted_at"] is None
        assert bytes(checkpoint["last_hash"]) == prev


def _oldest_seq(journal_dir: Path, stream_id: int) -> int:
    headers = journal.Reader(stream_dir(journal_dir, stream_id)).segments()
    return headers[0].first_seq


def random_pause(rng: random.Random, low: float, high: float) -> None:
    time.sleep(rng.uniform(low, high))
