"""`symphony chaos`: failure scenarios against a running `symphony up`, then the invariants.

    symphony chaos run --scenario NAME --duration S [--data-dir D] [--rate R] [--concurrency C]
                       [--seed N] [--report FILE]
    symphony chaos check [--data-dir D] [--since ISO]   # quiesce, then the invariants only
    symphony chaos env [--data-dir D]                   # the settings `up` gives its children when chaos = true

One run: signed demo traffic at a steady rate (duplicates and invalid requests
mixed in, as `symphony demo traffic` sends them) for `--duration` seconds; the
scenario's fault injected at random moments inside that time and healed before
its end; then quiescence (every journal record shipped, every outbox row
terminal or legitimately pending, repair has run past the grace periods); then
the invariants (DESIGN.md), each a list of findings, never an average:

- gap: `audit gap` = 0 once ghosts are accounted for: every ghost (`audit
  ghosts`) has exactly one GHOST incident, and nothing else is missing;
- chain: `audit verify-chain` and `audit seq-gaps` are clean (invariants 3, 4);
- rails: each simulator counts at most one execution per key, every executed
  key is `hex(SHA-256(outbox.id))` of an outbox row, and every SUCCESS row was
  executed exactly once on its rail (invariant 6);
- outbox: every row is SUCCESS/FAILED, or pending within its budget (a live
  lease, or attempts left and a retry scheduled) (invariant 7);
- zombies: every ZOMBIE incident of the run is resolved, each in < 60 s; no
  idempotency key stays IN_PROGRESS past the stuck-key period (invariant 7);
- ids: attestation ids increase with the stream seq on every stream (invariant 5);
- attested: every outbox row names an INGRESS that PostgreSQL holds (invariant 1),
  and a request the sidecar refused (503 journal_full / CLOCK_BACKWARDS) and never
  sent again executed nothing;
- the scenario's own: the fault took effect (a refusal, a takeover, a restart…),
  and for blackhole the dropped requests are exactly the new ghosts, each one
  GHOST incident, with no other incident.

Scenarios: blackhole, double-tap, kill-sidecar-worker, kill-forwarder,
kill-relayer, kill-repair-leader, pg-restart, rail-down, disk-full, clock-back;
`mixed` injects random ones back to back for the whole duration (the soak).
Processes are found through `<data_dir>/run/up.json`, which `symphony up`
writes. The target system must run with `chaos = true` and `child_restarts_max
> 0` in its up.toml (the service's test fault switch, the sidecar's test clock
file, short grace periods, restarts of killed daemons); disk-full also needs
the journal directory on a small filesystem of its own (e.g. a tmpfs), because
the scenario fills it. Exit codes: 0 every invariant holds, 1 findings, 2 the
system is not set up for the scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from symphony.db import dsn
from symphony.errors import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, SymphonyError

SCENARIOS = ("blackhole", "double-tap", "kill-sidecar-worker", "kill-forwarder", "kill-relayer",
             "kill-repair-leader", "pg-restart", "rail-down", "disk-full", "clock-back")
MIXED = "mixed"
ZOMBIE_MTTR_MAX_SECONDS = 60.0
CLOCK_FILE = ("chaos", "clock-offset-ms")
SERVICE_FAULT_FILE = ("chaos", "service-faults.json")
BLACKHOLE_LOG = ("chaos", "blackholed.jsonl")
BALLAST_NAME = ".chaos-ballast"
DISK_FULL_FILESYSTEM_MAX_BYTES = 1 << 30
TERMINAL = ("SUCCESS", "FAILED")

# What `symphony up` (chaos = true) gives its children unless the environment
# already says otherwise: short grace periods so a bounded run sees repair act,
# small journal segments (the disk-full scenario fills a small filesystem),
# fast segment release, and the sidecar's test clock file.
CHAOS_SETTINGS = {
    "SYMPHONY_SIDECAR_JOURNAL_SEGMENT_BYTES": str(64 * 1024),
    "SYMPHONY_SIDECAR_UPSTREAM_TIMEOUT_SECONDS": "5",
    "SYMPHONY_FORWARDER_JOURNAL_RETENTION_SECONDS": "2",
    "SYMPHONY_RELAYER_LEASE_SECONDS": "20",
    "SYMPHONY_REPAIR_CYCLE_SECONDS": "1",
    "SYMPHONY_REPAIR_LEADER_RETRY_SECONDS": "1",
    "SYMPHONY_REPAIR_GHOST_GRACE_SECONDS": "8",
    "SYMPHONY_REPAIR_OUTCOME_GRACE_SECONDS": "8",
    "SYMPHONY_REPAIR_ZOMBIE_GRACE_SECONDS": "2",
    "SYMPHONY_SERVICE_IDEMPOTENCY_LOCK_TTL_SECONDS": "5",
    "SYMPHONY_REPAIR_STUCK_KEY_SECONDS": "6",
}


def child_environment(data_dir: Path) -> dict[str, str]:
    """The environment `symphony up` adds for its children when `chaos = true`."""
    (data_dir / CLOCK_FILE[0]).mkdir(parents=True, exist_ok=True)
    return {**CHAOS_SETTINGS, "SYMPHONY_SIDECAR_TEST_CLOCK_FILE": str(data_dir.joinpath(*CLOCK_FILE))}


def rail_key(outbox_id: uuid.UUID) -> str:
    """The rail idempotency key of an outbox row (relayer/README.md, invariant 6)."""
    return hashlib.sha256(outbox_id.bytes).hexdigest()


def _handle(rail: str, outbox_id: uuid.UUID) -> str:
    """The handle the rail named `rail` sees (rail_key for rails without a derivation of their own)."""
    from symphony.rail_handles import HANDLE_OF_KIND

    return HANDLE_OF_KIND[rail](outbox_id) if rail in HANDLE_OF_KIND else rail_key(outbox_id)


class NotSetUp(SymphonyError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason, exit_code=EXIT_USAGE)


# -- the running system ------------------------------------------------------------------------------


@dataclasses.dataclass
class System:
    """What `symphony up` on this data dir runs, read from run/up.json on every use."""

    data_dir: Path
    database_url: str

    def state(self) -> dict[str, Any]:
        path = self.data_dir / "run" / "up.json"
        try:
            state: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            raise NotSetUp(f"no running `symphony up` on {self.data_dir} ({path} is missing)") from None
        if not _alive(int(state.get("up_pid", 0))):
            raise NotSetUp(f"the `symphony up` of {path} is not running")
        return state

    def pid(self, child: str) -> int:
        entry = self.state()["children"].get(child)
        if entry is None:
            raise NotSetUp(f"`symphony up` on {self.data_dir} runs no {child}")
        return int(entry["pid"])

    def endpoint(self, child: str, label: str) -> str:
        entry = self.state()["children"].get(child)
        if entry is None or label not in entry.get("endpoints", {}):
            raise NotSetUp(f"`symphony up` on {self.data_dir} publishes no {child} {label}")
        return str(entry["endpoints"][label]).split(" ")[0]

    @property
    def target(self) -> str:
        return self.endpoint("sidecar", "ingress")

    def rails(self) -> dict[str, str]:
        children = self.state()["children"]
        return {name.removeprefix("rail-sim-"): str(entry["endpoints"]["url"])
                for name, entry in children.items() if name.startswith("rail-sim-")}

    def sidecar_workers(self) -> list[int]:
        return _children_of(self.pid("sidecar"))

    def journal_root(self) -> Path:
        return self.data_dir / "journal"

    async def wait_restarted(self, child: str, old_pid: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(NotSetUp):
                pid = self.pid(child)
                if pid != old_pid and _alive(pid):
                    return pid
            await asyncio.sleep(0.2)
        raise Finding(f"{child} was not restarted within {timeout:.0f} s after kill -9 "
                      f"(does up.toml set child_restarts_max > 0?)")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _children_of(pid: int) -> list[int]:
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                children += [int(c) for c in (task / "children").read_text().split()]
    return sorted(c for c in set(children) if _alive(c))


def _environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def kill9(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Finding(Exception):
    """A scenario step that shows an invariant or the fault itself did not hold."""


# -- load -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Sent:
    participant: str
    key: str
    body: bytes
    status: int = 0
    disposition: str = ""
    error: str = ""
    attestation_id: int | None = None


class Load:
    """Signed demo payments at a steady rate, at most `concurrency` in flight."""

    def __init__(self, system: System, *, rate: float, concurrency: int, rng: random.Random,
                 duplicate_rate: float = 0.1, invalid_rate: float = 0.05) -> None:
        from symphony.app import demo

        self.system = system
        self.rate = rate
        self.concurrency = concurrency
        self.rng = rng
        self.duplicate_rate = duplicate_rate
        self.invalid_rate = invalid_rate
        self.tokens = {p: demo.make_token(system.data_dir, p, ttl_seconds=3600) for p in demo.DEMO_PARTICIPANTS}
        self.sent: list[Sent] = []
        self.skipped = 0
        self.stop = asyncio.Event()
        self.session: Any = None
        self.in_flight: set[asyncio.Task[Sent]] = set()

    def next_request(self) -> tuple[str, str, bytes]:
        from symphony.app import demo

        if self.sent and self.rng.random() < self.duplicate_rate:
            prior = self.rng.choice(self.sent)
            return prior.participant, prior.key, prior.body
        return demo.plan_requests(1, list(self.tokens), 0.0, self.invalid_rate, self.rng)[0]

    async def send(self, participant: str, key: str, body: bytes) -> Sent:
        import aiohttp

        from symphony.app import demo

        sent = Sent(participant, key, body)
        self.sent.append(sent)
        headers = {"Authorization": f"Bearer {self.tokens[participant]}", "Idempotency-Key": key,
                   "Content-Type": "application/json"}
        try:
            async with self.session.post(self.system.target.rstrip("/") + "/v1/payments", data=body,
                                         headers=headers) as response:
                raw = await response.read()
                sent.status = response.status
                sent.disposition = demo.disposition_of(response.status, response.headers)
                with contextlib.suppress(ValueError, TypeError):
                    sent.attestation_id = int(response.headers.get("X-Symphony-Attestation-Id", ""))
                if response.status >= 500:
                    with contextlib.suppress(ValueError, AttributeError):
                        error = json.loads(raw).get("error", "")
                        sent.error = error if isinstance(error, str) else str(error.get("code", ""))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            sent.error = type(exc).__name__
        return sent

    async def run(self, seconds: float) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=timeout,
                                         connector=aiohttp.TCPConnector(limit=self.concurrency * 4)) as session:
            self.session = session
            interval = 1.0 / self.rate
            deadline = time.monotonic() + seconds
            next_at = time.monotonic()
            while time.monotonic() < deadline and not self.stop.is_set():
                if len(self.in_flight) < self.concurrency:
                    task = asyncio.create_task(self.send(*self.next_request()))
                    self.in_flight.add(task)
                    task.add_done_callback(self.in_flight.discard)
                else:
                    self.skipped += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if self.in_flight:
                await asyncio.wait(list(self.in_flight), timeout=30)
            self.session = None

    def summary(self) -> dict[str, Any]:
        return {"sent": len(self.sent), "skipped_at_concurrency_limit": self.skipped,
                "by_status": dict(sorted(Counter(str(s.status) for s in self.sent).items())),
                "by_disposition": dict(sorted(Counter(s.disposition or "none" for s in self.sent).items())),
                "errors": dict(sorted(Counter(s.error for s in self.sent if s.error).items()))}

    def refused_keys(self, *errors: str) -> set[tuple[str, str]]:
        """(participant, key) whose every answer was one of these refusals."""
        answered: dict[tuple[str, str], set[str]] = {}
        for s in self.sent:
            answered.setdefault((s.participant, s.key), set()).add(s.error if s.status == 503 else "other")
        return {k for k, v in answered.items() if v and v <= set(errors)}


# -- database -----------------------------------------------------------------------------------------


async def _connect(url: str, timeout: float = 60.0) -> Any:
    """A connection, retried while PostgreSQL restarts."""
    from symphony.db import connect

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await connect(url)
        except SymphonyError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _query(url: str, sql: str, *args: Any) -> list[Any]:
    conn = await _connect(url)
    try:
        return list(await conn.fetch(sql, *args, timeout=60))
    finally:
        await conn.close()


async def _db_now(url: str) -> dt.datetime:
    rows = await _query(url, "SELECT now() AS now")
    now: dt.datetime = rows[0]["now"]
    return now


async def _cli(system: System, *args: str) -> tuple[int, Any]:
    """Run `symphony ARGS --json` against this system: (exit code, parsed stdout)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "symphony", *args, "--json", "--database-url", system.database_url,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=180)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise Finding(f"`symphony {' '.join(args)}` did not finish within 180 s") from None
    try:
        parsed = json.loads(out or b"null")
    except ValueError:
        parsed = {"stdout": out.decode(errors="replace")[-2000:], "stderr": err.decode(errors="replace")[-2000:]}
    return int(process.returncode or 0), parsed


