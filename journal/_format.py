"""Constants, names and value types of the on-disk format (see FORMAT.md).

Pure definitions only: nothing here touches a file. The numbers come from the
compiled core (journal_core.h) so Python and C cannot disagree.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from journal._journal import ffi, lib

HEADER_SIZE: int = lib.JN_SEGMENT_HEADER_SIZE
RECORD_HEADER_SIZE: int = lib.JN_RECORD_HEADER_SIZE
CANONICAL_OFFSET: int = lib.JN_CANONICAL_OFFSET
HASH_SIZE: int = lib.JN_HASH_SIZE
EPOCH_SIZE: int = lib.JN_EPOCH_SIZE
BODY_MAX: int = lib.JN_BODY_MAX
SEGMENT_MIN: int = lib.JN_SEGMENT_MIN
ZERO_HASH: bytes = bytes(HASH_SIZE)

SEGMENT_SUFFIX = ".seg"
TEMP_PREFIX = ".next-"
LOCK_NAME = "LOCK"
_SEGMENT_NAME = re.compile(r"(\d{20})\.seg")
NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,63}")
STREAM_ID_MAX = 1023


class RecordType(enum.IntEnum):
    """Record types (FORMAT.md, "Record types")."""

    GENESIS = 1
    INGRESS = 2
    OUTCOME = 3
    HEARTBEAT = 4
    DROPPED = 5
    CHECKPOINT = 6


class Durability(str, enum.Enum):
    """When an append counts as done (README.md, "Durability levels")."""

    NONE = "none"      # in the shared mapping: survives a process crash, not a power loss
    BATCH = "batch"    # group commit by the flusher thread; append_durable waits for it
    ALWAYS = "always"  # msync before append returns


@dataclass(frozen=True, slots=True)
class Record:
    """One validated record. `chain_hash == sha256(prev_hash + canonical)`."""

    seq: int
    type: RecordType
    attestation_id: int
    body: bytes
    chain_hash: bytes
    prev_hash: bytes
    canonical: bytes


# Building a Record: the frozen dataclass's __init__ sets each field through
# object.__setattr__ (frozen forbids plain assignment), about 0.8 us a record,
# which was a fifth of the reader's time. Storing the fields through their slot
# descriptors builds the same object (same fields, equality, hash, repr,
# still frozen afterwards) in about half that; readers use this, everyone
# else calls Record(...).
_new_object = object.__new__
_SLOT_SETTERS = tuple(getattr(Record, name).__set__ for name in Record.__slots__)
assert tuple(Record.__slots__) == ("seq", "type", "attestation_id", "body", "chain_hash",
                                   "prev_hash", "canonical")


def make_record(seq: int, kind: RecordType, attestation_id: int, body: bytes, chain_hash: bytes,
                prev_hash: bytes, canonical: bytes) -> Record:
    """Record(seq, kind, ...) for values already validated by the C core."""
    record = _new_object(Record)
    set_seq, set_type, set_id, set_body, set_chain, set_prev, set_canonical = _SLOT_SETTERS
    set_seq(record, seq)
    set_type(record, kind)
    set_id(record, attestation_id)
    set_body(record, body)
    set_chain(record, chain_hash)
    set_prev(record, prev_hash)
    set_canonical(record, canonical)
    return record


class SegmentHeader(NamedTuple):
    """The fields of a segment header (FORMAT.md, "Segment header")."""

    version: int
    segment_size: int
    first_seq: int
    created_unix_ns: int
    stream_id: int
    node_id: str
    epoch: bytes
    prev_hash: bytes
    write_end: int
    write_seq: int
    synced_end: int
    flags: int


# magic, version, header_size, segment_size, first_seq, created, stream_id,
# node_id_len, (5 reserved), node_id, epoch, prev_hash, header_crc, (4 reserved),
# write_end, write_seq, synced_end, flags, (60 reserved)
_HEADER = struct.Struct("<8sIIQQQHB5x64s16s32sI4xQQQI60x")
assert _HEADER.size == HEADER_SIZE
_TYPES = {int(t): t for t in RecordType}

REASONS: dict[int, str] = {
    lib.JN_R_LENGTH: "record length out of range (F7a)",
    lib.JN_R_CRC: "CRC32C mismatch (F7b)",
    lib.JN_R_SEQ: "unexpected seq: a record is missing, duplicated or out of order (F7c)",
    lib.JN_R_TYPE: "invalid record type for this seq (F7d)",
    lib.JN_R_RESERVED: "nonzero reserved or padding bytes (F7e)",
    lib.JN_R_CHAIN: "chain hash does not match sha256(prev_hash || canonical) (F7f)",
    lib.JN_R_ALIGN: "record offset not 8-byte aligned (F6)",
    lib.JN_R_GARBAGE: "nonzero bytes after the end of the records (F8)",
    lib.JN_H_MAGIC: "bad segment magic (F2)",
    lib.JN_H_VERSION: "unknown format version (F2)",
    lib.JN_H_CRC: "segment header CRC32C mismatch (F3)",
    lib.JN_H_SIZE: "segment size does not match the file (F4)",
    lib.JN_H_FIELD: "invalid segment header field (F5)",
}


def reason(code: int) -> str:
    return REASONS.get(code, f"error code {code}")


def record_type(value: int) -> RecordType:
    return _TYPES[value]


def record_size(body_len: int) -> int:
    """Bytes a record with this body occupies, padding included (F6)."""
    return (RECORD_HEADER_SIZE + body_len + 7) & ~7


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    match = _SEGMENT_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(first_seq, path) of every segment file, oldest first."""
    found = []
    for entry in directory.iterdir():
        first_seq = parse_segment_name(entry.name)
        if first_seq is not None:
            found.append((first_seq, entry))
    found.sort()
    return found


