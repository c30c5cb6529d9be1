"""`symphony chaos run|check|env`: the command line of the chaos harness, and a run from start to report."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

from symphony.app.chaos.checks import Expect, check_invariants, quiesce
from symphony.app.chaos.load import Load
from symphony.app.chaos.scenarios import MIXED, SCENARIO_FUNCTIONS, SCENARIOS, Run, scenario_mixed
from symphony.app.chaos.system import Finding, System, child_environment, db_now, grace_seconds
from symphony.db import dsn
from symphony.errors import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, SymphonyError


async def run_scenario(system: System, name: str, duration: float, *, rate: float, concurrency: int,
                       seed: int, quiesce_timeout: float) -> dict[str, Any]:
    rng = random.Random(seed)
    since = await db_now(system.database_url)
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
    await quiesce(system, timeout=quiesce_timeout, grace_seconds=grace_seconds(), notes=notes)
    run.event("quiescent", notes=notes)
    result = await check_invariants(system, since, run.expect)
    findings = result["findings"]
    if run.problems:
        findings.setdefault("scenario", []).extend(run.problems)
    return {"scenario": name, "duration_seconds": duration, "seed": seed, "since": since.isoformat(),
            "ok": not findings, "findings": findings, "measures": result["measures"],
            "load": load.summary(), "events": run.events, "notes": notes}


async def check_only(system: System, since: dt.datetime | None, quiesce_timeout: float) -> dict[str, Any]:
    notes: list[str] = []
    await quiesce(system, timeout=quiesce_timeout, grace_seconds=grace_seconds(), notes=notes)
    since = since or dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    result = await check_invariants(system, since, Expect())
    return {"scenario": None, "since": since.isoformat(), "ok": not result["findings"], **result, "notes": notes}


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
        system.require_chaos()  # a running `symphony up` with `chaos = true`, or a clear error (exit 2)
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
        report = asyncio.run(run_scenario(system, args.scenario, args.duration, rate=args.rate,
                                          concurrency=args.concurrency, seed=seed,
                                          quiesce_timeout=args.quiesce_timeout))
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.report:
        Path(args.report).write_text(text + "\n")
    return EXIT_OK if report["ok"] else EXIT_FINDINGS
