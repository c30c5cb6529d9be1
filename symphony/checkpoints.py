"""The node's side of the verifiable log: sign a stream epoch's checkpoint, publish it.

The ingress sidecar owns the journal writer, so it cuts checkpoints: it reads
the tree size and root the journal keeps (journal.Writer.tree_size/tree_root),
signs them here with the node's log key (docs/verifying.md: note name
`<prefix>/<node_id>`, origin `<name>/<stream_id>/<epoch hex>`), journals the
signed note as a CHECKPOINT record, and publishes it as the static file
`<publish_dir>/<origin>/checkpoint` (tlog-tiles' layout for a checkpoint),
replaced atomically so a reader never sees half of one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from symphony.errors import ConfigError
from symphony.files import write_atomically
from symphony.keys import private_key_from_pem
from symphony.tlog import checkpoint, note, origins


def load_log_key(path: Path) -> Ed25519PrivateKey:
    try:
        return private_key_from_pem(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"node log key {path} is unreadable: {exc}") from None


@dataclass(frozen=True)
class Signed:
    checkpoint: checkpoint.Checkpoint
    note: str


class CheckpointSigner:
    """Signs the checkpoints of every stream of one node with the node's key."""

    def __init__(self, key: Ed25519PrivateKey, prefix: str, node_id: str, publish_dir: Path | None = None) -> None:
        self.signer = note.Signer(origins.log_name(prefix, node_id), key)
        self.publish_dir = publish_dir
        self._publishing = threading.Lock()  # publish runs in a worker thread, close() in the loop's
        self._published: dict[str, int] = {}  # origin -> size of the file written last

    @property
    def vkey(self) -> str:
        return self.signer.verifier.vkey()

    def origin(self, stream_id: int, epoch: bytes) -> str:
        return origins.origin(self.signer.name, stream_id, epoch)

    def sign(self, stream_id: int, epoch: bytes, size: int, root: bytes) -> Signed:
        cp = checkpoint.Checkpoint(self.origin(stream_id, epoch), size, root)
        return Signed(cp, checkpoint.sign(cp, self.signer))

    def publish(self, signed: Signed) -> Path | None:
        """Write `<publish_dir>/<origin>/checkpoint` (no-op without a publish dir).

        One write at a time, and never a smaller tree over a larger one this
        signer wrote: callers in different threads cannot make the file go back."""
        if self.publish_dir is None:
            return None
        origin, size = signed.checkpoint.origin, signed.checkpoint.size
        target = self.publish_dir / origin / "checkpoint"
        with self._publishing:
            if self._published.get(origin, -1) > size:
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(target, signed.note.encode())
            self._published[origin] = size
        return target
