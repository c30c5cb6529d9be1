"""The journal under stress: full journal and a worker killed with SIGKILL
(invariants 1, 2 and 3). Real processes, real signals."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from symphony import upstream_headers as uh
from symphony.attestation import RecordType
from tests.sidecar.conftest import Keys, Sidecar, Upstream, read_stream, wait_until


def _stream_pid(sidecar: Sidecar, stream_id: int) -> int | None:
    for pid in sidecar.worker_pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"--stream-id" in argv and argv[argv.index(b"--stream-id") + 1] == str(stream_id).encode():
            return pid
    return None


def _check_gapless(records: list[Any]) -> None:
    assert [r.seq for r, _ in records] == list(range(1, len(records) + 1))
    assert [r.type for r, _ in records].count(RecordType.GENESIS) == 1 and records[0][0].type == RecordType.GENESIS
    for previous, current in zip(records, records[1:]):
        assert current[0].prev_hash == previous[0].chain_hash


@pytest.mark.evidence("failure_injection")
async def test_full_journal_refuses_with_503_and_never_forwards(
        sidecar_factory: Any, module_database_url: str, upstream: Upstream, keys: Keys) -> None:
    """Goal: invariant 1 when the journal cannot take a record. Method: cap the
    stream at two 64 KiB segments and send payments until one is refused: the
    refusal is 503 journal_full, the upstream saw exactly the accepted ones, and
    every INGRESS in the stream has its OUTCOME (room for it was reserved)."""
    sidecar = sidecar_factory(module_database_url, upstream.url, extra={
        "journal_segment_bytes": 65536, "journal_bytes_max": 131072, "heartbeat_interval_seconds": 5.0})
    token = keys.token()
    before = len(upstream.received)
    accepted, refusal = 0, None
    async with aiohttp.ClientSession() as http:
        for _ in range(3000):
            async with http.post(f"{sidecar.url}/v1/payments", data=b'{"amount": 1}',
                                 headers={"Authorization": f"Bearer {token}"}) as response:
                if response.status == 201:
                    accepted += 1
                    continue
                refusal = (response.status, await response.json())
                break
        assert refusal is not None, "the journal never filled"
        assert refusal[0] == 503 and refusal[1]["error"] == "journal_full", refusal
        async with http.post(f"{sidecar.url}/v1/payments", data=b"{}", headers={"Authorization": f"Bearer {token}"}) as again:
            assert again.status == 503
    assert len(upstream.received) - before == accepted, "nothing refused by the journal reached the upstream"
    records = read_stream(sidecar.stream_dir(0))
    _check_gapless(records)
    ingress = {r.attestation_id for r, _ in records if r.type == RecordType.INGRESS}
    outcome = {r.attestation_id for r, _ in records if r.type == RecordType.OUTCOME}
    assert ingress == outcome and len(ingress) == accepted

    def not_ready() -> bool:
        return sidecar.readyz_status() == 503

    await wait_until(not_ready, timeout=15)
    assert sidecar.stop() == 0


@pytest.mark.evidence("failure_injection")
@pytest.mark.slow
async def test_kill_9_worker_under_load(sidecar_factory: Any, module_database_url: str, upstream: Upstream,
                                        keys: Keys) -> None:
    """Goal: a worker killed mid-request loses nothing it acknowledged, and the
    requests it held become INGRESS records without OUTCOME (ghosts for repair
    to classify), not silence. Method: two workers under concurrent load; SIGKILL
    the worker serving an in-flight request; the supervisor restarts it on the
    same stream; compare client answers with both journal streams."""
    sidecar = sidecar_factory(module_database_url, upstream.url, workers=2,
                              extra={"heartbeat_interval_seconds": 0.3})
    token = keys.token()
    answered: dict[int, int] = {}
    failures = 0
    stop = asyncio.Event()

    async def client() -> None:
        nonlocal failures
        connector = aiohttp.TCPConnector(force_close=True)  # new connection each time: spread over workers
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20)) as http:
            while not stop.is_set():
                try:
                    async with http.post(f"{sidecar.url}/v1/payments?delay=0.3", data=b'{"amount": 5}',
                                         headers={"Authorization": f"Bearer {token}"}) as response:
                        await response.read()
                        answered[int(response.headers.get(uh.ATTESTATION_ID, "0"))] = response.status
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    failures += 1

    upstream.started.clear()
    clients = [asyncio.create_task(client()) for _ in range(6)]
    await wait_until(lambda: len(answered) >= 6, timeout=30)
    upstream.received.clear()
    await wait_until(lambda: upstream.received, timeout=10)
    victim_stream = int(upstream.received[-1]["headers"][uh.STREAM].split("/")[1])
    victim_pid = _stream_pid(sidecar, victim_stream)
    assert victim_pid is not None
    os.kill(victim_pid, signal.SIGKILL)
    await wait_until(lambda: (_stream_pid(sidecar, victim_stream) or victim_pid) != victim_pid, timeout=30)
    records_at_kill = len(read_stream(sidecar.stream_dir(victim_stream)))
    # The restarted worker writes to the same stream (requests or a HEARTBEAT).
    await wait_until(lambda: len(read_stream(sidecar.stream_dir(victim_stream))) > records_at_kill, timeout=30)
    # Load keeps flowing after the restart: more answers, not a fixed pause.
    answered_at_restart = len(answered)
    await wait_until(lambda: len(answered) >= answered_at_restart + 12, timeout=30)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*clients), timeout=30)
    assert sidecar.stop() == 0

    streams = {stream: read_stream(sidecar.stream_dir(stream)) for stream in (0, 1)}
    for records in streams.values():
        _check_gapless(records)
    ingress = {r.attestation_id for records in streams.values() for r, _ in records if r.type == RecordType.INGRESS}
    acknowledged = {aid for aid, status in answered.items() if status == 201}
    assert acknowledged and acknowledged <= ingress, "every acknowledged request was attested first"
    victim = streams[victim_stream]
    closed = {r.attestation_id for r, _ in victim if r.type == RecordType.OUTCOME}
    ghosts = [r for r, _ in victim if r.type == RecordType.INGRESS and r.attestation_id not in closed]
    assert ghosts, "the requests the killed worker held show as INGRESS without OUTCOME"
    assert not {g.attestation_id for g in ghosts} & acknowledged
    assert max(r.seq for r, _ in victim) > max(g.seq for g in ghosts), "the stream continued after the restart"
    assert failures >= 1
