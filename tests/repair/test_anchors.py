"""`audit verify-chain` against anchors the database owner cannot rewrite (issue 11, item 3).

Method: a real journal (the journal's own Writer) is shipped into a real
PostgreSQL 18 by a real `symphony forwarder` process, which also leaves its
shipped marker beside the journal; the NDJSON mirror is written from the same
journal records in the mirror's format. Then each attack of the issue is made
with the table owner's powers (append-only triggers bypassed) and
`symphony audit verify-chain` runs as a process: PostgreSQL alone says OK
(the attack works against a self-contained check), the outside anchor names
the finding and exits 1. A clean run first proves records were really compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import journal
from repair import canonical
from symphony import archive_signature, attestation, attestation_mirror, shipped_marker
from tests.conftest import symphony_cli
from tests.forwarder.conftest import NODE, ForwarderProcess, fill, open_writer, stream_dir, wait_for
from tests.repair.helpers import Stream, ago, tamper

RECORDS = 300


@dataclass
class Shipped:
    journal_dir: Path
    mirror_dir: Path
    head: int
    url: str


def _write_mirror(journal_dir: Path, mirror_dir: Path) -> None:
    lines = [attestation_mirror.line(NODE, 0, r.seq, r.type, r.attestation_id, r.chain_hash, r.body)
             for r in journal.Reader(stream_dir(journal_dir, 0)).records()]
    mirror_dir.mkdir(parents=True)
    (mirror_dir / attestation_mirror.file_name(NODE, 0, 1)).write_bytes(attestation_mirror.encode_lines(lines))


@pytest.fixture
async def shipped(tmp_path: Path, database_url: str, db: asyncpg.Connection) -> Shipped:
    journal_dir, mirror_dir = tmp_path / "journal", tmp_path / "mirror"
    with open_writer(journal_dir, 0) as writer:
        head = fill(writer, RECORDS - 1)
    assert head == RECORDS
    _write_mirror(journal_dir, mirror_dir)
    forwarder = ForwarderProcess(database_url, journal_dir, tmp_path / "forwarder.log", batch_rows_max=64)
    try:
        forwarder.start()

        async def caught_up() -> bool:
            return await db.fetchval("SELECT last_seq FROM journal_checkpoints WHERE node_id = $1", NODE) == head

        await wait_for(caught_up, "the forwarder to ship the stream", diagnostics=forwarder.log_tail)
        assert forwarder.terminate() == 0  # writes the shipped marker on its way out
    finally:
        forwarder.close()
    return Shipped(journal_dir, mirror_dir, head, database_url)


def _verify(shipped: Shipped, *extra: str) -> tuple[int, dict[str, Any]]:
    done = symphony_cli("audit", "verify-chain", "--json", "--database-url", shipped.url, *extra)
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    return done.returncode, json.loads(done.stdout)


def _findings(report: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(f["check"], f["seq"]) for s in report["streams"] for f in s["findings"]]


async def test_clean_stream_verifies_against_journal_and_mirror(shipped: Shipped) -> None:
    """Nothing tampered: every anchor agrees, and records were really compared."""
    code, report = _verify(shipped, "--journal-dir", str(shipped.journal_dir), "--mirror", str(shipped.mirror_dir))
    assert code == 0, report
    stream = report["streams"][0]
    assert report["records_verified"] == RECORDS and stream["last_verified_seq"] == RECORDS
    assert stream["anchors"]["journal"]["records_compared"] == RECORDS
    assert stream["anchors"]["journal"]["shipped_marker_seq"] == RECORDS
    assert stream["anchors"]["mirror"]["head_matches"] is True
    assert report["anchors"]["external"] == ["journal", "mirror"]


async def test_tail_deleted_and_checkpoint_rewound_is_caught_by_the_journal(
        shipped: Shipped, db: asyncpg.Connection) -> None:
    """Delete seqs 251.. and move the checkpoint back to 250: PostgreSQL alone is
    consistent, the journal's shipped marker says 300 were committed."""
    keep = 250
    kept_hash = await db.fetchval("SELECT chain_hash FROM ingress_attestations WHERE stream_seq = $1", keep)
    await tamper(db, "DELETE FROM ingress_attestations WHERE stream_seq > $1", keep)
    await db.execute("UPDATE journal_checkpoints SET last_seq = $1, last_hash = $2", keep, kept_hash)
    code, report = _verify(shipped)
    assert code == 0 and report["records_verified"] == keep  # the attack, against PostgreSQL alone
    code, report = _verify(shipped, "--journal-dir", str(shipped.journal_dir))
    assert code == 1
    assert ("checkpoint_behind_journal", keep + 1) in _findings(report)