def parse_header(raw: bytes) -> SegmentHeader:
    """Decode a header already validated by lib.jn_segment_check."""
    (_, version, _, size, first_seq, created, stream_id, node_len, node_id, epoch, prev_hash,
     _, write_end, write_seq, synced_end, flags) = _HEADER.unpack_from(raw)
    return SegmentHeader(version, size, first_seq, created, stream_id,
                         node_id[:node_len].decode("ascii"), epoch, prev_hash,
                         write_end, write_seq, synced_end, flags)


def genesis_body(epoch: bytes, stream_id: int, node_id: str) -> bytes:
    """Body of the GENESIS record (FORMAT.md F11): epoch, stream id, node id."""
    node = node_id.encode("ascii")
    assert len(epoch) == EPOCH_SIZE
    return epoch + struct.pack("<HB", stream_id, len(node)) + node


class Genesis(NamedTuple):
    """What a GENESIS record says (FORMAT.md F11)."""

    epoch: bytes
    stream_id: int
    node_id: str


def parse_genesis(body: bytes) -> Genesis:
    """Decode a GENESIS body; ValueError when it is not one (F11)."""
    fixed = EPOCH_SIZE + 3
    if len(body) < fixed:
        raise ValueError(f"GENESIS body is {len(body)} bytes, shorter than {fixed}")
    stream_id, node_len = struct.unpack_from("<HB", body, EPOCH_SIZE)
    if len(body) != fixed + node_len:
        raise ValueError(f"GENESIS body is {len(body)} bytes; its node id length says {fixed + node_len}")
    node_id = body[fixed:].decode("ascii", errors="replace")
    if not NODE_ID.fullmatch(node_id) or stream_id > STREAM_ID_MAX:
        raise ValueError("GENESIS names an invalid node id or stream id")
    return Genesis(body[:EPOCH_SIZE], stream_id, node_id)


class CheckpointBody(NamedTuple):
    """What a CHECKPOINT record says (FORMAT.md F17)."""

    tree_size: int
    frontier: list[bytes]
    note: bytes


_CHECKPOINT_FIXED = struct.Struct("<QB")
_NOTE_LEN = struct.Struct("<I")


def checkpoint_body(tree_size: int, frontier: list[bytes], note: bytes) -> bytes:
    """Body of a CHECKPOINT record (F17): tree size, frontier, the signed note."""
    if len(frontier) != bin(tree_size).count("1") or any(len(h) != HASH_SIZE for h in frontier):
        raise ValueError(f"a tree of {tree_size} leaves has {bin(tree_size).count('1')} frontier hashes")
    return _CHECKPOINT_FIXED.pack(tree_size, len(frontier)) + b"".join(frontier) + _NOTE_LEN.pack(len(note)) + note


def parse_checkpoint(body: bytes) -> CheckpointBody:
    """Decode a CHECKPOINT body; ValueError when it is not one (F17)."""
    if len(body) < _CHECKPOINT_FIXED.size + _NOTE_LEN.size:
        raise ValueError(f"CHECKPOINT body is {len(body)} bytes, too short")
    tree_size, count = _CHECKPOINT_FIXED.unpack_from(body)
    if count != bin(tree_size).count("1"):
        raise ValueError(f"CHECKPOINT of {tree_size} leaves carries {count} frontier hashes")
    at = _CHECKPOINT_FIXED.size + count * HASH_SIZE
    if len(body) < at + _NOTE_LEN.size:
        raise ValueError("CHECKPOINT body is shorter than its frontier")
    frontier = [body[_CHECKPOINT_FIXED.size + i * HASH_SIZE:_CHECKPOINT_FIXED.size + (i + 1) * HASH_SIZE]
                for i in range(count)]
    (note_len,) = _NOTE_LEN.unpack_from(body, at)
    if len(body) != at + _NOTE_LEN.size + note_len:
        raise ValueError("CHECKPOINT body length does not match its note length")
    return CheckpointBody(tree_size, frontier, body[at + _NOTE_LEN.size:])


def chain_hash(prev: bytes, canonical: bytes) -> bytes:
    """SHA-256(prev || canonical): the chain step, for audits outside the journal.

    Equal to hashlib.sha256(prev + canonical).digest(); computed by the same C
    code the writer uses.
    """
    if len(prev) != HASH_SIZE:
        raise ValueError(f"prev must be {HASH_SIZE} bytes, got {len(prev)}")
    out = ffi.new("char[32]")
    lib.jn_chain_hash(prev, canonical, len(canonical), out)
    return bytes(ffi.unpack(out, HASH_SIZE))
