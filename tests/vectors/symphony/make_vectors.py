"""Writes the worked example of docs/verifying.md (run from the repository root).

    .venv/bin/python tests/vectors/symphony/make_vectors.py

Everything is deterministic (fixed key seeds, fixed times; Ed25519 signatures
are deterministic), so re-running it reproduces the files byte for byte;
tests/verify/test_vectors.py checks that, and checks the files with a
verifier written from the documentation alone.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from symphony.tlog import checkpoint, merkle, note, origins, proof

HERE = Path(__file__).resolve().parent
NODE_SEED = bytes([0x11]) * 32
WITNESS_SEED = bytes([0x22]) * 32
EPOCH = bytes(range(16))
COSIGNED_AT = 1_700_000_000


def canonical(seq: int, attestation_id: int, kind: int, body: bytes) -> bytes:
    """body_len u32 | seq u64 | attestation_id u64 | type u16 | flags u16 = 0 | reserved u32 = 0 | body."""
    return struct.pack("<IQQHHI", len(body), seq, attestation_id, kind, 0, 0) + body


def build() -> dict[str, object]:
    node = note.Signer(origins.log_name("symphony.example/vectors", "node-a"),
                       Ed25519PrivateKey.from_private_bytes(NODE_SEED))
    witness = checkpoint.Cosigner("witness.example/w1", Ed25519PrivateKey.from_private_bytes(WITNESS_SEED))
    genesis_body = EPOCH + struct.pack("<HB", 0, 6) + b"node-a"
    records = [canonical(1, 0, 1, genesis_body),
               canonical(2, 7_200_000_000_000_001, 2, b"\x9a\xa6bank-a"),  # an INGRESS body (bytes as stored)
               canonical(3, 7_200_000_000_000_001, 3, b"\x96\xcc\xc9")]   # its OUTCOME
    tree = merkle.MemoryTree()
    for record in records:
        tree.append(record)
    cp = checkpoint.Checkpoint(origins.origin(node.name, 0, EPOCH), tree.size, tree.root())
    signed = checkpoint.sign(cp, node)
    cosignature = witness.cosign(cp.text(), COSIGNED_AT)
    path = merkle.inclusion_proof(tree.read, 1, tree.size)
    proof_file = proof.ProofFile(1, path, (signed + cosignature).encode(), extra=records[1]).text()
    return {
        "node_vkey": node.verifier.vkey(),
        "witness_vkey": witness.verifier.vkey(),
        "records_canonical_hex": [r.hex() for r in records],
        "leaf_hashes_hex": [merkle.leaf_hash(r).hex() for r in records],
        "node_0_1_hex": merkle.node_hash(merkle.leaf_hash(records[0]), merkle.leaf_hash(records[1])).hex(),
        "root_hex": tree.root().hex(),
        "checkpoint_text": cp.text(),
        "signed_checkpoint": signed,
        "cosignature_line": cosignature,
        "cosigned_message": checkpoint.cosigned_message(cp.text(), COSIGNED_AT).decode(),
        "inclusion_index": 1,
        "inclusion_path_hex": [h.hex() for h in path],
        "proof_file": proof_file.decode(),
        "policy": f"log {node.verifier.vkey()}\nwitness w1 {witness.verifier.vkey()}\nquorum w1\n",
    }


def main() -> None:
    vectors = build()
    (HERE / "vectors.json").write_text(json.dumps(vectors, indent=2) + "\n")
    (HERE / "example.tlog-proof").write_text(str(vectors["proof_file"]))
    (HERE / "example.policy").write_text(str(vectors["policy"]))


if __name__ == "__main__":
    main()
