"""Rail handles: what each rail is shown as the idempotency handle of an outbox row.

Invariant 6 says the rail idempotency key of an outbox row is

    rail_key(id) = hex(SHA-256(id.bytes))        64 lower-case hex characters

where `id.bytes` are the 16 bytes of the row's uuid in RFC 9562 byte order.
Some rails cannot take 64 hex characters: MTN MoMo wants a UUID in
`X-Reference-Id`, ISO 20022 caps identifiers at 35 characters (Max35Text),
Airtel's transaction id is a short string. For those rails the handle is a
deterministic function of the same digest, so every attempt for a row, by any
relayer, after any crash or redrive, presents the same handle, and the handle of
one row never equals the handle of another (the digest is collision resistant
and every derivation keeps at least 120 of its bits):

    rail_uuid(id)   the first 16 bytes of SHA-256(id.bytes), with the version
                    nibble (byte 6, high 4 bits) set to 4 and the variant bits
                    (byte 8, high 2 bits) set to 0b10: a well-formed RFC 9562
                    version-4 UUID (122 hash bits), accepted wherever "UUID v4"
                    is demanded. Python: uuid.UUID(bytes=digest[:16], version=4).
    rail_id35(id)   the first 35 characters of rail_key(id): an ISO 20022
                    Max35Text (140 bits), used as pacs.008 TxId and InstrId.
    rail_id30(id)   the first 30 characters of rail_key(id) (120 bits): the
                    Airtel Money transaction id.

The key itself is defined once, in symphony/rail_key.py; the derivations here
can be checked and re-implemented from this docstring alone. tests/relayer/test_rail_handles.py
pins the derivations to fixed vectors.
"""

from __future__ import annotations

import uuid

from symphony.rail_key import rail_key


def rail_digest(outbox_id: uuid.UUID) -> bytes:
    """SHA-256 of the outbox id's 16 bytes: the root of every rail handle."""
    return bytes.fromhex(rail_key(outbox_id))


# The invariant-6 key itself, under the name the derivations below read.
rail_key_hex = rail_key


def rail_uuid(outbox_id: uuid.UUID) -> uuid.UUID:
    """A version-4 UUID made of the digest's first 16 bytes (version and variant bits set)."""
    handle = uuid.UUID(bytes=rail_digest(outbox_id)[:16], version=4)
    assert handle.version == 4 and handle.variant == uuid.RFC_4122
    return handle


def rail_id35(outbox_id: uuid.UUID) -> str:
    """The first 35 hex characters of the rail key: an ISO 20022 Max35Text identifier."""
    handle = rail_key_hex(outbox_id)[:35]
    assert len(handle) == 35
    return handle


def rail_id30(outbox_id: uuid.UUID) -> str:
    """The first 30 hex characters of the rail key: the Airtel Money transaction id."""
    handle = rail_key_hex(outbox_id)[:30]
    assert len(handle) == 30
    return handle


# Which derivation each adapter kind presents to its rail as the idempotency handle.
HANDLE_OF_KIND = {
    "swiftpay": rail_key_hex,
    "mobimoney": rail_key_hex,
    "noop": rail_key_hex,
    "mtn_momo": lambda outbox_id: str(rail_uuid(outbox_id)),
    "airtel_money": rail_id30,
    "iso20022": rail_id35,
}


def rail_handle(kind: str, outbox_id: uuid.UUID) -> str:
    """The handle a rail of adapter `kind` sees for an outbox row (its simulator's store key)."""
    derive = HANDLE_OF_KIND[kind]
    return derive(outbox_id)