# -- quiescence -----------------------------------------------------------------------------------------


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
            checkpoint = await _query(url, "SELECT last_seq FROM journal_checkpoints WHERE node_id = $1 "
                                           "AND stream_id = $2", node_dir.name, int(stream_dir.name))
            from_seq = (int(checkpoint[0]["last_seq"]) if checkpoint else 0) + 1
            last = from_seq - 1
            with contextlib.suppress(journal.JournalError, OSError, ValueError):
                for record in journal.Reader(stream_dir).records(from_seq=from_seq):
                    last = record.seq
            heads[(node_dir.name, int(stream_dir.name))] = last
    while time.monotonic() < deadline:
        rows = await _query(url, "SELECT node_id, stream_id, last_seq FROM journal_checkpoints")
        shipped = {(r["node_id"], r["stream_id"]): int(r["last_seq"]) for r in rows}
        behind = {k: v for k, v in heads.items() if shipped.get(k, 0) < v}
        if not behind:
            break
        await asyncio.sleep(0.5)
    else:
        notes.append(f"quiesce: journal not shipped within {timeout:.0f} s: {behind}")
    # 2. The outbox drains: nothing PENDING/IN_FLIGHT/RECOVERING (bounded; what is left is judged later).
    while time.monotonic() < deadline:
        rows = await _query(url, "SELECT count(*) AS n FROM payment_outbox WHERE status NOT IN ('SUCCESS', 'FAILED')")
        if rows[0]["n"] == 0:
            break
        await asyncio.sleep(1.0)
    # 3. Repair has run two complete cycles after the grace periods of the newest INGRESS.
    rows = await _query(url, "SELECT coalesce(max(recorded_at), now()) AS newest, now() AS now "
                             "FROM ingress_attestations WHERE record_type = 2")
    ready_at = max(rows[0]["newest"], rows[0]["now"]) + dt.timedelta(seconds=grace_seconds)
    cycles_seen = 0
    last_cycle: Any = None
    while time.monotonic() < deadline:
        rows = await _query(url, "SELECT now() AS now, max(last_cycle_at) AS cycle FROM repair_instances "
                                 "WHERE role = 'LEADER'")
        cycle = rows[0]["cycle"]
        if cycle is not None and cycle > ready_at and cycle != last_cycle:
            cycles_seen += 1
            last_cycle = cycle
            if cycles_seen >= 2:
                return
        await asyncio.sleep(0.5)
    notes.append(f"quiesce: repair did not complete two cycles past the grace period within {timeout:.0f} s")


