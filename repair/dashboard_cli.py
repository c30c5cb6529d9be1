"""`symphony dashboard`: serve the read-only regulator dashboard until stopped."""

from __future__ import annotations

import argparse
import asyncio
import socket

from aiohttp import web

from repair import common, dashboard
from symphony import lifecycle
from symphony.errors import StartupError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_common(parser)
    parser.add_argument("--host", help="address to listen on (default: dashboard_host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: dashboard_port)")
    parser.add_argument("--token-file", help="file with the supervisor bearer token (default: dashboard_token_file)")


def run(args: argparse.Namespace) -> int:
    settings, url = common.settings_and_dsn(args)
    host = args.host or settings.dashboard_host
    port = settings.dashboard_port if args.port is None else args.port
    token_file = args.token_file or settings.dashboard_token_file
    token = dashboard.read_token(token_file) if token_file else ""
    tls = dashboard.ssl_context(settings)
    log = lifecycle.configure_logging("dashboard", settings.log_level)

    async def main() -> int:
        shutdown = lifecycle.Shutdown()
        shutdown.install()
        pool = await dashboard.create_read_only_pool(url)
        runner = web.AppRunner(dashboard.make_app(settings, pool, token), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, ssl_context=tls, shutdown_timeout=settings.shutdown_timeout_seconds)
            try:
                await site.start()
            except OSError as exc:
                raise StartupError(f"dashboard cannot listen on {host}:{port}: {exc.strerror or exc}") from None
            log.info("dashboard listening", extra={"host": host, "port": lifecycle.bound_port(runner),
                                                   "tls": tls is not None})
            lifecycle.sd_notify("READY=1")
            await shutdown.wait()
        finally:
            await runner.cleanup()
            await asyncio.wait_for(pool.close(), timeout=settings.shutdown_timeout_seconds)
        return 0

    socket.setdefaulttimeout(None)
    return lifecycle.run(main)
