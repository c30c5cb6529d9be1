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
        verified = False
        for name, blob in signatures:
            if name == w_name and blob[:4] == w_id and w_type == 4:
                if len(blob) != 4 + 8 + 64:
                    return None
                (when,) = struct.unpack(">Q", blob[4:12])
                message = b"cosignature/v1\ntime " + str(when).encode() + b"\n" + text
                if not ed25519_ok(w_key, blob[12:], message):
                    return None  # a trusted key's line that does not verify: reject the note
                verified = True
        cosigners += verified
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

# -- exports (docs/verifying.md, "Exports") ------------------------------------------------

def verify_consistency(size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes) -> bool:
    """RFC 9162 §2.1.4.2, step by step."""
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0 or size1 > size2 or not proof:
        return False
    if size1 & (size1 - 1) == 0:
        proof = [root1] + proof
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == root1 and sr == root2 and sn == 0


def msgpack(data: bytes, at: int = 0) -> tuple[object, int]:
    """The few MessagePack types record bodies use (journal/FORMAT.md "Record bodies")."""
    b = data[at]
    at += 1
    if b <= 0x7F:
        return b, at
    if 0x90 <= b <= 0x9F or b == 0xDC:
        n = b & 0x0F if b != 0xDC else struct.unpack_from(">H", data, at)[0]
        at += 0 if b != 0xDC else 2
        out = []
        for _ in range(n):
            item, at = msgpack(data, at)
            out.append(item)
        return out, at
    if 0x80 <= b <= 0x8F:
        pairs = {}
        for _ in range(b & 0x0F):
            key, at = msgpack(data, at)
            pairs[key], at = msgpack(data, at)
        return pairs, at
    widths = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q"}
    if b in widths:
        return struct.unpack_from(widths[b], data, at)[0], at + struct.calcsize(widths[b])
    if 0xA0 <= b <= 0xBF or b in (0xD9, 0xDA, 0xC4, 0xC5):
        if 0xA0 <= b <= 0xBF:
            n = b & 0x1F
        else:
            fmt = ">B" if b in (0xD9, 0xC4) else ">H"
            n = struct.unpack_from(fmt, data, at)[0]
            at += struct.calcsize(fmt)
        raw = data[at:at + n]
        return (raw.decode() if b < 0xC4 or b > 0xC5 else raw), at + n
    if b in (0xC2, 0xC3):
        return b == 0xC3, at
    if b == 0xC0:
        return None, at
    raise ValueError(f"MessagePack type 0x{b:02x} is not used by record bodies")


@dataclass
class ExportCheck:
    ok: bool
    problems: list[str]
    gap: dict[str, tuple[int, int, int, int, int]]  # participant -> ingress, executed, handled, gap, unattested
    ghosts: set[int]


