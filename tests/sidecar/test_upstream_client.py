"""The sidecar's own HTTP/1.1 upstream client (ingress_sidecar/upstream.py).

Method: a raw TCP server on 127.0.0.1 answers with crafted bytes, so every
framing the client must understand (Content-Length, chunked with trailers,
1xx interim answers, body until close, HEAD), connection reuse and its limits
(Connection: close, idle connections closed by the server), and each failure
(refused, cut mid-answer, no answer in time, garbage, too large) is exercised
over real sockets. Waits are bounded by the client's own timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from ingress_sidecar.upstream import UpstreamError, UpstreamPool

Answer = Callable[[bytes], bytes | None]  # request bytes -> answer bytes (None: close without answering)


class RawServer:
    """Answers each request on a connection with `answer(request)`; records requests and connections."""

    def __init__(self) -> None:
        self.answer: Answer = lambda request: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0
        self.close_after_answer = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:  # one request per pass; ends when the client closes
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + (await reader.readexactly(length) if length else b"")
                self.requests.append(request)
                answer = self.answer(request)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    raw = RawServer()
    listener = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    raw.port = listener.sockets[0].getsockname()[1]
    yield raw
    listener.close()
    await listener.wait_closed()


def _pool(port: int, **options: float) -> UpstreamPool:
    settings = {"connections_max": 4, "connect_timeout_seconds": 2.0, "timeout_seconds": 2.0,
                "body_bytes_max": 1024, **options}
    return UpstreamPool(f"http://127.0.0.1:{port}", **settings)  # type: ignore[arg-type]


async def test_request_is_one_http11_message_and_connections_are_reused(server: RawServer) -> None:
    pool = _pool(server.port)
    for index in range(3):
        answer = await pool.request("POST", f"/v1/payments?i={index}", [("X-A", "1"), ("X-Symphony-Stream", "n/0/5")],
                                    b'{"a": 1}')
        assert (answer.status, answer.body) == (200, b"ok")
    assert server.connections == 1, "keep-alive: one connection for sequential requests"
    first = server.requests[0].decode()
    assert first.startswith("POST /v1/payments?i=0 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert "X-A: 1\r\n" in first and "X-Symphony-Stream: n/0/5\r\n" in first
    assert first.endswith('Content-Length: 8\r\n\r\n{"a": 1}')
    pool.close()


async def test_chunked_interim_head_and_until_close_answers(server: RawServer) -> None:
    pool = _pool(server.port)
    server.answer = lambda request: (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n"
                                     b"X-Symphony-Disposition: executed\r\n\r\n"
                                     b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n")
    answer = await pool.request("POST", "/", [], b"")
    assert (answer.status, answer.body) == (201, b"abcde")
    assert ("X-Symphony-Disposition", "executed") in answer.headers
    server.answer = lambda request: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"  # HEAD: no body follows
    assert (await pool.request("HEAD", "/", [], b"")).body == b""
    assert server.connections == 1, "chunked, 1xx and HEAD answers leave the connection reusable"
    server.answer = lambda request: b"HTTP/1.1 200 OK\r\n\r\nuntil-close"
    server.close_after_answer = True
    assert (await pool.request("GET", "/", [], b"")).body == b"until-close"
    server.close_after_answer = False
    server.answer = lambda request: b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    assert (await pool.request("GET", "/", [], b"")).status == 204
    assert (await pool.request("GET", "/", [], b"")).status == 204
    assert server.connections == 3, "an answer framed by close, or saying Connection: close, is not reused"
    pool.close()


async def test_a_connection_the_server_closed_while_idle_is_not_reused(server: RawServer) -> None:
    pool = _pool(server.port)
    server.close_after_answer = True
    await pool.request("GET", "/", [], b"")
    assert len(pool._idle) == 1  # noqa: SLF001  (pooled: the answer said nothing of closing)
    for _ in range(1000):  # bounded: until the server's close reached the pooled connection
        if pool._idle[0].closed:  # noqa: SLF001
            break
        await asyncio.sleep(0.01)
    assert pool._idle[0].closed  # noqa: SLF001
    server.close_after_answer = False
    assert (await pool.request("GET", "/", [], b"")).status == 200
    assert server.connections == 2
    pool.close()


async def test_failures_are_upstream_errors_or_timeouts_and_close_the_connection(server: RawServer) -> None:
    pool = _pool(server.port, timeout_seconds=0.5)
    server.answer = lambda request: None  # closes without answering
    with pytest.raises(UpstreamError):
        await pool.request("POST", "/", [], b"x")
    server.answer = lambda request: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"
    server.close_after_answer = True
    with pytest.raises(UpstreamError):
        await pool.request("POST", "/", [], b"x")  # cut mid-body
    server.close_after_answer = False
    server.answer = lambda request: b"SMTP ready\r\n\r\n"
    with pytest.raises(UpstreamError):
        await pool.request("POST", "/", [], b"x")
    server.answer = lambda request: b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n"
    with pytest.raises(UpstreamError, match="body_bytes_max"):
        await pool.request("POST", "/", [], b"x")
    server.answer = lambda request: b""  # never answers
    with pytest.raises(TimeoutError):
        await pool.request("POST", "/", [], b"x")
    assert pool._open == 0 and not pool._idle, "every failed connection was closed, none pooled"  # noqa: SLF001
    server.answer = lambda request: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert (await pool.request("POST", "/", [], b"x")).status == 200, "usable after failures"
    pool.close()


async def test_refused_connection_and_cancellation(server: RawServer) -> None:
    closed = _pool(1)  # nothing listens on port 1
    with pytest.raises(OSError):
        await closed.request("GET", "/", [], b"")
    pool = _pool(server.port)
    server.answer = lambda request: b""  # never answers: the caller goes away
    task = asyncio.create_task(pool.request("POST", "/", [], b"x"))
    for _ in range(200):  # bounded: until the request reached the server
        if server.requests:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool._open == 0 and not pool._idle  # noqa: SLF001
    pool.close()
