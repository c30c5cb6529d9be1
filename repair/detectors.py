"""The detectors: each turns what PostgreSQL holds into findings.

A detector reads, decides and returns `Findings`; it writes nothing. The worker
turns findings into incidents (`store.apply_findings`), and performs the few
recovery actions the daemon is allowed (zombie re-queue, stuck key release).
`complete` is False when a detector hit its row bound: then incidents it did
not see this cycle are not auto-resolved, because absence proves nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from repair import canonical, chain
from repair.config import RepairConfig
# Re-exported: callers know the finding types as detectors.Finding(s).
from repair.findings import KINDS as KINDS
from repair.findings import Finding as Finding
from repair.findings import Findings as Findings
from repair.store import QUERIES, TIMEOUT_SECONDS
from symphony import attestation

UNATTESTED_REASONS = {
    "missing": "its INGRESS is not in PostgreSQL although the stream's checkpoint covers it (deleted or truncated)",
    "not_an_ingress": "the record at its INGRESS position is not an INGRESS",
    "attestation_id_differs": "the INGRESS at its position carries another attestation id",
    "participant_differs": "its INGRESS names another participant",
    "body_sha256_differs": "its INGRESS attests another request body (body SHA-256 differs)",
    "halted": "its INGRESS lies in a stream the forwarder halted and never arrived",
    "unshipped": "its INGRESS lies beyond what the forwarder shipped and never arrived",
}




def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as JSON-ready evidence (times as ISO 8601 strings)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dt.datetime):
            value = value.isoformat()
        elif isinstance(value, (bytes, memoryview)):
            value = bytes(value).hex()
        out[key] = value
    return out


def _window_start(settings: RepairConfig) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=settings.scan_window_hours)


async def detect_ghosts(conn: asyncpg.Connection, settings: RepairConfig) -> Findings:
    rows = await conn.fetch(QUERIES["detect_ghosts"], settings.ghost_grace_seconds,
                            settings.scan_window_hours * 3600, settings.findings_max, timeout=TIMEOUT_SECONDS)
    found = Findings("GHOST", complete=len(rows) < settings.findings_max, scope_since=_window_start(settings))
    for row in rows:
        evidence = _plain(row)
        evidence["action_required"] = (
            "Not resurrected (attestations carry no payload). Tell the participant: the request was received "
            "and never executed; a retry with the same idempotency key executes it exactly once.")
        found.items.append(Finding(
            kind="GHOST", dedup_key=f"{row['node_id']}/{row['stream_id']}/{row['stream_seq']}", severity="CRITICAL",
            subject=(f"request {row['attestation_id']} from {row['participant_id']} on {row['method']} {row['route']} "
                     f"at {row['recorded_at'].isoformat()} was received and never executed"),
            evidence=evidence, participant_id=row["participant_id"], node_id=row["node_id"],
            stream_id=row["stream_id"]))
    return found


async def detect_outcome_missing(conn: asyncpg.Connection, settings: RepairConfig) -> Findings:
    rows = await conn.fetch(QUERIES["detect_outcome_missing"], settings.outcome_grace_seconds,
                            settings.scan_window_hours * 3600, settings.findings_max, timeout=TIMEOUT_SECONDS)
    found = Findings("OUTCOME_MISSING", complete=len(rows) < settings.findings_max,
                     scope_since=_window_start(settings))
    for row in rows:
        executed = row["outbox_id"] is not None
        evidence = _plain(row)
        evidence["classification"] = "executed_answer_lost" if executed else "not_executed"
        found.items.append(Finding(
            kind="OUTCOME_MISSING", dedup_key=f"{row['node_id']}/{row['stream_id']}/{row['stream_seq']}",
            severity="MEDIUM" if executed or not row["executes"] else "HIGH",
            subject=(f"request {row['attestation_id']} has no OUTCOME record (sidecar died mid-request?); "
                     + (f"outbox {row['outbox_id']} exists ({row['outbox_status']})" if executed
                        else "no outbox row")),
            evidence=evidence, participant_id=row["participant_id"], node_id=row["node_id"],
            stream_id=row["stream_id"]))
    return found


async def detect_zombies(conn: asyncpg.Connection, settings: RepairConfig) -> Findings:
    rows = await conn.fetch(QUERIES["detect_zombies"], settings.zombie_grace_seconds, settings.findings_max,
                            timeout=TIMEOUT_SECONDS)
    found = Findings("ZOMBIE", complete=len(rows) < settings.findings_max)
    for row in rows:
        found.items.append(Finding(
            kind="ZOMBIE", dedup_key=row["outbox_id"], severity="HIGH",
            subject=(f"outbox {row['outbox_id']} IN_FLIGHT on {row['rail']} held by {row['lease_owner']}, lease "
                     f"expired {row['expired_seconds']:.0f} s ago (attempt {row['attempt_count']})"),
            evidence=_plain(row), participant_id=row["participant_id"], node_id=row["ingress_node_id"],
            stream_id=row["ingress_stream_id"]))
    return found


async def detect_stuck_keys(conn: asyncpg.Connection, settings: RepairConfig) -> Findings:
    rows = await conn.fetch(QUERIES["detect_stuck_keys"], settings.stuck_key_seconds, settings.findings_max,
                            timeout=TIMEOUT_SECONDS)
    found = Findings("STUCK_KEY", complete=len(rows) < settings.findings_max)
    for row in rows:
        executed = row["intent_id"] is not None
        evidence = _plain(row)
        evidence["recovery"] = ("release: nothing executed, the client's retry with the same key executes once"
                                if not executed else
                                "complete from the intent's outbox state on the client's retry (never re-execute)")
        found.items.append(Finding(
            kind="STUCK_KEY", dedup_key=f"{row['participant_id']}:{row['key_hash']}", severity="MEDIUM",
            subject=(f"idempotency key sha256:{row['key_hash'][:16]}… of {row['participant_id']} in progress for "
                     f"{row['locked_seconds']:.0f} s" + (f" (intent {row['intent_id']})" if executed else "")),
            evidence=evidence, participant_id=row["participant_id"]))
    return found


async def detect_seq_gaps(conn: asyncpg.Connection, settings: RepairConfig) -> Findings:
    rows = await conn.fetch(QUERIES["detect_seq_gaps"], settings.findings_max, timeout=TIMEOUT_SECONDS)
    found = Findings("SEQ_GAP", complete=len(rows) < settings.findings_max)
    for row in rows:
        span = (f"seq {row['missing_from']}" if row["missing_from"] == row["missing_to"]
                else f"seqs {row['missing_from']}..{row['missing_to']}")
        found.items.append(Finding(
            kind="SEQ_GAP", dedup_key=f"{row['node_id']}/{row['stream_id']}/{row['position']}/{row['missing_from']}",
            severity="CRITICAL", subject=f"stream {row['node_id']}/{row['stream_id']} is missing {span} ({row['position']})",
            evidence=_plain(row), node_id=row["node_id"], stream_id=row["stream_id"]))
    return found


async def detect_silent_streams(conn: asyncpg.Connection, settings: RepairConfig) -> Findings:
    rows = await conn.fetch(QUERIES["detect_silent_streams"], settings.silent_after_seconds,
                            settings.scan_window_hours * 3600, settings.findings_max, timeout=TIMEOUT_SECONDS)
    found = Findings("NODE_SILENT", complete=len(rows) < settings.findings_max)
    for row in rows:
        evidence = _plain(row)
        evidence["silent_after_seconds"] = settings.silent_after_seconds
        # One incident per silence: the key carries when it began, so a stream that
        # speaks again and later falls silent again opens a new incident.
        since = row["last_seen_at"].isoformat() if row["last_seen_at"] else "never"
        found.items.append(Finding(
            kind="NODE_SILENT", dedup_key=f"{row['node_id']}/{row['stream_id']}@{since}", severity="HIGH",
            subject=(f"stream {row['node_id']}/{row['stream_id']} sent nothing, not even a heartbeat, for "
                     f"{row['silent_seconds']:.0f} s (limit {settings.silent_after_seconds:.0f} s)"),
            evidence=evidence, node_id=row["node_id"], stream_id=row["stream_id"]))
    return found


async def detect_dead_letters(conn: asyncpg.Connection, settings: RepairConfig) -> Findings:
    rows = await conn.fetch(QUERIES["detect_dead_letters"], settings.findings_max, timeout=TIMEOUT_SECONDS)
    found = Findings("DEAD_LETTER", complete=len(rows) < settings.findings_max)
    for row in rows:
        found.items.append(Finding(
            kind="DEAD_LETTER", dedup_key=row["outbox_id"], severity="HIGH",
            subject=(f"outbox {row['outbox_id']} on {row['rail']} failed after {row['attempt_count']} of "
                     f"{row['max_attempts']} attempts: {row['last_error'] or 'no error recorded'}"),
            evidence=_plain(row), participant_id=row["participant_id"], node_id=row["ingress_node_id"],
            stream_id=row["ingress_stream_id"]))
    return found


@dataclass
class _ClockEpisode:
    """The clock refusals of one stream since its last resolved CLOCK_BACKWARDS incident."""

    node_id: str
    stream_id: int
    refused: int = 0
    records: int = 0
    first_seq: int = 0
    last_seq: int = 0
    window_start_us: int = 0
    window_end_us: int = 0
    recorded_at: dt.datetime | None = None
    undecodable: list[int] = field(default_factory=list)

    def add(self, seq: int, body: attestation.DroppedBody, recorded_at: dt.datetime) -> None:
        count = body.counts.get(attestation.DROP_REASON_CLOCK_BACKWARDS, 0)
        if count <= 0:
            return  # the prefilter's bytes were elsewhere in the record
        if not self.records:
            self.first_seq, self.window_start_us = seq, body.window_start_us
        self.records += 1
        self.refused += count
        self.last_seq, self.window_end_us, self.recorded_at = seq, body.window_end_us, recorded_at
        self.window_start_us = min(self.window_start_us, body.window_start_us)


def _iso_us(us: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=us)).isoformat()


async def detect_clock_backwards(conn: asyncpg.Connection, settings: RepairConfig) -> Findings:
    """CLOCK_BACKWARDS: a sidecar refused requests (503 CLOCK_BACKWARDS) because its
    wall clock stepped back past the HLC's bound (invariant 5).

    The refusals reach PostgreSQL as the `clock_backwards` count of the
    stream's DROPPED records (no attestation id is issued for them, so no
    INGRESS exists). One incident per stream and episode: the refusals after the
    stream's last resolved CLOCK_BACKWARDS incident, keyed by the first DROPPED
    record's seq. It stays open, refreshed with the running count and window,
    until an operator resolves it: requests were refused and the node's clock
    needs a look (NTP, a VM restored from a snapshot), which repair cannot fix.
    """
    rows = await conn.fetch(QUERIES["detect_clock_refusals"], settings.scan_window_hours * 3600,
                            settings.findings_max, timeout=TIMEOUT_SECONDS)
    episodes: dict[tuple[str, int], _ClockEpisode] = {}
    for row in rows:
        key = (row["node_id"], row["stream_id"])
        episode = episodes.setdefault(key, _ClockEpisode(*key))
        try:
            parsed = canonical.parse(bytes(row["canonical"]))
            body = attestation.decode(parsed.record_type, parsed.body)
        except (canonical.CanonicalError, attestation.BodyError):
            episode.undecodable.append(row["stream_seq"])  # CHAIN_BREAK reports the record itself
            continue
        assert isinstance(body, attestation.DroppedBody), "the query selects DROPPED records"
        episode.add(row["stream_seq"], body, row["recorded_at"])
    found = Findings("CLOCK_BACKWARDS", complete=len(rows) < settings.findings_max,
                     scope_since=_window_start(settings))
    for episode in episodes.values():
        if not episode.records:
            continue
        assert episode.recorded_at is not None
        stream = f"{episode.node_id}/{episode.stream_id}"
        window = f"{_iso_us(episode.window_start_us)} .. {_iso_us(episode.window_end_us)}"
        found.items.append(Finding(
            kind="CLOCK_BACKWARDS", dedup_key=f"{stream}@seq{episode.first_seq}", severity="HIGH",
            subject=(f"sidecar stream {stream} refused {episode.refused} request(s) with 503 CLOCK_BACKWARDS "
                     f"({window}): its wall clock stepped back beyond the HLC's max offset"),
            evidence={"node_id": episode.node_id, "stream_id": episode.stream_id, "refused": episode.refused,
                      "dropped_records": episode.records, "first_seq": episode.first_seq,
                      "last_seq": episode.last_seq, "window_start": _iso_us(episode.window_start_us),
                      "window_end": _iso_us(episode.window_end_us), "recorded_at": episode.recorded_at.isoformat(),
                      "undecodable_seqs": episode.undecodable[:20],
                      "action_required": "Check the node's time source (NTP/chrony, a VM restored from a "
                                         "snapshot). The refused clients got 503 and may retry; nothing was "
                                         "attested or executed for them. Resolve this incident once the clock "
                                         "is sound."},
            node_id=episode.node_id, stream_id=episode.stream_id))
    return found


async def detect_unattested(conn: asyncpg.Connection, settings: RepairConfig) -> Findings:
    """The reverse gap (invariant 11): executions without the INGRESS they name."""
    rows = await conn.fetch(QUERIES["detect_unattested"], settings.unattested_pending_seconds,
                            settings.scan_window_hours * 3600, settings.findings_max, timeout=TIMEOUT_SECONDS)
    found = Findings("UNATTESTED_EXECUTION", complete=len(rows) < settings.findings_max,
                     scope_since=_window_start(settings))
    for row in rows:
        evidence = _plain(row)
        evidence["pending_bound_seconds"] = settings.unattested_pending_seconds
        where = f"{row['node_id']}/{row['stream_id']}/{row['stream_seq']}"
        found.items.append(Finding(
            kind="UNATTESTED_EXECUTION", dedup_key=row["outbox_id"], severity="CRITICAL",
            subject=(f"outbox {row['outbox_id']} ({row['outbox_status']}, {row['rail_attempts']} rail attempt(s)) of "
                     f"{row['participant_id']} names INGRESS {where} (attestation {row['attestation_id']}), but "
                     f"{UNATTESTED_REASONS.get(row['reason'], row['reason'])}"),
            evidence=evidence, participant_id=row["participant_id"], node_id=row["node_id"],
            stream_id=row["stream_id"]))
    return found


def chain_break_finding(node_id: str, stream_id: int, broken: chain.Break, source: str) -> Finding:
    return Finding(
        kind="CHAIN_BREAK", dedup_key=f"{node_id}/{stream_id}/{broken.seq}/{broken.reason}", severity="CRITICAL",
        subject=f"stream {node_id}/{stream_id}: chain broken at seq {broken.seq} ({broken.reason}): {broken.detail}",
        evidence={**broken.as_dict(), "node_id": node_id, "stream_id": stream_id, "source": source},
        node_id=node_id, stream_id=stream_id)


ROW_DETECTORS = (detect_ghosts, detect_outcome_missing, detect_zombies, detect_stuck_keys, detect_seq_gaps,
                 detect_silent_streams, detect_dead_letters, detect_clock_backwards, detect_unattested)
