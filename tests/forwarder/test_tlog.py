"""The forwarder's side of the verifiable log, as real processes over a real PostgreSQL 18.

Goal: the forwarder keeps each stream epoch's RFC 9162 tree as tiles in
PostgreSQL, equal to the tree recomputed from the rows it shipped; it keeps
the journal's CHECKPOINT records that match that tree in log_checkpoints and
turns a lying one into a CHECKPOINT_MISMATCH incident; it submits checkpoints
to a real witness process and stores the cosignatures; `symphony proof`
answers from PostgreSQL with files `symphony verify proof` and an independent
verifier accept. Method: journals written by journal.Writer with checkpoints
signed by symphony.checkpoints.CheckpointSigner; `symphony forwarder` and
`symphony witness` run as child processes; conditions are awaited with
deadlines, never timings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg

import journal
from symphony.tlog import checkpoint, merkle, note, proof, tiles
from tests import independent_verifier
from tests.forwarder.conftest import NODE, REPO_ROOT, ForwarderProcess, fill, open_writer, wait_for
from tests.forwarder.tlog_helpers import (
    PREFIX,
    WITNESS_NAME,
    Witness,
    cut,
    signer,
    stored_tiles,
    tree_from_rows,
)
from tests.repair.dashboard_helpers import TOKEN, start_dashboard

Factory = Callable[..., ForwarderProcess]


async def _shipped(db: asyncpg.Connection, stream_id: int) -> int:
    return int(await db.fetchval("SELECT coalesce(max(last_seq), 0) FROM journal_checkpoints WHERE node_id = $1 "
                                 "AND stream_id = $2", NODE, stream_id))


async def test_tiles_equal_the_rows_tree_and_checkpoints_are_checked(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory) -> None:
    """Two streams with checkpoints every 137 records (crossing tile and batch
    boundaries), one of which signs a wrong root: the tiles' tree equals the
    rows' tree at every checkpoint; good checkpoints are in log_checkpoints,
    the lie is a CHECKPOINT_MISMATCH incident and absent from log_checkpoints."""
    journal_dir = tmp_path / "journal"
    key = signer()
    expected: dict[int, list[int]] = {0: [], 1: []}
    lie_seq = 0
    epochs = {}
    heads = {}
    for stream_id in (0, 1):
        with open_writer(journal_dir, stream_id) as writer:
            epochs[stream_id] = writer.epoch
            for round_ in range(6):
                fill(writer, 137)
                lie = stream_id == 1 and round_ == 3
                found = cut(writer, key, stream_id, lie=lie)
                if lie:
                    lie_seq = found.seq
                else:
                    expected[stream_id].append(found.tree_size)
            fill(writer, 10)
            heads[stream_id] = writer.next_seq - 1
    forwarder = forwarder_factory(database_url, journal_dir, batch_rows_max=100, log_origin_prefix=PREFIX,
                                  log_key=key.vkey).start()

    async def caught_up() -> bool:
        return all([await _shipped(db, s) >= heads[s] for s in heads])

    await wait_for(caught_up, "both streams shipped", diagnostics=forwarder.log_tail)
    assert forwarder.terminate() == 0
    for stream_id in (0, 1):
        epoch = epochs[stream_id]
        rows_tree = await tree_from_rows(db, stream_id, epoch)
        assert rows_tree.size == heads[stream_id]
        read = tiles.TileReader(await stored_tiles(db, stream_id, epoch))
        assert merkle.root(read, heads[stream_id]) == rows_tree.root()
        found = await db.fetch("SELECT tree_size, root, origin, record_seq FROM log_checkpoints WHERE node_id = $1 "
                               "AND stream_id = $2 ORDER BY tree_size", NODE, stream_id)
        assert [r["tree_size"] for r in found] == expected[stream_id]
        for row in found:
            assert bytes(row["root"]) == rows_tree.root(row["tree_size"]) == merkle.root(read, row["tree_size"])
            assert row["origin"] == f"{PREFIX}/{NODE}/{stream_id}/{epoch.hex()}"
    incidents = await db.fetch("SELECT kind, severity, stream_id, evidence FROM repair_incidents")
    assert [(r["kind"], r["severity"], r["stream_id"]) for r in incidents] == [("CHECKPOINT_MISMATCH", "CRITICAL", 1)]
    evidence = json.loads(incidents[0]["evidence"])
    assert evidence["seq"] == lie_seq and evidence["signed_root"] == "00" * 32
    assert evidence["computed_root"] == (await tree_from_rows(db, 1, epochs[1])).root(lie_seq - 1).hex()
    # The lying record is still shipped: it is a leaf like any other.
    assert await db.fetchval("SELECT record_type FROM ingress_attestations WHERE stream_id = 1 AND stream_seq = $1",
                             lie_seq) == journal.RecordType.CHECKPOINT
    # CHECKPOINT rows are ordinary rows to the audit: the chain verifies.
    audit = _symphony("audit", "verify-chain", "--database-url", database_url)
    assert audit.returncode == 0, audit.stdout + audit.stderr


async def _cosigned(db: asyncpg.Connection, stream_id: int, size: int) -> list[asyncpg.Record]:
    return await db.fetch("SELECT witness, line, cosigned_at FROM log_cosignatures WHERE node_id = $1 AND "
                          "stream_id = $2 AND tree_size = $3", NODE, stream_id, size)


async def _kept(db: asyncpg.Connection, stream_id: int, size: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM log_checkpoints WHERE node_id = $1 AND stream_id = $2 "
                                  "AND tree_size = $3", NODE, stream_id, size))


def _symphony(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "symphony", *argv], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT)


async def test_witness_cosigns_catches_up_and_proofs_verify_offline(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory) -> None:
    """A real witness cosigns the forwarder's checkpoints; `symphony proof
    inclusion` writes files that `symphony verify proof` (policy: node key +
    witness key, quorum 1) and tests/independent_verifier.py accept; the witness
    stopped while two checkpoints are cut, then started again, is brought to the
    newest one directly (the older one is skipped); `symphony proof consistency`
    joins two kept checkpoints."""
    journal_dir = tmp_path / "journal"
    key = signer()
    witness = Witness.create(tmp_path, key.vkey).start()
    try:
        with open_writer(journal_dir, 0) as writer:
            epoch = writer.epoch
            fill(writer, 300)
            first = cut(writer, key, 0)
            fill(writer, 300)
            second = cut(writer, key, 0)
            forwarder = forwarder_factory(
                database_url, journal_dir, log_origin_prefix=PREFIX, log_key=key.vkey,
                witnesses=json.dumps([witness.entry]), witness_poll_interval_ms=50,
                witness_retry_delay_ms_initial=50, witness_retry_delay_ms_max=300).start()
            await wait_for(lambda: _cosigned(db, 0, second.tree_size), "the witness to cosign the newest checkpoint",
                           diagnostics=forwarder.log_tail)
            [row] = await _cosigned(db, 0, second.tree_size)
            signed_text = (await db.fetchval("SELECT note FROM log_checkpoints WHERE stream_id = 0 AND tree_size = $1",
                                             second.tree_size))
            text, _ = note.split(signed_text.encode())
            _, signatures = note.split((text + "\n" + row["line"]).encode())
            assert checkpoint.verify_cosignatures(text, signatures, [witness.verifier]) == {
                WITNESS_NAME: row["cosigned_at"]}

            policy = tmp_path / "policy"
            policy.write_text(f"log {key.vkey}\nwitness w1 {witness.verifier.vkey()}\nquorum w1\n")
            out = tmp_path / "seq5.tlog-proof"
            done = _symphony("proof", "inclusion", "--database-url", database_url, "--node", NODE, "--stream", "0",
                             "--seq", "5", "--out", str(out))
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["tree_size"] == second.tree_size
            checked = _symphony("verify", "proof", str(out), "--policy", str(policy))
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert independent_verifier.proof_ok(out.read_bytes(), key.vkey, [witness.verifier.vkey()], 1)
            parsed = proof.ProofFile.parse(out.read_bytes())
            assert len(parsed.path) == math.ceil(math.log2(second.tree_size))  # 32·⌈log2 n⌉ bytes of path

            # The witness goes down; two more checkpoints are cut and shipped.
            witness.stop()
            fill(writer, 200)
            third = cut(writer, key, 0)
            fill(writer, 200)
            fourth = cut(writer, key, 0)
            fill(writer, 3)
            await wait_for(lambda: _kept(db, 0, fourth.tree_size), "the fourth checkpoint to be shipped",
                           diagnostics=forwarder.log_tail)
            await wait_for(lambda: "symphony_forwarder_witness_unavailable" in forwarder.metrics() and not
                           re.search(r'witness_unavailable_total\{[^}]*\} 0\.0', forwarder.metrics()),
                           "the publisher to find the witness down", diagnostics=forwarder.log_tail)
            assert await _cosigned(db, 0, fourth.tree_size) == []
            witness.start()
            await wait_for(lambda: _cosigned(db, 0, fourth.tree_size), "the witness to catch up",
                           diagnostics=forwarder.log_tail)
            assert await _cosigned(db, 0, third.tree_size) == []  # only the newest was needed
            metrics = forwarder.metrics()
            assert re.search(r'symphony_forwarder_witnessed_checkpoint_age_seconds\{node_id="node-p",stream_id="0"\}',
                             metrics)
            assert re.search(r'symphony_forwarder_witness_cosignatures_total\{[^}]*\} 2\.0', metrics), metrics

            # By attestation id, in the part cosigned after the catch-up.
            attestation = await db.fetchval("SELECT attestation_id FROM ingress_attestations WHERE stream_id = 0 "
                                            "AND stream_seq = $1", third.seq + 10)
            out2 = tmp_path / "late.tlog-proof"
            done = _symphony("proof", "inclusion", "--database-url", database_url, "--attestation-id",
                             str(attestation), "--out", str(out2))
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["tree_size"] == fourth.tree_size
            assert _symphony("verify", "proof", str(out2), "--policy", str(policy)).returncode == 0
            assert independent_verifier.proof_ok(out2.read_bytes(), key.vkey, [witness.verifier.vkey()], 1)
            # A record no witnessed checkpoint covers yet: nothing to prove (exit 1).
            late = _symphony("proof", "inclusion", "--database-url", database_url, "--node", NODE, "--stream", "0",
                             "--seq", str(fourth.seq + 1), "--out", str(tmp_path / "none"))
            assert late.returncode == 1 and "no witnessed checkpoint" in late.stderr
            # --wait-seconds asks again until its deadline, then gives the same answer; out of range is usage.
            waited = _symphony("proof", "inclusion", "--database-url", database_url, "--node", NODE, "--stream", "0",
                               "--seq", str(fourth.seq + 1), "--wait-seconds", "0.5", "--out", str(tmp_path / "none"))
            assert waited.returncode == 1 and "no witnessed checkpoint" in waited.stderr
            assert not (tmp_path / "none").exists()
            wrong = _symphony("proof", "inclusion", "--database-url", database_url, "--node", NODE, "--stream", "0",
                              "--seq", "5", "--wait-seconds", "-1", "--out", str(tmp_path / "none"))
            assert wrong.returncode == 2 and "--wait-seconds" in wrong.stderr and "Traceback" not in wrong.stderr

            done = _symphony("proof", "consistency", "--database-url", database_url, "--node", NODE, "--stream", "0",
                             "--epoch", epoch.hex(), "--old-size", str(first.tree_size),
                             "--new-size", str(fourth.tree_size))
            assert done.returncode == 0, done.stderr
            lines = done.stdout.split("\n\n")[0].split("\n")
            assert lines[:2] == [f"old {first.tree_size}", f"new {fourth.tree_size}"]
            roots = {r["tree_size"]: bytes(r["root"]) for r in await db.fetch(
                "SELECT tree_size, root FROM log_checkpoints WHERE stream_id = 0")}
            merkle.verify_consistency(first.tree_size, fourth.tree_size,
                                      [base64.b64decode(x) for x in lines[2:]],
                                      roots[first.tree_size], roots[fourth.tree_size])
            assert forwarder.terminate() == 0

            # The dashboard's API serves the same proof, behind its authentication.
            dashboard, port = await start_dashboard(database_url, tmp_path)
            base = f"http://127.0.0.1:{port}"
            try:
                async with aiohttp.ClientSession() as http:
                    url = f"{base}/api/proof/inclusion?node={NODE}&stream=0&seq=5"
                    async with http.get(url) as answer:
                        assert answer.status == 401
                    bearer = {"Authorization": f"Bearer {TOKEN}"}
                    async with http.get(url, headers=bearer) as answer:
                        assert answer.status == 200
                        served = await answer.read()
                    assert proof.ProofFile.parse(served).index == 4  # now under the newest witnessed checkpoint
                    assert independent_verifier.proof_ok(served, key.vkey, [witness.verifier.vkey()], 1)
                    async with http.get(f"{base}/api/proof/consistency?node={NODE}&stream=0&old_size="
                                        f"{first.tree_size}&new_size={fourth.tree_size}", headers=bearer) as answer:
                        assert answer.status == 200
                        body = await answer.json()
                    assert body["proof"] == lines[2:]
            finally:
                dashboard.terminate()
                dashboard.wait(20)
    finally:
        witness.stop()
    assert await db.fetchval("SELECT count(*) FROM repair_incidents") == 0


async def test_witness_refusals_open_checkpoint_refused_with_both_checkpoints(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory) -> None:
    """The witness already holds, for stream 0, a larger tree than the node's
    (the node's log was rolled back) and, for stream 1, another tree of a
    smaller size (a fork): each submission is refused (409, 422) and opens
    CHECKPOINT_REFUSED (CRITICAL) with the node's and the witness's checkpoints."""
    journal_dir = tmp_path / "journal"
    key = signer()
    witness = Witness.create(tmp_path, key.vkey).start()
    try:
        sizes = {}
        async with aiohttp.ClientSession() as http:
            for stream_id in (0, 1):
                with open_writer(journal_dir, stream_id) as writer:
                    fill(writer, 250)
                    sizes[stream_id] = cut(writer, key, stream_id).tree_size
                    forged = key.sign(stream_id, writer.epoch, 5000 if stream_id == 0 else 100, b"\x07" * 32)
                async with http.post(witness.url + "/add-checkpoint",
                                     data=("old 0\n\n" + forged.note).encode()) as answer:
                    assert answer.status == 200, await answer.text()
        forwarder = forwarder_factory(
            database_url, journal_dir, log_origin_prefix=PREFIX, log_key=key.vkey,
            witnesses=json.dumps([witness.entry]), witness_poll_interval_ms=50,
            witness_retry_delay_ms_initial=50, witness_retry_delay_ms_max=300).start()

        async def both() -> bool:
            return int(await db.fetchval("SELECT count(*) FROM repair_incidents WHERE kind = 'CHECKPOINT_REFUSED'")) == 2

        await wait_for(both, "two CHECKPOINT_REFUSED incidents", diagnostics=forwarder.log_tail)
        found_refusals = re.search(r'symphony_forwarder_witness_refusals_total\{[^}]*\} (\d+)\.0', forwarder.metrics())
        assert found_refusals is not None and int(found_refusals.group(1)) >= 2
        assert forwarder.terminate() == 0
    finally:
        witness.stop()
    found = {r["stream_id"]: r for r in await db.fetch(
        "SELECT stream_id, severity, evidence FROM repair_incidents WHERE kind = 'CHECKPOINT_REFUSED'")}
    for stream_id, status, theirs in ((0, 409, 5000), (1, 422, 100)):
        assert found[stream_id]["severity"] == "CRITICAL"
        evidence = json.loads(found[stream_id]["evidence"])
        assert evidence["status"] == status
        ours = checkpoint.Checkpoint.parse(note.split(evidence["our_checkpoint"].encode())[0])
        assert ours.size == sizes[stream_id]
        witnessed = checkpoint.Checkpoint.parse(note.split(evidence["witness_checkpoint"].encode())[0])
        assert witnessed.size == theirs and witnessed.origin == ours.origin
    assert int(await db.fetchval("SELECT count(*) FROM log_cosignatures")) == 0


async def test_kill_9_mid_batch_keeps_tiles_and_checkpoints_consistent(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory) -> None:
    """SIGKILL the forwarder at random points while it ships small batches of a
    journal with a checkpoint every 97 records; after a final run, the tiles'
    tree equals the tree recomputed from the rows, every checkpoint is kept with
    that tree's root at its size, and no incident was opened."""
    journal_dir = tmp_path / "journal"
    key = signer()
    cuts = []
    with open_writer(journal_dir, 0) as writer:
        epoch = writer.epoch
        for _ in range(40):
            fill(writer, 96)
            cuts.append(cut(writer, key, 0).tree_size)
        head = writer.next_seq - 1
    forwarder = forwarder_factory(database_url, journal_dir, batch_rows_max=37, log_origin_prefix=PREFIX,
                                  log_key=key.vkey)
    rng = random.Random(13)
    kills = 0
    while await _shipped(db, 0) < head * 3 // 4:
        before = await _shipped(db, 0)
        forwarder.start()
        await wait_for(lambda before=before: _progressed(db, before), "shipping to progress",
                       diagnostics=forwarder.log_tail)
        await asyncio.sleep(rng.uniform(0.0, 0.05))
        forwarder.kill()
        kills += 1
    assert kills >= 2
    forwarder.start()
    await wait_for(lambda: _progressed(db, head - 1), "the stream to be shipped", diagnostics=forwarder.log_tail)
    assert forwarder.terminate() == 0
    rows_tree = await tree_from_rows(db, 0, epoch)
    assert rows_tree.size == head
    assert merkle.root(tiles.TileReader(await stored_tiles(db, 0, epoch)), head) == rows_tree.root()
    kept = {r["tree_size"]: bytes(r["root"]) for r in await db.fetch(
        "SELECT tree_size, root FROM log_checkpoints WHERE stream_id = 0")}
    assert sorted(kept) == cuts
    assert all(kept[size] == rows_tree.root(size) for size in cuts)
    assert await db.fetchval("SELECT count(*) FROM repair_incidents") == 0


async def _progressed(db: asyncpg.Connection, before: int) -> bool:
    return await _shipped(db, 0) > before


async def test_missing_tiles_are_recomputed_from_the_shipped_rows(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory) -> None:
    """A stream whose tiles are gone (shipped before migration 0120, or the
    derived tiles deleted) gets its tree recomputed from its rows when the next
    batch ships; the next checkpoint is then checked against it and kept."""
    journal_dir = tmp_path / "journal"
    key = signer()
    with open_writer(journal_dir, 0) as writer:
        epoch = writer.epoch
        fill(writer, 700)
        forwarder = forwarder_factory(database_url, journal_dir, log_origin_prefix=PREFIX).start()
        await wait_for(lambda: _progressed(db, 700), "the first part to be shipped", diagnostics=forwarder.log_tail)
        assert forwarder.terminate() == 0
        assert await db.execute("DELETE FROM log_tiles WHERE stream_id = 0") != "DELETE 0"
        fill(writer, 300)
        later = cut(writer, key, 0)
    forwarder.start()
    await wait_for(lambda: _kept(db, 0, later.tree_size), "the later checkpoint to be kept",
                   diagnostics=forwarder.log_tail)
    assert forwarder.terminate() == 0
    rows_tree = await tree_from_rows(db, 0, epoch)
    assert merkle.root(tiles.TileReader(await stored_tiles(db, 0, epoch)), rows_tree.size) == rows_tree.root()
    assert "recomputing the Merkle tree" in forwarder.log_path.read_text()
    assert await db.fetchval("SELECT count(*) FROM repair_incidents") == 0
