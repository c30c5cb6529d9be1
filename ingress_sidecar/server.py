"""One sidecar worker process: its journal stream, its caches, its share of the port.

Lifecycle (symphony.lifecycle): start-up (exit 3 on failure), serve until
SIGTERM, then drain — stop accepting, let in-flight requests finish and write
their OUTCOMEs within shutdown_timeout_seconds, flush the journal, exit 0.
The listening socket is bound once, exclusively, by the supervisor and
inherited by every worker (`--listen-fd`): the workers accept from one shared
queue, and no other process can bind the port while the sidecar holds it (no
SO_REUSEPORT, which would let any process of the same user join the port and
take a share of the connections).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import zlib
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

import journal
from ingress_sidecar import metrics
from ingress_sidecar.attest import AttestationRefused, Attestor
from ingress_sidecar.config import SidecarConfig
from ingress_sidecar.guard import FD_RESERVE, ConnectionGuard, GuardedServer, ensure_fd_limit
from ingress_sidecar.handler import RequestHandler
from ingress_sidecar.hlc import WORKER_MAX, HybridClock, file_offset_clock, system_clock_ms
from ingress_sidecar.identity import CertificateVerifier, JwksKeys, JwtVerifier
from ingress_sidecar.mirror import Mirror
from ingress_sidecar.policy import PolicyCache
from ingress_sidecar.ratelimit import DropCounter, SourceLimiter
from ingress_sidecar.routes import RouteTable
from ingress_sidecar.signing import BatchSigner
from ingress_sidecar.upstream import UpstreamPool
from symphony import upstream_headers as uh
from symphony.checkpoints import CheckpointSigner, load_log_key
from symphony.errors import EXIT_OK, ConfigError, StartupError
from symphony.lifecycle import Shutdown
from symphony.tls import server_context

log = logging.getLogger("sidecar")
POLICY_FIRST_LOAD_SECONDS = 5.0
UPSTREAM_ANSWER_BYTES_MAX = 64 * 1024 * 1024  # an upstream answer above this is a 502, never buffered whole
METRICS_DIR_ENV = "SYMPHONY_SIDECAR_METRICS_DIR"  # set by the supervisor for its workers


def worker_id_for(settings: SidecarConfig, stream_id: int) -> int:
    """The 10-bit Snowflake worker id of (node, stream); see docs in config.example.toml."""
    base = settings.worker_id_base if settings.worker_id_base >= 0 else zlib.crc32(settings.node_id.encode())
    return (base + stream_id) % (WORKER_MAX + 1)


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket this process owns exclusively (inheritable by its workers).

    SO_REUSEADDR only lets a restart bind over connections in TIME_WAIT; on
    Linux it never lets a second socket listen on a port that is listening.
    SO_REUSEPORT is never set: with it, any process of the same user could
    bind the same port and silently take a share of the connections.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(4096)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                           "(another process holds the port)") from None
    sock.setblocking(False)
    return sock


def inherited_socket(fd: int) -> socket.socket:
    """The supervisor's listening socket, inherited as file descriptor `fd`."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise StartupError(f"inherited listening socket (fd {fd}) not usable: {exc.strerror or exc}") from None
    if sock.type != socket.SOCK_STREAM or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 1:
        sock.detach()
        raise StartupError(f"inherited fd {fd} is not a listening TCP socket")
    sock.setblocking(False)
    return sock


def tls_context(settings: SidecarConfig) -> ssl.SSLContext | None:
    if not settings.tls_cert_file:
        return None
    # Client certificates optional at the TLS layer so JWT callers work too (symphony.tls).
    return server_context(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file,
                          error=StartupError, label="TLS files not usable")


