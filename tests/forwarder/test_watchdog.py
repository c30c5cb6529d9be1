"""systemd's watchdog for `symphony forwarder`, fed by its maintenance loop and
by every stream's shipper.

Goal: WATCHDOG=1 goes out while the forwarder ships, and stops when one
stream's shipper is stuck even though the other loops (discovery, partitions)
keep running: a timer that pings on its own would hide the stuck stream.
Method: a real forwarder with NOTIFY_SOCKET on a datagram socket the test owns
and WATCHDOG_USEC=1 s; the stall is a real blocked dependency: the test holds
an ACCESS EXCLUSIVE lock on journal_checkpoints, appends records, waits until
the shipper's batch is seen waiting on the lock, and sees no ping for three
watchdog periods; released, the batch commits and the pings resume.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import asyncpg

from tests.forwarder.conftest import ForwarderProcess, checkpoints, fill, open_writer, wait_for
from tests.notify_sink import NotifySink, held_lock, wait_for_lock_waiter


async def test_forwarder_stops_pinging_while_a_stream_is_stuck(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, notify_sink: NotifySink,
        forwarder_factory: Callable[..., ForwarderProcess]) -> None:
    """Pings while shipping; none while one stream's batch waits on a lock; pings after."""
    journal_dir = tmp_path / "journal"
    writer = open_writer(journal_dir, 0)
    try:
        fill(writer, 10)
        forwarder = forwarder_factory(database_url, journal_dir)
        forwarder.env.update(notify_sink.env())
        forwarder.start()
        await wait_for(lambda: _shipped(db, 10), "the first records shipped")
        await notify_sink.wait_pings(3, forwarder.process, "forwarder pings while shipping")
        async with held_lock(database_url, "journal_checkpoints"):
            fill(writer, 10)
            await wait_for_lock_waiter(db, forwarder.process)
            await notify_sink.assert_silent("the forwarder pinged while a stream was stuck")
        await wait_for(lambda: _shipped(db, 20), "the blocked batch shipped after the lock")
        await notify_sink.wait_pings(2, forwarder.process, "forwarder pings again once the stream moves")
        assert forwarder.terminate() == 0
    finally:
        writer.close()


async def _shipped(db: asyncpg.Connection, seq: int) -> bool:
    return (await checkpoints(db)).get(0, 0) >= seq
