"""Pure helpers: journal records to table rows, and the chain checks of a batch.

Nothing here touches the database or the file system, so the rules that decide
what may be shipped are tested on their own (tests/forwarder/test_rows.py).

A record is duck-typed on the journal's `Record`: seq, type, attestation_id,
body, chain_hash, prev_hash and canonical (the bytes the chain hash covers,
`chain_hash = sha256(prev_hash + canonical)`, invariant 4).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

import journal
from symphony import attestation
from symphony.attestation import RecordType

HASH_BYTES = 32
EPOCH_BYTES = 16
# The predecessor of a stream's GENESIS record: the chain starts from all zeroes.
GENESIS_PREV_HASH = bytes(HASH_BYTES)
BIGINT_MAX = 2**63 - 1
_UNIX_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

_INGRESS_DECODER = msgspec.msgpack.Decoder(attestation.IngressBody)
_OUTCOME_DECODER = msgspec.msgpack.Decoder(attestation.OutcomeBody)

# Column order of the binary COPY into ingress_attestations (shipped_at defaults to now()).
COLUMNS = (
    "node_id", "stream_id", "stream_seq", "record_type", "attestation_id", "recorded_at",
    "participant_id", "method", "route", "executes", "status", "disposition", "latency_us",
    "idempotency_key_hash", "body_sha256", "chain_hash", "canonical",
)


class RecordLike(Protocol):
    """The fields of `journal.Record` the forwarder reads (read-only)."""

    @property
    def seq(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def attestation_id(self) -> int: ...
    @property
    def body(self) -> bytes: ...
    @property
    def chain_hash(self) -> bytes: ...
    @property
    def prev_hash(self) -> bytes: ...
    @property
    def canonical(self) -> bytes: ...


@dataclass(frozen=True)
class Break:
    """Why a stream stops here: the evidence of a CHAIN_BREAK or SEQ_GAP incident.

    seq is the first sequence number that could not be shipped; expected and
    found are what the check wanted and what the journal (or database) held,
    as text (hex for hashes) so the incident is readable as it is.
    """

    kind: str  # "CHAIN_BREAK" or "SEQ_GAP"
    seq: int
    expected: str
    found: str
    detail: str

    def subject(self, node_id: str, stream_id: int) -> str:
        return (f"{self.kind} on stream {node_id}/{stream_id} at seq {self.seq}: "
                f"{self.detail} (expected {self.expected}, found {self.found})")

    def evidence(self, node_id: str, stream_id: int) -> dict[str, Any]:
        return {"node_id": node_id, "stream_id": stream_id, "seq": self.seq,
                "expected": self.expected, "found": self.found, "detail": self.detail}

    def dedup_key(self, node_id: str, stream_id: int) -> str:
        return f"{node_id}/{stream_id}/{self.seq}"


class UndecodableRecord(Exception):
    """A record whose chain is intact but whose body this forwarder cannot read."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


def chain_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(prev_hash + canonical).digest()


def first_break(records: Sequence[RecordLike], prev_seq: int, prev_hash: bytes,
                *, recompute: bool = True) -> tuple[int, Break | None]:
    """Check that `records` continue the chain whose head is (prev_seq, prev_hash).

    Returns (n, break): the first n records are sound; `break` says why record
    n is not (None when all are). Each record must carry seq = previous + 1,
    prev_hash = the previous chain hash, and chain_hash = sha256(prev_hash ||
    canonical) recomputed here, so a record altered in the journal, even with
    a CRC made to match, stops the stream at its own seq. `recompute=False`
    skips the SHA-256 for records from a source that has just verified it
    (the journal Reader checks every chain hash in C); the links between
    records and to the head are checked either way.
    """
    assert prev_seq >= 0
    assert len(prev_hash) == HASH_BYTES
    sha256 = hashlib.sha256
    expected_seq = prev_seq + 1
    expected_prev = prev_hash
    for index, record in enumerate(records):
        if record.seq != expected_seq:
            return index, Break("SEQ_GAP", expected_seq, f"seq {expected_seq}", f"seq {record.seq}",
                                "records are not consecutive")
        if record.prev_hash != expected_prev:
            return index, Break("CHAIN_BREAK", record.seq, expected_prev.hex(), record.prev_hash.hex(),
                                "previous hash does not match the chain head")
        if recompute and (computed := sha256(record.prev_hash + record.canonical).digest()) != record.chain_hash:
            return index, Break("CHAIN_BREAK", record.seq, computed.hex(), record.chain_hash.hex(),
                                "chain hash does not match the record's bytes")
        expected_seq += 1
        expected_prev = record.chain_hash
    return len(records), None


