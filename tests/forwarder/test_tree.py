"""The forwarder's tree upkeep (forwarder/tree.py) in one process, on a real PostgreSQL 18.

Goal: every way a CHECKPOINT record can disagree with the shipped records is
named, a batch rolled back after the tree was extended leaves no trace in the
tiles or in the tree the next batch extends, and the frontier read back from
the right-edge tiles is the tree's. Method: records written by journal.Writer
(checkpoints signed by CheckpointSigner) and read back with journal.Reader;
batches shipped through Store.ship with a TreeKeeper; results compared with
symphony.tlog.merkle's tree built from the same records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

import journal
from forwarder import rows
from forwarder.store import Shipped, Store
from forwarder.tree import TreeKeeper, frontier_from, right_edge
from symphony import db as symphony_db
from symphony.tlog import merkle, note, tiles
from tests.forwarder.conftest import NODE, fill, open_writer
from tests.forwarder.tlog_helpers import PREFIX, cut, signer


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await symphony_db.create_pool(database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


def _records(path: Path) -> list[journal.Record]:
    return list(journal.Reader(path).records(1))


def test_frontier_from_tiles_is_the_trees() -> None:
    """For sizes around tile boundaries, the compact range read from the
    right-edge tiles alone equals merkle.Frontier's, and those are the only
    tiles it reads."""
    tree = merkle.MemoryTree()
    builder = tiles.TileBuilder()
    stored: dict[tiles.TileKey, bytes] = {}
    for size in range(1, 70_000):
        leaf = size.to_bytes(8, "big")
        tree.append(leaf)
        stored.update(builder.append([merkle.leaf_hash(leaf)]))
        if size in (1, 2, 255, 256, 257, 511, 512, 65_535, 65_536, 65_537, 69_999):
            edge = {key: stored[key] for key in right_edge(size)}
            found = frontier_from(tiles.TileReader(edge), size)
            assert found.hashes == tree.frontier.hashes and found.root() == tree.root()


async def test_each_disagreement_is_named(tmp_path: Path) -> None:
    """Wrong size, wrong origin, wrong root, a frontier that is not the tree's
    and a signature by another key are each reported; the honest one passes."""
    key, other = signer(), signer()
    path = tmp_path / "journal" / NODE / "0"
    with open_writer(tmp_path / "journal", 0) as writer:
        fill(writer, 40)
        honest = cut(writer, key, 0)
        epoch = writer.epoch
    records = _records(path)
    frontier = merkle.Frontier()
    for record in records[:honest.seq - 1]:
        frontier.append(merkle.leaf_hash(record.canonical))
    keeper = TreeKeeper(NODE, origin_prefix=PREFIX, log_key=note.Verifier.parse(key.vkey))
    record = records[honest.seq - 1]
    assert keeper.check(0, epoch, record, frontier).valid

    def variant(size: int, stream: int, root: bytes, signing: object = key,
                body_frontier: list[bytes] | None = None) -> journal.Record:
        signed = signing.sign(stream, epoch, size, root).note.encode()  # type: ignore[attr-defined]
        body = journal.checkpoint_body(honest.tree_size,
                                       body_frontier if body_frontier is not None else frontier.hashes, signed)
        return dataclasses.replace(record, body=body)

    root = frontier.root()
    cases = {
        "size": variant(honest.tree_size - 1, 0, root),
        "origin": variant(honest.tree_size, 7, root),
        "root": variant(honest.tree_size, 0, bytes(32)),
        "frontier": variant(honest.tree_size, 0, root, body_frontier=[bytes(32)] * len(frontier.hashes)),
        "signature": variant(honest.tree_size, 0, root, signing=other),
    }
    for name, wrong in cases.items():
        verdict = keeper.check(0, epoch, wrong, frontier)
        assert not verdict.valid and len(verdict.problems) == 1, (name, verdict.problems)
        assert name in verdict.problems[0], (name, verdict.problems)
    garbage = dataclasses.replace(record, body=b"\x01" * 12)
    assert not keeper.check(0, epoch, garbage, frontier).valid


async def test_a_rolled_back_batch_leaves_no_trace(tmp_path: Path, pool: asyncpg.Pool,
                                                   db: asyncpg.Connection) -> None:
    """The tree is extended inside a transaction that then rolls back: the tiles
    are unchanged, and the next real batch is extended from PostgreSQL's state,
    not from the tree the rolled-back batch left in memory."""
    key = signer()
    with open_writer(tmp_path / "journal", 0) as writer:
        fill(writer, 300)
        cut(writer, key, 0)
        fill(writer, 300)
        last = cut(writer, key, 0)
        epoch = writer.epoch
    records = _records(tmp_path / "journal" / NODE / "0")
    keeper = TreeKeeper(NODE, origin_prefix=PREFIX)
    store = Store(pool, NODE, timeout_seconds=10, tree=keeper)
    batch_rows, error = rows.to_rows(NODE, 0, records, 0)
    assert error is None
    first = await store.ship(0, records[:250], batch_rows[:250])
    assert isinstance(first, Shipped)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await keeper.extend(conn, 0, epoch, 250, records[249].chain_hash, records[250:400], batch_rows[250:400])
        await transaction.rollback()
    assert keeper.trees[0].size == 400  # the cache ran ahead of PostgreSQL …
    second = await store.ship(0, records[250:], batch_rows[250:])
    assert isinstance(second, Shipped)
    tree = merkle.MemoryTree()
    for record in records:
        tree.append(record.canonical)
    stored = {(r["level"], r["tile_index"]): bytes(r["hashes"]) for r in await db.fetch(
        "SELECT level, tile_index, hashes FROM log_tiles WHERE stream_id = 0")}
    assert merkle.root(tiles.TileReader(stored), tree.size) == tree.root()  # … and was not believed
    sizes = [r["tree_size"] for r in await db.fetch("SELECT tree_size FROM log_checkpoints ORDER BY tree_size")]
    assert sizes[-1] == last.tree_size and len(sizes) == 2
    assert await db.fetchval("SELECT count(*) FROM repair_incidents") == 0


async def test_log_tables_refuse_rewriting(db: asyncpg.Connection) -> None:
    """log_checkpoints and log_cosignatures refuse UPDATE, DELETE and TRUNCATE;
    a full tile never changes and a partial tile may only grow at its right edge."""
    epoch = b"\x01" * 16
    await db.execute("INSERT INTO log_checkpoints (node_id, stream_id, epoch, tree_size, root, origin, note, "
                     "record_seq, cut_at) VALUES ('n', 0, $1, 5, $2, 'o/n/0/x', 'note', 6, now())", epoch, bytes(32))
    await db.execute("INSERT INTO log_cosignatures (node_id, stream_id, epoch, tree_size, witness, line, cosigned_at) "
                     "VALUES ('n', 0, $1, 5, 'w', E'\u2014 w AAAA\\n', 1)", epoch)
    for table in ("log_checkpoints", "log_cosignatures"):
        for statement in (f"UPDATE {table} SET tree_size = tree_size", f"DELETE FROM {table}",
                          f"TRUNCATE {table} CASCADE"):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await db.execute(statement)
    full, partial = bytes(range(32)) * 256, b"\x02" * 64
    await db.execute("INSERT INTO log_tiles VALUES ('n', 0, $1, 0, 0, 256, $2), ('n', 0, $1, 0, 1, 2, $3)",
                     epoch, full, partial)
    with pytest.raises(asyncpg.PostgresError, match="immutable"):
        await db.execute("UPDATE log_tiles SET hashes = $1 WHERE tile_index = 0", b"\x03" * 8192)
    with pytest.raises(asyncpg.PostgresError, match="only grow"):
        await db.execute("UPDATE log_tiles SET hashes = $1, width = 3 WHERE tile_index = 1", b"\x03" * 96)
    assert await db.execute("UPDATE log_tiles SET hashes = $1, width = 3 WHERE tile_index = 1",
                            partial + b"\x04" * 32) == "UPDATE 1"
