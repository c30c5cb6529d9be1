"""The simulator's HTTP server: one operator profile plus the /_sim control API.

    GET  /_sim/stats    executions per key and per reference, requests, replays
    GET  /_sim/statement  the end-of-day statement of a real-rail profile (CSV or camt.053)
    GET  /_sim/faults   the current fault settings
    POST /_sim/faults   change some of them at runtime (JSON object, merged)
    GET  /healthz, GET /metrics
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from pathlib import Path

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from rail_sim import profiles
from rail_sim.faults import Faults, merge
from rail_sim.store import ExecutionStore
from symphony import lifecycle

log = logging.getLogger("rail-sim")


class Simulator:
    def __init__(self, profile: str, faults: Faults, store: ExecutionStore, *, settle_ms: float = 50.0,
                 seed: int | None = None, credentials: dict[str, str] | None = None) -> None:
        assert profile in profiles.PROFILES, profile
        # What the real-rail profiles check callers against (never logged), and
        # the bearer tokens they issued (token -> expiry, epoch seconds).
        self.credentials: dict[str, str] = dict(credentials or {})
        self.tokens: dict[str, float] = {}
        self.profile = profile
        self.faults = faults
        self.store = store
        self.settle_ms = settle_ms
        self.started = time.monotonic()
        self.rng = random.Random(seed)
        self.registry = CollectorRegistry()
        self.requests = Counter("symphony_railsim_requests_total", "Operator requests by fault outcome",
                                ["profile", "outcome"], registry=self.registry)

    async def before_execute(self, request: web.Request, *, error_body: dict[str, object],
                             error_status: int = 503) -> web.StreamResponse | None:
        """Downtime, latency, injected errors and hangs: a response means 'do not execute'."""
        faults = self.faults
        if faults.is_down(time.monotonic() - self.started):
            self.requests.labels(self.profile, "down").inc()
            return web.Response(status=503, body=msgspec.json.encode(error_body), content_type="application/json")
        delay = faults.latency_seconds(self.rng)
        if delay > 0:
            await asyncio.sleep(delay)
        if faults.error_rate and self.rng.random() < faults.error_rate:
            self.requests.labels(self.profile, "error").inc()
            return web.Response(status=error_status, body=msgspec.json.encode(error_body),
                                content_type="application/json")
        if faults.timeout_rate and self.rng.random() < faults.timeout_rate:
            self.requests.labels(self.profile, "hang").inc()
            await asyncio.sleep(faults.hang_seconds)
            return web.Response(status=504, body=msgspec.json.encode(error_body), content_type="application/json")
        return None

    async def after_execute(self, request: web.Request, *, new_execution: bool) -> web.StreamResponse | None:
        """The kill hook and execute-then-drop: the answer never reaches the client."""
        faults = self.faults
        kill = new_execution and faults.kill_pid_on_execute > 0 and faults.kill_count > 0
        if kill:
            pid = faults.kill_pid_on_execute
            self.faults = msgspec.structs.replace(faults, kill_count=faults.kill_count - 1)
            log.info("kill hook: SIGKILL after execution", extra={"pid": pid})
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                log.warning("kill hook: no such process", extra={"pid": pid})
        if kill or (faults.drop_after_execute_rate and self.rng.random() < faults.drop_after_execute_rate):
            self.requests.labels(self.profile, "dropped_after_execute").inc()
            if request.transport is not None:
                request.transport.abort()
            # A response object is still returned so aiohttp does not log a handler
            # error; the transport is gone, so nothing reaches the client.
            return web.Response(status=599)
        self.requests.labels(self.profile, "answered").inc()
        return None


def build_app(sim: Simulator) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    profiles.add_routes(sim, app)

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"profile": sim.profile, **sim.store.stats()})

    async def statement(_: web.Request) -> web.Response:
        from rail_sim.real_rails import STATEMENTS

        if sim.profile not in STATEMENTS:
            return web.json_response({"error": f"{sim.profile} publishes no statement"}, status=404)
        content_type, render = STATEMENTS[sim.profile]
        return web.Response(body=render(sim.store), content_type=content_type)

    async def get_faults(_: web.Request) -> web.Response:
        return web.Response(body=msgspec.json.encode(sim.faults), content_type="application/json")

    async def set_faults(request: web.Request) -> web.Response:
        try:
            update = msgspec.json.decode(await request.read())
            if not isinstance(update, dict):
                raise msgspec.ValidationError("expected a JSON object")
            sim.faults = merge(sim.faults, update)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        log.info("faults changed", extra={"faults": msgspec.structs.asdict(sim.faults)})
        return web.Response(body=msgspec.json.encode(sim.faults), content_type="application/json")

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "profile": sim.profile})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(sim.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/_sim/stats", stats)
    app.router.add_get("/_sim/statement", statement)
    app.router.add_get("/_sim/faults", get_faults)
    app.router.add_post("/_sim/faults", set_faults)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(profile: str, host: str, port: int, faults: Faults, state_dir: Path | None, *,
                fsync: bool, settle_ms: float, seed: int | None, credentials: dict[str, str] | None = None) -> int:
    store = ExecutionStore(state_dir / f"{profile}.jsonl" if state_dir else None, fsync=fsync)
    sim = Simulator(profile, faults, store, settle_ms=settle_ms, seed=seed, credentials=credentials)
    shutdown = lifecycle.Shutdown()
    shutdown.install()
    runner = web.AppRunner(build_app(sim), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        store.close()
        from symphony.errors import StartupError
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = lifecycle.bound_port(runner)
    log.info("listening", extra={"profile": profile, "host": host, "port": bound,
                                 "state": str(state_dir) if state_dir else "memory"})
    lifecycle.sd_notify("READY=1")
    watchdog = asyncio.create_task(lifecycle.watchdog_loop(lambda: True))
    await shutdown.wait()
    log.info("stopping")
    watchdog.cancel()
    await runner.cleanup()
    store.close()
    return 0
