"""Minor units and the decimal strings rails use for amounts.

Intents carry `amount_minor` (an integer of the currency's minor unit). Mobile
money and ISO 20022 rails carry major units as decimals ("12.34"; "1500" for a
currency without minor units). The exponent is ISO 4217's: 0 for the currencies
listed in ZERO_DECIMAL, 3 for THREE_DECIMAL, 2 otherwise.
"""

from __future__ import annotations

from decimal import Decimal

ZERO_DECIMAL = frozenset({"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
                          "VND", "VUV", "XAF", "XOF", "XPF"})
THREE_DECIMAL = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})


def exponent(currency: str) -> int:
    """ISO 4217 minor-unit exponent of `currency`."""
    assert len(currency) == 3, currency
    if currency in ZERO_DECIMAL:
        return 0
    return 3 if currency in THREE_DECIMAL else 2


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
