"""repair.canonical reads exactly what the journal writes (journal/FORMAT.md).

Method: write records with the real journal Writer, read them back with its
Reader, and check that repair's independent parser and chain step agree with
every field, hash and byte; and that rows the journal would produce verify.
"""

from __future__ import annotations

from pathlib import Path


import journal
from repair import canonical, chain
from symphony import attestation


def test_parser_and_chain_step_agree_with_the_journal(tmp_path: Path) -> None:
    writer = journal.Writer(tmp_path / "s", node_id="node-a", stream_id=3, durability="none")
    try:
        ingress = attestation.IngressBody(1, 1_750_000_000_000_001, "bank-a", "jwt", "k", 1, "POST",
                                          "/v1/payments", True, b"\x01" * 32, b"\x02" * 32, "", "accepted")
        writer.append(journal.RecordType.INGRESS, attestation.encode(ingress), 42)
        outcome = attestation.OutcomeBody(1, 2, 1_750_000_000_000_999, 201, "executed", 998, "")
        writer.append(journal.RecordType.OUTCOME, attestation.encode(outcome), 42)
    finally:
        writer.close()
    records = list(journal.Reader(tmp_path / "s").records(from_seq=1))
    assert [int(r.type) for r in records] == [1, 2, 3]
    verifier = chain.StreamVerifier("node-a", 3)
    for record in records:
        parsed = canonical.parse(record.canonical)
        assert (parsed.record_type, parsed.stream_seq, parsed.attestation_id) == (
            int(record.type), record.seq, record.attestation_id)
        assert parsed.body == record.body
        assert canonical.build(int(record.type), record.seq, record.attestation_id, record.body) == record.canonical
        assert canonical.chain_hash(record.prev_hash, record.canonical) == record.chain_hash
        row = {"stream_seq": record.seq, "chain_hash": record.chain_hash, "canonical": record.canonical,
               **{k: v for k, v in canonical.columns(parsed).items() if k != "stream_seq"}}
        assert verifier.feed(row) is None
    assert records[0].prev_hash == canonical.GENESIS_PREV_HASH
    assert canonical.epoch_of(canonical.parse(records[0].canonical)) is not None
    assert verifier.finish(chain.Checkpoint(3, records[-1].chain_hash)) is None