class Worker:
    def __init__(self, settings: SidecarConfig, *, stream_id: int, port: int, database_url: str,
                 listen_fd: int = -1) -> None:
        self.settings = settings
        self.stream_id = stream_id
        self.port = port
        self.listen_fd = listen_fd  # the supervisor's socket; -1: bind here (tests of one worker)
        self.database_url = database_url
        self.label = str(stream_id)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        metrics_dir = os.environ.get(METRICS_DIR_ENV)
        self.stats = metrics.WorkerStats(Path(metrics_dir) if metrics_dir else None, stream_id)
        self.mirror: Mirror | None = None
        self.guard: ConnectionGuard | None = None

    def _clock(self) -> HybridClock:
        source = system_clock_ms
        if self.settings.test_clock_file:
            # config.py refuses a clock file without the explicit test flag; check again here.
            assert self.settings.test_clock_allowed, "test_clock_file without test_clock_allowed"
            source = file_offset_clock(Path(self.settings.test_clock_file))
        return HybridClock(worker_id_for(self.settings, self.stream_id),
                           offset_ms_max=self.settings.clock_offset_ms_max, clock=source)

    def _open_journal(self) -> Attestor:
        signer = self._checkpoint_signer()
        try:
            attestor = Attestor.open(self.settings.journal_root(), node_id=self.settings.node_id,
                                     stream_id=self.stream_id, durability=self.settings.durability,
                                     segment_bytes=self.settings.journal_segment_bytes,
                                     bytes_max=self.settings.journal_bytes_max,
                                     flush_interval_us=self.settings.journal_flush_interval_us)
        except (journal.JournalError, OSError, ValueError) as exc:
            raise StartupError(f"journal stream {self.settings.node_id}/{self.stream_id} not usable: {exc}") from None
        attestor.signer = signer
        return attestor

    def _checkpoint_signer(self) -> CheckpointSigner | None:
        """The node key that signs this stream's checkpoints (log_key_file), if configured."""
        s = self.settings
        if not s.log_key_file:
            return None
        try:
            key = load_log_key(Path(s.log_key_file))
        except ConfigError as exc:
            raise StartupError(exc.reason) from None
        publish = Path(s.checkpoint_publish_dir) if s.checkpoint_publish_dir else None
        return CheckpointSigner(key, s.log_origin_prefix, s.node_id, publish)

    def _signer(self) -> uh.HeaderSigner:
        path = self.settings.signing_key_path()
        try:
            return uh.HeaderSigner(uh.load_private_key(path))
        except (OSError, ValueError, uh.SignatureError) as exc:
            raise StartupError(f"upstream signing key {path} not usable: {exc}") from None

    def _hlc_peers(self) -> uh.HlcVerifier | None:
        """Verifier of peer sidecars' X-Symphony-HLC signatures; None when no peer key is configured."""
        files = self.settings.hlc_peer_public_key_files
        if not files:
            return None
        try:
            return uh.HlcVerifier([uh.load_public_key(Path(name)) for name in files])
        except (OSError, ValueError, uh.SignatureError) as exc:
            raise StartupError(f"hlc_peer_public_key_files not usable: {exc}") from None

    def _signed(self, requests: int) -> None:
        self.stats.count("upstream_signatures")
        self.stats.add("upstream_signed_requests", requests)

    def _upstream_pools(self) -> dict[str, UpstreamPool]:
        """One keep-alive pool per upstream base URL of the route table (ingress_sidecar/upstream.py)."""
        s = self.settings
        pools = {}
        for url in RouteTable(s.routes, s.upstream_url).upstreams:
            pools[url] = UpstreamPool(url, connections_max=s.upstream_connections_max, queue_max=s.upstream_queue_max,
                                      connect_timeout_seconds=s.upstream_connect_timeout_seconds,
                                      timeout_seconds=s.upstream_timeout_seconds, body_bytes_max=UPSTREAM_ANSWER_BYTES_MAX)
        return pools

    def _build(self, attestor: Attestor, upstreams: dict[str, UpstreamPool]) -> RequestHandler:
        s = self.settings
        self.keys = JwksKeys(s.jwks_path())
        self.keys.reload_if_changed()
        certs = None
        if s.tls_client_ca_file:
            certs = CertificateVerifier(trust_domain=s.spiffe_trust_domain,
                                        lifetime_seconds_max=s.client_cert_lifetime_seconds_max)
        self.policy = PolicyCache(self.database_url, poll_seconds=s.policy_poll_seconds,
                                  staleness_seconds_max=s.policy_staleness_seconds_max,
                                  on_propagation=lambda lag: self.stats.observe("policy_propagation_seconds", lag))
        self.drops = DropCounter()
        return RequestHandler(
            s, attestor=attestor, clock=self._clock(), routes=RouteTable(s.routes, s.upstream_url),
            jwt_verifier=JwtVerifier(self.keys, issuer=s.jwt_issuer, audience=s.jwt_audience,
                                     leeway_seconds=s.jwt_leeway_seconds),
            cert_verifier=certs, policy=self.policy,
            limiter=SourceLimiter(rate_per_second=s.rate_limit_unauthenticated_per_second,
                                  burst=s.rate_limit_unauthenticated_burst, sources_max=s.rate_limit_sources_max),
            drops=self.drops, signer=BatchSigner(self._signer(), on_batch=self._signed), upstreams=upstreams,
            stats=self.stats, hlc_peers=self._hlc_peers(),
        )

    async def run(self, on_ready: Callable[[], None]) -> int:
        shutdown = Shutdown()
        shutdown.install()
        attestor = self._open_journal()
        upstreams = self._upstream_pools()
        try:
            handler = self._build(attestor, upstreams)
            self.tasks = [asyncio.create_task(self.policy.run(self.stop), name="policy"),
                          asyncio.create_task(self._housekeeping(attestor, handler), name="housekeeping"),
                          asyncio.create_task(self._checkpoints(attestor), name="checkpoints")]
            if self.settings.mirror_enabled:
                self.tasks.append(asyncio.create_task(self._mirror(attestor).run(self.stop), name="mirror"))
            await self._await_first_policy_load()
            return await self._serve(handler, attestor, shutdown, on_ready)
        finally:
            self.stop.set()
            for task in self.tasks:
                try:
                    await asyncio.wait_for(task, timeout=5.0)
                except asyncio.TimeoutError:
                    log.warning("background task did not stop in time", extra={"task": task.get_name()})
            for pool in upstreams.values():
                pool.close()
            self._flush_drops(attestor)
            attestor.close()
            self.stats.publish()
            log.info("worker stopped; journal flushed", extra={"stream_id": self.stream_id})

    def _mirror(self, attestor: Attestor) -> Mirror:
        s = self.settings
        self.mirror = Mirror(s.mirror_path(), node_id=s.node_id, stream_id=self.stream_id,
                             stream_dir=attestor.writer.path, file_bytes_max=s.mirror_file_bytes_max,
                             queue_records_max=s.mirror_queue_records_max, stats=self.stats,
                             acknowledgements_file=s.mirror_acknowledgements_path(),
                             keep_acknowledged_seconds=s.mirror_keep_acknowledged_hours * 3600)
        try:
            self.mirror.open(head_seq=attestor.writer.next_seq - 1)
        except OSError as exc:
            raise StartupError(f"mirror directory {self.mirror.directory} not usable: {exc}") from None
        attestor.observers.append(self.mirror.observe)
        return self.mirror

    async def _await_first_policy_load(self) -> None:
        """Listen with a loaded policy cache if the database answers soon; else
        start anyway and fail closed until it does (the journal does not need it)."""
        try:
            await asyncio.wait_for(self.policy.first_load.wait(), timeout=POLICY_FIRST_LOAD_SECONDS)
        except asyncio.TimeoutError:
            log.warning("policy not loaded yet; requests are refused until it is",
                        extra={"waited_seconds": POLICY_FIRST_LOAD_SECONDS})

    def _guard(self, pools: int) -> ConnectionGuard:
        """The worker's connection caps and read deadlines (ingress_sidecar/guard.py)."""
        s = self.settings
        needed = s.worker_connections_max + pools * s.upstream_connections_max + FD_RESERVE
        try:
            ensure_fd_limit(needed)
        except (ValueError, OSError) as exc:
            raise StartupError(f"worker_connections_max = {s.worker_connections_max} does not fit: {exc}") from None

        def refused(reason: str) -> None:
            self.drops.add(reason)
            self.stats.count("dropped", reason)

        return ConnectionGuard(connections_max=s.worker_connections_max,
                               source_connections_max=s.source_connections_max,
                               header_timeout_seconds=s.header_read_timeout_seconds,
                               body_timeout_seconds=s.body_read_timeout_seconds, on_refused=refused)

    async def _serve(self, handler: RequestHandler, attestor: Attestor, shutdown: Shutdown,
                     on_ready: Callable[[], None]) -> int:
        s = self.settings
        guard = self._guard(len(handler.upstreams))
        self.guard = guard
        server = GuardedServer(handler.handle, guard=guard, handler_cancellation=True, access_log=None,
                               max_line_size=s.header_bytes_max, max_field_size=s.header_bytes_max,
                               auto_decompress=False, keepalive_timeout=75.0)
        sock = inherited_socket(self.listen_fd) if self.listen_fd >= 0 else listen_socket(s.listen_host, self.port)
        loop = asyncio.get_running_loop()
        self.tasks.append(asyncio.create_task(guard.run(self.stop), name="connection-guard"))
        listener = await loop.create_server(server, sock=sock, ssl=tls_context(s), backlog=4096,
                                            ssl_handshake_timeout=s.header_read_timeout_seconds if s.tls_cert_file
                                            else None)
        log.info("worker listening", extra={"stream_id": self.stream_id, "port": self.port,
                                            "durability": s.durability, "pid": os.getpid()})
        on_ready()
        await shutdown.wait()
        log.info("draining: no new connections, finishing in-flight requests", extra={"stream_id": self.stream_id})
        listener.close()
        server.pre_shutdown()
        handler.shutting_down = True
        await server.shutdown(s.shutdown_timeout_seconds)
        return EXIT_OK

    def _flush_drops(self, attestor: Attestor) -> None:
        if not self.drops.pending():
            return
        start_us, end_us, counts = self.drops.take()
        try:
            attestor.dropped(start_us, end_us, counts)
        except AttestationRefused as refused:
            self.drops.restore(counts)
            log.error("DROPPED record refused by the journal; counts kept for the next window",
                      extra={"reason": refused.reason, "counts": counts})

    async def _checkpoints(self, attestor: Attestor) -> None:
        """Cut a checkpoint every checkpoint_interval_seconds when the tree grew,
        and soon after a rotation (checked ten times per interval). A refused
        checkpoint is logged and tried again next time; the last one is cut at
        close (Attestor.close). The published file is written in a thread
        (an atomic replace with two fsyncs: several ms on a busy disk, which
        would stall every request of this worker), one at a time, so a newer
        checkpoint is never overwritten by an older one."""
        if attestor.signer is None:
            return
        interval = self.settings.checkpoint_interval_seconds
        loop = asyncio.get_running_loop()
        next_due = loop.time() + interval
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=interval / 10)
                break
            except asyncio.TimeoutError:
                pass
            if loop.time() < next_due and not attestor.rotated_since_checkpoint():
                continue
            next_due = loop.time() + interval
            try:
                signed = attestor.checkpoint(publish=False)
            except AttestationRefused as refused:
                log.error("CHECKPOINT refused by the journal", extra={"reason": refused.reason})
                continue
            if signed is None:
                continue
            self.stats.count("checkpoints")
            self.stats.gauges["checkpoint_tree_size"] = float(signed.checkpoint.size)
            try:
                await asyncio.to_thread(attestor.signer.publish, signed)
            except OSError as exc:
                log.error("checkpoint not published; the next one replaces it",
                          extra={"origin": signed.checkpoint.origin, "error": str(exc)})

    async def _housekeeping(self, attestor: Attestor, handler: RequestHandler) -> None:
        """Each tick: DROPPED aggregate, HEARTBEAT if idle, JWKS reload, gauges."""
        interval = self.settings.heartbeat_interval_seconds
        reload_every = max(1, round(self.settings.jwks_reload_seconds / interval))
        tick = 0
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=interval)
                break
            except asyncio.TimeoutError:
                pass
            tick += 1
            handler.refusal_log.flush()
            self._flush_drops(attestor)
            if attestor.idle_seconds() >= interval:
                try:
                    attestor.heartbeat()
                except AttestationRefused as refused:
                    log.error("HEARTBEAT refused by the journal", extra={"reason": refused.reason})
            if tick % reload_every == 0:
                self.keys.reload_if_changed()
            self._update_gauges(attestor, handler)

    def _update_gauges(self, attestor: Attestor, handler: RequestHandler) -> None:
        gauges = self.stats.gauges
        staleness = self.policy.staleness_seconds()
        gauges["policy_staleness_seconds"] = staleness if staleness != float("inf") else -1.0
        offset = handler.clock.offset_ms()
        gauges["clock_offset_seconds"] = offset / 1000.0
        if offset <= handler.clock.offset_ms_max:
            gauges["clock_alarm"] = 0.0
        gauges["worker_ready"] = 1.0 if attestor.writable and self.policy.is_fresh() else 0.0
        gauges["in_flight"] = float(handler.in_flight)
        if self.guard is not None:
            gauges["connections_open"] = float(len(self.guard.connections))
            gauges["upstream_waiting"] = float(sum(pool.waiting for pool in handler.upstreams.values()))
        gauges["open_ingress"] = float(attestor.open_requests)
        if self.mirror is not None:
            gauges["mirror_queue"] = float(self.mirror.queued())
        try:
            self.stats.publish()
        except OSError as exc:
            log.warning("metrics snapshot not written", extra={"error": str(exc)})
