"""The headers the sidecar sets for the upstream, and their signature (invariant 9).

The sidecar strips every incoming `X-Symphony-*` header, then sets the ones
below and signs them with an Ed25519 key only sidecars hold. A service that can
be reached by other means verifies the signature with the public key, so
identity is trusted because it is signed, not because of network topology.

Signed string (UTF-8, fields joined by "\n"):

    symphony-upstream-v1
    <attestation id, decimal>
    <node_id>/<stream_id>/<stream_seq>
    <participant id>
    <policy version, decimal>
    <body SHA-256, lower-case hex>
    <HTTP method, upper case>
    <request path, as forwarded, without query>
    <issued at, unix seconds>

`X-Symphony-Signature: v1;kid=<key id>;ts=<issued at>;sig=<base64url, no padding>`.
A verifier refuses a signature older than its max age (replay bound).
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PREFIX = "x-symphony-"
ATTESTATION_ID = "X-Symphony-Attestation-Id"
STREAM = "X-Symphony-Stream"
PARTICIPANT = "X-Symphony-Participant"
POLICY_VERSION = "X-Symphony-Policy-Version"
BODY_SHA256 = "X-Symphony-Body-SHA256"
SIGNATURE = "X-Symphony-Signature"
DISPOSITION = "X-Symphony-Disposition"  # set by the service on its answer
HLC = "X-Symphony-HLC"  # causality between Symphony nodes
DEFAULT_MAX_AGE_SECONDS = 300


class SignatureError(ValueError):
    """Headers that are missing, malformed, stale or not signed by a sidecar key."""


@dataclass(frozen=True)
class Attested:
    """What the upstream may trust about a request once the signature verifies."""

    attestation_id: int
    node_id: str
    stream_id: int
    stream_seq: int
    participant_id: str
    policy_version: int
    body_sha256_hex: str


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _signed_string(a: Attested, method: str, path: str, issued_at: int) -> bytes:
    stream = f"{a.node_id}/{a.stream_id}/{a.stream_seq}"
    fields = ["symphony-upstream-v1", str(a.attestation_id), stream, a.participant_id,
              str(a.policy_version), a.body_sha256_hex, method.upper(), path, str(issued_at)]
    return "\n".join(fields).encode()


class HeaderSigner:
    """Used by the sidecar: builds the signed upstream headers for one request."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.key_id = key_id(private_key.public_key())

    def headers(self, a: Attested, method: str, path: str, *, now: float | None = None) -> dict[str, str]:
        issued_at = int(time.time() if now is None else now)
        signature = self._key.sign(_signed_string(a, method, path, issued_at))
        encoded = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
        return {
            ATTESTATION_ID: str(a.attestation_id),
            STREAM: f"{a.node_id}/{a.stream_id}/{a.stream_seq}",
            PARTICIPANT: a.participant_id,
            POLICY_VERSION: str(a.policy_version),
            BODY_SHA256: a.body_sha256_hex,
            SIGNATURE: f"v1;kid={self.key_id};ts={issued_at};sig={encoded}",
        }


class HeaderVerifier:
    """Used by services: checks the sidecar's headers and returns what they attest."""

    def __init__(self, public_keys: list[Ed25519PublicKey], *, max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS) -> None:
        self._keys = {key_id(k): k for k in public_keys}
        self._max_age = max_age_seconds

    def verify(self, headers: dict[str, str], method: str, path: str, body: bytes,
               *, now: float | None = None) -> Attested:
        """Raises SignatureError with the reason; never trusts an unsigned field."""
        try:
            stream_node, stream_id, stream_seq = headers[STREAM].rsplit("/", 2)
            attested = Attested(
                attestation_id=int(headers[ATTESTATION_ID]),
                node_id=stream_node,
                stream_id=int(stream_id),
                stream_seq=int(stream_seq),
                participant_id=headers[PARTICIPANT],
                policy_version=int(headers[POLICY_VERSION]),
                body_sha256_hex=headers[BODY_SHA256],
            )
            version, kid_part, ts_part, sig_part = headers[SIGNATURE].split(";")
        except KeyError as exc:
            raise SignatureError(f"missing sidecar header {exc.args[0]}") from None
        except ValueError:
            raise SignatureError("malformed sidecar headers") from None
        if version != "v1" or not kid_part.startswith("kid=") or not ts_part.startswith("ts=") \
                or not sig_part.startswith("sig="):
            raise SignatureError("malformed X-Symphony-Signature")
        key = self._keys.get(kid_part[4:])
        if key is None:
            raise SignatureError("X-Symphony-Signature names an unknown sidecar key")
        try:
            issued_at = int(ts_part[3:])
            signature = base64.urlsafe_b64decode(sig_part[4:] + "=" * (-len(sig_part[4:]) % 4))
        except ValueError:
            raise SignatureError("malformed X-Symphony-Signature") from None
        current = time.time() if now is None else now
        if abs(current - issued_at) > self._max_age:
            raise SignatureError("sidecar signature is outside its max age")
        try:
            key.verify(signature, _signed_string(attested, method, path, issued_at))
        except InvalidSignature:
            raise SignatureError("sidecar signature does not verify") from None
        if hashlib.sha256(body).hexdigest() != attested.body_sha256_hex:
            raise SignatureError("request body does not match the attested SHA-256")
        return attested


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path} is not an Ed25519 public key")
    return key


def write_keypair(private_path: Path, public_path: Path) -> None:
    """Create a new Ed25519 key pair (private key file mode 0600)."""
    import os

    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
