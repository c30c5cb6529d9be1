"""The per-rail circuit breaker on an injected clock (relayer/breaker.py).

Goal: the breaker's time rules hold exactly: it opens after the threshold of
consecutive unhealthy outcomes, lets nothing through while open, allows exactly
one probe once reset_seconds have passed (not a moment earlier), closes on a
healthy probe and reopens on an unhealthy one; a poison payload says nothing
about the rail. Method: drive the breaker with a fake clock, so time is
stepped, never slept, and the boundary is checked at its exact value.
"""

from __future__ import annotations

from relayer.breaker import CircuitBreaker, State


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _opened(clock: FakeClock) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=3, reset_seconds=5.0, clock=clock)
    for _ in range(2):
        breaker.record(False)
    assert breaker.state == State.CLOSED and breaker.allowed(8) == 8
    breaker.record(False)
    assert breaker.state == State.OPEN and breaker.opens == 1
    return breaker


def test_opens_after_the_threshold_and_waits_out_the_reset_exactly() -> None:
    """Goal: open at the threshold, shut until reset_seconds to the exact value.
    Method: step the clock to just before, then onto, the boundary."""
    clock = FakeClock()
    breaker = _opened(clock)
    assert breaker.allowed(8) == 0
    clock.now += 4.999
    assert breaker.allowed(8) == 0 and breaker.state == State.OPEN
    clock.now += 0.001
    assert breaker.allowed(8) == 1 and breaker.state == State.HALF_OPEN


def test_half_open_allows_one_probe_and_its_outcome_decides() -> None:
    """Goal: one probe at a time; a failed probe reopens for a full period, a
    healthy one closes. Method: fail one probe, then pass the next."""
    clock = FakeClock()
    breaker = _opened(clock)
    clock.now += 5.0
    assert breaker.allowed(8) == 1
    breaker.started(1)
    assert breaker.allowed(8) == 0, "one probe at a time"
    breaker.record(False)  # the probe failed: open again, for a full reset period from now
    assert breaker.state == State.OPEN and breaker.opens == 2
    clock.now += 4.0
    assert breaker.allowed(8) == 0
    clock.now += 1.0
    assert breaker.allowed(8) == 1
    breaker.started(1)
    breaker.record(True)
    assert breaker.state == State.CLOSED and breaker.allowed(8) == 8


def test_a_poison_payload_says_nothing_about_the_rail() -> None:
    """Goal: outcomes that say nothing about the rail (None) neither count nor
    reset; a healthy answer resets the count. Method: mix them in, closed and
    half-open."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_seconds=1.0, clock=clock)
    breaker.record(False)
    breaker.record(None)
    assert breaker.state == State.CLOSED and breaker.consecutive_failures == 1
    breaker.record(True)  # a terminal refusal is healthy: the rail answered
    breaker.record(False)
    assert breaker.state == State.CLOSED, "the healthy answer reset the count"
    breaker = _opened(clock)
    clock.now += 5.0
    assert breaker.allowed(4) == 1
    breaker.started(1)
    breaker.record(None)  # the probe hit a poison payload: probe again, still half-open
    assert breaker.state == State.HALF_OPEN and breaker.allowed(4) == 1
