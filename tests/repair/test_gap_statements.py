"""Signed gap statements: one per closed window, signed, equal to `symphony audit gap`,
published, exactly once, verifiable offline, carried by the evidence bundle.

Method: hand-built records (tests/repair/helpers.py) in a window that closed an
hour ago, with a ghost; checkpoints and a witness cosignature in the log's
tables as the forwarder stores them; repair's `sign_due` (the leader cycle's
step) against the real database, then `symphony audit gap`, `symphony verify
gap-statement` and `symphony evidence bundle` as real processes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from repair import statements
from repair.config import RepairConfig
from symphony import gap_statement
from symphony.db import connect
from symphony.tlog import checkpoint, note, origins
from tests.conftest import REPO_ROOT, symphony_cli
from tests.repair.helpers import Stream, executed_payment, now
from tests.repair.test_reverse_gap import repair_role

WINDOW = 3600
KEY_NAME = "symphony.example/test/gap-statements"
PREFIX = "symphony.example/test"


def _write_key(path: Path, key: Ed25519PrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


@pytest.fixture
def signing(tmp_path: Path) -> tuple[RepairConfig, note.Verifier]:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "gap-statement.pem"
    _write_key(path, key)
    settings = RepairConfig(ghost_grace_seconds=120, outcome_grace_seconds=120, unattested_pending_seconds=300,
                            gap_statement_signing_key=str(path), gap_statement_key_name=KEY_NAME,
                            gap_statement_window_seconds=WINDOW, gap_statement_publish_dir=str(tmp_path / "tlog"))
    return settings, note.Signer(KEY_NAME, key).verifier


def _window() -> tuple[dt.datetime, dt.datetime]:
    """The window that closed at least an hour ago (whatever the minute now)."""
    return statements.window_containing(now() - dt.timedelta(hours=2), WINDOW)


async def _log_checkpoints(db: asyncpg.Connection, stream: Stream, start: dt.datetime,
                           witness: checkpoint.Cosigner | None) -> tuple[checkpoint.Checkpoint, note.Verifier]:
    """Two checkpoints of the stream's log around the window, the first cosigned."""
    node = note.Signer(origins.log_name(PREFIX, stream.node), Ed25519PrivateKey.generate())
    origin = origins.origin(node.name, stream.stream, stream.epoch)
    cosigned = checkpoint.Checkpoint(origin, 4, bytes([4]) * 32)
    for cp, at in ((cosigned, start + dt.timedelta(minutes=59)), (checkpoint.Checkpoint(origin, 9, bytes([9]) * 32),
                                                                  start + dt.timedelta(minutes=70))):
        await db.execute("INSERT INTO log_checkpoints (node_id, stream_id, epoch, tree_size, root, origin, note, "
                         "record_seq, cut_at) VALUES ($1, $2, $3, $4::bigint, $5, $6, $7, $4::bigint + 1, $8)",
                         stream.node, stream.stream, stream.epoch, cp.size, cp.root, cp.origin,
                         checkpoint.sign(cp, node), at)
    if witness is not None:
        await db.execute("INSERT INTO log_cosignatures (node_id, stream_id, epoch, tree_size, witness, line, "
                         "cosigned_at) VALUES ($1, $2, $3, 4, $4, $5, 1700000000)", stream.node, stream.stream,
                         stream.epoch, witness.name, witness.cosign(cosigned.text(), 1_700_000_000))
    return cosigned, node.verifier


async def _world(db: asyncpg.Connection, start: dt.datetime) -> Stream:
    """In the window: bank-a 2 executed + 1 ghost, bank-b 1 handled (rejected) + a read."""
    stream = Stream(db)
    await stream.genesis(at=start + dt.timedelta(minutes=1))
    for minute in (5, 6):
        await executed_payment(stream, "bank-a", at=start + dt.timedelta(minutes=minute))
    await stream.ingress("bank-a", at=start + dt.timedelta(minutes=7))  # a ghost
    rejected, seq = await stream.ingress("bank-b", at=start + dt.timedelta(minutes=8))
    await stream.outcome(rejected, seq, "rejected", 403, at=start + dt.timedelta(minutes=8))
    await stream.ingress("bank-b", executes=False, at=start + dt.timedelta(minutes=9))  # not an executing route
    await stream.heartbeat(at=start + dt.timedelta(minutes=59, seconds=50))
    return stream


