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

Batched form (v2): one Ed25519 signature for every request that became ready
in the same event-loop turn (the sidecar's group commit releases them
together), so the signing cost is shared instead of paid per request. Each
request's signed string (the v1 fields above, first line
`symphony-upstream-v2`) is a leaf of a SHA-256 Merkle tree with domain
separation, RFC 6962 style:

    leaf = SHA-256(0x00 || signed string)
    node = SHA-256(0x01 || left || right)   (an odd last node is carried up unchanged)
    signature = Ed25519(b"symphony-upstream-batch-v2\n" || root)

`X-Symphony-Signature: v2;kid=<key id>;ts=<issued at>;sig=<base64url>;leaf=<index>/<count>;path=<base64url of the sibling hashes, leaf to root>`.
The verifier recomputes the leaf from the headers, walks the path to the root
and checks the signature over the root. It is still an asymmetric Ed25519
signature by a key only sidecars hold (invariant 9); forging one header set
means forging Ed25519 or finding a SHA-256 collision. Verifiers may cache a
verified (key, root, signature) since every request of a batch carries the
same one.
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

from symphony.keys import private_key_from_pem, public_key_from_pem, public_key_pem, write_new_private_key


PREFIX = "x-symphony-"
ATTESTATION_ID = "X-Symphony-Attestation-Id"
STREAM = "X-Symphony-Stream"
PARTICIPANT = "X-Symphony-Participant"
POLICY_VERSION = "X-Symphony-Policy-Version"
BODY_SHA256 = "X-Symphony-Body-SHA256"
SIGNATURE = "X-Symphony-Signature"
DISPOSITION = "X-Symphony-Disposition"  # set by the service on its answer
HLC = "X-Symphony-HLC"  # causality between Symphony nodes
HLC_SIGNATURE = "X-Symphony-HLC-Signature"  # a peer sidecar's signature over X-Symphony-HLC
_HLC_DOMAIN = b"symphony-hlc-v1\n"
_HLC_DIGITS_MAX = 19  # a positive 63-bit id
DEFAULT_MAX_AGE_SECONDS = 300
BATCH_LEAVES_MAX = 1024  # a v2 path has at most 10 hashes
_BATCH_DOMAIN = b"symphony-upstream-batch-v2\n"
_VERIFIED_ROOTS_MAX = 4096


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


def _signed_string(a: Attested, method: str, path: str, issued_at: int, version: str = "v1") -> bytes:
    stream = f"{a.node_id}/{a.stream_id}/{a.stream_seq}"
    fields = [f"symphony-upstream-{version}", str(a.attestation_id), stream, a.participant_id,
              str(a.policy_version), a.body_sha256_hex, method.upper(), path, str(issued_at)]
    return "\n".join(fields).encode()


