"""Export and offline verify of a large window: records/s and peak RSS of each.

    .venv/bin/python bench/export_bench.py [--records 1000000] [--fast]

One embedded PostgreSQL 18, one fresh migrated database. One stream epoch of
`--records` records is generated here and COPYed straight into PostgreSQL (no
HTTP, no forwarder): GENESIS, then INGRESS/OUTCOME pairs with real MessagePack
bodies, canonical bytes and chain hashes as the journal writes them; the
tree's C2SP tiles (log_tiles, built with symphony.tlog.tiles.TileBuilder as
the forwarder does); one checkpoint of the whole tree signed with a node key
and cosigned with a witness key. 90 % of the INGRESS records have an outbox
row (COPY into payment_intents and payment_outbox; the outbox_events come from
the insert trigger), 5 % an OUTCOME `rejected`, 5 % are ghosts.

Then, as child processes: `symphony export` of the whole window, and
`symphony verify export` of the result (no database). Each is timed
(wall clock) and its peak RSS taken from os.wait4's rusage of that child.
`symphony audit gap` runs on the same window and its totals are compared
with the verifier's. Targets (issue 14): >= 200 k records/s each, <= 200 MB
RSS. Nothing is asserted: a benchmark. The machine is shared: other work on
it slows the figures down.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from symphony import attestation  # noqa: E402
from symphony.checkpoints import CheckpointSigner  # noqa: E402
from symphony.db import connect, migrate  # noqa: E402
from symphony.embedded import EmbeddedPostgres  # noqa: E402
from symphony.tlog import checkpoint, merkle, tiles  # noqa: E402

NODE, STREAM = "bench-node", 0
UNIX = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
BATCH = 50_000
COLUMNS = ("node_id", "stream_id", "stream_seq", "record_type", "attestation_id", "recorded_at", "participant_id",
           "method", "route", "executes", "status", "disposition", "latency_us", "idempotency_key_hash",
           "body_sha256", "chain_hash", "canonical", "epoch")


def canonical(seq: int, kind: int, aid: int, body: bytes) -> bytes:
    import struct

    return struct.pack("<IQQHHI", len(body), seq, aid, kind, 0, 0) + body


class Generator:
    """The stream's rows in seq order, its tiles, and the outbox rows."""

    def __init__(self, records: int, base_us: int, epoch: bytes) -> None:
        self.records = records
        self.base_us = base_us
        self.epoch = epoch
        self.prev = bytes(32)
        self.tiles = tiles.TileBuilder()
        self.stored: dict[tiles.TileKey, bytes] = {}
        self.frontier = merkle.Frontier()
        self.seq = 0
        self.outbox: list[tuple[int, int, bytes, dt.datetime]] = []  # (aid, seq, body hash, created)
        self.last_us = base_us

    def _row(self, kind: int, aid: int, body: bytes, at_us: int, extra: tuple[object, ...]) -> tuple[object, ...]:
        self.seq += 1
        data = canonical(self.seq, kind, aid, body)
        chain = hashlib.sha256(self.prev + data).digest()
        self.prev = chain
        leaf = merkle.leaf_hash(data)
        self.frontier.append(leaf)
        self.stored.update(self.tiles.append([leaf]))
        return (NODE, STREAM, self.seq, kind, aid, UNIX + dt.timedelta(microseconds=at_us), *extra, chain, data,
                self.epoch)

    def rows(self) -> list[tuple[object, ...]]:
        out: list[tuple[object, ...]] = []
        if self.seq == 0:
            node = NODE.encode()
            body = self.epoch + STREAM.to_bytes(2, "little") + bytes([len(node)]) + node
            out.append(self._row(1, 0, body, self.base_us, (None,) * 8 + (None,)))
        while len(out) < BATCH and self.seq + 2 <= self.records:
            n = self.seq // 2
            at_us = self.base_us + n * 5
            aid = 1_000_000 + n
            digest = hashlib.sha256(aid.to_bytes(8, "little")).digest()
            participant = "bench-bank-a" if n % 2 else "bench-bank-b"
            ingress = attestation.encode(attestation.IngressBody(
                version=1, received_at_us=at_us, participant_id=participant, auth_method="jwt", key_id="k1",
                policy_version=1, method="POST", route="/v1/payments", executes=True, body_sha256=digest,
                idempotency_key_hash=digest, traceparent="", verdict="accepted"))
            out.append(self._row(2, aid, ingress, at_us, (participant, "POST", "/v1/payments", True, None, None,
                                                          None, digest, digest)))
            ingress_seq = self.seq
            disposition = "rejected" if n % 20 == 7 else "executed"
            outcome = attestation.encode(attestation.OutcomeBody(
                version=1, ingress_seq=ingress_seq, completed_at_us=at_us + 3, status=201, disposition=disposition,
                latency_us=3, reason=""))
            out.append(self._row(3, aid, outcome, at_us + 3, (None, None, None, None, 201, disposition, 3, None,
                                                              None)))
            if disposition == "executed" and n % 20 != 13:  # 5 % ghosts
                self.outbox.append((aid, ingress_seq, digest, UNIX + dt.timedelta(microseconds=at_us + 4)))
            self.last_us = at_us + 3
        return out


