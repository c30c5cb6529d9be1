"""In-memory records shaped like the journal's `Record`, for the database-side tests.

These never touch disk: tests that need a journal on disk write it with the
journal's own Writer. Here the canonical bytes follow the journal's layout
(FORMAT.md: body_len, seq, attestation_id, type, flags, reserved, body) so the
rows look like real ones, and the chain hash is computed the same way.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import dataclass, replace

from symphony import attestation
from symphony.attestation import RecordType

ZERO_HASH = bytes(32)


@dataclass(frozen=True)
class FakeRecord:
    seq: int
    type: int
    attestation_id: int
    body: bytes
    chain_hash: bytes
    prev_hash: bytes
    canonical: bytes


def canonical(seq: int, record_type: int, attestation_id: int, body: bytes) -> bytes:
    return struct.pack("<IQQHHI", len(body), seq, attestation_id, record_type, 0, 0) + body


def make(seq: int, record_type: int, attestation_id: int, body: bytes, prev_hash: bytes) -> FakeRecord:
    data = canonical(seq, record_type, attestation_id, body)
    return FakeRecord(seq, record_type, attestation_id, body, hashlib.sha256(prev_hash + data).digest(),
                      prev_hash, data)


def ingress_body(n: int, at_us: int | None = None) -> bytes:
    return attestation.encode(attestation.IngressBody(
        version=1, received_at_us=at_us if at_us is not None else time.time_ns() // 1000,
        participant_id="demo-bank-a", auth_method="jwt", key_id="k1", policy_version=1,
        method="POST", route="/v1/payments", executes=True, body_sha256=hashlib.sha256(str(n).encode()).digest(),
        idempotency_key_hash=hashlib.sha256(f"key-{n}".encode()).digest(), traceparent="", verdict="accepted"))


def genesis_body(node_id: str, stream_id: int, epoch: bytes) -> bytes:
    """The journal's own GENESIS layout (journal/FORMAT.md F11)."""
    node = node_id.encode("ascii")
    return epoch + struct.pack("<HB", stream_id, len(node)) + node


def stream(node_id: str, stream_id: int, count: int, *, epoch: bytes | None = None,
           at_us: int | None = None) -> list[FakeRecord]:
    """GENESIS then count - 1 INGRESS records, chained from the zero hash."""
    assert count >= 1
    records = [make(1, RecordType.GENESIS, 0, genesis_body(node_id, stream_id, epoch or os.urandom(16)), ZERO_HASH)]
    for seq in range(2, count + 1):
        records.append(make(seq, RecordType.INGRESS, 1000 + seq, ingress_body(seq, at_us), records[-1].chain_hash))
    return records


def altered(record: FakeRecord, body: bytes) -> FakeRecord:
    """The record with another body but its old chain hash: tampering."""
    return replace(record, body=body, canonical=canonical(record.seq, record.type, record.attestation_id, body))
