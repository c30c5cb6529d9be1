"""The forwarder's side of the verifiable log, as real processes over a real PostgreSQL 18.

Goal: the forwarder keeps each stream epoch's RFC 9162 tree as tiles in
PostgreSQL, equal to the tree recomputed from the rows it shipped; it keeps
the journal's CHECKPOINT records that match that tree in log_checkpoints and
turns a lying one into a CHECKPOINT_MISMATCH incident; it submits checkpoints
to a real witness process and stores the cosignatures; `symphony proof`
answers from PostgreSQL with files `symphony verify proof` and an independent
verifier accept. Method: journals written by journal.Writer with checkpoints
signed by symphony.checkpoints.CheckpointSigner; `symphony forwarder` and
`symphony witness` run as child processes; conditions are awaited with
deadlines, never timings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import asyncpg

import journal
from symphony.tlog import merkle, tiles
from tests.forwarder.conftest import NODE, ForwarderProcess, fill, open_writer, wait_for
from tests.forwarder.tlog_helpers import PREFIX, cut, signer, stored_tiles, tree_from_rows

Factory = Callable[..., ForwarderProcess]


async def _shipped(db: asyncpg.Connection, stream_id: int) -> int:
    return int(await db.fetchval("SELECT coalesce(max(last_seq), 0) FROM journal_checkpoints WHERE node_id = $1 "
                                 "AND stream_id = $2", NODE, stream_id))


async def test_tiles_equal_the_rows_tree_and_checkpoints_are_checked(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory) -> None:
    """Two streams with checkpoints every 137 records (crossing tile and batch
    boundaries), one of which signs a wrong root: the tiles' tree equals the
    rows' tree at every checkpoint; good checkpoints are in log_checkpoints,
    the lie is a CHECKPOINT_MISMATCH incident and absent from log_checkpoints."""
    journal_dir = tmp_path / "journal"
    key = signer()
    expected: dict[int, list[int]] = {0: [], 1: []}
    lie_seq = 0
    epochs = {}
    heads = {}
    for stream_id in (0, 1):
        with open_writer(journal_dir, stream_id) as writer:
            epochs[stream_id] = writer.epoch
            for round_ in range(6):
                fill(writer, 137)
                lie = stream_id == 1 and round_ == 3
                found = cut(writer, key, stream_id, lie=lie)
                if lie:
                    lie_seq = found.seq
                else:
                    expected[stream_id].append(found.tree_size)
            fill(writer, 10)
            heads[stream_id] = writer.next_seq - 1
    forwarder = forwarder_factory(database_url, journal_dir, batch_rows_max=100, log_origin_prefix=PREFIX,
                                  log_key=key.vkey).start()

    async def caught_up() -> bool:
        return all([await _shipped(db, s) >= heads[s] for s in heads])

    await wait_for(caught_up, "both streams shipped", diagnostics=forwarder.log_tail)
    assert forwarder.terminate() == 0
    for stream_id in (0, 1):
        epoch = epochs[stream_id]
        rows_tree = await tree_from_rows(db, stream_id, epoch)
        assert rows_tree.size == heads[stream_id]
        read = tiles.TileReader(await stored_tiles(db, stream_id, epoch))
        assert merkle.root(read, heads[stream_id]) == rows_tree.root()
        found = await db.fetch("SELECT tree_size, root, origin, record_seq FROM log_checkpoints WHERE node_id = $1 "
                               "AND stream_id = $2 ORDER BY tree_size", NODE, stream_id)
        assert [r["tree_size"] for r in found] == expected[stream_id]
        for row in found:
            assert bytes(row["root"]) == rows_tree.root(row["tree_size"]) == merkle.root(read, row["tree_size"])
            assert row["origin"] == f"{PREFIX}/{NODE}/{stream_id}/{epoch.hex()}"
    incidents = await db.fetch("SELECT kind, severity, stream_id, evidence FROM repair_incidents")
    assert [(r["kind"], r["severity"], r["stream_id"]) for r in incidents] == [("CHECKPOINT_MISMATCH", "CRITICAL", 1)]
    evidence = json.loads(incidents[0]["evidence"])
    assert evidence["seq"] == lie_seq and evidence["signed_root"] == "00" * 32
    assert evidence["computed_root"] == (await tree_from_rows(db, 1, epochs[1])).root(lie_seq - 1).hex()
    # The lying record is still shipped: it is a leaf like any other.
    assert await db.fetchval("SELECT record_type FROM ingress_attestations WHERE stream_id = 1 AND stream_seq = $1",
                             lie_seq) == journal.RecordType.CHECKPOINT
