"""The release log of a stream (journal/FORMAT.md F18): which oldest segments
were deleted, on the strength of which witnessed checkpoint.

`<stream dir>/RELEASES`, append-only, one JSON object per line. The journal
only stores and reads the entries and checks their shape and continuity; what
they claim (the checkpoint's signatures, the frontier, the inclusion proof) is
checked by the verifier (`symphony verify journal`, docs/verifying.md), which
has the keys. Whoever deletes segments (the forwarder) appends the entry,
fsync'd, *before* it deletes them, so a crash in between leaves a recorded
release whose segments are still there, never a deletion nobody recorded.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from journal._errors import JournalError
from journal._files import fsync_directory, require_directory

FILE_NAME = "RELEASES"
VERSION = 1
LINE_BYTES_MAX = 256 * 1024  # a note of at most 64 KiB, 64 frontier and 64 proof hashes fit easily
FILE_BYTES_MAX = 1 << 34  # read whole by a verifier; ~4 KiB an entry, one entry per release
TAIL_BYTES = 2 * LINE_BYTES_MAX  # what a writer reads: always holds the newest complete entry
KEYS = ("checkpoint", "epoch", "first_seq", "frontier", "inclusion_proof", "last_chain_hash", "last_leaf_hash",
        "last_seq", "node_id", "released_at_unix_ns", "stream_id", "version")


@dataclass(frozen=True)
class Release:
    """One entry: records first_seq .. last_seq of the stream epoch were released."""

    node_id: str
    stream_id: int
    epoch: bytes
    first_seq: int
    last_seq: int
    last_leaf_hash: bytes    # RFC 9162 leaf hash of record last_seq's canonical bytes
    last_chain_hash: bytes   # chain hash of record last_seq (the next segment's prev_hash)
    frontier: list[bytes]    # compact range of the tree of size last_seq, largest subtree first
    inclusion_proof: list[bytes]  # path of leaf last_seq - 1 in the checkpoint's tree
    checkpoint: str          # the covering checkpoint's signed note with its cosignatures, verbatim
    released_at_unix_ns: int = 0

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError(f"release {self.first_seq}..{self.last_seq}: {problems}")

    def to_line(self) -> bytes:
        entry = {"version": VERSION, "node_id": self.node_id, "stream_id": self.stream_id,
                 "epoch": self.epoch.hex(), "first_seq": self.first_seq, "last_seq": self.last_seq,
                 "last_leaf_hash": self.last_leaf_hash.hex(), "last_chain_hash": self.last_chain_hash.hex(),
                 "frontier": [h.hex() for h in self.frontier],
                 "inclusion_proof": [h.hex() for h in self.inclusion_proof],
                 "checkpoint": self.checkpoint, "released_at_unix_ns": self.released_at_unix_ns}
        line = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
        assert len(line) <= LINE_BYTES_MAX, len(line)
        return line

    @classmethod
    def from_line(cls, line: bytes) -> Release:
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(entry, dict) or tuple(sorted(entry)) != KEYS:
            raise ValueError(f"not a release entry (keys must be exactly {', '.join(KEYS)})")
        if entry["version"] != VERSION:
            raise ValueError(f"release entry version {entry['version']!r} is not {VERSION}")
        try:
            return cls(node_id=_str(entry["node_id"]), stream_id=_int(entry["stream_id"]),
                       epoch=_hex(entry["epoch"]), first_seq=_int(entry["first_seq"]),
                       last_seq=_int(entry["last_seq"]), last_leaf_hash=_hex(entry["last_leaf_hash"]),
                       last_chain_hash=_hex(entry["last_chain_hash"]),
                       frontier=[_hex(h) for h in _list(entry["frontier"])],
                       inclusion_proof=[_hex(h) for h in _list(entry["inclusion_proof"])],
                       checkpoint=_str(entry["checkpoint"]), released_at_unix_ns=_int(entry["released_at_unix_ns"]))
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None


@dataclass
class ReleaseLog:
    """The entries of a RELEASES file, oldest first; `torn_bytes` > 0 when its
    last line was cut by a crash mid-append (ignored: it was never acknowledged)."""

    entries: list[Release] = field(default_factory=list)
    torn_bytes: int = 0

    def for_epoch(self, epoch: bytes) -> list[Release]:
        return [r for r in self.entries if r.epoch == epoch]


def read_releases(path: str | os.PathLike[str], *, tail_bytes: int | None = None) -> ReleaseLog:
    """The stream's release log (empty when there is none). Raises JournalError
    for a complete line that is not a valid entry (the file was altered).

    With `tail_bytes`, only the entries wholly inside the file's last
    `tail_bytes` bytes (at least LINE_BYTES_MAX of them are read): the newest
    ones, which is all a writer of the log needs, however long it has grown."""
    directory = Path(path)
    require_directory(directory)
    try:
        fd = os.open(directory / FILE_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return ReleaseLog()
    try:
        return _read(fd, directory / FILE_NAME, tail_bytes)
    finally:
        os.close(fd)


def _read(fd: int, where: Path, tail_bytes: int | None) -> ReleaseLog:
    size = os.fstat(fd).st_size
    start = 0 if tail_bytes is None else max(0, size - max(tail_bytes, 2 * LINE_BYTES_MAX))
    if size - start > FILE_BYTES_MAX:
        raise JournalError(f"{where}: larger than {FILE_BYTES_MAX} bytes; read it with tail_bytes")
    data = os.pread(fd, size - start, start)
    if start > 0:
        data = data[data.index(b"\n") + 1:] if b"\n" in data else b""  # the first line is cut: skip it
    complete, newline, torn = data.rpartition(b"\n")
    log = ReleaseLog(torn_bytes=len(torn))
    if not newline:
        return log  # empty, or one torn line
    for number, line in enumerate(complete.split(b"\n"), start=1):
        try:
            log.entries.append(Release.from_line(line))
        except ValueError as exc:
            raise JournalError(f"{where} {'line' if start == 0 else 'tail line'} {number}: {exc}") from None
    return log


def append_release(path: str | os.PathLike[str], release: Release) -> None:
    """Append `release` to the stream's release log and make it durable (the
    file fsync'd, and its directory when the file is new) before returning.

    The entry must continue the log of its epoch: its first_seq is one past
    the previous entry's last_seq (the first entry of an epoch may start
    anywhere: segments released before this log existed are named as such by
    the verifier). A torn last line left by a crash is cut off first. Appends
    from several processes are serialised by an exclusive flock on the file."""
    directory = Path(path)
    require_directory(directory)
    target = directory / FILE_NAME
    created = not target.exists()
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        previous = _read(fd, target, TAIL_BYTES)  # the newest entries: what continuity needs
        mine = previous.for_epoch(release.epoch)
        if mine and release.first_seq != mine[-1].last_seq + 1:
            raise JournalError(f"release {release.first_seq}..{release.last_seq} does not continue the release "
                               f"log (it ends at seq {mine[-1].last_seq})")
        if previous.torn_bytes:
            size -= previous.torn_bytes
            os.ftruncate(fd, size)
        line = release.to_line()
        written = os.pwrite(fd, line, size)
        if written != len(line):
            raise JournalError(f"{target}: short write ({written} of {len(line)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)  # also drops the flock
    if created:
        fsync_directory(directory)


def _problems(release: Release) -> str:
    if not (0 < len(release.node_id) <= 63 and release.node_id.isascii()):
        return "node_id must be 1-63 ASCII characters"
    if not 0 <= release.stream_id <= 1023:
        return "stream_id must be 0..1023"
    if len(release.epoch) != 16:
        return "epoch must be 16 bytes"
    if not 1 <= release.first_seq <= release.last_seq:
        return "need 1 <= first_seq <= last_seq"
    if len(release.last_leaf_hash) != 32 or len(release.last_chain_hash) != 32:
        return "hashes must be 32 bytes"
    if len(release.frontier) != bin(release.last_seq).count("1"):
        return "the frontier must hold one hash per set bit of last_seq"
    if any(len(h) != 32 for h in [*release.frontier, *release.inclusion_proof]) or len(release.inclusion_proof) > 64:
        return "frontier and proof hashes must be 32 bytes (at most 64 of each)"
    if not release.checkpoint.endswith("\n") or release.released_at_unix_ns < 0:
        return "the checkpoint note must end in a newline"
    return ""


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a non-negative integer")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _hex(value: object) -> bytes:
    text = _str(value)
    if text != text.lower():
        raise ValueError(f"{text!r} is not lower-case hex")
    return bytes.fromhex(text)


def _list(value: object) -> Sequence[object]:
    if not isinstance(value, list):
        raise ValueError(f"{value!r} is not a list")
    return value
