"""symphony.lifecycle.Watchdog: pings only while every work loop beats.

Goal: the rules the daemons' watchdog tests rely on, with a fake clock: a ping
per beat interval while every loop is fresh; none once one loop is late by more
than stall_seconds, although another keeps beating; none when not healthy;
pings again once the late loop beats or is forgotten; nothing sent without
WATCHDOG_USEC or when WATCHDOG_PID names another process. Method: a real
AF_UNIX datagram socket as NOTIFY_SOCKET (monkeypatched environment).
"""

from __future__ import annotations

import os
import pytest

from symphony.lifecycle import Watchdog
from tests.notify_sink import NotifySink


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pings_follow_the_beats_of_every_loop(notify_sink: NotifySink, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh loops ping; a stalled loop silences the others; forgetting it restores pings."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_sink.path))
    clock = Clock()
    healthy = [True]
    watchdog = Watchdog(lambda: healthy[0], environ={"WATCHDOG_USEC": "4000000"}, clock=clock)
    assert watchdog.enabled and watchdog.stall_seconds == 2.0 and watchdog.beat_interval_seconds == 1.0
    watchdog.beat("a")
    watchdog.beat("b")
    assert notify_sink.pings() == 1  # the second beat came too soon after the first ping
    clock.now += 1.0
    watchdog.beat("a")
    assert notify_sink.pings() == 1
    for _ in range(3):  # "b" stops beating; "a" goes on
        clock.now += 1.0
        watchdog.beat("a")
    assert watchdog.stalled() == ["b"]
    assert notify_sink.pings() == 1  # only the first of the three, while "b" was 1 s late
    watchdog.forget("b")
    clock.now += 1.0
    watchdog.beat("a")
    assert notify_sink.pings() == 1
    healthy[0] = False
    clock.now += 1.0
    watchdog.beat("a")
    assert notify_sink.pings() == 0
    assert watchdog.pings == 4


def test_silent_without_systemd_asking(notify_sink: NotifySink, monkeypatch: pytest.MonkeyPatch) -> None:
    """No WATCHDOG_USEC, or WATCHDOG_PID of another process: beats send nothing."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_sink.path))
    for environ in ({}, {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid() + 1)}):
        watchdog = Watchdog(environ=environ)
        assert not watchdog.enabled
        watchdog.beat("a")
    assert notify_sink.pings() == 0
