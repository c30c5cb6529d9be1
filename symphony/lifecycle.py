"""What every long-running daemon shares: logs, signals, systemd, admin endpoints.

A daemon's `server.py` follows one lifecycle (after uvicorn's server.py):
start-up (exit code 3 on failure), main loop until `Shutdown.requested`, then a
drain bounded by its graceful-shutdown timeout, then cancellation. The first
SIGTERM/SIGINT asks for a graceful stop; a second one forces it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from symphony import __version__

from symphony.errors import StartupError

# -- logging -------------------------------------------------------------------

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log shippers (Vector) parse without rules."""

    def __init__(self, daemon: str) -> None:
        super().__init__()
        self.daemon = daemon

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "daemon": self.daemon,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_daemon_name = "symphony"


def configure_logging(daemon: str, level: str = "info") -> logging.Logger:
    """JSON logs on stderr for `daemon`; returns its logger."""
    global _daemon_name
    _daemon_name = daemon
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(daemon))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return logging.getLogger(daemon)


# -- systemd -------------------------------------------------------------------


def sd_notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1") to systemd when NOTIFY_SOCKET is set."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval_seconds() -> float | None:
    """Half of WATCHDOG_USEC, the interval at which to send WATCHDOG=1, if asked."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return None
    return int(usec) / 2_000_000


class Watchdog:
    """systemd's watchdog, fed by the loops that do the work.

    Each work loop calls `beat(name)` once per iteration, and waits between
    iterations with `wait(name, event, seconds)`, which beats at least every
    `beat_interval_seconds`. WATCHDOG=1 is sent from `beat` itself, and only
    while every loop that has beaten has done so within `stall_seconds` and
    `healthy()` holds. A loop stuck on a dependency (a lock, a hung
    connection, a blocked disk) stops beating, the pings stop, and systemd
    restarts the daemon after WatchdogSec. A separate timer task would keep
    pinging while the work is stuck: that is exactly what this avoids.

    Without WATCHDOG_USEC (not under systemd, or no WatchdogSec=) nothing is
    sent; beats still record progress and `stalled()` still reports.
    """

    def __init__(self, healthy: Callable[[], bool] | None = None,
                 *, environ: dict[str, str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        env = os.environ if environ is None else environ
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        asked = usec.isdigit() and int(usec) > 0 and (not pid.isdigit() or int(pid) == os.getpid())
        # WatchdogSec as seconds; 30 s (the units' value) only shapes the pacing when not asked.
        self.timeout_seconds: float | None = int(usec) / 1_000_000 if asked else None
        pacing = self.timeout_seconds if self.timeout_seconds is not None else 30.0
        self.stall_seconds = pacing / 2
        self.beat_interval_seconds = pacing / 4
        self.healthy = healthy or (lambda: True)
        self.clock = clock
        self.pings = 0
        self._beats: dict[str, float] = {}
        self._last_ping = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.timeout_seconds is not None

    def beat(self, loop: str) -> None:
        """`loop` made progress now; ping systemd if every loop is fresh."""
        now = self.clock()
        self._beats[loop] = now
        if self.timeout_seconds is None or now - self._last_ping < self.beat_interval_seconds / 2:
            return
        if self.stalled(now) or not self.healthy():
            return
        if sd_notify("WATCHDOG=1"):
            self._last_ping = now
            self.pings += 1

    def forget(self, loop: str) -> None:
        """`loop` ended on purpose (a halted stream, a stopped worker): stop waiting for it."""
        self._beats.pop(loop, None)

    def stalled(self, now: float | None = None) -> list[str]:
        """The loops that have not beaten within stall_seconds."""
        now = self.clock() if now is None else now
        return sorted(name for name, at in self._beats.items() if now - at > self.stall_seconds)

    async def wait(self, loop: str, event: asyncio.Event, seconds: float) -> bool:
        """Wait up to `seconds` for `event`, beating for `loop` meanwhile; True if it was set.
        Real time bounds the wait (`clock` may be a test's fake clock)."""
        deadline = time.monotonic() + seconds
        while True:
            self.beat(loop)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return event.is_set()
            try:
                await asyncio.wait_for(event.wait(), timeout=min(remaining, self.beat_interval_seconds))
            except asyncio.TimeoutError:
                continue
            return True


async def watchdog_loop(healthy: Callable[[], bool]) -> None:
    """Ping systemd's watchdog while `healthy()`. Prefer `Watchdog`, fed by the
    work loop: this timer keeps pinging while the work itself is stuck."""
    interval = watchdog_interval_seconds()
    if interval is None:
        return
    while True:
        if healthy():
            sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval)


# -- signals ---------------------------------------------------------------------


class Shutdown:
    """Set by SIGTERM/SIGINT; the second signal sets `forced` too."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.forced = asyncio.Event()

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        loop = loop or asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal)

    def _on_signal(self) -> None:
        if self.requested.is_set():
            self.forced.set()
        self.requested.set()
        sd_notify("STOPPING=1")

    async def wait(self) -> None:
        await self.requested.wait()


# -- admin endpoints ---------------------------------------------------------------


def add_standard_metrics(registry: CollectorRegistry, daemon: str | None = None) -> None:
    """What every daemon's /metrics carries besides its own: `symphony_build_info`
    (value 1, labels version, daemon, python), `process_*` (CPU seconds, resident
    memory, open and maximum file descriptors, start time) and `python_info`.
    Idempotent per registry."""
    if getattr(registry, "_symphony_standard_metrics", False):
        return
    build = Gauge("symphony_build_info", "Symphony build running this process (value 1)",
                  ["version", "daemon", "python"], registry=registry)
    build.labels(__version__, daemon or _daemon_name, ".".join(map(str, sys.version_info[:3]))).set(1)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry._symphony_standard_metrics = True  # type: ignore[attr-defined]


HealthCheck = Callable[[], Awaitable[tuple[bool, str]]]


async def start_admin_server(
    host: str,
    port: int,
    registry: CollectorRegistry,
    *,
    readiness: dict[str, HealthCheck] | None = None,
) -> web.AppRunner:
    """Serve /healthz (alive), /readyz (every readiness check passes) and /metrics.

    The port is owned exclusively (invariant 13): the socket never sets
    SO_REUSEPORT, so while this daemon listens no other process can bind the
    port, and if anything already holds it this raises StartupError (exit 3)
    with one line instead of sharing it.
    """
    checks = readiness or {}
    add_standard_metrics(registry)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        results = {}
        ready = True
        for name, check in checks.items():
            try:
                ok, detail = await asyncio.wait_for(check(), timeout=2.0)
            except (asyncio.TimeoutError, OSError) as exc:
                ok, detail = False, f"check failed: {exc or type(exc).__name__}"
            results[name] = {"ok": ok, "detail": detail}
            ready = ready and ok
        return web.json_response({"ready": ready, "checks": results}, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=False)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"cannot listen on admin port {host}:{port}: {exc.strerror or exc} "
                           "(another process holds the port)") from None
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port a runner's first site listens on (useful when asked for port 0)."""
    for site in runner.sites:
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
    raise RuntimeError("runner has no listening site")


def run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a daemon's async main on uvloop; returns its exit code."""
    import uvloop

    result: int = uvloop.run(main())
    return result