# -- invariants -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Expect:
    """What a scenario adds to the common checks."""

    blackholed: set[int] | None = None      # attestation ids the service dropped on purpose
    refused: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # keys only ever refused
    exclusive_incidents: bool = False       # blackhole: no incident but the GHOSTs of the dropped requests
    exact_ghosts: bool = False              # blackhole: the new ghosts are exactly the dropped requests
    double_tap_keys: list[tuple[str, str]] = dataclasses.field(default_factory=list)


async def check_invariants(system: System, since: dt.datetime, expect: Expect) -> dict[str, Any]:
    url = system.database_url
    findings: dict[str, list[str]] = {}
    measures: dict[str, Any] = {}

    def add(name: str, problem: str) -> None:
        findings.setdefault(name, []).append(problem)

    # gap, accounted by GHOST incidents
    code, gap = await _cli(system, "audit", "gap")
    code_ghosts, ghosts = await _cli(system, "audit", "ghosts")
    total_gap = int(gap.get("total", {}).get("gap", 0)) if isinstance(gap, dict) else -1
    ghost_rows = ghosts.get("ghosts", []) if isinstance(ghosts, dict) else []
    incidents = await _query(url, "SELECT kind, dedup_key, detected_at, resolved_at, resolution, evidence "
                                  "FROM repair_incidents")
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

    # chain and sequence
    code, chain = await _cli(system, "audit", "verify-chain")
    if code != 0:
        broken = [s for s in chain.get("streams", []) if s.get("status") != "OK"] if isinstance(chain, dict) else chain
        add("chain", f"audit verify-chain exit {code}: {broken}")
    measures["records_verified"] = chain.get("records_verified") if isinstance(chain, dict) else None
    code, seq_gaps = await _cli(system, "audit", "seq-gaps")
    if code != 0:
        add("chain", f"audit seq-gaps exit {code}: {seq_gaps}")

    # rails: at most one execution per key; every execution is an outbox row's key
    outbox = await _query(url, "SELECT id, rail, status::text AS status, attempt_count, max_attempts, "
                               "next_attempt_at, lease_expires_at, attestation_id, ingress_node_id, "
                               "ingress_stream_id, ingress_seq, now() AS now FROM payment_outbox")
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

    # outbox: terminal, or pending within its budget
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

    # zombies: resolved, each within the MTTR bound
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
    stuck_after = _setting("SYMPHONY_REPAIR_STUCK_KEY_SECONDS") + 10.0
    rows = await _query(url, "SELECT participant_id, locked_at, attestation_id FROM idempotency_keys "
                             "WHERE state = 'IN_PROGRESS' AND locked_at < now() - make_interval(secs => $1) "
                             "LIMIT 20", stuck_after)
    for r in rows:
        add("zombies", f"idempotency key of {r['participant_id']} (attestation {r['attestation_id']}) "
                       f"IN_PROGRESS since {r['locked_at']}, past the stuck-key period")
    stuck = [r for r in incidents if r["kind"] == "STUCK_KEY" and r["detected_at"] >= since]
    measures["stuck_keys"] = {"count": len(stuck), "open": sum(1 for r in stuck if r["resolved_at"] is None)}

    # ids never go backwards on a stream
    rows = await _query(url, """
        SELECT node_id, stream_id, stream_seq, attestation_id, prev_id FROM (
            SELECT node_id, stream_id, stream_seq, attestation_id,
                   lag(attestation_id) OVER (PARTITION BY node_id, stream_id ORDER BY stream_seq) AS prev_id
            FROM ingress_attestations WHERE record_type = 2) s
        WHERE prev_id >= attestation_id LIMIT 20""")
    for r in rows:
        add("ids", f"{r['node_id']}/{r['stream_id']} seq {r['stream_seq']}: attestation id {r['attestation_id']} "
                   f"not above the previous {r['prev_id']}")

    # no execution without an attestation; refused requests executed nothing
    rows = await _query(url, """
        SELECT x.id, x.attestation_id FROM payment_outbox x
        WHERE NOT EXISTS (SELECT 1 FROM ingress_attestations i
                          WHERE i.record_type = 2 AND i.node_id = x.ingress_node_id
                            AND i.stream_id = x.ingress_stream_id AND i.stream_seq = x.ingress_seq
                            AND i.attestation_id = x.attestation_id) LIMIT 20""")
    for r in rows:
        add("attested", f"outbox {r['id']} names attestation {r['attestation_id']}, which PostgreSQL does not hold")
    if expect.refused:
        participants = [p for p, _ in expect.refused]
        keys_refused = [k for _, k in expect.refused]
        rows = await _query(url, "SELECT participant_id, idempotency_key FROM payment_intents "
                                 "WHERE (participant_id, idempotency_key) IN "
                                 "(SELECT * FROM unnest($1::text[], $2::text[]))", participants, keys_refused)
        for r in rows:
            add("attested", f"request {r['participant_id']}/{r['idempotency_key']} was refused by the sidecar "
                            f"and still executed")

    # double-tap: one intent per key, whatever the storm
    if expect.double_tap_keys:
        rows = await _query(url, "SELECT participant_id, idempotency_key, count(*) AS n FROM payment_intents "
                                 "WHERE (participant_id, idempotency_key) IN "
                                 "(SELECT * FROM unnest($1::text[], $2::text[])) GROUP BY 1, 2",
                            [p for p, _ in expect.double_tap_keys], [k for _, k in expect.double_tap_keys])
        measures["double_tap_intents"] = len(rows)
        for r in rows:
            if r["n"] != 1:
                add("double-tap", f"{r['participant_id']}/{r['idempotency_key']}: {r['n']} intents")

    # blackhole: exactly the dropped requests are new ghosts, one GHOST incident each, nothing else
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
    return {"findings": findings, "measures": measures}


