"""The service daemon's lifecycle: keys, pool, listeners, maintenance, drain."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
from aiohttp import web

from payments_service.app import PaymentsApp, ServiceMetrics
from payments_service.config import ServiceConfig
from payments_service.faults import FaultSwitch
from payments_service.store import UNAVAILABLE_ERRORS, PaymentStore, init_connection, unavailable_reason
from symphony import lifecycle
from symphony.db import create_pool
from symphony.errors import ConfigError, StartupError
from symphony.upstream_headers import HeaderVerifier, SignatureError, load_public_key

log = logging.getLogger("service")
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


def load_verifier(settings: ServiceConfig, data_dir: Path) -> HeaderVerifier:
    paths = [Path(p) for p in settings.upstream_public_keys] or [data_dir / "keys" / "sidecar-upstream.pub.pem"]
    keys = []
    for path in paths:
        try:
            keys.append(load_public_key(path))
        except FileNotFoundError:
            raise ConfigError(f"upstream_public_keys: {path} not found (the sidecar's public key; "
                              "`symphony up` creates keys/sidecar-upstream.pub.pem)") from None
        except (SignatureError, ValueError) as exc:
            raise ConfigError(f"upstream_public_keys: {path}: {exc}") from None
    return HeaderVerifier(keys, max_age_seconds=settings.signature_max_age_seconds)


async def main(settings: ServiceConfig, database_url: str, verifier: HeaderVerifier,
               faults: FaultSwitch | None = None) -> int:
    pool = await create_pool(database_url, min_size=2, max_size=settings.pool_size, init=init_connection)
    store = PaymentStore(pool, lock_ttl_seconds=settings.idempotency_lock_ttl_seconds,
                         retention_seconds=settings.idempotency_retention_seconds, retry_budget=settings.retry_budget)
    metrics = ServiceMetrics()
    runner = web.AppRunner(PaymentsApp(store, verifier, settings.rails, metrics, faults).build(), access_log=None,
                           shutdown_timeout=settings.shutdown_timeout_seconds)
    await runner.setup()
    try:
        if settings.unix_socket:
            site: web.BaseSite = web.UnixSite(runner, settings.unix_socket)
        else:
            site = web.TCPSite(runner, settings.listen_host, settings.listen_port)
        await site.start()
        admin = await lifecycle.start_admin_server(settings.admin_host, settings.admin_port, metrics.registry,
                                                   readiness={"database": lambda: _ready(store)})
    except OSError as exc:
        await runner.cleanup()
        await pool.close()
        raise StartupError(f"cannot listen: {exc.strerror or exc}") from None
    shutdown = lifecycle.Shutdown()
    shutdown.install()
    log.info("listening", extra={"listen": settings.unix_socket or f"{settings.listen_host}:{settings.listen_port}",
                                 "admin_port": lifecycle.bound_port(admin), "rails": settings.rails})
    lifecycle.sd_notify("READY=1")
    background = [asyncio.create_task(lifecycle.watchdog_loop(lambda: True)),
                  asyncio.create_task(_maintenance(store, settings))]
    await shutdown.wait()
    log.info("stopping; draining requests", extra={"timeout_seconds": settings.shutdown_timeout_seconds})
    for task in background:
        task.cancel()
    await runner.cleanup()  # stops accepting, waits for handlers up to shutdown_timeout
    await admin.cleanup()
    await pool.close()
    log.info("stopped")
    return 0


async def _ready(store: PaymentStore) -> tuple[bool, str]:
    try:
        answered = await store.ping()
    except UNAVAILABLE_ERRORS as exc:  # down or restarting: not ready, and /readyz says why
        return False, f"database unavailable ({unavailable_reason(exc)}): {type(exc).__name__}"
    return (True, "ok") if answered else (False, "database did not answer")


async def _maintenance(store: PaymentStore, settings: ServiceConfig) -> None:
    """Purge idempotency keys past their retention, a bounded batch per tick."""
    while True:
        await asyncio.sleep(settings.maintenance_interval_seconds)
        try:
            purged = await store.purge_expired_keys(settings.purge_batch_max)
        except DB_ERRORS as exc:
            log.error("idempotency key purge failed; retrying next tick", extra={"error": str(exc)})
            continue
        if purged:
            log.info("purged expired idempotency keys", extra={"keys": purged})
