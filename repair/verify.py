"""Chain verification against PostgreSQL: whole streams (audit) or increments (daemon).

Reads happen in one REPEATABLE READ, read-only transaction per stream, so the
rows and the checkpoint they are compared with come from the same snapshot
(the forwarder moves both in one transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from repair import anchors, canonical, chain
from repair.store import QUERIES, TIMEOUT_SECONDS

CURSOR_PREFETCH_ROWS = 2_000


@dataclass
class StreamReport:
    node_id: str
    stream_id: int
    records_verified: int
    last_verified_seq: int
    last_verified_hash: bytes
    anchored_at: int | None
    broken: chain.Break | None
    epoch: bytes | None = None
    ended: bool = False  # an epoch journal_epochs records as ended
    findings: list[anchors.Finding] = field(default_factory=list)
    anchors: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.broken is not None:
            return "BROKEN"
        return "FINDINGS" if self.findings else "OK"

    def as_dict(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "stream_id": self.stream_id, "status": self.status,
                "epoch": self.epoch.hex() if self.epoch else None, "ended_epoch": self.ended,
                "records_verified": self.records_verified, "last_verified_seq": self.last_verified_seq,
                "anchored_at": self.anchored_at,
                "first_bad_seq": self.broken.seq if self.broken else None,
                "reason": self.broken.reason if self.broken else None,
                "detail": self.broken.detail if self.broken else None,
                "findings": [f.as_dict() for f in self.findings], "anchors": self.anchors}


def _checkpoint(context: asyncpg.Record) -> chain.Checkpoint | None:
    if context["last_seq"] is None:
        return None
    return chain.Checkpoint(context["last_seq"], bytes(context["last_hash"]), bytes(context["epoch"]))


def _report(verifier: chain.StreamVerifier) -> StreamReport:
    return StreamReport(verifier.node_id, verifier.stream_id, verifier.records_verified, verifier.last_seq,
                        verifier.prev_hash, verifier.anchored_at, verifier.broken)


async def list_streams(conn: asyncpg.Connection) -> list[tuple[str, int]]:
    rows = await conn.fetch(QUERIES["list_streams"], timeout=TIMEOUT_SECONDS)
    return [(row["node_id"], row["stream_id"]) for row in rows]


async def verify_stream(conn: asyncpg.Connection, node_id: str, stream_id: int, *,
                        archive_key: Ed25519PublicKey | None = None) -> StreamReport:
    """The current epoch of one stream, every chain hash recomputed (see verify_epochs)."""
    return (await verify_epochs(conn, node_id, stream_id, archive_key=archive_key))[0]


async def verify_epochs(conn: asyncpg.Connection, node_id: str, stream_id: int, *,
                        archive_key: Ed25519PublicKey | None = None,
                        external: Sequence[anchors.Anchor] = ()) -> list[StreamReport]:
    """Recompute every chain hash of one stream, epoch by epoch, and compare its
    head with the anchors outside the database.

    The first report is the stream's current epoch (its checkpoint); one more
    follows per epoch journal_epochs records as ended, each verified against
    the end recorded there. An archived prefix counts only when its archive
    rows are signed by `archive_key` (the first epoch only: archives predate
    epochs). `external` anchors (journal, mirror; later the witness) are
    compared with the current epoch's head.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        context = await conn.fetchrow(QUERIES["stream_context"], node_id, stream_id, timeout=TIMEOUT_SECONDS)
        ended = await conn.fetch(QUERIES["stream_epochs"], node_id, stream_id, timeout=TIMEOUT_SECONDS)
        checkpoint = _checkpoint(context)
        first_epoch = bytes(ended[0]["epoch"]) if ended else (checkpoint.epoch if checkpoint else None)
        prefix, findings = await anchors.trusted_archives(conn, node_id, stream_id, archive_key)
        known = [bytes(row["epoch"]) for row in ended] + ([checkpoint.epoch] if checkpoint and checkpoint.epoch else [])
        findings += await _unknown_epoch_rows(conn, node_id, stream_id, known)
        current = await _verify_epoch(conn, node_id, stream_id, checkpoint,
                                      checkpoint.epoch if checkpoint else None,
                                      first=checkpoint is None or checkpoint.epoch == first_epoch, prefix=prefix)
        current.findings = findings
        reports = [current]
        for row in ended:
            end = chain.Checkpoint(row["last_seq"], bytes(row["last_hash"]), bytes(row["epoch"]))
            report = await _verify_epoch(conn, node_id, stream_id, end, end.epoch, first=end.epoch == first_epoch,
                                         prefix=prefix)
            report.ended = True
            reports.append(report)
    if checkpoint is not None and checkpoint.epoch is not None and external:
        head = anchors.StreamHead(node_id, stream_id, checkpoint.epoch, checkpoint.last_seq, checkpoint.last_hash,
                                  checkpoint.epoch == first_epoch, tuple(known[:-1]))
        for anchor in external:
            result = await anchor.check(conn, head)
            current.findings += result.findings
            current.anchors[anchor.name] = result.info
    return reports