async def test_a_closed_window_gets_one_signed_statement_equal_to_audit_gap(
        db: asyncpg.Connection, database_url: str, tmp_path: Path,
        signing: tuple[RepairConfig, note.Verifier]) -> None:
    """Goal: a closed window gets exactly one statement, signed by the repair key,
    whose tuple is what `symphony audit gap` says for the window, that names the
    ghost and the window's witnessed checkpoint, is published as a file, and
    verifies offline (and fails when tampered or checked with another key).
    Method: the world above, `sign_due` twice (a restart), files and CLIs."""
    settings, vkey = signing
    start, end = _window()
    stream = await _world(db, start)
    witness = checkpoint.Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    cosigned, node_key = await _log_checkpoints(db, stream, start, witness)

    stored = await statements.sign_due(db, settings, "repair:test")
    assert stored, "no statement was signed"
    assert stored[0].window_start == start and stored[0].window_end == end  # the first record's window first
    assert all(s.window_end <= now() - dt.timedelta(seconds=300) for s in stored)  # only closed windows
    assert [s.window_start for s in stored] == [start + dt.timedelta(seconds=WINDOW * i) for i in range(len(stored))]
    assert await statements.sign_due(db, settings, "repair:test") == []  # a restart signs nothing twice
    rows = await db.fetch("SELECT window_start, count(*) AS n FROM gap_statements GROUP BY window_start")
    assert rows and all(row["n"] == 1 for row in rows) and len(rows) == len(stored)

    path = statements.statement_path(tmp_path / "tlog", start)
    signed = path.read_bytes()
    assert signed.decode() == stored[0].note
    statement, body = gap_statement.open_statement(signed, vkey)
    audit = symphony_cli("audit", "gap", "--json", "--since", start.isoformat(), "--until", end.isoformat(),
                         "--database-url", database_url)
    assert audit.returncode == 1, audit.stderr  # the ghost fails the audit
    expected = {p["participant_id"]: gap_statement.Counts(p["ingress_count"], p["executions"], p["handled"],
                                                          p["gap"], p["unattested"])
                for p in json.loads(audit.stdout)["participants"]}
    assert expected == {"bank-a": gap_statement.Counts(3, 2, 0, 1, 0), "bank-b": gap_statement.Counts(1, 0, 1, 0, 0)}
    assert statement.participants == expected
    assert "participant bank-a 3 2 0 1 0\n" in body and "total 4 2 1 1 0\n" in body
    ghost_seq = 6  # genesis, (ingress, outcome) x 2, then the ghost's INGRESS
    ghost_id = await db.fetchval("SELECT attestation_id FROM ingress_attestations WHERE stream_seq = $1", ghost_seq)
    assert statement.ghosts == (gap_statement.Ghost("bank-a", "node-a", 0, ghost_seq, ghost_id),)
    # The cosigned checkpoint (size 4), not the newer one no witness cosigned (size 9).
    assert statement.checkpoints == (gap_statement.CheckpointRef(cosigned.origin, 4, cosigned.root),)
    later = gap_statement.open_statement(statements.statement_path(tmp_path / "tlog", end).read_bytes(), vkey)[0]
    assert later.participants == {} and later.total.gap == 0  # an empty window is stated too

    key_file = tmp_path / "gap.vkey"
    key_file.write_text(vkey.vkey() + "\n")
    ok = symphony_cli("verify", "gap-statement", str(path), "--key", str(key_file))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith(body) and "OK: verified" in ok.stdout

    tampered = tmp_path / "tampered"
    tampered.write_bytes(signed.replace(b"participant bank-a 3 2 0 1 0\n", b"participant bank-a 3 3 0 0 0\n")
                         .replace(b"total 4 2 1 1 0\n", b"total 4 3 1 0 0\n"))
    assert tampered.read_bytes() != signed
    bad = symphony_cli("verify", "gap-statement", str(tampered), "--key", vkey.vkey())
    assert bad.returncode == 1 and "does not verify" in bad.stderr, bad.stdout + bad.stderr
    other = note.Signer(KEY_NAME, Ed25519PrivateKey.generate()).verifier.vkey()
    wrong = symphony_cli("verify", "gap-statement", str(path), "--key", other)
    assert wrong.returncode == 1 and "no signature by a trusted key" in wrong.stderr, wrong.stdout + wrong.stderr

    # Witnessed: the cosigned checkpoint note, checked against a policy with the witness's quorum.
    cp_file = tmp_path / "checkpoint"
    cp_file.write_text(await db.fetchval("SELECT note FROM log_checkpoints WHERE tree_size = 4")
                       + await db.fetchval("SELECT line FROM log_cosignatures"))
    policy = tmp_path / "policy"
    policy.write_text(f"log {node_key.vkey()}\nwitness w1 {witness.verifier.vkey()}\nquorum w1\n")
    witnessed = symphony_cli("verify", "gap-statement", str(path), "--key", vkey.vkey(), "--policy", str(policy),
                             "--checkpoint", str(cp_file))
    assert witnessed.returncode == 0 and "checkpoints_witnessed: 1" in witnessed.stdout, witnessed.stderr
    unwitnessed = symphony_cli("verify", "gap-statement", str(path), "--key", vkey.vkey(), "--policy", str(policy))
    assert unwitnessed.returncode == 1 and "no given checkpoint file" in unwitnessed.stderr




