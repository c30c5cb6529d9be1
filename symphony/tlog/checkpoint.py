"""C2SP checkpoints (c2sp.org/tlog-checkpoint) and Ed25519 cosignatures (c2sp.org/tlog-cosignature).

Checkpoint text, exactly:

    <origin>\\n<tree size, decimal, no leading zeros>\\n<base64 root>\\n[<extension line>\\n]*

A cosignature (type 0x04) signs `cosignature/v1\\ntime <T>\\n` followed by the
checkpoint text; its note signature is base64(key id || u64 big-endian T || Ed25519 signature).
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from symphony.tlog import note
from symphony.tlog.merkle import HASH_SIZE

_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_COSIGNATURE_HEADER = "cosignature/v1\n"
_MAX_SIZE = (1 << 63) - 1


class CheckpointError(ValueError):
    """A checkpoint or cosignature that is malformed or does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or any(c.isspace() for c in self.origin):
            raise CheckpointError(f"origin {self.origin!r} is empty or contains spaces")
        if not 0 <= self.size <= _MAX_SIZE:
            raise CheckpointError(f"tree size {self.size} is out of range")
        if len(self.root) != HASH_SIZE:
            raise CheckpointError(f"root is {len(self.root)} bytes, not {HASH_SIZE}")
        if any(not line or "\n" in line for line in self.extensions):
            raise CheckpointError("extension lines must be non-empty single lines")

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise CheckpointError("a checkpoint has at least three lines, each ending in a newline")
        origin, size_line, root_line, *extensions = lines[:-1]
        if not _SIZE.fullmatch(size_line):
            raise CheckpointError(f"tree size {size_line!r} is not a decimal without leading zeros")
        try:
            root = base64.b64decode(root_line, validate=True)
        except binascii.Error:
            raise CheckpointError("root hash is not base64") from None
        return cls(origin, int(size_line), root, tuple(extensions))


def key_covers(key_name: str, origin: str) -> bool:
    """Symphony's rule for which origins a log key may sign: its own name, or
    any origin under `<key name>/` (one node key signs the checkpoints of all
    the node's streams and epochs; C2SP recommends, not requires, name = origin)."""
    return origin == key_name or (origin.startswith(key_name + "/") and len(origin) > len(key_name) + 1)


def sign(checkpoint: Checkpoint, signer: note.Signer) -> str:
    """The signed checkpoint note (the log's own signature, type 0x01)."""
    if not key_covers(signer.name, checkpoint.origin):
        raise CheckpointError(f"the log key {signer.name!r} does not sign for origin {checkpoint.origin!r}")
    return note.sign(checkpoint.text(), signer)


def open_checkpoint(signed: bytes, log_key: note.Verifier) -> tuple[Checkpoint, list[note.Signature]]:
    """Verify the log's signature; returns the checkpoint and every signature line (for cosignatures)."""
    try:
        text, _ = note.open_note(signed, [log_key])
        _, signatures = note.split(signed)
    except note.NoteError as exc:
        raise CheckpointError(str(exc)) from None
    checkpoint = Checkpoint.parse(text)
    if not key_covers(log_key.name, checkpoint.origin):
        raise CheckpointError(f"checkpoint origin {checkpoint.origin!r} is not under the log key {log_key.name!r}")
    return checkpoint, signatures


def cosigned_message(checkpoint_text: str, timestamp: int) -> bytes:
    if not 0 <= timestamp <= _MAX_SIZE:
        raise CheckpointError(f"cosignature time {timestamp} is out of range")
    return f"{_COSIGNATURE_HEADER}time {timestamp}\n{checkpoint_text}".encode()


@dataclass(frozen=True)
class Cosigner:
    """A witness's Ed25519 cosigning key (signature type 0x04)."""

    name: str
    private_key: Ed25519PrivateKey

    @property
    def verifier(self) -> note.Verifier:
        return note.Verifier(self.name, note.COSIGNATURE_V1, note.raw_public_key(self.private_key.public_key()))

    def cosign(self, checkpoint_text: str, timestamp: int) -> str:
        """The signature line to append to the checkpoint note."""
        signature = self.private_key.sign(cosigned_message(checkpoint_text, timestamp))
        return note.signature_line(self.name, self.verifier.key_id + struct.pack(">Q", timestamp) + signature)


def verify_cosignatures(checkpoint_text: str, signatures: list[note.Signature],
                        witnesses: list[note.Verifier]) -> dict[str, int]:
    """Cosigners among `witnesses` whose cosignature verifies: name -> timestamp.

    Signatures of unknown keys are ignored; a known witness's bad signature
    raises (the note is then rejected as a whole, as the spec recommends).
    """
    known = {(w.name, w.key_id): w for w in witnesses if w.signature_type == note.COSIGNATURE_V1}
    good: dict[str, int] = {}
    for signature in signatures:
        witness = known.get((signature.name, signature.key_id))
        if witness is None:
            continue
        if len(signature.blob) != 8 + 64:
            raise CheckpointError(f"cosignature of {signature.name} is not 8 + 64 bytes")
        (timestamp,) = struct.unpack(">Q", signature.blob[:8])
        if not witness.verify(cosigned_message(checkpoint_text, timestamp), signature.blob[8:]):
            raise CheckpointError(f"cosignature of {signature.name} does not verify")
        good[witness.name] = timestamp
    return good