async def _verify_epoch(conn: asyncpg.Connection, node_id: str, stream_id: int, checkpoint: chain.Checkpoint | None,
                        epoch: bytes | None, *, first: bool, prefix: anchors.ArchivedPrefix) -> StreamReport:
    """One epoch's rows (all rows of a stream with no checkpoint) against its end."""
    archived = prefix if first else anchors.ArchivedPrefix()
    verifier = chain.StreamVerifier(node_id, stream_id, archived_through=archived.through,
                                    archived_hash=archived.last_hash)
    if epoch is None:
        cursor = conn.cursor(QUERIES["stream_rows_filtered"], node_id, stream_id, prefetch=CURSOR_PREFETCH_ROWS,
                             timeout=TIMEOUT_SECONDS)
    else:
        cursor = conn.cursor(QUERIES["stream_rows_epoch"], node_id, stream_id, epoch, first,
                             prefetch=CURSOR_PREFETCH_ROWS, timeout=TIMEOUT_SECONDS)
    async for row in cursor:
        if verifier.feed(row) is not None:
            break
    verifier.finish(checkpoint)
    report = _report(verifier)
    report.epoch = epoch
    return report


async def _unknown_epoch_rows(conn: asyncpg.Connection, node_id: str, stream_id: int,
                              known: list[bytes]) -> list[anchors.Finding]:
    row = await conn.fetchrow(QUERIES["stream_rows_of_unknown_epoch"], node_id, stream_id, known,
                              timeout=TIMEOUT_SECONDS)
    if not row["rows"]:
        return []
    return [anchors.Finding("rows_of_unknown_epoch", node_id, stream_id, row["first_seq"],
                            f"{row['rows']} row(s) carry an epoch neither the checkpoint nor journal_epochs knows")]


async def verify_increment(conn: asyncpg.Connection, node_id: str, stream_id: int, *, verified_seq: int,
                           verified_hash: bytes | None, batch_rows: int, batches_max: int,
                           verified_epoch: bytes | None = None,
                           archive_key: Ed25519PublicKey | None = None) -> StreamReport:
    """Verify the current epoch's records after `verified_seq`, at most
    batch_rows x batches_max of them.

    Progress made in another epoch (`verified_epoch` is not the checkpoint's:
    the stream was replaced) starts again from seq 1. The checkpoint
    comparison (C5) runs only when the end of the stream was reached, since a
    head part-way through says nothing about the tail. Archived prefixes count
    only when signed by `archive_key`.
    """
    assert batch_rows >= 1 and batches_max >= 1
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        context = await conn.fetchrow(QUERIES["stream_context"], node_id, stream_id, timeout=TIMEOUT_SECONDS)
        ended = await conn.fetch(QUERIES["stream_epochs"], node_id, stream_id, timeout=TIMEOUT_SECONDS)
        checkpoint = _checkpoint(context)
        epoch = checkpoint.epoch if checkpoint else None
        first_epoch = bytes(ended[0]["epoch"]) if ended else epoch
        if verified_epoch is not None and epoch is not None and verified_epoch != epoch:
            verified_seq, verified_hash = 0, None
        prefix, _ = await anchors.trusted_archives(conn, node_id, stream_id, archive_key)
        if epoch != first_epoch:
            prefix = anchors.ArchivedPrefix()
        verifier = chain.StreamVerifier(
            node_id, stream_id, next_seq=verified_seq + 1,
            prev_hash=verified_hash if verified_seq > 0 and verified_hash else canonical.GENESIS_PREV_HASH,
            archived_through=prefix.through, archived_hash=prefix.last_hash)
        reached_end = False
        for _ in range(batches_max):
            if epoch is None:
                rows = await conn.fetch(QUERIES["stream_rows"], node_id, stream_id, verifier.last_seq, batch_rows,
                                        timeout=TIMEOUT_SECONDS)
            else:
                rows = await conn.fetch(QUERIES["stream_rows_epoch_after"], node_id, stream_id, epoch,
                                        epoch == first_epoch, verifier.last_seq, batch_rows, timeout=TIMEOUT_SECONDS)
            for row in rows:
                if verifier.feed(row) is not None:
                    break
            if verifier.broken is not None:
                break
            if len(rows) < batch_rows:
                reached_end = True
                break
        if reached_end:
            verifier.finish(checkpoint)
    report = _report(verifier)
    report.epoch = epoch
    return report