async def test_two_signers_at_once_store_one_statement_per_window(
        db: asyncpg.Connection, database_url: str, signing: tuple[RepairConfig, note.Verifier]) -> None:
    """Goal: exactly once per window even when two instances sign at the same
    moment (a leader change in the middle of a cycle). Method: two connections
    run `sign_due` concurrently over the same due windows; every window is stored
    once, the windows are contiguous and do not overlap, and together the two
    calls report each window once."""
    settings, _ = signing
    start, _ = _window()
    await _world(db, start)
    other = await connect(database_url)
    try:
        first, second = await asyncio.gather(statements.sign_due(db, settings, "repair:one"),
                                             statements.sign_due(other, settings, "repair:two"))
    finally:
        await other.close()
    rows = await db.fetch("SELECT window_start, window_end FROM gap_statements ORDER BY window_start")
    assert len(rows) >= 2, rows
    assert sorted(s.window_start for s in first + second) == [row["window_start"] for row in rows]
    assert all(a["window_end"] == b["window_start"] for a, b in zip(rows, rows[1:]))


async def test_statements_refuse_update_delete_and_truncate(
        db: asyncpg.Connection, database_url: str, signing: tuple[RepairConfig, note.Verifier]) -> None:
    """Goal: stored statements are append-only evidence, and the repair daemon's
    own role (not the owner) may sign them. Method: sign as the repair group's
    login role; that role may not UPDATE, DELETE or TRUNCATE; the tables' owner
    is refused too (triggers), and an overlapping INSERT breaks the constraint."""
    settings, _ = signing
    await _world(db, _window()[0])
    async with repair_role(db, database_url) as conn:
        assert await statements.sign_due(conn, settings, "repair:test")
        for sql in ("UPDATE gap_statements SET body = body", "DELETE FROM gap_statements",
                    "TRUNCATE gap_statements"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    for sql in ("UPDATE gap_statements SET body = body", "DELETE FROM gap_statements",
                "TRUNCATE gap_statements"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.execute(sql)
    with pytest.raises(asyncpg.ExclusionViolationError):
        await db.execute("INSERT INTO gap_statements (window_start, window_end, key_name, body, note, ghosts, "
                         "unattested, signed_by) SELECT window_start + interval '1 minute', window_end, key_name, "
                         "body, note, 0, 0, 'forger' FROM gap_statements ORDER BY window_start LIMIT 1")


def _repair(database_url: str, instance: str, key: Path, publish: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SYMPHONY_DATABASE_URL": database_url, "SYMPHONY_REPAIR_INSTANCE_ID": instance,
           "SYMPHONY_REPAIR_CYCLE_SECONDS": "0.3", "SYMPHONY_REPAIR_LEADER_RETRY_SECONDS": "0.2",
           "SYMPHONY_REPAIR_GHOST_GRACE_SECONDS": "1", "SYMPHONY_REPAIR_OUTCOME_GRACE_SECONDS": "1",
           "SYMPHONY_REPAIR_UNATTESTED_PENDING_SECONDS": "1", "SYMPHONY_REPAIR_GAP_STATEMENT_SIGNING_KEY": str(key),
           "SYMPHONY_REPAIR_GAP_STATEMENT_KEY_NAME": KEY_NAME, "SYMPHONY_REPAIR_GAP_STATEMENT_WINDOW_SECONDS": "60",
           "SYMPHONY_REPAIR_GAP_STATEMENT_PUBLISH_DIR": str(publish)}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "symphony", "repair"], cwd=REPO_ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=out)


