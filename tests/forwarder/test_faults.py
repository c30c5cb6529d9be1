"""Faults around the forwarder process: PostgreSQL outage, tampering, retention.

Method: as in test_process.py (real journals, real forwarder process, real
PostgreSQL 18); the outage test runs its own embedded server so it can kill
and restart it. Each test states the invariant it guards.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

import journal
from journal._journal import lib
from symphony.db import connect
from tests.conftest import own_postgres
from tests.forwarder.conftest import (
    NODE,
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
HEADER_SIZE = 256
RECORD_HEADER_SIZE = 64


async def _until_caught_up(db: asyncpg.Connection, heads: dict[int, int], forwarder: ForwarderProcess) -> None:
    async def done() -> bool:
        found = await checkpoints(db)
        return all(found.get(stream_id, 0) >= head for stream_id, head in heads.items())

    await wait_for(done, f"checkpoints to reach {heads}", diagnostics=forwarder.log_tail)


def _segments(journal_dir: Path, stream_id: int) -> list[journal.SegmentHeader]:
    return journal.Reader(stream_dir(journal_dir, stream_id)).segments()


def _lag_records(metrics: str, stream_id: int) -> float:
    match = re.search(rf'symphony_forwarder_lag_records{{node_id="{NODE}",stream_id="{stream_id}"}} (\S+)', metrics)
    return float(match.group(1)) if match else -1.0


@pytest.mark.evidence("failure_injection")
@pytest.mark.slow
async def test_postgres_outage_then_catch_up(tmp_path: Path, forwarder_factory: Factory) -> None:
    """Invariant 3 across an outage: while PostgreSQL is down the journal keeps
    taking records (the writers never wait on it), no unshipped segment is
    released, lag shows on /metrics; after the restart the forwarder catches up
    and PostgreSQL holds every record exactly once."""
    # Durable settings (fsync on), as production runs.
    async with own_postgres("forwarder-outage", fast=False) as (server, url):
        journal_dir = tmp_path / "journal"
        from tests.forwarder.tlog_helpers import PREFIX, signer

        key = signer()  # retention needs a checkpoint covering what it releases (no witness: the node's own)
        forwarder = forwarder_factory(url, journal_dir, journal_retention_seconds=0, batch_rows_max=300,
                                      retry_delay_ms_max=500, log_origin_prefix=PREFIX, log_key=key.vkey).start()
        with LiveWriters(journal_dir, [0, 1, 2], records_per_second=3000, key=key) as writers:
            db = await connect(url)
            await wait_for(lambda: _all_positive(db), "shipping to start", diagnostics=forwarder.log_tail)
            shipped_before = await checkpoints(db)
            await db.close()
            server.kill()
            heads_at_kill = writers.heads()
            # The writers never wait on PostgreSQL: the journal keeps growing.
            await wait_for(lambda: all(writers.heads()[s] > heads_at_kill[s] + 1000 for s in heads_at_kill),
                           "the journal to keep taking records during the outage")
            await wait_for(lambda: _lag_records(forwarder.metrics(), 0) > 1000, "lag to grow on /metrics")
            await wait_for(lambda: 'symphony_forwarder_stream_retrying{node_id="node-p",stream_id="0"} 1.0'
                           in forwarder.metrics(), "the stream to report retrying")
            heads_in_outage = writers.heads()
            for stream_id, shipped in shipped_before.items():
                assert _segments(journal_dir, stream_id)[0].first_seq <= shipped + 1
            server.restart()
            heads = writers.finish()
        db = await connect(url)
        try:
            await _until_caught_up(db, heads, forwarder)
            await assert_shipped_exactly(db, journal_dir, heads)
            assert await db.fetchval("SELECT count(*) FROM repair_incidents") == 0

            def released() -> bool:
                return all(_segments(journal_dir, s)[0].first_seq > heads_in_outage[s] // 2 for s in heads)

            await wait_for(released, "shipped segments to be released")
        finally:
            await db.close()
        assert forwarder.terminate() == 0


async def _all_positive(db: asyncpg.Connection) -> bool:
    found = await checkpoints(db)
    return len(found) == 3 and all(seq > 500 for seq in found.values())


def _record_offset(segment: Path, seq: int) -> tuple[int, int]:
    """(offset, body length) of record `seq` in a segment file (journal FORMAT.md)."""
    data = segment.read_bytes()
    pos = HEADER_SIZE
    while pos + RECORD_HEADER_SIZE <= len(data):
        body_len, record_seq = struct.unpack_from("<IQ", data, pos + 36)
        if record_seq == seq:
            return pos, body_len
        assert record_seq != 0, f"seq {seq} not in {segment}"
        pos += RECORD_HEADER_SIZE + (body_len + 7) // 8 * 8
    raise AssertionError(f"seq {seq} not in {segment}")


def _tamper(journal_dir: Path, stream_id: int, seq: int, *, fix_crc: bool) -> None:
    """Change one byte of record `seq`'s body in place; optionally recompute its
    CRC so only the chain can tell (what a careful attacker would do)."""
    headers = [h for h in _segments(journal_dir, stream_id) if h.first_seq <= seq]
    segment = stream_dir(journal_dir, stream_id) / f"{headers[-1].first_seq:020d}.seg"
    offset, body_len = _record_offset(segment, seq)
    with segment.open("r+b") as handle:
        handle.seek(offset + RECORD_HEADER_SIZE + body_len - 1)
        last = handle.read(1)
        handle.seek(offset + RECORD_HEADER_SIZE + body_len - 1)
        handle.write(bytes([last[0] ^ 0x01]))
        if fix_crc:
            handle.seek(offset + 4)
            size = RECORD_HEADER_SIZE - 4 + (body_len + 7) // 8 * 8
            covered = handle.read(size)
            handle.seek(offset)
            handle.write(struct.pack("<I", lib.jn_crc32c(covered, len(covered))))


@pytest.mark.parametrize("fix_crc", [False, True], ids=["crc-broken", "crc-recomputed"])
async def test_altered_journal_record_halts_that_stream_only(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory,
        fix_crc: bool) -> None:
    """Invariant 4 at ingest: a record altered in the journal after the
    checkpoint stops its stream with a CHAIN_BREAK incident naming the seq;
    the other stream ships on."""
    journal_dir = tmp_path / "journal"
    writers = {stream_id: open_writer(journal_dir, stream_id) for stream_id in (0, 1)}
    heads = {stream_id: fill(writer, 1000) for stream_id, writer in writers.items()}
    forwarder = forwarder_factory(database_url, journal_dir, batch_rows_max=200)
    forwarder.start()
    await _until_caught_up(db, heads, forwarder)
    assert forwarder.terminate() == 0
    heads = {stream_id: fill(writer, 1000) for stream_id, writer in writers.items()}
    for writer in writers.values():
        writer.close()
    _tamper(journal_dir, 0, 1500, fix_crc=fix_crc)
    forwarder.start()
    await _until_caught_up(db, {1: heads[1]}, forwarder)

    async def halted() -> bool:
        return bool(await db.fetchval("SELECT halted_at IS NOT NULL FROM journal_checkpoints WHERE stream_id = 0"))

    await wait_for(halted, "stream 0 to halt", diagnostics=forwarder.log_tail)
    assert forwarder.terminate() == 0
    incident = await db.fetchrow("SELECT kind, node_id, stream_id, evidence FROM repair_incidents")
    assert (incident["kind"], incident["node_id"], incident["stream_id"]) == ("CHAIN_BREAK", NODE, 0)
    assert json.loads(incident["evidence"])["seq"] == 1500
    shipped = (await checkpoints(db))[0]
    assert 1001 <= shipped < 1500
    await assert_shipped_exactly(db, journal_dir, {1: heads[1]})
    seqs = await db.fetch("SELECT stream_seq FROM ingress_attestations WHERE stream_id = 0 ORDER BY 1")
    assert [row["stream_seq"] for row in seqs] == list(range(1, shipped + 1))


async def test_altered_checkpoint_halts_that_stream_only(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory) -> None:
    """Invariant 3's external anchor: a checkpoint hash altered in PostgreSQL
    no longer matches the journal; the stream halts with CHAIN_BREAK while the
    other stream, written all along, ships to its end."""
    journal_dir = tmp_path / "journal"
    forwarder = forwarder_factory(database_url, journal_dir, batch_rows_max=200).start()
    with LiveWriters(journal_dir, [0, 1], records_per_second=2000) as writers:
        await wait_for(lambda: _all_past(db, 300), "both streams to ship", diagnostics=forwarder.log_tail)
        await db.execute("UPDATE journal_checkpoints SET last_hash = $1 WHERE node_id = $2 AND stream_id = 0",
                         b"\x01" * 32, NODE)

        async def halted() -> bool:
            return bool(await db.fetchval("SELECT halted_at IS NOT NULL FROM journal_checkpoints WHERE stream_id = 0"))

        await wait_for(halted, "stream 0 to halt", diagnostics=forwarder.log_tail)
        heads = writers.finish()
    await _until_caught_up(db, {1: heads[1]}, forwarder)
    assert forwarder.terminate() == 0
    incident = await db.fetchrow("SELECT kind, stream_id, evidence FROM repair_incidents")
    assert (incident["kind"], incident["stream_id"]) == ("CHAIN_BREAK", 0)
    assert json.loads(incident["evidence"])["expected"] == "01" * 32
    await assert_shipped_exactly(db, journal_dir, {1: heads[1]})


async def _all_past(db: asyncpg.Connection, seq: int) -> bool:
    found = await checkpoints(db)
    return len(found) == 2 and all(value > seq for value in found.values())


async def test_segments_released_only_after_checkpoint(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory) -> None:
    """Retention: with a halted stream nothing past its checkpoint is released,
    while a healthy stream's shipped segments are."""
    journal_dir = tmp_path / "journal"
    from tests.forwarder.tlog_helpers import PREFIX, fill_signed, signer

    key = signer()  # retention needs a checkpoint covering what it releases (no witness: the node's own)
    writers = {stream_id: open_writer(journal_dir, stream_id) for stream_id in (0, 1)}
    heads = {stream_id: fill_signed(writer, key, stream_id, 3000, 500) for stream_id, writer in writers.items()}
    for writer in writers.values():
        writer.close()
    _tamper(journal_dir, 0, 1200, fix_crc=False)
    segments_before = {s: [h.first_seq for h in _segments(journal_dir, s)] for s in (0, 1)}
    assert len(segments_before[0]) > 5
    forwarder = forwarder_factory(database_url, journal_dir, journal_retention_seconds=0, log_origin_prefix=PREFIX,
                                  log_key=key.vkey).start()
    await _until_caught_up(db, {1: heads[1]}, forwarder)
    await wait_for(lambda: len(_segments(journal_dir, 1)) == 1, "stream 1's shipped segments to go")
    # The only thing that releases stream 0's segments is its shipper, and it
    # stops for good once it has halted (releasing what it shipped first): wait
    # for that positive evidence, then check what it left.
    await wait_for(lambda: f'symphony_forwarder_stream_halted{{node_id="{NODE}",stream_id="0"}} 1.0'
                   in forwarder.metrics(), "stream 0's shipper to halt", diagnostics=forwarder.log_tail)
    shipped = (await checkpoints(db))[0]
    assert forwarder.terminate() == 0
    kept = [h.first_seq for h in _segments(journal_dir, 0)]
    assert kept[0] <= shipped + 1
    assert [seq for seq in segments_before[0] if seq > shipped] == [seq for seq in kept if seq > shipped]
    assert journal.verify(stream_dir(journal_dir, 1)).ok


