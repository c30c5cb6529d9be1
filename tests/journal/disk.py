"""Helpers that edit segment files behind the journal's back (crash and tamper tests)."""

from __future__ import annotations

import struct
from pathlib import Path

from journal import Writer
from journal._format import list_segments, record_size
from journal._journal import lib

HEADER_SIZE = 256


def record_offsets(segment: Path) -> list[tuple[int, int, int]]:
    """(seq, offset, record_size) of every record in a segment, by walking the lengths."""
    data = segment.read_bytes()
    found, pos = [], HEADER_SIZE
    while pos + 64 <= len(data) and any(data[pos:pos + 64]):
        body_len, seq = struct.unpack_from("<IQ", data, pos + 36)
        found.append((seq, pos, record_size(body_len)))
        pos += record_size(body_len)
    return found


def locate(stream: Path, seq: int) -> tuple[Path, int, int]:
    """(segment path, offset, size) of record `seq`."""
    for _, path in list_segments(stream):
        for found_seq, offset, size in record_offsets(path):
            if found_seq == seq:
                return path, offset, size
    raise LookupError(seq)


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def flip(path: Path, offset: int) -> None:
    byte = path.read_bytes()[offset]
    patch(path, offset, bytes([byte ^ 0x01]))


def fix_crc(path: Path, offset: int, size: int) -> None:
    """Recompute a record's CRC, as a tamperer who knows the format would."""
    data = path.read_bytes()
    crc = lib.jn_crc32c(data[offset + 4:offset + size], size - 4)
    patch(path, offset, struct.pack("<I", crc))


def abandon(writer: Writer) -> None:
    """Drop a writer as a crash would: no final sync, no synced_end update.

    Only for writers opened with durability "none" and prefault=False (no
    helper threads), where this is exactly what kill -9 leaves behind.
    """
    writer._release_resources()
