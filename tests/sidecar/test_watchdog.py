"""systemd's watchdog for `symphony sidecar`, fed by every worker's housekeeping tick.

Goal: the supervisor pings WATCHDOG=1 while each worker's event loop runs its
tick (journal HEARTBEAT, gauges), and stops when one worker is stuck although
the supervisor itself and the other worker run on: systemd then restarts the
sidecar instead of leaving a stream that answers nobody. Method: a real sidecar
with two workers and NOTIFY_SOCKET on a datagram socket the test owns,
WATCHDOG_USEC=1 s; one worker (a child, not the supervisor systemd watches) is
stalled with SIGSTOP; no ping arrives for three watchdog periods; SIGCONT, and
the pings resume. A second test stalls the worker on a blocked dependency
instead (its JWKS file turned into a FIFO nobody writes, as a hung file system
would block a read).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.notify_sink import WINDOW_SECONDS, NotifySink
from tests.sidecar.conftest import Keys, Sidecar, Upstream


async def test_sidecar_pings_only_while_every_worker_ticks(
        notify_sink: NotifySink, sidecar_factory: Callable[..., Sidecar], module_database_url: str,
        upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pings while both workers tick; none while one is stopped; pings after it continues."""
    for key, value in notify_sink.env().items():
        monkeypatch.setenv(key, value)
    sidecar = sidecar_factory(module_database_url, upstream.url, workers=2,
                              extra={"heartbeat_interval_seconds": 0.1})
    await notify_sink.wait_pings(3, sidecar.process, "sidecar pings while its workers tick")
    assert any(message.startswith("READY=1") for message in notify_sink.messages)
    workers = sidecar.worker_pids()
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGSTOP)
    try:
        await notify_sink.assert_silent("the sidecar pinged while a worker was stuck", lead_seconds=WINDOW_SECONDS / 2)
        assert sidecar.process.poll() is None
    finally:
        os.kill(workers[1], signal.SIGCONT)
    await notify_sink.wait_pings(2, sidecar.process, "sidecar pings again once the worker runs")
    assert sidecar.stop() == 0


async def test_sidecar_stops_pinging_while_a_worker_is_blocked_on_a_file(
        notify_sink: NotifySink, sidecar_factory: Callable[..., Sidecar], module_database_url: str,
        upstream: Upstream, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A blocked dependency, not a signal: the worker's JWKS file becomes a FIFO with no
    writer (as a hung file system would), its next reload blocks the worker's event loop;
    no ping for three watchdog periods; once the FIFO is fed, pings resume."""
    jwks = tmp_path / "jwks.json"
    content = keys.jwks.read_bytes()
    jwks.write_bytes(content)
    for key, value in notify_sink.env().items():
        monkeypatch.setenv(key, value)
    sidecar = sidecar_factory(module_database_url, upstream.url, workers=1,
                              extra={"heartbeat_interval_seconds": 0.1, "jwks_file": str(jwks),
                                     "jwks_reload_seconds": 0.2})
    await notify_sink.wait_pings(3, sidecar.process, "sidecar pings while its worker ticks")
    fifo = tmp_path / "jwks.fifo"
    os.mkfifo(fifo)
    held = tmp_path / "jwks.fifo.held"
    os.link(fifo, held)  # a second name, to feed the FIFO after the path is restored
    os.replace(fifo, jwks)  # the next reload opens it and blocks: no writer
    await notify_sink.assert_silent("the sidecar pinged while its worker was blocked", lead_seconds=WINDOW_SECONDS / 2)
    assert sidecar.process.poll() is None
    regular = tmp_path / "jwks.regular"
    regular.write_bytes(content)
    os.replace(regular, jwks)  # later reloads read a regular file again
    writer = os.open(held, os.O_WRONLY | os.O_NONBLOCK)  # the blocked reader is there: this succeeds
    try:
        os.write(writer, content)
    finally:
        os.close(writer)
    await notify_sink.wait_pings(2, sidecar.process, "sidecar pings again once the file answers")
    assert sidecar.stop() == 0
