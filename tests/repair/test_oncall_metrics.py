"""On-call gauges: exported by the repair leader, computed on its own cycle.

Goal: the facts an on-call needs (outbox depth by status and oldest PENDING
age, dead letters open, incidents open by kind and severity, the gap per
participant) come out of /metrics with the right values, next to
symphony_build_info and process_*; a standby exports none of them. Method:
rows and incidents written in a real migrated database (incidents through
open_incident_v1); OnCallGauges.refresh run against it and read back from its
registry; then a real `symphony repair` process scraped over HTTP until the
outbox depth appears, and its /readyz read (database and loop checked).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg
from prometheus_client import CollectorRegistry

from repair.oncall import OnCallGauges
from tests.conftest import REPO_ROOT
from tests.relayer.conftest import add_payments, free_port

WAIT_SECONDS = 30.0


async def _open(db: asyncpg.Connection, kind: str, key: str, severity: str, participant: str | None) -> None:
    await db.execute("SELECT * FROM open_incident_v1($1, $2, $3, $4, NULL, NULL, $5, $6::jsonb)",
                     kind, key, severity, participant, f"test {kind} {key}", json.dumps({"test": True}))


async def test_refresh_computes_every_gauge(db: asyncpg.Connection) -> None:
    """Depth, oldest PENDING age, incidents by kind/severity, dead letters, gap per participant."""
    ids = await add_payments(db, 3, rail="swiftpay")
    await db.execute("UPDATE payment_outbox SET created_at = now() - interval '10 minutes' WHERE id = $1", ids[0])
    await _open(db, "GHOST", "n/0/1", "HIGH", "bank-a")
    await _open(db, "GHOST", "n/0/2", "HIGH", "bank-a")
    await _open(db, "DEAD_LETTER", "dl-1", "HIGH", "bank-a")
    registry = CollectorRegistry()
    gauges = OnCallGauges(registry)
    await gauges.refresh(db)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("symphony_outbox_rows", status="PENDING") == 3
    assert value("symphony_outbox_rows", status="FAILED") == 0
    pending_age = value("symphony_outbox_oldest_pending_age_seconds")
    assert pending_age is not None and pending_age >= 600
    assert value("symphony_outbox_oldest_age_seconds", status="PENDING") == pending_age
    assert value("symphony_incidents_open", kind="GHOST", severity="HIGH") == 2
    assert value("symphony_outbox_dead_letters_open") == 1
    assert value("symphony_attestation_gap", participant_id="bank-a") == 2
    assert (value("symphony_repair_oncall_refreshed_timestamp_seconds") or 0) > 0
    await db.execute("UPDATE repair_incidents SET resolved_at = now(), resolution = 'RESOLVED', "
                     "resolved_by = 'test' WHERE kind = 'GHOST'")
    await gauges.refresh(db)
    assert value("symphony_attestation_gap", participant_id="bank-a") is None
    assert value("symphony_incidents_open", kind="GHOST", severity="HIGH") is None
    gauges.clear()
    assert value("symphony_outbox_rows", status="PENDING") is None
    assert value("symphony_repair_oncall_refreshed_timestamp_seconds") == 0


async def test_the_repair_daemon_exports_them_with_build_info(tmp_path: Path, database_url: str,
                                                              db: asyncpg.Connection) -> None:
    """A real repair process: /metrics has the outbox depth, build_info and process_*."""
    await add_payments(db, 2, rail="swiftpay")
    port = free_port()
    env = {**os.environ, "SYMPHONY_REPAIR_INSTANCE_ID": "oncall", "SYMPHONY_REPAIR_CYCLE_SECONDS": "0.2",
           "SYMPHONY_REPAIR_METRICS_PORT": str(port), "SYMPHONY_REPAIR_ONCALL_METRICS_SECONDS": "1",
           "SYMPHONY_DATABASE_URL": database_url}
    env.pop("NOTIFY_SOCKET", None)
    log = tmp_path / "repair.log"
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "symphony", "repair"], cwd=REPO_ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=out, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        text = ""
        while 'symphony_outbox_rows{status="PENDING"} 2.0' not in text:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no outbox depth on /metrics: {text[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                    text = answer.read().decode()
            except OSError:
                text = ""
            time.sleep(0.1)
        assert 'symphony_build_info{daemon="repair"' in text
        assert "process_resident_memory_bytes" in text and "process_open_fds" in text
        # /readyz checks something now: the database and the loop's progress.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            ready = json.loads(answer.read())
        assert ready["ready"] is True, ready
        assert ready["checks"]["database"]["ok"] is True
        assert ready["checks"]["loop"] == {"ok": True, "detail": "leader"}
    finally:
        process.terminate()
        process.wait(timeout=30)
