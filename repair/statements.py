"""Signed gap statements: for each closed UTC window, the attestation gap per
participant, signed by repair's gap-statement key, stored once, published as a file.

A window is `[k x L, (k + 1) x L)` seconds since the Unix epoch, L =
`gap_statement_window_seconds` (a divisor of a day, default 3600: hours
aligned to UTC). It is *closed* when its end is older than the grace periods
after which its gap no longer moves on its own: `max(ghost_grace_seconds,
outcome_grace_seconds, unattested_pending_seconds)`. Before that an INGRESS
near the end may still get its OUTCOME or outbox row (it is not a ghost yet),
and an execution may still find its INGRESS (it is pending, not unattested).

The tuple per participant is `attestation_gap_v3` through the very query
`symphony audit gap` runs (repair/queries.sql `audit_gap`): one rule, one
place. The statement also names the checkpoint of each log (stream epoch) live
in the window that it was computed over, and every ghost of the window by
position (symphony/gap_statement.py has the body format).

Exactly once per window: the leader signs; the table's key (window start)
and non-overlap constraint make a second signer's insert a no-op, and the
next window always starts where the last stored one ended, so a restart or a
change of leader continues without a hole or an overlap. The file
`<publish_dir>/gap-statements/<start>` is written from the stored row
(atomically), and re-written by any later cycle that finds it missing.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from repair.config import RepairConfig
from repair.store import QUERIES, TIMEOUT_SECONDS
from symphony import gap_statement
from symphony.db import queries
from symphony.errors import ConfigError
from symphony.files import write_atomically
from symphony.tlog import note

log = logging.getLogger("repair.statements")
STATEMENT_QUERIES = queries.load("repair", "statements.sql")
GHOSTS_LISTED_MAX = 10_000
REPUBLISH_NEWEST = 48
PUBLISH_SUBDIR = "gap-statements"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class StoredStatement:
    """A statement as stored: its window, its signed note, who signed when."""

    window_start: dt.datetime
    window_end: dt.datetime
    key_name: str
    body: str
    note: str
    ghosts: int
    unattested: int
    signed_at: dt.datetime
    signed_by: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> StoredStatement:
        return cls(**dict(row))


def load_signer(path: str, name: str) -> note.Signer:
    """The gap-statement key (PEM Ed25519 private key) under its note key name."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"gap_statement_signing_key {path} is unreadable: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"gap_statement_signing_key {path} is not an Ed25519 private key")
    try:
        return note.Signer(name, key)
    except note.NoteError as exc:
        raise ConfigError(f"gap_statement_key_name: {exc}") from None


@functools.cache
def _cached_signer(path: str, name: str) -> note.Signer:
    return load_signer(path, name)


def grace_seconds(settings: RepairConfig) -> float:
    """How long after its end a window's gap stops moving on its own."""
    return max(settings.ghost_grace_seconds, settings.outcome_grace_seconds, settings.unattested_pending_seconds)


def window_containing(at: dt.datetime, seconds: int) -> tuple[dt.datetime, dt.datetime]:
    offset = int((at - _EPOCH).total_seconds()) // seconds * seconds
    start = _EPOCH + dt.timedelta(seconds=offset)
    return start, start + dt.timedelta(seconds=seconds)


def next_window(last_end: dt.datetime, seconds: int) -> tuple[dt.datetime, dt.datetime]:
    """The window after one that ended at `last_end`: from there to the next
    boundary (shorter once, if the window length was changed)."""
    _, end = window_containing(last_end, seconds)
    return last_end, end


def statement_path(publish_dir: Path, window_start: dt.datetime) -> Path:
    return publish_dir / PUBLISH_SUBDIR / window_start.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


async def compute(conn: asyncpg.Connection, start: dt.datetime, end: dt.datetime, settings: RepairConfig,
                  as_of: dt.datetime) -> gap_statement.Statement:
    """The statement of [start, end) from the database as it is now."""
    rows = await conn.fetch(QUERIES["audit_gap"], start, end, None, settings.unattested_pending_seconds,
                            timeout=TIMEOUT_SECONDS)
    participants = {row["participant_id"]: gap_statement.Counts(
        ingress=row["ingress_count"], executions=row["executions"], handled=row["handled"], gap=row["gap"],
        unattested=row["unattested"]) for row in rows}
    ghosts = tuple(gap_statement.Ghost(row["participant_id"], row["node_id"], row["stream_id"], row["stream_seq"],
                                       row["attestation_id"])
                   for row in await conn.fetch(STATEMENT_QUERIES["statement_ghosts"], start, end, GHOSTS_LISTED_MAX,
                                               timeout=TIMEOUT_SECONDS))
    checkpoints = tuple(gap_statement.CheckpointRef(row["origin"], row["tree_size"], bytes(row["root"]))
                        for row in await conn.fetch(STATEMENT_QUERIES["statement_checkpoints"], start, end,
                                                    timeout=TIMEOUT_SECONDS))
    return gap_statement.Statement(start, end, as_of.replace(microsecond=0), checkpoints, participants, ghosts)


