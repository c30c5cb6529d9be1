"""`audit verify-chain` catches every kind of tampering with its first bad seq.

Method: build a correctly chained stream in PostgreSQL (and, for the property
test, in memory), tamper with it the way an operator with database access could
(append-only trigger bypassed), and check the reported first bad seq and reason.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings as hsettings, strategies as st

from repair import canonical, chain, verify
from symphony import archive_signature, attestation
from symphony.attestation import RecordType
from tests.conftest import symphony_cli
from tests.repair.helpers import Stream, ago, executed_payment, tamper


async def _stream_of_ten(db: asyncpg.Connection) -> Stream:
    stream = Stream(db)
    await stream.genesis()
    for _ in range(3):
        await executed_payment(stream)  # seqs 2..7 (INGRESS, OUTCOME)
    for _ in range(3):
        await stream.heartbeat(ago(seconds=30))  # seqs 8..10
    assert stream.seq == 10
    return stream


async def _verify(db: asyncpg.Connection) -> verify.StreamReport:
    return await verify.verify_stream(db, "node-a", 0)


async def test_intact_stream_verifies(db: asyncpg.Connection) -> None:
    await _stream_of_ten(db)
    report = await _verify(db)
    assert report.broken is None and report.records_verified == 10 and report.last_verified_seq == 10


async def test_modified_canonical_bytes(db: asyncpg.Connection) -> None:
    await _stream_of_ten(db)
    await tamper(db, "UPDATE ingress_attestations SET canonical = canonical || '\\x00'::bytea WHERE stream_seq = 4")
    report = await _verify(db)
    assert report.broken is not None and (report.broken.seq, report.broken.reason) == (4, "modified")


async def test_modified_record_rehashed_from_there_on_is_caught_at_the_checkpoint_or_link(
        db: asyncpg.Connection) -> None:
    """Rewriting a body and recomputing its chain hash breaks the next link."""
    await _stream_of_ten(db)
    row = await db.fetchrow("SELECT canonical FROM ingress_attestations WHERE stream_seq = 2")
    parsed = canonical.parse(bytes(row["canonical"]))
    body = attestation.decode(parsed.record_type, parsed.body)
    forged_body = attestation.IngressBody(*[
        "bank-evil" if name == "participant_id" else getattr(body, name) for name in body.__struct_fields__])
    forged = canonical.build(parsed.record_type, 2, parsed.attestation_id, attestation.encode(forged_body))
    prev = await db.fetchval("SELECT chain_hash FROM ingress_attestations WHERE stream_seq = 1")
    await tamper(db, "UPDATE ingress_attestations SET canonical = $1, chain_hash = $2, participant_id = 'bank-evil' "
                     "WHERE stream_seq = 2", forged, canonical.chain_hash(bytes(prev), forged))
    report = await _verify(db)
    assert report.broken is not None and (report.broken.seq, report.broken.reason) == (3, "modified")


async def test_modified_decoded_column(db: asyncpg.Connection) -> None:
    await _stream_of_ten(db)
    await tamper(db, "UPDATE ingress_attestations SET participant_id = 'bank-b' WHERE stream_seq = 5")
    report = await _verify(db)
    assert report.broken is not None and (report.broken.seq, report.broken.reason) == (5, "column_mismatch")
    assert "participant_id" in report.broken.detail


async def test_modified_disposition_column(db: asyncpg.Connection) -> None:
    await _stream_of_ten(db)
    await tamper(db, "UPDATE ingress_attestations SET disposition = 'rejected' WHERE stream_seq = 3")
    report = await _verify(db)
    assert report.broken is not None and (report.broken.seq, report.broken.reason) == (3, "column_mismatch")


async def test_deleted_row(db: asyncpg.Connection) -> None:
    await _stream_of_ten(db)
    await tamper(db, "DELETE FROM ingress_attestations WHERE stream_seq = 6")
    report = await _verify(db)
    assert report.broken is not None and (report.broken.seq, report.broken.reason) == (6, "deleted")


async def test_deleted_first_row(db: asyncpg.Connection) -> None:
    await _stream_of_ten(db)
    await tamper(db, "DELETE FROM ingress_attestations WHERE stream_seq = 1")
    report = await _verify(db)
    assert report.broken is not None and (report.broken.seq, report.broken.reason) == (1, "deleted")


async def test_inserted_row_with_a_taken_seq(db: asyncpg.Connection) -> None:
    await _stream_of_ten(db)
    await tamper(db, """INSERT INTO ingress_attestations
                        SELECT node_id, stream_id, stream_seq, record_type, attestation_id,
                               recorded_at + interval '1 second', participant_id, method, route, executes, status,
                               disposition, latency_us, idempotency_key_hash, body_sha256, chain_hash, canonical,
                               shipped_at
                        FROM ingress_attestations WHERE stream_seq = 7""")
    report = await _verify(db)
    assert report.broken is not None and (report.broken.seq, report.broken.reason) == (7, "inserted")


async def test_inserted_row_in_the_middle_renumbering_the_rest(db: asyncpg.Connection) -> None:
    await _stream_of_ten(db)
    # Shift seqs 5.. up by one and put a forged record at 5: bytes no longer match seqs.
    await tamper(db, "UPDATE ingress_attestations SET stream_seq = stream_seq + 1 WHERE stream_seq >= 5")
    forged = canonical.build(int(RecordType.HEARTBEAT), 5, 0, attestation.encode(attestation.HeartbeatBody(1, 1)))
    await tamper(db, """INSERT INTO ingress_attestations (node_id, stream_id, stream_seq, record_type, attestation_id,
                                                         recorded_at, chain_hash, canonical)
                        VALUES ('node-a', 0, 5, 4, 0, now(), $1, $2)""", bytes(32), forged)
    report = await _verify(db)
    assert report.broken is not None and report.broken.seq == 5


async def test_appended_forged_row_past_the_checkpoint(db: asyncpg.Connection) -> None:
    """A forger who extends the chain correctly is caught by the checkpoint anchor."""
    stream = await _stream_of_ten(db)
    stream.checkpoint = False
    await stream.heartbeat(ago(seconds=1))
    report = await _verify(db)
    assert report.broken is not None and (report.broken.seq, report.broken.reason) == (11, "inserted")


async def test_reordered_rows(db: asyncpg.Connection) -> None:
    await _stream_of_ten(db)
    await tamper(db, """UPDATE ingress_attestations SET stream_seq = CASE stream_seq WHEN 8 THEN 9 ELSE 8 END
                        WHERE stream_seq IN (8, 9)""")
    report = await _verify(db)
    assert report.broken is not None and (report.broken.seq, report.broken.reason) == (8, "reordered")


async def test_cut_tail(db: asyncpg.Connection) -> None:
    await _stream_of_ten(db)
    await tamper(db, "DELETE FROM ingress_attestations WHERE stream_seq >= 9")
    report = await _verify(db)
    assert report.broken is not None and (report.broken.seq, report.broken.reason) == (9, "truncated")


async def test_checkpoint_hash_mismatch(db: asyncpg.Connection) -> None:
    await _stream_of_ten(db)
    await db.execute("UPDATE journal_checkpoints SET last_hash = $1", bytes(32))
    report = await _verify(db)
    assert report.broken is not None and (report.broken.seq, report.broken.reason) == (10, "checkpoint_mismatch")


async def test_archived_prefix_is_not_loss(db: asyncpg.Connection) -> None:
    """A prefix that left PostgreSQL in an archive signed by the pinned key is not
    loss, and the first row left must chain to the archive's last hash."""
    await _stream_of_ten(db)
    last_hash = bytes(await db.fetchval("SELECT chain_hash FROM ingress_attestations WHERE stream_seq = 3"))
    await tamper(db, "DELETE FROM ingress_attestations WHERE stream_seq <= 3")
    key = Ed25519PrivateKey.generate()
    fields = archive_signature.ArchiveFields("p", "node-a", 0, 1, 3, last_hash, bytes(32))
    signature, key_id = archive_signature.sign(fields, key)
    await db.execute("""INSERT INTO attestation_archives (partition, node_id, stream_id, first_seq, last_seq, sha256,
                                                          signature, key_id, last_hash)
                        VALUES ('p', 'node-a', 0, 1, 3, $1, $2, $3, $4)""", bytes(32), signature, key_id, last_hash)
    report = await verify.verify_stream(db, "node-a", 0, archive_key=key.public_key())
    assert report.broken is None and report.anchored_at == 4 and report.records_verified == 7
    assert report.findings == []
    unpinned = await _verify(db)
    assert unpinned.broken is not None and unpinned.broken.reason == "deleted"
    assert [f.check for f in unpinned.findings] == ["archive_unverified"]


