"""After the fault: quiescence, then the invariants (docs/testing.md), each a list
of findings, never an average. The SQL they read is in queries.sql."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import time
import uuid
from collections import Counter
from typing import Any

from symphony.app.chaos.system import System, cli, query, setting
from symphony.rail_handles import HANDLE_OF_KIND
from symphony.rail_key import rail_key

ZOMBIE_MTTR_MAX_SECONDS = 60.0
TERMINAL = ("SUCCESS", "FAILED")


async def quiesce(system: System, *, timeout: float, grace_seconds: float, notes: list[str]) -> None:
    """Wait (bounded) until what the load started has settled."""
    import journal

    deadline = time.monotonic() + timeout
    url = system.database_url
    # 1. Every journal record written so far is in PostgreSQL.
    heads: dict[tuple[str, int], int] = {}
    for node_dir in sorted(p for p in system.journal_root().iterdir() if p.is_dir()):
        streams = [p for p in node_dir.iterdir() if p.is_dir() and p.name.isdigit() and any(p.glob("*.seg"))]
        for stream_dir in sorted(streams):
            checkpoint = await query(url, "checkpoint_last_seq", node_dir.name, int(stream_dir.name))
            from_seq = (int(checkpoint[0]["last_seq"]) if checkpoint else 0) + 1
            last = from_seq - 1
            with contextlib.suppress(journal.JournalError, OSError, ValueError):
                for record in journal.Reader(stream_dir).records(from_seq=from_seq):
                    last = record.seq
            heads[(node_dir.name, int(stream_dir.name))] = last
    while time.monotonic() < deadline:
        rows = await query(url, "checkpoints")
        shipped = {(r["node_id"], r["stream_id"]): int(r["last_seq"]) for r in rows}
        behind = {k: v for k, v in heads.items() if shipped.get(k, 0) < v}
        if not behind:
            break
        await asyncio.sleep(0.5)
    else:
        notes.append(f"quiesce: journal not shipped within {timeout:.0f} s: {behind}")
    # 2. The outbox drains: nothing PENDING/IN_FLIGHT/RECOVERING (bounded; what is left is judged later).
    while time.monotonic() < deadline:
        rows = await query(url, "outbox_not_terminal_count")
        if rows[0]["n"] == 0:
            break
        await asyncio.sleep(1.0)
    # 3. Repair has run two complete cycles after the grace periods of the newest INGRESS.
    rows = await query(url, "newest_ingress")
    ready_at = max(rows[0]["newest"], rows[0]["now"]) + dt.timedelta(seconds=grace_seconds)
    cycles_seen = 0
    last_cycle: Any = None
    while time.monotonic() < deadline:
        rows = await query(url, "repair_last_cycle")
        cycle = rows[0]["cycle"]
        if cycle is not None and cycle > ready_at and cycle != last_cycle:
            cycles_seen += 1
            last_cycle = cycle
            if cycles_seen >= 2:
                return
        await asyncio.sleep(0.5)
    notes.append(f"quiesce: repair did not complete two cycles past the grace period within {timeout:.0f} s")


@dataclasses.dataclass
class Expect:
    """What a scenario adds to the common checks."""

    blackholed: set[int] | None = None      # attestation ids the service dropped on purpose
    refused: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # keys only ever refused
    exclusive_incidents: bool = False       # blackhole: no incident but the GHOSTs of the dropped requests
    exact_ghosts: bool = False              # blackhole: the new ghosts are exactly the dropped requests
    double_tap_keys: list[tuple[str, str]] = dataclasses.field(default_factory=list)


async def check_invariants(system: System, since: dt.datetime, expect: Expect) -> dict[str, Any]:
    """Every invariant's findings and measures, after quiescence (see the package docstring)."""
    report = Report()
    ghost_rows, ghost_ids, incidents = await _check_gap(system, since, report)
    await _check_chain(system, report)
    outbox = await _check_rails(system, report)
    _check_outbox(outbox, report)
    await _check_zombies(system, since, incidents, report)
    await _check_ids(system, report)
    await _check_attested(system, expect, report)
    await _check_double_tap(system, expect, report)
    _check_blackhole(since, expect, ghost_rows, ghost_ids, incidents, report)
    return {"findings": report.findings, "measures": report.measures}


@dataclasses.dataclass
class Report:
    """Findings by invariant (each a list, never an average) and measures."""

    findings: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    measures: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, name: str, problem: str) -> None:
        self.findings.setdefault(name, []).append(problem)


