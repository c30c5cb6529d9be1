"""Inclusion proofs from PostgreSQL for a large stream: latency and size.

    .venv/bin/python bench/proof_bench.py [--leaves 10000000] [--samples 2000] [--fast]

One embedded PostgreSQL 18, one fresh migrated database. The stream's tree
is built level by level as C2SP tiles (height 8), the way the forwarder stores
them in log_tiles: level-0 tiles hold leaf hashes (random, except at
`--samples` positions where a real INGRESS record's canonical bytes is the
leaf and the record is a row of ingress_attestations), each higher level is
the roots of the full tiles below. The tiles are COPYed in; one checkpoint for
the whole tree is signed with a node key and cosigned with a witness key
(log_checkpoints, log_cosignatures).

Then `repair.proofs.inclusion` (what `symphony proof inclusion` and the
dashboard's API run: the record, the newest witnessed checkpoint covering it,
the tiles of its path in one query, and a verification of the path against the
checkpoint's root) is timed for every sample on one connection. Prints p50,
p99 and max, the tiles each proof read, and the proof size: the path is
32·⌈log2 n⌉ bytes, plus the record and the cosigned checkpoint. The issue's
target: p99 <= 5 ms for 10 M leaves. Nothing is asserted: a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from repair import canonical, proofs  # noqa: E402
from symphony import attestation  # noqa: E402
from symphony.checkpoints import CheckpointSigner  # noqa: E402
from symphony.db import connect, migrate  # noqa: E402
from symphony.embedded import EmbeddedPostgres  # noqa: E402
from symphony.tlog import checkpoint, merkle, note, tiles  # noqa: E402

NODE, STREAM = "bench-node", 0
H = merkle.HASH_SIZE


def fold(data: bytes) -> bytes:
    """Root of a full tile's 256 entries."""
    level = [data[i:i + H] for i in range(0, len(data), H)]
    sha = hashlib.sha256
    while len(level) > 1:
        level = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0]


def record(seq: int, at_us: int) -> bytes:
    body = attestation.encode(attestation.IngressBody(
        version=1, received_at_us=at_us, participant_id="demo-bank-a", auth_method="jwt", key_id="kid-1",
        policy_version=1, method="POST", route="/v1/payments", executes=True, body_sha256=os.urandom(32),
        idempotency_key_hash=os.urandom(32), traceparent="", verdict="accepted"))
    return canonical.build(2, seq, seq, body)


