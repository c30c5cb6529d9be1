"""An outsider's verifier, written from docs/verifying.md alone.

It imports nothing of Symphony: only hashlib, base64, struct and an Ed25519
implementation (cryptography). Tests run it beside `symphony verify` on the
same evidence; the two must agree on every case. If the documentation is
wrong or incomplete, this file is where it shows.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DASH = "\u2014 "


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_path(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes | None:
    """Rebuild MTH(D[0:size]) from a leaf and its audit path by following the
    tree's recursive split (k = largest power of two below n), top-down to find
    which siblings are left or right, then hashing bottom-up."""
    if not 0 <= index < size:
        return None
    sides: list[bool] = []  # True: the sibling is on the right
    lo, hi = 0, size
    while hi - lo > 1:
        k = 1
        while k * 2 < hi - lo:
            k *= 2
        if index < lo + k:
            sides.append(True)
            hi = lo + k
        else:
            sides.append(False)
            lo += k
    if len(sides) != len(path):
        return None
    h = leaf
    for sibling, right in zip(path, reversed(sides)):
        h = node_hash(h, sibling) if right else node_hash(sibling, h)
    return h


def parse_vkey(vkey: str) -> tuple[str, bytes, int, bytes]:
    name, key_id_hex, material = vkey.split("+", 2)
    raw = base64.b64decode(material)
    return name, bytes.fromhex(key_id_hex), raw[0], raw[1:]


def split_note(signed: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    text_end = signed.rindex(b"\n\n") + 1
    text, block = signed[:text_end], signed[text_end + 1:].decode()
    lines = []
    for line in block.split("\n")[:-1]:
        assert line.startswith(DASH)
        name, encoded = line[len(DASH):].split(" ")
        lines.append((name, base64.b64decode(encoded)))
    return text, lines


def ed25519_ok(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def checkpoint_ok(signed: bytes, log_vkey: str, witness_vkeys: list[str], witnesses_required: int
                  ) -> tuple[str, int, bytes] | None:
    """(origin, size, root) when the node key signed it and enough witnesses cosigned it."""
    text, signatures = split_note(signed)
    origin, size_line, root_line = text.decode().split("\n")[:3]
    log_name, log_id, log_type, log_key = parse_vkey(log_vkey)
    if log_type != 1 or not (origin == log_name or origin.startswith(log_name + "/")):
        return None
    if hashlib.sha256(log_name.encode() + b"\n\x01" + log_key).digest()[:4] != log_id:
        return None
    if not any(name == log_name and blob[:4] == log_id and ed25519_ok(log_key, blob[4:], text)
               for name, blob in signatures):
        return None
    cosigners = 0
    for vkey in witness_vkeys:
        w_name, w_id, w_type, w_key = parse_vkey(vkey)
        for name, blob in signatures:
            if name == w_name and blob[:4] == w_id and w_type == 4 and len(blob) == 4 + 8 + 64:
                (when,) = struct.unpack(">Q", blob[4:12])
                message = b"cosignature/v1\ntime " + str(when).encode() + b"\n" + text
                if ed25519_ok(w_key, blob[12:], message):
                    cosigners += 1
                    break
    if cosigners < witnesses_required:
        return None
    return origin, int(size_line), base64.b64decode(root_line)


def proof_ok(data: bytes, log_vkey: str, witness_vkeys: list[str], witnesses_required: int) -> bool:
    head, _, signed = data.partition(b"\n\n")
    lines = head.decode().split("\n")
    if lines[0] != "c2sp.org/tlog-proof@v1" or not lines[1].startswith("extra "):
        return False
    record = base64.b64decode(lines[1][len("extra "):])
    index = int(lines[2][len("index "):])
    path = [base64.b64decode(line) for line in lines[3:]]
    body_len, seq, _attestation_id, kind, flags, reserved = struct.unpack_from("<IQQHHI", record)
    if body_len != len(record) - 28 or flags or reserved or not 1 <= kind <= 6 or seq != index + 1:
        return False
    checked = checkpoint_ok(signed, log_vkey, witness_vkeys, witnesses_required)
    if checked is None:
        return False
    _, size, root = checked
    return root_from_path(leaf_hash(record), index, size, path) == root
