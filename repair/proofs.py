"""Inclusion and consistency proofs answered from PostgreSQL.

The forwarder keeps each stream epoch's Merkle tree as tiles (log_tiles), its
checked checkpoints (log_checkpoints) and the witnesses' cosignatures
(log_cosignatures). A proof reads: the record (its canonical bytes, the leaf),
the newest cosigned checkpoint that covers it, and the few tiles the proof
path goes through (symphony.tlog.tiles.needed_tiles: one query). The result is
a c2sp.org/tlog-proof@v1 file (symphony.tlog.proof.ProofFile) that
`symphony verify proof` checks offline with the node's and witnesses' keys.

Before it is handed out, every proof is verified here against the
checkpoint's root: a database whose tiles do not match its checkpoints gives
an error, never a proof that would fail elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from symphony.db import queries
from symphony.errors import SymphonyError
from symphony.tlog import merkle, proof, tiles

QUERIES = queries.load("repair", "proofs.sql")


class NotFound(SymphonyError):
    """No such record, no checkpoint covering it, or tiles missing (exit 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=1)


def epoch_from_hex(value: str) -> bytes:
    """A stream epoch given as 32 hex digits (the CLI's --epoch, the API's ?epoch=)."""
    try:
        epoch = bytes.fromhex(value)
    except ValueError:
        epoch = b""
    if len(epoch) != 16:
        raise ValueError(f"epoch {value!r} is not 32 hex digits")
    return epoch


@dataclass(frozen=True)
class Inclusion:
    node_id: str
    stream_id: int
    epoch: bytes
    seq: int
    origin: str
    tree_size: int
    cosigned: bool
    file: proof.ProofFile

    def summary(self) -> dict[str, object]:
        return {"node_id": self.node_id, "stream_id": self.stream_id, "epoch": self.epoch.hex(), "seq": self.seq,
                "index": self.seq - 1, "origin": self.origin, "tree_size": self.tree_size,
                "path_hashes": len(self.file.path), "witnessed": self.cosigned}


async def read_tiles(conn: asyncpg.Connection, node_id: str, stream_id: int, epoch: bytes,
                     wanted: Callable[[merkle.NodeReader], object]) -> tiles.TileReader:
    """A NodeReader over exactly the tiles `wanted` reads, fetched in one query."""
    keys = sorted(tiles.needed_tiles(wanted))
    found = await conn.fetch(QUERIES["tiles"], node_id, stream_id, epoch, [k[0] for k in keys],
                             [k[1] for k in keys]) if keys else []
    return tiles.TileReader({(int(r["level"]), int(r["tile_index"])): bytes(r["hashes"]) for r in found})


async def inclusion(conn: asyncpg.Connection, *, attestation_id: int | None = None, node_id: str | None = None,
                    stream_id: int | None = None, epoch: bytes | None = None, seq: int | None = None,
                    unwitnessed: bool = False) -> Inclusion:
    """The proof that one record is in its stream epoch's checkpointed tree."""
    if attestation_id is not None:
        row = await conn.fetchrow(QUERIES["record_by_attestation"], attestation_id, node_id, unwitnessed)
        what = f"attestation {attestation_id}"
    else:
        assert node_id is not None and stream_id is not None and seq is not None
        row = await conn.fetchrow(QUERIES["record_by_seq"], node_id, stream_id, seq, epoch, unwitnessed)
        what = f"record {node_id}/{stream_id} seq {seq}" + (f" of epoch {epoch.hex()}" if epoch else "")
    if row is None or row["epoch"] is None:
        raise NotFound(f"{what} is not in PostgreSQL")
    node, stream, record_seq = row["node_id"], int(row["stream_id"]), int(row["stream_seq"])
    record_epoch, canonical = bytes(row["epoch"]), bytes(row["canonical"])
    cp = row
    if cp["tree_size"] is None:
        kind = "checkpoint" if unwitnessed else "witnessed checkpoint"
        raise NotFound(f"no {kind} covers {node}/{stream} seq {record_seq} yet (epoch {record_epoch.hex()})")
    size, root = int(cp["tree_size"]), bytes(cp["root"])
    index = record_seq - 1
    read = await read_tiles(conn, node, stream, record_epoch, lambda r: merkle.inclusion_proof(r, index, size))
    try:
        path = merkle.inclusion_proof(read, index, size)
        merkle.verify_inclusion(merkle.leaf_hash(canonical), index, size, path, root)
    except (tiles.TileError, merkle.ProofError) as exc:
        raise NotFound(f"the tree in PostgreSQL does not prove {node}/{stream} seq {record_seq} under the "
                       f"checkpoint of size {size}: {exc}") from None
    signed = (cp["note"] + cp["cosignatures"]).encode()
    return Inclusion(node, stream, record_epoch, record_seq, cp["origin"], size, bool(cp["cosignatures"]),
                     proof.ProofFile(index, path, signed, canonical))


@dataclass(frozen=True)
class Consistency:
    old_size: int
    new_size: int
    path: list[bytes]
    old_checkpoint: str | None  # the signed notes, when checkpoints of these sizes were kept
    new_checkpoint: str | None


async def consistency(conn: asyncpg.Connection, node_id: str, stream_id: int, epoch: bytes | None,
                      old_size: int, new_size: int) -> Consistency:
    """RFC 9162 consistency proof between two sizes of a stream epoch's tree."""
    if epoch is None:
        epoch = await conn.fetchval(QUERIES["current_epoch"], node_id, stream_id)
        if epoch is None:
            raise NotFound(f"stream {node_id}/{stream_id} was never shipped")
        epoch = bytes(epoch)
    if not 0 < old_size <= new_size:
        raise SymphonyError(f"need 0 < old size ({old_size}) <= new size ({new_size})", exit_code=2)
    have = int(await conn.fetchval(QUERIES["tree_size"], node_id, stream_id, epoch))
    if new_size > have:
        raise NotFound(f"the tree of {node_id}/{stream_id} epoch {epoch.hex()} has {have} leaves in PostgreSQL, "
                       f"not {new_size}")
    read = await read_tiles(conn, node_id, stream_id, epoch,
                            lambda r: merkle.consistency_proof(r, old_size, new_size))
    try:
        path = merkle.consistency_proof(read, old_size, new_size)
    except (tiles.TileError, merkle.ProofError) as exc:
        raise NotFound(f"the tiles in PostgreSQL cannot prove {old_size} -> {new_size}: {exc}") from None
    rows = [await conn.fetchrow(QUERIES["checkpoint_at"], node_id, stream_id, epoch, size)
            for size in (old_size, new_size)]
    if rows[0] is not None and rows[1] is not None and old_size < new_size:
        try:  # both sizes were checkpointed: the proof must join the signed roots
            merkle.verify_consistency(old_size, new_size, path, bytes(rows[0]["root"]), bytes(rows[1]["root"]))
        except merkle.ProofError as exc:
            raise NotFound(f"the tiles in PostgreSQL do not join the checkpoints of sizes {old_size} and "
                           f"{new_size}: {exc}") from None
    notes = [None if row is None else row["note"] + row["cosignatures"] for row in rows]
    return Consistency(old_size, new_size, path, notes[0], notes[1])
