"""The relayer loop: claim in batches, dispatch with per-rail limits, write back in batches.

One cycle: reclaim expired leases (bounded, at most once per poll interval),
ask each rail's breaker how many calls may start, claim that many due rows in
one round trip, and start one task per row. Outcomes go to a bounded queue that
a flusher writes in batches. A rail slot (`concurrency` per rail) is freed when
the rail call returns, so the next call does not wait for the database write of
the previous outcome; outcomes not yet written have their own allowance of the
same size, so a rail never has more than `concurrency` calls running and more
than 2 × `concurrency` rows leased but unwritten, and the queue is bounded.

The loop sleeps until a NOTIFY on `symphony_outbox` (new rows), a freed slot,
or the poll interval, whichever comes first; with `listen = false` (behind a
transaction-mode connection pooler) only the poll wakes it.

Stopping (SIGTERM): no new claims; calls in progress get until the drain
deadline; what is still running is then cancelled and written as AMBIGUOUS
(it may have reached the rail; the next attempt resends the same key), rows
claimed but never sent are released, and the final writes are shielded from
cancellation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from relayer.adapters import Kind, Outcome, RailAdapter
from relayer.breaker import CircuitBreaker
from relayer.config import RelayerConfig
from relayer.metrics import RailMetrics, RelayerMetrics
from relayer.store import BreakerReport, ClaimedRow, Completion, OutboxStore
from symphony.backoff import full_jitter_seconds
from symphony.db import RETRYABLE_ERRORS, connect
from symphony.errors import SymphonyError
from symphony.lifecycle import Watchdog

WATCHDOG_LOOP = "claim"
log = logging.getLogger("relayer")

# Errors of one database round trip that the loop survives (it retries on the
# next cycle): the shared set, and any SymphonyError the store raises;
# anything else is a bug and stops the daemon.
DB_ERRORS = (*RETRYABLE_ERRORS, SymphonyError)
WRITE_ATTEMPTS_MAX = 5
WRITE_DRAIN_SECONDS_MAX = 30.0
# A rail may have `concurrency` calls running and at most this many times
# `concurrency` rows leased but not written back (running or waiting for the
# flusher): the bound on the completion queue.
UNWRITTEN_FACTOR = 2
# A breaker report stays valid for this many report intervals: a reader takes a
# report older than that for the last word of a relayer that died.
BREAKER_REPORT_VALID_INTERVALS = 3
CHANNEL = "symphony_outbox"


@dataclass
class _Rail:
    name: str
    adapter: RailAdapter
    breaker: CircuitBreaker
    concurrency: int
    metrics: RailMetrics
    inflight: int = 0  # leased by this worker and not yet written back (calling + unwritten)
    calling: int = 0   # leased and not yet reported: the rail call has not returned
    wake_slots: int = 1  # free slots that make a finished call wake the claim loop


@dataclass(slots=True)
class _Pending:
    """One claimed attempt: it holds a rail slot until reported and its lease until written."""

    row: ClaimedRow
    task: asyncio.Task[None] | None = None
    sent: bool = False
    reported: bool = False
    # A newer attempt at the same row that this worker claimed while this call
    # was still running (this process stalled past its lease and the row was
    # re-queued). It starts only once this call has returned: one outbox id
    # never has two rail calls in flight from one worker.
    successor: _Pending | None = None


@dataclass
class Relayer:
    settings: RelayerConfig
    store: OutboxStore
    adapters: dict[str, RailAdapter]
    metrics: RelayerMetrics = field(default_factory=RelayerMetrics)
    database_url: str = ""
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    # Fed by the claim loop (run): a claim stuck on the database stops systemd's pings.
    watchdog: Watchdog = field(default_factory=Watchdog)

    def __post_init__(self) -> None:
        self.rails = {
            name: _Rail(name, self.adapters[name],
                        CircuitBreaker(rail.breaker_failure_threshold, rail.breaker_reset_seconds, self.clock),
                        rail.concurrency, RailMetrics(self.metrics, name))
            for name, rail in self.settings.rails.items()
        }
        capacity = sum(UNWRITTEN_FACTOR * rail.concurrency for rail in self.rails.values())
        # Each outcome travels with its attempt, so the write releases that very
        # attempt and never a newer one of the same row (see _claimed_again).
        self.completions: asyncio.Queue[tuple[Completion, _Pending]] = asyncio.Queue(maxsize=capacity)
        self.pending: dict[uuid.UUID, _Pending] = {}  # the newest attempt per row this worker holds
        self.unwritten = 0  # outcomes reported and not yet written (or given up)
        self.stopping = False
        self.wake = asyncio.Event()
        self.healthy = True
        self._last_reclaim = float("-inf")
        self._listen_conn: asyncpg.Connection | None = None
        self._last_listen_try = float("-inf")
        self._reported_breakers: tuple[int, ...] | None = None  # states last published; None: publish
        self._last_breaker_report = float("-inf")
        for rail in self.rails.values():
            rail.metrics.breaker_state.set(0)
            rail.wake_slots = max(1, min(rail.concurrency, self.settings.batch_size) // 4)

    # -- main loop --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, drain_deadline: Callable[[], float] | None = None) -> None:
        flusher = asyncio.create_task(self._flush_loop(), name="relayer-flusher")
        try:
            while not stop.is_set():
                self.watchdog.beat(WATCHDOG_LOOP)
                await self._ensure_listening()
                claimed_full = await self._cycle()
                if claimed_full:
                    await asyncio.sleep(0)  # more may be due: go again, letting tasks run
                    continue
                await self._sleep(stop)
        finally:
            await self._drain(flusher, drain_deadline)

    async def _sleep(self, stop: asyncio.Event) -> None:
        self.wake.clear()
        waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
        deadline = time.monotonic() + self.settings.poll_interval_seconds
        try:
            # In slices, so an idle loop keeps feeding the watchdog.
            while (remaining := deadline - time.monotonic()) > 0:
                done, _ = await asyncio.wait(waiters, timeout=min(remaining, self.watchdog.beat_interval_seconds),
                                             return_when=asyncio.FIRST_COMPLETED)
                if done:
                    break
                self.watchdog.beat(WATCHDOG_LOOP)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _cycle(self) -> bool:
        """One claim round; True when every offered slot was filled (more may be due)."""
        now = self.clock()
        if now - self._last_reclaim >= self.settings.poll_interval_seconds:
            self._last_reclaim = now
            await self._reclaim()
        slots = self._free_slots()
        await self._report_breakers()
        offered = sum(slots.values())
        if offered == 0:
            return False
        try:
            rows = await self.store.claim_batch(slots, self.settings.lease_seconds)
        except DB_ERRORS as exc:
            self._database_error("claim", exc)
            return False
        self.healthy = True
        for row in rows:
            self._start(row)
        self._publish_inflight()
        return len(rows) == offered

    def _free_slots(self) -> dict[str, int]:
        budget = self.settings.batch_size
        slots: dict[str, int] = {}
        for name, rail in self.rails.items():
            free = min(rail.concurrency - rail.calling, UNWRITTEN_FACTOR * rail.concurrency - rail.inflight)
            allowed = min(rail.breaker.allowed(max(0, free)), budget)
            rail.metrics.breaker_state.set(int(rail.breaker.state))
            slots[name] = allowed
            budget -= allowed
        return slots

    async def _report_breakers(self) -> None:
        """Publish the breakers when one changed state, else every breaker_report_seconds.

        The breakers live in this process; the row in rail_breaker_reports is how
        the regulator dashboard learns that a rail is cut off while its payments wait.
        """
        states = tuple(int(rail.breaker.state) for rail in self.rails.values())
        now = self.clock()
        if states == self._reported_breakers and now - self._last_breaker_report < self.settings.breaker_report_seconds:
            return
        wall = dt.datetime.now(dt.timezone.utc)
        reports = [BreakerReport(name, rail.breaker.state.name,
                                 wall - dt.timedelta(seconds=now - rail.breaker.opened_at) if rail.breaker.opens else None,
                                 rail.breaker.consecutive_failures)
                   for name, rail in self.rails.items()]
        self._last_breaker_report = now
        try:
            await self.store.report_breakers(reports, BREAKER_REPORT_VALID_INTERVALS * self.settings.breaker_report_seconds)
        except DB_ERRORS as exc:
            self._reported_breakers = None  # try again next cycle
            self._database_error("report_breakers", exc)
            return
        self._reported_breakers = states

    async def _reclaim(self) -> None:
        try:
            reclaimed = await self.store.reclaim_expired(self.settings.reclaim_batch_max)
        except DB_ERRORS as exc:
            self._database_error("reclaim", exc)
            return
        if reclaimed:
            self.metrics.leases_reclaimed.inc(len(reclaimed))
            dead = [str(r["id"]) for r in reclaimed if r["new_status"] == "FAILED"]
            log.warning("reclaimed expired leases", extra={"rows": len(reclaimed), "dead_letters": dead})

    def _database_error(self, operation: str, exc: BaseException) -> None:
        self.healthy = False
        self.metrics.database_errors.labels(operation).inc()
        log.error("database round trip failed; retrying next cycle",
                  extra={"operation": operation, "error": f"{type(exc).__name__}: {exc}"})

    # -- dispatch ---------------------------------------------------------------------

    def _start(self, row: ClaimedRow) -> None:
        rail = self.rails[row.rail]
        rail.inflight += 1
        rail.calling += 1
        rail.breaker.started(1)
        rail.metrics.claimed.inc()
        pending = _Pending(row)
        earlier = self.pending.get(row.id)
        if earlier is not None and self._claimed_again(earlier, pending):
            return  # deferred until the earlier call returns
        self.pending[row.id] = pending
        self._launch(pending)

    def _launch(self, pending: _Pending) -> None:
        # Unnamed: formatting a name per row cost more than the call to the no-op rail.
        pending.task = asyncio.create_task(self._dispatch(pending))

    def _claimed_again(self, earlier: _Pending, pending: _Pending) -> bool:
        """This worker claimed a row it still holds an earlier attempt of: the
        lease expired while the process stalled (SIGSTOP, CPU starvation) and the
        row was re-queued (reclaim or repair). True when the new attempt must wait.

        The earlier outcome is fenced off when written (its attempt is no longer
        the row's), so only the new attempt decides the row. If the earlier rail
        call is still running, the new one waits for it: the same rail key would
        make a second concurrent call harmless to the rail, but it is still a
        second strike in flight, and invariant 6 wants one."""
        row = pending.row
        running = not earlier.reported
        self.rails[row.rail].metrics.claimed_again(running).inc()
        log.warning("claimed a row again while holding an earlier attempt: the lease expired while this worker "
                    "stalled; the earlier outcome will be fenced off" +
                    ("; the new attempt waits for the earlier rail call" if running else ""),
                    extra={"outbox_id": str(row.id), "earlier_attempt": earlier.row.attempt,
                           "attempt": row.attempt, "earlier_call": "running" if running else "returned"})
        if not running:
            return False
        if earlier.successor is not None:
            # Claimed a third time while the second waited: the second was never
            # sent and its lease is gone too; the newest one replaces it.
            self._release(earlier.successor)
        earlier.successor = pending
        return True

    async def _dispatch(self, pending: _Pending) -> None:
        row = pending.row
        rail = self.rails[row.rail]
        if row.attempt == 1:
            rail.metrics.insert_to_dispatch_seconds.observe(max(0.0, time.time() - row.created_at.timestamp()))
        started = time.perf_counter()
        pending.sent = True
        try:
            outcome = await rail.adapter.dispatch(row)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a poison payload: one failed attempt, never a dead worker
            outcome = Outcome(Kind.POISON, "ADAPTER_ERROR", f"{type(exc).__name__}: {exc}"[:500])
            log.warning("adapter raised; counted as an attempt",
                        extra={"outbox_id": str(row.id), "attempt": row.attempt, "error": outcome.detail})
        rail.metrics.rail_call_seconds.observe(time.perf_counter() - started)
        rail.metrics.dispatch_counter(outcome.kind.value).inc()
        opens_before, state_before = rail.breaker.opens, rail.breaker.state
        rail.breaker.record(None if outcome.kind == Kind.POISON else outcome.rail_healthy)
        if rail.breaker.opens > opens_before:
            rail.metrics.breaker_opens.inc()
            log.warning("circuit breaker open", extra={"rail": row.rail, "last_code": outcome.code,
                                                       "reset_seconds": rail.breaker.reset_seconds})
        elif rail.breaker.state != state_before:
            log.info("circuit breaker state", extra={"rail": row.rail, "state": rail.breaker.state.name})
        if rail.breaker.state != state_before:
            rail.metrics.breaker_state.set(int(rail.breaker.state))
        self._report(pending, outcome)

    def _report(self, pending: _Pending, outcome: Outcome) -> None:
        assert not pending.reported
        pending.reported = True
        completion = self.completion_for(pending.row, outcome)
        self._count(pending.row, completion)
        self.completions.put_nowait((completion, pending))  # bounded by the unwritten allowance: never full
        self.unwritten += 1
        rail = self.rails[pending.row.rail]
        rail.calling -= 1
        assert rail.calling >= 0
        if pending.successor is not None:
            self._promote(pending)
        # Claim again once a quarter of the rail's slots are free, not after every
        # call: one claim round trip per row would cost more than the rows.
        if rail.concurrency - rail.calling >= rail.wake_slots:
            self.wake.set()

    def _promote(self, pending: _Pending) -> None:
        """The earlier call returned: its waiting successor becomes the row's attempt
        and is sent now (resending the same key, or asking the rail first), unless
        the worker is stopping, in which case the drain releases it unsent. Its
        lease is still good: it was claimed after the stall, and the earlier call
        ends within the rail's worst case, which the loader keeps below
        lease_seconds minus lease_margin_seconds."""
        successor, pending.successor = pending.successor, None
        assert successor is not None and successor.row.id == pending.row.id
        self.pending[successor.row.id] = successor
        if not self.stopping:
            self._launch(successor)

    def completion_for(self, row: ClaimedRow, outcome: Outcome) -> Completion:
        """Pure: the status an outcome leads to, given the row's budget."""
        if outcome.kind == Kind.SUCCESS:
            return Completion(row.id, row.attempt, "SUCCESS", outcome.code, None, outcome.reference, 0.0, False)
        if outcome.kind == Kind.FAILED:
            return Completion(row.id, row.attempt, "FAILED", outcome.code, outcome.detail, outcome.reference,
                              0.0, False)
        if row.attempt >= row.max_attempts:
            detail = f"retry budget of {row.max_attempts} attempts exhausted; last: {outcome.detail or outcome.code}"
            return Completion(row.id, row.attempt, "FAILED", outcome.code, detail, outcome.reference, 0.0, True)
        return Completion(row.id, row.attempt, "RECOVERING", outcome.code, outcome.detail, outcome.reference,
                          self.backoff_seconds(row.attempt), False)

    def backoff_seconds(self, attempt: int) -> float:
        """The delay after attempt `attempt` (1-based): full jitter (symphony.backoff)."""
        return full_jitter_seconds(attempt - 1, initial_seconds=self.settings.backoff_base_seconds,
                                   max_seconds=self.settings.backoff_max_seconds, rng=self.rng)

    def _count(self, row: ClaimedRow, completion: Completion) -> None:
        metrics = self.rails[row.rail].metrics
        if completion.status == "SUCCESS":
            metrics.succeeded.inc()
        elif completion.dead_letter:
            metrics.dlq_records_entered.inc()
        elif completion.status == "FAILED":
            metrics.records_terminal.inc()
        else:
            metrics.retries.inc()

    # -- write-back -------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            batch = [await self.completions.get()]
            await self._gather_more(batch)
            await asyncio.shield(self._write(batch))

    async def _gather_more(self, batch: list[tuple[Completion, _Pending]]) -> None:
        waited = False
        while len(batch) < self.settings.completion_batch_max:
            try:
                batch.append(self.completions.get_nowait())
            except asyncio.QueueEmpty:
                if waited or self.settings.completion_flush_seconds == 0:
                    return
                await asyncio.sleep(self.settings.completion_flush_seconds)
                waited = True

    async def _write(self, batch: list[tuple[Completion, _Pending]]) -> None:
        """Write outcomes, retrying a bounded number of times. If the database stays
        away the outcomes are dropped: the leases expire and the rows are retried with
        the same key, so the rail answers from its idempotency store (no second strike)."""
        completions = [completion for completion, _ in batch]
        lost = False
        for attempt in range(1, WRITE_ATTEMPTS_MAX + 1):
            try:
                written, incidents = await self.store.complete_batch(completions)
                break
            except DB_ERRORS as exc:
                self._database_error("complete", exc)
                if attempt == WRITE_ATTEMPTS_MAX:
                    self.metrics.completions_lost.inc(len(batch))
                    log.error("outcomes not written; their leases will expire and the rows be retried",
                              extra={"rows": [str(c.id) for c in completions]})
                    written, incidents, lost = 0, 0, True
                    break
                await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))
        self.metrics.completion_rows.observe(len(batch))
        if written < len(batch) and not lost:
            self.metrics.completions_fenced.inc(len(batch) - written)
            log.info("some outcomes were fenced off (the lease or attempt is no longer this worker's)",
                     extra={"rows": len(batch), "written": written})
        if incidents:
            log.warning("dead letters", extra={"incidents": incidents})
        for _, pending in batch:
            self._release(pending)
        self.unwritten -= len(batch)
        assert self.unwritten >= 0
        self._publish_inflight()

    def _release(self, pending: _Pending) -> None:
        """Give up one attempt's slot. By identity, not by row id: a newer attempt
        at the same row (claimed again after a stall) stays pending."""
        if self.pending.get(pending.row.id) is pending:
            del self.pending[pending.row.id]
        rail = self.rails[pending.row.rail]
        rail.inflight -= 1
        assert rail.inflight >= 0
        if not pending.reported:
            rail.calling -= 1  # claimed, never sent: released at shutdown, or replaced by a newer claim
            assert rail.calling >= 0
        self.wake.set()

    def _publish_inflight(self) -> None:
        """Set the inflight gauges once per batch rather than once per row."""
        for rail in self.rails.values():
            rail.metrics.inflight.set(rail.inflight)

    # -- LISTEN -----------------------------------------------------------------------

    async def _ensure_listening(self) -> None:
        if not self.settings.listen or not self.database_url:
            return
        if self._listen_conn is not None and not self._listen_conn.is_closed():
            return
        now = self.clock()
        if now - self._last_listen_try < self.settings.poll_interval_seconds:
            return
        self._last_listen_try = now
        self.metrics.listening.set(0)
        try:
            conn = await connect(self.database_url)
            await conn.add_listener(CHANNEL, self._on_notify)
        except DB_ERRORS as exc:
            self._database_error("listen", exc)
            return
        self._listen_conn = conn
        self.metrics.listening.set(1)
        self.wake.set()  # rows may have arrived while we were not listening

    def _on_notify(self, *_: object) -> None:
        self.wake.set()

    # -- stopping ---------------------------------------------------------------------

    async def _drain(self, flusher: asyncio.Task[None], drain_deadline: Callable[[], float] | None) -> None:
        self.stopping = True  # a successor whose earlier call returns from now on is released, not sent
        tasks = [p.task for p in self.pending.values() if p.task is not None and not p.task.done()]
        timeout = max(0.0, (drain_deadline() if drain_deadline else self.settings.shutdown_timeout_seconds))
        if tasks:
            log.info("draining", extra={"in_flight": len(tasks), "timeout_seconds": round(timeout, 1)})
            _, still_running = await asyncio.wait(tasks, timeout=timeout)
            for task in still_running:
                task.cancel()
            await asyncio.gather(*still_running, return_exceptions=True)
        for pending in list(self.pending.values()):
            if pending.sent and not pending.reported:
                self._report(pending, Outcome(Kind.AMBIGUOUS, "AMBIGUOUS_SHUTDOWN",
                                              "relayer stopped during the rail call"))
        # After the reports above: a successor promoted by one of them is unsent.
        unsent = [p for p in self.pending.values() if not p.sent and not p.reported]
        unsent += [p.successor for p in unsent if p.successor is not None]
        # The flusher writes every reported outcome (its writes are shielded);
        # wait, bounded, until it has, then stop it while it idles on the queue.
        deadline = time.monotonic() + WRITE_DRAIN_SECONDS_MAX
        while self.unwritten > 0 and time.monotonic() < deadline and not flusher.done():
            await asyncio.sleep(0.01)
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        if unsent:
            await asyncio.shield(self._release_unsent(unsent))
        try:
            await self.store.forget_breakers()
        except DB_ERRORS as exc:  # the reports expire on their own (valid_until)
            self._database_error("forget_breakers", exc)
        if self._listen_conn is not None:
            try:
                await self._listen_conn.close(timeout=2.0)
            except DB_ERRORS as exc:  # the server went away first; close() has aborted the socket
                self._database_error("unlisten", exc)
        for adapter in self.adapters.values():
            await adapter.close()

    async def _release_unsent(self, unsent: list[_Pending]) -> None:
        try:
            released = await self.store.release_unstarted([p.row for p in unsent])
        except DB_ERRORS as exc:
            self._database_error("release", exc)
            released = 0
        for pending in unsent:
            self._release(pending)
        self._publish_inflight()
        log.info("released unsent rows", extra={"rows": len(unsent), "released": released})
