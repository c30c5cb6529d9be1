"""Retention that cannot hide deletion (issue 13 item 7, journal/FORMAT.md F18), with real processes.

Goal: the forwarder deletes a journal segment only once a checkpoint covering
its last record carries the required witness cosignatures; every release is
recorded in the stream's RELEASES file and in log_releases before the
segment goes; `symphony verify journal` accepts the trimmed copy by anchoring
on the release log, and names a head deleted without a record. Method: a
journal of 64 KiB segments with signed CHECKPOINT records (journal.Writer +
CheckpointSigner), `symphony forwarder` and `symphony witness` as child
processes, the witness started only after the forwarder has shipped
everything (so retention must wait), conditions awaited with deadlines.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg

import journal
from journal._format import list_segments
from tests.forwarder.conftest import NODE, REPO_ROOT, ForwarderProcess, open_writer, stream_dir, wait_for
from tests.forwarder.tlog_helpers import PREFIX, Witness, fill_signed, signer

Factory = Callable[..., ForwarderProcess]


def _symphony(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "symphony", *argv], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT)


def _firsts(directory: Path) -> list[int]:
    """First seqs of the stream's segments, from their names only: a listing
    that races with the forwarder deleting segments opens no file."""
    return [first for first, _ in list_segments(directory)]


def _waiting(metrics: str) -> int:
    found = re.search(r'symphony_forwarder_retention_waiting_segments\{node_id="node-p",stream_id="0"\} (\S+)',
                      metrics)
    return int(float(found.group(1))) if found else -1


async def _witnessed_note(db: asyncpg.Connection, size: int) -> str:
    note = await db.fetchval("SELECT note FROM log_checkpoints WHERE node_id = $1 AND stream_id = 0 AND tree_size = $2",
                             NODE, size)
    lines = await db.fetch("SELECT line FROM log_cosignatures WHERE node_id = $1 AND stream_id = 0 AND tree_size = $2",
                           NODE, size)
    return str(note) + "".join(r["line"] for r in lines)


async def test_release_waits_for_the_witness_is_recorded_and_verifies(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory) -> None:
    """Witness down: every record shipped, checkpoints kept, yet no segment is
    released and /metrics shows the wait. Witness up: cosignatures arrive, the
    shipped segments are released, each release is in RELEASES and in
    log_releases (same range, last leaf, checkpoint with its cosignature), and
    `symphony verify journal` passes on the trimmed copy; the same copy with
    its oldest kept segment also deleted, unrecorded, is named (stream, first
    missing seq), as is a copy whose release log was removed."""
    journal_dir = tmp_path / "journal"
    key = signer()
    witness = Witness.create(tmp_path, key.vkey)
    directory = stream_dir(journal_dir, 0)
    try:
        with open_writer(journal_dir, 0) as writer:
            epoch = writer.epoch
            head = fill_signed(writer, key, 0, 4000, 400)
            forwarder = forwarder_factory(
                database_url, journal_dir, log_origin_prefix=PREFIX, log_key=key.vkey, journal_retention_seconds=0,
                witnesses=json.dumps([witness.entry]), witness_poll_interval_ms=50,
                witness_retry_delay_ms_initial=50, witness_retry_delay_ms_max=200).start()
            segments_before = _firsts(directory)
            assert len(segments_before) > 4

            async def shipped() -> bool:
                return await db.fetchval("SELECT last_seq FROM journal_checkpoints WHERE node_id = $1", NODE) == head

            await wait_for(shipped, "every record shipped", diagnostics=forwarder.log_tail)
            await wait_for(lambda: _waiting(forwarder.metrics()) == len(segments_before) - 1,
                           "retention to report that it waits for a witness", diagnostics=forwarder.log_tail)
            assert "retention waits for a witnessed checkpoint" in forwarder.log_tail()
            assert _firsts(directory) == segments_before
            assert not (directory / "RELEASES").exists()
            assert await db.fetchval("SELECT count(*) FROM log_releases") == 0
            assert await db.fetchval("SELECT count(*) FROM log_checkpoints") == 10

            witness.start()

            async def released() -> bool:
                return _firsts(directory)[0] > 1

            await wait_for(released, "segments released once cosigned", diagnostics=forwarder.log_tail)
            await wait_for(lambda: _waiting(forwarder.metrics()) == 0, "the wait to end")
            assert forwarder.terminate() == 0
    finally:
        witness.stop()
    kept = journal.Reader(directory).segments()
    assert len(kept) == 1  # all sealed segments went: the checkpoint at the end covers them
    log = journal.read_releases(directory)
    assert log.entries and log.torn_bytes == 0
    assert log.entries[0].first_seq == 1 and log.entries[-1].last_seq == kept[0].first_seq - 1
    rows = await db.fetch("SELECT * FROM log_releases WHERE node_id = $1 AND stream_id = 0 ORDER BY first_seq", NODE)
    assert [(r["first_seq"], r["last_seq"], bytes(r["last_leaf_hash"]), r["checkpoint"]) for r in rows] == \
        [(e.first_seq, e.last_seq, e.last_leaf_hash, e.checkpoint) for e in log.entries]
    for row in rows:
        assert bytes(row["epoch"]) == epoch and row["checkpoint_size"] >= row["last_seq"]
        assert "— witness.example/w1 " in row["checkpoint"]  # carried with its cosignature
    # Append-only like the other evidence tables.
    for statement in ("UPDATE log_releases SET last_seq = last_seq", "DELETE FROM log_releases",
                      "TRUNCATE log_releases"):
        try:
            await db.execute(statement)
        except asyncpg.PostgresError:
            continue
        raise AssertionError(f"{statement} was accepted")
    grants = {privilege: await db.fetchval("SELECT has_table_privilege('symphony_forwarder', 'log_releases', $1)",
                                           privilege) for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE",
                                                                        "TRUNCATE")}
    assert grants == {"SELECT": True, "INSERT": True, "UPDATE": False, "DELETE": False, "TRUNCATE": False}
    assert await db.fetchval("SELECT has_table_privilege('symphony_repair', 'log_releases', 'SELECT')")

    newest = await db.fetchval("SELECT max(tree_size) FROM log_cosignatures WHERE node_id = $1", NODE)
    (tmp_path / "checkpoint").write_text(await _witnessed_note(db, newest))
    (tmp_path / "policy").write_text(f"log {key.vkey}\nwitness w1 {witness.verifier.vkey()}\nquorum w1\n")
    args = ("--checkpoint", str(tmp_path / "checkpoint"), "--policy", str(tmp_path / "policy"))
    done = _symphony("verify", "journal", str(directory), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"released_through_seq: {kept[0].first_seq - 1}" in done.stdout

    unrecorded = tmp_path / "unrecorded"
    shutil.copytree(directory, unrecorded)
    (unrecorded / "RELEASES").unlink()
    done = _symphony("verify", "journal", str(unrecorded), *args)
    assert done.returncode == 1
    assert f"stream {NODE}/0: seqs 1..{kept[0].first_seq - 1} were deleted without a valid release record: " \
           "first missing seq 1" in done.stderr


async def test_kill_9_during_releases_always_leaves_a_verifiable_journal(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory) -> None:
    """The forwarder writes the release record (RELEASES, fsync'd; then
    log_releases) before it deletes the segments. SIGKILLed repeatedly while it
    releases segments under a policy of no witnesses (the node's own signed
    checkpoint), every state left on disk verifies; a restarted forwarder
    finishes a recorded release without recording it twice."""
    journal_dir = tmp_path / "journal"
    key = signer()
    directory = stream_dir(journal_dir, 0)
    (tmp_path / "policy").write_text(f"log {key.vkey}\nquorum none\n")
    kills = 0
    with open_writer(journal_dir, 0) as writer:
        forwarder = forwarder_factory(database_url, journal_dir, log_origin_prefix=PREFIX, log_key=key.vkey,
                                      journal_retention_seconds=0, batch_rows_max=200)
        for _ in range(6):
            head = fill_signed(writer, key, 0, 1200, 150)
            before = _firsts(directory)[0]
            forwarder.start()

            async def moved(before: int = before) -> bool:
                return _firsts(directory)[0] > before

            await wait_for(moved, "a release", diagnostics=forwarder.log_tail)
            forwarder.kill()
            kills += 1
            newest = await db.fetchval("SELECT note FROM log_checkpoints WHERE node_id = $1 ORDER BY tree_size DESC "
                                       "LIMIT 1", NODE)
            (tmp_path / "checkpoint").write_text(newest)
            copy = tmp_path / f"copy-{kills}"
            shutil.copytree(directory, copy)
            done = _symphony("verify", "journal", str(copy), "--checkpoint", str(tmp_path / "checkpoint"),
                             "--policy", str(tmp_path / "policy"))
            assert done.returncode == 0, done.stdout + done.stderr
        assert kills == 6 and head > 7000
    forwarder.start()

    async def finished() -> bool:
        entries = journal.read_releases(directory).entries
        return bool(entries) and entries[-1].last_seq == _firsts(directory)[0] - 1 and \
            await db.fetchval("SELECT count(*) FROM log_releases") == len(entries)

    await wait_for(finished, "every recorded release finished and copied to PostgreSQL",
                   diagnostics=forwarder.log_tail)
    assert forwarder.terminate() == 0
    entries = journal.read_releases(directory).entries
    assert [e.first_seq for e in entries] == [1] + [e.last_seq + 1 for e in entries[:-1]]  # contiguous, no repeats


async def _cosigned(db: asyncpg.Connection, epoch: bytes, size: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM log_cosignatures WHERE node_id = $1 AND stream_id = 0 "
                                  "AND epoch = $2 AND tree_size = $3", NODE, epoch, size))


async def test_a_replaced_journals_last_checkpoint_still_reaches_the_witness(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory) -> None:
    """The old epoch's last checkpoint proves its final size: cut while the
    witness is down and followed by a journal replacement (new epoch,
    STREAM_REPLACED), it is still submitted once the witness is back and its
    cosignature stored, next to the new epoch's newest; /metrics counts the
    ended epochs not yet cosigned down to 0."""
    journal_dir = tmp_path / "journal"
    key = signer()
    witness = Witness.create(tmp_path, key.vkey).start()
    try:
        with open_writer(journal_dir, 0) as writer:
            old_epoch = writer.epoch
            first = fill_signed(writer, key, 0, 300, 300)
            forwarder = forwarder_factory(
                database_url, journal_dir, log_origin_prefix=PREFIX, log_key=key.vkey,
                witnesses=json.dumps([witness.entry]), witness_poll_interval_ms=50,
                witness_retry_delay_ms_initial=50, witness_retry_delay_ms_max=200,
                journal_retention_seconds=3600).start()
            await wait_for(lambda: _cosigned(db, old_epoch, first - 1), "the old epoch's first checkpoint cosigned",
                           diagnostics=forwarder.log_tail)
            witness.stop()
            final = fill_signed(writer, key, 0, 200, 200)

            async def kept() -> bool:
                return bool(await db.fetchval("SELECT count(*) FROM log_checkpoints WHERE epoch = $1 AND "
                                              "tree_size = $2", old_epoch, final - 1))

            await wait_for(kept, "the old epoch's last checkpoint shipped", diagnostics=forwarder.log_tail)
        shutil.rmtree(stream_dir(journal_dir, 0))
        with open_writer(journal_dir, 0) as writer:
            new_epoch = writer.epoch
            newest = fill_signed(writer, key, 0, 150, 150)

        async def replaced() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM log_checkpoints WHERE epoch = $1 AND tree_size = $2",
                                          new_epoch, newest - 1))

        await wait_for(replaced, "the new epoch shipped with its checkpoint", diagnostics=forwarder.log_tail)
        assert await db.fetchval("SELECT count(*) FROM journal_epochs WHERE epoch = $1", old_epoch) == 1
        await wait_for(lambda: "symphony_forwarder_witness_ended_epochs_uncosigned{node_id=\"node-p\"} 1.0"
                       in forwarder.metrics(), "the ended epoch counted as not cosigned",
                       diagnostics=forwarder.log_tail)
        assert not await _cosigned(db, old_epoch, final - 1)
        witness.start()
        await wait_for(lambda: _cosigned(db, old_epoch, final - 1), "the old epoch's last checkpoint cosigned",
                       diagnostics=forwarder.log_tail)
        await wait_for(lambda: _cosigned(db, new_epoch, newest - 1), "the new epoch's newest cosigned",
                       diagnostics=forwarder.log_tail)
        await wait_for(lambda: "symphony_forwarder_witness_ended_epochs_uncosigned{node_id=\"node-p\"} 0.0"
                       in forwarder.metrics(), "no ended epoch left uncosigned", diagnostics=forwarder.log_tail)
        assert forwarder.terminate() == 0
    finally:
        witness.stop()


async def test_a_recorded_release_whose_segments_survived_a_crash_is_finished_once(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, forwarder_factory: Factory) -> None:
    """The exact state a kill -9 between the release record and the deletion
    leaves: the forwarder's own RELEASES entry, its segments back in place, and
    (crash before the PostgreSQL copy) no log_releases row. `symphony verify
    journal` accepts it; a restarted forwarder copies the entry to
    log_releases and deletes the segments, without a second entry. Method: a
    real release, then the deleted segment files restored from a copy taken
    before it and the row removed with triggers off (as a crash would leave
    them, since the entry is written first)."""
    journal_dir = tmp_path / "journal"
    key = signer()
    directory = stream_dir(journal_dir, 0)
    with open_writer(journal_dir, 0) as writer:
        head = fill_signed(writer, key, 0, 3000, 500)
    before = tmp_path / "before"
    shutil.copytree(directory, before)
    forwarder = forwarder_factory(database_url, journal_dir, log_origin_prefix=PREFIX, log_key=key.vkey,
                                  journal_retention_seconds=0)
    forwarder.start()

    async def released() -> bool:  # every sealed segment released and its row stored
        return len(_firsts(directory)) == 1 and \
            await db.fetchval("SELECT count(*) FROM log_releases") == len(journal.read_releases(directory).entries)

    await wait_for(released, "every sealed segment released", diagnostics=forwarder.log_tail)
    forwarder.kill()
    entries = journal.read_releases(directory).entries
    assert entries and entries[-1].last_seq == _firsts(directory)[0] - 1
    restored = [p for p in before.glob("*.seg") if not (directory / p.name).exists()]
    assert restored
    for segment in restored:
        shutil.copy2(segment, directory / segment.name)
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute("DELETE FROM log_releases")
    assert _firsts(directory)[0] == 1

    newest = await db.fetchval("SELECT note FROM log_checkpoints WHERE node_id = $1 ORDER BY tree_size DESC LIMIT 1",
                               NODE)
    (tmp_path / "checkpoint").write_text(newest)
    (tmp_path / "policy").write_text(f"log {key.vkey}\nquorum none\n")
    done = _symphony("verify", "journal", str(directory), "--checkpoint", str(tmp_path / "checkpoint"),
                     "--policy", str(tmp_path / "policy"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"releases: {len(entries)}" in done.stdout and head > entries[-1].last_seq

    forwarder.start()

    async def finished() -> bool:
        return await db.fetchval("SELECT count(*) FROM log_releases") == len(entries) and \
            _firsts(directory)[0] == entries[-1].last_seq + 1

    await wait_for(finished, "the recorded release finished", diagnostics=forwarder.log_tail)
    assert forwarder.terminate() == 0
    assert journal.read_releases(directory).entries == entries  # finished, not recorded again
