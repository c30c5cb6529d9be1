"""On-call gauges the repair leader owns: facts about the whole system that live
in PostgreSQL (the outbox, the incidents, the attestation gap).

They are computed on the leader's own schedule (`oncall_metrics_seconds`, a
handful of cheap aggregate queries) and cached in gauges, so a scrape costs no
query, however many Prometheus servers scrape however often. Only the leader
exports them; a standby clears them, so `max()` across instances is the value.
`symphony_repair_oncall_refreshed_timestamp_seconds` says how fresh they are.
"""

from __future__ import annotations

import time

import asyncpg
from prometheus_client import CollectorRegistry, Gauge

from repair import store

OUTBOX_STATUSES = ("PENDING", "IN_FLIGHT", "RECOVERING", "FAILED")


class OnCallGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outbox_rows = Gauge("symphony_outbox_rows", "Outbox rows by status (SUCCESS not counted)",
                                 ["status"], registry=registry)
        self.outbox_oldest = Gauge("symphony_outbox_oldest_age_seconds",
                                   "Age of the oldest outbox row in each status (0 when none)",
                                   ["status"], registry=registry)
        self.oldest_pending = Gauge("symphony_outbox_oldest_pending_age_seconds",
                                    "Age of the oldest PENDING outbox row (0 when none): payments waiting",
                                    registry=registry)
        self.dead_letters = Gauge("symphony_outbox_dead_letters_open",
                                  "Open DEAD_LETTER incidents (rows past their retry budget, not yet resolved)",
                                  registry=registry)
        self.incidents = Gauge("symphony_incidents_open", "Open incidents by kind and severity",
                               ["kind", "severity"], registry=registry)
        self.gap = Gauge("symphony_attestation_gap",
                         "Attestation gap per participant: open GHOST incidents (unresolved ghosts)",
                         ["participant_id"], registry=registry)
        self.refreshed = Gauge("symphony_repair_oncall_refreshed_timestamp_seconds",
                               "Unix time of the last refresh of the on-call gauges (0: not the leader)",
                               registry=registry)
        self.last_refresh = float("-inf")

    def due(self, interval_seconds: float, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self.last_refresh >= interval_seconds

    async def refresh(self, conn: asyncpg.Connection) -> None:
        """Run the on-call queries once and replace every gauge's values."""
        outbox = await conn.fetch(store.QUERIES["oncall_outbox"], timeout=store.TIMEOUT_SECONDS)
        incidents = await conn.fetch(store.QUERIES["oncall_incidents"], timeout=store.TIMEOUT_SECONDS)
        gap = await conn.fetch(store.QUERIES["oncall_gap"], timeout=store.TIMEOUT_SECONDS)
        by_status = {row["status"]: row for row in outbox}
        for status in OUTBOX_STATUSES:
            row = by_status.get(status)
            self.outbox_rows.labels(status).set(row["n"] if row else 0)
            self.outbox_oldest.labels(status).set(max(0.0, row["oldest_age_seconds"]) if row else 0.0)
        pending = by_status.get("PENDING")
        self.oldest_pending.set(max(0.0, pending["oldest_age_seconds"]) if pending else 0.0)
        self.incidents.clear()
        dead_letters = 0
        for row in incidents:
            self.incidents.labels(row["kind"], row["severity"]).set(row["n"])
            if row["kind"] == "DEAD_LETTER":
                dead_letters += row["n"]
        self.dead_letters.set(dead_letters)
        self.gap.clear()
        for row in gap:
            self.gap.labels(row["participant_id"]).set(row["n"])
        self.refreshed.set(time.time())
        self.last_refresh = time.monotonic()

    def clear(self) -> None:
        """Not the leader: export nothing, so only the leader's values count."""
        for gauge in (self.outbox_rows, self.outbox_oldest, self.incidents, self.gap):
            gauge.clear()
        self.oldest_pending.set(0)
        self.dead_letters.set(0)
        self.refreshed.set(0)
        self.last_refresh = float("-inf")