async def test_cli_reports_first_bad_seq_per_stream_and_exit_codes(db: asyncpg.Connection, database_url: str) -> None:
    await _stream_of_ten(db)
    other = Stream(db, stream=1)
    await other.genesis()
    await other.heartbeat()
    clean = symphony_cli("audit", "verify-chain", "--json", "--database-url", database_url)
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["records_verified"] == 12
    await tamper(db, "DELETE FROM ingress_attestations WHERE stream_id = 0 AND stream_seq = 4")
    broken = symphony_cli("audit", "verify-chain", "--json", "--database-url", database_url)
    assert broken.returncode == 1, broken.stderr
    streams = {s["stream_id"]: s for s in json.loads(broken.stdout)["streams"]}
    assert streams[0]["first_bad_seq"] == 4 and streams[0]["reason"] == "deleted"
    assert streams[1]["status"] == "OK"
    one = symphony_cli("audit", "verify-chain", "--node", "node-a", "--stream", "1", "--database-url", database_url)
    assert one.returncode == 0 and "node-a/1: OK" in one.stdout
    missing = symphony_cli("audit", "verify-chain", "--node", "nope", "--database-url", database_url)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


# -- property: any single tampering of an in-memory stream is caught at its seq --------


def _rows(count: int) -> list[dict[str, Any]]:
    rows, prev = [], canonical.GENESIS_PREV_HASH
    for seq in range(1, count + 1):
        kind = RecordType.GENESIS if seq == 1 else RecordType.HEARTBEAT
        body = (canonical.genesis_body(bytes(16), 0, "n") if seq == 1
                else attestation.encode(attestation.HeartbeatBody(1, 1_700_000_000_000_000 + seq)))
        data = canonical.build(int(kind), seq, 0, body)
        prev = canonical.chain_hash(prev, data)
        rows.append({"stream_seq": seq, "record_type": int(kind), "attestation_id": 0, "chain_hash": prev,
                     "canonical": data})
    return rows


