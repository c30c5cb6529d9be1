"""Attestation ids: a 64-bit Snowflake layout with hybrid-logical-clock behaviour.

Layout (most significant first; the sign bit stays zero so ids fit a
PostgreSQL bigint):

| bits | field |
|---|---|
| 1  | zero |
| 41 | milliseconds since the Symphony epoch, 2025-01-01T00:00:00Z (until 2094) |
| 10 | worker id (node and stream) |
| 12 | per-millisecond counter |

The generator never goes backwards (invariant 5). Its logical time is the
maximum of the wall clock and every time it has issued or been told about
(`observe`, from a caller's X-Symphony-HLC). If the wall clock steps back, ids
keep advancing from the logical time, as long as the logical time is at most
`offset_ms_max` ahead of the wall clock; beyond that the generator refuses
(`ClockRefused`) until the wall clock catches up, rather than drift further.
When the 4096 ids of one millisecond are used up it asks the caller to wait
for the next millisecond (`CounterExhausted`) rather than borrow from the
future.

The clock is injected (a function returning milliseconds since the Unix
epoch), so tests step it back without touching the system clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

EPOCH_UNIX_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
TIME_BITS = 41
WORKER_BITS = 10
COUNTER_BITS = 12
WORKER_MAX = (1 << WORKER_BITS) - 1
COUNTER_MAX = (1 << COUNTER_BITS) - 1
TIME_MAX = (1 << TIME_BITS) - 1

Clock = Callable[[], int]


class ClockRefused(Exception):
    """The wall clock is further behind the issued ids than the max offset."""

    def __init__(self, offset_ms: int) -> None:
        super().__init__(f"wall clock is {offset_ms} ms behind the last attestation id")
        self.offset_ms = offset_ms


class CounterExhausted(Exception):
    """All ids of the current millisecond are taken: wait for the next one."""


def system_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def file_offset_clock(path: Path, base: Clock = system_clock_ms) -> Clock:
    """Tests only: the wall clock plus a millisecond offset read from `path`.

    The file is re-read when its modification time changes, so a test steps
    the clock of a running sidecar by rewriting one small file.
    """
    state = {"mtime": -1, "offset": 0}

    def clock() -> int:
        try:
            mtime = path.stat().st_mtime_ns
            if mtime != state["mtime"]:
                state["offset"] = int(path.read_text().strip() or 0)
                state["mtime"] = mtime
        except (FileNotFoundError, ValueError):
            state["offset"] = 0
        return base() + state["offset"]

    return clock


def compose(ms_since_epoch: int, worker_id: int, counter: int) -> int:
    assert 0 <= ms_since_epoch <= TIME_MAX, ms_since_epoch
    assert 0 <= worker_id <= WORKER_MAX, worker_id
    assert 0 <= counter <= COUNTER_MAX, counter
    return (ms_since_epoch << (WORKER_BITS + COUNTER_BITS)) | (worker_id << COUNTER_BITS) | counter


def decompose(attestation_id: int) -> tuple[int, int, int]:
    """(unix ms, worker id, counter) of an attestation id."""
    assert 0 <= attestation_id < (1 << 63), attestation_id
    counter = attestation_id & COUNTER_MAX
    worker_id = (attestation_id >> COUNTER_BITS) & WORKER_MAX
    ms = attestation_id >> (WORKER_BITS + COUNTER_BITS)
    return ms + EPOCH_UNIX_MS, worker_id, counter


class HybridClock:
    """Issues monotonic attestation ids for one worker (not thread-safe: one
    generator per event loop)."""

    def __init__(self, worker_id: int, *, offset_ms_max: int = 500, clock: Clock = system_clock_ms) -> None:
        assert 0 <= worker_id <= WORKER_MAX, worker_id
        assert offset_ms_max > 0, offset_ms_max
        self.worker_id = worker_id
        self.offset_ms_max = offset_ms_max
        self._clock = clock
        self._logical_ms = 0  # unix ms of the last id issued (or observed)
        self._counter = -1
        self.last_id = 0

    def offset_ms(self) -> int:
        """How far the logical time is ahead of the wall clock (0 if not)."""
        return max(0, self._logical_ms - self._clock())

    def next_id(self) -> int:
        wall_ms = self._clock()
        if wall_ms > self._logical_ms:
            self._logical_ms = wall_ms
            self._counter = 0
        else:
            offset = self._logical_ms - wall_ms
            if offset > self.offset_ms_max:
                raise ClockRefused(offset)
            if self._counter >= COUNTER_MAX:
                raise CounterExhausted()
            self._counter += 1
        issued = compose(self._logical_ms - EPOCH_UNIX_MS, self.worker_id, self._counter)
        assert issued > self.last_id, (issued, self.last_id)
        self.last_id = issued
        return issued

    def observe(self, remote_id: int) -> bool:
        """Advance to a remote node's id (X-Symphony-HLC) so causality holds.

        The remote time is taken only up to the max offset ahead of our wall
        clock; returns False when it had to be clamped (a remote clock that is
        too far ahead must not drag this node into refusing).
        """
        if not 0 < remote_id < (1 << 63):
            return False
        remote_ms = (remote_id >> (WORKER_BITS + COUNTER_BITS)) + EPOCH_UNIX_MS
        ceiling = self._clock() + self.offset_ms_max
        # One millisecond past the remote id: our next id sorts after it whatever
        # the worker bits and counters of the two nodes.
        target = min(remote_ms + 1, ceiling)
        if target > self._logical_ms:
            self._logical_ms = target
            self._counter = -1  # next_id() on the same ms starts at counter 0
        return remote_ms + 1 <= ceiling
