"""Fault injection: what the simulator does wrong, and how often.

Faults are checked in this order for every operator request (never for /_sim/*):

1. downtime: `down` is true, or the time since start falls inside one of
   `downtime_windows` ([start_s, end_s] pairs) -> 503, nothing executed;
2. latency: a log-normal delay with median `latency_ms_median` and 99th
   percentile `latency_ms_p99` (both 0: no delay);
3. `error_rate`: answer a 5xx before executing (nothing executed: transient);
4. `timeout_rate`: hold the request `hang_seconds` without executing, then 504
   (the client's timeout fires first: an ambiguous outcome for it);
5. the request executes (or replays), then `drop_after_execute_rate`: close the
   connection without answering (executed, but the client cannot know);
   `kill_pid_on_execute` > 0: SIGKILL that process right after a *new*
   execution, then drop the connection (`kill_count` times, then the hook disarms)
   -- the test hook for "relayer killed after the rail executed".
"""

from __future__ import annotations

import math
import random

import msgspec


class Faults(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    down: bool = False
    downtime_windows: list[tuple[float, float]] = []
    latency_ms_median: float = 0.0
    latency_ms_p99: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    hang_seconds: float = 30.0
    drop_after_execute_rate: float = 0.0
    kill_pid_on_execute: int = 0
    kill_count: int = 0

    def __post_init__(self) -> None:
        for name in ("error_rate", "timeout_rate", "drop_after_execute_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.latency_ms_median < 0 or self.latency_ms_p99 < self.latency_ms_median:
            raise ValueError("latency_ms_median must be >= 0 and latency_ms_p99 >= latency_ms_median")
        if not 0 < self.hang_seconds <= 3600:
            raise ValueError("hang_seconds must be in (0, 3600]")
        for start, end in self.downtime_windows:
            if not 0 <= start < end:
                raise ValueError("downtime_windows entries must be [start_s, end_s] with 0 <= start < end")

    def is_down(self, uptime_seconds: float) -> bool:
        return self.down or any(start <= uptime_seconds < end for start, end in self.downtime_windows)

    def latency_seconds(self, rng: random.Random) -> float:
        """A log-normal sample: median m and p99 p give sigma = ln(p/m) / 2.326."""
        if self.latency_ms_median <= 0:
            return self.latency_ms_p99 / 1000.0 * rng.random() if self.latency_ms_p99 > 0 else 0.0
        sigma = math.log(self.latency_ms_p99 / self.latency_ms_median) / 2.326 if self.latency_ms_p99 > 0 else 0.0
        sample_ms = self.latency_ms_median * math.exp(sigma * rng.gauss(0.0, 1.0))
        return min(sample_ms, 60_000.0) / 1000.0


def merge(current: Faults, update: dict[str, object]) -> Faults:
    """`current` with the keys of `update` replaced; validated as a whole."""
    merged = msgspec.structs.asdict(current)
    merged.update(update)
    return msgspec.convert(merged, Faults)
