"""The repair daemon's loop: elect, detect, record, resolve, sleep; repeat.

`run_cycle` is one pass of every detector on one connection (tests call it
directly); `serve` owns leadership, pacing, metrics and shutdown.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from prometheus_client import CollectorRegistry, Counter, Gauge

from repair import detectors, oncall, statements, store, verify
from repair.config import RepairConfig
from repair.leader import Leadership
from symphony import archive_signature, lifecycle
from symphony.db import RETRYABLE_ERRORS, create_pool
from symphony.errors import StartupError, SymphonyError

log = logging.getLogger("repair")
CHAIN_BATCHES_PER_CYCLE = 4
WATCHDOG_LOOP = "cycle"


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class CycleResult:
    opened: dict[str, int] = field(default_factory=dict)
    refreshed: dict[str, int] = field(default_factory=dict)
    resolved: dict[str, int] = field(default_factory=dict)
    actions: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class CycleState:
    """What one leader carries from cycle to cycle."""

    last_full_verify: float = float("-inf")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.cycles = Counter("symphony_repair_cycles", "Repair cycles run as leader", registry=self.registry)
        self.errors = Counter("symphony_repair_detector_errors", "Detector failures (retried next cycle)",
                              ["kind"], registry=self.registry)
        self.opened = Counter("symphony_repair_incidents_opened", "Incidents opened", ["kind"],
                              registry=self.registry)
        self.resolved = Counter("symphony_repair_incidents_auto_resolved", "Incidents resolved automatically",
                                ["kind"], registry=self.registry)
        self.leader = Gauge("symphony_repair_leader", "1 while this instance is the leader", registry=self.registry)
        self.takeovers = Counter("symphony_repair_leader_acquired", "Times this instance became leader",
                                 registry=self.registry)
        self.oncall = oncall.OnCallGauges(self.registry)


async def _run_detector(conn: asyncpg.Connection, settings: RepairConfig, found: detectors.Findings,
                        actor: str, result: CycleResult) -> None:
    opened, refreshed, resolved = await store.apply_findings(conn, found, actor)
    result.opened[found.kind] = opened
    result.refreshed[found.kind] = refreshed
    result.resolved[found.kind] = resolved
    if found.kind == "ZOMBIE" and settings.zombie_requeue and found.items:
        rows = await conn.fetch(store.QUERIES["requeue_zombies"], [f.dedup_key for f in found.items],
                                settings.zombie_grace_seconds, timeout=store.TIMEOUT_SECONDS)
        result.actions += await store.record_actions(
            conn, "ZOMBIE", [row["outbox_id"] for row in rows], "requeued_as_recovering",
            {"why": "lease expired; the relayer resends with the same rail key"}, actor)
    if found.kind == "STUCK_KEY" and settings.stuck_key_release and found.items:
        keys = [f.dedup_key for f in found.items if f.evidence.get("intent_id") is None]
        if keys:
            # Log first (the incident is open now), then release in the same transaction.
            async with conn.transaction():
                rows = await conn.fetch(store.QUERIES["release_stuck_keys"], keys, settings.stuck_key_seconds,
                                        timeout=store.TIMEOUT_SECONDS)
                result.actions += await store.record_actions(
                    conn, "STUCK_KEY", [row["dedup_key"] for row in rows], "released_key",
                    {"why": "in progress past the limit with nothing executed; the client's retry executes once"},
                    actor)


@functools.cache
def archive_public_key(value: str) -> Ed25519PublicKey | None:
    """The pinned key archive rows must be signed with (None: archives are not trusted)."""
    return archive_signature.load_public_key(value) if value else None


async def chain_findings(conn: asyncpg.Connection, settings: RepairConfig, state: CycleState) -> detectors.Findings:
    """CHAIN_BREAK: verify what was shipped since the last cycle (all of it when a
    full pass is due), record progress, and report halted forwarders."""
    found = detectors.Findings("CHAIN_BREAK")
    full = time.monotonic() - state.last_full_verify >= settings.chain_full_verify_seconds
    progress = {(row["node_id"], row["stream_id"]): row
                for row in await conn.fetch(store.QUERIES["get_progress"], timeout=store.TIMEOUT_SECONDS)}
    for node_id, stream_id in await verify.list_streams(conn):
        previous = progress.get((node_id, stream_id))
        if full or previous is None:
            report = await verify.verify_stream(
                conn, node_id, stream_id, archive_key=archive_public_key(settings.archive_public_key))
        else:
            report = await verify.verify_increment(
                conn, node_id, stream_id, verified_seq=previous["verified_seq"],
                verified_hash=bytes(previous["verified_hash"]), batch_rows=settings.chain_batch_rows,
                batches_max=CHAIN_BATCHES_PER_CYCLE,
                verified_epoch=bytes(previous["epoch"]) if previous["epoch"] is not None else None,
                archive_key=archive_public_key(settings.archive_public_key))
        broken = report.broken
        await conn.execute(store.QUERIES["save_progress"], node_id, stream_id, report.last_verified_seq,
                           report.last_verified_hash, broken.seq if broken else None,
                           broken.reason if broken else None, report.epoch, timeout=store.TIMEOUT_SECONDS)
        if broken is not None:
            found.items.append(detectors.chain_break_finding(node_id, stream_id, broken,
                                                             "full" if full else "incremental"))
    if full:
        state.last_full_verify = time.monotonic()
    for row in await conn.fetch(store.QUERIES["detect_halted_streams"], timeout=store.TIMEOUT_SECONDS):
        found.items.append(detectors.Finding(
            kind="CHAIN_BREAK", dedup_key=f"{row['node_id']}/{row['stream_id']}/halted", severity="CRITICAL",
            subject=(f"forwarder halted stream {row['node_id']}/{row['stream_id']} after seq {row['last_seq']}: "
                     f"{row['halt_reason'] or 'no reason recorded'}"),
            evidence=detectors._plain(row), node_id=row["node_id"], stream_id=row["stream_id"]))
    return found


async def run_cycle(conn: asyncpg.Connection, settings: RepairConfig, actor: str,
                    state: CycleState | None = None,
                    progress: Callable[[], None] | None = None) -> CycleResult:
    """Run every detector once. A detector that fails is logged and retried next
    cycle; it never stops the others. `progress` is called after each detector
    (the systemd watchdog's beat: a detector stuck on a lock stops it)."""
    state = state or CycleState()
    result = CycleResult()
    beat = progress or (lambda: None)
    for detect in detectors.ROW_DETECTORS:
        beat()
        kind = detect.__name__
        try:
            await _run_detector(conn, settings, await detect(conn, settings), actor, result)
        except asyncpg.PostgresError as exc:
            log.error("detector %s failed: %s", kind, exc)
            result.errors.append(f"{kind}: {exc}")
    try:
        await _run_detector(conn, settings, await chain_findings(conn, settings, state), actor, result)
    except asyncpg.PostgresError as exc:
        log.error("chain verification failed: %s", exc)
        result.errors.append(f"chain: {exc}")
    if settings.reconcile_statement_dir:
        await _reconcile_statements(conn, settings, result)
    if settings.gap_statement_signing_key:
        beat()
        await _gap_statements(conn, settings, actor, result)
    beat()
    return result


async def _gap_statements(conn: asyncpg.Connection, settings: RepairConfig, actor: str, result: CycleResult) -> None:
    """Sign the closed windows' gap statements (repair/statements.py); retried next cycle on failure."""
    try:
        await statements.sign_due(conn, settings, actor)
    except (asyncpg.PostgresError, OSError, ValueError, SymphonyError) as exc:  # ValueError: a body refused
        log.error("gap statements not signed: %s", exc)
        result.errors.append(f"gap_statements: {exc}")


async def _reconcile_statements(conn: asyncpg.Connection, settings: RepairConfig, result: CycleResult) -> None:
    """The scheduled part of repair/reconcile.py: new statement files, each once."""
    from pathlib import Path

    from repair import reconcile

    try:
        reports = await reconcile.reconcile_directory(conn, Path(settings.reconcile_statement_dir),
                                                      settings.reconcile_rails)
    except (asyncpg.PostgresError, reconcile.StatementError, OSError) as exc:
        log.error("statement reconciliation failed: %s", exc)
        result.errors.append(f"reconcile: {exc}")
        return
    for report in reports:
        log.info("statement reconciled", extra={"rail": report.rail, "source": report.source, "lines": report.lines,
                                                "matched": report.matched, "unmatched": report.unmatched,
                                                "mismatched": report.mismatched, "missing": report.missing})


async def serve(settings: RepairConfig, dsn: str, shutdown: lifecycle.Shutdown) -> int:
    """Elect, then run cycles until asked to stop."""
    instance_id = settings.instance_id or default_instance_id()
    actor = f"repair:{instance_id}"
    if settings.gap_statement_signing_key:  # an unusable key is a configuration error, found at start
        statements.load_signer(settings.gap_statement_signing_key, settings.gap_statement_key_name)
    metrics = Metrics()
    pool = await create_pool(dsn, min_size=1, max_size=2)
    leadership = Leadership(dsn, settings.leader_lock_key, instance_id)
    state = CycleState()
    # The loop below feeds systemd's watchdog: a cycle stuck on the database stops the pings.
    watchdog = lifecycle.Watchdog()

    async def database_ready() -> tuple[bool, str]:
        try:
            async with pool.acquire(timeout=store.TIMEOUT_SECONDS) as conn:
                await conn.fetchval("SELECT 1", timeout=store.TIMEOUT_SECONDS)
        except RETRYABLE_ERRORS as exc:
            return False, f"database unreachable: {type(exc).__name__}: {exc}"
        return True, "ok"

    async def loop_ready() -> tuple[bool, str]:
        stalled = watchdog.stalled()
        if stalled:
            return False, f"the reconciliation loop has made no progress for over {watchdog.stall_seconds:g} s"
        return True, "leader" if leadership.held else "standby"

    try:
        admin = await lifecycle.start_admin_server(settings.metrics_host, settings.metrics_port, metrics.registry,
                                                   readiness={"database": database_ready, "loop": loop_ready})
    except OSError as exc:
        await pool.close()
        raise StartupError(f"cannot listen on {settings.metrics_host}:{settings.metrics_port} for /metrics: "
                           f"{exc.strerror or exc}") from None
    log.info("repair started", extra={"instance_id": instance_id, "admin_port": lifecycle.bound_port(admin)})
    lifecycle.sd_notify("READY=1")
    try:
        while not shutdown.requested.is_set():
            watchdog.beat(WATCHDOG_LOOP)
            if not leadership.held:
                if not await leadership.try_acquire():
                    await _report_role(pool, instance_id, "STANDBY")
                    await watchdog.wait(WATCHDOG_LOOP, shutdown.requested, settings.leader_retry_seconds)
                    continue
                metrics.leader.set(1)
                metrics.takeovers.inc()
                state = CycleState()
                await _report_takeover(pool, instance_id)
                log.info("became leader", extra={"instance_id": instance_id})
            elif not await leadership.still_leader():
                metrics.leader.set(0)
                metrics.oncall.clear()
                log.warning("lost leadership", extra={"instance_id": instance_id})
                continue
            await _leader_cycle(pool, settings, actor, instance_id, state, metrics,
                                lambda: watchdog.beat(WATCHDOG_LOOP))
            await watchdog.wait(WATCHDOG_LOOP, shutdown.requested, settings.cycle_seconds)
    finally:
        await leadership.release()
        await _report_role(pool, instance_id, "STOPPED")
        await pool.close()
        await admin.cleanup()
    return 0


async def _leader_cycle(pool: asyncpg.Pool, settings: RepairConfig, actor: str, instance_id: str,
                        state: CycleState, metrics: Metrics, progress: Callable[[], None]) -> None:
    started = time.monotonic()
    try:
        async with pool.acquire() as conn:
            result = await run_cycle(conn, settings, actor, state, progress)
            elapsed_ms = int((time.monotonic() - started) * 1000)
            await store.set_instance_status(conn, instance_id, "LEADER", cycle_at=dt.datetime.now(dt.timezone.utc),
                                            cycle_ms=elapsed_ms, error="; ".join(result.errors) or None)
            if metrics.oncall.due(settings.oncall_metrics_seconds):
                try:
                    await metrics.oncall.refresh(conn)
                except asyncpg.PostgresError as exc:
                    # Stale gauges show in _oncall_refreshed_timestamp_seconds; retried next cycle.
                    log.error("on-call gauges not refreshed: %s", exc)
                    metrics.errors.labels("oncall").inc()
    except RETRYABLE_ERRORS as exc:
        # The database went away mid-cycle: the next cycle retries (the pool reconnects).
        log.error("repair cycle failed: %s", exc or type(exc).__name__)
        metrics.errors.labels("cycle").inc()
        return
    metrics.cycles.inc()
    for kind, count in result.opened.items():
        metrics.opened.labels(kind).inc(count)
    for kind, count in result.resolved.items():
        metrics.resolved.labels(kind).inc(count)
    for error in result.errors:
        metrics.errors.labels(error.split(":", 1)[0]).inc()
    if any(result.opened.values()) or any(result.resolved.values()) or result.actions:
        log.info("repair cycle", extra={"opened": result.opened, "resolved": result.resolved,
                                        "actions": result.actions})


async def _report_takeover(pool: asyncpg.Pool, instance_id: str) -> None:
    try:
        async with pool.acquire(timeout=store.TIMEOUT_SECONDS) as conn:
            await store.set_instance_took_over(conn, instance_id)
    except RETRYABLE_ERRORS as exc:
        log.warning("could not record the takeover: %s", exc or type(exc).__name__)


async def _report_role(pool: asyncpg.Pool, instance_id: str, role: str) -> None:
    try:
        async with pool.acquire(timeout=store.TIMEOUT_SECONDS) as conn:
            await store.set_instance_status(conn, instance_id, role)
    except RETRYABLE_ERRORS as exc:
        log.warning("could not record role %s: %s", role, exc or type(exc).__name__)
