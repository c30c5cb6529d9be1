"""Forwarder benchmark: drain rate vs the raw binary COPY ceiling, lag, catch-up.

Run once, on an otherwise idle machine (figures are indicative on a shared one):

    .venv/bin/python bench/forwarder_bench.py [--records 1000000] [--streams 4]
        [--load-seconds 20] [--rate 10000] [--outage-seconds 60] [--fast]

In one run, against one embedded PostgreSQL 18 (durable settings unless --fast):

1. ceiling: the rows of a pre-filled journal, decoded in memory beforehand, are
   COPYed (asyncpg binary COPY, `copy_records_to_table`) into
   ingress_attestations of a fresh database, one connection per stream, in
   batches of batch_rows_max, each batch its own transaction;
2. drain: `symphony forwarder` (a real process) ships the same journal into a
   second fresh database; rows/s from its first commit to its last, and from
   the process start;
3. lag: a writer process appends INGRESS/OUTCOME pairs at a steady rate (the
   records a sidecar writes for `rate / 2` requests/s); lag per record =
   first observation of a checkpoint covering it - its append time (polled
   every 10 ms, so an upper bound), p50/p99/max;
4. catch-up: under the same load PostgreSQL is stopped for --outage-seconds,
   then started; time from restart until the checkpoints reach the journal
   heads of that moment.

Prints one table of figures and their ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

import journal  # noqa: E402
from forwarder import rows  # noqa: E402
from symphony import attestation  # noqa: E402
from symphony.db import connect, migrate  # noqa: E402
from symphony.embedded import EmbeddedPostgres  # noqa: E402

NODE = "bench-node"
BATCH_ROWS = 5000


SYMPHONY_EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def snowflake(at_us: int, n: int) -> int:
    """An attestation id in the Snowflake layout (ms | worker | counter), bigint-safe."""
    return ((at_us // 1000 - SYMPHONY_EPOCH_MS) << 22) | (n & 0x3FFFFF)


def ingress(n: int, at_us: int) -> bytes:
    return attestation.encode(attestation.IngressBody(
        version=1, received_at_us=at_us, participant_id="demo-bank-a", auth_method="jwt", key_id="kid-2025-01",
        policy_version=1, method="POST", route="/v1/payments", executes=True,
        body_sha256=os.urandom(32), idempotency_key_hash=os.urandom(32),
        traceparent=f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01", verdict="accepted"))


def outcome(ingress_seq: int, at_us: int) -> bytes:
    return attestation.encode(attestation.OutcomeBody(
        version=1, ingress_seq=ingress_seq, completed_at_us=at_us, status=201, disposition="executed",
        latency_us=1800, reason=""))


def prefill(journal_dir: Path, streams: int, total: int) -> None:
    per_stream = total // streams
    for stream_id in range(streams):
        with journal.Writer(journal_dir / NODE / str(stream_id), node_id=NODE, stream_id=stream_id,
                            durability="none") as writer:
            at_us = time.time_ns() // 1000
            for n in range(per_stream - 1):  # + GENESIS = per_stream records
                writer.append(journal.RecordType.INGRESS, ingress(n, at_us + n), snowflake(at_us, n))


def load_rows(journal_dir: Path, streams: int) -> dict[int, list[tuple[object, ...]]]:
    out = {}
    for stream_id in range(streams):
        path = journal_dir / NODE / str(stream_id)
        genesis_at = journal.Reader(path).segments()[0].created_unix_ns // 1000
        records = list(journal.Reader(path).records(1))
        produced, error = rows.to_rows(NODE, stream_id, records, genesis_at)
        assert error is None
        out[stream_id] = produced
    return out


async def fresh_database(admin_dsn: str, name: str) -> str:
    admin = await connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + name
    conn = await connect(dsn)
    try:
        await migrate.apply(conn)
    finally:
        await conn.close()
    return dsn


async def ceiling(dsn: str, stream_rows: dict[int, list[tuple[object, ...]]]) -> tuple[int, float]:
    async def one(stream_rows_list: list[tuple[object, ...]]) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for start in range(0, len(stream_rows_list), BATCH_ROWS):
                await conn.copy_records_to_table("ingress_attestations", records=stream_rows_list[start:start + BATCH_ROWS],
                                                 columns=rows.COLUMNS, timeout=120)
        finally:
            await conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(one(r) for r in stream_rows.values()))
    elapsed = time.perf_counter() - began
    return sum(len(r) for r in stream_rows.values()), elapsed


def start_forwarder(dsn: str, journal_dir: Path, log: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SYMPHONY_FORWARDER_NODE_ID": NODE, "SYMPHONY_FORWARDER_JOURNAL_DIR": str(journal_dir),
           "SYMPHONY_FORWARDER_ADMIN_PORT": str(port), "SYMPHONY_FORWARDER_BATCH_ROWS_MAX": str(BATCH_ROWS),
           "SYMPHONY_FORWARDER_LOG_LEVEL": "warning"}
    with log.open("ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "symphony", "forwarder", "--database-url", dsn],
                                cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)


async def shipped(conn: asyncpg.Connection) -> dict[int, int]:
    found = await conn.fetch("SELECT stream_id, last_seq FROM journal_checkpoints WHERE node_id = $1", NODE)
    return {r["stream_id"]: r["last_seq"] for r in found}


async def drain(dsn: str, journal_dir: Path, total: int, log: Path) -> dict[str, float]:
    conn = await connect(dsn)
    began = time.perf_counter()
    process = start_forwarder(dsn, journal_dir, log, free_port())
    first = None
    try:
        deadline = began + 600
        while time.perf_counter() < deadline:
            done = sum((await shipped(conn)).values())
            now = time.perf_counter()
            if done and first is None:
                first = (now, done)
            if done >= total:
                break
            await asyncio.sleep(0.02)
        else:
            raise SystemExit(f"drain did not finish; see {log}")
        end = time.perf_counter()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        await conn.close()
    assert first is not None
    return {"rows_per_second": (total - first[1]) / (end - first[0]),
            "rows_per_second_from_start": total / (end - began), "seconds": end - began}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def writer_main(journal_dir: str, streams: int, rate: int, seconds: float, out: str) -> None:
    """Separate process: append INGRESS+OUTCOME pairs at `rate` records/s, round robin
    over streams; write (stream, seq, append time) samples at the end."""
    writers = {s: journal.Writer(Path(journal_dir) / NODE / str(s), node_id=NODE, stream_id=s, durability="batch")
               for s in range(streams)}
    appended: dict[int, list[tuple[int, float]]] = {s: [] for s in range(streams)}
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    tick = 0.002
    per_tick = rate * tick / 2  # pairs per tick
    began = time.monotonic()
    owed = 0.0
    n = 0
    while not stop and time.monotonic() - began < seconds:
        owed += per_tick
        while owed >= 1:
            owed -= 1
            stream_id = n % streams
            writer = writers[stream_id]
            now_us = time.time_ns() // 1000
            seq, _ = writer.append(journal.RecordType.INGRESS, ingress(n, now_us), snowflake(now_us, n))
            appended[stream_id].append((seq, time.time()))
            seq2, _ = writer.append(journal.RecordType.OUTCOME, outcome(seq, now_us), snowflake(now_us, n))
            appended[stream_id].append((seq2, time.time()))
            n += 1
        next_tick = began + tick * (1 + int((time.monotonic() - began) / tick))
        time.sleep(max(0.0, next_tick - time.monotonic()))
    for writer in writers.values():
        writer.close()
    Path(out).write_text(json.dumps({str(s): v for s, v in appended.items()}))


async def observe(conn_dsn: str, until: float, seen: list[tuple[float, dict[int, int]]]) -> None:
    conn = None
    while time.time() < until:
        try:
            if conn is None:
                conn = await asyncpg.connect(conn_dsn, timeout=1)
            seen.append((time.time(), await shipped(conn)))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError):
            conn = None
        await asyncio.sleep(0.01)
    if conn is not None:
        await conn.close()


def lags(samples_path: Path, seen: list[tuple[float, dict[int, int]]], window: tuple[float, float]) -> list[float]:
    appended = {int(s): v for s, v in json.loads(samples_path.read_text()).items()}
    out = []
    for stream_id, entries in appended.items():
        index = 0
        for seq, at in entries:
            if not window[0] <= at < window[1]:
                continue
            while index < len(seen) and seen[index][1].get(stream_id, 0) < seq:
                index += 1
            if index == len(seen):
                break
            out.append(seen[index][0] - at)
    return out


async def steady(server: EmbeddedPostgres, admin_dsn: str, work: Path, streams: int, rate: int,
                 load_seconds: float, outage_seconds: float) -> dict[str, float]:
    dsn = await fresh_database(admin_dsn, "bench_lag")
    journal_dir = work / "journal-lag"
    for stream_id in range(streams):  # streams exist (GENESIS) before the forwarder starts
        journal.Writer(journal_dir / NODE / str(stream_id), node_id=NODE, stream_id=stream_id, durability="none").close()
    forwarder = start_forwarder(dsn, journal_dir, work / "forwarder-lag.log", free_port())
    samples = work / "appended.json"
    total_seconds = load_seconds + (outage_seconds + 45 if outage_seconds else 0)
    writer = subprocess.Popen([sys.executable, __file__, "--writer", str(journal_dir), str(streams), str(rate),
                               str(total_seconds), str(samples)], cwd=REPO)
    began = time.time()
    seen: list[tuple[float, dict[int, int]]] = []
    figures: dict[str, float] = {}
    try:
        await asyncio.sleep(2)  # start-up of both processes
        await observe(dsn, began + 2 + load_seconds, seen)
        steady_window = (began + 3, began + 2 + load_seconds)
        if outage_seconds:
            server.kill()
            killed_at = time.time()
            await asyncio.sleep(outage_seconds)
            server.restart()
            restarted = time.time()
            heads = {s: journal.Reader(journal_dir / NODE / str(s)).segments()[-1].write_seq for s in range(streams)}
            catch: list[tuple[float, dict[int, int]]] = []
            deadline = restarted + 300
            while time.time() < deadline:
                await observe(dsn, time.time() + 0.5, catch)
                if catch and all(catch[-1][1].get(s, 0) >= h for s, h in heads.items()):
                    break
            caught = next(t for t, cp in catch if all(cp.get(s, 0) >= h for s, h in heads.items()))
            figures["outage_seconds"] = restarted - killed_at
            figures["backlog_records"] = float(sum(heads.values()) - sum(seen[-1][1].values()))
            figures["catch_up_seconds"] = caught - restarted
        writer.send_signal(signal.SIGTERM)
        writer.wait(60)
    finally:
        if writer.poll() is None:
            writer.kill()
        forwarder.send_signal(signal.SIGTERM)
        forwarder.wait(60)
    values = sorted(lags(samples, seen, steady_window))
    figures["lag_p50_ms"] = 1000 * statistics.median(values)
    figures["lag_p99_ms"] = 1000 * values[int(len(values) * 0.99)]
    figures["lag_max_ms"] = 1000 * values[-1]
    figures["lag_samples"] = float(len(values))
    return figures


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="symphony-forwarder-bench-"))
    server = EmbeddedPostgres(work / "pg", fast=args.fast)
    admin_dsn = server.start().dsn
    try:
        journal_dir = work / "journal"
        t = time.perf_counter()
        prefill(journal_dir, args.streams, args.records)
        print(f"prefill: {args.records} records in {args.streams} streams, {time.perf_counter() - t:.1f} s", flush=True)
        stream_rows = load_rows(journal_dir, args.streams)
        copy_dsn = await fresh_database(admin_dsn, "bench_copy")
        count, elapsed = await ceiling(copy_dsn, stream_rows)
        del stream_rows
        copy_rate = count / elapsed
        print(f"raw binary COPY ceiling: {count} rows in {elapsed:.2f} s = {copy_rate:,.0f} rows/s", flush=True)
        drain_dsn = await fresh_database(admin_dsn, "bench_drain")
        result = await drain(drain_dsn, journal_dir, count, work / "forwarder-drain.log")
        print(f"forwarder drain: {result['rows_per_second']:,.0f} rows/s "
              f"({100 * result['rows_per_second'] / copy_rate:.0f} % of the ceiling); "
              f"{result['rows_per_second_from_start']:,.0f} rows/s including process start "
              f"({result['seconds']:.1f} s)", flush=True)
        if args.load_seconds:
            figures = await steady(server, admin_dsn, work, args.streams, args.rate, args.load_seconds,
                                   args.outage_seconds)
            print(f"steady load {args.rate} records/s ({args.rate // 2} requests/s): lag p50 "
                  f"{figures['lag_p50_ms']:.0f} ms, p99 {figures['lag_p99_ms']:.0f} ms, "
                  f"max {figures['lag_max_ms']:.0f} ms over {figures['lag_samples']:.0f} records", flush=True)
            if "catch_up_seconds" in figures:
                print(f"outage {figures['outage_seconds']:.0f} s (backlog {figures['backlog_records']:.0f} records): "
                      f"caught up {figures['catch_up_seconds']:.1f} s after PostgreSQL restarted", flush=True)
        print(f"machine: {os.cpu_count()} cores; PostgreSQL {'fast (fsync off)' if args.fast else 'durable'}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        writer_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=10_000, help="records/s appended during the lag test")
    parser.add_argument("--outage-seconds", type=float, default=60.0)
    parser.add_argument("--fast", action="store_true", help="PostgreSQL without fsync (not production-like)")
    asyncio.run(main(parser.parse_args()))
