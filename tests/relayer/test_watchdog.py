"""systemd's watchdog for `symphony relayer`, fed by the claim loop.

Goal: WATCHDOG=1 goes out while the relayer claims and stops when the claim
loop is stuck. Method: a real relayer (with a real rail simulator) and
NOTIFY_SOCKET on a datagram socket the test owns, WATCHDOG_USEC=1 s; the stall
is a real blocked dependency: the test holds an ACCESS EXCLUSIVE lock on
payment_outbox, waits until the relayer's claim is seen waiting on it, and sees
no ping for three watchdog periods; released, the pings resume.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests.notify_sink import NotifySink, held_lock, wait_for_lock_waiter
from tests.relayer.conftest import Processes


async def test_relayer_pings_the_watchdog_and_stops_when_the_claim_is_stuck(
        database_url: str, db: asyncpg.Connection, notify_sink: NotifySink, processes: Processes,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Pings while idle-claiming; none while the claim waits on a lock; pings after."""
    rail = processes.rail_sim("swiftpay")
    # Only the relayer is started after this: the rail simulator has no NOTIFY_SOCKET.
    for key, value in notify_sink.env().items():
        monkeypatch.setenv(key, value)
    relayer, _ = processes.relayer("wd", database_url, {"swiftpay": ("swiftpay", rail)})
    await notify_sink.wait_pings(3, relayer, "relayer pings while claiming")
    assert "READY=1" in notify_sink.messages
    async with held_lock(database_url, "payment_outbox"):
        await wait_for_lock_waiter(db, relayer)
        await notify_sink.assert_silent("the relayer pinged while its claim was stuck")
        assert relayer.poll() is None
    await notify_sink.wait_pings(2, relayer, "relayer pings again once the lock is released")
