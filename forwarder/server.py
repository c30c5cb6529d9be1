"""The forwarder's lifecycle: start-up, stream discovery, shipping, graceful stop.

Start-up (exit code 3 on failure): connect to PostgreSQL (waiting up to
startup_database_wait_seconds), ensure the attestation partitions, load the
node's checkpoints, serve /healthz, /readyz and /metrics, tell systemd READY=1.
Main loop: list <journal_dir>/<node_id>/ for streams every
discovery_interval_seconds and run one shipper per stream; ensure partitions
every partition_interval_seconds. On SIGTERM the shippers finish the batch in
flight and stop; past shutdown_timeout_seconds they are cancelled, which rolls
their open transactions back (a batch is all or nothing, never half).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from forwarder.config import ForwarderConfig
from forwarder.publisher import Publisher
from forwarder.retention import Retainer
from forwarder.store import TRANSIENT_ERRORS, Checkpoint, Store
from forwarder.stream import Source, StreamShipper, StreamState
from forwarder.tree import TreeKeeper
from symphony import db, lifecycle
from symphony.errors import StartupError

log = logging.getLogger("forwarder")
STREAM_ID_MAX = 1023

SourceFactory = Callable[[int, Path], Source]


class Forwarder:
    """Owns the pool, the shippers and the maintenance timers of one node."""

    def __init__(self, settings: ForwarderConfig, store: Store, source_factory: SourceFactory) -> None:
        self.settings = settings
        self.store = store
        self.source_factory = source_factory
        self.stopping = asyncio.Event()
        self.states: dict[int, StreamState] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.checkpoints: dict[int, Checkpoint] = {}
        self.skipped_entries: set[str] = set()
        self.last_partition_check = 0.0
        self.crashed: BaseException | None = None
        # systemd's watchdog, fed by the maintenance loop and by every stream's
        # shipper: one of them stuck (a lock, a hung connection) stops the pings.
        self.watchdog = lifecycle.Watchdog(self.healthy)
        self.publisher: Publisher | None = None  # set by serve() when witnesses are configured
        self.retainer: Retainer | None = None  # set by serve()

    # -- discovery --------------------------------------------------------------

    def discover(self) -> list[tuple[int, Path]]:
        """Stream directories under the node's journal dir, by stream id."""
        root = self.settings.node_journal_dir()
        try:
            entries = sorted(root.iterdir())
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            name = entry.name
            if not entry.is_dir():
                continue
            if not (name.isdigit() and str(int(name)) == name and int(name) <= STREAM_ID_MAX):
                if name not in self.skipped_entries:
                    self.skipped_entries.add(name)
                    log.warning("not a stream directory; ignored", extra={"path": str(entry)})
                continue
            found.append((int(name), entry))
        return found

    def start_new_streams(self) -> None:
        for stream_id, path in self.discover():
            if stream_id in self.tasks:
                continue
            if len(self.tasks) >= self.settings.streams_max:
                log.error("streams_max reached; stream not shipped",
                          extra={"stream_id": stream_id, "streams_max": self.settings.streams_max})
                continue
            state = self.states.setdefault(stream_id, StreamState(stream_id))
            shipper = StreamShipper(stream_id, self.source_factory(stream_id, path), self.store,
                                    self.settings, state, self.stopping, self.watchdog)
            checkpoint = self.checkpoints.get(stream_id)
            self.tasks[stream_id] = asyncio.create_task(shipper.run(checkpoint), name=f"stream-{stream_id}")
            self.tasks[stream_id].add_done_callback(self._shipper_done)
            log.info("shipping stream", extra={"stream_id": stream_id, "path": str(path),
                                               "from_seq": (checkpoint.last_seq if checkpoint else 0) + 1})

    def _shipper_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # A bug, not an operating error: stop the daemon so systemd restarts it
            # from the checkpoints instead of leaving a stream silently unshipped.
            log.critical("stream shipper crashed", exc_info=exc, extra={"task": task.get_name()})
            self.crashed = exc
            self.stopping.set()

    def _publisher_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.critical("witness publisher crashed", exc_info=task.exception())
        self.crashed = task.exception()
        self.stopping.set()

    def retained_streams(self) -> list[tuple[int, Path, int]]:
        """(stream id, directory, shipped seq) of every stream with a shipper: what retention looks at."""
        paths = dict(self.discover())
        return [(stream_id, paths[stream_id], state.shipped_seq)
                for stream_id, state in sorted(self.states.items()) if stream_id in paths]

    def _retainer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.critical("retention crashed", exc_info=task.exception())
        self.crashed = task.exception()
        self.stopping.set()

    # -- maintenance --------------------------------------------------------------

    async def ensure_partitions(self) -> None:
        today = dt.datetime.now(dt.timezone.utc).date()
        created = await self.store.ensure_partitions(
            today - dt.timedelta(days=1), today + dt.timedelta(days=self.settings.partition_days_ahead))
        self.last_partition_check = time.monotonic()
        if created:
            log.info("attestation partitions created", extra={"count": created})

    async def maintain(self) -> None:
        """Discovery and partitions on their own timers until stopping."""
        while not self.stopping.is_set():
            self.watchdog.beat("maintenance")
            self.start_new_streams()
            if time.monotonic() - self.last_partition_check >= self.settings.partition_interval_seconds:
                try:
                    await self.ensure_partitions()
                except TRANSIENT_ERRORS as exc:
                    # Inserts also create a missing partition on demand; try again next tick.
                    log.warning("partition maintenance failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            await self.watchdog.wait("maintenance", self.stopping, self.settings.discovery_interval_seconds)

    async def drain(self) -> None:
        """Let every shipper finish its batch in flight, then cancel what remains."""
        self.stopping.set()
        tasks = list(self.tasks.values())
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout_seconds)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("shutdown timeout: batches in flight cancelled (rolled back)",
                        extra={"streams": [task.get_name() for task in pending]})
            await asyncio.wait(pending, timeout=5.0)

    def healthy(self) -> bool:
        return self.crashed is None


