"""`symphony up`: the whole system on one machine, until Ctrl-C or SIGTERM.

Order: database (embedded unless a URL is given), migrations, then each daemon
as a child process, each waited for until it listens. Endpoints are printed,
then a line reading exactly `ready`. On SIGTERM/SIGINT the children are stopped
in reverse order (SIGTERM, then SIGKILL after their drain timeout) and the
embedded database last, so no process is left behind.

Daemons join `up` by providing a module `<package>.up` with
`components(ctx: UpContext) -> list[ChildSpec]` (types in
`symphony.components`), listed in `UP_MODULES`.

While it runs, `<data_dir>/run/up.json` names `up`'s pid and each child's
current pid, endpoints and restart count (rewritten when a child is
restarted), so tools such as `symphony chaos` and `symphony demo traffic` find
the processes of this data dir.

Restart policy (what systemd's Restart=on-failure with a start-limit burst
does for a unit): a child that exits while `up` runs -- crash, kill -9, OOM
kill, or a stop nobody asked `up` for -- is started again with the same
command line and ports, at most `child_restarts_max` times (default 5) within
RESTART_WINDOW_SECONDS (60 s) per child. Each restart is logged on stderr
(which child, how it ended, how many restarts in the window) and counted in
up.json. Past the budget, or when a child exits with 2 (a configuration or
usage error, which a restart would only repeat, like systemd's
RestartPreventExitStatus=), `up` stops everything and exits 4.
`child_restarts_max = 0` restores "one death stops everything".

Each daemon connects as its own login role (symphony.db.roles: created here
on the embedded server, or on a given URL whose role may create roles), and
gets its DSN in its environment, never in its argv.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from symphony import config
from symphony.arguments import add_config_argument, add_database_arguments
from symphony.components import ChildSpec, UpContext
from symphony.db import connect, dsn, migrate, roles
from symphony.embedded import EmbeddedPostgres, wait_for_port
from symphony.errors import EXIT_RUNTIME, StartupError
from symphony.files import write_atomically
from symphony.tlog import origins

# Start order: what others depend on first. Stopped in reverse.
UP_MODULES = [
    "rail_sim.up",
    "payments_service.up",
    "ingress_sidecar.up",
    "witness.up",  # before the forwarder, which submits checkpoints to it
    "forwarder.up",
    "relayer.up",
    "repair.up",
]
CHILD_START_TIMEOUT_SECONDS = 60.0
CHILD_STOP_TIMEOUT_SECONDS = 20.0
RUN_STATE_FILE = ("run", "up.json")
RESTART_WINDOW_SECONDS = 60.0
CHILD_RESTARTS_MAX_DEFAULT = 5
# A child exiting with this code has a configuration or usage error: restarting
# it would fail the same way (symphony.errors.EXIT_USAGE).
EXIT_NOT_RESTARTED = 2


class UpConfig(config.DaemonConfig, kw_only=True, forbid_unknown_fields=True):
    """Settings of `symphony up` (file given with --config, env SYMPHONY_UP_<KEY>).

    node_id: this machine's node id in journal streams and attestations.
    log_origin_prefix: the deployment's name in checkpoint origins and the
        node key's name (`<prefix>/<node_id>`; see symphony/tlog/origins.py).
    embedded_fast: run the embedded PostgreSQL without fsync and full page
        writes (throwaway demos and tests only: a power loss or kernel crash
        can lose or corrupt data; a crash of the server alone keeps every
        acknowledged commit, since commits stay synchronous).
    child_stop_timeout_seconds: how long each daemon may drain before SIGKILL.
    child_restarts_max: how many times within 60 s one daemon that exited on
        its own (crash, kill -9, OOM) is started again before `up` gives up and
        stops everything (exit 4). Default 5, like systemd's Restart=on-failure
        with a start-limit burst; an exit with code 2 (configuration error) is
        never restarted; 0: one daemon's death stops everything.
    chaos: tests and chaos runs only: the service honours its test fault file
        (--enable-test-faults), the sidecar reads a test clock file, and the
        daemons get the short grace periods of `symphony chaos` (see
        symphony/app/chaos/system.py; variables already in the environment win).
    """

    node_id: str = "node-local"
    log_origin_prefix: str = "symphony.example/local"
    embedded_fast: bool = False
    child_stop_timeout_seconds: float = msgspec.field(default=CHILD_STOP_TIMEOUT_SECONDS)
    child_restarts_max: int = CHILD_RESTARTS_MAX_DEFAULT
    chaos: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 < len(self.node_id) <= 63 and all(c.isalnum() or c in "._-" for c in self.node_id)):
            raise ValueError("node_id must be 1-63 characters of letters, digits, '.', '_' or '-'")
        origins.log_name(self.log_origin_prefix, self.node_id)  # raises ValueError on a bad prefix
        if not 0 < self.child_stop_timeout_seconds <= 600:
            raise ValueError("child_stop_timeout_seconds must be in (0, 600]")
        if not 0 <= self.child_restarts_max <= 100:
            raise ValueError("child_restarts_max must be in [0, 100]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    add_config_argument(parser, "up")


def run(args: argparse.Namespace) -> int:
    settings = config.load(UpConfig, "up", args.config)
    data_dir = dsn.data_dir_from(args.data_dir or settings.data_dir or None).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedPostgres | None = None
    url = args.database_url or settings.database_url
    stop = _StopFlag()
    stop.install()
    children: list[tuple[ChildSpec, subprocess.Popen[bytes]]] = []
    try:
        if not url:
            embedded = EmbeddedPostgres(data_dir, fast=settings.embedded_fast)
            url = embedded.start().dsn
            print(f"database: embedded PostgreSQL on {dsn.redact(url)} (data {embedded.pgdata})", flush=True)
        else:
            print(f"database: {dsn.redact(url)}", flush=True)
        applied = asyncio.run(migrate.apply_url(url))
        print(f"migrations: {len(applied)} applied" if applied else "migrations: up to date", flush=True)
        provisioned = asyncio.run(_provision_roles(url, data_dir))
        if provisioned.refused is None:
            print(f"database roles: one login role per daemon ({', '.join(sorted(provisioned.urls))})", flush=True)
        else:
            print(f"database roles: {provisioned.refused}; every daemon uses the given URL's role "
                  "(create per-daemon roles as docs/operations.md shows)", flush=True)
        ctx = UpContext(data_dir=data_dir, database_url=url, node_id=settings.node_id, chaos=settings.chaos,
                        log_origin_prefix=settings.log_origin_prefix, role_urls=provisioned.urls)
        _prepare_demo(ctx)
        extra_env = _chaos_environment(data_dir) if settings.chaos else {}
        for spec in _collect_components(ctx):
            if stop.requested:
                break
            spec.env = {**{k: v for k, v in extra_env.items() if k not in os.environ}, **spec.env}
            children.append((spec, _start_child(spec, data_dir)))
            _write_run_state(data_dir, children)
            _wait_until_listening(spec, children[-1][1], stop)
            for label, endpoint in spec.endpoints.items():
                print(f"{spec.name} {label}: {endpoint}", flush=True)
        if not stop.requested:
            print("ready", flush=True)
        return _supervise(children, stop, data_dir, settings.child_restarts_max)
    finally:
        _stop_children(children, settings.child_stop_timeout_seconds)
        (data_dir / RUN_STATE_FILE[0] / RUN_STATE_FILE[1]).unlink(missing_ok=True)
        if embedded is not None:
            embedded.stop()


def _chaos_environment(data_dir: Path) -> dict[str, str]:
    from symphony.app import chaos

    return chaos.child_environment(data_dir)


def _write_run_state(data_dir: Path, children: list[tuple[ChildSpec, subprocess.Popen[bytes]]],
                     restarts: dict[str, int] | None = None) -> None:
    """<data_dir>/run/up.json: this process, its children's current pids and
    endpoints, and how often each child was restarted since `up` started."""
    path = data_dir.joinpath(*RUN_STATE_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = restarts or {}
    state = {"up_pid": os.getpid(),
             "children": {spec.name: {"pid": process.pid, "endpoints": spec.endpoints,
                                      "restarts": counts.get(spec.name, 0)} for spec, process in children}}
    write_atomically(path, (json.dumps(state, indent=2) + "\n").encode(), durable=False)


async def _provision_roles(url: str, data_dir: Path) -> roles.Provisioned:
    """A login role per daemon (member of its group role, migration 0042)."""
    conn = await connect(url)
    try:
        return await roles.provision(conn, url, data_dir / "secrets")
    finally:
        await conn.close()


def _prepare_demo(ctx: UpContext) -> None:
    """Demo participants and keys (symphony.app.demo)."""
    from symphony.app import demo

    demo.prepare(ctx)


def _collect_components(ctx: UpContext) -> list[ChildSpec]:
    specs: list[ChildSpec] = []
    for module_name in UP_MODULES:
        # A daemon that fails to import is a broken installation: it raises,
        # never silently missing from a system that says "ready".
        module = importlib.import_module(module_name)
        specs.extend(module.components(ctx))
    return specs


def _set_parent_death_signal() -> None:
    """Children get SIGTERM if `up` itself dies (even by SIGKILL): no orphans."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _start_child(spec: ChildSpec, data_dir: Path) -> subprocess.Popen[bytes]:
    log_path = data_dir / "logs" / f"{spec.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    env = {**os.environ, **spec.env}
    process = subprocess.Popen(
        spec.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        preexec_fn=_set_parent_death_signal if sys.platform == "linux" else None,
    )
    log.close()
    return process


