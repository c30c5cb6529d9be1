"""Hostile upstream answers: malformed framing closes the connection and is a 502.

Method: a raw-socket server on 127.0.0.1 answers the first request with
crafted bytes and every later request (on any connection) with a known
marker answer. The sidecar's upstream client (llhttp via httptools) must
refuse the malformed ones with UpstreamProtocolError and close the
connection; whatever the first answer was, the next request must get exactly
the marker, which proves no byte of a hostile answer stayed in a reused
connection. A hypothesis fuzz test composes hostile answers from framing
pieces attackers use; a process test checks the sidecar's 502 and its OUTCOME.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingress_sidecar.upstream import UpstreamError, UpstreamPool, UpstreamProtocolError
from symphony import upstream_headers as uh
from symphony.attestation import RecordType
from tests.sidecar.conftest import Keys, Sidecar, read_stream, wait_until

MARKER = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Marker: 1\r\n\r\nmarker"
SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsmugl!"

MALFORMED = {
    "chunk size -2": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nab\r\n0\r\n\r\n",
    "chunk size 0x5": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "chunk size 0_5": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0_5\r\nhello\r\n0\r\n\r\n",
    "chunk size overflow": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n",
    "Content-Length: superscript two": "HTTP/1.1 200 OK\r\nContent-Length: ²\r\n\r\nok".encode(),
    "Content-Length: -1": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok",
    "Content-Length: +2": b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
    "two Content-Lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    "Transfer-Encoding: notchunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: notchunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "Transfer-Encoding: chunked, gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "Content-Length with chunked": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"2\r\nok\r\n0\r\n\r\n"),
    "space before colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    "obsolete line folding": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\nContent-Length: 2\r\n\r\nok",
    "bare LF": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "101 upgrade": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
    "two-digit status": b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok",
}


class HostileServer:
    """The first request of a scenario gets `hostile` (then the connection closes
    if `close_after`); every later request gets MARKER."""

    def __init__(self) -> None:
        self.hostile = b""
        self.close_after = False
        self.pending_hostile = 0
        self.connections = 0
        self.closed_connections = 0
        self.port = 0

    def arm(self, hostile: bytes, close_after: bool = False) -> None:
        self.hostile, self.close_after, self.pending_hostile = hostile, close_after, 1

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:  # ends when the client closes or a hostile answer closes
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                if length:
                    await reader.readexactly(length)
                if self.pending_hostile:
                    self.pending_hostile = 0
                    writer.write(self.hostile)
                    await writer.drain()
                    if self.close_after:
                        break
                else:
                    writer.write(MARKER)
                    await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self.closed_connections += 1
            writer.close()


async def _start(server: HostileServer) -> asyncio.Server:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    return listener


def _pool(port: int) -> UpstreamPool:
    return UpstreamPool(f"http://127.0.0.1:{port}", connections_max=2, connect_timeout_seconds=2.0,
                        timeout_seconds=0.3, body_bytes_max=4096)


async def _marker_follows(pool: UpstreamPool) -> None:
    answer = await pool.request("GET", "/next", [], b"")
    assert (answer.status, answer.body) == (200, b"marker"), answer
    assert ("X-Marker", "1") in answer.headers


@pytest.fixture
async def hostile() -> AsyncIterator[HostileServer]:
    server = HostileServer()
    listener = await _start(server)
    yield server
    listener.close()
    await listener.wait_closed()


@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_malformed_framing_is_refused_and_its_connection_closed(hostile: HostileServer, name: str) -> None:
    """Goal: each framing attack of the issue (and its relatives) is refused.
    Method: the first answer is the malformed one: UpstreamProtocolError, no
    connection left open or pooled, the server sees its connection closed;
    the next request gets the marker on a new connection."""
    pool = _pool(hostile.port)
    hostile.arm(MALFORMED[name])
    with pytest.raises(UpstreamProtocolError):
        await pool.request("POST", "/v1/payments", [], b"{}")
    assert pool._open == 0 and not pool._idle  # noqa: SLF001
    await wait_until(lambda: hostile.closed_connections == 1, timeout=10)
    await _marker_follows(pool)
    assert hostile.connections == 2, "the refused connection was not reused"
    pool.close()


async def test_bytes_after_a_complete_answer_never_reach_the_next_request(hostile: HostileServer) -> None:
    """Goal: a smuggled second answer behind a valid one is never read as the
    next request's answer. Method: 'ok' followed by a whole extra answer in the
    same write: the caller gets 'ok', the connection is closed, and the next
    request gets the marker, not 'smugl!'."""
    pool = _pool(hostile.port)
    hostile.arm(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + SMUGGLED)
    answer = await pool.request("GET", "/", [], b"")
    assert answer.body == b"ok"
    assert pool._open == 0 and not pool._idle  # noqa: SLF001
    await _marker_follows(pool)
    pool.close()


# -- fuzz ------------------------------------------------------------------------------

_STATUS = st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 204 No Content",
                           b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 100 Continue", b"HTTP/1.1 101 Switching",
                           b"HTTP/1.1 999 X", b"HTTP/2 200", b"HTTP/1.1 20 OK", b"ICY 200 OK", b""])
_LENGTHS = [b"0", b"2", b"5", b"6", b"-2", b"+5", b"0x5", "²".encode(), b"5 5", b" 5", b"99999999999999999999",
            b"1e3", b""]
_CODINGS = [b"chunked", b"notchunked", b"chunked, gzip", b"gzip, chunked", b"Chunked", b"identity", b"chunked\x00"]
_HEADER = st.one_of(
    st.sampled_from(_LENGTHS).map(lambda v: b"Content-Length: " + v),
    st.sampled_from(_CODINGS).map(lambda v: b"Transfer-Encoding: " + v),
    st.sampled_from([b"Connection: close", b"Connection: keep-alive", b"Content-Length : 5", b" X-Fold: 1",
                     b"X-A: a\x00b", b"X-Symphony-Disposition: executed"]),
    st.binary(max_size=12).map(lambda v: b"X-Junk: " + v),
)
_CHUNK = st.tuples(st.sampled_from([b"5", b"-2", b"0x5", b"0_5", b"5;ext=1", b"5 ", b"fffffffffffffffffffff", b"2",
                                    b"0"]),
                   st.binary(max_size=8))
_BODY = st.one_of(
    st.binary(max_size=16),
    st.lists(_CHUNK, max_size=3).map(lambda chunks: b"".join(size + b"\r\n" + data + b"\r\n" for size, data in chunks)
                                     + b"0\r\n\r\n"),
)
_TAIL = st.sampled_from([b"", b"", SMUGGLED, b"\r\n", b"0\r\n\r\n", b"HTTP/1.1 200 OK\r\n"])


@st.composite
def hostile_answers(draw: st.DrawFn) -> bytes:
    newline = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
    lines = [draw(_STATUS), *draw(st.lists(_HEADER, max_size=4))]
    return newline.join(lines) + newline + newline + draw(_BODY) + draw(_TAIL)


async def _fuzz_once(hostile_bytes: bytes, close_after: bool) -> None:
    server = HostileServer()
    listener = await _start(server)
    pool = _pool(server.port)
    try:
        server.arm(hostile_bytes, close_after)
        try:
            await pool.request("POST", "/v1/payments", [], b"{}")
        except UpstreamError:  # UpstreamProtocolError included
            assert pool._open == 0 and not pool._idle  # noqa: SLF001
        except TimeoutError:  # an answer that never completes: its connection is closed too
            assert pool._open == 0 and not pool._idle  # noqa: SLF001
        if close_after:
            # A complete answer leaves its connection pooled; the server's close may
            # reach the client only after the next request took it (the keep-alive
            # race every HTTP client has): wait for the close to arrive first.
            await wait_until(lambda: server.closed_connections >= 1, timeout=10)
            await wait_until(lambda: all(c.closed for c in pool._idle), timeout=10)  # noqa: SLF001
        await _marker_follows(pool)
    finally:
        pool.close()
        listener.close()
        await listener.wait_closed()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_answers(), st.booleans())
def test_fuzzed_hostile_answers_never_leak_into_the_next_request(hostile_bytes: bytes, close_after: bool) -> None:
    """Property: whatever the first answer, the client raises only UpstreamError
    or TimeoutError (never ValueError & co.), closes the connection when it
    raises, and the next request gets exactly the marker answer."""
    asyncio.run(_fuzz_once(hostile_bytes, close_after))


# -- through a real sidecar -----------------------------------------------------------------


async def test_sidecar_answers_502_for_malformed_framing_and_attests_it(
        sidecar_factory: Any, module_database_url: str, keys: Keys, hostile: HostileServer) -> None:
    """Goal: through the sidecar, a malformed upstream answer is a 502 attested
    as upstream_error, and the next request is answered correctly.
    Method: a sidecar in front of the hostile server; chunk size -2 first."""
    sidecar: Sidecar = sidecar_factory(module_database_url, f"http://127.0.0.1:{hostile.port}")
    hostile.arm(MALFORMED["chunk size -2"])
    token = {"Authorization": f"Bearer {keys.token()}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sidecar.url}/v1/payments", data=b"{}", headers=token) as response:
            payload = await response.json()
            assert (response.status, payload["error"]) == (502, "upstream_bad_response")
            attestation_id = int(response.headers[uh.ATTESTATION_ID])
        async with http.post(f"{sidecar.url}/v1/payments", data=b"{}", headers=token) as response:
            assert (response.status, await response.read()) == (200, b"marker")

    def outcome() -> Any:
        return next((body for record, body in read_stream(sidecar.stream_dir(0))
                     if record.type == RecordType.OUTCOME and record.attestation_id == attestation_id), None)

    found = await wait_until(outcome)
    assert (found.status, found.disposition, found.reason) == (502, "upstream_error", "upstream_bad_response")
