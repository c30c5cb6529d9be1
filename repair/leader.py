"""Leader election with a PostgreSQL session advisory lock.

Exactly one repair instance acts: the one whose session holds the lock. The lock
lives as long as that session: if the leader process dies, its socket closes,
the server ends the session and the lock is free at once; if the leader's
machine vanishes, TCP keepalives (set below) end the session within about
idle + interval x count seconds. Standbys try again every
`leader_retry_seconds`, so takeover takes at most that bound plus one try.
A leader checks it still holds the lock before each cycle and steps down when
it does not (session lost), so two instances never act at once for longer than
one cycle.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from symphony.db import RETRYABLE_ERRORS, connect, queries

log = logging.getLogger("repair.leader")
TIMEOUT_SECONDS = 5.0
# Session keepalives: a vanished leader's lock is released within ~5 + 2 x 3 s.
KEEPALIVE_SETTINGS = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3"}
QUERIES = queries.load(__package__, "leader.sql")


class Leadership:
    """The lock-holding session of one repair instance."""

    def __init__(self, dsn: str, lock_key: int, instance_id: str) -> None:
        assert 0 <= lock_key < 2**63, "advisory lock keys are signed 64-bit"
        self.dsn = dsn
        self.lock_key = lock_key
        self.instance_id = instance_id
        self.conn: asyncpg.Connection | None = None
        self.held = False

    async def try_acquire(self) -> bool:
        """Try once; True when this instance is (now) the leader."""
        assert not self.held
        try:
            if self.conn is None or self.conn.is_closed():
                self.conn = await connect(self.dsn, server_settings={
                    "application_name": f"symphony-repair:{self.instance_id}"[:63], **KEEPALIVE_SETTINGS})
            self.held = bool(await self.conn.fetchval(QUERIES["try_lock"], self.lock_key,
                                                      timeout=TIMEOUT_SECONDS))
        except RETRYABLE_ERRORS as exc:
            log.warning("leader election failed: %s", exc or type(exc).__name__)
            await self._drop()
        return self.held

    async def still_leader(self) -> bool:
        """Whether the session still holds the lock; steps down when it does not."""
        if not self.held or self.conn is None:
            return False
        try:
            key = self.lock_key
            holds = await self.conn.fetchval(QUERIES["holds_lock"], key, timeout=TIMEOUT_SECONDS)
        except RETRYABLE_ERRORS as exc:
            log.warning("leader session lost: %s", exc or type(exc).__name__)
            holds = False
        if not holds:
            await self._drop()
        return bool(holds)

    async def release(self) -> None:
        if self.held and self.conn is not None and not self.conn.is_closed():
            try:
                await self.conn.fetchval(QUERIES["unlock"], self.lock_key, timeout=TIMEOUT_SECONDS)
            except RETRYABLE_ERRORS as exc:
                log.warning("could not release the leader lock (the session end releases it): %s", exc)
        await self._drop()

    async def _drop(self) -> None:
        self.held = False
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=TIMEOUT_SECONDS)
            except RETRYABLE_ERRORS:
                conn.terminate()
