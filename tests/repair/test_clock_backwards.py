"""CLOCK_BACKWARDS incidents from a real sidecar's refusals, shipped by the real forwarder.

Goal: invariant 5's alarm reaches the operator. A sidecar whose wall clock steps
back beyond the HLC's max offset answers 503 CLOCK_BACKWARDS and counts the
refusals in its DROPPED records (reason `clock_backwards`); the forwarder ships
them to PostgreSQL; a repair cycle opens one CLOCK_BACKWARDS incident for the
stream with the count and the window, keeps it open (refreshed) until an
operator resolves it, does not reopen it for the same refusals, and opens a new
one for a later step.

Method: `symphony sidecar` as a process with the test clock file (the same entry
point as tests/sidecar/test_failures.py), `symphony forwarder` as a process on
its journal, `symphony repair resolve` as the operator; repair cycles run on the
test's connection.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from repair.config import RepairConfig
from symphony import attestation as att
from symphony import upstream_headers as uh
from tests.conftest import symphony_cli
from tests.forwarder import conftest as forwarder_support
from tests.forwarder.conftest import forwarder_factory  # noqa: F401  (fixture)
from tests.repair.conftest import cycle, open_incidents
from tests.sidecar.conftest import (Keys, Sidecar, Upstream, http, keys, read_stream,  # noqa: F401  (fixtures)
                                    sidecar_factory, upstream, wait_until)

NODE = forwarder_support.NODE


async def _send(session: aiohttp.ClientSession, sidecar: Sidecar, keys: Keys) -> tuple[int, str]:  # noqa: F811
    async with session.post(f"{sidecar.url}/v1/payments", data=b"{}",
                            headers={"Authorization": f"Bearer {keys.token()}", "Idempotency-Key": "k"}) as response:
        payload = await response.json()
        assert int(response.headers.get(uh.ATTESTATION_ID, "0")) >= 0
        return response.status, str(payload.get("error", ""))


def _clock_refusals_journalled(sidecar: Sidecar) -> tuple[int, int]:
    """(refusals counted in DROPPED records, seq of the last such record) in the sidecar's journal."""
    total, last_seq = 0, 0
    for record, body in read_stream(sidecar.stream_dir(0)):
        if record.type == att.RecordType.DROPPED:
            assert isinstance(body, att.DroppedBody)
            count = body.counts.get(att.DROP_REASON_CLOCK_BACKWARDS, 0)
            if count:
                total, last_seq = total + count, record.seq
    return total, last_seq


async def _step_back_and_refuse(session: aiohttp.ClientSession, sidecar: Sidecar, keys: Keys,  # noqa: F811
                                clock_file: Path, requests: int) -> None:
    clock_file.write_text("-5000")
    try:
        for _ in range(requests):
            assert await _send(session, sidecar, keys) == (503, "CLOCK_BACKWARDS")
    finally:
        clock_file.write_text("0")


async def _shipped(db: asyncpg.Connection, seq: int) -> bool:
    return (await forwarder_support.checkpoints(db)).get(0, 0) >= seq


async def test_clock_refusals_open_one_incident_per_episode(
        sidecar_factory: Any, upstream: Upstream, keys: Keys, http: aiohttp.ClientSession,  # noqa: F811
        forwarder_factory: Any, database_url: str, db: asyncpg.Connection, tmp_path: Path) -> None:  # noqa: F811
    await db.execute("INSERT INTO participants (participant_id) VALUES ('bank-a')")
    clock_file = tmp_path / "clock-offset-ms"
    clock_file.write_text("0")
    sidecar = sidecar_factory(database_url, upstream.url, node_id=NODE, extra={
        "test_clock_file": str(clock_file), "test_clock_allowed": True, "clock_offset_ms_max": 500})
    forwarder = forwarder_factory(database_url, sidecar.journal_root).start()
    settings = RepairConfig(ghost_grace_seconds=3600, outcome_grace_seconds=3600,
                            heartbeat_interval_seconds=60)

    assert (await _send(http, sidecar, keys))[0] == 201  # the clock is sound: served
    await _step_back_and_refuse(http, sidecar, keys, clock_file, 3)
    refused, last_seq = await wait_until(lambda: (lambda c: c if c[0] == 3 else None)(
        _clock_refusals_journalled(sidecar)))
    await forwarder_support.wait_for(lambda: _shipped(db, last_seq), "the DROPPED record to be shipped",
                                     diagnostics=forwarder.log_tail)

    await cycle(db, settings)
    incidents = await open_incidents(db, "CLOCK_BACKWARDS")
    assert len(incidents) == 1, incidents
    incident = incidents[0]
    evidence = json.loads(incident["evidence"]) if isinstance(incident["evidence"], str) else incident["evidence"]
    assert (incident["node_id"], incident["stream_id"], incident["severity"]) == (NODE, 0, "HIGH")
    assert evidence["refused"] == refused == 3 and evidence["last_seq"] == last_seq
    assert evidence["window_start"] <= evidence["window_end"]
    assert "3 request(s)" in incident["subject"] and f"{NODE}/0" in incident["subject"]
    assert incident["dedup_key"] == f"{NODE}/0@seq{evidence['first_seq']}"

    shown = symphony_cli("repair", "report", str(incident["incident_id"]), "--format", "json",
                         "--database-url", database_url)
    assert shown.returncode == 0, shown.stderr
    assert "time source" in json.loads(shown.stdout)["action_required"]

    # Seen again: refreshed, not a second incident, and not resolved by itself.
    await cycle(db, settings)
    again = await open_incidents(db, "CLOCK_BACKWARDS")
    assert [row["incident_id"] for row in again] == [incident["incident_id"]]

    # The operator resolves it: the same refusals do not reopen it.
    done = symphony_cli("repair", "resolve", str(incident["incident_id"]), "--outcome", "RESOLVED",
                        "--note", "chrony fixed", "--by", "test", "--database-url", database_url)
    assert done.returncode == 0, done.stdout + done.stderr
    await cycle(db, settings)
    assert await open_incidents(db, "CLOCK_BACKWARDS") == []

    # A later step is a new episode: a new incident with only its own refusals.
    await _step_back_and_refuse(http, sidecar, keys, clock_file, 2)
    refused_total, last_seq = await wait_until(lambda: (lambda c: c if c[0] == 5 else None)(
        _clock_refusals_journalled(sidecar)))
    await forwarder_support.wait_for(lambda: _shipped(db, last_seq), "the second DROPPED record to be shipped",
                                     diagnostics=forwarder.log_tail)
    await cycle(db, settings)
    second = await open_incidents(db, "CLOCK_BACKWARDS")
    assert len(second) == 1 and second[0]["incident_id"] != incident["incident_id"]
    evidence = second[0]["evidence"]
    evidence = json.loads(evidence) if isinstance(evidence, str) else evidence
    assert evidence["refused"] == 2 and evidence["last_seq"] == last_seq
    assert refused_total == 5
    assert forwarder.terminate() == 0