# -- scenarios ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    system: System
    duration: float
    rng: random.Random
    load: Load
    since: dt.datetime
    expect: Expect = dataclasses.field(default_factory=Expect)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.monotonic)

    def event(self, what: str, **details: Any) -> None:
        self.events.append({"t": round(time.monotonic() - self.started, 2), "event": what, **details})

    async def sleep_random(self, low: float, high: float) -> None:
        await asyncio.sleep(self.rng.uniform(low, high) * self.duration)


async def scenario_blackhole(run: Run) -> None:
    fault_file = run.system.data_dir.joinpath(*SERVICE_FAULT_FILE)
    log_file = run.system.data_dir.joinpath(*BLACKHOLE_LOG)
    seen_before = _blackholed(log_file)
    await run.sleep_random(0.1, 0.3)
    _write_atomic(fault_file, json.dumps({"blackhole_rate": 0.1, "blackhole_max": 10}))
    run.event("blackhole on", rate=0.1, max=10)
    try:
        await run.sleep_random(0.4, 0.5)
    finally:
        _write_atomic(fault_file, "{}")
        run.event("blackhole off")
    dropped = _blackholed(log_file) - seen_before
    run.expect.blackholed = (run.expect.blackholed or set()) | dropped
    run.expect.exclusive_incidents = run.expect.exact_ghosts = True
    if not dropped:
        run.problems.append("blackhole: the service dropped no request (is up.toml `chaos = true`?)")


def _blackholed(path: Path) -> set[int]:
    try:
        return {int(json.loads(line)["attestation_id"]) for line in path.read_text().splitlines() if line.strip()}
    except FileNotFoundError:
        return set()


