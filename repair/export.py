"""`symphony export`: a signed, self-proving export of a window of the record.

Writes the directory format of symphony.exports (docs/verifying.md,
"Exports") from PostgreSQL, in one REPEATABLE READ snapshot:

- per stream epoch touched by the selection, the contiguous seq range a..b
  of its records as the journal's canonical bytes (COPY straight to the file:
  never decoded, never re-encoded), with the compact range of the tree at
  size a - 1 and an RFC 9162 consistency proof from b to the covering
  checkpoint's size n, both read from log_tiles: so an outsider recomputes
  the root from the frontier and the records and proves it against the
  witnessed checkpoint without any other record;
- the covering checkpoint (log_checkpoints) and its cosignatures
  (log_cosignatures), verbatim;
- the outbox rows and outbox_events that reference the exported attestations;
- a manifest listing every file with its size, SHA-256 and item count,
  signed as a C2SP signed note.

Memory stays bounded: records, outbox rows and events go from COPY to the
file chunk by chunk, and each file is hashed as it is written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import asyncpg
import msgspec

from symphony import exports
from symphony.db import queries
from symphony.errors import SymphonyError
from symphony.tlog import merkle, note, tiles

QUERIES = queries.load("repair", "export.sql")
TIMEOUT_SECONDS = 600.0
SNAPSHOT_ID = re.compile(r"[0-9A-F]{1,16}(-[0-9A-F]{1,16}){1,2}")
_ENCODER = msgspec.json.Encoder()


class ExportError(SymphonyError):
    """The database cannot back the export asked for (exit 1): no checkpoint
    covers a range yet, tiles are missing, or rows carry no epoch."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=1)


class _File:
    """A file written as we go, hashed and counted on the way."""

    def __init__(self, directory: Path, name: str) -> None:
        self.name = name
        self.handle: BinaryIO = open(directory / name, "wb")  # noqa: SIM115 - closed in close()
        self.digest = hashlib.sha256()
        self.size = 0
        self.items = 0

    def write(self, data: bytes, items: int = 0) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)
        self.items += items

    def line(self, value: msgspec.Struct) -> None:
        self.write(_ENCODER.encode(value) + b"\n", 1)

    def close(self) -> exports.FileEntry:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        return exports.FileEntry(self.name, self.size, self.digest.hexdigest(), self.items)


