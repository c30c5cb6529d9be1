"""Chain verification of one stream, from PostgreSQL rows alone (invariant 4).

A `StreamVerifier` is fed the stream's rows in (stream_seq, recorded_at) order
and stops at the first bad sequence number. A stream is intact if and only if:

  C1  seqs run first_seq, first_seq + 1, ... with no hole (else `deleted`) and
      no seq twice (else `inserted`); first_seq is 1 unless an archive covers
      the seqs before it;
  C2  each row's canonical bytes parse, and the seq inside them is the row's
      seq (else `reordered`: the bytes of another record sit at this seq);
  C3  chain_hash = sha256(previous chain_hash || canonical), starting from the
      genesis prev hash (else `modified`);
  C4  the decoded columns equal what the canonical bytes say (else
      `column_mismatch`: a column was edited, the bytes were not);
  C5  the stream's checkpoint (the head anchored outside the writer) names the
      last row's seq and hash, and the genesis epoch (else `truncated`,
      `inserted` or `checkpoint_mismatch`, `epoch_mismatch`).

The verifier is pure: no I/O, so the daemon (incremental, in batches) and the
audit CLI (everything, streamed from a cursor) share it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from repair import canonical
from symphony.attestation import BodyError

# Columns the forwarder decodes from the bytes; each one is checked (C4).
COMPARED_COLUMNS = ("record_type", "attestation_id", "recorded_at", "participant_id", "method", "route",
                    "executes", "status", "disposition", "latency_us", "idempotency_key_hash", "body_sha256")
# Columns that must be NULL when the record's type does not carry them.
NULLABLE_COLUMNS = COMPARED_COLUMNS[3:]


@dataclass(frozen=True)
class Break:
    """The first bad sequence number of a stream and why."""

    seq: int
    reason: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class Checkpoint:
    last_seq: int
    last_hash: bytes
    epoch: bytes | None = None


@dataclass
class StreamVerifier:
    """Feeds rows of one stream in order; `broken` holds the first break."""

    node_id: str
    stream_id: int
    next_seq: int = 1
    prev_hash: bytes = field(default_factory=lambda: canonical.GENESIS_PREV_HASH)
    archived_through: int = 0
    archived_hash: bytes | None = None  # chain hash of seq archived_through, from a signed archive
    records_verified: int = 0
    last_seq: int = 0
    anchored_at: int | None = None
    epoch: bytes | None = None
    broken: Break | None = None

    def __post_init__(self) -> None:
        assert self.next_seq >= 1
        assert len(self.prev_hash) == 32
        self.last_seq = self.next_seq - 1

    def feed(self, row: Mapping[str, Any]) -> Break | None:
        if self.broken is not None:
            return self.broken
        self.broken = self._check(row)
        return self.broken

    def _check(self, row: Mapping[str, Any]) -> Break | None:
        seq = int(row["stream_seq"])
        if seq < self.next_seq:
            return Break(seq, "inserted", f"a second row carries seq {seq}")
        if seq > self.next_seq:
            if self.records_verified == 0 and self.next_seq == 1 and self.archived_through >= seq - 1:
                return self._anchor(row, seq)
            missing = f"{self.next_seq}" if seq == self.next_seq + 1 else f"{self.next_seq}..{seq - 1}"
            return Break(self.next_seq, "deleted", f"seq {missing} missing before seq {seq}")
        problem = self._check_bytes(row, seq)
        if problem is not None:
            return problem
        expected = canonical.chain_hash(self.prev_hash, bytes(row["canonical"]))
        if expected != bytes(row["chain_hash"]):
            return Break(seq, "modified", "chain hash does not equal sha256(previous hash || canonical bytes)")
        self._advance(seq, expected)
        return None

    def _check_bytes(self, row: Mapping[str, Any], seq: int) -> Break | None:
        try:
            parsed = canonical.parse(bytes(row["canonical"]))
            decoded = canonical.columns(parsed)
        except (canonical.CanonicalError, BodyError) as exc:
            return Break(seq, "modified", f"canonical bytes do not parse: {exc}")
        if parsed.stream_seq != seq:
            return Break(seq, "reordered", f"the row at seq {seq} holds the bytes of record {parsed.stream_seq}")
        differing = [name for name in COMPARED_COLUMNS
                     if name in row and name in decoded and _normal(row[name]) != _normal(decoded[name])]
        differing += [name for name in NULLABLE_COLUMNS
                      if name in row and name not in decoded and _normal(row[name]) is not None]
        if differing:
            return Break(seq, "column_mismatch", f"columns differ from the canonical bytes: {', '.join(differing)}")
        if seq == 1:
            self.epoch = canonical.epoch_of(parsed)
        return None

    def _anchor(self, row: Mapping[str, Any], seq: int) -> Break | None:
        """The first row after an archived prefix: its own link cannot be checked
        here (the archive holds it), so its hash becomes the starting point."""
        problem = self._check_bytes(row, seq)
        if problem is not None:
            return problem
        if self.archived_hash is not None and seq == self.archived_through + 1 and \
                canonical.chain_hash(self.archived_hash, bytes(row["canonical"])) != bytes(row["chain_hash"]):
            return Break(seq, "modified", "the first row after the archived prefix does not chain to the "
                                          "archive's last hash")
        self.anchored_at = seq
        self._advance(seq, bytes(row["chain_hash"]))
        return None

    def _advance(self, seq: int, chain_hash: bytes) -> None:
        self.prev_hash = chain_hash
        self.last_seq = seq
        self.next_seq = seq + 1
        self.records_verified += 1

    def finish(self, checkpoint: Checkpoint | None) -> Break | None:
        """Compare the verified head with the checkpoint (C5); call after the last row."""
        if self.broken is not None or checkpoint is None:
            return self.broken
        if self.last_seq == 0 and self.archived_through >= checkpoint.last_seq:
            return None  # every record of the stream left the hot window, archived
        if checkpoint.last_seq > self.last_seq:
            self.broken = Break(self.last_seq + 1, "truncated",
                                f"checkpoint is at seq {checkpoint.last_seq}, rows end at seq {self.last_seq}")
        elif checkpoint.last_seq < self.last_seq:
            self.broken = Break(checkpoint.last_seq + 1, "inserted",
                                f"rows run to seq {self.last_seq}, past the checkpoint at seq {checkpoint.last_seq}")
        elif self.last_seq > 0 and checkpoint.last_hash != self.prev_hash:
            self.broken = Break(self.last_seq, "checkpoint_mismatch",
                                "the checkpoint's hash is not the chain hash of its seq")
        elif self.epoch is not None and checkpoint.epoch is not None and self.epoch != checkpoint.epoch:
            self.broken = Break(1, "epoch_mismatch", "the genesis record's epoch is not the checkpoint's epoch")
        return self.broken


def _normal(value: Any) -> Any:
    """Compare "" like NULL, memoryview like bytes, datetimes exactly."""
    if isinstance(value, memoryview):
        value = bytes(value)
    if value in ("", b""):
        return None
    return value