async def _lose_last_commits(db: asyncpg.Connection, stream_id: int, records: int) -> tuple[int, int]:
    """What PostgreSQL looks like after it lost its last acknowledged commits of
    a stream (a crash before they were durable, a failover to a replica that had
    not received them): rows and checkpoint back together to an earlier batch.
    Done under the checkpoint's row lock, so no batch commits in between; the
    append-only trigger is bypassed as a restore would. Returns (old, new) seq."""
    async with db.transaction():
        old = await db.fetchval("SELECT last_seq FROM journal_checkpoints WHERE node_id = $1 AND stream_id = $2 "
                                "FOR UPDATE", NODE, stream_id)
        back = max(1, old - records)
        kept = await db.fetchrow("SELECT chain_hash, recorded_at FROM ingress_attestations WHERE node_id = $1 "
                                 "AND stream_id = $2 AND stream_seq = $3", NODE, stream_id, back)
        await db.execute("SET LOCAL session_replication_role = replica")
        deleted = await db.execute("DELETE FROM ingress_attestations WHERE node_id = $1 AND stream_id = $2 "
                                   "AND stream_seq > $3", NODE, stream_id, back)
        assert deleted == f"DELETE {old - back}", deleted
        await db.execute("UPDATE journal_checkpoints SET last_seq = $3, last_hash = $4, last_record_at = $5, "
                         "records_shipped = records_shipped - $6 WHERE node_id = $1 AND stream_id = $2",
                         NODE, stream_id, back, kept["chain_hash"], kept["recorded_at"], old - back)
    return old, back


