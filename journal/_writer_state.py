"""The state a journal Writer shares between its parts (journal/_writer.py).

The Writer is one class built in layers, each in its own module: this state,
group commit (journal/_group_commit.py), rotation (journal/_rotation.py),
recovery on open (journal/_recovery.py) and the writer itself with append,
reserve and close (journal/_writer.py). The attributes are set in
Writer.__init__; they are declared here so every layer names the same ones.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from pathlib import Path
from typing import Any

from journal._errors import JournalError
from journal._files import MappedSegment
from journal._format import Durability
from journal._journal import lib


class WriterState:
    """The attributes of one writer (see journal.Writer for their meaning)."""

    # Identity and settings.
    _dir: Path
    _node_id: str
    _stream_id: int
    _level: Durability
    _segment_bytes: int
    _max_bytes: int | None
    _flush_interval_ns: int
    _flush_records: int
    _prefault: bool
    _recover_unsynced: bool

    # The C writer and its current segment; the stream's epoch and what is durable.
    _w: Any
    _hash_out: Any
    _sync_result: Any
    _current: MappedSegment | None
    _epoch: bytes
    _durable_seq: int
    _failure: JournalError | None
    _closed: bool
    _stopping: bool
    recovered_tail_bytes: int
    last_checkpoint_size: int | None

    # Group commit: the C flusher, the eventfd it signals after a sync when
    # there are waiters, and the waiters (seq order) on one loop.
    _flusher: Any
    _notify_fd: int
    _waiters: collections.deque[tuple[int, asyncio.Future[None]]]
    _loop: asyncio.AbstractEventLoop | None

    # Preparer state, guarded by _prepare_cond.
    _prepare_cond: threading.Condition
    _prepared: MappedSegment | None
    _prepare_error: JournalError | None
    _preparing: bool
    _allocate_lock: threading.Lock
    _threads: list[threading.Thread]

    def _attach(self, segment: MappedSegment, pos: int, next_seq: int, last_hash: bytes) -> None:
        code = lib.jn_writer_attach(self._w, segment.base, segment.size, pos, next_seq, last_hash)
        assert code == lib.JN_OK, f"jn_writer_attach returned {code}"
        self._current = segment
