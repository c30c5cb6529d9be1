"""Segment files: create, allocate, map, validate, lock. No record logic here."""

from __future__ import annotations

import errno
import fcntl
import os
import uuid
from pathlib import Path
from typing import Any

from journal._errors import JournalCorrupt, JournalError, JournalLocked, os_error
from journal._format import (
    HEADER_SIZE,
    LOCK_NAME,
    TEMP_PREFIX,
    SegmentHeader,
    parse_header,
    parse_segment_name,
    reason,
)
from journal._journal import ffi, lib


class MappedSegment:
    """One segment file, open and mapped (MAP_SHARED) for the whole file size."""

    __slots__ = ("path", "fd", "base", "size", "writable")

    def __init__(self, path: Path, fd: int, base: Any, size: int, writable: bool) -> None:
        self.path = path
        self.fd = fd
        self.base = base  # uint8_t * from jn_map (cffi: pointer arithmetic), NULL after close
        self.size = size
        self.writable = writable

    @classmethod
    def open(cls, path: Path, *, writable: bool) -> MappedSegment:
        """Map an existing segment file after checking its header (F2-F5)."""
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            raw = os.pread(fd, HEADER_SIZE, 0)
            code = lib.jn_segment_check(raw, len(raw), size) if len(raw) == HEADER_SIZE else lib.JN_H_SIZE
            if code != lib.JN_OK:
                first_seq = parse_segment_name(path.name) or 0
                raise JournalCorrupt(first_seq, f"{path.name}: {reason(code)}")
            error = ffi.new("int *")
            base = lib.jn_map(fd, size, int(writable), error)
            if base == ffi.NULL:
                raise os_error(error[0], f"mmap {path}")
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, base, size, writable)

    @classmethod
    def create_temporary(cls, directory: Path, size: int, *, prefault: bool) -> MappedSegment:
        """A new all-zero segment file under a temporary name, with real blocks.

        The blocks are allocated up front (posix_fallocate) because a store
        through a mapping into an unallocated block on a full disk is a SIGBUS,
        not an error code. Pre-faulting maps every page for writing so the
        first append into each page costs no page fault.
        """
        path = directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}.tmp"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            code = lib.jn_file_allocate(fd, size)
            if code != 0:
                raise os_error(code, f"allocate {size} bytes for {path.name}")
            error = ffi.new("int *")
            base = lib.jn_map(fd, size, 1, error)
            if base == ffi.NULL:
                raise os_error(error[0], f"mmap {path}")
            if prefault:
                code = lib.jn_prefault(base, size)
                if code != 0:
                    lib.jn_unmap(base, size)
                    raise os_error(code, f"pre-fault {path.name}")
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return cls(path, fd, base, size, True)

    def header(self) -> SegmentHeader:
        assert self.base != ffi.NULL
        return parse_header(ffi.buffer(self.base, HEADER_SIZE)[:])

    def synced_end(self) -> int:
        return self.header().synced_end

    def sealed(self) -> bool:
        return bool(self.header().flags & lib.JN_FLAG_SEALED)

    def close(self) -> None:
        if self.base != ffi.NULL:
            lib.jn_unmap(self.base, self.size)
            self.base = ffi.NULL
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        """Close and delete a temporary segment that was never installed."""
        self.close()
        self.path.unlink(missing_ok=True)


def read_header(path: Path) -> SegmentHeader:
    """Validate and decode the header of a segment file without mapping it."""
    with open(path, "rb") as handle:
        raw = handle.read(HEADER_SIZE)
        size = os.fstat(handle.fileno()).st_size
    code = lib.jn_segment_check(raw, len(raw), size) if len(raw) == HEADER_SIZE else lib.JN_H_SIZE
    if code != lib.JN_OK:
        raise JournalCorrupt(parse_segment_name(path.name) or 0, f"{path.name}: {reason(code)}")
    return parse_header(raw)


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_stream(directory: Path) -> int:
    """Take the stream's writer lock (flock on LOCK) or raise JournalLocked.

    flock belongs to the open file description, so a second Writer in the same
    process is refused as well as one in another process; the kernel drops the
    lock when the holder dies, so a crashed writer never leaves a stale lock.
    """
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalLocked(f"another writer holds {directory / LOCK_NAME}") from None
    except OSError as error:
        os.close(fd)
        raise os_error(error.errno or errno.EIO, f"lock {directory}") from error
    return fd


def remove_temporaries(directory: Path) -> None:
    """Delete segments a previous writer prepared but never installed."""
    for entry in directory.iterdir():
        if entry.name.startswith(TEMP_PREFIX):
            entry.unlink(missing_ok=True)


def stream_bytes(directory: Path) -> int:
    """Bytes used by segment files and prepared temporaries (the size cap counts both)."""
    total = 0
    for entry in os.scandir(directory):
        if entry.name.endswith(".seg") or entry.name.startswith(TEMP_PREFIX):
            try:
                total += entry.stat().st_size
            except FileNotFoundError:
                continue  # released or installed while we listed
    return total


def require_directory(path: Path) -> None:
    if not path.is_dir():
        raise JournalError(f"no journal stream at {path}")
