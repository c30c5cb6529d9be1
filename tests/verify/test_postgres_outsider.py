"""`symphony audit verify-log`: the operator's PostgreSQL checked against witnessed checkpoints it cannot rewrite.

Goal: an insider with the evidence tables' owner role edits ingress_attestations
(and log_checkpoints, log_cosignatures, log_tiles, journal_epochs) in each way
issue 13 point 6 lists; every one is detected and named (node, stream, epoch,
seq or size) by a check whose only anchors are signed checkpoint files held
outside the database (the witness's own store and the copies an auditor
keeps) and the public keys of a c2sp tlog-policy; the untouched database
passes after the check has folded leaves and compared witnessed roots.
Method: a journal written by journal.Writer with checkpoints signed by the
node key; the real `symphony forwarder` ships it to a real PostgreSQL 18 and
submits each checkpoint to a real `symphony witness` process, which cosigns
it; the journal is then wiped and restarted (a second epoch). The shipped
database is the template of one clone per attack; on the clone the insider
disables the append-only triggers (an owner's right, ALTER TABLE … DISABLE
TRIGGER) and edits rows; `symphony audit verify-log` runs as a subprocess.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import journal
from repair import canonical
from symphony import attestation
from symphony.db import connect
from symphony.embedded import EmbeddedState
from symphony.tlog import checkpoint, merkle, note, tiles
from tests.conftest import REPO_ROOT, _dsn_for
from tests.forwarder.conftest import NODE, ForwarderProcess, fill, open_writer, stream_dir, wait_for
from tests.forwarder.tlog_helpers import PREFIX, Witness, cut, signer

# Epoch A: checkpoints (witnessed, kept by the auditor) at tree sizes 301, 602, 853; 874 records shipped.
FILLS_A = (300, 300, 250)
TAIL_A = 20
FILL_B, TAIL_B = 200, 10
ATTACKED_SEQ = 400  # between the witnessed sizes 301 and 602
TABLES = ("ingress_attestations", "log_checkpoints", "log_cosignatures", "log_tiles", "journal_epochs")


@dataclass
class Shipped:
    template: str  # the database the forwarder shipped to (a template for the clones)
    state: EmbeddedState
    anchors: list[Path]
    policy: Path
    epoch_a: bytes
    epoch_b: bytes
    head_a: int
    sizes_a: list[int]
    origin_a: str


async def _cosigned(db: asyncpg.Connection, epoch: bytes, size: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM log_cosignatures WHERE node_id = $1 AND stream_id = 0 "
                                  "AND epoch = $2 AND tree_size = $3", NODE, epoch, size))


async def _shipped_to(db: asyncpg.Connection, epoch: bytes, head: int) -> bool:
    row = await db.fetchrow("SELECT epoch, last_seq FROM journal_checkpoints WHERE node_id = $1 AND stream_id = 0",
                            NODE)
    return row is not None and bytes(row["epoch"]) == epoch and row["last_seq"] == head


@pytest.fixture(scope="module")
async def shipped(pg_state: EmbeddedState, template_database: str,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shipped]:
    root = tmp_path_factory.mktemp("outsider")
    name = f"shipped_{uuid.uuid4().hex[:12]}"
    admin = await connect(pg_state.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await admin.close()
    url = _dsn_for(pg_state, name)
    key = signer()
    witness = Witness.create(root, key.vkey).start()
    kept = root / "auditor-copies"  # the checkpoints the auditor fetched from the witness as they were cosigned
    kept.mkdir()
    witness_logs = root / "witness-state" / "logs"
    journal_dir = root / "journal"
    forwarder = ForwarderProcess(url, journal_dir, root / "forwarder.log", batch_rows_max=150,
                                 log_origin_prefix=PREFIX, log_key=key.vkey, witnesses=json.dumps([witness.entry]),
                                 witness_poll_interval_ms=50, witness_retry_delay_ms_initial=50,
                                 witness_retry_delay_ms_max=300)
    db = await connect(url)
    try:
        sizes_a = []
        with open_writer(journal_dir, 0) as writer:
            epoch_a = writer.epoch
            forwarder.start()
            for count in FILLS_A:
                fill(writer, count)
                size = cut(writer, key, 0).tree_size
                sizes_a.append(size)
                await wait_for(functools.partial(_cosigned, db, epoch_a, size), f"the witness to cosign {size}",
                               diagnostics=forwarder.log_tail)
                [stored] = list(witness_logs.iterdir())
                shutil.copy(stored, kept / f"a-{size}.checkpoint")
            head_a = fill(writer, TAIL_A)
        await wait_for(lambda: _shipped_to(db, epoch_a, head_a), "epoch A to ship", diagnostics=forwarder.log_tail)
        # The journal is wiped and restarts: a new epoch, a new origin.
        shutil.rmtree(stream_dir(journal_dir, 0))
        with open_writer(journal_dir, 0) as writer:
            epoch_b = writer.epoch
            fill(writer, FILL_B)
            size_b = cut(writer, key, 0).tree_size
            await wait_for(lambda: _cosigned(db, epoch_b, size_b), "the witness to cosign epoch B",
                           diagnostics=forwarder.log_tail)
            head_b = fill(writer, TAIL_B)
        await wait_for(lambda: _shipped_to(db, epoch_b, head_b), "epoch B to ship", diagnostics=forwarder.log_tail)
        assert forwarder.terminate() == 0
    finally:
        forwarder.close()
        witness.stop()
        await db.close()
    assert sizes_a == [301, 602, 853] and len(list(witness_logs.iterdir())) == 2
    policy = root / "policy"
    policy.write_text(f"log {key.vkey}\nwitness w1 {witness.verifier.vkey()}\nquorum w1\n")
    yield Shipped(name, pg_state, [kept, witness_logs], policy, epoch_a, epoch_b, head_a, sizes_a,
                  key.origin(0, epoch_a))
    admin = await connect(pg_state.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def clone(shipped: Shipped) -> AsyncIterator[str]:
    """A copy of the shipped database for one attack."""
    name = f"tamper_{uuid.uuid4().hex[:12]}"
    admin = await connect(shipped.state.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{shipped.template}"')
    finally:
        await admin.close()
    yield _dsn_for(shipped.state, name)
    admin = await connect(shipped.state.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def verify_log(shipped: Shipped, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = ["audit", "verify-log", "--database-url", url, "--policy", str(shipped.policy), *extra]
    for directory in shipped.anchors:
        argv += ["--checkpoints", str(directory)]
    return subprocess.run([sys.executable, "-m", "symphony", *argv], capture_output=True, text=True, timeout=180,
                          cwd=REPO_ROOT)


async def as_insider(url: str) -> asyncpg.Connection:
    """A connection as the tables' owner with the append-only triggers disabled
    (ALTER TABLE … DISABLE TRIGGER needs ownership, not superuser)."""
    conn = await connect(url)
    owned = await conn.fetchval("SELECT bool_and(c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user))"
                                " FROM pg_class c WHERE c.relname = ANY($1::text[])", list(TABLES))
    assert owned, "the insider is the evidence tables' owner"
    partitions = [r["name"] for r in await conn.fetch(
        "SELECT inhrelid::regclass::text AS name FROM pg_inherits WHERE inhparent = 'ingress_attestations'::regclass")]
    for table in (*TABLES, *partitions):
        await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    return conn


async def _flip_byte(conn: asyncpg.Connection, s: Shipped) -> None:
    data = bytearray(await conn.fetchval("SELECT canonical FROM ingress_attestations WHERE stream_id = 0 AND epoch = $1 "
                                         "AND stream_seq = $2", s.epoch_a, ATTACKED_SEQ))
    data[40] ^= 0x01  # a body byte
    await conn.execute("UPDATE ingress_attestations SET canonical = $3 WHERE stream_id = 0 AND epoch = $1 "
                       "AND stream_seq = $2", s.epoch_a, ATTACKED_SEQ, bytes(data))


async def _delete_row(conn: asyncpg.Connection, s: Shipped) -> None:
    await conn.execute("DELETE FROM ingress_attestations WHERE stream_id = 0 AND epoch = $1 AND stream_seq = $2",
                       s.epoch_a, ATTACKED_SEQ)


async def _cut_tail(conn: asyncpg.Connection, s: Shipped) -> None:
    """The newest 174 rows of epoch A go, and the recorded end of the epoch is moved back to match."""
    keep = 700
    await conn.execute("DELETE FROM ingress_attestations WHERE stream_id = 0 AND epoch = $1 AND stream_seq > $2",
                       s.epoch_a, keep)
    await conn.execute("UPDATE journal_epochs SET last_seq = $2, journal_head_seq = $2, last_hash = (SELECT chain_hash "
                       "FROM ingress_attestations WHERE stream_id = 0 AND epoch = $1 AND stream_seq = $2) "
                       "WHERE epoch = $1", s.epoch_a, keep)


async def _delete_first_rows(conn: asyncpg.Connection, s: Shipped) -> None:
    await conn.execute("DELETE FROM ingress_attestations WHERE stream_id = 0 AND epoch = $1 AND stream_seq <= 100",
                       s.epoch_a)


async def _insert_forged(conn: asyncpg.Connection, s: Shipped) -> None:
    """A second row at seq 400: a copy of the real one with another participant."""
    row = await conn.fetchrow("SELECT * FROM ingress_attestations WHERE stream_id = 0 AND epoch = $1 "
                              "AND stream_seq = $2", s.epoch_a, ATTACKED_SEQ)
    parsed = canonical.parse(bytes(row["canonical"]))
    body = attestation.decode(parsed.record_type, parsed.body)
    forged = canonical.build(parsed.record_type, parsed.stream_seq, parsed.attestation_id,
                             attestation.encode(msgspec.structs.replace(body, participant_id="forged-bank")))
    values = dict(row)
    values.update(canonical=forged, participant_id="forged-bank", chain_hash=canonical.chain_hash(bytes(32), forged))
    values["recorded_at"] = row["recorded_at"].replace(microsecond=(row["recorded_at"].microsecond + 1) % 1_000_000)
    columns = ", ".join(values)
    await conn.execute(f"INSERT INTO ingress_attestations ({columns}) VALUES "
                       f"({', '.join(f'${i + 1}' for i in range(len(values)))})", *values.values())


async def _swap_rows(conn: asyncpg.Connection, s: Shipped) -> None:
    parked = 1_000_000_000  # one row at a time: two rows may share a recorded_at (the primary key's other column)
    for old, new in ((ATTACKED_SEQ, parked), (ATTACKED_SEQ + 1, ATTACKED_SEQ), (parked, ATTACKED_SEQ + 1)):
        await conn.execute("UPDATE ingress_attestations SET stream_seq = $3 WHERE stream_id = 0 AND epoch = $1 "
                           "AND stream_seq = $2", s.epoch_a, old, new)


async def _lose_epoch(conn: asyncpg.Connection, s: Shipped) -> None:
    """Epoch A vanishes from the database: rows, tree, checkpoints, cosignatures, its recorded end."""
    for table in ("ingress_attestations", "log_tiles", "log_cosignatures", "log_checkpoints", "journal_epochs"):
        await conn.execute(f"DELETE FROM {table} WHERE epoch = $1", s.epoch_a)


async def _tamper_tile(conn: asyncpg.Connection, s: Shipped) -> None:
    """A full tile of leaf hashes altered: rows untouched, proofs read from the tile would be false."""
    hashes = bytearray(await conn.fetchval("SELECT hashes FROM log_tiles WHERE epoch = $1 AND level = 0 "
                                           "AND tile_index = 1", s.epoch_a))
    assert len(hashes) == 256 * 32
    hashes[5] ^= 0xFF
    await conn.execute("UPDATE log_tiles SET hashes = $2 WHERE epoch = $1 AND level = 0 AND tile_index = 1",
                       s.epoch_a, bytes(hashes))


async def _rewrite(conn: asyncpg.Connection, s: Shipped) -> None:
    """The whole of epoch A rewritten consistently: one record changed (seq 400's
    participant), every later chain hash recomputed, every later CHECKPOINT
    record's frontier and note recomputed and re-signed with an attacker's key
    under the node's key name, log_checkpoints and log_tiles rebuilt to match,
    the cosignatures of the falsified checkpoints (which the attacker cannot
    forge) removed, and the epoch's recorded end moved to the new last hash."""
    attacker = note.Signer(f"{PREFIX}/{NODE}", Ed25519PrivateKey.generate())
    rows = await conn.fetch("SELECT stream_seq, recorded_at, canonical FROM ingress_attestations WHERE stream_id = 0 "
                            "AND epoch = $1 ORDER BY stream_seq", s.epoch_a)
    frontier = merkle.Frontier()
    builder = tiles.TileBuilder()
    changed_tiles: dict[tiles.TileKey, bytes] = {}
    prev = canonical.GENESIS_PREV_HASH
    for table in ("log_cosignatures", "log_checkpoints"):  # those the change falsifies; the older ones stay
        await conn.execute(f"DELETE FROM {table} WHERE epoch = $1 AND tree_size >= $2", s.epoch_a, ATTACKED_SEQ)
    await conn.execute("DELETE FROM log_tiles WHERE epoch = $1", s.epoch_a)
    for row in rows:
        seq, data = row["stream_seq"], bytes(row["canonical"])
        parsed = canonical.parse(data)
        extra: dict[str, object] = {}
        if seq == ATTACKED_SEQ:
            body = attestation.decode(parsed.record_type, parsed.body)
            data = canonical.build(parsed.record_type, seq, parsed.attestation_id,
                                   attestation.encode(msgspec.structs.replace(body, participant_id="forged-bank")))
            extra["participant_id"] = "forged-bank"
        elif parsed.record_type == journal.RecordType.CHECKPOINT and seq > ATTACKED_SEQ:
            size = seq - 1
            cp = checkpoint.Checkpoint(s.origin_a, size, frontier.root())
            signed = checkpoint.sign(cp, attacker)
            data = canonical.build(parsed.record_type, seq, parsed.attestation_id,
                                   journal.checkpoint_body(size, list(frontier.hashes), signed.encode()))
            await conn.execute("INSERT INTO log_checkpoints (node_id, stream_id, epoch, tree_size, root, origin, note, "
                               "record_seq, cut_at) VALUES ($1, 0, $2, $3, $4, $5, $6, $7, now())",
                               NODE, s.epoch_a, size, cp.root, cp.origin, signed, seq)
        prev = canonical.chain_hash(prev, data)
        await conn.execute(
            "UPDATE ingress_attestations SET canonical = $4, chain_hash = $5, participant_id = coalesce($6, "
            "participant_id) WHERE stream_id = 0 AND epoch = $1 AND stream_seq = $2 AND recorded_at = $3",
            s.epoch_a, seq, row["recorded_at"], data, prev, extra.get("participant_id"))
        frontier.append(merkle.leaf_hash(data))
        changed_tiles.update(builder.append([merkle.leaf_hash(data)]))
    for (level, index), hashes in changed_tiles.items():
        await conn.execute("INSERT INTO log_tiles (node_id, stream_id, epoch, level, tile_index, width, hashes) "
                           "VALUES ($1, 0, $2, $3, $4, $5, $6)", NODE, s.epoch_a, level, index, len(hashes) // 32,
                           hashes)
    await conn.execute("UPDATE journal_epochs SET last_hash = $2 WHERE epoch = $1", s.epoch_a, prev)


