"""The relayer daemon's lifecycle: start-up, main loop, drain, exit.

Start-up failures exit 3 (database unreachable, admin port in use); a bad
configuration was already refused with exit 2 by the loader.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from urllib.parse import urlsplit

from relayer import real_adapters
from relayer.config import RelayerConfig
from relayer.metrics import RelayerMetrics
from relayer.store import OutboxStore
from relayer.worker import DB_ERRORS, Relayer
from symphony import lifecycle
from symphony.db import create_pool
from symphony.errors import StartupError

log = logging.getLogger("relayer")


EXAMPLE_DOMAINS = (".example", ".invalid", ".test", "example.com", "example.org", "example.net")


def example_rails(settings: RelayerConfig) -> list[str]:
    """Rails whose URL is a placeholder (a reserved example domain, RFC 2606)."""
    found = []
    for name, rail in sorted(settings.rails.items()):
        host = (urlsplit(rail.url).hostname or "").lower().rstrip(".")
        if any(host == domain.lstrip(".") or host.endswith(domain if domain.startswith(".") else "." + domain)
               for domain in EXAMPLE_DOMAINS):
            found.append(name)
    return found


def default_worker_id() -> str:
    return f"relayer@{socket.gethostname()}:{os.getpid()}"[:64]


async def main(settings: RelayerConfig, database_url: str) -> int:
    worker_id = settings.worker_id or default_worker_id()
    pool = await create_pool(database_url, min_size=2, max_size=settings.pool_size,
                             init=OutboxStore.init_connection)
    metrics = RelayerMetrics()
    store = OutboxStore(pool, worker_id)
    rail_adapters = {name: real_adapters.build_any(name, rail) for name, rail in settings.rails.items()}
    relayer = Relayer(settings, store, rail_adapters, metrics, database_url=database_url)

    async def database_ready() -> tuple[bool, str]:
        try:
            ok = await store.ping()
        except DB_ERRORS as exc:  # down or restarting: not ready, and /readyz says why
            return False, f"database unreachable: {type(exc).__name__}: {exc}"
        return ok and relayer.healthy, "ok" if ok and relayer.healthy else "database round trips failing"

    try:
        admin = await lifecycle.start_admin_server(settings.admin_host, settings.admin_port, metrics.registry,
                                                   readiness={"database": database_ready})
    except OSError as exc:
        await pool.close()
        raise StartupError(f"cannot listen on {settings.admin_host}:{settings.admin_port} for /metrics: "
                           f"{exc.strerror or exc}") from None
    shutdown = lifecycle.Shutdown()
    shutdown.install()
    stop_requested_at: list[float] = []

    def drain_deadline() -> float:
        if shutdown.forced.is_set():
            return 0.0
        start = stop_requested_at[0] if stop_requested_at else time.monotonic()
        return settings.shutdown_timeout_seconds - (time.monotonic() - start)

    async def note_stop() -> None:
        await shutdown.requested.wait()
        stop_requested_at.append(time.monotonic())
        log.info("stop requested; draining")

    for name in example_rails(settings):
        log.warning("rail %s points at an example address (%s): every payment to it will fail; set "
                    "[rails.%s] url in the relayer's configuration to the operator's endpoint",
                    name, settings.rails[name].url, name, extra={"rail": name})
    log.info("started", extra={"worker_id": worker_id, "rails": sorted(settings.rails), "listen": settings.listen,
                               "admin_port": lifecycle.bound_port(admin), "lease_seconds": settings.lease_seconds})
    lifecycle.sd_notify("READY=1")
    # The claim loop feeds systemd's watchdog (relayer.worker): pings stop when the
    # loop is stuck. A database that refuses or is down is not a stuck loop (the
    # loop goes on, retrying): /readyz reports it, and a restart would not help.
    noter = asyncio.create_task(note_stop())
    try:
        await relayer.run(shutdown.requested, drain_deadline=drain_deadline)
    finally:
        noter.cancel()
        await admin.cleanup()
        await pool.close()
    log.info("stopped")
    return 0