async def _rechain(db: asyncpg.Connection, at_seq: int) -> None:
    """Rewrite record `at_seq` (another participant) and recompute every later hash and the checkpoint."""
    rows = await db.fetch("SELECT stream_seq, canonical, chain_hash FROM ingress_attestations "
                          "WHERE stream_seq >= $1 - 1 ORDER BY stream_seq", at_seq)
    prev = bytes(rows[0]["chain_hash"])
    for row in rows[1:]:
        data = bytes(row["canonical"])
        parsed = canonical.parse(data)
        if row["stream_seq"] == at_seq:
            body = attestation.decode(parsed.record_type, parsed.body)
            assert isinstance(body, attestation.IngressBody), "the fill writes INGRESS records"
            forged = attestation.IngressBody(*["bank-evil" if name == "participant_id" else getattr(body, name)
                                               for name in body.__struct_fields__])
            data = canonical.build(parsed.record_type, at_seq, parsed.attestation_id, attestation.encode(forged))
        prev = canonical.chain_hash(prev, data)
        await tamper(db, "UPDATE ingress_attestations SET canonical = $1, chain_hash = $2, "
                         "participant_id = CASE WHEN stream_seq = $4 THEN 'bank-evil' ELSE participant_id END "
                         "WHERE stream_seq = $3", data, prev, row["stream_seq"], at_seq)
    await db.execute("UPDATE journal_checkpoints SET last_hash = $1", prev)


async def test_full_rechain_is_caught_by_the_journal_and_the_mirror(shipped: Shipped, db: asyncpg.Connection) -> None:
    """Forge seq 100 and recompute all later chain hashes and the checkpoint:
    PostgreSQL alone verifies; the journal and the mirror both disagree."""
    await _rechain(db, 100)
    code, report = _verify(shipped)
    assert code == 0 and report["records_verified"] == RECORDS  # the attack, against PostgreSQL alone
    code, report = _verify(shipped, "--journal-dir", str(shipped.journal_dir))
    assert code == 1 and ("journal_mismatch", 100) in _findings(report)
    code, report = _verify(shipped, "--mirror", str(shipped.mirror_dir))
    assert code == 1 and ("mirror_head_mismatch", RECORDS) in _findings(report)


async def test_forged_archive_signature_is_a_finding(shipped: Shipped, db: asyncpg.Connection,
                                                     tmp_path: Path) -> None:
    """Delete seqs 1..100 and claim them archived with signature 'forged': with the
    pinned key the row is named and the deletion shows; without a key the
    archive is not trusted either."""
    key = Ed25519PrivateKey.generate()
    public_file = tmp_path / "archive.pub"
    public_file.write_text(key.public_key().public_bytes_raw().hex() + "\n")
    await tamper(db, "DELETE FROM ingress_attestations WHERE stream_seq <= 100")
    await db.execute("""INSERT INTO attestation_archives (partition, node_id, stream_id, first_seq, last_seq, sha256,
                                                          signature, key_id)
                        VALUES ('ingress_attestations_p20250101', $1, 0, 1, 100, $2, 'forged', $3)""",
                     NODE, bytes(32), archive_signature.key_id(key.public_key()))
    code, report = _verify(shipped, "--archive-public-key", str(public_file))
    assert code == 1
    stream = report["streams"][0]
    assert ("archive_signature", 1) in _findings(report)
    assert (stream["status"], stream["first_bad_seq"], stream["reason"]) == ("BROKEN", 1, "deleted")
    code, report = _verify(shipped)
    assert code == 1 and ("archive_unverified", 1) in _findings(report)
    hex_key = key.public_key().public_bytes_raw().hex()
    other = Ed25519PrivateKey.generate()
    fields = archive_signature.ArchiveFields("ingress_attestations_p20250101", NODE, 0, 1, 100, None, bytes(32))
    signature, key_id = archive_signature.sign(fields, other)  # a real signature, by a key nobody pinned
    await db.execute("""INSERT INTO attestation_archives (partition, node_id, stream_id, first_seq, last_seq, sha256,
                                                          signature, key_id)
                        VALUES ('ingress_attestations_p20250101', $1, 0, 1, 100, $2, $3, $4)""",
                     NODE, bytes(32), signature, key_id)
    code, report = _verify(shipped, "--archive-public-key", hex_key)
    assert code == 1 and [c for c, _ in _findings(report)].count("archive_signature") == 2