async def load(dsn: str, records: int) -> tuple[dt.datetime, dt.datetime, int]:
    conn = await connect(dsn)
    await migrate.apply(conn)
    today = dt.datetime.now(dt.timezone.utc).date()
    await conn.execute("SELECT ensure_attestation_partitions_v1($1::date, $2::date)", today - dt.timedelta(days=1),
                       today)
    base_us = time.time_ns() // 1000 - 3_600_000_000
    epoch = os.urandom(16)
    gen = Generator(records, base_us, epoch)
    t = time.perf_counter()
    while gen.seq + 2 <= records or gen.seq == 0:
        batch = gen.rows()
        if not batch:
            break
        await conn.copy_records_to_table("ingress_attestations", columns=COLUMNS, records=batch)
    size = gen.seq
    await conn.copy_records_to_table(
        "log_tiles", columns=("node_id", "stream_id", "epoch", "level", "tile_index", "width", "hashes"),
        records=[(NODE, STREAM, epoch, lv, i, len(d) // 32, d) for (lv, i), d in gen.stored.items()])
    root = gen.frontier.root()
    key = CheckpointSigner(Ed25519PrivateKey.generate(), "bench.example", NODE)
    signed = key.sign(STREAM, epoch, size, root)
    cosigner = checkpoint.Cosigner("witness.bench/w1", Ed25519PrivateKey.generate())
    line = cosigner.cosign(signed.checkpoint.text(), int(time.time()))
    await conn.execute("INSERT INTO journal_checkpoints (node_id, stream_id, epoch, last_seq, last_hash) "
                       "VALUES ($1, $2, $3, $4, $5)", NODE, STREAM, epoch, size, gen.prev)
    await conn.execute("INSERT INTO log_checkpoints (node_id, stream_id, epoch, tree_size, root, origin, note, "
                       "record_seq, cut_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())", NODE, STREAM, epoch,
                       size, root, signed.checkpoint.origin, signed.note, size + 1)
    await conn.execute("INSERT INTO log_cosignatures (node_id, stream_id, epoch, tree_size, witness, line, "
                       "cosigned_at) VALUES ($1, $2, $3, $4, $5, $6, $7)", NODE, STREAM, epoch, size, cosigner.name,
                       line, int(time.time()))
    await conn.execute("INSERT INTO participants (participant_id) VALUES ('bench-bank-a'), ('bench-bank-b')")
    intents, outbox = [], []
    for aid, seq, digest, created in gen.outbox:
        participant = "bench-bank-a" if (aid - 1_000_000) % 2 else "bench-bank-b"
        intent = uuid.uuid4()
        intents.append((intent, participant, f"k-{aid}", 100, "UGX", "sim", "acct", aid, created))
        outbox.append((uuid.uuid4(), intent, participant, aid, NODE, STREAM, seq, digest, "sim", "{}", created))
    for at in range(0, len(intents), BATCH):
        await conn.copy_records_to_table(
            "payment_intents", columns=("intent_id", "participant_id", "idempotency_key", "amount_minor", "currency",
                                        "rail", "destination_account", "attestation_id", "created_at"),
            records=intents[at:at + BATCH])
        await conn.copy_records_to_table(
            "payment_outbox", columns=("id", "intent_id", "participant_id", "attestation_id", "ingress_node_id",
                                       "ingress_stream_id", "ingress_seq", "ingress_body_sha256", "rail", "payload",
                                       "created_at"),
            records=outbox[at:at + BATCH])
    await conn.execute("ANALYZE")
    await conn.close()
    print(f"generated and loaded {size} records, {len(outbox)} outbox rows in {time.perf_counter() - t:.1f} s",
          flush=True)
    policy = f"log {key.vkey}\nwitness w1 {cosigner.verifier.vkey()}\nquorum w1\n"
    Path(os.environ["EXPORT_BENCH_POLICY"]).write_text(policy)
    return UNIX + dt.timedelta(microseconds=base_us), UNIX + dt.timedelta(microseconds=gen.last_us + 1), size


# A small launcher process runs the command and reports resource.getrusage(RUSAGE_CHILDREN)
# after waiting for it: the child's own peak RSS. Forking it straight from this
# (large) benchmark process would count our pages in the child's maximum until exec.
LAUNCHER = """
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[1:])
elapsed = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.stderr.write(f"\\nLAUNCHER {elapsed} {usage.ru_maxrss} {code} {usage.ru_utime + usage.ru_stime}\\n")
sys.exit(code)
"""


CPU_SECONDS: dict[str, float] = {}


def child(argv: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Run `symphony ARGV`; (seconds, peak RSS in MB of that child alone, result).
    The child's own CPU seconds (user + system; not PostgreSQL's) go to CPU_SECONDS[argv[0]]."""
    done = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-m", "symphony", *argv],
                          capture_output=True, text=True, cwd=REPO)
    err, _, tail = done.stderr.rpartition("\nLAUNCHER ")
    seconds, peak_kib, _, cpu = tail.split()
    CPU_SECONDS[argv[0]] = float(cpu)
    return float(seconds), int(peak_kib) / 1024, subprocess.CompletedProcess(argv, done.returncode, done.stdout, err)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--fast", action="store_true", help="PostgreSQL without fsync (setup speed only)")
    parser.add_argument("--keep", metavar="DIR", help="copy the export here (for profiling the verifier)")
    args = parser.parse_args()
    print(f"load average at start: {load_average()} (the machine is shared: other work slows every figure)")
    with tempfile.TemporaryDirectory(prefix="export-bench-") as work:
        root = Path(work)
        os.environ["EXPORT_BENCH_POLICY"] = str(root / "policy")
        server = EmbeddedPostgres(root / "pg", fast=args.fast)
        admin_dsn = server.start().dsn
        try:
            async def create() -> None:
                admin = await connect(admin_dsn)
                await admin.execute("CREATE DATABASE bench_export")
                await admin.close()

            asyncio.run(create())
            dsn = admin_dsn.rsplit("/", 1)[0] + "/bench_export"
            since, until, size = asyncio.run(load(dsn, args.records))
            key = root / "export.pem"
            key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            out = root / "export"
            seconds, rss, done = child(["export", "--database-url", dsn, "--out", str(out), "--from",
                                        since.isoformat(), "--to", until.isoformat(), "--signing-key", str(key)])
            assert done.returncode == 0, done.stderr
            summary = json.loads(done.stdout)
            exported = int(summary["records"])
            size_mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6
            print(f"export: {exported} records, {summary['outbox_rows']} outbox rows, {summary['events']} events, "
                  f"{size_mb:.0f} MB in {seconds:.2f} s = {exported / seconds / 1000:.0f} k records/s, "
                  f"peak RSS {rss:.0f} MB (targets: >= 200 k/s, <= 200 MB); the export process's own CPU "
                  f"{CPU_SECONDS['export']:.2f} s (PostgreSQL's not counted); load average after: {load_average()}",
                  flush=True)
            vseconds, vrss, checked = child(["verify", "export", str(out), "--policy", str(root / "policy"),
                                             "--export-key", summary["signer"], "--json"])
            report = json.loads(checked.stdout)
            if args.keep:
                import shutil

                shutil.copytree(out, args.keep)
                (Path(args.keep).parent / "export-bench.policy").write_text((root / "policy").read_text())
                (Path(args.keep).parent / "export-bench.vkey").write_text(summary["signer"])
            print(f"verify export (offline): {report['records']} records in {vseconds:.2f} s = "
                  f"{report['records'] / vseconds / 1000:.0f} k records/s, peak RSS {vrss:.0f} MB, exit "
                  f"{checked.returncode}, findings {len(report['findings'])}, ghosts {len(report['ghosts'])}; "
                  f"CPU {CPU_SECONDS['verify']:.2f} s = {report['records'] / CPU_SECONDS['verify'] / 1000:.0f} k "
                  f"records per CPU second; load average after: {load_average()}", flush=True)
            _, _, audit = child(["audit", "gap", "--database-url", dsn, "--since", since.isoformat(), "--until",
                                 until.isoformat(), "--json"])
            live = json.loads(audit.stdout)["participants"]
            keys = ("participant_id", "ingress_count", "executions", "handled", "gap")
            same = sorted(tuple(p[k] for k in keys) for p in live) == sorted(
                tuple(p[k] for k in keys) for p in report["participants"])
            print(f"audit gap on the live database equals the offline verifier: {same}")
        finally:
            server.stop()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{size} records in the stream; {dt.date.today().isoformat()}")


if __name__ == "__main__":
    main()
