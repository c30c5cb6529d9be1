"""Relayer benchmark: outbox dispatch throughput and latency, and against procrastinate.

    .venv/bin/pip install procrastinate "psycopg[binary]"   # bench only; NOT a runtime dependency
    .venv/bin/python bench/relayer_bench.py [--database-url URL] [--rows N] [--versus-rows N]
                                            [--concurrency 10,200] [--rounds 3]

In one run, on one PostgreSQL 18 (the embedded one, fsync off, in a temp dir,
unless --database-url is given), each measurement in a fresh database:

1. relayer + in-process no-op rail: N PENDING rows claimed, "dispatched" and
   completed (claim and write-back batched, outbox_events written by trigger),
   at the relayer's own design point (rail concurrency 2 000, claims of 1 000);
2. relayer + the HTTP rail simulator (swiftpay profile, zero added latency) as a
   separate process: dispatches/s with both on this machine;
2b. relayer + each real-rail simulator (mtn_momo, airtel_money, iso20022,
   `--real-rails`) as a separate process, settling at once (`--settle-ms 0`),
   with random credentials in a 0600 file as `up` makes them and payees the
   mobile money shapes accept (an MSISDN: an account like "ACC1" settles
   FAILED on MTN and Airtel, and a bench counting only SUCCESS rows would wait
   for ever; that is why an earlier attempt hung). MTN MoMo is asynchronous in
   its published shape: POST 202, then GET until SUCCESSFUL, so each dispatch
   is two HTTP calls and a status poll interval (`status_poll_interval_seconds`);
   Airtel and the RTGS answer final at once when the transfer settles at once.
   Every wait in this bench has a deadline (`--phase-timeout`), and rows that
   end FAILED stop the phase with their response code instead of a hang;
3. insert-to-rail-call latency: a separate process inserts payments (intent +
   outbox row, one transaction each, as the service does) at a fixed rate while
   the relayer (LISTEN/NOTIFY) dispatches to the no-op rail; p50/p99 of
   (rail call time - outbox created_at);
4. relayer against procrastinate (a well-known PostgreSQL task queue), each
   set up as fairly as it allows, at each `--concurrency`, `--rounds` times in
   alternating order:
   - the same rows: `--versus-rows` rows carrying the same payload (the
     relayer's outbox rows with their intents; procrastinate jobs whose
     arguments are that payload);
   - the same concurrency: the rail's `concurrency` for the relayer,
     the worker's `concurrency` for procrastinate; both no-op;
   - batching where each offers it: procrastinate defers with
     `batch_defer_async` (1 000 jobs a statement); it has no batched fetch or
     completion (one job per fetch, one per finish), the relayer claims and
     completes in batches (claims of up to 1 000);
   - LISTEN/NOTIFY on for both (procrastinate's `listen_notify=True`, the
     relayer's `listen = true`); jobs finished are kept by both (procrastinate's
     default `delete_jobs="never"`; the relayer keeps its rows);
   - worker start-up outside the timer: the worker starts on an empty queue
     and is waited for until it listens; then it runs a first 1 000 rows
     (without them procrastinate's per-job fetch is planned on an empty table
     and runs at half its speed); then all timed rows are inserted in ONE
     transaction, and the clock starts at its COMMIT (which sends the NOTIFY)
     and stops when the database shows every row done (polled every 20 ms,
     the same query shape for both). `--analyze` ANALYZEs the tables after
     the first 1 000 rows (statistics that say "nothing pending", as
     autovacuum leaves a queue table; see relayer/README.md for its effect).
   Phase 1 is timed the same way.

Figures are printed, with ratios; nothing is asserted (benchmarks, not tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from relayer import adapters, real_adapters  # noqa: E402
from relayer.config import RelayerConfig  # noqa: E402
from relayer.store import OutboxStore  # noqa: E402
from relayer.worker import Relayer  # noqa: E402
from symphony.db import connect, create_pool, migrate  # noqa: E402
from symphony.embedded import EmbeddedPostgres  # noqa: E402

INSERT_CHUNK = 5000
# Rows run through each worker before the timed batch (then ANALYZE): tables with
# statistics and plans made for them, as in a service that has been running.
WARMUP_ROWS = 1000


async def fresh_database(admin_dsn: str, name: str) -> str:
    conn = await connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = admin_dsn.rpartition("/")[0] + "/" + name
    conn = await connect(dsn)
    try:
        await migrate.apply(conn)
        await conn.execute("INSERT INTO participants (participant_id) VALUES ('bench')")
    finally:
        await conn.close()
    return dsn


async def bulk_insert(dsn: str, rows: int, rail: str, account: str = "ACC1") -> None:
    conn = await connect(dsn)
    try:
        await insert_rows(conn, rows, rail, account=account)
    finally:
        await conn.close()


async def insert_rows(conn: asyncpg.Connection, rows: int, rail: str, first: int = 0, account: str = "ACC1") -> None:
    """Payment intents and their outbox rows, INSERT_CHUNK a statement (numbered from first + 1)."""
    for start in range(first, first + rows, INSERT_CHUNK):
        count = min(INSERT_CHUNK, first + rows - start)
        seqs = list(range(start + 1, start + count + 1))
        await conn.execute(
            """WITH i AS (
                 INSERT INTO payment_intents (participant_id, idempotency_key, amount_minor, currency, rail,
                                              destination_account, attestation_id)
                 SELECT 'bench', 'k' || s, 100, 'KES', $1, $3, s FROM unnest($2::bigint[]) AS s
                 RETURNING intent_id, attestation_id)
               INSERT INTO payment_outbox (intent_id, participant_id, attestation_id, ingress_node_id,
                                           ingress_stream_id, ingress_seq, rail, payload)
               SELECT intent_id, 'bench', attestation_id, 'bench', 0, attestation_id, $1,
                      jsonb_build_object('amount_minor', 100, 'currency', 'KES',
                                         'destination_account', $3::text)
               FROM i""", rail, seqs, account)


def relayer_settings(rail: str, kind: str, url: str, concurrency: int, **rail_extra: object) -> RelayerConfig:
    return msgspec.convert({
        "rails": {rail: {"kind": kind, "url": url, "concurrency": concurrency, "timeout_seconds": 10,
                         **rail_extra}},
        "batch_size": 1000, "completion_batch_max": 2000, "lease_seconds": 60, "poll_interval_seconds": 0.2,
        "worker_id": "bench", "admin_port": 0}, RelayerConfig)


PHASE_TIMEOUT_SECONDS = 300.0


async def run_relayer_until(dsn: str, settings: RelayerConfig, rail: str, rows: int,
                            record_calls: bool = False) -> tuple[float, Relayer]:
    pool = await create_pool(dsn, min_size=2, max_size=4, init=OutboxStore.init_connection)
    built = {name: real_adapters.build_any(name, cfg) for name, cfg in settings.rails.items()}
    for adapter in built.values():
        if isinstance(adapter, adapters.NoopAdapter):
            adapter.record_calls = record_calls
    relayer = Relayer(settings, OutboxStore(pool, "bench"), built, database_url=dsn)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(relayer.run(stop))
    succeeded = relayer.metrics.succeeded.labels(rail)
    deadline = started + PHASE_TIMEOUT_SECONDS
    watcher = await connect(dsn)
    next_check = started + 1.0
    try:
        while succeeded._value.get() < rows or relayer.pending:  # noqa: SLF001 - reading our own counter
            await asyncio.sleep(0.005)
            if task.done():
                task.result()
            if time.perf_counter() > next_check:
                next_check = time.perf_counter() + 1.0
                failed = await watcher.fetch("SELECT last_response_code, count(*) AS n FROM payment_outbox "
                                             "WHERE status = 'FAILED' GROUP BY 1")
                if failed or time.perf_counter() > deadline:
                    stop.set()
                    await task
                    await pool.close()
                    raise RuntimeError(f"{rail}: {succeeded._value.get():.0f} of {rows} rows SUCCESS after "  # noqa: SLF001
                                       f"{time.perf_counter() - started:.0f} s; FAILED by code: "
                                       f"{ {r['last_response_code']: r['n'] for r in failed} }")
    finally:
        await watcher.close()
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    await pool.close()
    return elapsed, relayer


async def phase_noop(admin_dsn: str, rows: int, analyze: bool) -> dict[str, float]:
    """The relayer at its design point (concurrency 2 000), start-up outside the timer."""
    elapsed = await time_relayer(admin_dsn, "bench_noop", rows, 2000, analyze)
    return {"rows": rows, "concurrency": 2000, "seconds": round(elapsed, 3), "rows_per_second": round(rows / elapsed)}


async def wait_listening(conn: asyncpg.Connection, channel_prefix: str) -> None:
    """Until a session of this database has run LISTEN on the channel (the worker is up)."""
    deadline = time.monotonic() + 30
    while not await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE $1",
            f'LISTEN "{channel_prefix}%'):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no worker listens on {channel_prefix} after 30 s")
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # its first (empty) fetch done: the worker is idle


async def wait_done(conn: asyncpg.Connection, query: str, rows: int, task: asyncio.Task[None]) -> None:
    while await conn.fetchval(query) < rows:
        if task.done():
            task.result()
            raise RuntimeError("the worker stopped before every row was done")
        await asyncio.sleep(0.02)


async def time_relayer(admin_dsn: str, name: str, rows: int, concurrency: int, analyze: bool = False) -> float:
    """Seconds from the COMMIT of `rows` outbox rows to every row SUCCESS, the relayer already listening."""
    dsn = await fresh_database(admin_dsn, name)
    settings = msgspec.structs.replace(relayer_settings("noop", "noop", "", concurrency), poll_interval_seconds=1.0)
    pool = await create_pool(dsn, min_size=2, max_size=4, init=OutboxStore.init_connection)
    relayer = Relayer(settings, OutboxStore(pool, "bench"),
                      {n: adapters.build(n, cfg) for n, cfg in settings.rails.items()}, database_url=dsn)
    stop = asyncio.Event()
    task = asyncio.create_task(relayer.run(stop))
    conn = await connect(dsn)

    async def batch(first: int, count: int) -> float:
        writer = await connect(dsn)
        try:
            transaction = writer.transaction()
            await transaction.start()
            await insert_rows(writer, count, "noop", first)
            started = time.perf_counter()
            await transaction.commit()
        finally:
            await writer.close()
        await wait_done(conn, "SELECT count(*) FROM payment_outbox WHERE status = 'SUCCESS'", first + count, task)
        return time.perf_counter() - started

    try:
        await wait_listening(conn, "symphony_outbox")
        await batch(0, WARMUP_ROWS)
        if analyze:
            await conn.execute("ANALYZE payment_intents, payment_outbox, outbox_events")
        elapsed = await batch(WARMUP_ROWS, rows)
    finally:
        stop.set()
        await task
        await conn.close()
        await pool.close()
    await check_all_success(dsn, WARMUP_ROWS + rows)
    return elapsed


async def check_all_success(dsn: str, rows: int) -> None:
    conn = await connect(dsn)
    try:
        done = await conn.fetchval("SELECT count(*) FROM payment_outbox WHERE status = 'SUCCESS'")
        events = await conn.fetchval("SELECT count(*) FROM outbox_events")
    finally:
        await conn.close()
    assert done == rows and events == 3 * rows, (done, events)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_simulator(profile: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "symphony", "rail-sim", "--profile", profile, "--port", str(port),
                             "--log-level", "warning", *extra], cwd=REPO, stdin=subprocess.DEVNULL)


async def wait_port(port: int, sim: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if sim.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the simulator on port {port} did not start (exit {sim.poll()})") from None
            await asyncio.sleep(0.05)


async def phase_http(admin_dsn: str, rows: int) -> dict[str, float]:
    dsn = await fresh_database(admin_dsn, "bench_http")
    await bulk_insert(dsn, rows, "swiftpay")
    port = free_port()
    sim = start_simulator("swiftpay", port)
    try:
        await wait_port(port, sim)
        settings = relayer_settings("swiftpay", "swiftpay", f"http://127.0.0.1:{port}", 64)
        elapsed, _ = await run_relayer_until(dsn, settings, "swiftpay", rows)
    finally:
        sim.terminate()
        sim.wait(10)
    await check_all_success(dsn, rows)
    return {"rows": rows, "seconds": round(elapsed, 3), "dispatches_per_second": round(rows / elapsed)}


# A payee every real-rail shape accepts (MTN and Airtel want an MSISDN of 8-15 digits).
REAL_RAIL_PAYEE = "256700000001"


async def phase_real_rail(admin_dsn: str, rail: str, rows: int, concurrency: int) -> dict[str, float]:
    """Dispatches/s from the relayer to one real-rail simulator (a separate process), settling at once."""
    from rail_sim.up import ensure_credentials

    dsn = await fresh_database(admin_dsn, f"bench_{rail}")
    await bulk_insert(dsn, rows, rail, account=REAL_RAIL_PAYEE)
    folder = Path(tempfile.mkdtemp(prefix="symphony-bench-rail-"))
    credentials = ensure_credentials(folder / "credentials.json")
    port = free_port()
    sim = start_simulator(rail, port, "--settle-ms", "0", "--credentials-file", str(credentials))
    try:
        await wait_port(port, sim)
        settings = relayer_settings(rail, rail, f"http://127.0.0.1:{port}", concurrency,
                                    credentials_file=str(credentials), status_poll_interval_seconds=0.05)
        elapsed, _ = await run_relayer_until(dsn, settings, rail, rows)
    finally:
        sim.terminate()
        sim.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    await check_all_success(dsn, rows)
    return {"rows": rows, "concurrency": concurrency, "seconds": round(elapsed, 3),
            "dispatches_per_second": round(rows / elapsed)}


async def insert_paced(dsn: str, rate: float, seconds: float) -> int:
    """Insert one payment per transaction (intent + outbox row) at `rate` per second."""
    conn = await connect(dsn)
    count = int(rate * seconds)
    started = time.perf_counter()
    try:
        for index in range(count):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            async with conn.transaction():
                intent = await conn.fetchval(
                    "INSERT INTO payment_intents (participant_id, idempotency_key, amount_minor, currency, rail, "
                    "destination_account, attestation_id) VALUES ('bench', $1, 100, 'KES', 'noop', 'ACC1', $2) "
                    "RETURNING intent_id", uuid.uuid4().hex, index + 1)
                await conn.execute(
                    "INSERT INTO payment_outbox (intent_id, participant_id, attestation_id, ingress_node_id, "
                    "ingress_stream_id, ingress_seq, rail, payload) VALUES ($1, 'bench', $2, 'lat', 0, $2, 'noop', "
                    "'{\"amount_minor\": 100, \"currency\": \"KES\", \"destination_account\": \"A\"}')",
                    intent, index + 1)
    finally:
        await conn.close()
    return count


async def phase_latency(admin_dsn: str, rate: float, seconds: float) -> dict[str, float]:
    dsn = await fresh_database(admin_dsn, "bench_latency")
    rows = int(rate * seconds)
    inserter = subprocess.Popen([sys.executable, __file__, "--insert-only", dsn, "--rate", str(rate),
                                 "--seconds", str(seconds)], cwd=REPO)
    settings = relayer_settings("noop", "noop", "", 2000)
    settings = msgspec.structs.replace(settings, poll_interval_seconds=1.0)  # NOTIFY, not polling, sets latency
    _, relayer = await run_relayer_until(dsn, settings, "noop", rows, record_calls=True)
    inserter.wait(30)
    conn = await connect(dsn)
    try:
        created = {r["id"]: r["created_at"].timestamp()
                   for r in await conn.fetch("SELECT id, created_at FROM payment_outbox")}
    finally:
        await conn.close()
    adapter = relayer.adapters["noop"]
    assert isinstance(adapter, adapters.NoopAdapter)
    latencies = sorted((called - created[outbox_id]) * 1000 for outbox_id, _, called in adapter.calls)
    return {"rate_per_second": rate, "rows": rows, "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2), "max_ms": round(latencies[-1], 2)}


PAYLOAD: dict[str, Any] = {"amount_minor": 100, "currency": "KES", "destination_account": "ACC1"}


async def time_procrastinate(admin_dsn: str, name: str, rows: int, concurrency: int,
                             delete_jobs: str = "never", analyze: bool = False) -> float:
    """Seconds from the COMMIT of `rows` deferred jobs to every job succeeded, the worker already listening."""
    import procrastinate
    import psycopg

    logging.getLogger("procrastinate").setLevel(logging.ERROR)  # not its "App in __main__" notice
    dsn = await fresh_database(admin_dsn, name)
    # psycopg_pool's default is 4 connections (the relayer bench uses 4); procrastinate
    # runs a fetch and a finish per job, so it gets more: 10.
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn, min_size=4, max_size=10))

    @app.task(name="noop", queue="bench")
    async def noop(**payload: object) -> None:
        return None

    async def batch(first: int, count: int, worker: asyncio.Task[None]) -> float:
        async with await psycopg.AsyncConnection.connect(dsn) as writer:  # one transaction
            deferrer = noop.configure(connection=writer)
            for start in range(first, first + count, 1000):
                await deferrer.batch_defer_async(*({"outbox_ref": i, **PAYLOAD}
                                                   for i in range(start, min(start + 1000, first + count))))
            started = time.perf_counter()
            await writer.commit()
        # Done: every job succeeded (kept) or gone (deleted); the rows are visible since the COMMIT.
        await wait_done(conn, f"SELECT {first + count} - count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'",
                        first + count, worker)
        return time.perf_counter() - started

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        worker = asyncio.create_task(app.run_worker_async(
            queues=["bench"], concurrency=concurrency, wait=True, listen_notify=True, install_signal_handlers=False,
            delete_jobs=delete_jobs))
        conn = await connect(dsn)
        try:
            await wait_listening(conn, "procrastinate_")
            await batch(0, WARMUP_ROWS, worker)
            if analyze:
                await conn.execute("ANALYZE procrastinate_jobs, procrastinate_events")
            elapsed = await batch(WARMUP_ROWS, rows, worker)
        finally:
            worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                pass
            await conn.close()
    return elapsed


async def phase_versus(admin_dsn: str, rows: int, concurrencies: list[int], rounds: int,
                       analyze: bool) -> dict[str, object] | None:
    try:
        import procrastinate
    except ImportError:
        print("procrastinate is not installed (pip install procrastinate 'psycopg[binary]'); skipped")
        return None
    results: dict[str, object] = {"version": getattr(procrastinate, "__version__", "?"), "rows": rows,
                                  "analyzed": analyze}
    for concurrency in concurrencies:
        relayer_s: list[float] = []
        procrastinate_s: list[float] = []
        for number in range(rounds):
            order = ["relayer", "procrastinate"] if number % 2 == 0 else ["procrastinate", "relayer"]
            for who in order:
                if who == "relayer":
                    relayer_s.append(await time_relayer(admin_dsn, "bench_versus_relayer", rows, concurrency,
                                                        analyze=analyze))
                else:
                    procrastinate_s.append(await time_procrastinate(admin_dsn, "bench_versus_procrastinate", rows,
                                                                    concurrency, analyze=analyze))
            print(f"  concurrency {concurrency} round {number + 1}: relayer {rows / relayer_s[-1]:.0f} rows/s, "
                  f"procrastinate {rows / procrastinate_s[-1]:.0f} jobs/s", file=sys.stderr, flush=True)
        ratios = [p / r for r, p in zip(relayer_s, procrastinate_s)]  # per round: time ratio = throughput ratio
        results[f"concurrency_{concurrency}"] = {
            "relayer_rows_per_second": round(rows / statistics.median(relayer_s)),
            "procrastinate_jobs_per_second": round(rows / statistics.median(procrastinate_s)),
            "ratio_median": round(statistics.median(ratios), 1),
            "ratio_rounds": [round(v, 1) for v in ratios],
        }
    return results


async def main(args: argparse.Namespace) -> None:
    server = None
    root = None
    admin_dsn = args.database_url
    if not admin_dsn:
        root = Path(tempfile.mkdtemp(prefix="symphony-bench-pg-"))
        server = EmbeddedPostgres(root, fast=True)
        admin_dsn = server.start().dsn
    try:
        results: dict[str, object] = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "load_average_1min_before": round(os.getloadavg()[0], 2)},
        }
        if not args.only_real_rails:
            results["relayer_noop"] = await phase_noop(admin_dsn, args.rows, args.analyze)
        if args.only_real_rails:
            # The swiftpay simulator (one HTTP call per dispatch) as the same run's reference.
            results["relayer_http"] = await phase_http(admin_dsn, args.http_rows)
            print(f"swiftpay: {results['relayer_http']}", file=sys.stderr, flush=True)
            for rail in args.real_rails.split(","):
                results[f"relayer_{rail}"] = await phase_real_rail(admin_dsn, rail, args.http_rows,
                                                                   args.real_rail_concurrency)
                print(f"{rail}: {results[f'relayer_{rail}']}", file=sys.stderr, flush=True)
            results["machine"]["load_average_1min_after"] = round(os.getloadavg()[0], 2)  # type: ignore[index]
            print(json.dumps(results, indent=2))
            return
        results["relayer_http"] = await phase_http(admin_dsn, args.http_rows)
        for rail in [r for r in args.real_rails.split(",") if r]:
            results[f"relayer_{rail}"] = await phase_real_rail(admin_dsn, rail, args.http_rows,
                                                               args.real_rail_concurrency)
        results["latency"] = await phase_latency(admin_dsn, args.rate, args.seconds)
        results["versus_procrastinate"] = await phase_versus(
            admin_dsn, args.versus_rows, [int(c) for c in args.concurrency.split(",")], args.rounds, args.analyze)
        results["machine"]["load_average_1min_after"] = round(os.getloadavg()[0], 2)  # type: ignore[index]
        print(json.dumps(results, indent=2))
    finally:
        if server is not None and root is not None:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="admin DSN of a PostgreSQL 18 (default: embedded, fsync off)")
    parser.add_argument("--rows", type=int, default=20_000, help="rows for the no-op relayer phase")
    parser.add_argument("--http-rows", type=int, default=4_000, help="rows for the HTTP simulator phase")
    parser.add_argument("--real-rails", default="mtn_momo,airtel_money,iso20022",
                        help="real-rail simulators to measure after the swiftpay one (comma-separated; '' for none)")
    parser.add_argument("--real-rail-concurrency", type=int, default=256,
                        help="the relayer's rail concurrency against each real-rail simulator (default 256)")
    parser.add_argument("--only-real-rails", action="store_true",
                        help="measure only the simulators: swiftpay (the reference) and the real rails")
    parser.add_argument("--versus-rows", type=int, default=5_000, help="rows for the comparison with procrastinate")
    parser.add_argument("--concurrency", default="10,200", help="concurrencies of the comparison (comma-separated)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the comparison, alternating who goes first")
    parser.add_argument("--rate", type=float, default=500.0, help="payments/s for the latency phase")
    parser.add_argument("--seconds", type=float, default=6.0, help="duration of the latency phase")
    parser.add_argument("--analyze", action="store_true", help="ANALYZE the tables after each worker's first rows")
    parser.add_argument("--insert-only", metavar="DSN", help=argparse.SUPPRESS)
    cli = parser.parse_args()
    import uvloop

    if cli.insert_only:
        uvloop.run(insert_paced(cli.insert_only, cli.rate, cli.seconds))
    else:
        uvloop.run(main(cli))