async def _wait(condition: object, what: str, processes: list[subprocess.Popen[bytes]], log: Path,
                seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for process in processes:
            assert process.poll() is None, f"repair exited with {process.returncode}: {log.read_text()[-2000:]}"
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {log.read_text()[-2000:]}")


async def test_the_repair_daemon_signs_each_closed_window_once_across_instances_and_restarts(
        db: asyncpg.Connection, database_url: str, tmp_path: Path) -> None:
    """Goal: the real daemon (two instances, leader election) signs each closed
    window once, publishes it, and a restart adds no second statement for a
    window. Method: records with a ghost five minutes back; two `symphony repair`
    processes with 60 s windows and 1 s graces; wait for the ghost's window's
    file; stop both with SIGTERM, start one again and wait for two of its
    cycles as leader; every window is stored once and the files verify."""
    key = Ed25519PrivateKey.generate()
    key_path, publish, log = tmp_path / "gap.pem", tmp_path / "tlog", tmp_path / "repair.log"
    _write_key(key_path, key)
    vkey = note.Signer(KEY_NAME, key).verifier
    start, _ = statements.window_containing(now() - dt.timedelta(minutes=5), 60)
    stream = Stream(db)
    await stream.genesis(at=start + dt.timedelta(seconds=1))
    await executed_payment(stream, "bank-a", at=start + dt.timedelta(seconds=2))
    await stream.ingress("bank-a", at=start + dt.timedelta(seconds=3))  # the ghost
    ghost_file = statements.statement_path(publish, start)

    processes = [_repair(database_url, name, key_path, publish, log) for name in ("gs-a", "gs-b")]
    try:
        async def published() -> bool:
            return ghost_file.exists()

        await _wait(published, "the ghost's window to be published", processes, log)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert process.wait(timeout=30) == 0, log.read_text()[-2000:]
        before = await db.fetchval("SELECT count(*) FROM gap_statements")
        restarted_at = await db.fetchval("SELECT now()")
        processes = [_repair(database_url, "gs-a", key_path, publish, log)]

        seen: list[dt.datetime] = []

        async def cycles_after_restart() -> bool:
            """True once the new leader finished a cycle after one it had finished already."""
            row = await db.fetchrow("SELECT role, became_leader_at, last_cycle_at FROM repair_instances "
                                    "WHERE instance_id = 'gs-a'")
            if not (row and row["role"] == "LEADER" and row["became_leader_at"] > restarted_at
                    and row["last_cycle_at"] is not None and row["last_cycle_at"] > row["became_leader_at"]):
                return False
            if not seen:
                seen.append(row["last_cycle_at"])
            return bool(row["last_cycle_at"] > seen[0])

        await _wait(cycles_after_restart, "two leader cycles after the restart", processes, log)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
    rows = await db.fetch("SELECT window_start, window_end, note, signed_by FROM gap_statements ORDER BY window_start")
    assert len(rows) >= before >= 1
    assert len({row["window_start"] for row in rows}) == len(rows)
    assert all(a["window_end"] == b["window_start"] for a, b in zip(rows, rows[1:]))
    assert rows[0]["window_start"] <= start and start in {row["window_start"] for row in rows}
    statement, _ = gap_statement.open_statement(ghost_file.read_bytes(), vkey)
    assert statement.participants["bank-a"] == gap_statement.Counts(2, 1, 0, 1, 0)
    assert len(statement.ghosts) == 1
    for row in rows:
        assert statements.statement_path(publish, row["window_start"]).read_text() == row["note"]


async def test_the_evidence_bundle_carries_the_statements_of_its_period(
        db: asyncpg.Connection, database_url: str, tmp_path: Path,
        signing: tuple[RepairConfig, note.Verifier]) -> None:
    """Goal: `log_anchors.gap_statements` carries each signed statement of the
    bundle's period verbatim (status available) and the bundle still verifies.
    Method: sign the world's windows, build the bundle as a process, open the
    carried note of the ghost's window with the repair key."""
    settings, vkey = signing
    start, end = _window()
    stream = await _world(db, start)
    witness = checkpoint.Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    _, node_key = await _log_checkpoints(db, stream, start, witness)
    stored = await statements.sign_due(db, settings, "repair:test")
    assert stored
    evidence_key = tmp_path / "evidence.pem"
    _write_key(evidence_key, Ed25519PrivateKey.generate())
    public = tmp_path / "evidence.pub.pem"
    public.write_bytes(serialization.load_pem_private_key(evidence_key.read_bytes(), None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["-c", "user.name=E", "-c", "user.email=e@example.org", "commit", "-q",
                                  "--allow-empty", "-m", "release"]):
        assert subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=60).returncode == 0
    out = tmp_path / "bundle.json"
    built = symphony_cli("evidence", "bundle", "--out", str(out), "--signing-key", str(evidence_key), "--repo",
                         str(repo), "--database-url", database_url)
    assert built.returncode == 1 and "attestation gap = 1" in built.stderr  # the ghost
    anchors = json.loads(out.read_text())["log_anchors"]
    carried = anchors["gap_statements"]
    assert carried["status"] == "available"
    assert [s["window_start"] for s in carried["statements"]] == [s.window_start.isoformat() for s in stored]
    first = carried["statements"][0]
    assert first["gap"] == 1 and first["key_name"] == KEY_NAME
    statement, _ = gap_statement.open_statement(first["note"].encode(), vkey)
    assert statement.window_start == start and statement.window_end == end and statement.total.gap == 1
    assert [c["tree_size"] for c in anchors["checkpoints"]["checkpoints"]] == [4]  # the witnessed one
    assert symphony_cli("evidence", "verify", str(out), "--public-key", str(public)).returncode == 0
    # From the bundle alone: the statement and the cosigned checkpoint it names verify under a policy.
    assert len(first["checkpoints"]) == 1 and first["checkpoints"][0].count("\u2014 ") == 2  # node + witness
    note_file, checkpoint_file, policy = tmp_path / "statement", tmp_path / "checkpoint", tmp_path / "policy"
    note_file.write_text(first["note"])
    checkpoint_file.write_text(first["checkpoints"][0])
    policy.write_text(f"log {node_key.vkey()}\nwitness w1 {witness.verifier.vkey()}\nquorum w1\n")
    checked = symphony_cli("verify", "gap-statement", str(note_file), "--key", vkey.vkey(), "--policy", str(policy),
                           "--checkpoint", str(checkpoint_file))
    assert checked.returncode == 0 and "checkpoints_witnessed: 1" in checked.stdout, checked.stdout + checked.stderr


def test_windows_align_to_utc_and_follow_each_other_after_a_length_change() -> None:
    """Goal: windows are [k*L, (k+1)*L) since the Unix epoch, and after a change of
    L the next window starts where the last stored one ended and runs to the new
    boundary (never a hole, never an overlap). Method: the pure window functions."""
    utc = dt.timezone.utc
    assert statements.window_containing(dt.datetime(2026, 12, 5, 11, 59, 59, 999_999, tzinfo=utc), 3600) == (
        dt.datetime(2026, 12, 5, 11, tzinfo=utc), dt.datetime(2026, 12, 5, 12, tzinfo=utc))
    assert statements.window_containing(dt.datetime(2026, 12, 5, 12, tzinfo=utc), 900)[0] == dt.datetime(
        2026, 12, 5, 12, tzinfo=utc)
    # 15-minute windows up to 12:15, then hours: one short window 12:15-13:00, then 13:00-14:00.
    assert statements.next_window(dt.datetime(2026, 12, 5, 12, 15, tzinfo=utc), 3600) == (
        dt.datetime(2026, 12, 5, 12, 15, tzinfo=utc), dt.datetime(2026, 12, 5, 13, tzinfo=utc))
    assert statements.next_window(dt.datetime(2026, 12, 5, 13, tzinfo=utc), 3600) == (
        dt.datetime(2026, 12, 5, 13, tzinfo=utc), dt.datetime(2026, 12, 5, 14, tzinfo=utc))
    with pytest.raises(ValueError, match="divide a day"):
        RepairConfig(gap_statement_window_seconds=7000)
