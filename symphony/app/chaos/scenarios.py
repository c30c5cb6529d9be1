"""The failure scenarios: each injects its fault at random moments inside the
run's duration and heals it before the end; `mixed` runs random ones back to
back (the soak). A scenario records what it did (`run.event`), what the checks
must expect of it (`run.expect`), and its own problems (the fault did not take
effect)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from symphony.app.chaos.checks import Expect
from symphony.app.chaos.load import Load
from symphony.app.chaos.system import (BLACKHOLE_LOG, CHAOS_SETTINGS, CLOCK_FILE, SERVICE_FAULT_FILE, Finding,
                                       NotSetUp, System, alive, db_now, environ_of, kill9, post_faults, query,
                                       write_atomic)

SCENARIOS = ("blackhole", "double-tap", "kill-sidecar-worker", "kill-forwarder", "kill-relayer",
             "kill-repair-leader", "pg-restart", "rail-down", "disk-full", "clock-back")
MIXED = "mixed"
BALLAST_NAME = ".chaos-ballast"
DISK_FULL_FILESYSTEM_MAX_BYTES = 1 << 30


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
    write_atomic(fault_file, json.dumps({"blackhole_rate": 0.1, "blackhole_max": 10}))
    run.event("blackhole on", rate=0.1, max=10)
    try:
        await run.sleep_random(0.4, 0.5)
    finally:
        write_atomic(fault_file, "{}")
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
    write_atomic(fault_file, json.dumps({"latency_ms": 150}))
    run.event("service latency 150 ms")
    try:
        await _kill_sidecar_workers(run)
    finally:
        write_atomic(fault_file, "{}")
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
    await post_faults(base, {"kill_pid_on_execute": pid, "kill_count": 1})
    run.event("armed kill-after-execute", rail=rail, pid=pid)
    deadline = time.monotonic() + max(5.0, run.duration * 0.3)
    try:
        while time.monotonic() < deadline and alive(pid):
            await asyncio.sleep(0.2)
    finally:
        await post_faults(base, {"kill_pid_on_execute": 0, "kill_count": 0})
    if not alive(pid):
        run.event("relayer killed by the rail right after an execution", rail=rail, pid=pid)
        run.event("relayer restarted by up", pid=await run.system.wait_restarted("relayer", pid))
    await _freeze_relayer(run)


async def _freeze_relayer(run: Run) -> None:
    """SIGSTOP the relayer while rails are slow (rows in flight), until repair
    has turned its expired leases into ZOMBIE incidents; then SIGCONT."""
    url = run.system.database_url
    rails = run.system.rails()
    for base in rails.values():
        await post_faults(base, {"latency_ms_median": 400.0, "latency_ms_p99": 800.0})
    pid = 0
    try:
        await asyncio.sleep(2.0)
        pid = run.system.pid("relayer")
        os.kill(pid, signal.SIGSTOP)
        rows = await query(url, "in_flight_leases")
        held, until = rows[0]["n"], rows[0]["until"]
        run.event("relayer frozen (SIGSTOP)", pid=pid, rows_in_flight=held)
        if held:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rows = await query(url, "zombie_incidents_since", run.since)
                left = await query(url, "in_flight_expired_by", until)
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
            await post_faults(base, {"latency_ms_median": 0.0, "latency_ms_p99": 0.0})


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
        killed_at = await db_now(url)
        kill9(pid)
        run.event("kill -9 repair leader", instance=leader, pid=pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # The standby or the victim restarted by `up` (same instance id, new
            # process): whichever takes the lock first starts a new term.
            rows = await query(url, "repair_leaders_since", killed_at)
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
           "SYMPHONY_REPAIR_INSTANCE_ID": STANDBY_ID, "SYMPHONY_DATABASE_URL": system.database_url}
    process = subprocess.Popen([sys.executable, "-m", "symphony", "repair"],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    log.close()
    return process


async def _instance_role(url: str, instance: str) -> str | None:
    rows = await query(url, "repair_instance_role", instance)
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
    candidates = {environ_of(pid).get("SYMPHONY_REPAIR_INSTANCE_ID", ""): pid
                  for pid in (system.pid("repair"), standby_pid)}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = await query(system.database_url, "repair_lock_holders")
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


async def scenario_rail_down(run: Run) -> None:
    rail, base = run.rng.choice(sorted(run.system.rails().items()))
    await run.sleep_random(0.1, 0.25)
    await post_faults(base, {"down": True})
    run.event("rail down", rail=rail)
    try:
        await run.sleep_random(0.35, 0.5)
    finally:
        await post_faults(base, {"down": False})
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
        write_atomic(clock, str(base - 200))
        run.event("clock stepped back 200 ms (inside the HLC bound)")
        await run.sleep_random(0.15, 0.25)
        write_atomic(clock, str(base - 3000))
        run.event("clock stepped back 3 s (beyond the HLC bound)")
        await asyncio.sleep(max(4.0, 0.3 * run.duration))
    finally:
        write_atomic(clock, previous or "0")
        run.event("clock restored")
    refused = sum(1 for s in run.load.sent if s.error == "CLOCK_BACKWARDS") - refused_before
    run.event("requests refused with CLOCK_BACKWARDS", count=refused)
    if refused == 0:
        run.problems.append("clock-back: a 3 s step back refused no request (is up.toml `chaos = true`?)")


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
