"""The sidecar's parent process: N workers on one port, one admin endpoint.

Each worker is a fresh Python process (never fork: the journal must not be
used across fork) that owns journal stream `stream_id` = its index. The
supervisor:

- binds the listening port once, exclusively (no SO_REUSEPORT), before any
  worker starts; anything else holding the port makes it exit 3 with one
  line. The workers inherit that one socket and accept from it, and a
  restarted worker inherits it again, so the port never has a second owner
  and never a moment without its owner;
- serves /healthz, /readyz and /metrics on the admin port; metrics are the
  workers' values merged (prometheus multiprocess mode) plus journal file sizes;
- tells systemd READY=1 once every worker listens, and pings the watchdog
  while every worker's housekeeping tick keeps publishing (a stuck worker
  stops the pings);
- restarts a worker that dies (kill -9, crash) on the same stream, whose
  journal then recovers: what the dead worker acknowledged is in the journal,
  and requests it held show as INGRESS without OUTCOME (ghosts to classify);
  more than RESTARTS_MAX restarts within RESTART_WINDOW_SECONDS exit 4;
- on SIGTERM forwards SIGTERM to every worker (each drains and flushes), waits
  for them, and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ingress_sidecar.config import SidecarConfig
from symphony import lifecycle
from symphony.errors import EXIT_OK, EXIT_RUNTIME, StartupError

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("sidecar")

WORKER_START_TIMEOUT_SECONDS = 30.0
RESTARTS_MAX = 10
RESTART_WINDOW_SECONDS = 60.0
UPSTREAM_PROBE_TIMEOUT_SECONDS = 1.0


@dataclass
class WorkerProcess:
    stream_id: int
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    def __init__(self, settings: SidecarConfig, *, config_path: str | None, database_url: str, data_dir: Path) -> None:
        self.settings = settings
        self.config_path = config_path
        self.database_url = database_url
        self.data_dir = data_dir
        self.workers = [WorkerProcess(i) for i in range(settings.worker_count())]
        self.port = settings.listen_port
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="symphony-sidecar-metrics-"))
        self.stopping = False
        self.listener: socket.socket | None = None
        self.watchdog = lifecycle.Watchdog(self._workers_progressing)

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SYMPHONY_DATABASE_URL"] = self.database_url
        env["SYMPHONY_SIDECAR_DATA_DIR"] = str(self.data_dir)
        env["SYMPHONY_SIDECAR_METRICS_DIR"] = str(self.metrics_dir)
        env.pop("NOTIFY_SOCKET", None)  # only the supervisor talks to systemd
        return env

    async def _start_worker(self, worker: WorkerProcess) -> None:
        assert self.listener is not None, "the port is bound before any worker starts"
        listen_fd = self.listener.fileno()
        read_fd, write_fd = os.pipe()
        argv = [sys.executable, "-m", "ingress_sidecar.worker", "--stream-id", str(worker.stream_id),
                "--port", str(self.port), "--listen-fd", str(listen_fd), "--ready-fd", str(write_fd)]
        if self.config_path:
            argv += ["--config", self.config_path]
        try:
            worker.process = subprocess.Popen(argv, env=self._environment(), pass_fds=(write_fd, listen_fd),
                                              stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        finally:
            os.close(write_fd)
        try:
            await self._wait_ready(read_fd, worker)
        finally:
            os.close(read_fd)

    async def _wait_ready(self, read_fd: int, worker: WorkerProcess) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[bytes] = loop.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(os.read(read_fd, 1))

        loop.add_reader(read_fd, readable)
        try:
            signal_byte = await asyncio.wait_for(ready, timeout=WORKER_START_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            signal_byte = b""
        finally:
            loop.remove_reader(read_fd)
        if signal_byte != b"r":
            assert worker.process is not None
            code = worker.process.poll()
            if code is None:
                worker.process.kill()
                worker.process.wait()
            raise StartupError(f"sidecar worker {worker.stream_id} did not start (exit code {worker.process.returncode})",
                               exit_code=code if code in (2, 3) else None)

    def _bind(self) -> None:
        """Own the port: one exclusive listening socket for all workers (port 0 resolves here)."""
        from ingress_sidecar.server import listen_socket

        self.listener = listen_socket(self.settings.listen_host, self.port)
        self.port = int(self.listener.getsockname()[1])

    async def run(self) -> int:
        from ingress_sidecar import metrics

        shutdown = lifecycle.Shutdown()
        shutdown.install()
        self._bind()
        try:
            node_dir = self.settings.journal_root() / self.settings.node_id
            node_dir.mkdir(parents=True, exist_ok=True)
            admin = await self._start_admin(metrics.registry(self.metrics_dir, node_dir))
        except BaseException:
            self._release()
            raise
        try:
            for worker in self.workers:
                await self._start_worker(worker)
            log.info("sidecar ready", extra={"port": self.port, "admin_port": lifecycle.bound_port(admin),
                                             "workers": len(self.workers), "node_id": self.settings.node_id})
            lifecycle.sd_notify(f"READY=1\nSTATUS=listening on {self.settings.listen_host}:{self.port}")
            return await self._supervise(shutdown)
        finally:
            self.stopping = True
            code = await self._stop_workers()
            self._release()
            await admin.cleanup()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            log.info("sidecar stopped", extra={"exit_code": code})

    def _release(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    async def _start_admin(self, registry: object) -> web.AppRunner:
        # start_admin_server binds exclusively and raises StartupError (exit 3) when the port is held.
        return await lifecycle.start_admin_server(
            self.settings.admin_host, self.settings.admin_port, registry,  # type: ignore[arg-type]
            readiness={"workers": self._check_workers, "upstream": self._check_upstreams},
        )

    def _workers_progressing(self) -> bool:
        """Every worker alive and its housekeeping tick (journal HEARTBEAT, gauges)
        run recently: a worker whose event loop is stuck stops the watchdog's pings."""
        if not self._all_alive():
            return False
        from ingress_sidecar import metrics

        bound = max(self.watchdog.stall_seconds, 2 * self.settings.heartbeat_interval_seconds)
        now = time.monotonic()
        snapshots = metrics.read_snapshots(self.metrics_dir)
        for worker in self.workers:
            snapshot = snapshots.get(str(worker.stream_id))
            assert worker.process is not None
            if snapshot is None or snapshot.get("pid") != worker.process.pid:
                return False
            if now - float(snapshot.get("published_monotonic", float("-inf"))) > bound:
                return False
        return True

    def _all_alive(self) -> bool:
        return all(w.process is not None and w.process.poll() is None for w in self.workers)

    async def _check_workers(self) -> tuple[bool, str]:
        """Every worker alive, its journal writable and its policy cache fresh."""
        from ingress_sidecar import metrics

        if not self._all_alive():
            return False, "a worker is not running"
        snapshots = metrics.read_snapshots(self.metrics_dir)
        not_ready = [str(w.stream_id) for w in self.workers
                     if _not_ready(snapshots.get(str(w.stream_id)), w.process.pid if w.process else -1)]
        if not_ready:
            return False, f"streams not ready (journal not writable or policy stale): {', '.join(not_ready)}"
        return True, f"{len(self.workers)} workers ready"

    async def _check_upstreams(self) -> tuple[bool, str]:
        from ingress_sidecar.routes import RouteTable

        table = RouteTable(self.settings.routes, self.settings.upstream_url)
        for upstream in table.upstreams:
            parts = urlsplit(upstream)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port),
                                                   timeout=UPSTREAM_PROBE_TIMEOUT_SECONDS)
            except (OSError, asyncio.TimeoutError) as exc:
                return False, f"upstream {upstream} unreachable: {exc or type(exc).__name__}"
            writer.close()
        return True, f"{len(table.upstreams)} upstreams reachable"

    async def _supervise(self, shutdown: lifecycle.Shutdown) -> int:
        while not shutdown.requested.is_set():
            self.watchdog.beat("supervise")
            try:
                await asyncio.wait_for(shutdown.requested.wait(), timeout=0.2)
                break
            except asyncio.TimeoutError:
                pass
            for worker in self.workers:
                assert worker.process is not None
                code = worker.process.poll()
                if code is None:
                    continue
                now = time.monotonic()
                worker.restarts = [t for t in worker.restarts if now - t < RESTART_WINDOW_SECONDS] + [now]
                log.error("sidecar worker died; restarting it on the same stream",
                          extra={"stream_id": worker.stream_id, "exit_code": code, "restarts": len(worker.restarts)})
                if len(worker.restarts) > RESTARTS_MAX:
                    log.error("sidecar worker restart budget exhausted; stopping", extra={"stream_id": worker.stream_id})
                    return EXIT_RUNTIME
                try:
                    await self._start_worker(worker)
                except StartupError as exc:
                    log.error("sidecar worker restart failed", extra={"stream_id": worker.stream_id, "error": exc.reason})
                    return EXIT_RUNTIME
        return EXIT_OK

    async def _stop_workers(self) -> int:
        """SIGTERM to all, then wait for each within the drain bound (SIGKILL after)."""
        running = [w.process for w in self.workers if w.process is not None and w.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_timeout_seconds + 10.0
        worst = EXIT_OK
        for process in running:
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if process.poll() is None:
                log.error("sidecar worker did not drain in time; killing it", extra={"pid": process.pid})
                process.kill()
                process.wait()
                worst = EXIT_RUNTIME
            elif process.returncode != 0:
                worst = EXIT_RUNTIME
        return worst


def _not_ready(snapshot: dict | None, pid: int) -> bool:  # type: ignore[type-arg]
    """True when the snapshot does NOT show this very process as ready."""
    return snapshot is None or snapshot.get("pid") != pid or snapshot["gauges"].get("worker_ready") != 1.0


def _die_with_parent() -> None:
    """Workers get SIGTERM when the supervisor dies, even by SIGKILL: no orphans."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