def build(leaves: int, samples: dict[int, bytes]) -> list[tuple[int, int, bytes]]:
    """Every tile of a tree of `leaves` leaves: (level, index, hashes)."""
    out: list[tuple[int, int, bytes]] = []
    entries = leaves  # entries at the current tile level
    below: list[bytes] = []  # roots of the full tiles of the level below (the next level's entries)
    level = 0
    while entries:
        roots: list[bytes] = []
        for index in range((entries + tiles.WIDTH - 1) // tiles.WIDTH):
            first = index * tiles.WIDTH
            width = min(tiles.WIDTH, entries - first)
            if level == 0:
                data = bytearray(os.urandom(width * H))
                for seq in range(first + 1, first + width + 1):
                    leaf = samples.get(seq)
                    if leaf is not None:
                        at = (seq - 1 - first) * H
                        data[at:at + H] = merkle.leaf_hash(leaf)
                tile = bytes(data)
            else:
                tile = b"".join(below[first:first + width])
            out.append((level, index, tile))
            if width == tiles.WIDTH:
                roots.append(fold(tile))
        below = roots
        entries = len(roots)
        level += 1
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaves", type=int, default=10_000_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--fast", action="store_true", help="PostgreSQL without fsync (setup speed only)")
    args = parser.parse_args()
    rng = random.Random(7)
    seqs = sorted(rng.sample(range(1, args.leaves + 1), args.samples))
    at_us = time.time_ns() // 1000
    canon = {seq: record(seq, at_us) for seq in seqs}
    t = time.perf_counter()
    built = build(args.leaves, canon)
    print(f"tree: {args.leaves} leaves, {len(built)} tiles built in {time.perf_counter() - t:.1f} s", flush=True)
    tree_root = merkle.root(tiles.TileReader({(lv, i): d for lv, i, d in built}), args.leaves)

    with tempfile.TemporaryDirectory(prefix="proof-bench-") as work:
        server = EmbeddedPostgres(Path(work) / "pg", fast=args.fast)
        admin_dsn = server.start().dsn
        try:
            admin = await connect(admin_dsn)
            await admin.execute("CREATE DATABASE bench_proof")
            await admin.close()
            dsn = admin_dsn.rsplit("/", 1)[0] + "/bench_proof"
            conn = await connect(dsn)
            await migrate.apply(conn)
            epoch = os.urandom(16)
            today = dt.datetime.now(dt.timezone.utc).date()
            await conn.execute("SELECT ensure_attestation_partitions_v1($1::date, $2::date)", today, today)
            await conn.execute("INSERT INTO journal_checkpoints (node_id, stream_id, epoch, last_seq, last_hash) "
                               "VALUES ($1, $2, $3, $4, $5)", NODE, STREAM, epoch, args.leaves, bytes(32))
            t = time.perf_counter()
            await conn.copy_records_to_table(
                "log_tiles", columns=("node_id", "stream_id", "epoch", "level", "tile_index", "width", "hashes"),
                records=[(NODE, STREAM, epoch, lv, i, len(d) // H, d) for lv, i, d in built])
            now = dt.datetime.now(dt.timezone.utc)
            await conn.copy_records_to_table(
                "ingress_attestations",
                columns=("node_id", "stream_id", "stream_seq", "record_type", "attestation_id", "recorded_at",
                         "chain_hash", "canonical", "epoch"),
                records=[(NODE, STREAM, seq, 2, seq, now, os.urandom(32), canon[seq], epoch) for seq in seqs])
            key = CheckpointSigner(Ed25519PrivateKey.generate(), "bench.example", NODE)
            signed = key.sign(STREAM, epoch, args.leaves, tree_root)
            cosigner = checkpoint.Cosigner("witness.bench/w1", Ed25519PrivateKey.generate())
            line = cosigner.cosign(signed.checkpoint.text(), int(time.time()))
            await conn.execute("INSERT INTO log_checkpoints (node_id, stream_id, epoch, tree_size, root, origin, note, "
                               "record_seq, cut_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())", NODE, STREAM,
                               epoch, args.leaves, tree_root, signed.checkpoint.origin, signed.note, args.leaves + 1)
            await conn.execute("INSERT INTO log_cosignatures (node_id, stream_id, epoch, tree_size, witness, line, "
                               "cosigned_at) VALUES ($1, $2, $3, $4, $5, $6, $7)", NODE, STREAM, epoch, args.leaves,
                               cosigner.name, line, int(time.time()))
            await conn.execute("ANALYZE")
            print(f"loaded into PostgreSQL in {time.perf_counter() - t:.1f} s", flush=True)

            order = list(seqs)
            rng.shuffle(order)
            for seq in order[:50]:  # warm the connection's prepared statements
                await proofs.inclusion(conn, node_id=NODE, stream_id=STREAM, seq=seq)
            latencies, sizes, reads = [], set(), set()
            for seq in order:
                t = time.perf_counter()
                found = await proofs.inclusion(conn, node_id=NODE, stream_id=STREAM, seq=seq)
                latencies.append((time.perf_counter() - t) * 1000)
                sizes.add(len(found.file.path) * H)
                index, size = seq - 1, args.leaves
                reads.add(len(tiles.needed_tiles(lambda r, i=index, s=size: merkle.inclusion_proof(r, i, s))))
            verifier = note.Verifier.parse(key.vkey)
            checkpoint.open_checkpoint(found.file.checkpoint, verifier)  # the last one, fully, once
            await conn.close()
        finally:
            server.stop()
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    expected = H * math.ceil(math.log2(args.leaves))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"inclusion proof from PostgreSQL, {len(latencies)} proofs of a {args.leaves}-leaf tree: "
          f"p50 {statistics.median(latencies):.2f} ms, p99 {p(0.99):.2f} ms, max {latencies[-1]:.2f} ms "
          f"(target p99 <= 5 ms)")
    print(f"tiles read per proof: {sorted(reads)} (one query); path bytes: {sorted(sizes)} "
          f"(32 x ceil(log2 n) = {expected}); whole proof file: {len(found.file.text())} bytes "
          f"(record {len(found.file.extra or b'')} bytes, cosigned checkpoint {len(found.file.checkpoint)} bytes)")


if __name__ == "__main__":
    asyncio.run(main())
