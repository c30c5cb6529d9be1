"""The pure rules that decide what may be shipped (forwarder/rows.py).

Method: build chains in memory, break them in each way invariant 4 names
(modify, delete, reorder, insert) and check that the first bad seq is reported.
"""

from __future__ import annotations

import datetime as dt

from forwarder import rows
from symphony import attestation
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


def test_a_batch_that_does_not_continue_the_checkpoint_is_a_chain_break() -> None:
    """Goal: continuity with the last checkpoint (invariant 4) is checked on its
    own, not only through the recomputed hashes. Method: a sound, self-consistent
    stretch of chain offered after a checkpoint whose hash is not its
    predecessor's (a rewritten history, or a journal that is not this stream's),
    with and without recomputing hashes (the C reader may have verified them)."""
    chain = fake.stream("n", 0, 10)
    assert rows.first_break(chain[4:], 4, chain[3].chain_hash) == (6, None)  # the sound case passes
    for recompute in (True, False):
        sound, brk = rows.first_break(chain[4:], 4, b"\x01" * 32, recompute=recompute)
        assert sound == 0
        assert brk is not None and (brk.kind, brk.seq) == ("CHAIN_BREAK", 5)
        assert brk.expected == (b"\x01" * 32).hex()


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


def test_fast_path_rows_equal_the_reference_rows() -> None:
    """to_rows decodes INGRESS and OUTCOME inline; it must agree with to_row."""
    chain = fake.stream("n", 1, 5)
    outcome = attestation.encode(attestation.OutcomeBody(
        version=1, ingress_seq=2, completed_at_us=1_760_000_000_000_001, status=201, disposition="executed",
        latency_us=1500, reason=""))
    heartbeat = attestation.encode(attestation.HeartbeatBody(version=1, at_us=1_760_000_000_000_002))
    chain.append(fake.make(6, RecordType.OUTCOME, 6, outcome, chain[-1].chain_hash))
    chain.append(fake.make(7, RecordType.HEARTBEAT, 0, heartbeat, chain[-1].chain_hash))
    produced, error = rows.to_rows("n", 1, chain, 1_760_000_000_000_000)
    assert error is None
    assert produced == [rows.to_row("n", 1, record, 1_760_000_000_000_000) for record in chain]


def test_wrong_hash_length_is_refused_with_its_seq() -> None:
    chain = fake.stream("n", 0, 3)
    bad = attestation.encode(attestation.IngressBody(
        version=1, received_at_us=1, participant_id="p", auth_method="jwt", key_id="k", policy_version=1,
        method="POST", route="/r", executes=True, body_sha256=b"short", idempotency_key_hash=b"",
        traceparent="", verdict="accepted"))
    record = fake.make(4, RecordType.INGRESS, 4, bad, chain[-1].chain_hash)
    produced, error = rows.to_rows("n", 0, [*chain, record])
    assert len(produced) == 3 and error is not None and error.seq == 4
