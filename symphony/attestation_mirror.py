"""The NDJSON attestation mirror: one line per journal record, no payloads.

The sidecar can write every record it appends to its journal a second time,
as one JSON object per line, into `<journal_dir>/mirror/`; Vector ships those
files to write-once object storage (k8s/configmap-vector.yaml), a copy in a
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