def _run(rows: list[dict[str, Any]], head: tuple[int, bytes]) -> chain.Break | None:
    verifier = chain.StreamVerifier("n", 0)
    for row in rows:
        if verifier.feed(row):
            break
    return verifier.finish(chain.Checkpoint(head[0], head[1]))


@hsettings(max_examples=150, deadline=None)
@given(count=st.integers(2, 30), data=st.data())
def test_any_single_tamper_is_caught_at_or_before_its_seq(count: int, data: st.DataObject) -> None:
    rows = _rows(count)
    head = (count, rows[-1]["chain_hash"])
    assert _run(rows, head) is None
    index = data.draw(st.integers(0, count - 1))
    action = data.draw(st.sampled_from(["flip_byte", "delete", "duplicate", "swap", "hash", "truncate"]))
    tampered = [dict(r) for r in rows]
    if action == "flip_byte":
        raw = bytearray(tampered[index]["canonical"])
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] ^= data.draw(st.integers(1, 255))
        tampered[index]["canonical"] = bytes(raw)
    elif action == "delete":
        del tampered[index]
    elif action == "duplicate":
        tampered.insert(index, dict(tampered[index]))
    elif action == "swap":
        other = data.draw(st.integers(0, count - 1).filter(lambda i: i != index))
        a, b = sorted((index, other))
        tampered[a]["canonical"], tampered[b]["canonical"] = tampered[b]["canonical"], tampered[a]["canonical"]
        tampered[a]["chain_hash"], tampered[b]["chain_hash"] = tampered[b]["chain_hash"], tampered[a]["chain_hash"]
        index = a
    elif action == "hash":
        tampered[index]["chain_hash"] = bytes(32)
    else:
        keep = max(index, 1)  # cut the tail after `keep` records
        if keep == count:
            return
        tampered, index = tampered[:keep], keep
    broken = _run(tampered, head)
    assert broken is not None, action
    assert broken.seq <= index + 1, (action, index, broken)
