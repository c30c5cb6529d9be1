"""The rail idempotency key of an outbox row: one definition (invariant 6).

    rail_key(outbox_id) = hex(SHA-256(the 16 bytes of the outbox row's uuid, RFC 9562 byte order))

i.e. `hashlib.sha256(outbox_id.bytes).hexdigest()` in Python and
`encode(sha256(uuid_send(id)), 'hex')` in PostgreSQL: 64 lower-case hex
characters. Never the client's Idempotency-Key, never a fresh UUID: every
attempt for a row, by any relayer, after any crash or redrive, sends the same
key. The relayer sends it; the chaos checks recompute it to match a rail's
executions to outbox rows.
"""

from __future__ import annotations

import hashlib
import uuid

RAIL_KEY_HEX_LENGTH = 64


def rail_key(outbox_id: uuid.UUID) -> str:
    """The rail idempotency key of the outbox row `outbox_id`."""
    assert isinstance(outbox_id, uuid.UUID), type(outbox_id)
    key = hashlib.sha256(outbox_id.bytes).hexdigest()
    assert len(key) == RAIL_KEY_HEX_LENGTH
    return key
