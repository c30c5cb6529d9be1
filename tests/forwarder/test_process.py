"""The forwarder as a real process over real journals and a real PostgreSQL 18.

Method: journals are written by the journal's own Writer (in a thread of the
test, as sidecar workers would append); `symphony forwarder` runs as a child
process; we stop it with SIGTERM or SIGKILL at arbitrary points and check what
PostgreSQL holds against the journal: every (node, stream, seq) exactly once,
no hole, chain intact (invariants 3 and 4). Waits are bounded; no timings are
asserted.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

import journal
from tests.forwarder.conftest import (
    ForwarderProcess,
    LiveWriters,
    assert_shipped_exactly,
    checkpoints,
    fill,
    open_writer,
    stream_dir,
    wait_for,
)

Factory = Callable[..., ForwarderProcess]


async def _until_caught_up(db: asyncpg.Connection, heads: dict[int, int], forwarder: ForwarderProcess) -> None:
    async def done() -> bool:
        found = await checkpoints(db)
        return all(found.get(stream_id, 0) >= head for stream_id, head in heads.items())

    await wait_for(done, f"checkpoints to reach {heads}", diagnostics=forwarder.log_tail)


def _oldest_segment_first_seq(journal_dir: Path, stream_id: int) -> int:
    return journal.Reader(stream_dir(journal_dir, stream_id)).segments()[0].first_seq


async def test_streams_ship_exactly_once(tmp_path: Path, database_url: str, db: asyncpg.Connection,
                                         forwarder_factory: Factory) -> None:
    """N streams x M records, part written before the forwarder starts, part while it runs."""
    journal_dir = tmp_path / "journal"
    for stream_id in range(4):
        with open_writer(journal_dir, stream_id) as writer:
            fill(writer, 2000)
    forwarder = forwarder_factory(database_url, journal_dir, batch_rows_max=500).start()
    with LiveWriters(journal_dir, [0, 1, 2, 3, 4], records_per_second=4000) as writers:
        await wait_for(lambda: sum(writers.heads().values()) > 12_000, "the writers to append more")
        heads = writers.finish()
    await _until_caught_up(db, heads, forwarder)
    metrics = forwarder.metrics()
    assert forwarder.terminate() == 0
    await assert_shipped_exactly(db, journal_dir, heads)
    assert await db.fetchval("SELECT count(*) FROM repair_incidents") == 0
    assert 'symphony_forwarder_lag_records{node_id="node-p",stream_id="4"} 0.0' in metrics
    assert "symphony_forwarder_lag_seconds" in metrics


@pytest.mark.slow
async def test_kill_9_during_shipping_loses_and_duplicates_nothing(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory) -> None:
    """SIGKILL the forwarder 30 times at random points while writers append and
    it ships small batches; then let one run to the end and compare."""
    journal_dir = tmp_path / "journal"
    rng = random.Random(20251122)
    forwarder = forwarder_factory(database_url, journal_dir, batch_rows_max=150, journal_retention_seconds=0)
    kills = 0
    with LiveWriters(journal_dir, [0, 1, 2], records_per_second=3000) as writers:
        for _ in range(30):
            before = sum((await checkpoints(db)).values())
            forwarder.start()

            async def progressed(before: int = before) -> bool:
                return sum((await checkpoints(db)).values()) > before

            await wait_for(progressed, "shipping to progress", diagnostics=forwarder.log_tail)
            await _sleep(rng.uniform(0.0, 0.3))
            forwarder.kill()
            kills += 1
            await _assert_unshipped_records_kept(db, journal_dir, [0, 1, 2])
        heads = writers.finish()
    assert kills >= 30
    forwarder.start()
    await _until_caught_up(db, heads, forwarder)
    assert forwarder.terminate() == 0
    await assert_shipped_exactly(db, journal_dir, heads)
    assert await db.fetchval("SELECT count(*) FROM repair_incidents") == 0


async def _assert_unshipped_records_kept(db: asyncpg.Connection, journal_dir: Path, stream_ids: list[int]) -> None:
    """Segments are released only after their records are checkpointed: the
    oldest segment left never starts after the first unshipped seq."""
    for stream_id in stream_ids:
        oldest = _oldest_segment_first_seq(journal_dir, stream_id)  # read before the checkpoint
        shipped = (await checkpoints(db)).get(stream_id, 0)
        assert oldest <= shipped + 1, f"stream {stream_id}: segment from {oldest} gone, checkpoint {shipped}"


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_sd_notify_ready_and_stopping(tmp_path: Path, database_url: str, forwarder_factory: Factory) -> None:
    """systemd integration: READY=1 once serving, STOPPING=1 on SIGTERM, exit 0."""
    import socket

    address = tmp_path / "notify.sock"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(address))
    sink.settimeout(30)
    try:
        forwarder = forwarder_factory(database_url, tmp_path / "journal")
        forwarder.env["NOTIFY_SOCKET"] = str(address)
        forwarder.start()
        assert sink.recv(256) == b"READY=1"
        assert forwarder.terminate() == 0
        assert sink.recv(256) == b"STOPPING=1"
    finally:
        sink.close()
