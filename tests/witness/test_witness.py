"""The witness daemon against the C2SP tlog-witness rules, as a real process over real HTTP.

Goal: the witness cosigns exactly the checkpoints consistent with the last one
it cosigned for the origin, persists that state before it answers, and every
refusal has the status code the specification gives. Method: a node key signs
checkpoints of an in-memory RFC 9162 tree; `symphony witness` runs as a child
process on 127.0.0.1 with its own key and state directory; requests are sent
with aiohttp; cosignatures are checked with a verification written here from
the tlog-cosignature text (not the project's verifier).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from symphony.tlog import checkpoint, merkle, note
from tests.conftest import free_port
from witness.cli import keygen

LOG_NAME = "symphony.example/test/node-a"
ORIGIN = f"{LOG_NAME}/0/{'ab' * 16}"
WITNESS_NAME = "witness.example/w1"


@dataclass
class Log:
    """A node's log: a tree and the key that signs its checkpoints."""

    signer: note.Signer
    tree: merkle.MemoryTree
    origin: str = ORIGIN

    def grow(self, count: int) -> None:
        for _ in range(count):
            self.tree.append(f"record {self.tree.size}".encode())

    def signed(self, size: int | None = None, root: bytes | None = None) -> str:
        size = self.tree.size if size is None else size
        cp = checkpoint.Checkpoint(self.origin, size, root if root is not None else self.tree.root(size))
        return note.sign(cp.text(), self.signer)

    def body(self, old: int, size: int | None = None, proof: list[bytes] | None = None,
             root: bytes | None = None) -> bytes:
        size = self.tree.size if size is None else size
        if proof is None:
            proof = merkle.consistency_proof(self.tree.read, old, size) if 0 < old < size else []
        lines = [f"old {old}"] + [base64.b64encode(h).decode() for h in proof]
        return ("\n".join(lines) + "\n\n" + self.signed(size, root)).encode()


