"""The kill-switch: participants' status and policy version, cached (invariant 10).

The cache is filled from PostgreSQL at start, refreshed row by row when a
NOTIFY on `symphony_participants` names a participant (pushed, sub-second),
and reloaded in full every `poll_seconds` (the fallback when a notification
is lost or the listening connection dies). `staleness_seconds()` is the time
since the last full load that succeeded while the listener was healthy, or
since the last successful poll; beyond the bound, executing routes fail
closed (503 policy_stale).

Propagation time (row's `updated_at` to the moment this cache applied it) is
observed per notification, so /metrics shows how long revocation takes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from symphony.backoff import Backoff
from symphony.db import connect
from symphony.db.queries import load
from symphony.errors import SymphonyError

QUERIES = load(__package__, "queries.sql")
CHANNEL = "symphony_participants"
QUERY_TIMEOUT_SECONDS = 5.0
RECONNECT_SECONDS_MIN = 0.2
RECONNECT_SECONDS_MAX = 5.0
log = logging.getLogger("sidecar.policy")


@dataclass(frozen=True, slots=True)
class Participant:
    status: str
    policy_version: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    status: int = 200
    reason: str = ""


ALLOW = Decision(True)


class PolicyCache:
    def __init__(self, dsn: str, *, poll_seconds: float, staleness_seconds_max: float,
                 on_propagation: Callable[[float], None] | None = None) -> None:
        self.dsn = dsn
        self.poll_seconds = poll_seconds
        self.staleness_seconds_max = staleness_seconds_max
        self.participants: dict[str, Participant] = {}
        self.loaded = False
        self._fresh_at = float("-inf")  # monotonic time of the last good refresh
        self._on_propagation = on_propagation
        self._conn: asyncpg.Connection | None = None
        self._listening = False
        # One connection both listens and queries; asyncpg allows one query at a time.
        self._query_lock = asyncio.Lock()
        self.first_load = asyncio.Event()

    def staleness_seconds(self) -> float:
        return time.monotonic() - self._fresh_at

    def is_fresh(self) -> bool:
        return self.staleness_seconds() <= self.staleness_seconds_max

    def decide(self, participant_id: str, token_policy_version: int, executes: bool) -> Decision:
        """Pure decision on the cached state (no I/O on the request path)."""
        if executes and not self.is_fresh():
            return Decision(False, 503, "policy_stale")
        if not self.loaded:
            return Decision(False, 503, "policy_unavailable")
        participant = self.participants.get(participant_id)
        if participant is None:
            return Decision(False, 403, "unknown_participant")
        if participant.status != "ACTIVE":
            return Decision(False, 403, "participant_suspended")
        if token_policy_version and token_policy_version < participant.policy_version:
            return Decision(False, 403, "stale_policy_version")
        return ALLOW

    def current_version(self, participant_id: str) -> int:
        participant = self.participants.get(participant_id)
        return participant.policy_version if participant else 0

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the cache fresh until `stop`: connect, listen, poll; reconnect on failure."""
        backoff = Backoff(RECONNECT_SECONDS_MIN, RECONNECT_SECONDS_MAX)
        while not stop.is_set():
            try:
                await self._connect_and_listen()
                backoff.reset()
                while not stop.is_set():
                    await self._reload_all()
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=self.poll_seconds)
                    except asyncio.TimeoutError:
                        pass
                    if stop.is_set():
                        break
                    if self._conn is None or self._conn.is_closed():
                        raise ConnectionError("policy connection closed")
            except (OSError, ConnectionError, asyncio.TimeoutError, asyncpg.PostgresError,
                    asyncpg.InterfaceError, SymphonyError) as exc:
                log.warning("policy refresh failed; retrying", extra={"error": str(exc) or type(exc).__name__,
                                                                      "staleness_seconds": round(self.staleness_seconds(), 3)})
                await self._close()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=backoff.next_delay())
                except asyncio.TimeoutError:
                    pass
        await self._close()

    async def _connect_and_listen(self) -> None:
        self._conn = await connect(self.dsn)
        self._conn.add_termination_listener(self._on_terminated)
        await self._conn.add_listener(CHANNEL, self._on_notify)
        self._listening = True

    def _on_terminated(self, _: asyncpg.Connection) -> None:
        self._listening = False

    async def _close(self) -> None:
        self._listening = False
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=2.0)
            except (OSError, asyncio.TimeoutError, asyncpg.InterfaceError):
                conn.terminate()

    async def _reload_all(self) -> None:
        assert self._conn is not None
        started = time.monotonic()
        async with self._query_lock:
            rows = await self._conn.fetch(QUERIES["participants_all"], timeout=QUERY_TIMEOUT_SECONDS)
        self.participants = {r["participant_id"]: Participant(r["status"], r["policy_version"]) for r in rows}
        self.loaded = True
        self._fresh_at = started
        self.first_load.set()

    def _on_notify(self, conn: asyncpg.Connection, pid: int, channel: str, payload: str) -> None:
        asyncio.get_running_loop().create_task(self._refresh_one(payload))

    async def _refresh_one(self, participant_id: str) -> None:
        conn = self._conn
        if conn is None or conn.is_closed():
            return
        try:
            async with self._query_lock:
                row = await conn.fetchrow(QUERIES["participant_one"], participant_id, timeout=QUERY_TIMEOUT_SECONDS)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The poll loop reloads everything within poll_seconds; staleness covers the rest.
            log.warning("policy row refresh failed", extra={"participant_id": participant_id, "error": str(exc)})
            return
        if row is None:
            self.participants.pop(participant_id, None)
            return
        self.participants[participant_id] = Participant(row["status"], row["policy_version"])
        if self._on_propagation is not None:
            lag = (dt.datetime.now(dt.timezone.utc) - row["updated_at"]).total_seconds()
            self._on_propagation(max(0.0, lag))
