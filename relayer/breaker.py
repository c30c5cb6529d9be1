"""A per-rail circuit breaker.

CLOSED: calls flow; `failure_threshold` consecutive unhealthy outcomes (transient
or ambiguous) open it. OPEN: no new calls for `reset_seconds`, then HALF_OPEN:
exactly one probe call; a healthy answer closes it, an unhealthy one reopens it.
Terminal refusals (the rail answered "no") are healthy: the rail works. Adapter
exceptions (poison payloads) are not the rail's fault and do not count.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class State(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(self, failure_threshold: int, reset_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert failure_threshold >= 1 and reset_seconds > 0
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self.state = State.CLOSED
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self.probe_in_flight = False
        self.opens = 0

    def allowed(self, free_slots: int) -> int:
        """How many new calls may start now, given `free_slots` of concurrency."""
        assert free_slots >= 0
        if self.state == State.OPEN and self._clock() - self.opened_at >= self.reset_seconds:
            self.state = State.HALF_OPEN
            self.probe_in_flight = False
        if self.state == State.OPEN:
            return 0
        if self.state == State.HALF_OPEN:
            return 0 if self.probe_in_flight else min(1, free_slots)
        return free_slots

    def started(self, count: int) -> None:
        if self.state == State.HALF_OPEN and count > 0:
            assert count == 1, "half-open allows exactly one probe"
            self.probe_in_flight = True

    def record(self, healthy: bool | None) -> None:
        """The outcome of a call; None means "says nothing about the rail" (poison)."""
        if healthy is None:
            if self.state == State.HALF_OPEN:
                self.probe_in_flight = False  # probe again on the next cycle
            return
        if healthy:
            self.consecutive_failures = 0
            if self.state == State.HALF_OPEN:
                self.state = State.CLOSED
                self.probe_in_flight = False
            return
        self.consecutive_failures += 1
        if self.state == State.HALF_OPEN or (
                self.state == State.CLOSED and self.consecutive_failures >= self.failure_threshold):
            self.state = State.OPEN
            self.opened_at = self._clock()
            self.probe_in_flight = False
            self.opens += 1
