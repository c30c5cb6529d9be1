"""The rail idempotency key (invariant 6) has one definition, in the core."""

from __future__ import annotations

import hashlib
import uuid

import relayer.adapters
from symphony import rail_key as core


def test_rail_key_is_hex_sha256_of_the_uuid_bytes() -> None:
    """Goal: the key is hex(SHA-256(outbox.id bytes)), not of its text form. Method: a fixed uuid
    against hashlib computed here."""
    outbox_id = uuid.UUID("0190a6f4-1234-7abc-8def-0123456789ab")
    expected = hashlib.sha256(bytes.fromhex("0190a6f412347abc8def0123456789ab")).hexdigest()
    assert core.rail_key(outbox_id) == expected
    assert core.rail_key(outbox_id) != hashlib.sha256(str(outbox_id).encode()).hexdigest()


def test_relayer_uses_the_core_definition() -> None:
    """Goal: the relayer sends the core's key, not a copy of the formula. Method: identity of the function."""
    assert relayer.adapters.rail_key is core.rail_key
