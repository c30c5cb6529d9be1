"""The witness's HTTP server: `POST /add-checkpoint` and `GET /<origin hash>/checkpoint`."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from symphony import lifecycle
from symphony.errors import StartupError
from symphony.tlog import checkpoint, note
from witness import protocol
from witness.store import Store

log = logging.getLogger("witness")
TEXT = "text/plain; charset=utf-8"


class Witness:
    def __init__(self, cosigner: checkpoint.Cosigner, logs: list[protocol.TrustedLog], store: Store,
                 registry: CollectorRegistry) -> None:
        self.cosigner = cosigner
        self.logs = logs
        self.store = store
        self.answers = Counter("symphony_witness_add_checkpoint_total", "add-checkpoint answers by HTTP status",
                               ["status"], registry=registry)
        self.origins = Gauge("symphony_witness_origins", "origins with a cosigned checkpoint", registry=registry)

    async def add_checkpoint(self, body: bytes) -> tuple[int, bytes, str]:
        """(status, body, content type) for one add-checkpoint request."""
        origin = ""
        try:
            request = protocol.parse_request(body)
            new = protocol.verify_checkpoint(request.note, self.logs)
            origin = new.origin
            async with self.store.lock(origin):
                stored = self.store.latest(origin)
                protocol.check_consistency(request, new, stored[0] if stored else None)
                line = self.cosigner.cosign(new.text(), int(time.time()))
                await self.store.save(new, _cosigned_note(request.note, new, self.logs, line))
        except protocol.Refusal as refusal:
            self.answers.labels(str(refusal.status)).inc()
            if refusal.status in (409, 422) and origin:
                log.warning("refused a checkpoint", extra={"origin": origin, "status": refusal.status,
                                                           "reason": refusal.reason})
                await self.store.keep_refused(origin, refusal.status, refusal.reason, body)
            if refusal.current_size is not None:
                return refusal.status, f"{refusal.current_size}\n".encode(), "text/x.tlog.size"
            return refusal.status, f"{refusal.reason}\n".encode(), TEXT
        self.answers.labels("200").inc()
        self.origins.set(self.store.origins)
        return 200, line.encode(), TEXT


def _cosigned_note(signed: bytes, new: checkpoint.Checkpoint, logs: list[protocol.TrustedLog], line: str) -> bytes:
    """What the monitoring endpoint serves: the text, the trusted log's signature lines, ours."""
    _, signatures = note.split(signed)
    keys = {(log.key.name, log.key.key_id) for log in logs if log.covers(new.origin)}
    kept = "".join(note.signature_line(s.name, s.key_id + s.blob) for s in signatures if (s.name, s.key_id) in keys)
    return (new.text() + "\n" + kept + line).encode()


def build_app(witness: Witness, body_bytes_max: int, timeout_seconds: float) -> web.Application:
    async def add(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > body_bytes_max:
            return web.Response(status=413, text="request body too large\n")
        try:
            body = await asyncio.wait_for(request.read(), timeout_seconds)
        except asyncio.TimeoutError:
            return web.Response(status=408, text="request body not received in time\n")
        status, payload, content_type = await witness.add_checkpoint(body)
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})

    async def monitor(request: web.Request) -> web.Response:
        signed = witness.store.latest_by_hash(request.match_info["origin_hash"])
        if signed is None:
            return web.Response(status=404, text="no checkpoint cosigned for that origin\n")
        return web.Response(body=signed, headers={"Content-Type": TEXT})

    app = web.Application(client_max_size=body_bytes_max)
    app.router.add_post("/add-checkpoint", add)
    app.router.add_get("/{origin_hash}/checkpoint", monitor)
    return app


async def serve(cosigner: checkpoint.Cosigner, logs: list[protocol.TrustedLog], state_dir: Path, *,
                host: str, port: int, admin_host: str, admin_port: int, body_bytes_max: int,
                timeout_seconds: float) -> int:
    shutdown = lifecycle.Shutdown()
    shutdown.install()
    store = Store(state_dir)
    try:
        count = store.load()
    except (OSError, ValueError) as exc:
        raise StartupError(f"witness state in {state_dir} is unreadable: {exc}") from None
    registry = CollectorRegistry()
    witness = Witness(cosigner, logs, store, registry)
    witness.origins.set(count)
    runner = web.AppRunner(build_app(witness, body_bytes_max, timeout_seconds), access_log=None,
                           handler_cancellation=True, keepalive_timeout=timeout_seconds)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=False).start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"witness cannot listen on {host}:{port}: {exc.strerror}") from None
    admin = await lifecycle.start_admin_server(admin_host, admin_port, registry)
    log.info("witness ready", extra={"witness": cosigner.name, "vkey": cosigner.verifier.vkey(), "origins": count,
                                     "listen": f"{host}:{lifecycle.bound_port(runner)}"})
    lifecycle.sd_notify("READY=1")
    watchdog = asyncio.create_task(lifecycle.watchdog_loop(lambda: True))
    try:
        await shutdown.wait()
    finally:
        watchdog.cancel()
        await runner.cleanup()
        await admin.cleanup()
        store.close()
    return 0
