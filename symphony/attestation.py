"""Bodies of journal records: what an attestation says, and nothing more.

The journal's record header carries the type, stream seq, attestation id and the
chain hash; the body is one of these structs, MessagePack-encoded as an array
(compact, and field order is the wire order). The first field of every body is
its schema version so a reader can refuse what it does not understand. GENESIS
is the exception: the journal writes it itself in its own layout
(journal/FORMAT.md F11, `journal.parse_genesis`).

Invariant 8: attestations carry who, when, which route and a SHA-256 of the
request body, never the body, never personal data. Nothing here has room for a
payload, and `IngressBody` takes hashes, not the values they hash.
"""

from __future__ import annotations

import enum
import hashlib

import msgspec

# Record types are the journal's (its format and the schema share the values).
from journal import RecordType as RecordType  # re-exported: part of this module's API

BODY_VERSION = 1
MAX_TEXT = 256  # longest route/method/participant/key id we attest


class Disposition(enum.StrEnum):
    """How a request ended, as its OUTCOME record says."""

    EXECUTED = "executed"  # the service took it (an outbox row exists or will)
    REPLAYED = "replayed"  # idempotent replay of an earlier answer: no new execution
    REJECTED = "rejected"  # refused (identity, policy, validation): no execution
    UPSTREAM_ERROR = "upstream_error"  # the service failed or timed out
    CLIENT_GONE = "client_gone"  # the client disconnected before the answer


# Dispositions that explain an INGRESS without an execution (the "handled" term
# of the attestation gap). EXECUTED is not here: an execution is proven by its
# outbox row, not by the sidecar's word.
HANDLED_DISPOSITIONS = frozenset(
    {Disposition.REPLAYED, Disposition.REJECTED, Disposition.UPSTREAM_ERROR, Disposition.CLIENT_GONE}
)


class IngressBody(msgspec.Struct, array_like=True, frozen=True):
    """A request that reached the sidecar, written before it is forwarded."""

    version: int
    received_at_us: int  # wall clock, microseconds since the Unix epoch
    participant_id: str  # "" when identity could not be verified
    auth_method: str  # "jwt", "mtls" or "none"
    key_id: str  # JWT kid or SHA-256 fingerprint of the client certificate
    policy_version: int  # the token's pv claim (0 when none)
    method: str
    route: str  # the route template that matched, not the raw path
    executes: bool  # whether this route executes (moves money)
    body_sha256: bytes  # 32 bytes
    idempotency_key_hash: bytes  # SHA-256 of the Idempotency-Key header, or b""
    traceparent: str  # W3C trace context sent upstream
    verdict: str  # "accepted", or why identity failed ("unauthenticated", "forbidden", …)


class OutcomeBody(msgspec.Struct, array_like=True, frozen=True):
    """How the request with the same attestation id ended."""

    version: int
    ingress_seq: int  # seq of the INGRESS record this concludes (same stream)
    completed_at_us: int
    status: int  # HTTP status returned to the client (0 if none was sent)
    disposition: str  # a Disposition value
    latency_us: int  # from INGRESS durable to answer
    reason: str  # short machine-readable reason for rejections/errors, else ""


class HeartbeatBody(msgspec.Struct, array_like=True, frozen=True):
    """Written when a stream is idle, so silence is visible from outside."""

    version: int
    at_us: int


class DroppedBody(msgspec.Struct, array_like=True, frozen=True):
    """Requests refused before they could be attested (e.g. rate-limited floods),
    counted per reason over a window so nothing goes silently uncounted."""

    version: int
    window_start_us: int
    window_end_us: int
    counts: dict[str, int]


# The DROPPED reason under which a sidecar counts requests it refused because its
# wall clock stepped back beyond the HLC's bound (invariant 5: 503
# CLOCK_BACKWARDS). repair reads it back to open CLOCK_BACKWARDS incidents.
DROP_REASON_CLOCK_BACKWARDS = "clock_backwards"

Body = IngressBody | OutcomeBody | HeartbeatBody | DroppedBody

_BODY_TYPES: dict[RecordType, type[Body]] = {
    RecordType.INGRESS: IngressBody,
    RecordType.OUTCOME: OutcomeBody,
    RecordType.HEARTBEAT: HeartbeatBody,
    RecordType.DROPPED: DroppedBody,
}
_ENCODER = msgspec.msgpack.Encoder()
_DECODERS = {kind: msgspec.msgpack.Decoder(struct) for kind, struct in _BODY_TYPES.items()}


class BodyError(ValueError):
    """A record body that does not decode as its type says."""


def encode(body: Body) -> bytes:
    return _ENCODER.encode(body)


def decode(record_type: int, data: bytes) -> Body:
    """Decode a body by its record type; unknown types or versions are refused.

    GENESIS bodies are the journal's own layout: use `journal.parse_genesis`.
    """
    try:
        decoder = _DECODERS[RecordType(record_type)]
    except (ValueError, KeyError):
        raise BodyError(f"record type {record_type} has no MessagePack body") from None
    try:
        body = decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise BodyError(f"record type {RecordType(record_type).name}: {exc}") from None
    if body.version != BODY_VERSION:
        raise BodyError(f"record body version {body.version} is not supported (expected {BODY_VERSION})")
    return body


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