Tamper = Callable[[asyncpg.Connection, Shipped], Awaitable[None]]
Named = tuple[str, int | None, int | None]  # (check, seq, size); None: any

ATTACKS: dict[str, tuple[Tamper, list[Named]]] = {
    # name: (tamper, [(check, seq, size) that must be named])
    "flip_byte": (_flip_byte, [("chain_break", ATTACKED_SEQ, None), ("root_mismatch", None, 602),
                               ("root_mismatch", None, 853), ("node_root_mismatch", None, 602)]),
    "row_deleted": (_delete_row, [("seq_hole", ATTACKED_SEQ, None), ("unprovable", ATTACKED_SEQ, 602)]),
    "tail_cut": (_cut_tail, [("tail_cut", 701, 853)]),
    "first_rows_deleted": (_delete_first_rows, [("seq_hole", 1, None), ("unprovable", 1, 301)]),
    "rewritten": (_rewrite, [("root_mismatch", None, 602), ("root_mismatch", None, 853),
                             ("forged_checkpoint", None, 602), ("forged_checkpoint", None, 853)]),
    "forged_row_inserted": (_insert_forged, [("seq_repeated", ATTACKED_SEQ, None)]),
    "rows_swapped": (_swap_rows, [("reordered", ATTACKED_SEQ, None), ("reordered", ATTACKED_SEQ + 1, None),
                                  ("root_mismatch", None, 602)]),
    "old_epoch_lost": (_lose_epoch, [("epoch_missing", None, 853)]),
    "tile_tampered": (_tamper_tile, [("tile_mismatch", 257, None)]),
}