async def _check_gap(system: System, since: dt.datetime,
                     report: Report) -> tuple[list[Any], set[int], list[Any]]:
    """Gap, accounted by GHOST incidents."""
    url, add, measures = system.database_url, report.add, report.measures
    code, gap = await cli(system, "audit", "gap")
    code_ghosts, ghosts = await cli(system, "audit", "ghosts")
    total_gap = int(gap.get("total", {}).get("gap", 0)) if isinstance(gap, dict) else -1
    ghost_rows = ghosts.get("ghosts", []) if isinstance(ghosts, dict) else []
    incidents = await query(url, "incidents")
    ghost_incidents: dict[str, list[Any]] = {}
    for row in incidents:
        if row["kind"] == "GHOST":
            ghost_incidents.setdefault(row["dedup_key"], []).append(row)
    accounted = 0
    for ghost in ghost_rows:
        dedup = f"{ghost['node_id']}/{ghost['stream_id']}/{ghost['stream_seq']}"
        matching = ghost_incidents.get(dedup, [])
        open_ones = [r for r in matching if r["resolved_at"] is None]
        if len(matching) == 1 and open_ones:
            accounted += 1
        else:
            add("gap", f"ghost {dedup} (attestation {ghost['attestation_id']}) has {len(matching)} GHOST "
                       f"incidents, {len(open_ones)} open (want exactly one, open)")
    if total_gap != len(ghost_rows):
        add("gap", f"audit gap says {total_gap}, audit ghosts lists {len(ghost_rows)}")
    if total_gap - accounted != 0:
        add("gap", f"unaccounted gap {total_gap - accounted} (gap {total_gap}, ghosts with one GHOST incident "
                   f"{accounted})")
    ghost_ids = {int(g["attestation_id"]) for g in ghost_rows}
    measures["gap"] = {"gap": total_gap, "ghosts_with_incident": accounted, "exit_code": code}
    false_ghosts = [r["dedup_key"] for r in ghost_incidents.values() for r in r
                    if r["detected_at"] >= since and r["resolution"] == "AUTO_RESOLVED"]
    if false_ghosts:
        measures["ghost_incidents_auto_resolved"] = false_ghosts[:20]
    return ghost_rows, ghost_ids, incidents


async def _check_chain(system: System, report: Report) -> None:
    """Chain and sequence."""
    add, measures = report.add, report.measures
    code, chain = await cli(system, "audit", "verify-chain")
    if code != 0:
        broken = [s for s in chain.get("streams", []) if s.get("status") != "OK"] if isinstance(chain, dict) else chain
        add("chain", f"audit verify-chain exit {code}: {broken}")
    measures["records_verified"] = chain.get("records_verified") if isinstance(chain, dict) else None
    code, seq_gaps = await cli(system, "audit", "seq-gaps")
    if code != 0:
        add("chain", f"audit seq-gaps exit {code}: {seq_gaps}")


def _handle(rail: str, outbox_id: uuid.UUID) -> str:
    """The handle the rail named `rail` sees (rail_key for rails without a derivation of their own)."""
    return HANDLE_OF_KIND[rail](outbox_id) if rail in HANDLE_OF_KIND else rail_key(outbox_id)


