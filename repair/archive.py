"""Archiving old attestation partitions: export, sign, record, then drop.

`symphony audit archive` takes each partition of ingress_attestations whose day
is older than the hot window (or the ones named), and per (node, stream) in it:

1. writes the rows to `<archive_dir>/<partition>/<node>-<stream>-<first seq>.ndjson`
   in the mirror's line format (symphony/attestation_mirror.py), so the export
   is checked with the same tools as the write-once copy;
2. signs (symphony/archive_signature.py) the row that says which seqs left, the
   file's SHA-256 and the chain hash of its last record, with the archiver's
   private key, and inserts it into attestation_archives;
3. with `--drop`, detaches and drops the partition in the same transaction,
   through drop_archived_partition_v1, which refuses while any stream in the
   partition lacks an archive row.

Nothing is dropped unless every export was written and fsync'd first.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from journal import RecordType
from repair.store import QUERIES, TIMEOUT_SECONDS
from symphony import archive_signature, attestation_mirror


@dataclass(frozen=True)
class Archived:
    partition: str
    node_id: str
    stream_id: int
    first_seq: int
    last_seq: int
    path: Path
    sha256: bytes

    def as_dict(self) -> dict[str, Any]:
        return {"partition": self.partition, "node_id": self.node_id, "stream_id": self.stream_id,
                "first_seq": self.first_seq, "last_seq": self.last_seq, "file": str(self.path),
                "sha256": self.sha256.hex()}


def _write(path: Path, lines: list[attestation_mirror.MirrorLine]) -> bytes:
    data = attestation_mirror.encode_lines(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return hashlib.sha256(data).digest()


async def archive_partition(conn: asyncpg.Connection, partition: str, out_dir: Path, key: Ed25519PrivateKey,
                            *, drop: bool) -> list[Archived]:
    """Export, sign and record one partition (and drop it with `drop`), in one transaction."""
    done: list[Archived] = []
    async with conn.transaction():
        rows = await conn.fetch(QUERIES["archive_partition_rows"], partition, timeout=TIMEOUT_SECONDS)
        streams: dict[tuple[str, int], list[asyncpg.Record]] = {}
        for row in rows:
            streams.setdefault((row["node_id"], row["stream_id"]), []).append(row)
        for (node_id, stream_id), found in sorted(streams.items()):
            lines = [attestation_mirror.MirrorLine(node_id, stream_id, r["stream_seq"],
                                                   RecordType(r["record_type"]).name, r["attestation_id"],
                                                   bytes(r["chain_hash"]).hex(), bytes(r["canonical"]))
                     for r in found]
            first, last = found[0]["stream_seq"], found[-1]["stream_seq"]
            path = out_dir / partition / attestation_mirror.file_name(node_id, stream_id, first)
            digest = _write(path, lines)
            fields = archive_signature.ArchiveFields(partition, node_id, stream_id, first, last,
                                                     bytes(found[-1]["chain_hash"]), digest)
            signature, key_id = archive_signature.sign(fields, key)
            await conn.fetchval(QUERIES["insert_archive"], partition, node_id, stream_id, first, last, digest,
                                signature, key_id, fields.last_hash, timeout=TIMEOUT_SECONDS)
            done.append(Archived(partition, node_id, stream_id, first, last, path, digest))
        if drop:
            await conn.execute(QUERIES["drop_archived_partition"], partition, timeout=TIMEOUT_SECONDS)
    return done
