"""Helpers for the verifiable-log tests of the forwarder: journals whose writer
cuts signed CHECKPOINT records, the tree recomputed from PostgreSQL's rows,
and a witness process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import journal
from symphony.checkpoints import CheckpointSigner
from symphony.tlog import merkle, note, tiles
from tests.forwarder.conftest import NODE, free_port
from witness.cli import keygen

PREFIX = "symphony.example/test"
WITNESS_NAME = "witness.example/w1"


def signer() -> CheckpointSigner:
    return CheckpointSigner(Ed25519PrivateKey.generate(), PREFIX, NODE)


def cut(writer: journal.Writer, key: CheckpointSigner, stream_id: int, *, lie: bool = False) -> journal.CheckpointCut:
    """Cut a CHECKPOINT record; `lie` signs (with the node key) a root that is not the tree's."""
    def sign(size: int, root: bytes) -> bytes:
        return key.sign(stream_id, writer.epoch, size, bytes(32) if lie else root).note.encode()

    found = writer.checkpoint(sign)
    assert found is not None
    return found


def fill_signed(writer: journal.Writer, key: CheckpointSigner, stream_id: int, count: int, every: int) -> int:
    """Append `count` INGRESS records with a signed CHECKPOINT after every
    `every` of them and one at the end, as a sidecar with a log key does
    (retention needs a checkpoint covering what it releases); returns the head."""
    from tests.forwarder.conftest import fill

    done = 0
    while done < count:
        step = min(every, count - done)
        fill(writer, step)
        done += step
        cut(writer, key, stream_id)
    return writer.next_seq - 1


async def tree_from_rows(db: asyncpg.Connection, stream_id: int, epoch: bytes) -> merkle.MemoryTree:
    """The tree recomputed from the canonical bytes PostgreSQL holds, in seq order."""
    tree = merkle.MemoryTree()
    for row in await db.fetch("SELECT stream_seq, canonical FROM ingress_attestations WHERE node_id = $1 "
                              "AND stream_id = $2 AND epoch = $3 ORDER BY stream_seq", NODE, stream_id, epoch):
        assert row["stream_seq"] == tree.size + 1
        tree.append(bytes(row["canonical"]))
    return tree


async def stored_tiles(db: asyncpg.Connection, stream_id: int, epoch: bytes) -> dict[tiles.TileKey, bytes]:
    rows = await db.fetch("SELECT level, tile_index, hashes FROM log_tiles WHERE node_id = $1 AND stream_id = $2 "
                          "AND epoch = $3", NODE, stream_id, epoch)
    return {(r["level"], r["tile_index"]): bytes(r["hashes"]) for r in rows}


@dataclass
class Witness:
    """`symphony witness` as a child process trusting one node key."""

    url: str
    port: int
    config: Path
    verifier: note.Verifier
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, tmp_path: Path, node_vkey: str) -> Witness:
        cosigner = keygen(WITNESS_NAME, tmp_path / "witness.key")
        port, admin = free_port(), free_port()
        config = tmp_path / "witness.toml"
        config.write_text(f'name = "{WITNESS_NAME}"\nkey_file = "{tmp_path / "witness.key"}"\n'
                          f'state_dir = "{tmp_path / "witness-state"}"\n'
                          f'trusted_logs = ["{PREFIX}/{NODE} {node_vkey}"]\n'
                          f"listen_port = {port}\nadmin_port = {admin}\n")
        return cls(f"http://127.0.0.1:{port}", port, config, cosigner.verifier)

    @property
    def entry(self) -> str:
        return f"{self.url} {self.verifier.vkey()}"

    def start(self) -> Witness:
        import socket

        self.process = subprocess.Popen([sys.executable, "-m", "symphony", "witness", "--config", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"witness exited {self.process.returncode}: "
                                     f"{self.process.stderr.read().decode()[-2000:] if self.process.stderr else ''}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.02)  # poll interval while waiting for the port
        raise AssertionError("witness did not listen")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)
        self.process = None