async def test_archiver_signs_what_verify_chain_then_trusts(tmp_path: Path, database_url: str,
                                                           db: asyncpg.Connection) -> None:
    """`audit archive` exports a partition older than the hot window, signs its
    archive row with the 0600 key `up` would create, and drops the partition;
    verify-chain with the pinned public key anchors at the first row left, and
    an archive row altered afterwards is named."""
    private, public, created = archive_signature.ensure_key_pair(tmp_path / "data")
    assert created and (private.stat().st_mode & 0o777) == 0o600
    await db.execute("SELECT ensure_attestation_partitions_v1((now() AT TIME ZONE 'UTC')::date - 10, "
                     "(now() AT TIME ZONE 'UTC')::date - 10)")
    stream = Stream(db)
    await stream.genesis(ago(days=10))
    for _ in range(4):
        await stream.heartbeat(ago(days=10))  # seqs 2..5 in the old partition
    for _ in range(3):
        await stream.heartbeat(ago(minutes=1))  # seqs 6..8 stay
    out = tmp_path / "archives"
    done = symphony_cli("audit", "archive", "--json", "--hot-days", "7", "--out", str(out), "--signing-key",
                        str(private), "--drop", "--database-url", database_url)
    assert done.returncode == 0, done.stderr
    archived = json.loads(done.stdout)["archives"]
    assert [(a["first_seq"], a["last_seq"]) for a in archived] == [(1, 5)]
    export = Path(archived[0]["file"]).read_bytes()
    assert [attestation_mirror.parse_line(line).seq for line in export.splitlines()] == [1, 2, 3, 4, 5]
    assert await db.fetchval("SELECT count(*) FROM ingress_attestations") == 3  # the partition is gone
    code, report = _verify(Shipped(tmp_path, tmp_path, 8, database_url), "--archive-public-key", str(public))
    assert code == 0, report
    assert (report["streams"][0]["anchored_at"], report["records_verified"]) == (6, 3)
    await tamper(db, "UPDATE attestation_archives SET last_seq = 6")  # claim one more seq left (owner, triggers off)
    await tamper(db, "DELETE FROM ingress_attestations WHERE stream_seq = 6")
    code, report = _verify(Shipped(tmp_path, tmp_path, 8, database_url), "--archive-public-key", str(public))
    assert code == 1 and ("archive_signature", 1) in _findings(report)


def test_archive_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    """The archiver refuses a signing key others can read (exit 2, one line)."""
    private, _, _ = archive_signature.ensure_key_pair(tmp_path)
    private.chmod(0o644)
    done = symphony_cli("audit", "archive", "--signing-key", str(private), "--database-url",
                        "postgresql://127.0.0.1:1/none")
    assert done.returncode == 2 and "chmod 600" in done.stderr and "Traceback" not in done.stderr


async def test_checkpoint_rewound_below_released_segments_is_caught_without_the_marker(
        tmp_path: Path, database_url: str, db: asyncpg.Connection) -> None:
    """The forwarder releases journal segments only once PostgreSQL's checkpoint is
    past them: a checkpoint rewound below a released segment is caught from the
    journal alone, with the shipped marker gone."""
    journal_dir = tmp_path / "journal"
    from tests.forwarder.tlog_helpers import PREFIX, fill_signed, signer

    key = signer()  # retention needs a checkpoint covering what it releases (no witness: the node's own)
    with open_writer(journal_dir, 0) as writer:
        head = fill_signed(writer, key, 0, 3000, 500)
    forwarder = ForwarderProcess(database_url, journal_dir, tmp_path / "forwarder.log", batch_rows_max=256,
                                 journal_retention_seconds=0, log_origin_prefix=PREFIX, log_key=key.vkey)
    try:
        forwarder.start()

        async def released() -> bool:
            shipped = await db.fetchval("SELECT last_seq FROM journal_checkpoints WHERE node_id = $1", NODE)
            oldest = journal.Reader(stream_dir(journal_dir, 0)).segments()[0].first_seq
            return shipped == head and oldest > 100

        await wait_for(released, "shipping and segment release", diagnostics=forwarder.log_tail)
        assert forwarder.terminate() == 0
    finally:
        forwarder.close()
    (stream_dir(journal_dir, 0) / shipped_marker.FILE_NAME).unlink()
    oldest = journal.Reader(stream_dir(journal_dir, 0)).segments()[0].first_seq
    kept_hash = await db.fetchval("SELECT chain_hash FROM ingress_attestations WHERE stream_seq = 50")
    await tamper(db, "DELETE FROM ingress_attestations WHERE stream_seq > 50")
    await db.execute("UPDATE journal_checkpoints SET last_seq = 50, last_hash = $1", kept_hash)
    shipped = Shipped(journal_dir, tmp_path, head, database_url)
    code, report = _verify(shipped)
    assert code == 0 and report["records_verified"] == 50  # the attack, against PostgreSQL alone
    code, report = _verify(shipped, "--journal-dir", str(journal_dir))
    assert code == 1 and ("checkpoint_behind_journal", 51) in _findings(report)
    assert report["streams"][0]["anchors"]["journal"]["oldest_seq"] == oldest
