"""Writes the worked export example of docs/verifying.md ("Exports") into example/.

    .venv/bin/python tests/vectors/export/make_export_vectors.py

A six-record stream (node-a, stream 0, epoch 000102…0f): GENESIS, INGRESS and
OUTCOME `executed` of attestation 7200000000000001 (bank-a, with an outbox
row), INGRESS and OUTCOME `rejected` of attestation 7200000000000002, a
HEARTBEAT. Checkpoint of size 6, cosigned. The export is the seq range 2..5,
so it carries the frontier at size 1 and a consistency proof from 5 to 6.
Fixed key seeds and times: re-running it reproduces the files byte for byte
(tests/verify/test_export_vectors.py checks that, and verifies the example
with `symphony verify export` and with tests/independent_verifier.py).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from symphony import attestation, exports
from symphony.tlog import checkpoint, merkle, note, origins

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE / "example"
NODE_SEED = bytes([0x11]) * 32
WITNESS_SEED = bytes([0x22]) * 32
EXPORT_SEED = bytes([0x33]) * 32
EPOCH = bytes(range(16))
COSIGNED_AT = 1_700_000_000
T0 = 1_700_000_000_000_000  # µs
A1, A2 = 7_200_000_000_000_001, 7_200_000_000_000_002
OUTBOX_ID = "0190a000-0000-7000-8000-000000000001"


def canonical(seq: int, attestation_id: int, kind: int, body: bytes) -> bytes:
    return struct.pack("<IQQHHI", len(body), seq, attestation_id, kind, 0, 0) + body


def ingress(at_us: int, n: int) -> bytes:
    return attestation.encode(attestation.IngressBody(
        version=1, received_at_us=at_us, participant_id="bank-a", auth_method="jwt", key_id="kid-1",
        policy_version=1, method="POST", route="/v1/payments", executes=True,
        body_sha256=hashlib.sha256(f"body-{n}".encode()).digest(), idempotency_key_hash=b"", traceparent="",
        verdict="accepted"))


def outcome(seq: int, at_us: int, disposition: str) -> bytes:
    return attestation.encode(attestation.OutcomeBody(
        version=1, ingress_seq=seq, completed_at_us=at_us, status=201 if disposition == "executed" else 422,
        disposition=disposition, latency_us=900, reason=""))


def records() -> list[bytes]:
    genesis = EPOCH + struct.pack("<HB", 0, 6) + b"node-a"
    return [canonical(1, 0, 1, genesis),
            canonical(2, A1, 2, ingress(T0, 1)),
            canonical(3, A1, 3, outcome(2, T0 + 1000, "executed")),
            canonical(4, A2, 2, ingress(T0 + 2000, 2)),
            canonical(5, A2, 3, outcome(4, T0 + 3000, "rejected")),
            canonical(6, 0, 4, attestation.encode(attestation.HeartbeatBody(version=1, at_us=T0 + 4000)))]


def build() -> dict[str, bytes]:
    """File name -> bytes of the example export."""
    node = note.Signer(origins.log_name("symphony.example/vectors", "node-a"),
                       Ed25519PrivateKey.from_private_bytes(NODE_SEED))
    witness = checkpoint.Cosigner("witness.example/w1", Ed25519PrivateKey.from_private_bytes(WITNESS_SEED))
    signer = note.Signer(exports.DEFAULT_KEY_NAME, Ed25519PrivateKey.from_private_bytes(EXPORT_SEED))
    all_records = records()
    tree = merkle.MemoryTree()
    chains = []
    prev = bytes(32)
    for record in all_records:
        tree.append(record)
        prev = hashlib.sha256(prev + record).digest()
        chains.append(prev)
    a, b, n = 2, 5, tree.size
    cp = checkpoint.Checkpoint(origins.origin(node.name, 0, EPOCH), n, tree.root())
    stream = exports.StreamLine(
        stream=0, node_id="node-a", stream_id=0, epoch=EPOCH.hex(), first_seq=a, last_seq=b,
        prev_chain_hash=chains[a - 2].hex(), frontier=[h.hex() for h in merkle.frontier_hashes(tree.read, a - 1)],
        checkpoint_size=n, consistency=[h.hex() for h in merkle.consistency_proof(tree.read, b, n)])
    cp_line = exports.CheckpointLine(0, n, checkpoint.sign(cp, node), [witness.cosign(cp.text(), COSIGNED_AT)])
    row = exports.OutboxLine(
        id=OUTBOX_ID, intent_id="0190a000-0000-7000-8000-0000000000a1", participant_id="bank-a", attestation_id=A1,
        ingress_node_id="node-a", ingress_stream_id=0, ingress_seq=2,
        ingress_body_sha256=hashlib.sha256(b"body-1").hexdigest(), rail="mtn-momo", status="IN_FLIGHT",
        attempt_count=1, created_at="2023-11-14T22:13:20.001500Z", completed_at=None)
    events = [exports.EventLine(1, OUTBOX_ID, None, "PENDING", 0, "payments-service", None,
                                "2023-11-14T22:13:20.001500Z"),
              exports.EventLine(2, OUTBOX_ID, "PENDING", "IN_FLIGHT", 1, "relayer-1", None,
                                "2023-11-14T22:13:20.002000Z")]
    encode = msgspec.json.encode
    files = {
        exports.STREAMS: encode(stream) + b"\n",
        exports.records_file(0): b"".join(f"{chains[s - 1].hex()} {all_records[s - 1].hex()}\n".encode()
                                          for s in range(a, b + 1)),
        exports.CHECKPOINTS: encode(cp_line) + b"\n",
        exports.OUTBOX: encode(row) + b"\n",
        exports.EVENTS: b"".join(encode(e) + b"\n" for e in events),
    }
    order = [exports.STREAMS, exports.CHECKPOINTS, exports.records_file(0), exports.OUTBOX, exports.EVENTS]
    entries = [exports.FileEntry(name, len(files[name]), hashlib.sha256(files[name]).hexdigest(),
                                 files[name].count(b"\n")) for name in order]
    selection = exports.Selection(node_id="node-a", stream_id=0, epoch=EPOCH.hex(), first_seq=a, last_seq=b)
    manifest = exports.Manifest(selection, "2023-11-14T22:14:00.000000Z", entries)
    files[exports.MANIFEST] = note.sign(manifest.text(), signer).encode()
    files["../example.policy"] = f"log {node.verifier.vkey()}\nwitness w1 {witness.verifier.vkey()}\nquorum w1\n".encode()
    files["../example.vkey"] = (signer.verifier.vkey() + "\n").encode()
    return files


def main() -> None:
    EXAMPLE.mkdir(exist_ok=True)
    for name, data in build().items():
        (EXAMPLE / name).write_bytes(data)


if __name__ == "__main__":
    main()
