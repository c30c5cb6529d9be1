"""The sidecar cuts signed checkpoints of each stream into its journal and publishes them.

Goal: with a node key configured, every worker's stream gets CHECKPOINT records
at the interval while traffic flows and one at a clean stop; each covers
exactly the records before it (its root is the RFC 9162 root recomputed from
the journal), the published file is the newest one and verifies with the node
key alone; and after kill -9 the restarted sidecar's next checkpoint is
consistent with every earlier one (never two inconsistent checkpoints for one
origin). Method: a real sidecar process, real HTTP, the journal read back, the
checkpoints checked with symphony.tlog (itself tested against published vectors).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import aiohttp

import journal
from journal import RecordType
from symphony.checkpoints import CheckpointSigner
from symphony.tlog import checkpoint, merkle, note, origins
from symphony.tlog.policy import Policy
from symphony.upstream_headers import write_keypair
from tests.sidecar.conftest import Keys, Upstream, start_sidecar, wait_until

PREFIX = "symphony.example/test"


def _checkpoints(stream_dir: Path) -> list[tuple[journal.Record, checkpoint.Checkpoint]]:
    found = []
    for record in journal.Reader(stream_dir).records():
        if record.type == RecordType.CHECKPOINT:
            body = journal.parse_checkpoint(record.body)
            text, _ = note.split(body.note)
            found.append((record, checkpoint.Checkpoint.parse(text)))
    return found


def _tree(stream_dir: Path) -> merkle.MemoryTree:
    tree = merkle.MemoryTree()
    for record in journal.Reader(stream_dir).records():
        tree.append(record.canonical)
    return tree


async def _pay(http: aiohttp.ClientSession, url: str, keys: Keys, count: int) -> None:
    token = keys.token("bank-a")
    for index in range(count):
        async with http.post(f"{url}/v1/payments", data=b'{"amount": 1}', headers={
                "Authorization": f"Bearer {token}", "Idempotency-Key": f"cp-{os.urandom(6).hex()}-{index}",
                "Content-Type": "application/json"}) as response:
            assert response.status == 201, await response.text()


async def test_checkpoints_cover_the_journal_and_survive_kill_9(
        tmp_path: Path, module_database_url: str, upstream: Upstream, keys: Keys) -> None:
    write_keypair(tmp_path / "node-log.pem", tmp_path / "node-log.pub.pem")
    publish = tmp_path / "published"
    extra: dict[str, Any] = {"log_key_file": str(tmp_path / "node-log.pem"), "log_origin_prefix": PREFIX,
                             "checkpoint_interval_seconds": 0.2, "checkpoint_publish_dir": str(publish)}
    from symphony.checkpoints import load_log_key

    vkey = CheckpointSigner(load_log_key(tmp_path / "node-log.pem"), PREFIX, "node-t").vkey
    policy = Policy.parse(f"log {vkey}\nquorum none\n")
    sidecar = start_sidecar(tmp_path / "run1", database_url=module_database_url, keys=keys,
                            upstream_url=upstream.url, extra=extra)
    stream = sidecar.stream_dir(0)
    async with aiohttp.ClientSession() as http:
        await wait_until(lambda: sidecar.readyz_status() == 200)
        await _pay(http, sidecar.url, keys, 20)
        await wait_until(lambda: len(_checkpoints(stream)) >= 2)
        await _pay(http, sidecar.url, keys, 5)
        # kill -9: whatever checkpoint was or was not being cut, the next run must be consistent.
        workers = sidecar.worker_pids()
        assert workers
        for pid in [sidecar.process.pid, *workers]:
            os.kill(pid, signal.SIGKILL)
        sidecar.process.wait(10)
        await wait_until(lambda: not (stream / "LOCK").exists() or _unlocked(stream))
        again = start_sidecar(tmp_path / "run2", database_url=module_database_url, keys=keys,
                              upstream_url=upstream.url, extra={**extra, "journal_dir": str(sidecar.journal_root)})
        before = len(_checkpoints(stream))
        await wait_until(lambda: again.readyz_status() == 200)
        await _pay(http, again.url, keys, 7)
        await wait_until(lambda: len(_checkpoints(stream)) > before)
        assert again.stop() == 0
    found = _checkpoints(stream)
    assert len(found) >= 3
    tree = _tree(stream)
    epoch = journal.Reader(stream).segments()[0].epoch
    origin = origins.origin(origins.log_name(PREFIX, "node-t"), 0, epoch)
    for record, cp in found:
        # Each covers exactly the records before it, with the root recomputed here.
        assert (cp.origin, cp.size) == (origin, record.seq - 1)
        assert cp.root == tree.root(cp.size)
        body = journal.parse_checkpoint(record.body)
        opened, _ = policy.verify(body.note)  # signed by the node key
        assert opened == cp
    # Consistency between every pair of successive checkpoints (the kill included).
    for (_, older), (_, newer) in zip(found, found[1:]):
        proof = merkle.consistency_proof(tree.read, older.size, newer.size)
        merkle.verify_consistency(older.size, newer.size, proof, older.root, newer.root)
    # The clean stop cut the last one, and the published file is it.
    last_record, last = found[-1]
    assert last_record.seq == tree.size  # nothing after the final CHECKPOINT
    published = (publish / origin / "checkpoint").read_bytes()
    assert policy.verify(published)[0] == last


def _unlocked(stream: Path) -> bool:
    import fcntl

    with open(stream / "LOCK", "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_an_unreadable_log_key_is_a_start_up_failure(tmp_path: Path, module_database_url: str, keys: Keys) -> None:
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("nonsense")
    sidecar = start_sidecar(tmp_path, database_url=module_database_url, keys=keys, upstream_url="http://127.0.0.1:9",
                            extra={"log_key_file": str(bad)}, wait_ready=False)
    assert sidecar.process.wait(30) == 3
    assert "node log key" in sidecar.log()


def test_a_published_checkpoint_never_goes_back(tmp_path: Path) -> None:
    """Goal: the worker publishes in a thread and close() in the loop, so the
    published file must never be replaced by a smaller tree of the same origin.
    Method: one CheckpointSigner publishes size 7 then size 5 for one origin,
    and size 3 for another; the first origin's file still holds size 7, the
    second's size 3."""
    write_keypair(tmp_path / "node.pem", tmp_path / "node.pub.pem")
    from symphony.checkpoints import load_log_key

    signer = CheckpointSigner(load_log_key(tmp_path / "node.pem"), PREFIX, "node-a", tmp_path / "tlog")
    epoch = bytes(range(16))
    newer, older = signer.sign(0, epoch, 7, bytes(32)), signer.sign(0, epoch, 5, bytes(32))
    other = signer.sign(1, epoch, 3, bytes(32))
    written = signer.publish(newer)
    assert written is not None and written.read_text() == newer.note
    assert signer.publish(older) is None
    assert written.read_text() == newer.note
    other_file = signer.publish(other)
    assert other_file is not None and other_file.read_text() == other.note
