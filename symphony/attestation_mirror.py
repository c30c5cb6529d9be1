"""The NDJSON attestation mirror: one line per journal record, no payloads.

The sidecar can write every record it appends to its journal a second time,
as one JSON object per line, into `<journal_dir>/mirror/`; Vector ships those
files to write-once object storage (k8s/config/vector.yaml), a copy in a
separate failure domain from PostgreSQL. `symphony audit cross-check` reads
the shipped copy back and compares it with `ingress_attestations`.

One line (keys in this order, UTF-8, `\\n` terminated):

| key | value |
|---|---|
| `node` | node id (text) |
| `stream` | stream id (0..1023) |
| `seq` | stream seq (1, 2, 3, …) |
| `type` | record type name: GENESIS, INGRESS, OUTCOME, HEARTBEAT, DROPPED |
| `attestation_id` | Snowflake/HLC id (integer; 0 for GENESIS, HEARTBEAT, DROPPED) |
| `chain_hash` | the record's chain hash, 64 lower-case hex digits |
| `canonical` | the record's canonical bytes, standard base64 (journal/FORMAT.md) |

`canonical` is what the chain hash covers: the 28 header bytes from
`body_len` to `reserved` and the record body, an attestation body that by
design holds no request payload and no personal data (invariant 8). It is
also exactly the `canonical` column of `ingress_attestations`, so the copy
can be compared byte for byte, and `chain_hash(n) = SHA-256(chain_hash(n-1)
|| canonical(n))` can be recomputed from the copy alone.

Files: `<node>-<stream>-<first seq>.ndjson` (the first seq of the file, 20
digits, so names sort by seq), lines in increasing seq, a new file once one
reaches the configured size. The sidecar never deletes or rewrites them. (A
stream whose journal was wiped starts again at seq 1 with a new epoch; its
files then take `<node>-<stream>-<first seq>.<n>.ndjson` where the plain
name is taken.)
"""

from __future__ import annotations

import re
import struct

import msgspec

from journal import RecordType

# body_len u32, seq u64, attestation_id u64, type u16, flags u16, reserved u32 (FORMAT.md, "Record header").
CANONICAL_HEADER = struct.Struct("<IQQHHI")
assert CANONICAL_HEADER.size == 28
SEQ_DIGITS = 20
FILE_SUFFIX = ".ndjson"
FILE_NAME = re.compile(
    r"^(?P<node>[A-Za-z0-9._-]{1,63})-(?P<stream>\d{1,4})-(?P<first>\d{20})(?:\.(?P<generation>\d{1,3}))?\.ndjson$")
_TYPE_NAMES = {int(t): t.name for t in RecordType}
_TYPE_VALUES = {t.name: int(t) for t in RecordType}


class MirrorLine(msgspec.Struct, frozen=True):
    """One record of the mirror, as written (field order is the line's key order)."""

    node: str
    stream: int
    seq: int
    type: str
    attestation_id: int
    chain_hash: str
    canonical: bytes  # base64 in JSON (msgspec's encoding of bytes)


class MirrorLineError(ValueError):
    """A line that is not a well-formed mirror record."""


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(MirrorLine)


def canonical_bytes(seq: int, record_type: int, attestation_id: int, body: bytes) -> bytes:
    """The canonical bytes of a record (journal/FORMAT.md): 28 header bytes and the body."""
    return CANONICAL_HEADER.pack(len(body), seq, attestation_id, record_type, 0, 0) + body


def file_name(node_id: str, stream_id: int, first_seq: int, generation: int = 0) -> str:
    """`<node>-<stream>-<first seq>.ndjson`; `.<generation>` before the suffix only
    when that name is taken by an older stream of the same identity (a wiped journal)."""
    assert first_seq >= 1, first_seq
    assert 0 <= generation < 1000, generation
    suffix = f".{generation}{FILE_SUFFIX}" if generation else FILE_SUFFIX
    return f"{node_id}-{stream_id}-{first_seq:0{SEQ_DIGITS}d}{suffix}"


def line(node_id: str, stream_id: int, seq: int, record_type: int, attestation_id: int,
         chain_hash: bytes, body: bytes) -> MirrorLine:
    assert len(chain_hash) == 32, len(chain_hash)
    return MirrorLine(node_id, stream_id, seq, _TYPE_NAMES[record_type], attestation_id, chain_hash.hex(),
                      canonical_bytes(seq, record_type, attestation_id, body))


def encode_lines(lines: list[MirrorLine]) -> bytes:
    """Newline-delimited JSON, one line per record, each ending in `\\n`."""
    return _ENCODER.encode_lines(lines)


class ParsedLine(msgspec.Struct, frozen=True):
    """A mirror line checked for internal consistency."""

    node: str
    stream: int
    seq: int
    record_type: int
    attestation_id: int
    chain_hash: bytes
    canonical: bytes


