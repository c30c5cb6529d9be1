"""Signatures of `attestation_archives` rows: Ed25519 over exact, documented bytes.

An archive row says "seqs first_seq..last_seq of stream (node_id, stream_id)
left PostgreSQL in partition P; the export's SHA-256 is S and the chain hash of
its last record is H". `audit verify-chain` accepts an archived prefix only if
the row's signature verifies under a public key the verifier pins itself
(`--archive-public-key`, or `archive_public_key` in the repair config), never a
key found in the database. The archiver signs with a private key read from a
file (mode 0600); `symphony up` creates one under `<data_dir>/keys/`.

The signed message is UTF-8 text, exactly these nine lines, each ending in a
single `\\n`, in this order, with no other bytes:

    symphony-attestation-archive-v1
    partition=<partition name>
    node_id=<node id>
    stream_id=<stream id, decimal>
    first_seq=<decimal>
    last_seq=<decimal>
    last_hash=<64 lower-case hex digits, or "-" when the row has none>
    sha256=<64 lower-case hex digits: SHA-256 of the export file>
    key_id=<ed25519:first 16 hex digits of SHA-256(raw 32-byte public key)>

Decimals have no sign, no leading zeros and no spaces. `signature` holds the
64-byte Ed25519 signature (RFC 8032) of that message; `key_id` is the same as
the last line, so a row cannot claim one key and be signed by another.
"""

from __future__ import annotations

import hashlib
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from symphony.errors import SymphonyError
from symphony.keys import private_key_from_pem, public_key_pem, write_new_private_key

HEADER = "symphony-attestation-archive-v1"
PRIVATE_KEY_FILE = "archive-signing.pem"
PUBLIC_KEY_FILE = "archive-signing.pub"
KEYS_DIR = "keys"
_TEXT = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


@dataclass(frozen=True)
class ArchiveFields:
    """What an archive row's signature covers (the columns of the same names)."""

    partition: str
    node_id: str
    stream_id: int
    first_seq: int
    last_seq: int
    last_hash: bytes | None
    sha256: bytes


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def message(fields: ArchiveFields, signer_key_id: str) -> bytes:
    """The exact bytes signed (see the module documentation)."""
    if not (_TEXT.match(fields.partition) and _TEXT.match(fields.node_id)):
        raise ValueError("partition and node id must be 1-200 characters of [A-Za-z0-9._-]")
    if not (0 <= fields.stream_id and 1 <= fields.first_seq <= fields.last_seq and len(fields.sha256) == 32):
        raise ValueError("stream id, seqs or sha256 out of range")
    if fields.last_hash is not None and len(fields.last_hash) != 32:
        raise ValueError("last_hash must be 32 bytes")
    lines = [HEADER, f"partition={fields.partition}", f"node_id={fields.node_id}",
             f"stream_id={fields.stream_id}", f"first_seq={fields.first_seq}", f"last_seq={fields.last_seq}",
             f"last_hash={fields.last_hash.hex() if fields.last_hash is not None else '-'}",
             f"sha256={fields.sha256.hex()}", f"key_id={signer_key_id}"]
    return "".join(line + "\n" for line in lines).encode()


def sign(fields: ArchiveFields, private_key: Ed25519PrivateKey) -> tuple[bytes, str]:
    """(signature, key id) for an archive row."""
    signer = key_id(private_key.public_key())
    return private_key.sign(message(fields, signer)), signer


def verify(fields: ArchiveFields, signature: bytes, row_key_id: str, public_key: Ed25519PublicKey) -> str | None:
    """None when the row is signed by `public_key`; otherwise why not."""
    pinned = key_id(public_key)
    if row_key_id != pinned:
        return f"signed by key {row_key_id!r}, not the pinned key {pinned}"
    try:
        public_key.verify(signature, message(fields, pinned))
    except InvalidSignature:
        return "the signature does not verify under the pinned key"
    except ValueError as exc:
        return f"the row cannot be signed as it is: {exc}"
    return None


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The archiver's key: a PEM (PKCS#8) Ed25519 private key that only its owner can read."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise SymphonyError(f"cannot read the archive signing key {path}: {exc.strerror or exc}",
                            exit_code=2) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SymphonyError(f"the archive signing key {path} is readable by others; chmod 600 it", exit_code=2)
    try:
        return private_key_from_pem(data)
    except ValueError as exc:
        raise SymphonyError(f"the archive signing key {path} is {exc}", exit_code=2) from None


def load_public_key(value: str) -> Ed25519PublicKey:
    """The pinned key: 64 hex digits given directly, or a file holding a PEM
    public key or 64 hex digits."""
    text = value.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    try:
        data = Path(text).read_bytes()
    except OSError as exc:
        raise SymphonyError(f"--archive-public-key {text}: neither 64 hex digits nor a readable file "
                            f"({exc.strerror or exc})", exit_code=2) from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(data.decode().strip()))
        except (ValueError, UnicodeDecodeError):
            raise SymphonyError(f"{text} is neither a PEM public key nor 64 hex digits", exit_code=2) from None
    if not isinstance(key, Ed25519PublicKey):
        raise SymphonyError(f"{text} is not an Ed25519 public key", exit_code=2)
    return key


def ensure_key_pair(data_dir: Path) -> tuple[Path, Path, bool]:
    """(private, public, created): `<data_dir>/keys/archive-signing.pem` (0600)
    and `.pub` (PEM), created when missing; an existing key is kept."""
    keys = data_dir / KEYS_DIR
    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_path, public_path = keys / PRIVATE_KEY_FILE, keys / PUBLIC_KEY_FILE
    created = False
    if not private_path.exists():
        write_new_private_key(private_path)
        created = True
    if created or not public_path.exists():
        public_path.write_bytes(public_key_pem(load_private_key(private_path).public_key()))
    return private_path, public_path, created
