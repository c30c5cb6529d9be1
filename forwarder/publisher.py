"""Submit the node's checkpoints to its witnesses and keep their cosignatures.

A task of the forwarder, outside every shipping transaction. Every
witness_poll_interval_ms it reads the newest checkpoint of each stream epoch
(log_checkpoints): the current epoch's, and each ended epoch's (journal_epochs:
the journal was replaced, STREAM_REPLACED), whose last checkpoint proves the
old epoch's final size and must reach the witnesses too. For each, for each configured witness that has not
cosigned it yet, calls the C2SP tlog-witness `add-checkpoint`
(symphony.tlog.witness_client) with a consistency proof from the size the
witness last cosigned, computed from the tiles in PostgreSQL (one query per
proof: tiles.needed_tiles). A witness needs only the newest checkpoint: one
that was down catches up with it in one call.

- 200: the cosignature lines, verified against the witness's configured key,
  go to log_cosignatures; the witness's size to log_witness_state.
- unreachable, timeout: retried after a capped, jittered backoff (symphony.backoff).
- refused (409 with a size beyond ours: a rollback; 422: a fork or a proof
  that does not hold; 403/404/400; a 200 without a valid cosignature): a
  CHECKPOINT_REFUSED incident (CRITICAL) with both checkpoints as evidence,
  ours and the witness's latest for the origin (its monitoring endpoint
  GET /<sha256(origin) hex>/checkpoint); retried with backoff, so a witness
  that was wrong about us recovers by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from forwarder.config import ForwarderConfig
from forwarder.store import TRANSIENT_ERRORS
from forwarder.tree import QUERIES
from symphony.backoff import Backoff
from symphony.tlog import checkpoint, merkle, note, tiles, witness_client

log = logging.getLogger("forwarder.publisher")
MONITOR_BYTES_MAX = 64 * 1024


@dataclass
class WitnessOrigin:
    """What the publisher knows of one witness for one origin."""

    cosigned_size: int = 0
    refused_size: int | None = None
    next_try_at: float = 0.0
    backoff: Backoff | None = None


@dataclass
class PublisherStats:
    """Counters for /metrics."""

    cosignatures: dict[str, int] = field(default_factory=dict)      # per witness
    refusals: dict[str, int] = field(default_factory=dict)          # per witness
    unavailable: dict[str, int] = field(default_factory=dict)       # per witness
    witnessed_cut_at: dict[int, float] = field(default_factory=dict)  # stream -> cut time of the newest cosigned
    ended_epochs_uncosigned: int = 0  # (witness, ended epoch) pairs whose last checkpoint is not cosigned yet


@dataclass(frozen=True)
class Latest:
    stream_id: int
    epoch: bytes
    size: int
    origin: str
    note: str
    cut_at: float
    ended: bool = False  # an ended epoch (the journal was replaced): its last checkpoint

    @property
    def checkpoint(self) -> checkpoint.Checkpoint:
        return checkpoint.Checkpoint.parse(note.split(self.note.encode())[0])


class NeedTiles(Exception):
    """A proof needs tiles not fetched yet (the witness asked for another old size)."""

    def __init__(self, old_size: int) -> None:
        super().__init__(old_size)
        self.old_size = old_size


class Publisher:
    def __init__(self, pool: asyncpg.Pool, settings: ForwarderConfig, stopping: asyncio.Event, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.settings = settings
        self.node_id = settings.node_id
        self.stopping = stopping
        self.witnesses = settings.witness_verifiers()
        self.timeout = settings.statement_timeout_seconds
        self.state: dict[tuple[str, str], WitnessOrigin] = {}
        self.stats = PublisherStats()
        self.clock = clock
        self._loaded = False

    async def run(self) -> None:
        if not self.witnesses:
            return
        poll = self.settings.witness_poll_interval_ms / 1000
        async with aiohttp.ClientSession() as session:
            while not self.stopping.is_set():
                try:
                    await self.publish_once(session)
                except TRANSIENT_ERRORS as exc:
                    log.warning("publisher: database unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
                try:
                    await asyncio.wait_for(self.stopping.wait(), timeout=poll)
                except asyncio.TimeoutError:
                    continue

    async def publish_once(self, session: aiohttp.ClientSession) -> None:
        """One round: the newest checkpoint of every stream to every witness that lacks it."""
        async with self.pool.acquire(timeout=self.timeout) as conn:
            if not self._loaded:
                for row in await conn.fetch(QUERIES["witness_states"], self.node_id, timeout=self.timeout):
                    self.state[(row["witness"], row["origin"])] = WitnessOrigin(
                        int(row["cosigned_size"]), row["refused_size"])
                self._loaded = True
            found = await conn.fetch(QUERIES["latest_checkpoints"], self.node_id, timeout=self.timeout)
        latest = [Latest(int(r["stream_id"]), bytes(r["epoch"]), int(r["tree_size"]), r["origin"], r["note"],
                         r["cut_at"].timestamp(), bool(r["ended"])) for r in found]
        now = self.clock()
        jobs = []
        self.stats.ended_epochs_uncosigned = sum(
            1 for _, witness in self.witnesses for cp in latest
            if cp.ended and self.state.get((witness.name, cp.origin), WitnessOrigin()).cosigned_size < cp.size)
        for url, witness in self.witnesses:
            for cp in latest:
                state = self.state.setdefault((witness.name, cp.origin), WitnessOrigin())
                if state.cosigned_size >= cp.size or now < state.next_try_at:
                    continue
                jobs.append(self._submit(session, url, witness, cp, state))
        if jobs:
            await asyncio.gather(*jobs)

    async def _submit(self, session: aiohttp.ClientSession, url: str, witness: note.Verifier, cp: Latest,
                      state: WitnessOrigin) -> None:
        try:
            result = await self._add_checkpoint(session, url, witness, cp, state.cosigned_size)
        except witness_client.WitnessUnavailable as exc:
            self.stats.unavailable[witness.name] = self.stats.unavailable.get(witness.name, 0) + 1
            delay = self._retry_later(state)
            log.warning("witness unavailable; retrying later",
                        extra={"witness": witness.name, "error": str(exc), "retry_in_seconds": round(delay, 3)})
            return
        if isinstance(result, witness_client.Cosigned):
            await self._store_cosignature(witness, cp, result)
            state.cosigned_size, state.refused_size, state.backoff, state.next_try_at = cp.size, None, None, 0.0
            self.stats.cosignatures[witness.name] = self.stats.cosignatures.get(witness.name, 0) + 1
            self.stats.witnessed_cut_at[cp.stream_id] = max(self.stats.witnessed_cut_at.get(cp.stream_id, 0.0),
                                                            cp.cut_at)
            return
        self.stats.refusals[witness.name] = self.stats.refusals.get(witness.name, 0) + 1
        theirs = await self._witness_latest(session, url, cp.origin)
        await self._refused(witness, url, cp, result, theirs)
        state.refused_size = cp.size
        delay = self._retry_later(state)
        log.error("witness refused a checkpoint", extra={"witness": witness.name, "origin": cp.origin,
                                                          "size": cp.size, "status": result.status,
                                                          "reason": result.reason, "retry_in_seconds": round(delay, 3)})

    def _retry_later(self, state: WitnessOrigin) -> float:
        if state.backoff is None:
            state.backoff = Backoff(self.settings.witness_retry_delay_ms_initial / 1000,
                                    self.settings.witness_retry_delay_ms_max / 1000)
        delay = state.backoff.next_delay()
        state.next_try_at = self.clock() + delay
        return delay

    async def _add_checkpoint(self, session: aiohttp.ClientSession, url: str, witness: note.Verifier, cp: Latest,
                              old_size: int) -> witness_client.Cosigned | witness_client.Refused:
        """add-checkpoint with proofs from the tiles; the client retries once from
        the size a 409 names, which may need tiles not fetched yet."""
        parsed = cp.checkpoint
        for _ in range(3):
            fetched = await self._proof_tiles(cp, old_size)

            def prove(old: int, new: int, fetched: dict[tiles.TileKey, bytes] = fetched) -> list[bytes]:
                try:
                    return merkle.consistency_proof(tiles.TileReader(fetched), old, new)
                except tiles.TileError:
                    raise NeedTiles(old) from None

            try:
                return await witness_client.add_checkpoint(
                    session, url, cp.note, parsed, old_size, prove, witness,
                    timeout_seconds=self.settings.witness_timeout_seconds)
            except NeedTiles as exc:
                old_size = exc.old_size
        raise witness_client.WitnessUnavailable(f"{url}: the witness keeps changing its size")

    async def _proof_tiles(self, cp: Latest, old_size: int) -> dict[tiles.TileKey, bytes]:
        if not 0 < old_size < cp.size:
            return {}
        return await read_tiles(self.pool, self.node_id, cp.stream_id, cp.epoch, self.timeout,
                                lambda read: merkle.consistency_proof(read, old_size, cp.size))

    async def _store_cosignature(self, witness: note.Verifier, cp: Latest, result: witness_client.Cosigned) -> None:
        async with self.pool.acquire(timeout=self.timeout) as conn, conn.transaction():
            for line in result.lines:
                await conn.execute(QUERIES["insert_cosignature"], self.node_id, cp.stream_id, cp.epoch, cp.size,
                                   witness.name, line, result.timestamps[witness.name], timeout=self.timeout)
            await conn.execute(QUERIES["note_cosigned"], witness.name, cp.origin, self.node_id, cp.stream_id,
                               cp.epoch, cp.size, timeout=self.timeout)

    async def _witness_latest(self, session: aiohttp.ClientSession, url: str, origin: str) -> str | None:
        """The witness's latest cosigned checkpoint for `origin` (its monitoring endpoint), if it says."""
        target = f"{url}/{hashlib.sha256(origin.encode()).hexdigest()}/checkpoint"
        try:
            async with session.get(target, timeout=aiohttp.ClientTimeout(
                    total=self.settings.witness_timeout_seconds)) as response:
                data = await response.content.read(MONITOR_BYTES_MAX)
                if response.status != 200:
                    return None
                return data.decode("utf-8", errors="replace")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return None

    async def _refused(self, witness: note.Verifier, url: str, cp: Latest, result: witness_client.Refused,
                       theirs: str | None) -> None:
        kind = {409: "rollback (the witness holds a larger tree)", 422: "fork or inconsistent history"}.get(
            result.status, "refused")
        subject = (f"CHECKPOINT_REFUSED by witness {witness.name} for {cp.origin} at size {cp.size}: "
                   f"{kind}: HTTP {result.status}: {result.reason}")
        evidence: dict[str, Any] = {
            "node_id": self.node_id, "stream_id": cp.stream_id, "epoch": cp.epoch.hex(), "origin": cp.origin,
            "witness": witness.name, "witness_url": url, "status": result.status, "reason": result.reason,
            "witness_size": result.witness_size, "our_checkpoint": cp.note, "witness_checkpoint": theirs}
        async with self.pool.acquire(timeout=self.timeout) as conn, conn.transaction():
            await conn.execute(QUERIES["open_incident"], "CHECKPOINT_REFUSED", f"{witness.name}/{cp.origin}",
                               self.node_id, cp.stream_id, subject, json.dumps(evidence), timeout=self.timeout)
            await conn.execute(QUERIES["note_refused"], witness.name, cp.origin, self.node_id, cp.stream_id,
                               cp.epoch, cp.size, f"HTTP {result.status}: {result.reason}", timeout=self.timeout)


async def read_tiles(pool: asyncpg.Pool, node_id: str, stream_id: int, epoch: bytes, timeout: float,
                     proof: Callable[[merkle.NodeReader], object]) -> dict[tiles.TileKey, bytes]:
    """The tiles `proof` reads, in one query."""
    keys = sorted(tiles.needed_tiles(proof))
    if not keys:
        return {}
    async with pool.acquire(timeout=timeout) as conn:
        found = await conn.fetch(QUERIES["tiles"], node_id, stream_id, epoch, [k[0] for k in keys],
                                 [k[1] for k in keys], timeout=timeout)
    return {(int(r["level"]), int(r["tile_index"])): bytes(r["hashes"]) for r in found}
