"""Suspension propagation: from the COMMIT of `symphony participant suspend` to the first 403.

    .venv/bin/python bench/participant_suspend_bench.py [--rounds 20] [--workers 1]

Starts an embedded PostgreSQL 18, a trivial upstream and `symphony sidecar`
(policy poll every 30 s, so only the NOTIFY path can be quick). Each round
reinstates the participant, waits until a request is accepted, then runs the
CLI's own statement (repair/participants.sql `participant_change`, autocommit:
it returns once committed) and sends requests back to back on one keep-alive
connection until one is refused with 403 participant_suspended. Prints the
median, p90 and worst time from COMMIT to that 403. The resolution is one
request round trip. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sidecar_bench import (  # noqa: E402
    ROOT, SERVERS, Processes, free_port, make_keys, prepare_database, sidecar_config, wait_port)

PARTICIPANT = "bench-bank"
DEADLINE_SECONDS = 10.0


async def _status(http: aiohttp.ClientSession, url: str, token: str) -> int:
    async with http.post(url, data=b'{"amount_minor": 1}', headers={"Authorization": f"Bearer {token}"}) as answer:
        await answer.read()
        return answer.status


def _wanted(status: int, refused: bool) -> bool:
    return status == 403 if refused else 200 <= status < 300


async def _until(http: aiohttp.ClientSession, url: str, token: str, refused: bool) -> float:
    """Seconds until a request is refused with 403 (or accepted: 2xx), raising past the deadline."""
    started = time.perf_counter()
    while not _wanted(await _status(http, url, token), refused):
        if time.perf_counter() - started > DEADLINE_SECONDS:
            raise RuntimeError(f"no {'refusal' if refused else 'acceptance'} within {DEADLINE_SECONDS} s")
    return time.perf_counter() - started


async def measure(dsn: str, url: str, token: str, rounds: int) -> list[float]:
    sys.path.insert(0, str(ROOT))
    from repair.participant_cli import QUERIES
    from symphony.db import connect

    conn = await connect(dsn)
    figures: list[float] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
            for _ in range(rounds):
                await conn.fetchrow(QUERIES["participant_change"], PARTICIPANT, "REINSTATE", "bench", "bench round")
                await _until(http, url, token, refused=False)
                row = await conn.fetchrow(QUERIES["participant_change"], PARTICIPANT, "SUSPEND", "bench", "bench")
                assert row is not None, "the suspension changed nothing"
                figures.append(await _until(http, url, token, refused=True))
    finally:
        await conn.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="symphony-suspend-bench-"))
    procs = Processes()
    server, dsn = asyncio.run(prepare_database(work))
    try:
        token = make_keys(work)
        upstream_port, port = free_port(), free_port()
        procs.start([sys.executable, str(SERVERS), "upstream", str(upstream_port)])
        wait_port(upstream_port)
        config = sidecar_config(work, "sidecar", port, f"http://127.0.0.1:{upstream_port}", "batch", args.workers)
        text = config.read_text().replace('log_level = "warning"', 'log_level = "warning"\npolicy_poll_seconds = 30.0')
        config.write_text(text)
        env = {**os.environ, "SYMPHONY_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}
        procs.start([sys.executable, "-m", "symphony", "sidecar", "--config", str(config)], env=env, cwd=ROOT)
        wait_port(port)
        figures = asyncio.run(measure(dsn, f"http://127.0.0.1:{port}/v1/payments", token, args.rounds))
    finally:
        procs.stop_all()
        server.stop()  # type: ignore[attr-defined]
        shutil.rmtree(work, ignore_errors=True)
    ms = sorted(f * 1000 for f in figures)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    print(f"suspension: COMMIT to first 403, {len(ms)} rounds, sidecar workers {args.workers}: "
          f"median {statistics.median(ms):.1f} ms, p90 {p90:.1f} ms, worst {ms[-1]:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