def _report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(done.stdout)
    return report


async def test_the_shipped_database_verifies_against_the_witnessed_checkpoints(shipped: Shipped) -> None:
    """Untouched: exit 0, both epochs checked, every leaf folded and every
    witnessed size compared (3 kept copies of epoch A, the witness's latest of
    each epoch), tiles and node checkpoints compared; and the DB-only chain
    audit agrees."""
    done = verify_log(shipped, _dsn_for(shipped.state, shipped.template), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = _report(done)
    epochs = {e["epoch"]: e for e in report["epochs"]}
    assert set(epochs) == {shipped.epoch_a.hex(), shipped.epoch_b.hex()}
    a, b = epochs[shipped.epoch_a.hex()], epochs[shipped.epoch_b.hex()]
    assert a["leaves_checked"] == shipped.head_a and a["witnessed_sizes"] == shipped.sizes_a
    assert a["witnessed_compared"] == 3 and b["witnessed_compared"] == 1 and b["leaves_checked"] > 0
    assert a["tiles_compared"] > 0 and a["node_checkpoints_checked"] == 3
    assert a["rows_after_newest_witnessed"] == shipped.head_a - shipped.sizes_a[-1]  # the CHECKPOINT record and after
    assert report["checkpoints_accepted"] == 5 and report["unanchored_epochs"] == []


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_each_insider_edit_is_named(shipped: Shipped, clone: str, attack: str) -> None:
    """The insider edits the clone; verify-log exits 1 and names each expected
    finding with node, stream, epoch and the seq or size; epoch B, untouched,
    stays clean."""
    tamper, expected = ATTACKS[attack]
    conn = await as_insider(clone)
    try:
        await tamper(conn, shipped)
    finally:
        await conn.close()
    done = verify_log(shipped, clone, "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    report = _report(done)
    epochs = {e["epoch"]: e for e in report["epochs"]}
    assert epochs[shipped.epoch_b.hex()]["findings"] == []
    found = epochs[shipped.epoch_a.hex()]["findings"]
    named = {(f["check"], f["seq"], f["size"]) for f in found}
    for check, seq, size in expected:
        assert any(c == check and (seq is None or s == seq) and (size is None or z == size)
                   for c, s, z in named), (check, seq, size, found)
    assert all(f["node_id"] == NODE and f["stream_id"] == 0 for f in found)
    text = verify_log(shipped, clone)
    assert text.returncode == 1 and f"{NODE}/0 epoch {shipped.epoch_a.hex()}" in text.stdout
    if attack in ("tail_cut", "rewritten"):
        # What the insider's edit was for: the audit of PostgreSQL alone still passes.
        chain = subprocess.run([sys.executable, "-m", "symphony", "audit", "verify-chain", "--database-url", clone],
                               capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
        assert chain.returncode == 0, chain.stdout + chain.stderr


async def test_no_accepted_checkpoint_is_a_usage_error(shipped: Shipped, tmp_path: Path) -> None:
    """A policy whose witness did not cosign any file: every file is ignored and
    the check refuses to run without an anchor (exit 2), naming why."""
    other = checkpoint.Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    policy = tmp_path / "policy"
    policy.write_text(shipped.policy.read_text().split("witness ")[0] + f"witness w1 {other.verifier.vkey()}\n"
                      "quorum w1\n")
    done = verify_log(Shipped(**{**shipped.__dict__, "policy": policy}), _dsn_for(shipped.state, shipped.template))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no file under --checkpoints is a checkpoint the policy accepts" in done.stderr
    assert "quorum" in done.stderr