async def test_checkpoint_moved_back_by_lost_commits_is_reshipped(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory) -> None:
    """Invariant 3 when PostgreSQL loses commits it acknowledged: the checkpoint
    (and its rows) move back below what the forwarder shipped and released. The
    forwarder must not crash: it re-ships from the checkpoint (the journal still
    holds the records), counts it on /metrics, and PostgreSQL ends with every
    record exactly once and no incident; the other stream is not disturbed."""
    journal_dir = tmp_path / "journal"
    forwarder = forwarder_factory(database_url, journal_dir, batch_rows_max=200).start()
    with LiveWriters(journal_dir, [0, 1], records_per_second=2000) as writers:
        await wait_for(lambda: _all_past(db, 1500), "both streams to ship", diagnostics=forwarder.log_tail)
        old, back = await _lose_last_commits(db, 0, 1000)
        assert back < old

        def counted() -> bool:
            assert forwarder.process is not None and forwarder.process.poll() is None, forwarder.log_tail()
            return 'symphony_forwarder_checkpoint_moved_back_total{node_id="node-p",stream_id="0"} 1.0' \
                in forwarder.metrics()

        await wait_for(counted, "the moved-back checkpoint to be counted", diagnostics=forwarder.log_tail)
        heads = writers.finish()
    await _until_caught_up(db, heads, forwarder)
    await assert_shipped_exactly(db, journal_dir, heads)
    assert await db.fetchval("SELECT count(*) FROM repair_incidents") == 0
    assert 'symphony_forwarder_checkpoint_moved_back_total{node_id="node-p",stream_id="1"} 0.0' in forwarder.metrics()
    assert forwarder.terminate() == 0
    assert "the database checkpoint moved back; re-shipping from it" in forwarder.log_path.read_text()
