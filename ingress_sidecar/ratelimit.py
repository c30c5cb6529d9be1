"""Per-source rate limiting of requests that fail identity, with counted drops.

Authenticated requests are always attested. Requests whose identity fails are
attested too (as rejected), but a flood of them could fill the journal, so
each source address has a token bucket; what exceeds it is answered 429
*without* an attestation and counted here. The counts are written to the
journal as one DROPPED record per window (`DropCounter.take`), so nothing is
silently uncounted. The bucket table is bounded: when it is full it is cleared,
which only ever lets a burst through, never blocks a source wrongly.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable


class SourceLimiter:
    def __init__(self, *, rate_per_second: float, burst: int, sources_max: int) -> None:
        assert rate_per_second > 0 and burst >= 1 and sources_max >= 1
        self.rate = rate_per_second
        self.burst = float(burst)
        self.sources_max = sources_max
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, at)

    def allow(self, source: str, *, now: float | None = None) -> bool:
        current = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(source, (self.burst, current))
        tokens = min(self.burst, tokens + (current - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if source not in self._buckets and len(self._buckets) >= self.sources_max:
            self._buckets.clear()
        self._buckets[source] = (tokens, current)
        return allowed


class DropCounter:
    """Requests refused before attestation, by reason, since the last take()."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self.window_start_us = time.time_ns() // 1000

    def add(self, reason: str) -> None:
        self._counts[reason] += 1

    def pending(self) -> bool:
        return bool(self._counts)

    def take(self) -> tuple[int, int, dict[str, int]]:
        """(window start µs, window end µs, counts) and start a new window."""
        end_us = time.time_ns() // 1000
        window = (self.window_start_us, end_us, dict(self._counts))
        self._counts.clear()
        self.window_start_us = end_us
        return window

    def restore(self, counts: dict[str, int]) -> None:
        """Put counts back after the journal refused their DROPPED record."""
        self._counts.update(counts)


class RefusalLog:
    """One log line per reason per interval, with how many refusals it stands for.

    A full journal refuses every request; a line per refusal wrote megabytes
    of identical lines. The first refusal of a reason is logged at once;
    later ones within `interval_seconds` are only counted, and `flush()` (each
    housekeeping tick) writes one line per reason saying how many were refused
    since the last line. Counts are exact: nothing is dropped, only folded.
    """

    def __init__(self, logger: logging.Logger, message: str, *, interval_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert interval_seconds > 0, interval_seconds
        self.logger = logger
        self.message = message
        self.interval = interval_seconds
        self._clock = clock
        self._last_line: dict[str, float] = {}  # reason -> when its last line was written
        self._folded: Counter[str] = Counter()  # refusals since that line
        self._extra: dict[str, dict[str, object]] = {}  # reason -> details of its latest refusal

    def refused(self, reason: str, **extra: object) -> None:
        self._folded[reason] += 1
        self._extra[reason] = extra
        last = self._last_line.get(reason)
        if last is None or self._clock() - last >= self.interval:
            self._write(reason)

    def flush(self) -> None:
        """Write the line of every reason with folded refusals whose interval has passed."""
        now = self._clock()
        for reason in [r for r, count in self._folded.items() if count]:
            if now - self._last_line.get(reason, now - self.interval) >= self.interval:
                self._write(reason)

    def _write(self, reason: str) -> None:
        count = self._folded.pop(reason)
        assert count > 0, reason
        since = self._last_line.get(reason)
        now = self._clock()
        self._last_line[reason] = now
        self.logger.error(self.message, extra={
            "reason": reason, "refused": count,
            "over_seconds": round(now - since, 3) if since is not None else 0.0, **self._extra.pop(reason, {})})
