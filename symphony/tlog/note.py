"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, strictly.

A note is text ending in a newline, a blank line, then signature lines
`— <key name> base64(key id (4 bytes, big-endian) || signature)`. Key ids are
SHA-256(name || 0x0A || type || public key)[:4]; type 0x01 is a plain Ed25519
note signature, 0x04 a timestamped Ed25519 cosignature (c2sp.org/tlog-cosignature,
see `symphony.tlog.cosignature`). Verifier keys are written
`<name>+<hex key id>+base64(type || public key)`.

Parsing refuses anything ambiguous, after golang.org/x/mod/sumdb/note: non-UTF-8,
control characters other than newline, a missing final newline, no signatures,
more than `MAX_SIGNATURES` lines, malformed base64 or names.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 1 << 20
_DASH = "\u2014 "


class NoteError(ValueError):
    """A malformed note, key or signature line; or no trusted signature verified."""


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"key name {name!r} is empty or contains a space or '+'")


def key_id(name: str, signature_type: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([signature_type]) + public_key).digest()[:4]


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """A trusted (name, key id, key): what a verifier is configured with."""

    name: str
    signature_type: int
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.signature_type, self.public_key)

    def vkey(self) -> str:
        material = base64.b64encode(bytes([self.signature_type]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        parts = vkey.strip().split("+", 2)  # the base64 key may itself contain "+"
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<hex key id>+<base64 key>")
        name, hex_id, material_b64 = parts
        _check_name(name)
        try:
            material = base64.b64decode(material_b64, validate=True)
            wanted_id = bytes.fromhex(hex_id)
        except (binascii.Error, ValueError) as exc:
            raise NoteError(f"verifier key {name}: {exc}") from None
        if len(hex_id) != 8 or len(material) != 33 or material[0] not in (ED25519, COSIGNATURE_V1):
            raise NoteError(f"verifier key {name}: not an Ed25519 key (type 0x01 or 0x04, 32 bytes)")
        verifier = cls(name, material[0], material[1:])
        if verifier.key_id != wanted_id:
            raise NoteError(f"verifier key {name}: key id {hex_id} does not match the key")
        return verifier

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 key that signs notes (type 0x01)."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, ED25519, raw_public_key(self.private_key.public_key()))

    def signature_line(self, text: str) -> str:
        signature = self.private_key.sign(_checked_text(text).encode())
        return signature_line(self.name, self.verifier.key_id + signature)


def signature_line(name: str, blob: bytes) -> str:
    return f"{_DASH}{name} {base64.b64encode(blob).decode()}\n"


def _checked_text(text: str) -> str:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("note text contains a control character")
    return text


def sign(text: str, *signers: Signer) -> str:
    """The signed note: text, blank line, one signature line per signer."""
    if not signers:
        raise NoteError("a note needs at least one signature")
    return _checked_text(text) + "\n" + "".join(s.signature_line(text) for s in signers)


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    blob: bytes  # after the key id: the algorithm's signature bytes


def split(note: bytes) -> tuple[str, list[Signature]]:
    """Parse a signed note into its text and signature lines (nothing verified yet)."""
    if len(note) > MAX_NOTE_BYTES:
        raise NoteError(f"note is larger than {MAX_NOTE_BYTES} bytes")
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("note is not UTF-8") from None
    if not decoded.endswith("\n"):
        raise NoteError("note does not end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in decoded):
        raise NoteError("note contains a control character")
    cut = decoded.rfind("\n\n")
    if cut < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = decoded[: cut + 1], decoded[cut + 2:]
    lines = block.split("\n")[:-1]
    if not lines:
        raise NoteError("note has no signatures")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        if not line.startswith(_DASH):
            raise NoteError(f"malformed signature line {line[:40]!r}")
        name, space, encoded = line[len(_DASH):].partition(" ")
        _check_name(name)
        try:
            blob = base64.b64decode(encoded, validate=True) if space else b""
        except binascii.Error:
            raise NoteError(f"signature of {name} is not base64") from None
        if len(blob) < 5:
            raise NoteError(f"signature of {name} is too short")
        signatures.append(Signature(name, blob[:4], blob[4:]))
    return text, signatures


def open_note(note: bytes, verifiers: list[Verifier]) -> tuple[str, list[Verifier]]:
    """Verify `note` against trusted Ed25519 (type 0x01) keys: (text, keys that signed).

    Unknown signatures are ignored (the spec's rule, so cosignatures ride along);
    a known key whose signature fails makes the whole note fail; no verified
    signature at all fails.
    """
    text, signatures = split(note)
    known = {(v.name, v.key_id): v for v in verifiers if v.signature_type == ED25519}
    signed: list[Verifier] = []
    for signature in signatures:
        verifier = known.get((signature.name, signature.key_id))
        if verifier is None:
            continue
        if not verifier.verify(text.encode(), signature.blob):
            raise NoteError(f"signature of {signature.name} does not verify")
        if verifier not in signed:
            signed.append(verifier)
    if not signed:
        raise NoteError("no signature by a trusted key")
    return text, signed
