"""Servers the sidecar benchmark runs beside the sidecar (bench only).

    python bench/_bench_servers.py upstream PORT
    python bench/_bench_servers.py proxy PORT UPSTREAM_URL
    python bench/_bench_servers.py insert-proxy PORT UPSTREAM_URL DSN

`upstream`: the trivial service every configuration forwards to.
`proxy`: a plain aiohttp+uvloop reverse proxy (low-level server, pooled
keep-alive client), no attestation: the baseline the sidecar is held to.
`insert-proxy`: the naive design Symphony replaces: the same proxy, but each
request first runs INSERT … COMMIT into PostgreSQL (synchronous commit).
Proxies bind with SO_REUSEPORT, so several processes share one port.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import sys
import time

import aiohttp
import uvloop
from aiohttp import web

HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "authorization"}


def _socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def _serve(handler, port: int) -> None:  # noqa: ANN001
    server = web.Server(handler, access_log=None)
    await asyncio.get_running_loop().create_server(server, sock=_socket(port), backlog=4096)
    await asyncio.Event().wait()


async def upstream(port: int) -> None:
    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    await _serve(handle, port)


async def proxy(port: int, upstream_url: str, dsn: str | None = None) -> None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), auto_decompress=False,
                                    skip_auto_headers=("User-Agent",))
    pool = None
    if dsn:
        import asyncpg

        pool = await asyncpg.create_pool(dsn, min_size=4, max_size=16)
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS bench_ingress (id bigserial PRIMARY KEY, "
                               "received_at timestamptz NOT NULL, route text NOT NULL, body_sha256 bytea NOT NULL)")

    async def handle(request: web.BaseRequest) -> web.Response:
        body = await request.read()
        if pool is not None:
            async with pool.acquire() as conn:  # autocommit: one INSERT = one COMMIT
                await conn.execute("INSERT INTO bench_ingress (received_at, route, body_sha256) VALUES (now(), $1, $2)",
                                   request.path, hashlib.sha256(body).digest())
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with session.request(request.method, upstream_url + request.rel_url.raw_path_qs, data=body,
                                   headers=headers) as response:
            payload = await response.read()
            return web.Response(status=response.status, body=payload,
                                headers={"Content-Type": response.headers.get("Content-Type", "application/json")})

    await _serve(handle, port)


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "upstream":
        uvloop.run(upstream(port))
    elif kind == "proxy":
        uvloop.run(proxy(port, sys.argv[3]))
    elif kind == "insert-proxy":
        uvloop.run(proxy(port, sys.argv[3], sys.argv[4]))
    else:
        raise SystemExit(f"unknown server {kind}")


if __name__ == "__main__":
    _ = time
    main()
