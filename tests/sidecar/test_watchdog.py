"""systemd's watchdog for `symphony sidecar`, fed by every worker's housekeeping tick.

Goal: the supervisor pings WATCHDOG=1 while each worker's event loop runs its
tick (journal HEARTBEAT, gauges), and stops when one worker is stuck although
the supervisor itself and the other worker run on: systemd then restarts the
sidecar instead of leaving a stream that answers nobody. Method: a real sidecar
with two workers and NOTIFY_SOCKET on a datagram socket the test owns,
WATCHDOG_USEC=1 s; one worker (a child, not the supervisor systemd watches) is
stalled with SIGSTOP; no ping arrives for three watchdog periods; SIGCONT, and
the pings resume.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.notify_sink import WATCHDOG_USEC, NotifySink
from tests.sidecar.conftest import Sidecar, Upstream

WINDOW_SECONDS = 3 * WATCHDOG_USEC / 1_000_000


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[NotifySink]:
    sink = NotifySink(tmp_path)
    try:
        yield sink
    finally:
        sink.close()


async def test_sidecar_pings_only_while_every_worker_ticks(
        sink: NotifySink, sidecar_factory: Callable[..., Sidecar], module_database_url: str,
        upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pings while both workers tick; none while one is stopped; pings after it continues."""
    for key, value in sink.env().items():
        monkeypatch.setenv(key, value)
    sidecar = sidecar_factory(module_database_url, upstream.url, workers=2,
                              extra={"heartbeat_interval_seconds": 0.1})
    await sink.wait_pings(3, sidecar.process, "sidecar pings while its workers tick")
    assert any(message.startswith("READY=1") for message in sink.messages)
    workers = sidecar.worker_pids()
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGSTOP)
    try:
        await sink.pings_during(WINDOW_SECONDS / 2)  # a ping already on its way is not the point
        assert await sink.pings_during(WINDOW_SECONDS) == 0, "the sidecar pinged while a worker was stuck"
        assert sidecar.process.poll() is None
    finally:
        os.kill(workers[1], signal.SIGCONT)
    await sink.wait_pings(2, sidecar.process, "sidecar pings again once the worker runs")
    assert sidecar.stop() == 0
