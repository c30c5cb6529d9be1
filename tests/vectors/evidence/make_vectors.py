"""Builds jcs-signing.json: the worked example of docs/verifying.md ("The
evidence bundle"): what is hashed and signed, and how key_id is derived.

Run `python tests/vectors/evidence/make_vectors.py > tests/vectors/evidence/jcs-signing.json`
to regenerate; tests/repair/test_evidence_signing.py checks the file is what
this produces and that the project's code agrees with it. Uses the `rfc8785`
library, hashlib and cryptography only (Ed25519 signatures are deterministic).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SEED = hashlib.sha256(b"symphony evidence bundle test vector").digest()
# As a bundle file may carry it: keys unsorted, 100.0 written with a fraction,
# non-ASCII text, and an immutability block that the signature does not cover.
DOCUMENT = (
    '{"phase": "7R", "idempotency_metrics": {"idempotency_success_rate": 100.0, "duplicate_requests": 3},'
    ' "issuer": "caf\\u00e9 \u20ac", "bcdr": {"database_restore": {"status": "not_run", "tests": []}},'
    ' "immutability": {"hash_algorithm": "SHA-256"}}'
)


def build() -> dict[str, Any]:
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    document = json.loads(DOCUMENT)
    canonical = rfc8785.dumps({k: v for k, v in document.items() if k != "immutability"})
    return {
        "what": "RFC 8785 (JCS) of the bundle without its immutability object; SHA-256 and Ed25519 over those bytes",
        "private_key_seed_hex": SEED.hex(),
        "public_key_hex": raw.hex(),
        "key_id": "ed25519:" + hashlib.sha256(raw).hexdigest()[:16],
        "document": DOCUMENT,
        "canonical_utf8": canonical.decode("utf-8"),
        "canonical_hex": canonical.hex(),
        "bundle_hash": hashlib.sha256(canonical).hexdigest(),
        "signature_base64": base64.b64encode(key.sign(canonical)).decode(),
    }


if __name__ == "__main__":
    print(json.dumps(build(), indent=2, ensure_ascii=False))
