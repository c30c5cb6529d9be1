"""The bytes a record's chain hash covers, as `repair` reads them from PostgreSQL.

`ingress_attestations.canonical` holds, per row, the exact bytes of one journal
record that its chain hash covers: `chain_hash = sha256(prev_hash || canonical)`,
and the first record of a stream chains from `GENESIS_PREV_HASH`.

The journal package owns the layout (journal/FORMAT.md). While it is written,
this module carries a provisional layout with the same fields, and prefers the
journal's own functions as soon as `journal` provides them (`chain_hash`,
`GENESIS_PREV_HASH`, `parse_canonical`), so audit and the journal can never
disagree once both exist. Provisional layout, little-endian:

| offset | size | field |
|---|---|---|
| 0 | 1 | record type (1..5) |
| 1 | 8 | stream seq (u64) |
| 9 | 8 | attestation id (u64) |
| 17 | 4 | body length N (u32) |
| 21 | N | body (msgspec MessagePack, `symphony.attestation`) |
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from symphony import attestation
from symphony.attestation import RecordType

_HEADER = struct.Struct("<BQQI")
_PROVISIONAL_GENESIS_PREV_HASH = bytes(32)


class CanonicalError(ValueError):
    """Canonical bytes that do not parse as a record."""


@dataclass(frozen=True)
class Canonical:
    record_type: int
    stream_seq: int
    attestation_id: int
    body: bytes


def _provisional_chain_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    assert len(prev_hash) == 32, "a chain hash is 32 bytes"
    return hashlib.sha256(prev_hash + canonical).digest()


def _provisional_parse(data: bytes) -> Canonical:
    if len(data) < _HEADER.size:
        raise CanonicalError(f"{len(data)} bytes is shorter than the {_HEADER.size}-byte header")
    record_type, seq, attestation_id, length = _HEADER.unpack_from(data, 0)
    if _HEADER.size + length != len(data):
        raise CanonicalError(f"body length {length} does not match {len(data) - _HEADER.size} bytes present")
    return Canonical(record_type, seq, attestation_id, bytes(data[_HEADER.size:]))


def _provisional_build(record_type: int, stream_seq: int, attestation_id: int, body: bytes) -> bytes:
    return _HEADER.pack(record_type, stream_seq, attestation_id, len(body)) + body


def _journal_functions() -> tuple[Any, Any, Any, Any]:
    try:
        import journal  # the journal's own layout, once it exists
    except ImportError:
        return None, None, None, None
    return (getattr(journal, "chain_hash", None), getattr(journal, "GENESIS_PREV_HASH", None),
            getattr(journal, "parse_canonical", None), getattr(journal, "build_canonical", None))


_j_chain, _j_genesis, _j_parse, _j_build = _journal_functions()
USES_JOURNAL_LAYOUT = _j_parse is not None and _j_build is not None
GENESIS_PREV_HASH: bytes = _j_genesis if isinstance(_j_genesis, bytes) else _PROVISIONAL_GENESIS_PREV_HASH
chain_hash = _j_chain if callable(_j_chain) else _provisional_chain_hash


def parse(data: bytes) -> Canonical:
    if USES_JOURNAL_LAYOUT:
        parsed = _j_parse(bytes(data))
        return Canonical(int(parsed.record_type), int(parsed.stream_seq), int(parsed.attestation_id), bytes(parsed.body))
    return _provisional_parse(data)


def build(record_type: int, stream_seq: int, attestation_id: int, body: bytes) -> bytes:
    """Canonical bytes of a record (tests and tools; the journal writes the real ones)."""
    if USES_JOURNAL_LAYOUT:
        return bytes(_j_build(record_type, stream_seq, attestation_id, body))
    return _provisional_build(record_type, stream_seq, attestation_id, body)


def _at(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / 1_000_000, tz=dt.timezone.utc)


def columns(parsed: Canonical) -> dict[str, Any]:
    """The query columns the forwarder decodes from a record, by this record's bytes.

    Empty strings and empty hashes are compared as NULL, so a decoder that stores
    "" as NULL (or the other way round) is not reported as tampering.
    """
    body = attestation.decode(parsed.record_type, parsed.body)
    cols: dict[str, Any] = {"record_type": parsed.record_type, "stream_seq": parsed.stream_seq,
                            "attestation_id": parsed.attestation_id}
    if isinstance(body, attestation.IngressBody):
        cols.update(recorded_at=_at(body.received_at_us), participant_id=body.participant_id or None,
                    method=body.method or None, route=body.route or None, executes=body.executes,
                    body_sha256=body.body_sha256 or None, idempotency_key_hash=body.idempotency_key_hash or None)
    elif isinstance(body, attestation.OutcomeBody):
        cols.update(recorded_at=_at(body.completed_at_us), status=body.status, disposition=body.disposition,
                    latency_us=body.latency_us)
    elif isinstance(body, attestation.HeartbeatBody):
        cols.update(recorded_at=_at(body.at_us))
    elif isinstance(body, attestation.GenesisBody):
        cols.update(recorded_at=_at(body.created_at_us))
    elif isinstance(body, attestation.DroppedBody):
        cols.update(recorded_at=_at(body.window_end_us))
    return cols


def epoch_of(parsed: Canonical) -> bytes | None:
    """The stream epoch a GENESIS record carries."""
    if parsed.record_type != RecordType.GENESIS:
        return None
    body = attestation.decode(parsed.record_type, parsed.body)
    assert isinstance(body, attestation.GenesisBody)
    return body.epoch