class ForwarderCollector(Collector):
    """Per-stream lag and totals, computed at scrape time from the shippers' state."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder

    def collect(self) -> Iterator[Metric]:
        node = self.forwarder.settings.node_id
        labels = ["node_id", "stream_id"]
        now = time.time()
        families: dict[str, Any] = {
            "lag_records": GaugeMetricFamily("symphony_forwarder_lag_records",
                                             "Records in the journal not yet checkpointed in PostgreSQL", labels=labels),
            "lag_seconds": GaugeMetricFamily("symphony_forwarder_lag_seconds",
                                             "Age of the oldest record not yet checkpointed", labels=labels),
            "shipped_seq": GaugeMetricFamily("symphony_forwarder_checkpoint_seq",
                                             "Last seq checkpointed in PostgreSQL", labels=labels),
            "halted": GaugeMetricFamily("symphony_forwarder_stream_halted",
                                        "1 when the stream is halted by an incident", labels=labels),
            "retrying": GaugeMetricFamily("symphony_forwarder_stream_retrying",
                                          "1 while the stream waits for PostgreSQL", labels=labels),
            "records": CounterMetricFamily("symphony_forwarder_records_shipped",
                                           "Records shipped by this process", labels=labels),
            "batches": CounterMetricFamily("symphony_forwarder_batches_shipped",
                                           "Batches committed by this process", labels=labels),
            "errors": CounterMetricFamily("symphony_forwarder_database_errors",
                                          "Transient database failures (each followed by a retry)", labels=labels),
            "moved_back": CounterMetricFamily("symphony_forwarder_checkpoint_moved_back",
                                              "Resumes from a checkpoint below what this process had committed "
                                              "(PostgreSQL lost commits or was restored): re-shipped from it",
                                              labels=labels),
        }
        yield from self._tlog(node, now)
        yield from self._retention(node)
        for stream_id, state in sorted(self.forwarder.states.items()):
            values = [node, str(stream_id)]
            families["lag_records"].add_metric(values, state.lag_records())
            families["lag_seconds"].add_metric(values, state.lag_seconds(now))
            families["shipped_seq"].add_metric(values, state.shipped_seq)
            families["halted"].add_metric(values, 1 if state.halted else 0)
            families["retrying"].add_metric(values, 1 if state.retrying else 0)
            families["records"].add_metric(values, state.records_shipped)
            families["batches"].add_metric(values, state.batches_shipped)
            families["errors"].add_metric(values, state.database_errors)
            families["moved_back"].add_metric(values, state.checkpoint_moved_back)
        yield from families.values()


    def _retention(self, node: str) -> Iterator[Metric]:
        """Retention under witnessed checkpoints (forwarder/retention.py)."""
        retainer = self.forwarder.retainer
        if retainer is None:
            return
        labels = ["node_id", "stream_id"]
        waiting = GaugeMetricFamily("symphony_forwarder_retention_waiting_segments",
                                    "Shipped, old-enough segments kept because no checkpoint covering them has the "
                                    "required witness cosignatures yet", labels=labels)
        released = CounterMetricFamily("symphony_forwarder_retention_released_segments",
                                       "Segments deleted under a witnessed checkpoint, each recorded first",
                                       labels=labels)
        stats = retainer.stats
        for stream_id in sorted(set(stats.waiting_segments) | set(stats.released_segments)):
            values = [node, str(stream_id)]
            waiting.add_metric(values, stats.waiting_segments.get(stream_id, 0))
            released.add_metric(values, stats.released_segments.get(stream_id, 0))
        yield from (waiting, released)

    def _tlog(self, node: str, now: float) -> Iterator[Metric]:
        """The verifiable log: checkpoints checked, cosignatures, refusals, freshness."""
        tree = self.forwarder.store.tree
        if tree is not None:
            checked = CounterMetricFamily("symphony_forwarder_log_checkpoints",
                                          "CHECKPOINT records checked against the shipped tree, by result",
                                          labels=["node_id", "result"])
            checked.add_metric([node, "valid"], tree.checkpoints_valid)
            checked.add_metric([node, "mismatch"], tree.checkpoints_mismatched)
            yield checked
        publisher = self.forwarder.publisher
        if publisher is None:
            return
        stats = publisher.stats
        cosigned = CounterMetricFamily("symphony_forwarder_witness_cosignatures",
                                       "Cosignatures received and stored, per witness", labels=["node_id", "witness"])
        refused = CounterMetricFamily("symphony_forwarder_witness_refusals",
                                      "Checkpoints a witness refused (each a CHECKPOINT_REFUSED incident)",
                                      labels=["node_id", "witness"])
        unavailable = CounterMetricFamily("symphony_forwarder_witness_unavailable",
                                          "Submissions that found the witness unreachable (retried)",
                                          labels=["node_id", "witness"])
        for _, witness in publisher.witnesses:
            values = [node, witness.name]
            cosigned.add_metric(values, stats.cosignatures.get(witness.name, 0))
            refused.add_metric(values, stats.refusals.get(witness.name, 0))
            unavailable.add_metric(values, stats.unavailable.get(witness.name, 0))
        fresh = GaugeMetricFamily("symphony_forwarder_witnessed_checkpoint_age_seconds",
                                  "Age of the newest checkpoint cosigned by a witness, per stream",
                                  labels=["node_id", "stream_id"])
        for stream_id, cut_at in sorted(stats.witnessed_cut_at.items()):
            fresh.add_metric([node, str(stream_id)], max(0.0, now - cut_at))
        ended = GaugeMetricFamily("symphony_forwarder_witness_ended_epochs_uncosigned",
                                  "Ended stream epochs (replaced journals) whose last checkpoint a witness has not "
                                  "cosigned yet, counted per witness", labels=["node_id"])
        ended.add_metric([node], stats.ended_epochs_uncosigned)
        yield from (cosigned, refused, unavailable, fresh, ended)


async def connect_pool(settings: ForwarderConfig, url: str) -> asyncpg.Pool:
    """The pool, waiting up to startup_database_wait_seconds for PostgreSQL."""
    deadline = time.monotonic() + settings.startup_database_wait_seconds
    delay = settings.retry_delay_ms_initial / 1000
    while True:
        try:
            return await db.create_pool(url, min_size=1, max_size=settings.database_connections_max)
        except StartupError as exc:
            if time.monotonic() + delay > deadline or "version" in exc.reason:
                raise
            log.warning("waiting for PostgreSQL", extra={"error": exc.reason})
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.retry_delay_ms_max / 1000)


async def serve(settings: ForwarderConfig, url: str, source_factory: SourceFactory) -> int:
    shutdown = lifecycle.Shutdown()
    shutdown.install()
    pool = await connect_pool(settings, url)
    try:
        tree = TreeKeeper(settings.node_id, origin_prefix=settings.log_origin_prefix,
                          log_key=settings.log_verifier(), timeout_seconds=settings.statement_timeout_seconds)
        store = Store(pool, settings.node_id, timeout_seconds=settings.statement_timeout_seconds, tree=tree)
        forwarder = Forwarder(settings, store, source_factory)
        if settings.witnesses:
            forwarder.publisher = Publisher(pool, settings, forwarder.stopping)
        forwarder.retainer = Retainer(pool, settings, forwarder.stopping, forwarder.retained_streams)
        try:
            await forwarder.ensure_partitions()
            forwarder.checkpoints = await store.load_checkpoints()
        except TRANSIENT_ERRORS as exc:
            raise StartupError(f"PostgreSQL failed during start-up: {type(exc).__name__}: {exc}") from None
        registry = CollectorRegistry()
        registry.register(ForwarderCollector(forwarder))
        runner = await _start_admin(settings, registry, store)
        try:
            return await _main_loop(forwarder, shutdown, lifecycle.bound_port(runner))
        finally:
            await runner.cleanup()
    finally:
        await asyncio.wait_for(pool.close(), timeout=10.0)


async def _start_admin(settings: ForwarderConfig, registry: CollectorRegistry, store: Store):  # type: ignore[no-untyped-def]
    async def database_ready() -> tuple[bool, str]:
        try:
            await store.ping()
        except TRANSIENT_ERRORS as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, "ok"

    try:
        return await lifecycle.start_admin_server(settings.admin_host, settings.admin_port, registry,
                                                  readiness={"database": database_ready})
    except OSError as exc:
        raise StartupError(f"cannot listen on {settings.admin_host}:{settings.admin_port}: {exc}") from None


async def _main_loop(forwarder: Forwarder, shutdown: lifecycle.Shutdown, admin_port: int) -> int:
    settings = forwarder.settings
    maintenance = asyncio.create_task(forwarder.maintain(), name="maintenance")
    publishing = asyncio.create_task(forwarder.publisher.run() if forwarder.publisher else asyncio.sleep(0),
                                     name="publisher")
    publishing.add_done_callback(forwarder._publisher_done)
    retaining = asyncio.create_task(forwarder.retainer.run() if forwarder.retainer else asyncio.sleep(0),
                                    name="retention")
    retaining.add_done_callback(forwarder._retainer_done)
    lifecycle.sd_notify("READY=1")
    log.info("forwarder ready", extra={"node_id": settings.node_id, "admin_port": admin_port,
                                       "journal_dir": str(settings.node_journal_dir()),
                                       "checkpoints": len(forwarder.checkpoints)})
    stop_waiter = asyncio.create_task(shutdown.wait())
    crash_waiter = asyncio.create_task(forwarder.stopping.wait())
    await asyncio.wait([stop_waiter, crash_waiter], return_when=asyncio.FIRST_COMPLETED)
    log.info("stopping: finishing batches in flight")
    await forwarder.drain()
    for task in (maintenance, publishing, retaining, stop_waiter, crash_waiter):
        task.cancel()
    await asyncio.gather(maintenance, publishing, retaining, stop_waiter, crash_waiter, return_exceptions=True)
    log.info("forwarder stopped")
    return 4 if forwarder.crashed is not None else 0
