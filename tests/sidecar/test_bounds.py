"""Bounded resources under attack: slowloris, half-sent requests, connection
floods, too many requests in flight, a full upstream queue.

Real sidecar processes on 127.0.0.1, one worker each (so every connection
meets the same caps). Attackers connect from other loopback addresses
(127.0.0.2 and up: all of 127/8 is local on Linux) so a per-source cap tells
them from the legitimate client on 127.0.0.1. Every refusal must be counted
in a DROPPED record under its reason and never attested, and the legitimate
client must still be served.
"""

from __future__ import annotations

import asyncio
import re
import resource
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from symphony import upstream_headers as uh
from symphony.attestation import RecordType
from tests.sidecar.conftest import Keys, Sidecar, Upstream, read_stream, wait_until


SOURCE_MAX = 100
WORKER_MAX = 300
PARTIAL_HEADERS = b"POST /v1/payments HTTP/1.1\r\nHost: x\r\nX-Slow: "


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors() -> None:
    """The attack opens ~2,000 sockets in this process: raise the soft fd limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 8192):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))


@pytest.fixture(scope="module")
def patient(sidecar_factory: Any, module_database_url: str, upstream: Upstream) -> Sidecar:
    """Caps but long read deadlines: what the caps alone achieve."""
    return sidecar_factory(module_database_url, upstream.url, extra={
        "source_connections_max": SOURCE_MAX, "worker_connections_max": WORKER_MAX,
        "header_read_timeout_seconds": 120.0, "body_read_timeout_seconds": 120.0})


@pytest.fixture(scope="module")
def strict(sidecar_factory: Any, module_database_url: str, upstream: Upstream) -> Sidecar:
    """Short read deadlines: slow clients are closed."""
    return sidecar_factory(module_database_url, upstream.url, extra={
        "header_read_timeout_seconds": 1.0, "body_read_timeout_seconds": 1.0})


@pytest.fixture(scope="module")
def narrow(sidecar_factory: Any, module_database_url: str, upstream: Upstream) -> Sidecar:
    """Few requests in flight, one upstream connection, a queue of one."""
    return sidecar_factory(module_database_url, upstream.url, extra={
        "requests_in_flight_max": 3, "upstream_connections_max": 1, "upstream_queue_max": 1,
        "upstream_timeout_seconds": 30.0, "header_read_timeout_seconds": 120.0,
        "body_read_timeout_seconds": 120.0})


class Attack:
    """Raw connections that each send a fixed prefix and then stall."""

    def __init__(self) -> None:
        self.streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.answers: list[asyncio.Task[bytes]] = []

    async def open(self, sidecar: Sidecar, source: str, count: int, prefix: bytes) -> None:
        async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port, local_addr=(source, 0))
            writer.write(prefix)
            return reader, writer

        opened = await asyncio.gather(*(one() for _ in range(count)))
        self.streams.extend(opened)
        self.answers.extend(asyncio.create_task(self._read(reader)) for reader, _ in opened)

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> bytes:
        """What the server sends before it closes (b"" for a bare close or reset: the
        server closes with the attacker's unread bytes pending, which the kernel may
        turn into a reset that overtakes the 503)."""
        try:
            return await reader.read()
        except ConnectionError:
            return b""

    def closed(self) -> list[bytes]:
        return [task.result() for task in self.answers if task.done()]

    def open_count(self) -> int:
        return sum(1 for task in self.answers if not task.done())

    async def close(self) -> None:
        for _, writer in self.streams:
            writer.close()
        await asyncio.gather(*self.answers, return_exceptions=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The legitimate client: one connection per request, so no idle keep-alive
    connection of its own stays counted against the caps between tests."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
async def attack() -> AsyncIterator[Attack]:
    attacker = Attack()
    yield attacker
    await attacker.close()


def _dropped(sidecar: Sidecar, reason: str) -> int:
    return sum(body.counts.get(reason, 0) for record, body in read_stream(sidecar.stream_dir(0))
               if record.type == RecordType.DROPPED)


def _refusals(answers: list[bytes], *, all_503: bool = False) -> bool:
    """Every answer is a refusal: a 503, or (when the client had sent bytes the
    server never read) possibly a reset that overtook it."""
    assert answers
    if all_503:
        return all(answer.startswith(b"HTTP/1.1 503") for answer in answers)
    return all(answer == b"" or answer.startswith(b"HTTP/1.1 503") for answer in answers)


async def _dropped_reaches(sidecar: Sidecar, reason: str, expected: int, already: int = 0) -> int:
    """Wait until DROPPED records count at least `expected` refusals of `reason` beyond `already`; the count."""
    await wait_until(lambda: _dropped(sidecar, reason) - already >= expected)
    return _dropped(sidecar, reason) - already


def _gauge(sidecar: Sidecar, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{sidecar.admin_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf'^symphony_sidecar_{name}{{stream="0"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else -1.0


async def _served(http: aiohttp.ClientSession, sidecar: Sidecar, keys: Keys, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        async with http.post(f"{sidecar.url}/v1/payments", data=b"{}",
                             headers={"Authorization": f"Bearer {keys.token()}"}) as response:
            await response.read()
            statuses.append(response.status)
    return statuses


async def test_slowloris_is_capped_per_source_and_other_clients_are_served(
        patient: Sidecar, keys: Keys, upstream: Upstream, attack: Attack, http: aiohttp.ClientSession) -> None:
    """Goal: thousands of half-open connections from one source cannot starve others.
    Method: 1,500 connections from 127.0.0.2 each send half a header block and
    stall. Exactly source_connections_max (100) are held; the other 1,400 are
    answered 503 and closed at once, each counted as source_connections_max in
    DROPPED. While the 100 are held, 20 payments from 127.0.0.1 are all served."""
    await attack.open(patient, "127.0.0.2", 1500, PARTIAL_HEADERS)
    await wait_until(lambda: len(attack.closed()) >= 1500 - SOURCE_MAX)
    refused = attack.closed()
    assert len(refused) == 1500 - SOURCE_MAX and attack.open_count() == SOURCE_MAX
    assert _refusals(refused)
    before = len(upstream.received)
    assert await _served(http, patient, keys, 20) == [201] * 20
    assert len(upstream.received) == before + 20
    assert attack.open_count() == SOURCE_MAX, "the held connections were still held while others were served"
    assert await _dropped_reaches(patient, "source_connections_max", 1400) == 1400


async def test_connections_beyond_the_worker_cap_are_refused_at_once_not_hung(
        patient: Sidecar, keys: Keys, attack: Attack, http: aiohttp.ClientSession) -> None:
    """Goal: past worker_connections_max a new connection gets an answer, not a hang.
    Method: 4 sources x 100 connections that send nothing, against a cap of
    300: 100 are answered 503 and closed without sending a byte
    (worker_connections_max in DROPPED); a new client that waits for the
    server gets the same 503; once 50 attackers leave, a client is served again."""
    await wait_until(lambda: _gauge(patient, "connections_open") == 0.0)  # the previous test's attack is gone
    before = _dropped(patient, "worker_connections_max")
    for index in range(4):
        await attack.open(patient, f"127.0.0.{3 + index}", 100, b"")
    await wait_until(lambda: len(attack.closed()) >= 400 - WORKER_MAX)
    assert attack.open_count() == WORKER_MAX
    assert _refusals(attack.closed(), all_503=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", patient.port)
    assert _refusals([await asyncio.wait_for(Attack._read(reader), timeout=30)], all_503=True)  # noqa: SLF001
    writer.close()
    for _, stalled in attack.streams[:50]:
        stalled.close()

    async def served_again() -> bool:
        try:
            return await _served(http, patient, keys, 1) == [201]
        except aiohttp.ClientError:
            return False

    for _ in range(200):
        if await served_again():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("a client was not served after the attackers left")
    # 100 attackers and the refused client; a retry of served_again() may have been refused too.
    assert await _dropped_reaches(patient, "worker_connections_max", 101, before) >= 101


async def test_half_sent_headers_and_bodies_are_closed_and_counted(
        strict: Sidecar, keys: Keys, upstream: Upstream, attack: Attack, http: aiohttp.ClientSession) -> None:
    """Goal: slow clients are closed by the header and body read deadlines.
    Method: 200 connections send half a header block, 200 send full headers
    announcing 1,000 body bytes and send 10; with 1 s deadlines the sidecar
    closes all 400, counts 200 header_read_timeout and 200 body_read_timeout
    in DROPPED, forwards none of them, and serves a normal client meanwhile."""
    before = len(upstream.received)
    body_head = (f"POST /v1/payments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {keys.token()}\r\n"
                 "Content-Length: 1000\r\n\r\n").encode() + b"{" * 10
    await attack.open(strict, "127.0.0.20", 200, PARTIAL_HEADERS)
    await attack.open(strict, "127.0.0.21", 200, body_head)
    assert await _served(http, strict, keys, 5) == [201] * 5
    await wait_until(lambda: attack.open_count() == 0)
    assert await _dropped_reaches(strict, "header_read_timeout", 200) == 200
    assert await _dropped_reaches(strict, "body_read_timeout", 200) == 200
    assert len(upstream.received) == before + 5, "only the normal client's requests were forwarded"
    assert await _served(http, strict, keys, 1) == [201]


async def test_requests_in_flight_cap_answers_503_before_attestation(
        narrow: Sidecar, keys: Keys, upstream: Upstream, attack: Attack, http: aiohttp.ClientSession) -> None:
    """Goal: requests_in_flight_max refuses with 503 before anything is attested.
    Method: 3 requests whose bodies never finish fill the cap of 3; a fourth
    is answered 503 requests_in_flight_max with no attestation id, is not
    forwarded, and is counted in DROPPED."""
    body_head = (f"POST /v1/payments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {keys.token()}\r\n"
                 "Content-Length: 1000\r\n\r\n").encode()
    await attack.open(narrow, "127.0.0.30", 3, body_head)
    await wait_until(lambda: _gauge(narrow, "in_flight") == 3.0)
    before = len(upstream.received)
    async with http.post(f"{narrow.url}/v1/payments", data=b"{}",
                         headers={"Authorization": f"Bearer {keys.token()}"}) as response:
        payload = await response.json()
        assert (response.status, payload["error"]) == (503, "requests_in_flight_max")
        assert uh.ATTESTATION_ID not in response.headers
    assert len(upstream.received) == before
    assert await _dropped_reaches(narrow, "requests_in_flight_max", 1) == 1


async def test_full_upstream_queue_answers_503_and_is_never_forwarded(
        narrow: Sidecar, keys: Keys, upstream: Upstream, http: aiohttp.ClientSession) -> None:
    """Goal: the wait for an upstream connection is a bounded queue.
    Method: one upstream connection busy with a slow request, one request
    waiting for it (queue of 1); a third is answered 503 upstream_queue_full
    before attestation (DROPPED), and the first two are served."""
    await wait_until(lambda: _gauge(narrow, "in_flight") == 0.0)
    upstream.started.clear()
    token = f"Bearer {keys.token()}"

    async def post(query: str) -> int:
        async with http.post(f"{narrow.url}/v1/payments{query}", data=b"{}",
                             headers={"Authorization": token}) as response:
            await response.read()
            return response.status

    first = asyncio.create_task(post("?delay=2"))
    await asyncio.wait_for(upstream.started.wait(), timeout=30)
    second = asyncio.create_task(post(""))
    await wait_until(lambda: _gauge(narrow, "upstream_waiting") == 1.0)
    async with http.post(f"{narrow.url}/v1/payments", data=b"{}", headers={"Authorization": token}) as response:
        payload = await response.json()
        assert (response.status, payload["error"]) == (503, "upstream_queue_full")
        assert uh.ATTESTATION_ID not in response.headers
    assert await asyncio.gather(first, second) == [201, 201]
    assert await _dropped_reaches(narrow, "upstream_queue_full", 1) == 1