async def due_windows(conn: asyncpg.Connection, settings: RepairConfig,
                      now: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """The closed windows without a statement, oldest first (at most a cycle's worth)."""
    seconds = settings.gap_statement_window_seconds
    last = await conn.fetchrow(STATEMENT_QUERIES["statement_last"], timeout=TIMEOUT_SECONDS)
    if last is not None:
        window = next_window(last["window_end"], seconds)
    else:
        first = await conn.fetchval(STATEMENT_QUERIES["statement_first_record"], timeout=TIMEOUT_SECONDS)
        if first is None:
            return []  # nothing recorded yet: statements start with the first record's window
        window = window_containing(first, seconds)
    closed_before = now - dt.timedelta(seconds=grace_seconds(settings))
    due: list[tuple[dt.datetime, dt.datetime]] = []
    while window[1] <= closed_before and len(due) < settings.gap_statement_windows_per_cycle:
        due.append(window)
        window = next_window(window[1], seconds)
    return due


async def sign_due(conn: asyncpg.Connection, settings: RepairConfig, actor: str,
                   now: dt.datetime | None = None) -> list[StoredStatement]:
    """Sign and store every due window's statement; publish what is stored.
    Returns the statements this call stored."""
    signer = _cached_signer(settings.gap_statement_signing_key, settings.gap_statement_key_name)
    stored: list[StoredStatement] = []
    for start, end in await due_windows(conn, settings, now or dt.datetime.now(dt.timezone.utc)):
        # One snapshot for the numbers, the ghosts and the checkpoints. A second
        # signer of the same window inserts nothing, or (its snapshot older than
        # the other's commit) fails to serialize: either way the first one stands.
        try:
            async with conn.transaction(isolation="repeatable_read"):
                as_of = await conn.fetchval("SELECT now()", timeout=TIMEOUT_SECONDS)
                statement = await compute(conn, start, end, settings, as_of)
                signed = gap_statement.sign(statement, signer)
                inserted = await conn.fetchval(
                    STATEMENT_QUERIES["statement_insert"], start, end, signer.name, statement.body(), signed,
                    statement.total.gap, statement.total.unattested, actor, timeout=TIMEOUT_SECONDS)
        except asyncpg.SerializationError:
            inserted = None
        if inserted is None:
            log.info("gap statement already stored by another signer", extra={"window_start": start.isoformat()})
            break  # another instance is ahead of this one: it signs the rest
        stored.append(StoredStatement(start, end, signer.name, statement.body(), signed, statement.total.gap,
                                      statement.total.unattested, as_of, actor))
        log.info("gap statement signed", extra={"window_start": start.isoformat(), "window_end": end.isoformat(),
                                                "gap": statement.total.gap,
                                                "unattested": statement.total.unattested})
    if settings.gap_statement_publish_dir:
        await publish_missing(conn, Path(settings.gap_statement_publish_dir))
    return stored


async def publish_missing(conn: asyncpg.Connection, publish_dir: Path) -> list[Path]:
    """Write the file of each recent stored statement that has none (after a
    crash between commit and write, or a new publish dir)."""
    written: list[Path] = []
    for row in await conn.fetch(STATEMENT_QUERIES["statements_newest"], REPUBLISH_NEWEST, timeout=TIMEOUT_SECONDS):
        path = statement_path(publish_dir, row["window_start"])
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, row["note"].encode())
        written.append(path)
    return written


async def statements_for_window(conn: asyncpg.Connection, since: dt.datetime, until: dt.datetime,
                                limit: int = 100_000) -> list[StoredStatement]:
    """The stored statements whose window overlaps [since, until), oldest first
    (for exports and the evidence bundle)."""
    rows = await conn.fetch(STATEMENT_QUERIES["statements_overlapping"], since, until, limit,
                            timeout=TIMEOUT_SECONDS)
    return [StoredStatement.from_row(row) for row in rows]
