"""An outsider's verifier, written from docs/verifying.md and journal/FORMAT.md alone.

It imports nothing of Symphony: only hashlib, base64, struct, an Ed25519
implementation (cryptography) and a CRC32C implementation (the `crc32c`
package). Tests run it beside `symphony verify` and `journal.verify` on the
same evidence; they must agree on every case. If the documentation is wrong or
incomplete, this file is where it shows.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import crc32c as crc32c_package
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


# -- journal segment files (journal/FORMAT.md) ---------------------------------------------

SEGMENT_MAGIC = b"SYMJRNL\x00"
HEADER_SIZE = 256
RECORD_HEADER = 64
BODY_MAX = 1048576
SEALED = 1


def crc32c(data: bytes) -> int:
    return int(crc32c_package.crc32c(data))


@dataclass
class StreamCheck:
    """What the outsider concludes about a stream directory."""

    ok: bool
    first_bad_seq: int | None
    reason: str
    first_seq: int
    last_seq: int
    last_hash: bytes
    torn_tail_bytes: int


def _record_valid(seg: bytes, p: int, s: int, h: bytes) -> str | None:
    """F7: None when the record at p is valid as seq s after chain hash h, else why not."""
    (body_len,) = struct.unpack_from("<I", seg, p + 36)
    if body_len > BODY_MAX:
        return "length"
    size = (RECORD_HEADER + body_len + 7) & ~7
    if p + size > len(seg):
        return "length"
    (crc,) = struct.unpack_from("<I", seg, p)
    if crc32c(seg[p + 4:p + size]) != crc:
        return "crc"
    seq, _aid, kind, flags, reserved = struct.unpack_from("<QQHHI", seg, p + 40)
    if seq != s:
        return "seq"
    if not 1 <= kind <= 5 or (kind == 1) != (seq == 1):
        return "type"
    if flags or reserved or any(seg[p + RECORD_HEADER + body_len:p + size]):
        return "reserved"
    if hashlib.sha256(h + seg[p + 36:p + RECORD_HEADER + body_len]).digest() != seg[p + 4:p + 36]:
        return "chain"
    return None


def _valid_later(seg: bytes, start: int, end: int, bad_seq: int) -> bool:
    """F10: a later 8-aligned offset holding a CRC-valid record with a greater seq."""
    for q in range(start, end, 8):
        if q + RECORD_HEADER > len(seg):
            break
        (crc, ) = struct.unpack_from("<I", seg, q)
        (body_len, seq) = struct.unpack_from("<IQ", seg, q + 36)
        if seq <= bad_seq or seq - bad_seq > len(seg) // RECORD_HEADER or body_len > BODY_MAX:
            continue
        size = (RECORD_HEADER + body_len + 7) & ~7
        if q + size <= len(seg) and crc32c(seg[q + 4:q + size]) == crc:
            return True
    return False


def check_stream(directory: Path) -> StreamCheck:
    """Every segment of a stream copy: headers (F2-F6), records (F7), zero tail
    (F8), torn tail or corruption in the last segment (F9, F10), and a last
    segment marked SEALED (its successor is missing)."""
    segments = sorted((int(path.name[:20]), path) for path in directory.iterdir()
                      if len(path.name) == 24 and path.name.endswith(".seg") and path.name[:20].isdigit())
    result = StreamCheck(True, None, "", 0, 0, b"\x00" * 32, 0)

    def bad(seq: int, why: str) -> StreamCheck:
        result.ok, result.first_bad_seq, result.reason = False, seq, why
        return result

    if not segments:
        return bad(0, "no segment")
    s, h, identity = segments[0][0], b"", None
    for index, (name_seq, path) in enumerate(segments):
        seg = path.read_bytes()
        last = index == len(segments) - 1
        if len(seg) < HEADER_SIZE or seg[:8] != SEGMENT_MAGIC or struct.unpack_from("<I", seg, 8)[0] != 1:
            return bad(name_seq, "header magic or version")
        if crc32c(seg[:160]) != struct.unpack_from("<I", seg, 160)[0]:
            return bad(name_seq, "header crc")
        segment_size, first_seq = struct.unpack_from("<QQ", seg, 16)
        (stream_id, node_len) = struct.unpack_from("<HB", seg, 40)
        node, epoch, prev = seg[48:48 + node_len], seg[112:128], seg[128:160]
        synced_end, = struct.unpack_from("<Q", seg, 184)
        flags, = struct.unpack_from("<I", seg, 192)
        if segment_size != len(seg) or first_seq != name_seq:
            return bad(name_seq, "header size or first_seq")
        if identity is None:
            identity, h, result.first_seq = (node, stream_id, epoch), prev, first_seq
            if first_seq == 1 and prev != b"\x00" * 32:
                return bad(1, "first prev_hash not zero")
        elif (node, stream_id, epoch) != identity:
            return bad(first_seq, "identity differs")
        if first_seq != s:
            return bad(s, "segments not contiguous")
        if prev != h:
            return bad(first_seq, "prev_hash does not continue the chain")
        p = HEADER_SIZE
        why = None
        while p + RECORD_HEADER <= len(seg) and any(seg[p:p + RECORD_HEADER]):
            why = _record_valid(seg, p, s, h)
            if why is not None:
                break
            (body_len,) = struct.unpack_from("<I", seg, p + 36)
            h = seg[p + 4:p + 36]
            s += 1
            p += (RECORD_HEADER + body_len + 7) & ~7
        nonzero_end = len(seg.rstrip(b"\x00"))
        if why is not None or nonzero_end > p:  # something after the last valid record
            why = why or "garbage"
            if not last:
                return bad(s, f"{why} in a sealed segment")
            if p < synced_end or _valid_later(seg, p + 8, nonzero_end, s):
                return bad(s, f"{why}, not a torn tail")
            result.torn_tail_bytes = nonzero_end - p
        if last and flags & SEALED:
            return bad(s, "the last segment is SEALED: a newer segment is missing")
    result.last_seq, result.last_hash = s - 1, h
    return result


# -- a copy whose first segments were released (journal/FORMAT.md F18, docs/verifying.md) -------------


def _canonical_records(directory: Path) -> list[tuple[int, bytes, bytes]]:
    """(seq, canonical bytes, chain hash) of every record of the copy, in order
    (call after check_stream said the chain holds)."""
    out = []
    for path in sorted(p for p in directory.iterdir() if p.name.endswith(".seg")):
        seg = path.read_bytes()
        p = HEADER_SIZE
        while p + RECORD_HEADER <= len(seg) and seg[p:p + RECORD_HEADER] != bytes(RECORD_HEADER):
            (body_len,) = struct.unpack_from("<I", seg, p + 36)
            (seq,) = struct.unpack_from("<Q", seg, p + 40)
            out.append((seq, seg[p + 36:p + 64 + body_len], seg[p + 4:p + 36]))
            p += (64 + body_len + 7) & ~7
    return out


def _fold(frontier: list[bytes]) -> bytes:
    r = frontier[-1]
    for h in reversed(frontier[:-1]):
        r = node_hash(h, r)
    return r


def released_copy_ok(directory: Path, signed: bytes, log_vkey: str, witness_vkeys: list[str],
                     witnesses_required: int) -> tuple[bool, int]:
    """(ok, first missing seq or 0) for a stream copy and its RELEASES file,
    against the witnessed checkpoint `signed`, following docs/verifying.md
    ("A copy whose first segments were released") step by step."""
    import json

    checked = checkpoint_ok(signed, log_vkey, witness_vkeys, witnesses_required)
    if checked is None:
        return False, 0
    segments = sorted(p for p in directory.iterdir() if p.name.endswith(".seg"))
    first = segments[0].read_bytes()
    first_seq, epoch, prev_hash = int(segments[0].name[:20]), first[112:128], first[128:160]
    (stream_id,) = struct.unpack_from("<H", first, 40)
    entries = []
    releases = directory / "RELEASES"
    if releases.exists():
        data = releases.read_bytes()
        entries = [json.loads(line) for line in data[:data.rfind(b"\n") + 1].splitlines()]
    roots: dict[int, bytes] = {checked[1]: checked[2]}
    covered, accepted = 0, []
    for entry in (e for e in entries if bytes.fromhex(e["epoch"]) == epoch):
        if entry["first_seq"] != covered + 1:
            break
        cp = checkpoint_ok(entry["checkpoint"].encode(), log_vkey, witness_vkeys, witnesses_required)
        last = entry["last_seq"]
        if cp is None or not cp[0].endswith(f"/{stream_id}/{epoch.hex()}") or cp[1] < last:
            break
        path = [bytes.fromhex(h) for h in entry["inclusion_proof"]]
        if root_from_path(bytes.fromhex(entry["last_leaf_hash"]), last - 1, cp[1], path) != cp[2]:
            break
        roots[cp[1]] = cp[2]
        accepted.append(entry)
        covered = last
    if first_seq - 1 > covered:
        return False, covered + 1
    records = _canonical_records(directory)
    if first_seq == 1:
        size, frontier = 0, []
    else:
        anchor = next((e for e in accepted if e["last_seq"] == first_seq - 1), accepted[-1])
        if anchor["last_seq"] == first_seq - 1 and prev_hash != bytes.fromhex(anchor["last_chain_hash"]):
            return False, 0
        size, frontier = anchor["last_seq"], [bytes.fromhex(h) for h in anchor["frontier"]]
    for entry in accepted:
        found = [r for r in records if r[0] == entry["last_seq"]]
        if found and (leaf_hash(found[0][1]).hex(), found[0][2].hex()) != (entry["last_leaf_hash"],
                                                                          entry["last_chain_hash"]):
            return False, 0
    for seq, canonical, _ in records:
        if seq <= size:
            continue
        if seq != size + 1 or size >= max(roots):
            break
        h, level = leaf_hash(canonical), 0  # append to the compact range: merge while the low bits are set
        while (size >> level) & 1:
            h = node_hash(frontier.pop(), h)
            level += 1
        frontier.append(h)
        size += 1
        if size in roots and _fold(frontier) != roots[size]:
            return False, 0
    return size >= max(roots), 0
