"""Minor units and the decimal strings rails use for amounts.

Intents carry `amount_minor` (an integer of the currency's minor unit). Mobile
money and ISO 20022 rails carry major units as decimals ("12.34"; "1500" for a
currency without minor units). The exponent is ISO 4217's, read from the
`iso4217` package (table A.1 as the maintenance agency publishes it; the
payments service takes its list of accepted currencies from the same package,
payments_service/currencies.py). One table, one place: reconciliation passes
EXPONENTS to PostgreSQL as a parameter instead of keeping a copy in SQL.

A code the table does not list, or lists without minor units (XXX, XTS, the
precious metals, XDR, ...), has no exponent: `exponent` raises ValueError, so
an amount in it can be neither sent nor read.
"""

from __future__ import annotations

from decimal import Decimal

import iso4217

# ISO 4217 code -> minor-unit exponent, for every code of table A.1 that has one.
EXPONENTS: dict[str, int] = {c.code: c.exponent for c in iso4217.Currency if c.exponent is not None}
assert len(EXPONENTS) > 100 and EXPONENTS["KES"] == 2 and EXPONENTS["UGX"] == 0, "the ISO 4217 table did not load"


def exponent(currency: str) -> int:
    """ISO 4217 minor-unit exponent of `currency` (ValueError if it has none)."""
    try:
        return EXPONENTS[currency]
    except KeyError:
        raise ValueError(f"{currency[:8]!r} is not an ISO 4217 currency with minor units") from None


def to_major(amount_minor: int, currency: str) -> Decimal:
    """12345 KES -> Decimal('123.45'); exact."""
    assert amount_minor >= 0
    return Decimal(amount_minor).scaleb(-exponent(currency))


def major_text(amount_minor: int, currency: str) -> str:
    """The decimal string of major units, with exactly the currency's number of decimals."""
    places = exponent(currency)
    return f"{to_major(amount_minor, currency):.{places}f}"


def to_minor(amount: Decimal | str | int, currency: str) -> int:
    """Decimal('123.45') KES -> 12345; raises ValueError if it has more decimals than the currency."""
    value = Decimal(str(amount)) if not isinstance(amount, Decimal) else amount
    if not value.is_finite():
        raise ValueError("amount is not a finite number")
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"amount {amount} has more decimals than {currency} allows")
    return int(scaled)