@dataclass
class Progress:
    """Counts on stderr, only when stderr is a terminal."""

    enabled: bool = field(default_factory=lambda: sys.stderr.isatty())
    records: int = 0
    last: float = 0.0

    def add(self, records: int) -> None:
        self.records += records
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.5:
            self.last = now
            print(f"\rexport: {self.records} records", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled:
            print(f"\rexport: {self.records} records, done", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Range:
    node_id: str
    stream_id: int
    epoch: bytes
    first_seq: int
    last_seq: int


@dataclass(frozen=True)
class Summary:
    directory: str
    streams: int
    records: int
    outbox_rows: int
    events: int
    manifest_sha256: str
    signer: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else exports.format_time(value)


async def export(conn: asyncpg.Connection, selection: exports.Selection, directory: Path,
                 signer: note.Signer, progress: Progress | None = None,
                 helpers: Sequence[asyncpg.Connection] = ()) -> Summary:
    """Write the export of `selection` into `directory` (which must be empty or new).

    With `helpers` (one or two more connections), outbox.jsonl and events.jsonl
    are written by them while this connection writes the records, all in one
    snapshot (exported by this transaction, imported by theirs): PostgreSQL
    builds the files on several cores at once."""
    progress = progress or Progress()
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise SymphonyError(f"{directory} is not empty: an export goes into a new directory", exit_code=2)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot = str(await conn.fetchval(QUERIES["export_snapshot"])) if helpers else ""
        selection = await _resolved(conn, selection)
        jobs: list[asyncio.Future[list[exports.FileEntry]]] = []
        if len(helpers) >= 2:
            jobs = [asyncio.ensure_future(_in_snapshot(helpers[0], snapshot, directory, selection, (exports.OUTBOX,))),
                    asyncio.ensure_future(_in_snapshot(helpers[1], snapshot, directory, selection, (exports.EVENTS,)))]
        elif helpers:
            jobs = [asyncio.ensure_future(_in_snapshot(helpers[0], snapshot, directory, selection,
                                                       (exports.OUTBOX, exports.EVENTS)))]
        try:
            ranges, selection = await _ranges(conn, selection)
            files, records_total = await _all_records(conn, directory, ranges, progress)
            if jobs:
                rows = [entry for job in jobs for entry in await job]
            else:
                rows = await _rows(conn, directory, selection, (exports.OUTBOX, exports.EVENTS))
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
        outbox, events = rows
        files += [outbox, events]
    progress.done()
    manifest = exports.Manifest(selection, exports.format_time(dt.datetime.now(dt.timezone.utc)), files)
    signed = note.sign(manifest.text(), signer).encode()
    _write_atomically(directory / exports.MANIFEST, signed)
    return Summary(str(directory), len(ranges), records_total, outbox.items, events.items,
                   hashlib.sha256(signed).hexdigest(), signer.verifier.vkey())


async def _in_snapshot(helper: asyncpg.Connection, snapshot: str, directory: Path, selection: exports.Selection,
                       names: tuple[str, ...]) -> list[exports.FileEntry]:
    if not SNAPSHOT_ID.fullmatch(snapshot):
        raise ExportError(f"PostgreSQL gave an unexpected snapshot id {snapshot!r}")
    async with helper.transaction(isolation="repeatable_read", readonly=True):
        await helper.execute(QUERIES["import_snapshot"].replace("'<snapshot>'", f"'{snapshot}'"))
        return await _rows(helper, directory, selection, names)


async def _all_records(conn: asyncpg.Connection, directory: Path, ranges: list[Range], progress: Progress
                       ) -> tuple[list[exports.FileEntry], int]:
    """streams.jsonl, checkpoints.jsonl and every records-K.txt; and the number of records."""
    files: list[exports.FileEntry] = []
    streams = _File(directory, exports.STREAMS)
    checkpoints = _File(directory, exports.CHECKPOINTS)
    records_total = 0
    for index, chosen in enumerate(ranges):
        line, cp, chosen = await _stream(conn, index, chosen)
        streams.line(line)
        checkpoints.line(cp)
        entry = await _records(conn, directory, index, chosen, progress)
        if entry.items != chosen.last_seq - chosen.first_seq + 1:
            raise ExportError(f"stream {chosen.node_id}/{chosen.stream_id} epoch {chosen.epoch.hex()}: "
                              f"PostgreSQL holds {entry.items} records of {chosen.first_seq}..{chosen.last_seq}")
        records_total += entry.items
        files.append(entry)
    files[:0] = [streams.close(), checkpoints.close()]
    return files, records_total


async def _resolved(conn: asyncpg.Connection, selection: exports.Selection) -> exports.Selection:
    """A seq range names its epoch: the stream's current one when none was given."""
    if not selection.by_seq or selection.epoch is not None:
        return selection
    found = await conn.fetchval(QUERIES["current_epoch"], selection.node_id, selection.stream_id)
    if found is None:
        raise ExportError(f"stream {selection.node_id}/{selection.stream_id} was never shipped")
    return exports.Selection(node_id=selection.node_id, stream_id=selection.stream_id, epoch=bytes(found).hex(),
                             first_seq=selection.first_seq, last_seq=selection.last_seq)


async def _ranges(conn: asyncpg.Connection, selection: exports.Selection
                  ) -> tuple[list[Range], exports.Selection]:
    if selection.by_seq:
        assert selection.node_id is not None and selection.stream_id is not None
        epoch_hex = selection.epoch
        if epoch_hex is None:
            found = await conn.fetchval(QUERIES["current_epoch"], selection.node_id, selection.stream_id)
            if found is None:
                raise ExportError(f"stream {selection.node_id}/{selection.stream_id} was never shipped")
            epoch_hex = bytes(found).hex()
            selection = exports.Selection(node_id=selection.node_id, stream_id=selection.stream_id,
                                          epoch=epoch_hex, first_seq=selection.first_seq,
                                          last_seq=selection.last_seq)
        assert selection.first_seq is not None and selection.last_seq is not None
        assert selection.node_id is not None and selection.stream_id is not None
        return [Range(selection.node_id, selection.stream_id, bytes.fromhex(epoch_hex), selection.first_seq,
                      selection.last_seq)], selection
    since, until = _bounds(selection)
    rows = await conn.fetch(QUERIES["window_ranges"], since, until, timeout=TIMEOUT_SECONDS)
    ranges = []
    for row in rows:
        if row["epoch"] is None:
            raise ExportError(f"stream {row['node_id']}/{row['stream_id']} has records shipped before migration "
                              "0050 (no epoch) in this window: they cannot be exported")
        ranges.append(Range(row["node_id"], int(row["stream_id"]), bytes(row["epoch"]), int(row["first_seq"]),
                            int(row["last_seq"])))
    return ranges, selection


def _bounds(selection: exports.Selection) -> tuple[dt.datetime, dt.datetime]:
    low = dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)
    high = dt.datetime(9999, 12, 31, tzinfo=dt.timezone.utc)
    return selection.since or low, selection.until or high


async def _stream(conn: asyncpg.Connection, index: int, chosen: Range
                  ) -> tuple[exports.StreamLine, exports.CheckpointLine, Range]:
    """The stream line (range, frontier at a - 1, consistency proof b -> n), its
    checkpoint, and the range (without an uncovered tail of non-attestations)."""
    key = (chosen.node_id, chosen.stream_id, chosen.epoch)
    name = f"{chosen.node_id}/{chosen.stream_id} epoch {chosen.epoch.hex()}"
    if not 1 <= chosen.first_seq <= chosen.last_seq:
        raise SymphonyError(f"{name}: seq range {chosen.first_seq}..{chosen.last_seq} is empty", exit_code=2)
    cp = await conn.fetchrow(QUERIES["covering_checkpoint"], *key, chosen.last_seq)
    if cp is None:
        chosen = await _trimmed(conn, chosen)
        cp = await conn.fetchrow(QUERIES["covering_checkpoint"], *key, chosen.last_seq)
    if cp is None:
        raise ExportError(f"{name}: no checkpoint covers seq {chosen.last_seq} yet (wait for the next one, or "
                          "export a window that ends earlier)")
    size = int(cp["tree_size"])
    held = int(await conn.fetchval(QUERIES["tree_size"], *key))
    if held < size:
        raise ExportError(f"{name}: PostgreSQL holds tiles for {held} leaves, the checkpoint covers {size}")
    a, b = chosen.first_seq, chosen.last_seq

    def wanted(read: merkle.NodeReader) -> tuple[list[bytes], list[bytes]]:
        proof = merkle.consistency_proof(read, b, size) if b < size else []
        return merkle.frontier_hashes(read, a - 1), proof

    keys = sorted(tiles.needed_tiles(wanted))
    found = await conn.fetch(QUERIES["tiles"], *key, [k[0] for k in keys], [k[1] for k in keys]) if keys else []
    reader = tiles.TileReader({(int(r["level"]), int(r["tile_index"])): bytes(r["hashes"]) for r in found})
    try:
        frontier, proof = wanted(reader)
    except (tiles.TileError, merkle.ProofError) as exc:
        raise ExportError(f"{name}: the tiles in PostgreSQL cannot prove the range: {exc}") from None
    prev = bytes(32)
    if a > 1:
        held_hash = await conn.fetchval(QUERIES["chain_hash_at"], *key, a - 1)
        prev = bytes(held_hash) if held_hash is not None else b""
    ended = await conn.fetchrow(QUERIES["ended_epoch"], *key)
    line = exports.StreamLine(
        stream=index, node_id=chosen.node_id, stream_id=chosen.stream_id, epoch=chosen.epoch.hex(),
        first_seq=a, last_seq=b, prev_chain_hash=prev.hex(), frontier=[h.hex() for h in frontier],
        checkpoint_size=size, consistency=[h.hex() for h in proof],
        ended=None if ended is None else exports.Ended(
            int(ended["last_seq"]), bytes(ended["last_hash"]).hex(), int(ended["journal_head_seq"]),
            bytes(ended["successor_epoch"]).hex(), ended["reason"], exports.format_time(ended["ended_at"])))
    return line, exports.CheckpointLine(index, size, cp["note"], list(cp["cosignatures"])), chosen


async def _trimmed(conn: asyncpg.Connection, chosen: Range) -> Range:
    """The range without its uncovered tail when that tail holds no INGRESS or
    OUTCOME: a stream's last records are typically its own CHECKPOINT (and
    heartbeats), which only the next checkpoint covers, and an ended epoch
    never gets one. Attestations beyond every checkpoint are never dropped:
    then there is no trimming and the export fails."""
    row = await conn.fetchrow(QUERIES["newest_checkpoint_below"], chosen.node_id, chosen.stream_id, chosen.epoch,
                              chosen.last_seq)
    if row is None or row["attestation_after"] is not None or int(row["tree_size"]) < chosen.first_seq:
        return chosen
    return Range(chosen.node_id, chosen.stream_id, chosen.epoch, chosen.first_seq, int(row["tree_size"]))


async def _records(conn: asyncpg.Connection, directory: Path, index: int, chosen: Range,
                   progress: Progress) -> exports.FileEntry:
    out = _File(directory, exports.records_file(index))

    async def sink(chunk: bytes) -> None:
        lines = chunk.count(b"\n")
        out.write(chunk, lines)
        progress.add(lines)

    await conn.copy_from_query(QUERIES["records"].rstrip().rstrip(";"), chosen.node_id, chosen.stream_id, chosen.epoch,
                               chosen.first_seq, chosen.last_seq, output=sink, timeout=TIMEOUT_SECONDS)
    return out.close()


async def _rows(conn: asyncpg.Connection, directory: Path, selection: exports.Selection,
                names: tuple[str, ...]) -> list[exports.FileEntry]:
    """outbox.jsonl and/or events.jsonl, each one COPY: PostgreSQL writes the
    JSON (json_build_object), in CSV mode with a quote and a delimiter that
    JSON text never contains, so each line arrives exactly as built."""
    if selection.by_seq:
        assert selection.epoch is not None
        queries_of = {exports.OUTBOX: "seq_outbox", exports.EVENTS: "seq_events"}
        args: tuple[Any, ...] = (selection.node_id, selection.stream_id, selection.first_seq, selection.last_seq,
                                 bytes.fromhex(selection.epoch))
    else:
        queries_of = {exports.OUTBOX: "window_outbox", exports.EVENTS: "window_events"}
        args = _bounds(selection)
    written = []
    for name in names:
        out = _File(directory, name)

        async def sink(chunk: bytes, out: _File = out) -> None:
            out.write(chunk, chunk.count(b"\n"))

        await conn.copy_from_query(QUERIES[queries_of[name]].rstrip().rstrip(";"), *args, output=sink,
                                   format="csv", quote="\x01", delimiter="\x02", timeout=TIMEOUT_SECONDS)
        written.append(out.close())
    return written


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
