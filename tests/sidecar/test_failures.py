"""Failure paths, each attested: oversized body, slow upstream, client gone,
clock stepped back, stale policy, and graceful drain (invariants 1, 2, 5, 10)."""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingress_sidecar import hlc
from symphony import upstream_headers as uh
from symphony.attestation import RecordType
from symphony.db import connect
from tests.sidecar.conftest import Keys, Sidecar, Upstream, read_stream, wait_until


@pytest.fixture(scope="module")
def clock_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clock") / "offset-ms"
    path.write_text("0")
    return path


@pytest.fixture(scope="module")
def sidecar(sidecar_factory: Any, module_database_url: str, upstream: Upstream, clock_file: Path) -> Sidecar:
    return sidecar_factory(module_database_url, upstream.url, extra={
        "body_bytes_max": 1024, "upstream_timeout_seconds": 1.0, "test_clock_file": str(clock_file),
        "test_clock_allowed": True,
        "clock_offset_ms_max": 500,
    })


def _by_id(sidecar: Sidecar, attestation_id: int) -> dict[RecordType, Any] | None:
    bodies = {r.type: b for r, b in read_stream(sidecar.stream_dir(0)) if r.attestation_id == attestation_id}
    return bodies if RecordType.OUTCOME in bodies else None


async def _send(http: aiohttp.ClientSession, sidecar: Sidecar, keys: Keys, *, body: bytes = b"{}",
                query: str = "") -> tuple[int, dict[str, Any], int]:
    async with http.post(f"{sidecar.url}/v1/payments{query}", data=body,
                         headers={"Authorization": f"Bearer {keys.token()}"}) as response:
        payload = await response.json()
        return response.status, payload, int(response.headers.get(uh.ATTESTATION_ID, "0"))


async def test_oversized_body_is_413_and_attested(sidecar: Sidecar, keys: Keys, upstream: Upstream,
                                                  http: aiohttp.ClientSession) -> None:
    before = len(upstream.received)
    status, payload, attestation_id = await _send(http, sidecar, keys, body=b"x" * 4096)
    assert (status, payload["error"]) == (413, "body_too_large")
    bodies = await wait_until(lambda: _by_id(sidecar, attestation_id))
    assert bodies[RecordType.INGRESS].verdict == "body_too_large"
    assert bodies[RecordType.OUTCOME].disposition == "rejected"
    assert len(upstream.received) == before


async def test_slow_upstream_is_504_and_attested(sidecar: Sidecar, keys: Keys, http: aiohttp.ClientSession) -> None:
    status, payload, attestation_id = await _send(http, sidecar, keys, query="?delay=3")
    assert (status, payload["error"]) == (504, "upstream_timeout")
    outcome = (await wait_until(lambda: _by_id(sidecar, attestation_id)))[RecordType.OUTCOME]
    assert (outcome.status, outcome.disposition, outcome.reason) == (504, "upstream_error", "upstream_timeout")


async def test_client_disconnect_is_attested_as_client_gone(sidecar: Sidecar, keys: Keys, upstream: Upstream) -> None:
    """Method: a raw connection sends a payment to a slow upstream and closes once
    the upstream has the request; the OUTCOME says client_gone."""
    upstream.started.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    request = (f"POST /v1/payments?delay=0.8 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {keys.token()}\r\n"
               "Content-Length: 2\r\n\r\n{}").encode()
    writer.write(request)
    await writer.drain()
    await asyncio.wait_for(upstream.started.wait(), timeout=10)
    writer.close()
    await writer.wait_closed()

    def gone() -> Any:
        return [b for r, b in read_stream(sidecar.stream_dir(0))
                if r.type == RecordType.OUTCOME and b.disposition == "client_gone"]

    outcome = (await wait_until(gone))[-1]
    assert outcome.reason == "client_disconnected"


