"""The system under test: the processes of a running `symphony up`, found
through `<data_dir>/run/up.json`, its database, and the settings `up` gives
its children when `chaos = true`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, LiteralString

from symphony.db.queries import load
from symphony.errors import EXIT_USAGE, SymphonyError
from symphony.files import write_atomically

QUERIES = load(__package__, "queries.sql")

CLOCK_FILE = ("chaos", "clock-offset-ms")
SERVICE_FAULT_FILE = ("chaos", "service-faults.json")
BLACKHOLE_LOG = ("chaos", "blackholed.jsonl")
# What `chaos = true` leaves in the children: the sidecar's test clock file in
# its environment, the service's test fault switch on its command line.
SIDECAR_CLOCK_VARIABLE = "SYMPHONY_SIDECAR_TEST_CLOCK_FILE"
SERVICE_FAULTS_FLAG = "--enable-test-faults"

# What `symphony up` (chaos = true) gives its children unless the environment
# already says otherwise: short grace periods so a bounded run sees repair act,
# small journal segments (the disk-full scenario fills a small filesystem),
# fast segment release, and the sidecar's test clock file.
CHAOS_SETTINGS = {
    "SYMPHONY_SIDECAR_JOURNAL_SEGMENT_BYTES": str(64 * 1024),
    "SYMPHONY_SIDECAR_UPSTREAM_TIMEOUT_SECONDS": "5",
    "SYMPHONY_FORWARDER_JOURNAL_RETENTION_SECONDS": "2",
    # The shortest lease the relayer accepts for the real rails `up` drives: their worst
    # call (a status query and a submit of 5 s each, 5 s of polling, a 5 s token request)
    # plus the 5 s margin (relayer/config.py). 20 s made the relayer refuse to start.
    "SYMPHONY_RELAYER_LEASE_SECONDS": "25",
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
    # The sidecar refuses a test clock file unless it is told explicitly that this is a test.
    return {**CHAOS_SETTINGS, SIDECAR_CLOCK_VARIABLE: str(data_dir.joinpath(*CLOCK_FILE)),
            "SYMPHONY_SIDECAR_TEST_CLOCK_ALLOWED": "true"}


def setting(name: str) -> float:
    """A chaos setting as the running system got it (the environment wins, as in `up`)."""
    try:
        return float(os.environ.get(name) or CHAOS_SETTINGS[name])
    except ValueError:
        return float(CHAOS_SETTINGS[name])


def grace_seconds() -> float:
    """The longest repair grace period the running system uses (ghost, outcome, stuck key)."""
    return max(setting(n) for n in ("SYMPHONY_REPAIR_GHOST_GRACE_SECONDS", "SYMPHONY_REPAIR_OUTCOME_GRACE_SECONDS",
                                    "SYMPHONY_REPAIR_STUCK_KEY_SECONDS")) + 1.0


class NotSetUp(SymphonyError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason, exit_code=EXIT_USAGE)


class Finding(Exception):
    """A scenario step that shows an invariant or the fault itself did not hold."""


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
        if not alive(int(state.get("up_pid", 0))):
            raise NotSetUp(f"the `symphony up` of {path} is not running")
        return state

    def require_chaos(self) -> None:
        """Refuse (NotSetUp, exit 2) before any fault unless `up` runs with `chaos = true`:
        without it the service has no fault switch and the sidecar no test clock."""
        sidecar, service = self.pid("sidecar"), self.pid("service")
        missing = []
        if SIDECAR_CLOCK_VARIABLE not in environ_of(sidecar):
            missing.append(f"the sidecar (pid {sidecar}) has no test clock file")
        if SERVICE_FAULTS_FLAG not in argv_of(service):
            missing.append(f"the service (pid {service}) runs without {SERVICE_FAULTS_FLAG}")
        if missing:
            raise NotSetUp(f"the `symphony up` on {self.data_dir} is not set up for chaos ({'; '.join(missing)}): "
                           f"restart it with `chaos = true` and `child_restarts_max > 0` in its up.toml")

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
        return children_of(self.pid("sidecar"))

    def journal_root(self) -> Path:
        return self.data_dir / "journal"

    async def wait_restarted(self, child: str, old_pid: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(NotSetUp):
                pid = self.pid(child)
                if pid != old_pid and alive(pid):
                    return pid
            await asyncio.sleep(0.2)
        raise Finding(f"{child} was not restarted within {timeout:.0f} s after kill -9 "
                      f"(does up.toml set child_restarts_max > 0?)")


def alive(pid: int) -> bool:
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


def children_of(pid: int) -> list[int]:
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                children += [int(c) for c in (task / "children").read_text().split()]
    return sorted(c for c in set(children) if alive(c))


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def argv_of(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [item.decode(errors="replace") for item in raw.split(b"\0") if item]


def kill9(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def write_atomic(path: Path, text: str) -> None:
    """A fault or clock file the daemons re-read: never seen half written (not fsync'd)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (text + "\n").encode(), durable=False)


# -- the system's database and CLI ---------------------------------------------------------------------


async def connect(url: str, timeout: float = 60.0) -> Any:
    """A connection, retried while PostgreSQL restarts."""
    from symphony.db import connect as connect_once

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await connect_once(url)
        except SymphonyError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def query(url: str, name: str, *args: Any) -> list[Any]:
    """The rows of the named block of queries.sql."""
    sql: LiteralString = QUERIES[name]
    conn = await connect(url)
    try:
        return list(await conn.fetch(sql, *args, timeout=60))
    finally:
        await conn.close()


async def db_now(url: str) -> dt.datetime:
    rows = await query(url, "db_now")
    now: dt.datetime = rows[0]["now"]
    return now


async def cli(system: System, *args: str) -> tuple[int, Any]:
    """Run `symphony ARGS --json` against this system: (exit code, parsed stdout)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "symphony", *args, "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "SYMPHONY_DATABASE_URL": system.database_url})  # never in argv
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


async def post_faults(base: str, faults: dict[str, Any]) -> None:
    """Set a rail simulator's faults (its /_sim/faults endpoint)."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.post(base + "/_sim/faults", json=faults) as response:
            if response.status != 200:
                raise Finding(f"{base}/_sim/faults refused {faults}: {await response.text()}")