def _time_us(text: str) -> int:
    from datetime import datetime, timezone

    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def check_export(directory: Path, export_vkey: str, log_vkey: str, witness_vkeys: list[str],
                 witnesses_required: int) -> ExportCheck:
    """Everything docs/verifying.md says `symphony verify export` checks, in memory (small exports)."""
    import json

    problems: list[str] = []
    result = ExportCheck(False, problems, {}, set())
    try:
        signed = (directory / "manifest").read_bytes()
        text, signatures = split_note(signed)
    except (OSError, ValueError, AssertionError):
        problems.append("manifest")
        return result
    name, key_id, kind, key = parse_vkey(export_vkey)
    if kind != 1 or not any(n == name and blob[:4] == key_id and ed25519_ok(key, blob[4:], text)
                            for n, blob in signatures):
        problems.append("manifest signature")
        return result
    lines = text.decode().split("\n")[:-1]
    if lines[0] != "symphony-export/v1":
        problems.append("manifest format")
        return result
    selection = lines[1].split(" ")
    files = {}
    for line in lines[3:]:
        _, fname, size, digest, items = line.split(" ")
        files[fname] = (int(size), digest, int(items))
    on_disk = {p.name for p in directory.iterdir()} - {"manifest"}
    if on_disk != set(files):
        problems.append("files differ from the manifest")
    for fname, (size, digest, items) in files.items():
        data = (directory / fname).read_bytes() if (directory / fname).exists() else None
        if data is None or len(data) != size or hashlib.sha256(data).hexdigest() != digest \
                or data.count(b"\n") != items:
            problems.append(f"file {fname}")

    def jsonl(fname: str) -> list[dict]:  # type: ignore[type-arg]
        path = directory / fname
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    streams, checkpoints = jsonl("streams.jsonl"), jsonl("checkpoints.jsonl")
    outbox, events = jsonl("outbox.jsonl"), jsonl("events.jsonl")
    if selection[0] == "window":
        low = -1 if selection[1] == "-" else _time_us(selection[1])
        high = 1 << 64 if selection[2] == "-" else _time_us(selection[2])
    else:
        low, high = -1, 1 << 64
    executed = {(row["attestation_id"], row["ingress_node_id"]) for row in outbox}
    ingress_at: dict[tuple[str, int, int], tuple[int, int, str, bytes]] = {}  # earliest INGRESS per position
    tallies: dict[str, list[int]] = {}
    if any(not 0 <= c["stream"] < len(streams) for c in checkpoints):
        problems.append("a checkpoint of no exported stream")
    for number, stream in enumerate(streams):
        label = f"stream {number}"
        if stream["stream"] != number:
            problems.append(label)
            continue
        cps = [c for c in checkpoints if c["stream"] == number]
        if len(cps) != 1:
            problems.append(f"{label} checkpoint")
            continue
        checked = checkpoint_ok((cps[0]["note"] + "".join(cps[0]["cosignatures"])).encode(), log_vkey,
                                witness_vkeys, witnesses_required)
        if checked is None or checked[1] != stream["checkpoint_size"] or not checked[0].endswith(
                f"/{stream['node_id']}/{stream['stream_id']}/{stream['epoch']}"):
            problems.append(f"{label} checkpoint")
            continue
        # The tree of size a - 1 from its frontier (largest subtree first).
        hashes = [bytes.fromhex(h) for h in stream["frontier"]]
        size = stream["first_seq"] - 1
        if len(hashes) != bin(size).count("1"):
            problems.append(f"{label} frontier")
            continue
        prev = bytes.fromhex(stream["prev_chain_hash"]) if stream["prev_chain_hash"] else None
        path = directory / f"records-{number}.txt"
        records = path.read_text().splitlines() if path.exists() else []
        waiting: dict[int, str] = {}
        broken = False
        for line in records:
            chain_hex, canonical_hex = line.split(" ")
            record = bytes.fromhex(canonical_hex)
            body_len, seq, aid, kind, flags, reserved = struct.unpack_from("<IQQHHI", record)
            if seq != size + 1 or body_len != len(record) - 28 or flags or reserved or not 1 <= kind <= 6:
                broken = True
                break
            if prev is not None:
                if hashlib.sha256(prev + record).digest() != bytes.fromhex(chain_hex):
                    broken = True
                    break
                prev = bytes.fromhex(chain_hex)
            # Append a leaf to the compact range: merge while the size's low bit is set.
            h, n = leaf_hash(record), size
            while n & 1:
                h = node_hash(hashes.pop(), h)
                n >>= 1
            hashes.append(h)
            size += 1
            body = record[28:]
            if kind == 2:
                fields, _ = msgpack(body)
                assert isinstance(fields, list)
                received, participant, executes, body_hash = fields[1], fields[2], fields[8], fields[9]
                position = (stream["node_id"], stream["stream_id"], seq)
                if position not in ingress_at or received < ingress_at[position][0]:
                    ingress_at[position] = (received, aid, participant, body_hash)
                if executes and low <= received < high:
                    who = participant or "(unauthenticated)"
                    counts = tallies.setdefault(who, [0, 0, 0, 0, 0])
                    counts[0] += 1
                    if (aid, stream["node_id"]) in executed:
                        counts[1] += 1
                    else:
                        waiting[aid] = who
            elif kind == 3 and aid in waiting:
                who = waiting.pop(aid)
                fields, _ = msgpack(body)
                assert isinstance(fields, list)
                if fields[4] in ("replayed", "rejected", "upstream_error", "client_gone"):
                    tallies[who][2] += 1
                else:
                    tallies[who][3] += 1
                    result.ghosts.add(aid)
        for aid, who in waiting.items():
            tallies[who][3] += 1
            result.ghosts.add(aid)
        if broken or size != stream["last_seq"]:
            problems.append(f"{label} records")
            continue
        root = hashes[-1] if hashes else hashlib.sha256(b"").digest()
        for h in reversed(hashes[:-1]):
            root = node_hash(h, root)
        if not verify_consistency(size, checked[1], [bytes.fromhex(h) for h in stream["consistency"]], root,
                                  checked[2]):
            problems.append(f"{label} root")
    for row in outbox:
        found = ingress_at.get((row["ingress_node_id"], row["ingress_stream_id"], row["ingress_seq"]))
        body_hash = row["ingress_body_sha256"]
        if found is None or found[1] != row["attestation_id"] or found[2] != row["participant_id"] or (
                body_hash is not None and found[3] != bytes.fromhex(body_hash)):
            problems.append(f"outbox row {row['id']}")
            if selection[0] == "window" and low <= _time_us(row["created_at"]) < high:
                tallies.setdefault(row["participant_id"], [0, 0, 0, 0, 0])[4] += 1
        replay = [e for e in events if e["outbox_id"] == row["id"]]
        status = None
        for event in sorted(replay, key=lambda e: e["event_id"]):
            if event["old_status"] != status:
                problems.append(f"events of {row['id']}")
            status = event["new_status"]
        if status != row["status"]:
            problems.append(f"events of {row['id']}")
    ids = {row["id"] for row in outbox}
    if len(ids) != len(outbox) or any(e["outbox_id"] not in ids for e in events):
        problems.append("events")
    result.gap = {who: (c[0], c[1], c[2], c[3], c[4]) for who, c in tallies.items()}
    result.ok = not problems and all(c[3] == 0 and c[4] == 0 for c in tallies.values())
    return result
