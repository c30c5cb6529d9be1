"""The bytes a record's chain hash covers, as `repair` reads them from PostgreSQL.

`ingress_attestations.canonical` holds, per row, the exact bytes of one journal
record that its chain hash covers: `chain_hash = sha256(prev_hash || canonical)`,
and the first record of a stream chains from 32 zero bytes (journal/FORMAT.md,
F5 and F7f). The layout is the journal's (FORMAT.md, "Record header": bytes
36 .. 64 + body_len - 1 of a record), little-endian:

| offset | size | field |
|---|---|---|
| 0 | 4 | body_len (u32) |
| 4 | 8 | seq (u64) |
| 12 | 8 | attestation_id (u64) |
| 20 | 2 | type (u16) |
| 22 | 2 | flags, zero |
| 24 | 4 | reserved, zero |
| 28 | body_len | body: MessagePack (`symphony.attestation`), or the journal's own GENESIS layout (F11) |

It is re-implemented here with `struct` and `hashlib` on purpose: an audit
recomputes the chain with nothing from the code that wrote it.
`tests/repair/test_canonical.py` checks it against records the journal writes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
from dataclasses import dataclass
from typing import Any

import journal
from symphony import attestation
from symphony.attestation import RecordType

_HEADER = struct.Struct("<IQQHHI")
BODY_MAX = 1_048_576
EPOCH_BYTES = 16
GENESIS_PREV_HASH = bytes(32)


class CanonicalError(ValueError):
    """Canonical bytes that do not parse as a record."""


@dataclass(frozen=True)
class Canonical:
    record_type: int
    stream_seq: int
    attestation_id: int
    body: bytes


def chain_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    assert len(prev_hash) == 32, "a chain hash is 32 bytes"
    return hashlib.sha256(prev_hash + canonical).digest()


def parse(data: bytes) -> Canonical:
    if len(data) < _HEADER.size:
        raise CanonicalError(f"{len(data)} bytes is shorter than the {_HEADER.size}-byte header")
    length, seq, attestation_id, record_type, flags, reserved = _HEADER.unpack_from(data, 0)
    if length > BODY_MAX or _HEADER.size + length != len(data):
        raise CanonicalError(f"body length {length} does not match the {len(data) - _HEADER.size} bytes present")
    if flags or reserved:
        raise CanonicalError("flags or reserved bytes are not zero")
    if not 1 <= record_type <= max(RecordType) or (record_type == RecordType.GENESIS) != (seq == 1):
        raise CanonicalError(f"record type {record_type} is not valid at seq {seq}")
    return Canonical(record_type, seq, attestation_id, bytes(data[_HEADER.size:]))


def build(record_type: int, stream_seq: int, attestation_id: int, body: bytes) -> bytes:
    """Canonical bytes of a record (tests and tools; the journal writes the real ones)."""
    return _HEADER.pack(len(body), stream_seq, attestation_id, record_type, 0, 0) + body


def genesis_body(epoch: bytes, stream_id: int, node_id: str) -> bytes:
    """The journal's GENESIS body (FORMAT.md F11): epoch, stream id u16, node id length u8, node id."""
    node = node_id.encode("ascii")
    assert len(epoch) == EPOCH_BYTES
    return epoch + struct.pack("<HB", stream_id, len(node)) + node


_UNIX_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _at(us: int) -> dt.datetime:
    try:
        return _UNIX_EPOCH + dt.timedelta(microseconds=us)
    except OverflowError:
        raise CanonicalError(f"record time {us} us is out of range") from None


def columns(parsed: Canonical) -> dict[str, Any]:
    """The query columns the forwarder decodes from a record, by this record's bytes.

    Empty strings and empty hashes are compared as NULL, so a decoder that stores
    "" as NULL (or the other way round) is not reported as tampering.
    """
    cols: dict[str, Any] = {"record_type": parsed.record_type, "stream_seq": parsed.stream_seq,
                            "attestation_id": parsed.attestation_id}
    if parsed.record_type in (RecordType.GENESIS, RecordType.CHECKPOINT):
        return cols  # no time in the hashed bytes (GENESIS: the segment's creation; CHECKPOINT: when shipped)
    body = attestation.decode(parsed.record_type, parsed.body)
    if isinstance(body, attestation.IngressBody):
        cols.update(recorded_at=_at(body.received_at_us), participant_id=body.participant_id or None,
                    method=body.method or None, route=body.route or None, executes=body.executes,
                    body_sha256=body.body_sha256 or None, idempotency_key_hash=body.idempotency_key_hash or None)
    elif isinstance(body, attestation.OutcomeBody):
        cols.update(recorded_at=_at(body.completed_at_us), status=body.status, disposition=body.disposition,
                    latency_us=body.latency_us)
    elif isinstance(body, attestation.HeartbeatBody):
        cols.update(recorded_at=_at(body.at_us))
    elif isinstance(body, attestation.DroppedBody):
        cols.update(recorded_at=_at(body.window_end_us))
    return cols


def epoch_of(parsed: Canonical) -> bytes | None:
    """The stream epoch a GENESIS record carries."""
    if parsed.record_type != RecordType.GENESIS:
        return None
    try:
        return journal.parse_genesis(parsed.body).epoch
    except ValueError:
        return None