async def test_clock_stepped_back(sidecar: Sidecar, keys: Keys, clock_file: Path,
                                  http: aiohttp.ClientSession) -> None:
    """Goal: invariant 5. Method: step the injected clock back by 300 ms (within
    the 500 ms bound): ids keep increasing. Step back 5 s: 503 CLOCK_BACKWARDS,
    counted in a DROPPED record and in /metrics. Restore: requests flow again."""
    ids = [(await _send(http, sidecar, keys))[2] for _ in range(3)]
    clock_file.write_text("-300")
    ids += [(await _send(http, sidecar, keys))[2] for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert hlc.decompose(ids[-1])[0] >= hlc.decompose(ids[2])[0]
    clock_file.write_text("-5000")
    try:
        status, payload, attestation_id = await _send(http, sidecar, keys)
        assert (status, payload["error"], attestation_id) == (503, "CLOCK_BACKWARDS", 0)
    finally:
        clock_file.write_text("0")

    def clock_drops() -> int:
        return sum(b.counts.get("clock_backwards", 0) for r, b in read_stream(sidecar.stream_dir(0))
                   if r.type == RecordType.DROPPED)

    assert await wait_until(clock_drops) >= 1

    def refusals_metric() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{sidecar.admin_port}/metrics", timeout=5) as response:
            return 'symphony_sidecar_clock_refusals_total{stream="0"} 1.0' in response.read().decode()

    await wait_until(refusals_metric, timeout=10)
    status, _, later = await _send(http, sidecar, keys)
    assert status == 201 and later > ids[-1]


async def test_stale_policy_fails_closed_for_executing_routes(
        sidecar_factory: Any, database_url: str, upstream: Upstream, keys: Keys, http: aiohttp.ClientSession,
        pg_state: Any) -> None:
    """Goal: invariant 10. Method: a sidecar whose policy database disappears
    (DROP DATABASE … FORCE) refuses executing routes with 503 policy_stale once
    the staleness bound passes, still serves reads, and /readyz says not ready."""
    db = await connect(database_url)
    await db.execute("INSERT INTO participants (participant_id) VALUES ('bank-a')")
    await db.close()
    stale = sidecar_factory(database_url, upstream.url, extra={
        "policy_staleness_seconds_max": 1.0, "policy_poll_seconds": 0.3, "heartbeat_interval_seconds": 0.2})
    assert (await _send(http, stale, keys))[0] == 201
    admin = await connect(pg_state.dsn)
    try:
        await admin.execute(f'DROP DATABASE "{database_url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()

    async def refused() -> tuple[int, dict[str, Any], int]:
        for _ in range(200):
            answer = await _send(http, stale, keys)
            if answer[0] == 503:
                return answer
            await asyncio.sleep(0.05)
        raise AssertionError("sidecar did not fail closed")

    status, payload, attestation_id = await refused()
    assert payload["error"] == "policy_stale"
    bodies = await wait_until(lambda: _by_id(stale, attestation_id))
    assert bodies[RecordType.OUTCOME].disposition == "rejected"
    async with http.get(f"{stale.url}/v1/payments/1", headers={"Authorization": f"Bearer {keys.token()}"}) as response:
        assert response.status == 200, "reads still work on the stale cache"

    def not_ready() -> bool:
        return stale.readyz_status() == 503

    await wait_until(not_ready, timeout=10)
    assert stale.stop() == 0


async def test_sigterm_drains_in_flight_requests(sidecar: Sidecar, keys: Keys, upstream: Upstream,
                                                 http: aiohttp.ClientSession) -> None:
    """Goal: graceful drain. Method: SIGTERM while a request waits on a slow
    upstream; it is answered, its OUTCOME written, and the sidecar exits 0."""
    upstream.started.clear()
    pending = asyncio.create_task(_send(http, sidecar, keys, query="?delay=0.5"))
    await asyncio.wait_for(upstream.started.wait(), timeout=10)
    sidecar.process.send_signal(signal.SIGTERM)
    status, _, attestation_id = await asyncio.wait_for(pending, timeout=20)
    assert status == 201
    assert await asyncio.to_thread(sidecar.process.wait, 30) == 0
    assert _by_id(sidecar, attestation_id)[RecordType.OUTCOME].disposition == "executed"
    assert "Traceback" not in sidecar.log()