def _leaf_hash(signed: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + signed).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_paths(leaves: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root over `leaves` and, per leaf, its sibling hashes from leaf to root."""
    assert 1 <= len(leaves) <= BATCH_LEAVES_MAX, len(leaves)
    paths: list[list[bytes]] = [[] for _ in leaves]
    members = [[index] for index in range(len(leaves))]  # leaves under each node of the level
    level = leaves
    while len(level) > 1:
        parents, parent_members = [], []
        for index in range(0, len(level) - 1, 2):
            left, right = level[index], level[index + 1]
            for leaf in members[index]:
                paths[leaf].append(right)
            for leaf in members[index + 1]:
                paths[leaf].append(left)
            parents.append(_node_hash(left, right))
            parent_members.append(members[index] + members[index + 1])
        if len(level) % 2:
            parents.append(level[-1])  # carried up unchanged, no sibling at this level
            parent_members.append(members[-1])
        level, members = parents, parent_members
    return level[0], paths


def merkle_root(leaf: bytes, index: int, count: int, path: list[bytes]) -> bytes | None:
    """The root a leaf and its path lead to, or None when the path does not fit (index, count)."""
    if not 0 <= index < count <= BATCH_LEAVES_MAX:
        return None
    node, position, width, used = leaf, index, count, 0
    while width > 1:
        if position % 2 == 1 or position + 1 < width:
            if used == len(path):
                return None
            sibling = path[used]
            used += 1
            node = _node_hash(sibling, node) if position % 2 == 1 else _node_hash(node, sibling)
        position //= 2
        width = (width + 1) // 2
    return node if used == len(path) else None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class HeaderSigner:
    """Used by the sidecar: builds the signed upstream headers for one request."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.key_id = key_id(private_key.public_key())

    def headers(self, a: Attested, method: str, path: str, *, now: float | None = None) -> dict[str, str]:
        issued_at = int(time.time() if now is None else now)
        encoded = _b64(self._key.sign(_signed_string(a, method, path, issued_at)))
        return _fields(a, f"v1;kid={self.key_id};ts={issued_at};sig={encoded}")

    def headers_batch(self, requests: list[tuple[Attested, str, str]], *,
                      now: float | None = None) -> list[dict[str, str]]:
        """Headers for many requests with one Ed25519 signature (v2, Merkle batch).

        `requests` holds (attested, method, path) per request; one request is
        signed as v1 (no tree to walk).
        """
        count = len(requests)
        assert 1 <= count <= BATCH_LEAVES_MAX, count
        if count == 1:
            attested, method, path = requests[0]
            return [self.headers(attested, method, path, now=now)]
        issued_at = int(time.time() if now is None else now)
        leaves = [_leaf_hash(_signed_string(a, method, path, issued_at, "v2")) for a, method, path in requests]
        root, paths = merkle_paths(leaves)
        prefix = f"v2;kid={self.key_id};ts={issued_at};sig={_b64(self._key.sign(_BATCH_DOMAIN + root))};leaf="
        return [_fields(a, f"{prefix}{index}/{count};path={_b64(b''.join(paths[index]))}")
                for index, (a, _, _) in enumerate(requests)]


def _fields(a: Attested, signature: str) -> dict[str, str]:
    return {
        ATTESTATION_ID: str(a.attestation_id),
        STREAM: f"{a.node_id}/{a.stream_id}/{a.stream_seq}",
        PARTICIPANT: a.participant_id,
        POLICY_VERSION: str(a.policy_version),
        BODY_SHA256: a.body_sha256_hex,
        SIGNATURE: signature,
    }


class HeaderVerifier:
    """Used by services: checks the sidecar's headers and returns what they attest."""

    def __init__(self, public_keys: list[Ed25519PublicKey], *, max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS) -> None:
        self._keys = {key_id(k): k for k in public_keys}
        self._max_age = max_age_seconds
        self._verified: set[tuple[str, bytes, bytes]] = set()  # v2 (kid, signed root, signature)

    @staticmethod
    def _batch_root(attested: Attested, method: str, path: str, issued_at: int, parts: list[str]) -> bytes:
        leaf_part, path_part = parts
        try:
            if not leaf_part.startswith("leaf=") or not path_part.startswith("path="):
                raise ValueError(leaf_part)
            index_text, _, count_text = leaf_part[5:].partition("/")
            index, count = int(index_text), int(count_text)
            siblings_raw = _unb64(path_part[5:])
        except ValueError:
            raise SignatureError("malformed X-Symphony-Signature") from None
        if len(siblings_raw) % 32:
            raise SignatureError("malformed X-Symphony-Signature")
        siblings = [siblings_raw[i:i + 32] for i in range(0, len(siblings_raw), 32)]
        leaf = _leaf_hash(_signed_string(attested, method, path, issued_at, "v2"))
        root = merkle_root(leaf, index, count, siblings)
        if root is None:
            raise SignatureError("X-Symphony-Signature batch path does not fit its leaf index")
        return root

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
            version, kid_part, ts_part, sig_part, *batch_parts = headers[SIGNATURE].split(";")
        except KeyError as exc:
            raise SignatureError(f"missing sidecar header {exc.args[0]}") from None
        except ValueError:
            raise SignatureError("malformed sidecar headers") from None
        if version not in ("v1", "v2") or not kid_part.startswith("kid=") or not ts_part.startswith("ts=") \
                or not sig_part.startswith("sig=") or len(batch_parts) != (2 if version == "v2" else 0):
            raise SignatureError("malformed X-Symphony-Signature")
        key = self._keys.get(kid_part[4:])
        if key is None:
            raise SignatureError("X-Symphony-Signature names an unknown sidecar key")
        try:
            issued_at = int(ts_part[3:])
            signature = _unb64(sig_part[4:])
        except ValueError:
            raise SignatureError("malformed X-Symphony-Signature") from None
        current = time.time() if now is None else now
        if abs(current - issued_at) > self._max_age:
            raise SignatureError("sidecar signature is outside its max age")
        if version == "v1":
            message = _signed_string(attested, method, path, issued_at)
        else:
            message = _BATCH_DOMAIN + self._batch_root(attested, method, path, issued_at, batch_parts)
        if (kid_part, message, signature) not in self._verified:
            try:
                key.verify(signature, message)
            except InvalidSignature:
                raise SignatureError("sidecar signature does not verify") from None
            if version == "v2":  # the batch's other requests carry the same root and signature
                if len(self._verified) >= _VERIFIED_ROOTS_MAX:
                    self._verified.clear()
                self._verified.add((kid_part, message, signature))
        if hashlib.sha256(body).hexdigest() != attested.body_sha256_hex:
            raise SignatureError("request body does not match the attested SHA-256")
        return attested


def sign_hlc(private_key: Ed25519PrivateKey, hlc: int) -> str:
    """`X-Symphony-HLC-Signature` for a peer sidecar's `X-Symphony-HLC: <hlc>`.

    Signed bytes: `symphony-hlc-v1\n` followed by the decimal id. Header value:
    `v1;kid=<key id>;sig=<base64url, no padding>`. A replayed signature can
    only repeat a time a sidecar really issued, and the receiving clock clamps
    what it observes to its own max offset, so no freshness field is needed.
    """
    assert 0 < hlc < (1 << 63), hlc
    signature = _b64(private_key.sign(_HLC_DOMAIN + str(hlc).encode()))
    return f"v1;kid={key_id(private_key.public_key())};sig={signature}"


class HlcVerifier:
    """Used by the sidecar: an X-Symphony-HLC counts only when a peer sidecar signed it."""

    def __init__(self, public_keys: list[Ed25519PublicKey]) -> None:
        self._keys = {key_id(k): k for k in public_keys}

    def verify(self, hlc_text: str, signature: str | None) -> int | None:
        """The signed id, or None (unsigned, malformed, unknown key or a bad signature)."""
        if signature is None or not (0 < len(hlc_text) <= _HLC_DIGITS_MAX and hlc_text.isascii()
                                     and hlc_text.isdigit()):
            return None
        version, _, rest = signature.partition(";kid=")
        kid, _, encoded = rest.partition(";sig=")
        key = self._keys.get(kid)
        if version != "v1" or key is None:
            return None
        try:
            key.verify(_unb64(encoded), _HLC_DOMAIN + hlc_text.encode())
        except (ValueError, InvalidSignature):
            return None
        value = int(hlc_text)
        return value if 0 < value < (1 << 63) else None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        return private_key_from_pem(path.read_bytes())
    except ValueError as exc:
        raise SignatureError(f"{path}: {exc}") from None


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        return public_key_from_pem(path.read_bytes())
    except ValueError as exc:
        raise SignatureError(f"{path}: {exc}") from None


def write_keypair(private_path: Path, public_path: Path) -> None:
    """Create a new Ed25519 key pair (private key file mode 0600), replacing one there."""
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = write_new_private_key(private_path, overwrite=True)
    public_path.write_bytes(public_key_pem(key.public_key()))