def genesis_break(record: RecordLike) -> Break | None:
    """First contact with a stream: it must open with seq 1, a GENESIS record
    chained from the all-zero hash (invariant 3)."""
    if record.seq != 1:
        return Break("SEQ_GAP", record.seq, "seq 1", f"seq {record.seq}",
                     "a stream with no checkpoint must start at seq 1")
    if record.type != RecordType.GENESIS:
        return Break("CHAIN_BREAK", 1, "GENESIS", _type_name(record.type),
                     "the first record of a stream must be GENESIS")
    if record.prev_hash != GENESIS_PREV_HASH:
        return Break("CHAIN_BREAK", 1, GENESIS_PREV_HASH.hex(), record.prev_hash.hex(),
                     "GENESIS must chain from the all-zero hash")
    return None


def genesis_epoch(record: RecordLike) -> bytes:
    """The random epoch a GENESIS record carries (16 bytes)."""
    assert record.type == RecordType.GENESIS
    return _genesis(record)


def _genesis(record: RecordLike) -> bytes:
    """The epoch of a GENESIS record, whose body is the journal's own layout
    (journal FORMAT.md F11) and carries no time."""
    try:
        return journal.parse_genesis(record.body).epoch
    except ValueError as exc:
        raise UndecodableRecord(record.seq, str(exc)) from None


def _checkpoint(record: RecordLike) -> None:
    """A CHECKPOINT body must at least be one (F17); whether its note is true
    is forwarder/tree.py's question, and a lying one is still shipped."""
    try:
        journal.parse_checkpoint(record.body)
    except ValueError as exc:
        raise UndecodableRecord(record.seq, str(exc)) from None


def to_row(node_id: str, stream_id: int, record: RecordLike, genesis_at_us: int = 0) -> tuple[Any, ...]:
    """One ingress_attestations row (COLUMNS order) from one journal record.

    genesis_at_us is the GENESIS record's time when its body has none (the
    journal's layout): the creation time of the stream's first segment. A
    CHECKPOINT body carries no time either: `to_rows` gives it the time of the
    record before it in the batch, or the time it is read when it opens one.
    """
    if record.type == RecordType.GENESIS:
        _genesis(record)
        return _row(node_id, stream_id, record, genesis_at_us,
                    None, None, None, None, None, None, None, None, None)
    if record.type == RecordType.CHECKPOINT:
        _checkpoint(record)
        return _row(node_id, stream_id, record, genesis_at_us,
                    None, None, None, None, None, None, None, None, None)
    body = _decode(record)
    if isinstance(body, attestation.IngressBody) and (
            len(body.body_sha256) != HASH_BYTES or len(body.idempotency_key_hash) not in (0, HASH_BYTES)):
        raise UndecodableRecord(record.seq, "INGRESS hashes must be 32 bytes (idempotency key hash may be empty)")
    participant = method = route = executes = status = disposition = latency = None
    key_hash = body_hash = None
    if isinstance(body, attestation.IngressBody):
        at_us = body.received_at_us
        participant, method, route, executes = body.participant_id, body.method, body.route, body.executes
        key_hash = body.idempotency_key_hash or None
        body_hash = body.body_sha256
    elif isinstance(body, attestation.OutcomeBody):
        at_us = body.completed_at_us
        status, disposition, latency = body.status, body.disposition, body.latency_us
    elif isinstance(body, attestation.HeartbeatBody):
        at_us = body.at_us
    else:
        assert isinstance(body, attestation.DroppedBody)
        at_us = body.window_end_us
    return _row(node_id, stream_id, record, at_us, participant, method, route, executes, status,
                disposition, latency, key_hash, body_hash)