async def _check_rails(system: System, report: Report) -> list[Any]:
    """Rails: at most one execution per key; every execution is an outbox row's key."""
    url, add, measures = system.database_url, report.add, report.measures
    outbox = await query(url, "outbox_rows")
    # Each rail sees its own handle of the row (symphony.rail_handles); under `up`
    # a rail's name is its adapter kind.
    keys = {(r["rail"], _handle(r["rail"], r["id"])): r for r in outbox}
    import aiohttp

    executions: dict[str, dict[str, int]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for rail, base in system.rails().items():
            async with session.get(base + "/_sim/stats") as response:
                stats = await response.json()
            executions[rail] = stats.get("executions_per_key", {})
            for key, count in stats.get("double_executions_by_key", {}).items():
                add("rails", f"{rail}: key {key} executed {count} times")
            for key in executions[rail]:
                if (rail, key) not in keys:
                    add("rails", f"{rail}: key {key} executed with no outbox row of that rail")
    for row in outbox:
        handle = _handle(row["rail"], row["id"])
        if row["status"] == "SUCCESS" and executions.get(row["rail"], {}).get(handle, 0) != 1:
            add("rails", f"outbox {row['id']} is SUCCESS but {row['rail']} counts "
                         f"{executions.get(row['rail'], {}).get(handle, 0)} executions of its key")
    measures["rail_executions"] = {rail: sum(v.values()) for rail, v in executions.items()}
    return outbox


def _check_outbox(outbox: list[Any], report: Report) -> None:
    """Outbox: terminal, or pending within its budget."""
    add, measures = report.add, report.measures
    states = Counter(r["status"] for r in outbox)
    measures["outbox"] = dict(sorted(states.items()))
    for row in outbox:
        status, now = row["status"], row["now"]
        if status in TERMINAL:
            continue
        if status == "IN_FLIGHT" and row["lease_expires_at"] is not None and row["lease_expires_at"] > now:
            continue
        if status in ("PENDING", "RECOVERING") and row["attempt_count"] < row["max_attempts"] and \
                row["next_attempt_at"] < now + dt.timedelta(seconds=330):
            continue
        add("outbox", f"outbox {row['id']} {status} (attempt {row['attempt_count']} of {row['max_attempts']}, "
                      f"next {row['next_attempt_at']}, lease until {row['lease_expires_at']}) is stuck")


async def _check_zombies(system: System, since: dt.datetime, incidents: list[Any], report: Report) -> None:
    """Zombies: resolved, each within the MTTR bound."""
    url, add, measures = system.database_url, report.add, report.measures
    zombies = [r for r in incidents if r["kind"] == "ZOMBIE" and r["detected_at"] >= since]
    mttrs = []
    for row in zombies:
        if row["resolved_at"] is None:
            add("zombies", f"zombie incident {row['dedup_key']} still open")
            continue
        mttr = (row["resolved_at"] - row["detected_at"]).total_seconds()
        mttrs.append(mttr)
        if mttr >= ZOMBIE_MTTR_MAX_SECONDS:
            add("zombies", f"zombie {row['dedup_key']} took {mttr:.1f} s to repair (bound {ZOMBIE_MTTR_MAX_SECONDS:.0f} s)")
    measures["zombies"] = {"count": len(zombies), "mttr_max_seconds": round(max(mttrs), 3) if mttrs else None}
    stuck_after = setting("SYMPHONY_REPAIR_STUCK_KEY_SECONDS") + 10.0
    rows = await query(url, "stuck_idempotency_keys", stuck_after)
    for r in rows:
        add("zombies", f"idempotency key of {r['participant_id']} (attestation {r['attestation_id']}) "
                       f"IN_PROGRESS since {r['locked_at']}, past the stuck-key period")
    stuck = [r for r in incidents if r["kind"] == "STUCK_KEY" and r["detected_at"] >= since]
    measures["stuck_keys"] = {"count": len(stuck), "open": sum(1 for r in stuck if r["resolved_at"] is None)}


async def _check_ids(system: System, report: Report) -> None:
    """Ids never go backwards on a stream."""
    url, add = system.database_url, report.add
    rows = await query(url, "ids_backwards")
    for r in rows:
        add("ids", f"{r['node_id']}/{r['stream_id']} seq {r['stream_seq']}: attestation id {r['attestation_id']} "
                   f"not above the previous {r['prev_id']}")


async def _check_attested(system: System, expect: Expect, report: Report) -> None:
    """No execution without an attestation; refused requests executed nothing."""
    url, add = system.database_url, report.add
    rows = await query(url, "outbox_without_ingress")
    for r in rows:
        add("attested", f"outbox {r['id']} names attestation {r['attestation_id']}, which PostgreSQL does not hold")
    if expect.refused:
        participants = [p for p, _ in expect.refused]
        keys_refused = [k for _, k in expect.refused]
        rows = await query(url, "intents_of_keys", participants, keys_refused)
        for r in rows:
            add("attested", f"request {r['participant_id']}/{r['idempotency_key']} was refused by the sidecar "
                            f"and still executed")


async def _check_double_tap(system: System, expect: Expect, report: Report) -> None:
    """Double-tap: one intent per key, whatever the storm."""
    url, add, measures = system.database_url, report.add, report.measures
    if expect.double_tap_keys:
        rows = await query(url, "intent_count_per_key",
                           [p for p, _ in expect.double_tap_keys], [k for _, k in expect.double_tap_keys])
        measures["double_tap_intents"] = len(rows)
        for r in rows:
            if r["n"] != 1:
                add("double-tap", f"{r['participant_id']}/{r['idempotency_key']}: {r['n']} intents")


def _check_blackhole(since: dt.datetime, expect: Expect, ghost_rows: list[Any], ghost_ids: set[int],
                     incidents: list[Any], report: Report) -> None:
    """Blackhole: exactly the dropped requests are new ghosts, one GHOST incident each, nothing else."""
    add, measures = report.add, report.measures
    if expect.blackholed is not None:
        new_ghosts = {int(g["attestation_id"]) for g in ghost_rows
                      if dt.datetime.fromisoformat(str(g["recorded_at"])) >= since}
        if expect.exact_ghosts and expect.blackholed != new_ghosts:
            add("blackhole", f"dropped {sorted(expect.blackholed)} but the new ghosts are {sorted(new_ghosts)}")
        missing = expect.blackholed - ghost_ids
        if missing:
            add("blackhole", f"dropped requests not listed as ghosts: {sorted(missing)}")
        by_attestation = {int((r["evidence"] or {}).get("attestation_id", 0) if isinstance(r["evidence"], dict)
                              else json.loads(r["evidence"] or "{}").get("attestation_id", 0)): r
                          for r in incidents if r["kind"] == "GHOST"}
        for attestation_id in expect.blackholed:
            if attestation_id not in by_attestation:
                add("blackhole", f"dropped request {attestation_id} has no GHOST incident")
        if expect.exclusive_incidents:
            others = [f"{r['kind']} {r['dedup_key']}" for r in incidents
                      if r["detected_at"] >= since and r["kind"] != "GHOST"]
            if others:
                add("blackhole", f"incidents other than the GHOSTs of the dropped requests: {others[:10]}")
        measures["blackholed"] = len(expect.blackholed)
