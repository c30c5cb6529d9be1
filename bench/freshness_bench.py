"""Checkpoint freshness: time from a record's append to a *witnessed* checkpoint covering it.

    .venv/bin/python bench/freshness_bench.py [--rate 10000] [--streams 2] [--seconds 30] [--fast]

Real processes, with their default settings (checkpoint_interval_seconds 1.0,
the forwarder's poll_interval_ms 20 and witness_poll_interval_ms 200):

- an embedded PostgreSQL 18 (durable unless --fast);
- `symphony witness` on its own state directory and key, trusting the node key;
- `symphony forwarder` shipping the journal, checking each CHECKPOINT's
  signature, submitting the newest checkpoint of each stream to the witness
  and storing the cosignature in log_cosignatures;
- a writer process (this file, --writer) standing in for the sidecar's
  workers: per stream it opens the journal exactly as a sidecar worker does
  (`ingress_sidecar.server.Worker._open_journal`: the Attestor with the node's
  CheckpointSigner, durability batch, checkpoints published to a directory)
  and runs the worker's own checkpoint task (`Worker._checkpoints`) beside a
  paced appender: INGRESS + OUTCOME pairs (what a sidecar writes for one
  request) at `--rate` records/s in total, round robin over `--streams`
  streams, in 2 ms ticks. No HTTP: the sidecar's request path is measured by
  bench/sidecar_bench.py; this one measures the log's own pipeline.

Per record: append time (wall clock, taken when the append returned) against
(a) the first time this script saw (polling log_cosignatures every 10 ms: an
upper bound) a cosignature of a checkpoint whose tree size covers it
(size >= seq), and (b) that cosignature's stored_at (now() of the
publisher's transaction: a lower bound by the length of that short
transaction). The first 3 s of the writer's load are warm-up and its last 1.5 s are covered
by the checkpoint a clean stop cuts: neither is counted. The split: append ->
the CHECKPOINT's cut (log_checkpoints.cut_at), cut -> shipped
(log_checkpoints.shipped_at), shipped -> cosignature stored.

Target (issue 13): p99 <= 2 s at 10 k records/s (Tessera: 3.1 s average
time-to-integrate at 10 k/s; Rekor v2: up to 20 s). Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

NODE = "bench-node"
PREFIX = "symphony.example/bench"
WITNESS_NAME = "witness.bench.example/w1"
WARM_UP_SECONDS = 3.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"exited with {process.returncode} before listening on {port}; see {log}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}; see {log}")


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))] if values else float("nan")


# -- the writer process --------------------------------------------------------------------


def writer_main(journal_dir: str, key_file: str, publish_dir: str, streams: int, rate: int, seconds: float,
                out: str) -> None:
    asyncio.run(_write(Path(journal_dir), key_file, publish_dir, streams, rate, seconds, Path(out)))


async def _write(journal_dir: Path, key_file: str, publish_dir: str, streams: int, rate: int, seconds: float,
                 out: Path) -> None:
    from ingress_sidecar.config import SidecarConfig
    from ingress_sidecar.server import Worker
    from symphony import attestation as att

    settings = SidecarConfig(node_id=NODE, journal_dir=str(journal_dir), durability="batch", log_key_file=key_file,
                             log_origin_prefix=PREFIX, checkpoint_publish_dir=publish_dir)
    workers = [Worker(settings, stream_id=s, port=0, database_url="") for s in range(streams)]
    attestors = [worker._open_journal() for worker in workers]
    tasks = [asyncio.create_task(worker._checkpoints(attestor)) for worker, attestor in zip(workers, attestors)]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    appended = {s: array.array("d") for s in range(streams)}  # seq, time, seq, time, ...
    tick, n = 0.002, 0
    began = time.monotonic()
    digest = bytes(32)
    while not stop.is_set() and time.monotonic() - began < seconds:
        due = int((time.monotonic() - began) * rate / 2)  # pairs owed by now: a late tick catches up
        while n < due:
            stream_id = n % streams
            attestor = attestors[stream_id]
            now_us = time.time_ns() // 1000
            attestation_id = ((now_us // 1000 - 1_735_689_600_000) << 22) | (n & 0x3FFFFF)
            seq = attestor.append_ingress(att.IngressBody(
                version=att.BODY_VERSION, received_at_us=now_us, participant_id="demo-bank-a", auth_method="jwt",
                key_id="kid-2025-01", policy_version=1, method="POST", route="/v1/payments", executes=True,
                body_sha256=digest, idempotency_key_hash=digest, traceparent=f"00-{n:032x}-{n:016x}-01",
                verdict="accepted"), attestation_id)
            appended[stream_id].extend((seq, time.time()))
            seq = attestor.append_outcome(att.OutcomeBody(
                version=att.BODY_VERSION, ingress_seq=seq, completed_at_us=now_us, status=201,
                disposition="executed", latency_us=1800, reason=""), attestation_id)
            appended[stream_id].extend((seq, time.time()))
            n += 1
        next_tick = began + tick * (1 + int((time.monotonic() - began) / tick))
        try:
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_tick - time.monotonic()))
        except asyncio.TimeoutError:
            pass
    for worker in workers:
        worker.stop.set()
    await asyncio.gather(*tasks)
    for attestor in attestors:
        attestor.close()  # cuts a last checkpoint, as a worker does at stop
    out.write_text(json.dumps({str(s): list(v) for s, v in appended.items()}))


def cut_cost(work: Path, key_file: str, cuts: int = 200) -> dict[str, list[float]]:
    """What one checkpoint costs the sidecar, by its own code, each cut after
    100 appended records: `cut` = `Attestor.checkpoint(publish=False)` (sign,
    CHECKPOINT record: on the worker's event loop), `publish` = the signer's
    atomic replace of the published file with its fsyncs (in a thread);
    CPU µs and wall ms each, sorted."""
    from ingress_sidecar.config import SidecarConfig
    from ingress_sidecar.server import Worker
    from symphony import attestation as att

    settings = SidecarConfig(node_id=NODE, journal_dir=str(work / "cut-journal"), durability="batch",
                             log_key_file=key_file, log_origin_prefix=PREFIX,
                             checkpoint_publish_dir=str(work / "cut-tlog"))
    attestor = Worker(settings, stream_id=0, port=0, database_url="")._open_journal()
    assert attestor.signer is not None
    body = att.HeartbeatBody(version=att.BODY_VERSION, at_us=time.time_ns() // 1000)
    out: dict[str, list[float]] = {"cut_cpu": [], "cut_wall": [], "publish_cpu": [], "publish_wall": []}
    try:
        for _ in range(cuts):
            for _ in range(100):
                attestor.append(att.RecordType.HEARTBEAT, body, 0)
            cpu, wall = time.process_time(), time.perf_counter()
            signed = attestor.checkpoint(publish=False)
            out["cut_cpu"].append((time.process_time() - cpu) * 1e6)
            out["cut_wall"].append((time.perf_counter() - wall) * 1e3)
            assert signed is not None
            cpu, wall = time.process_time(), time.perf_counter()
            attestor.signer.publish(signed)
            out["publish_cpu"].append((time.process_time() - cpu) * 1e6)
            out["publish_wall"].append((time.perf_counter() - wall) * 1e3)
    finally:
        attestor.close()
    for values in out.values():
        values.sort()
    return out


# -- the bench ------------------------------------------------------------------------------


async def observe(dsn: str, until: float, seen: list[tuple[float, dict[int, int]]]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while time.time() < until:
            rows = await conn.fetch("SELECT stream_id, max(tree_size) AS size FROM log_cosignatures "
                                    "WHERE node_id = $1 GROUP BY stream_id", NODE)
            seen.append((time.time(), {r["stream_id"]: r["size"] for r in rows}))
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


def first_covering(appended: list[tuple[int, float]], covers: list[tuple[float, int]]) -> list[float | None]:
    """For each (seq, t) in seq order: the first time in `covers` (time, size; time order,
    size non-decreasing) with size >= seq, or None."""
    out: list[float | None] = []
    index = 0
    for seq, _ in appended:
        while index < len(covers) and covers[index][1] < seq:
            index += 1
        out.append(covers[index][0] if index < len(covers) else None)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=10_000, help="records/s appended, over all streams")
    parser.add_argument("--streams", type=int, default=2, help="journal streams (a sidecar's workers)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--fast", action="store_true", help="PostgreSQL without fsync (not production-like)")
    args = parser.parse_args()
    return asyncio.run(run(args))


async def run(args: argparse.Namespace) -> int:
    from symphony.checkpoints import load_log_key
    from symphony.db import connect, migrate
    from symphony.embedded import EmbeddedPostgres
    from symphony.tlog import note, origins
    from symphony.upstream_headers import write_keypair
    from witness.cli import keygen

    work = Path(tempfile.mkdtemp(prefix="symphony-freshness-bench-"))
    log = work / "daemons.log"
    server = EmbeddedPostgres(work / "pg", fast=args.fast)
    dsn = server.start().dsn
    processes: list[subprocess.Popen[bytes]] = []
    load_before = os.getloadavg()[0]
    try:
        conn = await connect(dsn)
        try:
            await migrate.apply(conn)
        finally:
            await conn.close()
        keys = work / "keys"
        keys.mkdir()
        write_keypair(keys / "node-log.pem", keys / "node-log.pub.pem")
        name = origins.log_name(PREFIX, NODE)
        node_vkey = note.Signer(name, load_log_key(keys / "node-log.pem")).verifier.vkey()
        (keys / "trusted-logs.txt").write_text(f"{name} {node_vkey}\n")
        witness_vkey = keygen(WITNESS_NAME, work / "witness" / "witness.pem").verifier.vkey()
        cost = cut_cost(work, str(keys / "node-log.pem"))
        print(f"one checkpoint ({len(cost['cut_cpu'])} cuts), p50 / p99: on the worker's loop (sign, CHECKPOINT record) "
              f"{percentile(cost['cut_wall'], .5):.2f} / {percentile(cost['cut_wall'], .99):.2f} ms wall, "
              f"{percentile(cost['cut_cpu'], .5):.0f} / {percentile(cost['cut_cpu'], .99):.0f} us CPU; publishing the "
              f"file (in a thread) {percentile(cost['publish_wall'], .5):.2f} / "
              f"{percentile(cost['publish_wall'], .99):.2f} ms wall, {percentile(cost['publish_cpu'], .5):.0f} / "
              f"{percentile(cost['publish_cpu'], .99):.0f} us CPU; once per checkpoint_interval_seconds per worker",
              flush=True)

        def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
            with log.open("ab") as handle:
                process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=handle,
                                           stderr=subprocess.STDOUT)
            processes.append(process)
            return process

        witness_port = free_port()
        witness = start([sys.executable, "-m", "symphony", "witness"], {
            "SYMPHONY_WITNESS_NAME": WITNESS_NAME, "SYMPHONY_WITNESS_KEY_FILE": str(work / "witness" / "witness.pem"),
            "SYMPHONY_WITNESS_STATE_DIR": str(work / "witness" / "state"),
            "SYMPHONY_WITNESS_TRUSTED_LOGS_FILE": str(keys / "trusted-logs.txt"),
            "SYMPHONY_WITNESS_LISTEN_PORT": str(witness_port), "SYMPHONY_WITNESS_ADMIN_PORT": str(free_port()),
            "SYMPHONY_WITNESS_LOG_LEVEL": "warning"})
        wait_port(witness_port, witness, log)
        journal_dir = work / "journal"
        samples = work / "appended.json"
        writer = start([sys.executable, __file__, "--writer", str(journal_dir), str(keys / "node-log.pem"),
                        str(work / "tlog"), str(args.streams), str(args.rate), str(args.seconds), str(samples)], {})
        forwarder_admin = free_port()
        forwarder = start([sys.executable, "-m", "symphony", "forwarder", "--database-url", dsn], {
            "SYMPHONY_FORWARDER_NODE_ID": NODE, "SYMPHONY_FORWARDER_JOURNAL_DIR": str(journal_dir),
            "SYMPHONY_FORWARDER_ADMIN_PORT": str(forwarder_admin), "SYMPHONY_FORWARDER_DATA_DIR": str(work),
            "SYMPHONY_FORWARDER_LOG_ORIGIN_PREFIX": PREFIX, "SYMPHONY_FORWARDER_LOG_KEY": node_vkey,
            "SYMPHONY_FORWARDER_WITNESSES": json.dumps([f"http://127.0.0.1:{witness_port} {witness_vkey}"]),
            "SYMPHONY_FORWARDER_LOG_LEVEL": "warning"})
        wait_port(forwarder_admin, forwarder, log)
        began = time.time()
        seen: list[tuple[float, dict[int, int]]] = []
        print(f"freshness: {args.rate} records/s over {args.streams} streams for {args.seconds:.0f} s; "
              f"1-min load {load_before:.2f}", flush=True)
        await observe(dsn, began + args.seconds + 5, seen)
        writer.wait(60)
        if writer.returncode != 0:
            raise SystemExit(f"the writer failed ({writer.returncode}); see {log}")
        conn = await connect(dsn)
        try:
            checkpoints = await conn.fetch(
                "SELECT c.stream_id, c.tree_size, extract(epoch FROM c.cut_at)::float8 AS cut, "
                "extract(epoch FROM c.shipped_at)::float8 AS shipped, "
                "(SELECT extract(epoch FROM min(s.stored_at))::float8 FROM log_cosignatures s "
                " WHERE (s.node_id, s.stream_id, s.epoch, s.tree_size) = (c.node_id, c.stream_id, c.epoch, c.tree_size))"
                " AS stored FROM log_checkpoints c WHERE c.node_id = $1 ORDER BY c.stream_id, c.tree_size", NODE)
            refusals = await conn.fetchval("SELECT count(*) FROM repair_incidents WHERE kind = 'CHECKPOINT_REFUSED'")
        finally:
            await conn.close()
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        server.stop()
    raw = json.loads(samples.read_text())
    shutil.rmtree(work, ignore_errors=True)
    report(args, raw, seen, [dict(r) for r in checkpoints], int(refusals), load_before)
    return 0


def report(args: argparse.Namespace, raw: dict[str, list[float]], seen: list[tuple[float, dict[int, int]]],
           checkpoints: list[dict[str, float]], refusals: int, load_before: float) -> None:
    observed, stored, to_cut, to_ship, to_cosign = [], [], [], [], []
    missing = counted = 0
    # The writer's own load period: the first seconds are warm-up, and the last
    # checkpoint interval is covered by the clean stop's checkpoint, not the timer's.
    first = min(flat[1] for flat in raw.values() if flat)
    last = max(flat[-1] for flat in raw.values() if flat)
    window = (first + WARM_UP_SECONDS, last - 1.5)
    for stream_text, flat in raw.items():
        stream_id = int(stream_text)
        appended = [(int(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]
        polled = [(at, sizes.get(stream_id, 0)) for at, sizes in seen]
        mine = [c for c in checkpoints if c["stream_id"] == stream_id]
        cosigned = sorted(((c["stored"], int(c["tree_size"])) for c in mine if c["stored"] is not None))
        cosigned_monotone: list[tuple[float, int]] = []  # first time each size (or a larger one) was cosigned
        for at, size in cosigned:
            if not cosigned_monotone or size > cosigned_monotone[-1][1]:
                cosigned_monotone.append((at, size))
        cuts = [(c["cut"], int(c["tree_size"])) for c in mine]
        by_size = {int(c["tree_size"]): c for c in mine}
        first_polled = first_covering(appended, polled)
        first_stored = first_covering(appended, cosigned_monotone)
        first_cut = first_covering(appended, cuts)
        for (seq, at), polled_at, stored_at, cut_at in zip(appended, first_polled, first_stored, first_cut):
            if not window[0] <= at < window[1]:
                continue
            counted += 1
            if polled_at is None or stored_at is None or cut_at is None:
                missing += 1
                continue
            observed.append(polled_at - at)
            stored.append(stored_at - at)
            size = next(s for t, s in cosigned_monotone if t == stored_at)
            cp = by_size[size]
            to_cut.append(cp["cut"] - at)
            to_ship.append(cp["shipped"] - cp["cut"])
            to_cosign.append(cp["stored"] - cp["shipped"])
    for values in (observed, stored, to_cut, to_ship, to_cosign):
        values.sort()
    total_checkpoints = len(checkpoints)
    witnessed = sum(1 for c in checkpoints if c["stored"] is not None)
    print(f"\n{counted} records appended in the steady window ({window[1] - window[0]:.1f} s; "
          f"{counted / (window[1] - window[0]):.0f} records/s), {missing} without a witnessed checkpoint by the end; "
          f"{total_checkpoints} checkpoints, {witnessed} of them cosigned (a witness is sent only the newest); CHECKPOINT_REFUSED incidents: {refusals}")
    print("| from a record's append to | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|")
    for label, values in (("a cosignature covering it, seen in log_cosignatures (10 ms polls)", observed),
                          ("... its stored_at (the publisher's transaction)", stored),
                          ("the CHECKPOINT that covers it is cut (cut_at)", to_cut)):
        print(f"| {label} | {1000 * percentile(values, .5):.0f} | {1000 * percentile(values, .99):.0f} | "
              f"{1000 * values[-1] if values else float('nan'):.0f} |")
    for label, values in (("cut -> shipped to PostgreSQL (shipped_at)", to_ship),
                          ("shipped -> cosignature stored", to_cosign)):
        print(f"| {label} | {1000 * percentile(values, .5):.0f} | {1000 * percentile(values, .99):.0f} | "
              f"{1000 * values[-1] if values else float('nan'):.0f} |")
    p99 = percentile(observed, .99)
    print(f"\nfreshness p99 {p99:.2f} s: target <= 2 s {'met' if p99 <= 2 else 'NOT met'} "
          f"(machine: {os.cpu_count()} CPUs, Linux {platform.release()}; 1-min load {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; PostgreSQL {'fast (fsync off)' if args.fast else 'durable'})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        writer_main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]),
                    sys.argv[8])
        sys.exit(0)
    sys.exit(main())
