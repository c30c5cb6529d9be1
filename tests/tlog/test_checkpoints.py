"""The node's checkpoint signer: the origin, the note and the published file.

Goal: what a sidecar publishes is a C2SP checkpoint under the documented
origin, signed by the node key, and the published file is always whole.
Method: sign a real journal's tree head; verify with the policy-based
verifier; publish twice and read back.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from journal import RecordType, Writer
from symphony.checkpoints import CheckpointSigner
from symphony.tlog.policy import Policy


def test_signed_and_published_checkpoint_of_a_real_stream(tmp_path: Path) -> None:
    signer = CheckpointSigner(Ed25519PrivateKey.generate(), "symphony.example/test", "node-a", tmp_path / "pub")
    with Writer(tmp_path / "j" / "node-a" / "3", "node-a", 3, "none") as writer:
        for i in range(10):
            writer.append(RecordType.INGRESS, b"x" * i, i)
        size, root, epoch = writer.tree_size, writer.tree_root(), writer.epoch
    assert size == 11 and root is not None
    signed = signer.sign(3, epoch, size, root)
    assert signed.checkpoint.origin == f"symphony.example/test/node-a/3/{epoch.hex()}"
    path = signer.publish(signed)
    assert path == tmp_path / "pub" / signed.checkpoint.origin / "checkpoint"
    assert path.read_text() == signed.note
    policy = Policy.parse(f"log {signer.vkey}\nquorum none\n")
    cp, cosigners = policy.verify(path.read_bytes())
    assert (cp.size, cp.root, cosigners) == (11, root, {})
    later = signer.sign(3, epoch, 12, root)
    signer.publish(later)
    assert path.read_text() == later.note and not list(path.parent.glob(".*.tmp"))
