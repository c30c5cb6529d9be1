"""The statement cell parsers the CSV readers share (migration 0156).

Goal: outbox_id_of_reference_v1 takes a reference only when it is a UUID,
and minor_units_of_v1 scales by the currency's exponent (0, 2 or 3), leaving
a fraction when the amount has more decimals than its currency. Method:
both functions called in a fresh migrated PostgreSQL 18.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg


async def test_reference_names_an_outbox_row_only_as_a_uuid(db: asyncpg.Connection) -> None:
    """A UUID (either case) gives the id; anything else gives NULL, never an error."""
    outbox_id = uuid.uuid4()
    for text, expected in ((str(outbox_id), outbox_id), (str(outbox_id).upper(), outbox_id),
                           ("INV-2026-0001", None), ("", None), (str(outbox_id)[:-1], None)):
        assert await db.fetchval("SELECT outbox_id_of_reference_v1($1)", text) == expected, text


async def test_amounts_in_minor_units_of_their_currency(db: asyncpg.Connection) -> None:
    """KES has 2 decimals, UGX none, KWD 3; a surplus decimal stays as a fraction."""
    for amount, currency, expected in (("12.34", "KES", Decimal("1234")), ("1500", "UGX", Decimal("1500")),
                                       ("1.234", "KWD", Decimal("1234")), ("0.015", "KES", Decimal("1.5"))):
        assert await db.fetchval("SELECT minor_units_of_v1($1, $2)", amount, currency) == expected, amount
