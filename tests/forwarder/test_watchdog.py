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

from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.forwarder.conftest import ForwarderProcess, checkpoints, fill, open_writer, wait_for
from tests.notify_sink import WATCHDOG_USEC, NotifySink, wait_for_lock_waiter

WINDOW_SECONDS = 3 * WATCHDOG_USEC / 1_000_000


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[NotifySink]:
    sink = NotifySink(tmp_path)
    try:
        yield sink
    finally:
        sink.close()


async def test_forwarder_stops_pinging_while_a_stream_is_stuck(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, sink: NotifySink,
        forwarder_factory: Callable[..., ForwarderProcess]) -> None:
    """Pings while shipping; none while one stream's batch waits on a lock; pings after."""
    journal_dir = tmp_path / "journal"
    writer = open_writer(journal_dir, 0)
    try:
        fill(writer, 10)
        forwarder = forwarder_factory(database_url, journal_dir)
        forwarder.env.update(sink.env())
        forwarder.start()
        await wait_for(lambda: _shipped(db, 10), "the first records shipped")
        await sink.wait_pings(3, forwarder.process, "forwarder pings while shipping")
        blocker = await asyncpg.connect(database_url)
        try:
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute("LOCK TABLE journal_checkpoints IN ACCESS EXCLUSIVE MODE")
            fill(writer, 10)
            await wait_for_lock_waiter(db, forwarder.process)
            await sink.pings_during(WINDOW_SECONDS / 3)  # a ping already on its way is not the point
            assert await sink.pings_during(WINDOW_SECONDS) == 0, "the forwarder pinged while a stream was stuck"
            await transaction.rollback()
        finally:
            await blocker.close()
        await wait_for(lambda: _shipped(db, 20), "the blocked batch shipped after the lock")
        await sink.wait_pings(2, forwarder.process, "forwarder pings again once the stream moves")
        assert forwarder.terminate() == 0
    finally:
        writer.close()


async def _shipped(db: asyncpg.Connection, seq: int) -> bool:
    return (await checkpoints(db)).get(0, 0) >= seq