async def scenario_double_tap(run: Run) -> None:
    from symphony.app import demo

    load = run.load
    while load.session is None:
        await asyncio.sleep(0.05)
    storms = max(2, int(run.duration // 4))
    for _ in range(storms):
        await asyncio.sleep(run.rng.uniform(0.1, 0.8) * run.duration / storms)
        if load.session is None:
            break
        batch = []
        for _ in range(5):
            participant, key, body = demo.plan_requests(1, list(load.tokens), 0.0, 0.0, run.rng)[0]
            run.expect.double_tap_keys.append((participant, key))
            copies = [load.send(participant, key, body) for _ in range(8)]
            # and a conflicting body with the same key: must never execute a second time
            other = demo.plan_requests(1, [participant], 0.0, 0.0, run.rng)[0][2]
            batch += [*copies, load.send(participant, key, other)]
        run.rng.shuffle(batch)
        results = await asyncio.gather(*batch)
        executed = Counter((s.participant, s.key) for s in results if s.disposition == "executed")
        run.event("double-tap storm", requests=len(results),
                  statuses=dict(Counter(str(s.status) for s in results)))
        for (participant, key), n in executed.items():
            if n > 1:
                run.problems.append(f"double-tap: {participant}/{key} answered 'executed' {n} times")


async def scenario_kill_sidecar_worker(run: Run) -> None:
    """kill -9 of a worker at random moments, with the service slowed down so
    requests are in flight (attested, forwarded or not yet) when it dies."""
    fault_file = run.system.data_dir.joinpath(*SERVICE_FAULT_FILE)
    _write_atomic(fault_file, json.dumps({"latency_ms": 150}))
    run.event("service latency 150 ms")
    try:
        await _kill_sidecar_workers(run)
    finally:
        _write_atomic(fault_file, "{}")
        run.event("service latency off")


async def _kill_sidecar_workers(run: Run) -> None:
    kills = max(1, int(run.duration // 10))
    for _ in range(kills):
        await asyncio.sleep(run.rng.uniform(0.2, 0.7) * run.duration / kills)
        workers = run.system.sidecar_workers()
        if not workers:
            raise Finding("the sidecar supervisor has no worker to kill")
        victim = run.rng.choice(workers)
        kill9(victim)
        run.event("kill -9 sidecar worker", pid=victim)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current = run.system.sidecar_workers()
            if victim not in current and len(current) >= len(workers):
                run.event("sidecar worker restarted", workers=current)
                break
            await asyncio.sleep(0.2)
        else:
            raise Finding(f"the sidecar did not restart worker {victim} within 30 s")


async def _kill_child(run: Run, child: str) -> None:
    kills = max(1, int(run.duration // 15))
    for _ in range(kills):
        await asyncio.sleep(run.rng.uniform(0.2, 0.7) * run.duration / kills)
        pid = run.system.pid(child)
        kill9(pid)
        run.event(f"kill -9 {child}", pid=pid)
        new_pid = await run.system.wait_restarted(child, pid)
        run.event(f"{child} restarted by up", pid=new_pid)


async def scenario_kill_forwarder(run: Run) -> None:
    await _kill_child(run, "forwarder")


async def scenario_kill_relayer(run: Run) -> None:
    """kill -9 at a random moment; then at the worst one, right after a rail
    executed and before the relayer could record it (the simulator's kill hook);
    then a hung relayer (SIGSTOP) whose leases expire: zombies for repair."""
    await _kill_child(run, "relayer")
    await asyncio.sleep(2.0)
    pid = run.system.pid("relayer")
    rail, base = run.rng.choice(sorted(run.system.rails().items()))
    await _post_faults(base, {"kill_pid_on_execute": pid, "kill_count": 1})
    run.event("armed kill-after-execute", rail=rail, pid=pid)
    deadline = time.monotonic() + max(5.0, run.duration * 0.3)
    try:
        while time.monotonic() < deadline and _alive(pid):
            await asyncio.sleep(0.2)
    finally:
        await _post_faults(base, {"kill_pid_on_execute": 0, "kill_count": 0})
    if not _alive(pid):
        run.event("relayer killed by the rail right after an execution", rail=rail, pid=pid)
        run.event("relayer restarted by up", pid=await run.system.wait_restarted("relayer", pid))
    await _freeze_relayer(run)


async def _freeze_relayer(run: Run) -> None:
    """SIGSTOP the relayer while rails are slow (rows in flight), until repair
    has turned its expired leases into ZOMBIE incidents; then SIGCONT."""
    url = run.system.database_url
    rails = run.system.rails()
    for base in rails.values():
        await _post_faults(base, {"latency_ms_median": 400.0, "latency_ms_p99": 800.0})
    pid = 0
    try:
        await asyncio.sleep(2.0)
        pid = run.system.pid("relayer")
        os.kill(pid, signal.SIGSTOP)
        rows = await _query(url, "SELECT count(*) AS n, max(lease_expires_at) AS until FROM payment_outbox "
                                 "WHERE status = 'IN_FLIGHT' AND lease_owner IS NOT NULL")
        held, until = rows[0]["n"], rows[0]["until"]
        run.event("relayer frozen (SIGSTOP)", pid=pid, rows_in_flight=held)
        if held:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rows = await _query(url, "SELECT count(*) AS n FROM repair_incidents WHERE kind = 'ZOMBIE' "
                                         "AND detected_at >= $1", run.since)
                left = await _query(url, "SELECT count(*) AS n FROM payment_outbox WHERE status = 'IN_FLIGHT' "
                                         "AND lease_expires_at <= $1", until)
                if rows[0]["n"] and not left[0]["n"]:
                    run.event("zombies re-queued by repair", incidents=rows[0]["n"])
                    break
                await asyncio.sleep(0.5)
            else:
                run.problems.append("kill-relayer: repair did not re-queue the hung relayer's expired leases "
                                    "within 60 s")
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            run.event("relayer resumed (SIGCONT)", pid=pid)
        for base in rails.values():
            await _post_faults(base, {"latency_ms_median": 0.0, "latency_ms_p99": 0.0})


async def scenario_kill_repair_leader(run: Run) -> None:
    url = run.system.database_url
    standby: subprocess.Popen[bytes] | None = _start_standby_repair(run.system)
    assert standby is not None
    run.event("started a standby repair instance", pid=standby.pid, instance=STANDBY_ID)
    try:
        await _wait_for(lambda: _instance_role(url, STANDBY_ID), ("STANDBY", "LEADER"), 30,
                        "the standby repair instance did not register")
        await run.sleep_random(0.2, 0.5)
        leader, pid = await _repair_leader(run.system, standby.pid)
        killed_at = await _db_now(url)
        kill9(pid)
        run.event("kill -9 repair leader", instance=leader, pid=pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # The standby or the victim restarted by `up` (same instance id, new
            # process): whichever takes the lock first starts a new term.
            rows = await _query(url, "SELECT instance_id, became_leader_at FROM repair_instances "
                                     "WHERE role = 'LEADER' AND became_leader_at > $1", killed_at)
            if rows:
                run.event("leader taken over", instance=rows[0]["instance_id"],
                          after_seconds=round((rows[0]["became_leader_at"] - killed_at).total_seconds(), 3))
                break
            await asyncio.sleep(0.2)
        else:
            raise Finding(f"no repair instance took over within 30 s after the leader {leader} was killed")
        if standby.pid != pid:
            await run.system.wait_restarted("repair", pid)
        else:
            standby = None  # it was the victim
        await asyncio.sleep(max(0.0, run.duration - (time.monotonic() - run.started)) * 0.5)
    finally:
        if standby is not None and standby.poll() is None:
            standby.terminate()
            try:
                await asyncio.to_thread(standby.wait, 20)
            except subprocess.TimeoutExpired:
                standby.kill()
                standby.wait()
            run.event("standby repair instance stopped", pid=standby.pid)


STANDBY_ID = f"chaos-standby-{os.getpid()}"


def _start_standby_repair(system: System) -> subprocess.Popen[bytes]:
    """A second repair instance (ours: stopped at the end of the scenario)."""
    log = open(system.data_dir / "logs" / "chaos-repair-standby.log", "ab")  # noqa: SIM115
    env = {**CHAOS_SETTINGS, **os.environ, "SYMPHONY_REPAIR_METRICS_PORT": "0",
           "SYMPHONY_REPAIR_INSTANCE_ID": STANDBY_ID}
    process = subprocess.Popen([sys.executable, "-m", "symphony", "repair", "--database-url", system.database_url],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    log.close()
    return process


async def _instance_role(url: str, instance: str) -> str | None:
    rows = await _query(url, "SELECT role FROM repair_instances WHERE instance_id = $1", instance)
    return rows[0]["role"] if rows else None


async def _wait_for(probe: Any, wanted: tuple[str, ...], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe() in wanted:
            return
        await asyncio.sleep(0.3)
    raise Finding(message)


async def _repair_leader(system: System, standby_pid: int) -> tuple[str, int]:
    """(instance id, pid) of the instance holding the leader lock."""
    candidates = {_environ_of(pid).get("SYMPHONY_REPAIR_INSTANCE_ID", ""): pid
                  for pid in (system.pid("repair"), standby_pid)}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = await _query(system.database_url, "SELECT a.application_name FROM pg_locks l "
                                                 "JOIN pg_stat_activity a ON a.pid = l.pid "
                                                 "WHERE l.locktype = 'advisory' AND l.granted "
                                                 "AND a.application_name LIKE 'symphony-repair:%'")
        for row in rows:
            instance = row["application_name"].split(":", 1)[1]
            if instance in candidates:
                return instance, candidates[instance]
        await asyncio.sleep(0.3)
    raise Finding(f"no repair instance holds the leader lock (instances {sorted(candidates)})")


async def scenario_pg_restart(run: Run) -> None:
    from symphony.embedded import EmbeddedState

    state = EmbeddedState.read(run.system.data_dir)
    if state is None:
        raise NotSetUp("pg-restart needs the embedded PostgreSQL of `symphony up` (no embedded-db.json)")
    pgdata = Path(state.pgdata)
    await run.sleep_random(0.2, 0.4)
    before = _postmaster_pid(pgdata)
    await asyncio.to_thread(_pg_ctl, pgdata, "-m", "immediate", "-w", "stop")
    run.event("PostgreSQL stopped (-m immediate)", postmaster=before)
    await asyncio.sleep(run.rng.uniform(2.0, max(2.5, 0.25 * run.duration)))
    await asyncio.to_thread(_pg_ctl, pgdata, "-l", str(pgdata / "server.log"), "-w", "-t", "60", "start")
    after = _postmaster_pid(pgdata)
    run.event("PostgreSQL started", postmaster=after)
    if before == after:
        run.problems.append("pg-restart: the postmaster pid did not change")


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _pg_ctl(pgdata: Path, *args: str) -> None:
    from symphony.embedded import ROOT_RUN_AS, bin_dir

    result = subprocess.run([str(bin_dir() / "pg_ctl"), "-D", str(pgdata), *args],
                            user=ROOT_RUN_AS if os.geteuid() == 0 else None, cwd="/",
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=120)
    if result.returncode != 0:
        raise Finding(f"pg_ctl {' '.join(args)} failed: {result.stdout.strip()[-500:]}")


async def _post_faults(base: str, faults: dict[str, Any]) -> None:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.post(base + "/_sim/faults", json=faults) as response:
            if response.status != 200:
                raise Finding(f"{base}/_sim/faults refused {faults}: {await response.text()}")


async def scenario_rail_down(run: Run) -> None:
    rail, base = run.rng.choice(sorted(run.system.rails().items()))
    await run.sleep_random(0.1, 0.25)
    await _post_faults(base, {"down": True})
    run.event("rail down", rail=rail)
    try:
        await run.sleep_random(0.35, 0.5)
    finally:
        await _post_faults(base, {"down": False})
        run.event("rail up", rail=rail)


async def scenario_disk_full(run: Run) -> None:
    root = run.system.journal_root()
    if not os.path.ismount(root):
        raise NotSetUp(f"disk-full fills the journal's filesystem: mount a small one of its own at {root} "
                       f"before `symphony up` (e.g. mount -t tmpfs -o size=16m tmpfs {root})")
    fs = os.statvfs(root)
    if fs.f_blocks * fs.f_frsize > DISK_FULL_FILESYSTEM_MAX_BYTES:
        raise NotSetUp(f"{root} is a filesystem of {fs.f_blocks * fs.f_frsize} bytes; disk-full fills it, so it "
                       f"must be at most {DISK_FULL_FILESYSTEM_MAX_BYTES} bytes")
    ballast = root / BALLAST_NAME
    await run.sleep_random(0.1, 0.2)
    refusals_before = sum(1 for s in run.load.sent if s.error == "journal_full")
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    run.event("filling the journal filesystem", free_bytes=fs.f_bavail * fs.f_frsize)
    filler = _Filler(run)
    try:
        # The journal refuses only when it needs a segment it cannot allocate:
        # cheap attested requests (an unrouted path, answered 404 by the
        # sidecar) use up the segments already allocated.
        filler_task = asyncio.create_task(filler.run())
        hold_until = time.monotonic() + max(3.0, 0.3 * run.duration)
        deadline = time.monotonic() + max(30.0, run.duration)
        while time.monotonic() < deadline:
            _top_up(fd, root)  # segments the forwarder releases are taken at once
            paced = sum(1 for s in run.load.sent if s.error == "journal_full") - refusals_before
            if filler.refused and paced and time.monotonic() >= hold_until:
                break
            await asyncio.sleep(0.05)
        filler.stop = True
        await filler_task
    finally:
        filler.stop = True
        os.close(fd)
        ballast.unlink(missing_ok=True)
        run.event("journal filesystem freed")
    freed_at = len(run.load.sent)
    refused = sum(1 for s in run.load.sent if s.error == "journal_full") - refusals_before
    run.event("refused with journal_full", payments=refused, filler=filler.refused, filler_sent=filler.sent)
    if refused == 0:
        run.problems.append("disk-full: no payment was refused with journal_full while the disk was full")
    await asyncio.sleep(3.0)
    after = [s for s in run.load.sent[freed_at:] if s.status and s.status < 500]
    if not after:
        run.problems.append("disk-full: no request succeeded after the journal's filesystem was freed")


class _Filler:
    """Authenticated requests to a path no route serves: attested (INGRESS +
    OUTCOME) and answered 404 by the sidecar, never forwarded."""

    def __init__(self, run: Run) -> None:
        self.run_ = run
        self.stop = False
        self.sent = 0
        self.refused = 0

    async def run(self) -> None:
        import aiohttp

        load = self.run_.load
        participant = next(iter(load.tokens))
        headers = {"Authorization": f"Bearer {load.tokens[participant]}"}
        url = self.run_.system.target.rstrip("/") + "/v1/chaos-filler"

        async def one(session: aiohttp.ClientSession) -> None:
            while not self.stop and self.sent < 50_000:
                self.sent += 1
                try:
                    async with session.post(url, data=b"{}", headers=headers) as response:
                        body = await response.read()
                        if response.status == 503 and b"journal_full" in body:
                            self.refused += 1
                            await asyncio.sleep(0.05)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    await asyncio.sleep(0.05)

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            await asyncio.gather(*(one(session) for _ in range(8)))


def _top_up(fd: int, root: Path) -> None:
    fs = os.statvfs(root)
    free = fs.f_bavail * fs.f_frsize
    if free <= 0:
        return
    size = os.fstat(fd).st_size
    with contextlib.suppress(OSError):
        os.posix_fallocate(fd, size, free)
        return
    # fallocate refused the exact size (rounding): take what is left page by page
    step = 1 << 16
    while step >= 4096:
        try:
            os.posix_fallocate(fd, os.fstat(fd).st_size, step)
        except OSError:
            step //= 2


async def scenario_clock_back(run: Run) -> None:
    clock = run.system.data_dir.joinpath(*CLOCK_FILE)
    previous = clock.read_text().strip() if clock.exists() else "0"
    base = int(previous or 0)
    refused_before = sum(1 for s in run.load.sent if s.error == "CLOCK_BACKWARDS")
    try:
        await run.sleep_random(0.1, 0.2)
        _write_atomic(clock, str(base - 200))
        run.event("clock stepped back 200 ms (inside the HLC bound)")
        await run.sleep_random(0.15, 0.25)
        _write_atomic(clock, str(base - 3000))
        run.event("clock stepped back 3 s (beyond the HLC bound)")
        await asyncio.sleep(max(4.0, 0.3 * run.duration))
    finally:
        _write_atomic(clock, previous or "0")
        run.event("clock restored")
    refused = sum(1 for s in run.load.sent if s.error == "CLOCK_BACKWARDS") - refused_before
    run.event("requests refused with CLOCK_BACKWARDS", count=refused)
    if refused == 0:
        run.problems.append("clock-back: a 3 s step back refused no request (is up.toml `chaos = true`?)")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


SCENARIO_FUNCTIONS = {
    "blackhole": scenario_blackhole,
    "double-tap": scenario_double_tap,
    "kill-sidecar-worker": scenario_kill_sidecar_worker,
    "kill-forwarder": scenario_kill_forwarder,
    "kill-relayer": scenario_kill_relayer,
    "kill-repair-leader": scenario_kill_repair_leader,
    "pg-restart": scenario_pg_restart,
    "rail-down": scenario_rail_down,
    "disk-full": scenario_disk_full,
    "clock-back": scenario_clock_back,
}


async def scenario_mixed(run: Run) -> None:
    """The soak: random scenarios back to back, each for a slice of the duration."""
    end = run.started + run.duration
    total = run.duration
    names = [n for n in SCENARIOS if n != "disk-full" or os.path.ismount(run.system.journal_root())]
    while end - time.monotonic() > 20:
        name = run.rng.choice(names)
        run.duration = min(run.rng.uniform(15, 60), end - time.monotonic() - 5)
        run.event("scenario", name=name, seconds=round(run.duration, 1))
        try:
            await SCENARIO_FUNCTIONS[name](run)
        except Finding as finding:
            run.problems.append(f"{name}: {finding}")
    run.duration = total
    # several faults overlap in time: other incidents and ghosts are expected beside the blackhole's
    run.expect.exclusive_incidents = run.expect.exact_ghosts = False


# -- a run ------------------------------------------------------------------------------------------------


async def run_scenario(system: System, name: str, duration: float, *, rate: float, concurrency: int,
                       seed: int, quiesce_timeout: float) -> dict[str, Any]:
    rng = random.Random(seed)
    since = await _db_now(system.database_url)
    load = Load(system, rate=rate, concurrency=concurrency, rng=random.Random(rng.random()))
    run = Run(system=system, duration=duration, rng=rng, load=load, since=since)
    function = scenario_mixed if name == MIXED else SCENARIO_FUNCTIONS[name]
    # load runs a little beyond the fault so recovery is exercised under load too
    load_task = asyncio.create_task(load.run(duration + 2.0))
    try:
        await function(run)
    except Finding as finding:
        run.problems.append(f"{name}: {finding}")
    finally:
        await load_task
    run.event("load stopped", **load.summary())
    run.expect.refused |= load.refused_keys("journal_full", "CLOCK_BACKWARDS")
    notes: list[str] = []
    await quiesce(system, timeout=quiesce_timeout, grace_seconds=_grace_seconds(), notes=notes)
    run.event("quiescent", notes=notes)
    result = await check_invariants(system, since, run.expect)
    findings = result["findings"]
    if run.problems:
        findings.setdefault("scenario", []).extend(run.problems)
    return {"scenario": name, "duration_seconds": duration, "seed": seed, "since": since.isoformat(),
            "ok": not findings, "findings": findings, "measures": result["measures"],
            "load": load.summary(), "events": run.events, "notes": notes}


def _setting(name: str) -> float:
    """A chaos setting as the running system got it (the environment wins, as in `up`)."""
    try:
        return float(os.environ.get(name) or CHAOS_SETTINGS[name])
    except ValueError:
        return float(CHAOS_SETTINGS[name])


def _grace_seconds() -> float:
    """The longest repair grace period the running system uses (ghost, outcome, stuck key)."""
    return max(_setting(n) for n in ("SYMPHONY_REPAIR_GHOST_GRACE_SECONDS", "SYMPHONY_REPAIR_OUTCOME_GRACE_SECONDS",
                                     "SYMPHONY_REPAIR_STUCK_KEY_SECONDS")) + 1.0


async def check_only(system: System, since: dt.datetime | None, quiesce_timeout: float) -> dict[str, Any]:
    notes: list[str] = []
    await quiesce(system, timeout=quiesce_timeout, grace_seconds=_grace_seconds(), notes=notes)
    since = since or dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    result = await check_invariants(system, since, Expect())
    return {"scenario": None, "since": since.isoformat(), "ok": not result["findings"], **result, "notes": notes}


# -- CLI ----------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from symphony.arguments import add_database_arguments

    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="inject one failure scenario under load, then check the invariants")
    run.add_argument("--scenario", required=True, choices=[*SCENARIOS, MIXED])
    run.add_argument("--duration", type=float, default=20.0, help="seconds of load with the fault (default 20)")
    run.add_argument("--rate", type=float, default=25.0, help="requests per second of load (default 25)")
    run.add_argument("--concurrency", type=int, default=4, help="requests in flight at most (default 4)")
    run.add_argument("--seed", type=int, help="random seed (default: random, printed in the report)")
    run.add_argument("--quiesce-timeout", type=float, default=120.0,
                     help="longest wait for the system to settle after the fault (default 120 s)")
    run.add_argument("--report", metavar="FILE", help="also write the JSON report here")
    add_database_arguments(run)
    check = sub.add_parser("check", help="quiesce, then check the invariants (no fault, no load)")
    check.add_argument("--since", help="ISO time: incidents detected since then count (default: all)")
    check.add_argument("--quiesce-timeout", type=float, default=120.0)
    check.add_argument("--report", metavar="FILE")
    add_database_arguments(check)
    env = sub.add_parser("env", help="print the settings `symphony up` gives its children with chaos = true")
    add_database_arguments(env)


def run(args: argparse.Namespace) -> int:
    data_dir = dsn.data_dir_from(args.data_dir).resolve()
    if args.action == "env":
        for key, value in child_environment(data_dir).items():
            print(f"{key}={value}")
        return EXIT_OK
    system = System(data_dir, dsn.resolve(flag_url=args.database_url, flag_data_dir=str(data_dir)))
    if args.action == "check":
        since = dt.datetime.fromisoformat(args.since) if args.since else None
        report = asyncio.run(check_only(system, since, args.quiesce_timeout))
    else:
        if not 1 <= args.duration <= 86_400 or not 0.1 <= args.rate <= 1000 or not 1 <= args.concurrency <= 256:
            raise SymphonyError("--duration must be in [1, 86400], --rate in [0.1, 1000], --concurrency in [1, 256]",
                                exit_code=EXIT_USAGE)
        system.state()  # a running `symphony up`, or a clear error
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
        report = asyncio.run(run_scenario(system, args.scenario, args.duration, rate=args.rate,
                                          concurrency=args.concurrency, seed=seed,
                                          quiesce_timeout=args.quiesce_timeout))
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.report:
        Path(args.report).write_text(text + "\n")
    return EXIT_OK if report["ok"] else EXIT_FINDINGS
