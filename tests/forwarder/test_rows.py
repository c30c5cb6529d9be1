"""The pure rules that decide what may be shipped (forwarder/rows.py).

Method: build chains in memory, break them in each way invariant 4 names
(modify, delete, reorder, insert) and check that the first bad seq is reported.
"""

from __future__ import annotations

import datetime as dt

from forwarder import rows
from symphony.attestation import RecordType
from tests.forwarder import records as fake


def test_sound_chain_passes_whole() -> None:
    chain = fake.stream("n", 0, 10)
    assert rows.first_break(chain, 0, rows.GENESIS_PREV_HASH) == (10, None)
    assert rows.first_break(chain[4:], 4, chain[3].chain_hash) == (6, None)


def test_modified_record_is_reported_at_its_seq() -> None:
    chain = fake.stream("n", 0, 10)
    chain[6] = fake.altered(chain[6], fake.ingress_body(999))
    sound, brk = rows.first_break(chain, 0, rows.GENESIS_PREV_HASH)
    assert sound == 6
    assert brk is not None and brk.kind == "CHAIN_BREAK" and brk.seq == 7


def test_deleted_and_reordered_records_are_gaps() -> None:
    chain = fake.stream("n", 0, 10)
    sound, brk = rows.first_break(chain[:4] + chain[5:], 0, rows.GENESIS_PREV_HASH)
    assert (sound, brk.kind, brk.seq) == (4, "SEQ_GAP", 5)  # type: ignore[union-attr]
    swapped = chain[:3] + [chain[4], chain[3]] + chain[5:]
    sound, brk = rows.first_break(swapped, 0, rows.GENESIS_PREV_HASH)
    assert (sound, brk.kind) == (3, "SEQ_GAP")  # type: ignore[union-attr]


def test_inserted_record_breaks_the_chain() -> None:
    chain = fake.stream("n", 0, 5)
    forged = fake.make(3, RecordType.INGRESS, 7, fake.ingress_body(7), chain[1].chain_hash)
    sound, brk = rows.first_break(chain[:2] + [forged] + chain[2:], 0, rows.GENESIS_PREV_HASH)
    # The forgery chains to seq 2, so it passes; the genuine record after it
    # cannot follow it and the stream stops there.
    assert sound == 3
    assert brk is not None and brk.kind == "SEQ_GAP" and brk.seq == 4


def test_first_contact_needs_genesis_at_seq_one() -> None:
    chain = fake.stream("n", 0, 3)
    assert rows.genesis_break(chain[0]) is None
    brk = rows.genesis_break(chain[1])
    assert brk is not None and brk.kind == "SEQ_GAP" and brk.expected == "seq 1"
    not_genesis = fake.make(1, RecordType.INGRESS, 1, fake.ingress_body(1), rows.GENESIS_PREV_HASH)
    brk = rows.genesis_break(not_genesis)
    assert brk is not None and brk.kind == "CHAIN_BREAK"


def test_rows_carry_decoded_columns() -> None:
    at_us = 1_760_000_000_123_456
    chain = fake.stream("node-x", 3, 2, at_us=at_us)
    row = rows.to_row("node-x", 3, chain[1])
    assert len(row) == len(rows.COLUMNS)
    values = dict(zip(rows.COLUMNS, row, strict=True))
    assert values["stream_seq"] == 2 and values["record_type"] == RecordType.INGRESS
    assert values["recorded_at"] == dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=at_us)
    assert values["route"] == "/v1/payments" and values["executes"] is True
    assert values["canonical"] == chain[1].canonical and values["chain_hash"] == chain[1].chain_hash


def test_undecodable_body_stops_the_rows() -> None:
    chain = fake.stream("n", 0, 4)
    broken = fake.make(3, RecordType.INGRESS, 3, b"\xc1garbage", chain[1].chain_hash)
    produced, error = rows.to_rows("n", 0, [chain[0], chain[1], broken])
    assert len(produced) == 2
    assert error is not None and error.seq == 3
