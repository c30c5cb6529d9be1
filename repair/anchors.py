"""Anchors outside the database that `audit verify-chain` compares PostgreSQL with.

A chain recomputed from PostgreSQL alone proves only that the rows agree with
each other and with the checkpoint row; someone who can write both (the tables'
owner) can delete a tail and move the checkpoint back, or rewrite a record and
recompute every later hash and the checkpoint, and the chain still verifies.
What such an insider cannot rewrite is a copy kept elsewhere. Each anchor here
compares one stream's head, as PostgreSQL holds it, with one such copy:

- archive signatures (`trusted_archives`): an archived prefix counts only when
  its attestation_archives rows are signed (symphony/archive_signature.py) by
  the key the verifier pins; the database cannot vouch for itself.
- `JournalAnchor`: the node's journal (`--journal-dir`). PostgreSQL's rows must
  be a prefix of the journal's records, hash for hash, where the journal still
  holds them; the checkpoint must not be behind what the journal shows was
  shipped (records released from the journal, and the forwarder's shipped
  marker, symphony/shipped_marker.py) nor ahead of the journal's head; the
  epochs must agree.
- `MirrorAnchor`: the write-once NDJSON copy (`--mirror`, the sidecar's mirror
  as Vector ships it to object storage): the checkpoint's (seq, hash) must be
  the copy's record at that seq.

Witnessed, signed checkpoints (issue 13) are checked by `audit verify-log`
(repair/verify_log.py), which recomputes each epoch's Merkle tree from every
row rather than comparing one head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import journal
from repair.cross_check import MirrorCopy
from repair.store import QUERIES, TIMEOUT_SECONDS
from symphony import archive_signature, shipped_marker

PREFETCH_ROWS = 5_000


@dataclass(frozen=True)
class Finding:
    """Something an anchor contradicts; any finding fails verify-chain (exit 1)."""

    check: str
    node_id: str
    stream_id: int
    seq: int | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "node_id": self.node_id, "stream_id": self.stream_id, "seq": self.seq,
                "detail": self.detail}


@dataclass(frozen=True)
class StreamHead:
    """One epoch of a stream as PostgreSQL holds it: its checkpoint."""

    node_id: str
    stream_id: int
    epoch: bytes
    last_seq: int
    last_hash: bytes
    first_epoch: bool  # rows with epoch NULL belong to it
    ended_epochs: tuple[bytes, ...] = ()


@dataclass
class AnchorResult:
    findings: list[Finding] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class Anchor(Protocol):
    name: str

    async def check(self, conn: asyncpg.Connection, head: StreamHead) -> AnchorResult: ...


# -- archives --------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchivedPrefix:
    """Seqs 1..through left PostgreSQL in archives signed by the pinned key."""

    through: int = 0
    last_hash: bytes | None = None
    archives_checked: int = 0


async def trusted_archives(conn: asyncpg.Connection, node_id: str, stream_id: int,
                           key: Ed25519PublicKey | None) -> tuple[ArchivedPrefix, list[Finding]]:
    """The archived prefix the pinned key vouches for, and every archive row it does not."""
    rows = await conn.fetch(QUERIES["stream_archives"], node_id, stream_id, timeout=TIMEOUT_SECONDS)
    findings: list[Finding] = []
    if not rows:
        return ArchivedPrefix(), findings
    if key is None:
        findings.append(Finding("archive_unverified", node_id, stream_id, rows[0]["first_seq"],
                                f"{len(rows)} archive row(s) but no pinned public key "
                                "(--archive-public-key or archive_public_key): archived seqs are not trusted"))
        return ArchivedPrefix(), findings
    through, last_hash = 0, None
    for row in rows:
        fields = archive_signature.ArchiveFields(
            row["partition"], row["node_id"], row["stream_id"], row["first_seq"], row["last_seq"],
            bytes(row["last_hash"]) if row["last_hash"] is not None else None, bytes(row["sha256"]))
        problem = archive_signature.verify(fields, bytes(row["signature"]), row["key_id"], key)
        where = f"archive {row['archive_id']} (partition {row['partition']}, seqs {row['first_seq']}..{row['last_seq']})"
        if problem is not None:
            findings.append(Finding("archive_signature", node_id, stream_id, row["first_seq"], f"{where}: {problem}"))
            continue
        if row["first_seq"] > through + 1:
            findings.append(Finding("archive_not_contiguous", node_id, stream_id, through + 1,
                                    f"{where} starts after seq {through + 1}, which no signed archive covers"))
            continue
        if row["last_seq"] > through:
            through, last_hash = row["last_seq"], fields.last_hash
    return ArchivedPrefix(through, last_hash, len(rows)), findings


# -- the node's journal -------------------------------------------------------------------


class JournalAnchor:
    """`<root>/<node_id>/<stream_id>/`, the journal the forwarder ships from."""

    name = "journal"

    def __init__(self, root: Path) -> None:
        self.root = root

    async def check(self, conn: asyncpg.Connection, head: StreamHead) -> AnchorResult:
        result = AnchorResult()
        if not (self.root / head.node_id).is_dir():
            result.info["skipped"] = f"no journal of node {head.node_id} under {self.root}"
            return result
        directory = self.root / head.node_id / str(head.stream_id)
        try:
            headers = journal.Reader(directory).segments()
        except (journal.JournalError, OSError) as exc:
            result.findings.append(self._finding(head, "journal_unreadable", None,
                                                 f"{directory}: {type(exc).__name__}: {exc}"))
            return result
        if not headers:
            result.findings.append(self._finding(head, "journal_unreadable", None, f"{directory} holds no segment"))
            return result
        epoch, oldest, journal_head = headers[0].epoch, headers[0].first_seq, headers[-1].write_seq
        result.info.update({"epoch": epoch.hex(), "oldest_seq": oldest, "head_seq": journal_head})
        if epoch != head.epoch:
            known = "an epoch PostgreSQL recorded as ended" if epoch in head.ended_epochs else \
                "an epoch PostgreSQL does not know (a replaced journal not shipped yet, or a rewritten checkpoint)"
            result.findings.append(self._finding(head, "journal_epoch", 1, f"the journal's epoch {epoch.hex()} is "
                                                 f"{known}; the checkpoint's is {head.epoch.hex()}"))
            return result
        self._check_released(head, oldest, result)
        self._check_marker(head, directory, result)
        if head.last_seq > journal_head:
            result.findings.append(self._finding(
                head, "checkpoint_ahead_of_journal", journal_head + 1,
                f"the checkpoint is at seq {head.last_seq}, the journal ends at seq {journal_head}"))
        await self._compare(conn, head, directory, oldest, result)
        return result

    def _check_released(self, head: StreamHead, oldest: int, result: AnchorResult) -> None:
        # The forwarder deletes a segment only once PostgreSQL's checkpoint is past it.
        if head.last_seq < oldest - 1:
            result.findings.append(self._finding(
                head, "checkpoint_behind_journal", head.last_seq + 1,
                f"the journal released seqs up to {oldest - 1} as shipped, the checkpoint is at seq {head.last_seq}"))

    def _check_marker(self, head: StreamHead, directory: Path, result: AnchorResult) -> None:
        try:
            marker = shipped_marker.read(directory)
        except shipped_marker.MarkerError as exc:
            result.findings.append(self._finding(head, "journal_unreadable", None, str(exc)))
            return
        if marker is None or marker.epoch_bytes() != head.epoch:
            return
        result.info["shipped_marker_seq"] = marker.seq
        if marker.seq > head.last_seq:
            result.findings.append(self._finding(
                head, "checkpoint_behind_journal", head.last_seq + 1,
                f"the forwarder recorded seq {marker.seq} as committed, the checkpoint is at seq {head.last_seq}"))
        elif marker.seq == head.last_seq and marker.seq > 0 and marker.hash_bytes() != head.last_hash:
            result.findings.append(self._finding(head, "journal_mismatch", marker.seq,
                                                 "the checkpoint's hash is not the one the forwarder committed"))

    async def _compare(self, conn: asyncpg.Connection, head: StreamHead, directory: Path, oldest: int,
                       result: AnchorResult) -> None:
        """PostgreSQL's rows from the journal's oldest seq on must carry the journal's hashes."""
        compared = 0
        scan = journal.Reader(directory).records(from_seq=oldest)
        try:
            record = next(scan, None)
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                cursor = conn.cursor(QUERIES["stream_hashes_from"], head.node_id, head.stream_id, head.epoch,
                                     head.first_epoch, oldest, prefetch=PREFETCH_ROWS, timeout=TIMEOUT_SECONDS)
                async for row in cursor:
                    seq = row["stream_seq"]
                    while record is not None and record.seq < seq:
                        record = next(scan, None)
                    if record is None:
                        break
                    if record.seq == seq and record.chain_hash != bytes(row["chain_hash"]):
                        result.findings.append(self._finding(
                            head, "journal_mismatch", seq,
                            "PostgreSQL's chain hash differs from the journal's record at this seq"))
                        break
                    compared += 1
        except journal.JournalCorrupt as exc:
            result.findings.append(self._finding(head, "journal_unreadable", exc.seq, f"journal corrupt: {exc}"))
        finally:
            getattr(scan, "close")()
        result.info["records_compared"] = compared

    def _finding(self, head: StreamHead, check: str, seq: int | None, detail: str) -> Finding:
        return Finding(check, head.node_id, head.stream_id, seq, detail)


