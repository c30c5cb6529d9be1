"""The Merkle tree of each shipped stream epoch, kept in PostgreSQL as tiles.

Runs inside the batch's transaction (forwarder/store.py `_copy_and_advance`):
the leaf hashes of the records just copied (RFC 9162: SHA-256(0x00 ||
canonical bytes), leaf i = seq i + 1) extend the epoch's tree; the tiles that
changed are upserted (log_tiles), and every CHECKPOINT record of the batch is
checked against the tree the forwarder computed itself from the records
before it. A checkpoint that says the same (size = its seq − 1, origin of this
node, stream and epoch, root and frontier equal to ours, and, when the node's
key is configured, a valid signature) is kept in log_checkpoints; any other
opens a CHECKPOINT_MISMATCH incident (CRITICAL) and is not kept. The record
itself is shipped either way: it is a leaf like any other.

The forwarder's own root at a CHECKPOINT record comes from the compact range
(merkle.Frontier) of the tree of the records before it, read from the
right-edge tiles (every frontier node lies in them: `frontier_from`), so the
leaves are hashed once per record and folded once per tile.

Rows, tiles and checkpoints commit together, so PostgreSQL's tree always has
exactly the checkpointed number of leaves. The tree in memory is a cache of
it: it is used only while its size and last chain hash are the checkpoint's
(the row locked by the batch), and reloaded from the right-edge tiles
otherwise (a restart, a rolled-back batch, another forwarder). When the tiles
are missing (a stream shipped before migration 0120) the tree is recomputed
from the shipped rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

import journal
from forwarder.rows import RecordLike, recorded_at
from symphony.attestation import RecordType
from symphony.db import queries
from symphony.tlog import checkpoint, merkle, note, origins, tiles

QUERIES = queries.load("forwarder", "tree.sql")
log = logging.getLogger("forwarder.tree")


@dataclass
class EpochTree:
    """The tree of one stream epoch as far as it was shipped."""

    epoch: bytes
    builder: tiles.TileBuilder
    last_hash: bytes  # chain hash of the last leaf (identifies the state with the checkpoint row)

    @property
    def size(self) -> int:
        return self.builder.size

    def frontier(self) -> merkle.Frontier:
        """The compact range of the tree as it stands, read from its right-edge tiles."""
        size = self.builder.size
        edge = {(level, (size >> (tiles.HEIGHT * level)) // tiles.WIDTH): b"".join(entries)
                for level, entries in enumerate(self.builder.partial) if entries}
        return frontier_from(tiles.TileReader(edge), size)


@dataclass(frozen=True)
class Verdict:
    """What the forwarder found of one CHECKPOINT record."""

    seq: int
    problems: list[str]
    checkpoint: checkpoint.Checkpoint | None
    note: str
    computed_root: bytes

    @property
    def valid(self) -> bool:
        return not self.problems and self.checkpoint is not None


def right_edge(size: int) -> list[tiles.TileKey]:
    """The partial (right-most, not full) tile of each tile level of a tree of `size` leaves."""
    keys = []
    level = 0
    while size >> (tiles.HEIGHT * level):
        entries = size >> (tiles.HEIGHT * level)
        if entries % tiles.WIDTH:
            keys.append((level, entries // tiles.WIDTH))
        level += 1
    return keys


def frontier_from(read: merkle.NodeReader, size: int) -> merkle.Frontier:
    """The compact range of a tree of `size` leaves, read as perfect-subtree nodes."""
    hashes, start = [], 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            hashes.append(read(level, start >> level))
            start += 1 << level
    return merkle.Frontier(size, hashes)


class TreeKeeper:
    """The trees of one node's streams; called by Store inside a batch's transaction."""

    def __init__(self, node_id: str, *, origin_prefix: str = "", log_key: note.Verifier | None = None,
                 timeout_seconds: float = 30.0) -> None:
        self.node_id = node_id
        self.origin_prefix = origin_prefix
        self.log_key = log_key
        self.timeout = timeout_seconds
        self.trees: dict[int, EpochTree] = {}
        self.checkpoints_valid = 0
        self.checkpoints_mismatched = 0
        self.rebuilds = 0
        self.unavailable: dict[tuple[int, bytes], str] = {}

    async def extend(self, conn: asyncpg.Connection, stream_id: int, epoch: bytes, last_seq: int,
                     last_hash: bytes, records: Sequence[RecordLike], batch_rows: Sequence[tuple[Any, ...]]) -> None:
        """Add `records` (seqs last_seq + 1 …) to the tree of (stream_id, epoch) whose
        shipped head is (last_seq, last_hash); same transaction as their rows."""
        assert records and records[0].seq == last_seq + 1
        if (stream_id, epoch) in self.unavailable:
            return
        tree = self.trees.pop(stream_id, None)  # put back only once all of this succeeded
        if tree is None or tree.epoch != epoch or tree.size != last_seq or tree.last_hash != last_hash:
            try:
                tree = await self._load(conn, stream_id, epoch, last_seq, last_hash)
            except TreeUnavailable as exc:  # raised before anything was written
                self.unavailable[(stream_id, epoch)] = str(exc)
                log.error("no Merkle tree for this stream epoch: its checkpoints are not checked or kept",
                          extra={"stream_id": stream_id, "epoch": epoch.hex(), "reason": str(exc)})
                return
        verdicts: list[tuple[Verdict, Any]] = []
        leaf_hash = merkle.leaf_hash
        leaves = [leaf_hash(record.canonical) for record in records]
        changed: dict[tiles.TileKey, bytes] = {}
        done = 0
        for at, (record, row) in enumerate(zip(records, batch_rows, strict=True)):
            if record.type == RecordType.CHECKPOINT:
                # The tree of the records before this one: its root is what the checkpoint must sign.
                changed.update(tree.builder.append(leaves[done:at]))
                done = at
                verdicts.append((self.check(stream_id, epoch, record, tree.frontier()), recorded_at(row)))
        changed.update(tree.builder.append(leaves[done:]))
        await self._store_tiles(conn, stream_id, epoch, changed)
        for verdict, cut_at in verdicts:
            await self._record(conn, stream_id, epoch, verdict, cut_at)
        tree.last_hash = records[-1].chain_hash
        self.trees[stream_id] = tree

    def forget(self, stream_id: int) -> None:
        self.trees.pop(stream_id, None)

    # -- checkpoints ------------------------------------------------------------

    def origin(self, stream_id: int, epoch: bytes) -> str | None:
        """The origin this node's checkpoints must name (None: any prefix)."""
        if not self.origin_prefix:
            return None
        return origins.origin(origins.log_name(self.origin_prefix, self.node_id), stream_id, epoch)

    def check(self, stream_id: int, epoch: bytes, record: RecordLike, frontier: merkle.Frontier) -> Verdict:
        """Compare the CHECKPOINT `record` with the tree of the records before it (`frontier`)."""
        size = record.seq - 1
        assert frontier.size == size, (frontier.size, size)
        computed = frontier.root()
        problems: list[str] = []
        try:
            body = journal.parse_checkpoint(record.body)
            signed = body.note
            text, _ = note.split(signed)
            cp: checkpoint.Checkpoint | None = checkpoint.Checkpoint.parse(text)
        except (ValueError, note.NoteError) as exc:  # CheckpointError is a ValueError
            return Verdict(record.seq, [f"unreadable checkpoint: {exc}"], None,
                           record.body.decode("utf-8", errors="replace"), computed)
        assert cp is not None
        if body.tree_size != size:
            problems.append(f"the record's tree size is {body.tree_size}, not {size}")
        if cp.size != size:
            problems.append(f"the checkpoint's size is {cp.size}, not {size} (its seq - 1)")
        wanted = self.origin(stream_id, epoch)
        suffix = f"/{self.node_id}/{stream_id}/{epoch.hex()}"
        if (wanted is not None and cp.origin != wanted) or not cp.origin.endswith(suffix):
            problems.append(f"the origin {cp.origin!r} is not this stream's ({wanted or '…' + suffix})")
        if cp.root != computed:
            problems.append(f"the signed root {cp.root.hex()} is not the root {computed.hex()} of the "
                            f"{size} records shipped before it")
        if list(body.frontier) != frontier.hashes:
            problems.append("the record's frontier is not the tree of the records before it")
        if self.log_key is not None:
            try:
                checkpoint.open_checkpoint(signed, self.log_key)
            except checkpoint.CheckpointError as exc:
                problems.append(f"the node's signature does not verify: {exc}")
        return Verdict(record.seq, problems, cp, signed.decode("utf-8", errors="replace"), computed)

    async def _record(self, conn: asyncpg.Connection, stream_id: int, epoch: bytes, verdict: Verdict,
                      cut_at: Any) -> None:
        if verdict.valid:
            cp = verdict.checkpoint
            assert cp is not None
            await conn.execute(QUERIES["insert_checkpoint"], self.node_id, stream_id, epoch, cp.size, cp.root,
                               cp.origin, verdict.note, verdict.seq, cut_at, timeout=self.timeout)
            self.checkpoints_valid += 1
            return
        self.checkpoints_mismatched += 1
        subject = (f"CHECKPOINT_MISMATCH on stream {self.node_id}/{stream_id} epoch {epoch.hex()} at seq "
                   f"{verdict.seq}: {'; '.join(verdict.problems)}")
        evidence = {"node_id": self.node_id, "stream_id": stream_id, "epoch": epoch.hex(), "seq": verdict.seq,
                    "tree_size": verdict.seq - 1, "computed_root": verdict.computed_root.hex(),
                    "signed_root": verdict.checkpoint.root.hex() if verdict.checkpoint else None,
                    "signed_size": verdict.checkpoint.size if verdict.checkpoint else None,
                    "checkpoint": verdict.note, "problems": verdict.problems}
        log.error("checkpoint does not match the shipped records",
                  extra={"stream_id": stream_id, "seq": verdict.seq, "problems": verdict.problems})
        await conn.execute(QUERIES["open_incident"], "CHECKPOINT_MISMATCH",
                           f"{self.node_id}/{stream_id}/{epoch.hex()}/{verdict.seq}", self.node_id, stream_id,
                           subject, json.dumps(evidence), timeout=self.timeout)

    # -- tiles ------------------------------------------------------------------

    async def _store_tiles(self, conn: asyncpg.Connection, stream_id: int, epoch: bytes,
                           changed: dict[tiles.TileKey, bytes]) -> None:
        if not changed:
            return
        keys = sorted(changed)
        await conn.execute(QUERIES["upsert_tiles"], self.node_id, stream_id, epoch, [k[0] for k in keys],
                           [k[1] for k in keys], [changed[k] for k in keys], timeout=self.timeout)

    async def _load(self, conn: asyncpg.Connection, stream_id: int, epoch: bytes, size: int,
                    last_hash: bytes) -> EpochTree:
        """The tree of `size` leaves from its right-edge tiles, or recomputed from the rows."""
        if size == 0:
            return EpochTree(epoch, tiles.TileBuilder(), last_hash)
        wanted = right_edge(size)
        found = await conn.fetch(QUERIES["tiles"], self.node_id, stream_id, epoch, [k[0] for k in wanted],
                                 [k[1] for k in wanted], timeout=self.timeout)
        stored = {(int(r["level"]), int(r["tile_index"])): bytes(r["hashes"]) for r in found}
        try:
            tree = EpochTree(epoch, tiles.TileBuilder.resume(size, {key[0]: stored[key] for key in wanted}),
                             last_hash)
            tree.frontier()  # every frontier node is readable from them
        except (KeyError, tiles.TileError, merkle.ProofError):
            return await self._rebuild(conn, stream_id, epoch, size, last_hash)
        return tree

    async def _rebuild(self, conn: asyncpg.Connection, stream_id: int, epoch: bytes, size: int,
                       last_hash: bytes) -> EpochTree:
        """Recompute the tree from the shipped rows (tiles missing or cut short)."""
        self.rebuilds += 1
        log.warning("recomputing the Merkle tree of a stream from its shipped rows",
                    extra={"stream_id": stream_id, "epoch": epoch.hex(), "tree_size": size})
        builder = tiles.TileBuilder()
        rebuilt: dict[tiles.TileKey, bytes] = {}
        chunk: list[bytes] = []
        async for row in conn.cursor(QUERIES["leaves"], self.node_id, stream_id, epoch, size,
                                     timeout=self.timeout):
            if int(row["stream_seq"]) != builder.size + len(chunk) + 1:
                raise TreeUnavailable(f"stream {stream_id}: record seq {builder.size + len(chunk) + 1} is not in "
                                      "PostgreSQL; the tree cannot be recomputed")
            chunk.append(merkle.leaf_hash(bytes(row["canonical"])))
            if len(chunk) == 4096:
                rebuilt.update(builder.append(chunk))
                chunk = []
        rebuilt.update(builder.append(chunk))
        if builder.size != size:
            raise TreeUnavailable(f"stream {stream_id}: {builder.size} of {size} shipped records are in "
                                  "PostgreSQL; the tree cannot be recomputed")
        await conn.execute(QUERIES["delete_tiles"], self.node_id, stream_id, epoch, timeout=self.timeout)
        await self._store_tiles(conn, stream_id, epoch, rebuilt)
        return EpochTree(epoch, builder, last_hash)


class TreeUnavailable(Exception):
    """The shipped rows needed to recompute a tree are gone (archived partitions)."""
