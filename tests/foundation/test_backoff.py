"""The one retry delay (symphony.backoff): capped exponential backoff with full jitter."""

from __future__ import annotations

import random

import pytest

from symphony.backoff import Backoff, full_jitter_seconds


def test_delays_stay_within_the_growing_ceiling_and_the_cap() -> None:
    """Goal: retry n waits in [0, min(cap, initial × 2^n)], never above the cap, also for huge n.
    Method: many draws from a seeded RNG per retry number."""
    rng = random.Random(1)
    for retry in (0, 1, 2, 3, 5, 10, 40, 10_000):
        ceiling = min(4.0, 0.5 * 2 ** min(retry, 30))
        draws = [full_jitter_seconds(retry, initial_seconds=0.5, max_seconds=4.0, rng=rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in draws), (retry, max(draws))


def test_jitter_spreads_over_the_whole_interval() -> None:
    """Goal: full jitter, not equal jitter: draws reach both the low and the high end of [0, ceiling].
    Method: 2,000 seeded draws at the cap; the minimum is below 5 % and the maximum above 95 % of it."""
    rng = random.Random(7)
    draws = [full_jitter_seconds(20, initial_seconds=1.0, max_seconds=10.0, rng=rng) for _ in range(2000)]
    assert min(draws) < 0.5
    assert max(draws) > 9.5


def test_seeded_rng_reproduces_the_sequence_and_reset_restarts_it() -> None:
    """Goal: the random source is injectable (tests reproduce delays) and reset() starts over at retry 0.
    Method: two Backoffs with equal seeds give equal sequences; after reset the ceiling is initial again."""
    first = Backoff(0.1, 2.0, random.Random(42))
    second = Backoff(0.1, 2.0, random.Random(42))
    assert [first.next_delay() for _ in range(8)] == [second.next_delay() for _ in range(8)]
    assert first.retry == 8
    first.reset()
    assert first.retry == 0
    assert first.next_delay() <= 0.1
    assert first.retry == 1


def test_bad_bounds_are_programmer_errors() -> None:
    """Goal: an initial delay above the cap, or zero, is refused. Method: construct with each."""
    with pytest.raises(AssertionError):
        Backoff(2.0, 1.0)
    with pytest.raises(AssertionError):
        Backoff(0.0, 1.0)
