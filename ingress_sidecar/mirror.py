"""The NDJSON attestation mirror of one worker's stream, written off the hot path.

Format and file names: symphony/attestation_mirror.py. Files go to
`<journal_dir>/mirror/` (the path Vector reads, k8s/config/vector.yaml),
directory mode 2750 and files 0640, so the pod's group (gid 10001) can read
them and nobody else; the sidecar never rewrites a file, and deletes one only
once the shipper has acknowledged all of it (`prune`, below).

The request path only appends (seq, type, attestation id, body, chain hash)
to a bounded deque (`observe`, an Attestor observer): no encoding, no I/O. A
writer task drains it in batches and hands each batch to a thread that
formats the lines and writes them with one write(2), so a slow disk never
blocks the event loop. When the deque is full the record is dropped from the
deque, counted (`mirror_dropped`) and logged; the journal stays the source of
truth, and the writer fills every hole from the journal itself: before it
writes a record whose seq is past the next one it expects, it reads the
missing seqs back with `journal.Reader` (`mirror_recovered`). The same path
catches up at start-up from the last line of the newest mirror file of the
stream (GENESIS, records appended after the previous process stopped
mirroring). Only records the journal no longer holds (released after
shipping) stay missing; they are counted (`mirror_unrecoverable`), logged,
and `symphony audit cross-check` reports them.

A write that fails (disk full) is counted (`mirror_errors`) and logged; its
records are written again from the journal by the next batch.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from pathlib import Path

import journal
from ingress_sidecar import metrics
from symphony import attestation_mirror as fmt

log = logging.getLogger("sidecar.mirror")

DIRECTORY_MODE = 0o2750  # setgid: files keep the directory's group
FILE_MODE = 0o640
BATCH_RECORDS_MAX = 4096  # per write(2); also the journal read-back chunk
TAIL_BYTES_MAX = 1 << 20  # how far back start-up looks for the last complete line
LOG_INTERVAL_SECONDS = 10.0
WAKE_SECONDS = 0.5
PRUNE_INTERVAL_SECONDS = 30.0

Pending = tuple[int, int, int, bytes, bytes]  # seq, record type, attestation id, body, chain hash


def mirror_directory(journal_root: Path) -> Path:
    return journal_root / "mirror"


def last_mirrored_seq(directory: Path, node_id: str, stream_id: int) -> int:
    """The seq of the last complete line of the stream's newest mirror file (0: none).

    An unterminated last line (a crash mid-write) does not count: that record
    is written again, into a new file.
    """
    prefix = f"{node_id}-{stream_id}-"
    newest = None
    for path in directory.glob(f"{prefix}*{fmt.FILE_SUFFIX}"):
        match = fmt.FILE_NAME.match(path.name)
        if match and match["node"] == node_id and int(match["stream"]) == stream_id:
            key = (int(match["first"]), int(match["generation"] or 0), path)
            newest = key if newest is None else max(newest, key)
    if newest is None:
        return 0
    first_seq, _, path = newest
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - TAIL_BYTES_MAX))
        tail = handle.read()
    complete = tail[:tail.rfind(b"\n") + 1]
    lines = complete.splitlines()
    for text in reversed(lines):  # the last parseable line; at most TAIL_BYTES_MAX of them
        try:
            return fmt.parse_line(text).seq
        except fmt.MirrorLineError:
            continue
    return first_seq - 1


class Mirror:
    """The mirror writer of one stream (one per worker)."""

    def __init__(self, directory: Path, *, node_id: str, stream_id: int, stream_dir: Path,
                 file_bytes_max: int, queue_records_max: int, stats: metrics.WorkerStats,
                 acknowledgements_file: Path | None = None, keep_acknowledged_seconds: float = 0.0) -> None:
        assert file_bytes_max > 0 and queue_records_max > 0
        assert keep_acknowledged_seconds >= 0
        self.directory = directory
        self.node_id = node_id
        self.stream_id = stream_id
        self.stream_dir = stream_dir
        self.file_bytes_max = file_bytes_max
        self.queue_records_max = queue_records_max
        self.stats = stats
        self._pending: collections.deque[Pending] = collections.deque()
        self._wake = asyncio.Event()
        self._fd = -1
        self._file_bytes = 0
        self._next_seq = 1  # the seq the mirror expects to write next
        self._dropped_unlogged = 0
        self._last_drop_log = 0.0
        # Local retention: files of this stream are pruned once the shipper has
        # acknowledged them (see symphony.attestation_mirror, "acknowledgements").
        self.acknowledgements_file = acknowledgements_file
        self.keep_acknowledged_seconds = keep_acknowledged_seconds
        self._current_name = ""
        self._last_prune = float("-inf")
        self._ack_error_logged = ""

    # ------------------------------------------------------- the request path

    def observe(self, seq: int, record_type: int, attestation_id: int, body: bytes, chain_hash: bytes) -> None:
        """Attestor observer: queue one appended record (never blocks, never raises)."""
        if len(self._pending) >= self.queue_records_max:
            self.stats.count("mirror_dropped")
            self._dropped_unlogged += 1
            now = time.monotonic()
            if now - self._last_drop_log >= LOG_INTERVAL_SECONDS:
                self._last_drop_log = now
                log.warning("mirror queue full: records dropped from the queue; the writer recovers them "
                            "from the journal", extra={"dropped": self._dropped_unlogged, "stream_id": self.stream_id})
                self._dropped_unlogged = 0
            return
        self._pending.append((seq, record_type, attestation_id, body, chain_hash))
        if len(self._pending) == 1:
            self._wake.set()

    # ------------------------------------------------------------ the writer

    def open(self, head_seq: int) -> None:
        """Create the directory and find where the mirror of this stream stopped."""
        if not self.directory.is_dir():
            self.directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
            os.chmod(self.directory, DIRECTORY_MODE)  # mkdir's mode passes the umask and drops setgid
        last = last_mirrored_seq(self.directory, self.node_id, self.stream_id)
        self._next_seq = last + 1
        if last > head_seq:
            log.error("mirror is ahead of the journal (a wiped or replaced journal?); writing from the journal's head",
                      extra={"mirror_last_seq": last, "journal_head_seq": head_seq, "stream_id": self.stream_id})
            self._next_seq = head_seq + 1
        self._catch_up_to = head_seq

    async def run(self, stop: asyncio.Event) -> None:
        """Write until `stop`, then drain what is queued (bounded by the queue size)."""
        loop = asyncio.get_running_loop()
        try:
            if self._next_seq <= self._catch_up_to:
                await loop.run_in_executor(None, self._write_batch, [], self._catch_up_to)
            while True:  # ends when stop is set and the queue is empty
                if time.monotonic() - self._last_prune >= PRUNE_INTERVAL_SECONDS:
                    self._last_prune = time.monotonic()
                    await loop.run_in_executor(None, self.prune)
                if not self._pending:
                    if stop.is_set():
                        break
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=WAKE_SECONDS)
                    except asyncio.TimeoutError:
                        pass
                    continue
                count = min(len(self._pending), BATCH_RECORDS_MAX)
                batch = [self._pending.popleft() for _ in range(count)]
                await loop.run_in_executor(None, self._write_batch, batch, 0)
        finally:
            self._close_file()

    def _write_batch(self, batch: list[Pending], through_seq: int) -> None:
        """Runs in a thread: write the batch's lines, filling holes from the journal first."""
        lines: list[fmt.MirrorLine] = []
        expected = self._next_seq
        for seq, record_type, attestation_id, body, chain_hash in batch:
            if seq < expected:
                continue  # already written (read back from the journal)
            if seq > expected:  # records dropped from the queue: read them back first
                if lines and not self._write(lines):
                    return
                lines = []
                if not self._fill(seq - 1):
                    return
                expected = self._next_seq
                if seq < expected:
                    continue
            lines.append(fmt.line(self.node_id, self.stream_id, seq, record_type, attestation_id, chain_hash, body))
            expected = seq + 1
        if lines and not self._write(lines):
            return
        if through_seq:
            self._fill(through_seq)

    def _fill(self, through_seq: int) -> bool:
        """Write next_seq..through_seq read back from the journal; False if a write failed."""
        rounds = (through_seq - self._next_seq) // BATCH_RECORDS_MAX + 2
        for _ in range(rounds):  # each round advances next_seq by a chunk or stops
            if self._next_seq > through_seq:
                return True
            start = self._next_seq
            end = min(through_seq, start + BATCH_RECORDS_MAX - 1)
            lines, error = self._read_back(start, end)
            if lines:
                if not self._write(lines):
                    return False
                self.stats.add("mirror_recovered", len(lines))
            if self._next_seq <= end:  # the journal could not give them: skip, counted
                self.stats.add("mirror_unrecoverable", end - self._next_seq + 1)
                log.error("mirror: records no longer in the journal; the copy misses them",
                          extra={"from_seq": self._next_seq, "through_seq": end, "error": error,
                                 "stream_id": self.stream_id})
                self._next_seq = end + 1
        return True

    def _read_back(self, from_seq: int, through_seq: int) -> tuple[list[fmt.MirrorLine], str]:
        """Records from_seq..through_seq from the journal, and why the list is short (if it is)."""
        lines: list[fmt.MirrorLine] = []
        try:
            for record in journal.Reader(self.stream_dir).records(from_seq=from_seq):
                if record.seq > through_seq or record.seq != from_seq + len(lines):
                    break
                lines.append(fmt.MirrorLine(self.node_id, self.stream_id, record.seq, record.type.name,
                                            record.attestation_id, record.chain_hash.hex(), record.canonical))
        except (journal.JournalError, OSError) as exc:
            return lines, str(exc)
        return lines, "" if len(lines) == through_seq - from_seq + 1 else "not found in the journal"

    def _write(self, lines: list[fmt.MirrorLine]) -> bool:
        """Append the lines, a new file whenever the current one is full; on a
        failure next_seq stays at the first line not written and False is returned."""
        assert lines and lines[0].seq == self._next_seq, (lines[0].seq, self._next_seq)
        data = fmt.encode_lines(lines)  # JSON strings escape newlines: b"\n" ends a line
        offset, done = 0, 0
        for _ in range(len(lines)):  # each pass writes at least one line or returns
            if offset == len(data):
                break
            try:
                if self._fd < 0 or self._file_bytes >= self.file_bytes_max:
                    self._open_file(lines[done].seq)
                end = data.rfind(b"\n", offset, offset + self.file_bytes_max - self._file_bytes) + 1
                if end <= offset:
                    end = data.index(b"\n", offset) + 1  # one line longer than the room: it goes whole
                written = os.write(self._fd, data[offset:end])
                if written != end - offset:  # a short write to a regular file: the disk is full
                    raise OSError(28, f"short write ({written} of {end - offset} bytes)")
            except OSError as exc:
                self.stats.count("mirror_errors")
                log.error("mirror write failed; the records are written again from the journal",
                          extra={"error": str(exc), "from_seq": lines[done].seq, "stream_id": self.stream_id})
                self._close_file()  # a torn line stays unterminated at the end of that file
                return False
            count = data.count(b"\n", offset, end)
            self._file_bytes += written
            done += count
            offset = end
            self._next_seq = lines[done - 1].seq + 1
            self.stats.add("mirror_lines", count)
        assert done == len(lines), (done, len(lines))
        return True

    def _open_file(self, first_seq: int) -> None:
        """A new file named after its first seq; never an existing file with lines in it."""
        self._close_file()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        for generation in range(1000):  # a name is taken again only after a wiped journal
            path = self.directory / fmt.file_name(self.node_id, self.stream_id, first_seq, generation)
            if not path.exists() or path.stat().st_size == 0:
                break
        else:
            raise OSError(17, f"no free mirror file name for seq {first_seq}")
        fd = os.open(path, flags, FILE_MODE)
        self._current_name = path.name
        try:
            os.fchmod(fd, FILE_MODE)  # whatever the umask
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._file_bytes = 0

    def _close_file(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.fsync(fd)
            except OSError as exc:
                log.warning("mirror fsync failed", extra={"error": str(exc), "stream_id": self.stream_id})
            os.close(fd)

    def queued(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------ retention

    def stream_files(self) -> list[fmt.MirrorFile]:
        """This stream's mirror files, with what retention needs to know."""
        found = []
        for path in self.directory.glob(f"{self.node_id}-{self.stream_id}-*{fmt.FILE_SUFFIX}"):
            match = fmt.FILE_NAME.match(path.name)
            if not match or match["node"] != self.node_id or int(match["stream"]) != self.stream_id:
                continue
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            found.append(fmt.MirrorFile(path.name, self.node_id, self.stream_id, int(match["first"]),
                                        int(match["generation"] or 0), info.st_dev, info.st_ino, info.st_size,
                                        info.st_mtime))
        return found

    def prune(self) -> int:
        """Runs in a thread: delete this stream's files the shipper has acknowledged
        (and that are sealed and past the keep time); returns how many. Without an
        acknowledgements file nothing is ever deleted."""
        files = self.stream_files()
        self.stats.gauges["mirror_files"] = float(len(files))
        if self.acknowledgements_file is None:
            self.stats.gauges["mirror_unacknowledged_bytes"] = float(sum(f.size for f in files))
            return 0
        try:
            acknowledged = fmt.read_acknowledgements(self.acknowledgements_file.read_bytes())
        except FileNotFoundError:
            acknowledged = {}  # the shipper has not written its first checkpoint yet
        except (OSError, fmt.MirrorLineError) as exc:
            if str(exc) != self._ack_error_logged:
                self._ack_error_logged = str(exc)
                log.error("mirror acknowledgements unreadable; nothing pruned",
                          extra={"path": str(self.acknowledgements_file), "error": str(exc),
                                 "stream_id": self.stream_id})
            acknowledged = {}
        self.stats.gauges["mirror_unacknowledged_bytes"] = float(sum(
            max(0, f.size - acknowledged.get((f.device, f.inode), 0)) for f in files))
        candidates = fmt.prunable(files, acknowledged, keep_seconds=self.keep_acknowledged_seconds, now=time.time())
        pruned = 0
        for item in candidates:
            if item.name == self._current_name:
                continue  # never the file this writer has open
            try:
                (self.directory / item.name).unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.error("mirror file not pruned", extra={"file": item.name, "error": str(exc)})
                continue
            pruned += 1
            self.stats.count("mirror_pruned")
            log.info("mirror file pruned: acknowledged by the shipper", extra={"file": item.name,
                                                                               "bytes": item.size})
        return pruned