def _wait_until_listening(spec: ChildSpec, process: subprocess.Popen[bytes], stop: _StopFlag) -> None:
    if spec.wait_port is None:
        return
    deadline = time.monotonic() + CHILD_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and not stop.requested:
        if process.poll() is not None:
            raise StartupError(f"{spec.name} exited with code {process.returncode} during start-up; see logs/{spec.name}.log")
        if wait_for_port(spec.wait_port, 0.2):
            return
    if not stop.requested:
        raise StartupError(f"{spec.name} did not listen on port {spec.wait_port} within {CHILD_START_TIMEOUT_SECONDS:.0f} s")


def _supervise(children: list[tuple[ChildSpec, subprocess.Popen[bytes]]], stop: _StopFlag,
               data_dir: Path, restarts_max: int = CHILD_RESTARTS_MAX_DEFAULT) -> int:
    """Wait for a stop signal, restarting children that die (module docstring:
    restart policy). Returns EXIT_RUNTIME when a child cannot be kept running."""
    recent: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    while not stop.requested:
        for index, (spec, process) in enumerate(children):
            if process.poll() is None:
                continue
            ended = _how_it_ended(process.returncode)
            now = time.monotonic()
            window = [t for t in recent.get(spec.name, []) if now - t < RESTART_WINDOW_SECONDS]
            if process.returncode == EXIT_NOT_RESTARTED:
                print(f"up: {spec.name} {ended} (a configuration or usage error; not restarted); stopping "
                      f"everything (see logs/{spec.name}.log)", file=sys.stderr, flush=True)
                return EXIT_RUNTIME
            if len(window) >= restarts_max:
                print(f"up: {spec.name} {ended}; {len(window)} restarts within {RESTART_WINDOW_SECONDS:.0f} s "
                      f"already (child_restarts_max = {restarts_max}); stopping everything "
                      f"(see logs/{spec.name}.log)", file=sys.stderr, flush=True)
                return EXIT_RUNTIME
            recent[spec.name] = [*window, now]
            counts[spec.name] = counts.get(spec.name, 0) + 1
            children[index] = (spec, _start_child(spec, data_dir))
            print(f"up: {spec.name} {ended}; restarted as pid {children[index][1].pid} (restart "
                  f"{len(window) + 1} of {restarts_max} within {RESTART_WINDOW_SECONDS:.0f} s, "
                  f"{counts[spec.name]} in all; see logs/{spec.name}.log)", file=sys.stderr, flush=True)
            _write_run_state(data_dir, children, counts)
        stop.sleep(0.5)
    return 0


def _how_it_ended(returncode: int) -> str:
    """'exited with code N' or 'was killed by SIGNAME' (Popen's negative codes)."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _stop_children(children: list[tuple[ChildSpec, subprocess.Popen[bytes]]], timeout_seconds: float) -> None:
    for _, process in reversed(children):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    for spec, process in reversed(children):
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{spec.name} did not stop within {timeout_seconds:.0f} s; killing it", file=sys.stderr)
            process.kill()
            process.wait()


class _StopFlag:
    """SIGTERM/SIGINT set a flag the supervision loop checks."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.requested and time.monotonic() < deadline:
            time.sleep(0.05)
