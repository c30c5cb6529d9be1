"""A replaced or rewound journal stream is noticed while the forwarder runs (issue 11, item 4).

Method: a real `symphony forwarder` process ships journals written by the
journal's own Writer into a real PostgreSQL 18; the test then wipes the stream's
directory and starts a new writer (a new epoch), or puts back an older copy of
the directory (a rewound head), without restarting the forwarder, and waits
with a deadline for the incident and the rows.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import asyncpg

import journal
from repair import verify
from symphony import shipped_marker
from tests.conftest import symphony_cli
from tests.forwarder.conftest import NODE, ForwarderProcess, fill, open_writer, stream_dir, wait_for

Factory = Callable[..., ForwarderProcess]
INCIDENT_WAIT_SECONDS = 30.0


async def _checkpoint(db: asyncpg.Connection, stream_id: int) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT epoch, last_seq, last_hash, halted_at FROM journal_checkpoints "
                             "WHERE node_id = $1 AND stream_id = $2", NODE, stream_id)


async def _incident(db: asyncpg.Connection, kind: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT kind, severity, subject, evidence FROM repair_incidents WHERE kind = $1", kind)


async def test_wiped_stream_is_a_new_epoch_shipped_live(tmp_path: Path, database_url: str, db: asyncpg.Connection,
                                                        forwarder_factory: Factory) -> None:
    """Delete the stream directory while the forwarder runs and start a new writer:
    STREAM_REPLACED opens within a bounded wait, the new epoch's records are
    shipped as their own stream, and the old epoch's end stays recorded."""
    journal_dir = tmp_path / "journal"
    with open_writer(journal_dir, 0) as writer:
        old_head = fill(writer, 300)
        old_epoch, old_hash = writer.epoch, writer.head[1]
    forwarder = forwarder_factory(database_url, journal_dir, batch_rows_max=100).start()

    async def shipped_old() -> bool:
        row = await _checkpoint(db, 0)
        return row is not None and row["last_seq"] == old_head

    await wait_for(shipped_old, "the first epoch to ship", diagnostics=forwarder.log_tail)
    shutil.rmtree(stream_dir(journal_dir, 0))
    with open_writer(journal_dir, 0) as writer:
        new_head = fill(writer, 120)
        new_epoch = writer.epoch
    assert new_epoch != old_epoch

    await wait_for(lambda: _incident(db, "STREAM_REPLACED"), "a STREAM_REPLACED incident",
                   timeout=INCIDENT_WAIT_SECONDS, diagnostics=forwarder.log_tail)

    async def shipped_new() -> bool:
        row = await _checkpoint(db, 0)
        return row is not None and bytes(row["epoch"]) == new_epoch and row["last_seq"] == new_head

    await wait_for(shipped_new, "the new epoch to ship", diagnostics=forwarder.log_tail)

    def marked() -> bool:  # written while idle too, not only when the forwarder stops
        marker = shipped_marker.read(stream_dir(journal_dir, 0))
        return marker is not None and (marker.epoch_bytes(), marker.seq) == (new_epoch, new_head)

    await wait_for(marked, "the shipped marker of the new epoch", diagnostics=forwarder.log_tail)
    assert forwarder.terminate() == 0

    incident = await _incident(db, "STREAM_REPLACED")
    assert incident is not None and incident["severity"] == "CRITICAL"
    ended = await db.fetchrow("SELECT * FROM journal_epochs WHERE node_id = $1 AND stream_id = 0", NODE)
    assert bytes(ended["epoch"]) == old_epoch and bytes(ended["successor_epoch"]) == new_epoch
    assert (ended["last_seq"], bytes(ended["last_hash"]), ended["journal_head_seq"]) == (old_head, old_hash, old_head)
    for epoch, head in ((old_epoch, old_head), (new_epoch, new_head)):
        seqs = await db.fetch("SELECT stream_seq FROM ingress_attestations WHERE node_id = $1 AND stream_id = 0 "
                              "AND epoch = $2 ORDER BY stream_seq", NODE, epoch)
        assert [row["stream_seq"] for row in seqs] == list(range(1, head + 1))
    new_rows = await db.fetch("SELECT chain_hash FROM ingress_attestations WHERE node_id = $1 AND stream_id = 0 "
                              "AND epoch = $2 ORDER BY stream_seq", NODE, new_epoch)
    on_disk = [record.chain_hash for record in journal.Reader(stream_dir(journal_dir, 0)).records()]
    assert [bytes(row["chain_hash"]) for row in new_rows] == on_disk
    marker = shipped_marker.read(stream_dir(journal_dir, 0))
    assert marker is not None and (marker.epoch_bytes(), marker.seq) == (new_epoch, new_head)

    # The audit and the repair daemon follow the epochs: each verifies against its own end.
    done = symphony_cli("audit", "verify-chain", "--json", "--journal-dir", str(journal_dir),
                        "--database-url", database_url)
    assert done.returncode == 0, done.stdout + done.stderr
    reports = json.loads(done.stdout)["streams"]
    assert [(r["epoch"], r["ended_epoch"], r["records_verified"]) for r in reports] == [
        (new_epoch.hex(), False, new_head), (old_epoch.hex(), True, old_head)]
    assert reports[0]["anchors"]["journal"]["records_compared"] == new_head
    gaps = symphony_cli("audit", "seq-gaps", "--database-url", database_url)
    assert gaps.returncode == 0, gaps.stdout
    increment = await verify.verify_increment(db, NODE, 0, verified_seq=old_head, verified_hash=old_hash,
                                              verified_epoch=old_epoch, batch_rows=50, batches_max=10)
    assert increment.broken is None and increment.last_verified_seq == new_head and increment.epoch == new_epoch


async def test_rewound_journal_is_an_incident_live(tmp_path: Path, database_url: str, db: asyncpg.Connection,
                                                   forwarder_factory: Factory) -> None:
    """Replace the stream directory by an older copy of itself while the forwarder
    runs: the head is behind the checkpoint, STREAM_REWOUND opens and the stream
    halts (it must not ship a fork over what PostgreSQL holds)."""
    journal_dir = tmp_path / "journal"
    older = tmp_path / "older-copy"
    with open_writer(journal_dir, 0) as writer:
        copied_head = fill(writer, 100)
    shutil.copytree(stream_dir(journal_dir, 0), older)
    with open_writer(journal_dir, 0) as writer:
        head = fill(writer, 150)
    forwarder = forwarder_factory(database_url, journal_dir, batch_rows_max=100,
                                  journal_retention_seconds=3600).start()

    async def shipped() -> bool:
        row = await _checkpoint(db, 0)
        return row is not None and row["last_seq"] == head

    await wait_for(shipped, "the stream to ship", diagnostics=forwarder.log_tail)
    shutil.rmtree(stream_dir(journal_dir, 0))
    shutil.copytree(older, stream_dir(journal_dir, 0))

    await wait_for(lambda: _incident(db, "STREAM_REWOUND"), "a STREAM_REWOUND incident",
                   timeout=INCIDENT_WAIT_SECONDS, diagnostics=forwarder.log_tail)
    incident = await _incident(db, "STREAM_REWOUND")
    assert incident is not None and str(copied_head) in incident["subject"]
    row = await _checkpoint(db, 0)
    assert row is not None and row["halted_at"] is not None and row["last_seq"] == head
    assert forwarder.terminate() == 0
    assert await db.fetchval("SELECT count(*) FROM journal_epochs") == 0