# -- the write-once mirror ------------------------------------------------------------------


class MirrorAnchor:
    """The NDJSON copy (`--mirror DIR`), read once for every stream."""

    name = "mirror"

    def __init__(self, copy: MirrorCopy) -> None:
        self.copy = copy
        self.heads: dict[tuple[str, int], int] = {}
        for node, stream, seq in copy.records:
            self.heads[(node, stream)] = max(seq, self.heads.get((node, stream), 0))

    async def check(self, conn: asyncpg.Connection, head: StreamHead) -> AnchorResult:
        result = AnchorResult()
        mirror_head = self.heads.get((head.node_id, head.stream_id))
        if mirror_head is None:
            result.info["skipped"] = "the mirror holds no record of this stream"
            return result
        result.info["head_seq"] = mirror_head
        if head.last_seq == 0:
            return result
        key = (head.node_id, head.stream_id, head.last_seq)
        entry = self.copy.records.get(key)
        if entry is not None and entry[0] != head.last_hash:
            # A replaced stream has one record per epoch at this seq: any of them
            # may be the checkpoint's (chain hashes of different epochs differ).
            entry = next((alt for alt in self.copy.alternatives.get(key, []) if alt[0] == head.last_hash), entry)
        if entry is None:
            check = "mirror_behind_checkpoint" if mirror_head < head.last_seq else "mirror_head_missing"
            result.findings.append(Finding(check, head.node_id, head.stream_id, head.last_seq,
                                           f"the checkpoint's seq {head.last_seq} is not in the mirror "
                                           f"(the mirror's head is seq {mirror_head})"))
        elif entry[0] != head.last_hash:
            result.findings.append(Finding("mirror_head_mismatch", head.node_id, head.stream_id, head.last_seq,
                                           "the checkpoint's hash is not the mirror's chain hash at that seq"))
        else:
            result.info["head_matches"] = True
        return result