@dataclass
class WitnessProcess:
    url: str
    state_dir: Path
    config: Path
    process: subprocess.Popen[bytes]
    public_key: bytes

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "symphony", "witness", "--config", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_listening(port: int, process: subprocess.Popen[bytes], deadline_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"witness exited {process.returncode}: {process.stderr.read().decode()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)  # poll interval while waiting for the condition
    raise AssertionError("witness did not listen")


@pytest.fixture
def log() -> Log:
    return Log(note.Signer(LOG_NAME, Ed25519PrivateKey.generate()), merkle.MemoryTree())


@pytest.fixture
def witness(tmp_path: Path, log: Log) -> Iterator[WitnessProcess]:
    cosigner = keygen(WITNESS_NAME, tmp_path / "witness.key")
    assert (tmp_path / "witness.key").stat().st_mode & 0o777 == 0o600
    port, admin = free_port(), free_port()
    config = tmp_path / "witness.toml"
    config.write_text(f'name = "{WITNESS_NAME}"\nkey_file = "{tmp_path / "witness.key"}"\n'
                      f'state_dir = "{tmp_path / "state"}"\n'
                      f'trusted_logs = ["{LOG_NAME} {log.signer.verifier.vkey()}"]\n'
                      f"listen_port = {port}\nadmin_port = {admin}\n")
    w = WitnessProcess(f"http://127.0.0.1:{port}", tmp_path / "state", config, None,  # type: ignore[arg-type]
                       note.raw_public_key(cosigner.private_key.public_key()))
    w.start()
    _wait_listening(port, w.process)
    yield w
    if w.process.poll() is None:
        w.process.send_signal(signal.SIGTERM)
        assert w.process.wait(20) == 0


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _add(http: aiohttp.ClientSession, witness: WitnessProcess, body: bytes) -> tuple[int, str, str]:
    async with http.post(witness.url + "/add-checkpoint", data=body) as response:
        return response.status, await response.text(), response.headers.get("Content-Type", "")


def _check_cosignature(line: str, checkpoint_text: str, public_key: bytes) -> int:
    """tlog-cosignature/v1 from the spec: id over name/0x04/key; time || Ed25519 over the message."""
    assert line.startswith(f"\u2014 {WITNESS_NAME} ") and line.endswith("\n")
    blob = base64.b64decode(line.split(" ")[2])
    assert blob[:4] == hashlib.sha256(WITNESS_NAME.encode() + b"\n\x04" + public_key).digest()[:4]
    (when,) = struct.unpack(">Q", blob[4:12])
    assert when > 0
    Ed25519PublicKey.from_public_bytes(public_key).verify(blob[12:], f"cosignature/v1\ntime {when}\n{checkpoint_text}".encode())
    return int(when)


async def test_cosigns_consistent_checkpoints_and_serves_the_latest(
        witness: WitnessProcess, log: Log, http: aiohttp.ClientSession) -> None:
    log.grow(5)
    status, text, _ = await _add(http, witness, log.body(0))
    assert status == 200, text
    _check_cosignature(text, log.signed().split("\n\n")[0] + "\n", witness.public_key)
    log.grow(12)
    status, text, _ = await _add(http, witness, log.body(5))
    assert status == 200, text
    cp_text = checkpoint.Checkpoint(ORIGIN, 17, log.tree.root()).text()
    _check_cosignature(text, cp_text, witness.public_key)
    # The monitoring endpoint: the checkpoint with the log's signature and the witness's.
    async with http.get(f"{witness.url}/{hashlib.sha256(ORIGIN.encode()).hexdigest()}/checkpoint") as response:
        assert response.status == 200
        served = await response.read()
    opened, signatures = checkpoint.open_checkpoint(served, log.signer.verifier)
    assert opened.size == 17
    witness_key = note.Verifier(WITNESS_NAME, note.COSIGNATURE_V1, witness.public_key)
    assert WITNESS_NAME in checkpoint.verify_cosignatures(opened.text(), signatures, [witness_key])


async def test_each_refusal_has_the_specified_status(
        witness: WitnessProcess, log: Log, http: aiohttp.ClientSession) -> None:
    log.grow(8)
    assert (await _add(http, witness, log.body(0)))[0] == 200
    log.grow(8)
    # Wrong old size: 409, text/x.tlog.size, the latest size.
    status, text, content_type = await _add(http, witness, log.body(3))
    assert (status, text, content_type.split(";")[0]) == (409, "8\n", "text/x.tlog.size")
    # A proof that does not verify (one bit flipped): 422.
    proof = merkle.consistency_proof(log.tree.read, 8, 16)
    proof[0] = bytes([proof[0][0] ^ 1]) + proof[0][1:]
    assert (await _add(http, witness, log.body(8, proof=proof)))[0] == 422
    # A fork: same size as cosigned, another root: 422.
    assert (await _add(http, witness, log.body(8, size=8, proof=[], root=b"\x07" * 32)))[0] == 422
    # A rollback: a smaller tree than the old size: 400.
    assert (await _add(http, witness, log.body(8, size=4, proof=[])))[0] == 400
    # Unknown origin: 404. A key the witness does not trust for it: 403.
    stranger = Log(note.Signer(LOG_NAME, Ed25519PrivateKey.generate()), log.tree)
    assert (await _add(http, witness, stranger.body(8)))[0] == 403
    other = Log(log.signer, log.tree, origin="elsewhere.example/log")
    assert (await _add(http, witness, other.body(0)))[0] == 404
    # Malformed bodies: 400.
    for body in (b"old 08\n\n" + log.signed().encode(), b"old 8\n" + log.signed().encode(), b"nonsense"):
        assert (await _add(http, witness, body))[0] == 400
    # Nothing refused moved the state: the honest next checkpoint still goes through.
    assert (await _add(http, witness, log.body(8)))[0] == 200
    refused = list((witness.state_dir / "refused").iterdir())
    assert len(refused) >= 3  # the 409 and the two 422s are kept as evidence


async def test_racing_requests_cannot_roll_each_other_back(
        witness: WitnessProcess, log: Log, http: aiohttp.ClientSession) -> None:
    """Two submissions from the same old size: one is cosigned, the other gets 409."""
    log.grow(4)
    assert (await _add(http, witness, log.body(0)))[0] == 200
    log.grow(4)
    small = log.body(4, size=6)
    big = log.body(4, size=8)
    statuses = sorted(s for s, _, _ in await asyncio.gather(_add(http, witness, small), _add(http, witness, big)))
    assert statuses == [200, 409]


async def test_state_survives_kill_9_mid_traffic(
        witness: WitnessProcess, log: Log, http: aiohttp.ClientSession) -> None:
    """kill -9 while submissions are in flight: after a restart the witness's
    latest size is at least every size it answered 200 for (it persisted
    before answering) and it goes on from there."""
    answered = 0
    old = 0
    log.grow(1)
    assert (await _add(http, witness, log.body(0)))[0] == 200
    old = answered = 1
    killer = asyncio.get_running_loop().call_later(0.3, os.kill, witness.process.pid, signal.SIGKILL)
    try:
        for _ in range(100_000):
            log.grow(1)
            try:
                status, _, _ = await _add(http, witness, log.body(old))
            except aiohttp.ClientError:
                break
            assert status == 200
            old = answered = log.tree.size
    finally:
        killer.cancel()
    assert witness.process.wait(10) == -signal.SIGKILL
    assert answered > 1  # some submissions were answered before the kill
    witness.start()
    _wait_listening(int(witness.url.rsplit(":", 1)[1]), witness.process)
    status, text, _ = await _add(http, witness, log.body(0))
    assert status == 409
    persisted = int(text)
    assert answered <= persisted <= log.tree.size
    assert (await _add(http, witness, log.body(persisted)))[0] == 200


async def test_the_log_side_client_submits_catches_up_and_reports_refusals(
        witness: WitnessProcess, log: Log, http: aiohttp.ClientSession) -> None:
    """symphony.tlog.witness_client against the real witness: first submission,
    a wrong idea of the witness's size corrected once through the 409, a fork refused."""
    from symphony.tlog import witness_client

    key = note.Verifier(WITNESS_NAME, note.COSIGNATURE_V1, witness.public_key)

    def prove(old: int, new: int) -> list[bytes]:
        return merkle.consistency_proof(log.tree.read, old, new)

    def current() -> tuple[str, checkpoint.Checkpoint]:
        cp = checkpoint.Checkpoint(ORIGIN, log.tree.size, log.tree.root())
        return note.sign(cp.text(), log.signer), cp

    log.grow(10)
    result = await witness_client.add_checkpoint(http, witness.url, *current(), 0, prove, key)
    assert isinstance(result, witness_client.Cosigned) and WITNESS_NAME in result.timestamps
    log.grow(5)
    # The log believes the witness is at 3 (it lost its own record): the 409 tells it 10.
    result = await witness_client.add_checkpoint(http, witness.url, *current(), 3, prove, key)
    assert isinstance(result, witness_client.Cosigned)
    signed, cp = current()
    forked = checkpoint.Checkpoint(ORIGIN, cp.size, b"\x01" * 32)
    refused = await witness_client.add_checkpoint(http, witness.url, note.sign(forked.text(), log.signer), forked,
                                                  cp.size, prove, key)
    assert isinstance(refused, witness_client.Refused) and refused.status == 422
    with pytest.raises(witness_client.WitnessUnavailable):
        await witness_client.add_checkpoint(http, f"http://127.0.0.1:{free_port()}", signed, cp, cp.size, prove, key,
                                            timeout_seconds=2)