def _row(node_id: str, stream_id: int, record: RecordLike, at_us: int, *columns: Any) -> tuple[Any, ...]:
    if not 0 <= record.attestation_id <= BIGINT_MAX:
        raise UndecodableRecord(record.seq, f"attestation id {record.attestation_id} does not fit bigint")
    try:
        at = _UNIX_EPOCH + dt.timedelta(microseconds=at_us)
    except OverflowError:
        raise UndecodableRecord(record.seq, f"record time {at_us} us is out of range") from None
    return (node_id, stream_id, record.seq, record.type, record.attestation_id, at,
            *columns, record.chain_hash, record.canonical)


def to_rows(node_id: str, stream_id: int, records: Sequence[RecordLike],
            genesis_at_us: int = 0) -> tuple[list[tuple[Any, ...]], UndecodableRecord | None]:
    """Rows for the longest prefix of `records` that decodes, and why the next does not.

    The hot path: INGRESS and OUTCOME (all but a few records) are decoded
    inline with their own decoders; the other types go through `to_row`. Both
    paths produce the same row (tests/forwarder/test_rows.py checks it).
    """
    out: list[tuple[Any, ...]] = []
    append = out.append
    decode_ingress, decode_outcome = _INGRESS_DECODER.decode, _OUTCOME_DECODER.decode
    epoch, timedelta = _UNIX_EPOCH, dt.timedelta
    for record in records:
        kind = record.type
        try:
            if record.attestation_id > BIGINT_MAX:
                raise OverflowError("attestation id")
            if kind == RecordType.INGRESS:
                body = decode_ingress(record.body)
                key_hash = body.idempotency_key_hash
                if body.version != attestation.BODY_VERSION or len(body.body_sha256) != HASH_BYTES \
                        or len(key_hash) not in (0, HASH_BYTES):
                    raise msgspec.ValidationError("version or hash length")
                append((node_id, stream_id, record.seq, 2, record.attestation_id,
                        epoch + timedelta(microseconds=body.received_at_us), body.participant_id, body.method,
                        body.route, body.executes, None, None, None, key_hash or None, body.body_sha256,
                        record.chain_hash, record.canonical))
            elif kind == RecordType.OUTCOME:
                result = decode_outcome(record.body)
                if result.version != attestation.BODY_VERSION:
                    raise msgspec.ValidationError("version")
                append((node_id, stream_id, record.seq, 3, record.attestation_id,
                        epoch + timedelta(microseconds=result.completed_at_us), None, None, None, None,
                        result.status, result.disposition, result.latency_us, None, None,
                        record.chain_hash, record.canonical))
            elif kind == RecordType.CHECKPOINT:
                at_us = _previous_us(out) if out else int(time.time() * 1_000_000)
                append(to_row(node_id, stream_id, record, at_us))
            else:
                append(to_row(node_id, stream_id, record, genesis_at_us))
        except UndecodableRecord as exc:
            return out, exc
        except (msgspec.DecodeError, OverflowError):
            try:  # the slow path says exactly why
                to_row(node_id, stream_id, record, genesis_at_us)
            except UndecodableRecord as exc:
                return out, exc
            return out, UndecodableRecord(record.seq, "body fails the checks of its type")
    return out, None


def _previous_us(out: list[tuple[Any, ...]]) -> int:
    return (recorded_at(out[-1]) - _UNIX_EPOCH) // dt.timedelta(microseconds=1)


def recorded_at(row: tuple[Any, ...]) -> dt.datetime:
    value = row[5]
    assert isinstance(value, dt.datetime)
    return value


def _decode(record: RecordLike) -> attestation.Body:
    try:
        return attestation.decode(record.type, record.body)
    except attestation.BodyError as exc:
        raise UndecodableRecord(record.seq, str(exc)) from None


def _type_name(value: int) -> str:
    try:
        return RecordType(value).name
    except ValueError:
        return f"type {value}"
