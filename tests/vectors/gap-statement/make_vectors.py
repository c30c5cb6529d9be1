"""Writes the gap-statement worked example of docs/verifying.md (run from the repository root).

    .venv/bin/python tests/vectors/gap-statement/make_vectors.py

Deterministic (a fixed key seed, fixed times; Ed25519 signatures are
deterministic), so re-running it reproduces the files byte for byte;
tests/verify/test_gap_statement_vectors.py checks that, and checks the files
with hashlib and `cryptography` alone.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from symphony import gap_statement
from symphony.tlog import note

HERE = Path(__file__).resolve().parent
REPAIR_SEED = bytes([0x33]) * 32
KEY_NAME = "symphony.example/vectors/gap-statements"
UTC = dt.timezone.utc
# The checkpoint of tests/vectors/symphony/vectors.json (stream 0 of node-a, 3 records).
CHECKPOINT = gap_statement.CheckpointRef(
    "symphony.example/vectors/node-a/0/000102030405060708090a0b0c0d0e0f", 3,
    base64.b64decode("J1DsD5H7AGh654H50GCjVZMeUIqfZBkXxqshe2QBiXY="))


def build() -> dict[str, object]:
    signer = note.Signer(KEY_NAME, Ed25519PrivateKey.from_private_bytes(REPAIR_SEED))
    statement = gap_statement.Statement(
        window_start=dt.datetime(2026, 12, 5, 11, tzinfo=UTC), window_end=dt.datetime(2026, 12, 5, 12, tzinfo=UTC),
        as_of=dt.datetime(2026, 12, 5, 12, 5, 7, tzinfo=UTC), checkpoints=(CHECKPOINT,),
        participants={"bank-a": gap_statement.Counts(3, 2, 0, 1, 0),
                      "bank b": gap_statement.Counts(1, 0, 1, 0, 0)},
        ghosts=(gap_statement.Ghost("bank-a", "node-a", 0, 2, 7_200_000_000_000_001),))
    body = statement.body()
    signed = gap_statement.sign(statement, signer)
    signature_line = signed[len(body) + 1:]
    blob = base64.b64decode(signature_line.split(" ")[2])
    return {
        "private_seed_hex": REPAIR_SEED.hex(),
        "public_key_hex": signer.verifier.public_key.hex(),
        "vkey": signer.verifier.vkey(),
        "key_id_hex": signer.verifier.key_id.hex(),
        "body": body,
        "body_hex": body.encode().hex(),
        "signature_hex": blob[4:].hex(),
        "signed_note": signed,
    }


def main() -> None:
    vectors = build()
    (HERE / "vectors.json").write_text(json.dumps(vectors, indent=2, ensure_ascii=False) + "\n")
    (HERE / "example.gap-statement").write_text(str(vectors["signed_note"]))
    (HERE / "example.vkey").write_text(str(vectors["vkey"]) + "\n")


if __name__ == "__main__":
    main()
