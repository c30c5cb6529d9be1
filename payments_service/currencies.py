"""Which currency codes the service accepts: the active ISO 4217 currencies.

The list is ISO 4217 table A.1 as shipped by the `iso4217` package (a small
public-domain package that re-releases the maintenance agency's XML whenever it
changes; its version carries the table's publication date, `iso4217.__published__`).
Upgrading that package is how the list is kept current.

Accepted: a code of table A.1 (current currencies; withdrawn codes are in table
A.3 and not shipped) that is a means of payment. Refused:

- codes that are not in the table at all (`ZZZ`, lower case, anything invented);
- funds (`IsFund="true"`: BOV, CHE, CHW, CLF, COU, MXV, USN, UYI): units of
  account, not something a rail moves;
- codes whose minor unit is "N.A.": the precious metals (XAU, XAG, XPD, XPT),
  bond-market units (XBA..XBD), SDR (XDR), XSU, XUA, the testing code XTS and
  "no currency" XXX. A payment's amount is in minor units, so a code without a
  defined minor unit cannot be paid;
- units of account of an institution that the table lists with minor units
  (`XAD`, the Arab Monetary Fund's accounting dinar): named in UNITS_OF_ACCOUNT.

Real currencies whose code starts with X (XAF, XOF, XCD, XPF, XCG) have minor
units and are accepted.
"""

from __future__ import annotations

import iso4217

PUBLISHED = iso4217.__published__.isoformat()
# Listed in table A.1 with minor units but issued by an institution for its own
# accounts, not a currency anyone pays in. Review when the table changes.
UNITS_OF_ACCOUNT = frozenset({"XAD"})


def _payable_codes() -> frozenset[str]:
    codes: set[str] = set()
    refused: set[str] = set()
    for entry in iso4217.raw_xml.findall("CcyTbl/CcyNtry"):
        code = entry.findtext("Ccy")
        name = entry.find("CcyNm")
        minor = entry.findtext("CcyMnrUnts")
        if code is None or name is None or minor is None:
            continue  # "no universal currency" rows (e.g. Antarctica)
        code = code.strip()
        if name.get("IsFund") == "true" or not minor.strip().isdigit() or code in UNITS_OF_ACCOUNT:
            refused.add(code)
        else:
            codes.add(code)
    # A code listed once as a fund and once as a currency would be ambiguous;
    # the table has none, and this keeps it so.
    assert not codes & refused, codes & refused
    assert "XXX" not in codes and "XTS" not in codes
    return frozenset(codes)


PAYABLE = _payable_codes()
assert len(PAYABLE) > 100, "the ISO 4217 table did not load"


def is_payable(code: str) -> bool:
    """True iff `code` is an active ISO 4217 currency with minor units and not a fund."""
    return code in PAYABLE
