"""One retry delay for every daemon: capped exponential backoff with full jitter.

The delay before retry n (n = 0 for the first retry) is drawn uniformly from

    [0, min(max_seconds, initial_seconds × 2^n)]

(the "full jitter" scheme of the AWS Architecture Blog, "Exponential Backoff
And Jitter"): retries of many clients that failed together spread out instead
of arriving in waves, and no delay ever exceeds `max_seconds`. The random
source is injectable so tests can seed it.
"""

from __future__ import annotations

import random

# 2^30 × any sensible initial delay is far above any cap: larger exponents only overflow.
EXPONENT_MAX = 30


def full_jitter_seconds(retry: int, *, initial_seconds: float, max_seconds: float, rng: random.Random) -> float:
    """The delay before retry number `retry` (0-based): uniform in [0, min(cap, initial × 2^retry)]."""
    assert retry >= 0, retry
    assert 0 < initial_seconds <= max_seconds, (initial_seconds, max_seconds)
    ceiling = min(max_seconds, initial_seconds * 2 ** min(retry, EXPONENT_MAX))
    delay = rng.uniform(0.0, ceiling)
    assert 0.0 <= delay <= max_seconds
    return delay


class Backoff:
    """Successive delays of one retry loop; `reset()` after a success."""

    def __init__(self, initial_seconds: float, max_seconds: float, rng: random.Random | None = None) -> None:
        assert 0 < initial_seconds <= max_seconds, (initial_seconds, max_seconds)
        self.initial_seconds = initial_seconds
        self.max_seconds = max_seconds
        self.retry = 0
        self.rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = full_jitter_seconds(self.retry, initial_seconds=self.initial_seconds,
                                    max_seconds=self.max_seconds, rng=self.rng)
        self.retry += 1
        return delay

    def reset(self) -> None:
        self.retry = 0