def parse_line(text: bytes) -> ParsedLine:
    """Decode one line and check it against itself: the header inside `canonical`
    must repeat the seq, type and attestation id the line states."""
    try:
        raw = _DECODER.decode(text)
    except msgspec.DecodeError as exc:
        raise MirrorLineError(f"not a mirror record: {exc}") from None
    record_type = _TYPE_VALUES.get(raw.type)
    if record_type is None:
        raise MirrorLineError(f"unknown record type {raw.type!r}")
    try:
        chain = bytes.fromhex(raw.chain_hash)
    except ValueError:
        raise MirrorLineError("chain_hash is not hex") from None
    if len(chain) != 32:
        raise MirrorLineError("chain_hash is not 32 bytes")
    if len(raw.canonical) < CANONICAL_HEADER.size:
        raise MirrorLineError("canonical is shorter than a record header")
    body_len, seq, attestation_id, stored_type, flags, reserved = CANONICAL_HEADER.unpack_from(raw.canonical)
    if (body_len, seq, attestation_id, stored_type, flags, reserved) != (
            len(raw.canonical) - CANONICAL_HEADER.size, raw.seq, raw.attestation_id, record_type, 0, 0):
        raise MirrorLineError("canonical header disagrees with the line's seq, type, attestation id or length")
    return ParsedLine(raw.node, raw.stream, raw.seq, record_type, raw.attestation_id, chain, raw.canonical)



# -- acknowledgements and local retention ------------------------------------------
#
# The sidecar keeps a mirror file until the shipper has acknowledged all of it,
# and prunes it only then. The acknowledgement is Vector's own checkpoint file
# for the mirror's file source (`<vector data_dir>/<source id>/checkpoints.json`,
# `{"version": "1", "checkpoints": [{"fingerprint": {"dev_inode": [dev, ino]},
# "position": bytes, ...}]}`): with end-to-end acknowledgements enabled on the
# sink (k8s/config/vector.yaml, ops/vector/vector.yaml), Vector advances a
# file's position only after the object store has accepted the lines before it.
# A file is acknowledged when its position has reached the file's size; it may
# be pruned once it is also sealed (not the newest file of its stream, which the
# sidecar may still append to) and older than the local keep time. A file whose
# fingerprint is not in the checkpoints (another fingerprint strategy, a
# different source) is never acknowledged, so never pruned.

AckKey = tuple[int, int]  # st_dev, st_ino


class MirrorFile(msgspec.Struct, frozen=True):
    """What retention needs to know of one mirror file."""

    name: str
    node: str
    stream: int
    first_seq: int
    generation: int
    device: int
    inode: int
    size: int
    modified: float  # st_mtime, seconds since the epoch


def read_acknowledgements(text: bytes) -> dict[AckKey, int]:
    """(dev, inode) -> acknowledged byte position, from Vector's checkpoints.json.

    Unknown fingerprint kinds are ignored; anything that is not the documented
    shape raises MirrorLineError (the caller then prunes nothing)."""
    try:
        document = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise MirrorLineError(f"checkpoints file is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("version") != "1" or not isinstance(
            document.get("checkpoints"), list):
        raise MirrorLineError("checkpoints file: expected {'version': '1', 'checkpoints': [...]}")
    found: dict[AckKey, int] = {}
    for entry in document["checkpoints"]:
        fingerprint = entry.get("fingerprint") if isinstance(entry, dict) else None
        position = entry.get("position") if isinstance(entry, dict) else None
        if not isinstance(fingerprint, dict) or not isinstance(position, int):
            raise MirrorLineError(f"checkpoints file: malformed entry {entry!r}")
        pair = fingerprint.get("dev_inode")
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(n, int) for n in pair):
            found[(pair[0], pair[1])] = max(position, found.get((pair[0], pair[1]), 0))
    return found


def prunable(files: list[MirrorFile], acknowledged: dict[AckKey, int], *, keep_seconds: float,
             now: float) -> list[MirrorFile]:
    """The files that may be deleted: acknowledged in full, sealed, older than keep_seconds."""
    newest: dict[tuple[str, int], tuple[int, int]] = {}
    for item in files:
        key = (item.node, item.stream)
        newest[key] = max(newest.get(key, (0, 0)), (item.first_seq, item.generation))
    chosen = []
    for item in files:
        if (item.first_seq, item.generation) == newest[(item.node, item.stream)]:
            continue  # the stream's current file: the sidecar may still append to it
        if acknowledged.get((item.device, item.inode), -1) < item.size:
            continue  # not (fully) in the write-once store yet
        if now - item.modified < keep_seconds:
            continue
        chosen.append(item)
    return chosen
