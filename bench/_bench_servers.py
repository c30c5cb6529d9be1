"""Servers the sidecar benchmark runs beside the sidecar (bench only, never deployed).

    python bench/_bench_servers.py upstream PORT
    python bench/_bench_servers.py proxy PORT UPSTREAM_URL
    python bench/_bench_servers.py insert-proxy PORT UPSTREAM_URL DSN
    python bench/_bench_servers.py unattested CONFIG WORKERS      (SYMPHONY_DATABASE_URL in the environment)

`upstream`: the trivial service every configuration forwards to.

`proxy`: a plain reverse proxy, no attestation: aiohttp's low-level server
(the sidecar's) in front of the sidecar's own keep-alive upstream client,
`ingress_sidecar.upstream.UpstreamPool` (the client that replaced
aiohttp.ClientSession, which was the sidecar's largest single cost; a
ClientSession baseline would partly measure an HTTP client). It forwards the
end-to-end headers and passes the answer's headers back, as the sidecar does.

`insert-proxy`: the naive design Symphony replaces: the same proxy, but each
request first runs INSERT … COMMIT into PostgreSQL (synchronous commit, fsync
on) and only then forwards.

`unattested`: the sidecar with attestation off, for measurement only. It
runs the sidecar's own worker (`ingress_sidecar.server.Worker`) and request
handler unchanged: the connection guard, identity (JWT), policy cache, HLC
id, INGRESS body built, Ed25519-signed upstream headers, the same upstream
pool and answer path. Only the journal is replaced by `UnjournaledAttestor`,
which encodes and appends nothing and whose durability wait returns at once.
Like the sidecar's supervisor, the parent binds the port once (no
SO_REUSEPORT) and its workers inherit that socket. There is no sidecar
setting that turns attestation off: this exists only in this file.

`proxy` and `insert-proxy` run as one process per worker, binding with
SO_REUSEPORT (the kernel spreads connections evenly, the strongest set-up
for a plain proxy).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ingress_sidecar.upstream import UpstreamPool  # noqa: E402

HOP = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding", "authorization",
                 "proxy-authenticate", "proxy-authorization", "te", "trailer", "upgrade", "expect"})


def _socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def _serve(handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], port: int) -> None:
    server = web.Server(handler, access_log=None, auto_decompress=False)
    await asyncio.get_running_loop().create_server(server, sock=_socket(port), backlog=4096)
    await asyncio.Event().wait()


async def upstream(port: int) -> None:
    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    await _serve(handle, port)


async def proxy(port: int, upstream_url: str, dsn: str | None = None) -> None:
    # The sidecar's pool with the sidecar's defaults (ingress_sidecar/config.py).
    pool = UpstreamPool(upstream_url, connections_max=256, queue_max=1024, connect_timeout_seconds=5.0,
                        timeout_seconds=30.0, body_bytes_max=64 * 1024 * 1024)
    database = None
    if dsn:
        import asyncpg

        database = await asyncpg.create_pool(dsn, min_size=4, max_size=16)
        async with database.acquire() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS bench_ingress (id bigserial PRIMARY KEY, "
                               "received_at timestamptz NOT NULL, route text NOT NULL, body_sha256 bytea NOT NULL)")

    async def handle(request: web.BaseRequest) -> web.Response:
        body = await request.read()
        if database is not None:
            async with database.acquire() as conn:  # autocommit: one INSERT = one COMMIT
                await conn.execute("INSERT INTO bench_ingress (received_at, route, body_sha256) VALUES (now(), $1, $2)",
                                   request.path, hashlib.sha256(body).digest())
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
        answer = await pool.request(request.method, request.rel_url.raw_path_qs, headers, body)
        return web.Response(status=answer.status, body=answer.body,
                            headers=[(k, v) for k, v in answer.headers if k.lower() not in HOP])

    await _serve(handle, port)


# ----------------------------------------------------------- the sidecar, unattested

def unattested(config: str, workers: int) -> int:
    """Parent: bind once like the sidecar's supervisor, start the workers, forward SIGTERM."""
    from ingress_sidecar.config import load
    from ingress_sidecar.server import listen_socket

    settings = load(config)
    sock = listen_socket(settings.listen_host, settings.listen_port)
    sock.set_inheritable(True)
    # The supervisor gives its workers a metrics directory; so does this (the
    # workers then publish their snapshots as the sidecar's do).
    import shutil
    import tempfile

    from ingress_sidecar.server import METRICS_DIR_ENV

    metrics_dir = tempfile.mkdtemp(prefix="symphony-bench-metrics-")
    env = {**os.environ, METRICS_DIR_ENV: metrics_dir}
    children = [subprocess.Popen([sys.executable, __file__, "unattested-worker", config, str(stream_id),
                                  str(sock.fileno())], pass_fds=(sock.fileno(),), env=env)
                for stream_id in range(workers)]

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return max(child.wait() for child in children)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def unattested_worker(config: str, stream_id: int, listen_fd: int) -> int:
    """One sidecar worker whose journal is UnjournaledAttestor (see the module docstring)."""
    from ingress_sidecar.attest import Attestor
    from ingress_sidecar.config import load
    from ingress_sidecar.server import Worker
    from symphony import attestation as att
    from symphony.lifecycle import configure_logging, run

    class UnjournaledAttestor(Attestor):
        """Seq numbers and open-request bookkeeping only: nothing encoded, written or synced."""

        def __init__(self, node_id: str, stream_id: int) -> None:
            super().__init__(None, node_id=node_id, stream_id=stream_id)  # type: ignore[arg-type]
            self.seq = 0

        def _next(self) -> int:
            self.seq += 1
            return self.seq

        def append(self, record_type: att.RecordType, body: att.Body, attestation_id: int) -> int:
            return self._next()

        def append_ingress(self, body: att.IngressBody, attestation_id: int) -> int:
            self.open_requests += 1
            return self._next()

        def append_outcome(self, body: att.OutcomeBody, attestation_id: int) -> int:
            self.open_requests -= 1
            return self._next()

        async def wait_durable(self, seq: int) -> None:
            return None

        def close(self) -> None:
            return None

    class UnattestedWorker(Worker):
        def _open_journal(self) -> Attestor:
            return UnjournaledAttestor(self.settings.node_id, self.stream_id)

    settings = load(config)
    assert not settings.mirror_enabled, "the mirror reads the journal's files: not with the unjournaled attestor"
    configure_logging("sidecar", settings.log_level)

    async def start() -> int:
        worker = UnattestedWorker(settings, stream_id=stream_id, port=settings.listen_port,
                                  database_url=os.environ.get("SYMPHONY_DATABASE_URL", ""), listen_fd=listen_fd)
        return await worker.run(lambda: None)

    return run(start)


def main() -> int:
    kind = sys.argv[1]
    if kind == "upstream":
        uvloop.run(upstream(int(sys.argv[2])))
    elif kind == "proxy":
        uvloop.run(proxy(int(sys.argv[2]), sys.argv[3]))
    elif kind == "insert-proxy":
        uvloop.run(proxy(int(sys.argv[2]), sys.argv[3], sys.argv[4]))
    elif kind == "unattested":
        return unattested(sys.argv[2], int(sys.argv[3]))
    elif kind == "unattested-worker":
        return unattested_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown server {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
