"""A relayer that claims a row again while it still holds an earlier attempt of it.

Goal: invariant 6 when a relayer stalls past its lease (SIGSTOP, CPU
starvation): its own reclaim (or repair) re-queues the row, and the same
process claims it again while its earlier rail call is still running. The
worker must not crash, must not start a second concurrent rail call for the
outbox id, and the earlier outcome must be fenced off by the newer attempt.
Method: an in-process Relayer against real PostgreSQL 18 with an in-process
rail whose first call is held open past the lease (the stalled call); the
real-process SIGSTOP reproduction is in test_relayer.py.
"""

from __future__ import annotations

import asyncio
import collections
import uuid

import asyncpg
import msgspec

from relayer.adapters import Kind, Outcome, rail_key
from relayer.config import RelayerConfig
from relayer.store import ClaimedRow, OutboxStore
from relayer.worker import Relayer
from tests.relayer.conftest import add_payments, wait_until


class HeldRail:
    """An in-process rail whose first attempt at a row answers only when the
    test lets it: the call outlives its lease, as a call does whose relayer was
    stopped after sending it. Counts calls in flight per outbox id."""

    supports_status = False

    def __init__(self) -> None:
        self.name = "held"
        self.let_go = asyncio.Event()
        self.calls: list[tuple[uuid.UUID, int]] = []
        self.in_flight: collections.Counter[uuid.UUID] = collections.Counter()
        self.most_in_flight = 0

    async def dispatch(self, row: ClaimedRow) -> Outcome:
        self.calls.append((row.id, row.attempt))
        self.in_flight[row.id] += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight[row.id])
        try:
            if row.attempt == 1:
                await self.let_go.wait()
            return Outcome(Kind.SUCCESS, "HELD_OK", None, rail_key(row.id)[:16])
        finally:
            self.in_flight[row.id] -= 1

    async def close(self) -> None:
        return None


def _settings(**overrides: object) -> RelayerConfig:
    # A lease of 1 s, renewed by nobody: the held call outlives it.
    base = {"rails": {"held": {"kind": "noop", "timeout_seconds": 0.5, "concurrency": 4}},
            "poll_interval_seconds": 0.05, "lease_seconds": 1.0, "lease_margin_seconds": 0.1,
            "backoff_base_seconds": 0.01, "backoff_max_seconds": 0.02, "admin_port": 0,
            "shutdown_timeout_seconds": 5.0}
    base.update(overrides)
    return msgspec.convert(base, RelayerConfig)


def _claimed_again(relayer: Relayer, earlier_call: str) -> float:
    return relayer.metrics.claimed_again_total.labels("held", earlier_call)._value.get()


async def _claimed_again_while_running(relayer: Relayer, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()  # the worker died: show why
        raise AssertionError("the relayer stopped by itself")
    return _claimed_again(relayer, "running") >= 1


async def _row(db: asyncpg.Connection, outbox_id: uuid.UUID) -> asyncpg.Record:
    return await db.fetchrow("SELECT status::text AS status, attempt_count, lease_owner FROM payment_outbox "
                             "WHERE id = $1", outbox_id)


async def test_claimed_again_during_its_own_call_waits_for_it(db: asyncpg.Connection, pool) -> None:
    (outbox_id,) = await add_payments(db, 1, rail="held", max_attempts=100)
    rail = HeldRail()
    relayer = Relayer(_settings(), OutboxStore(pool, "w-stalled"), {"held": rail})
    stop = asyncio.Event()
    task = asyncio.create_task(relayer.run(stop))
    try:
        # The lease expires during the held call; the worker's own reclaim
        # re-queues the row and its next claim takes it again.
        await wait_until(lambda: _claimed_again_while_running(relayer, task), timeout=30,
                         what="the row claimed again while its first call is held")
        assert not task.done(), task  # the worker survived the second claim
        assert rail.calls == [(outbox_id, 1)]  # no second call while the first runs
        row = await _row(db, outbox_id)
        assert row["status"] == "IN_FLIGHT" and row["attempt_count"] >= 2
        rail.let_go.set()
        await wait_until(lambda: db.fetchval("SELECT status = 'SUCCESS' FROM payment_outbox WHERE id = $1",
                                             outbox_id), timeout=30, what="the newer attempt SUCCESS")
    finally:
        rail.let_go.set()
        stop.set()
        await asyncio.wait_for(task, 30)
    assert rail.most_in_flight == 1
    # The newer attempt ran after the held one returned, with the same key.
    assert [attempt for _, attempt in rail.calls][0] == 1 and len(rail.calls) == 2
    final = await _row(db, outbox_id)
    assert final["attempt_count"] == rail.calls[1][1]
    # The held call's outcome (attempt 1) was fenced off, not written over the newer lease.
    assert relayer.metrics.completions_fenced._value.get() >= 1
    events = await db.fetch("SELECT old_status::text AS o, new_status::text AS n, attempt FROM outbox_events "
                            "WHERE outbox_id = $1 ORDER BY event_id", outbox_id)
    assert [(e["o"], e["n"]) for e in events][-1] == ("IN_FLIGHT", "SUCCESS")
    assert events[-1]["attempt"] == final["attempt_count"]
    assert all(rail_slot.inflight == 0 and rail_slot.calling == 0 for rail_slot in relayer.rails.values())
    assert relayer.pending == {} and relayer.unwritten == 0


async def test_stop_while_the_newer_attempt_waits_releases_it_unsent(db: asyncpg.Connection, pool) -> None:
    (outbox_id,) = await add_payments(db, 1, rail="held", max_attempts=100)
    rail = HeldRail()
    relayer = Relayer(_settings(shutdown_timeout_seconds=0.2), OutboxStore(pool, "w-stalled-stop"),
                      {"held": rail})
    stop = asyncio.Event()
    task = asyncio.create_task(relayer.run(stop))
    try:
        await wait_until(lambda: _claimed_again_while_running(relayer, task), timeout=30,
                         what="the row claimed again while its first call is held")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    # The held call was cut by the drain deadline (written as AMBIGUOUS, fenced
    # off); the waiting attempt was never sent and is given back.
    assert rail.calls == [(outbox_id, 1)]
    row = await _row(db, outbox_id)
    assert row["status"] == "RECOVERING" and row["lease_owner"] is None
    assert all(rail_slot.inflight == 0 and rail_slot.calling == 0 for rail_slot in relayer.rails.values())
    assert relayer.pending == {} and relayer.unwritten == 0
