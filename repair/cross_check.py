"""`symphony audit cross-check`: the write-once NDJSON copy against PostgreSQL.

The sidecar's mirror (symphony/attestation_mirror.py), shipped by Vector to
object storage with Object Lock, is a second copy of every journal record in a
separate failure domain. This compares it with `ingress_attestations`, per
(node, stream, seq): the same chain hash and the same canonical bytes, rows
missing on either side, rows that differ. The copy is read from a directory:
the sidecar's `<journal_dir>/mirror/` or the shipped objects downloaded
(`*.ndjson` and Vector's gzip'd `*.ndjson.gz`, any depth).

The copy is also checked against itself: each line's canonical header must
repeat its seq, type and attestation id, a seq seen twice must carry the same
record (Vector delivers at least once, so identical repeats are fine), and
where consecutive seqs are present the chain must hold
(`chain_hash(n) = SHA-256(chain_hash(n-1) || canonical(n))`), so an auditor
can tell which side was altered when they differ.

Which rows: every stream of the nodes the copy names (or `--node`), and only
`--stream` when given. A row is compared wherever it is; retention matters:
partitions archived and dropped from PostgreSQL show as missing there, and a
mirror enabled late shows the earlier rows as missing from the copy.
Memory: the copy is held in memory (about 0.5 KB per record); use `--node`
and `--stream` to split a very large audit.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from repair.store import QUERIES, TIMEOUT_SECONDS
from symphony import attestation_mirror as fmt
from symphony.errors import SymphonyError

LISTED_MAX = 10_000  # entries per list in the report; counts are always complete
PREFETCH_ROWS = 5_000

Key = tuple[str, int, int]  # node, stream, seq


@dataclass
class MirrorCopy:
    """What the copy holds, by (node, stream, seq), and what is wrong with it on its own."""

    records: dict[Key, tuple[bytes, bytes]] = field(default_factory=dict)  # chain hash, canonical
    files: int = 0
    lines: int = 0
    duplicates: int = 0
    unterminated: int = 0
    malformed: list[dict[str, Any]] = field(default_factory=list)
    malformed_count: int = 0
    conflicts: list[Key] = field(default_factory=list)
    # The other records seen at a conflicting key (a stream replaced: each epoch numbers from 1).
    alternatives: dict[Key, list[tuple[bytes, bytes]]] = field(default_factory=dict)


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise SymphonyError(f"--mirror {directory} is not a directory", exit_code=2)
    found = sorted(p for p in directory.rglob("*") if p.is_file() and p.name.endswith((".ndjson", ".ndjson.gz")))
    if not found:
        raise SymphonyError(f"--mirror {directory} holds no *.ndjson or *.ndjson.gz file", exit_code=2)
    return found


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, text, terminated) of one file; gzip'd files are read through."""
    try:
        handle = gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")
        with handle:
            for number, text in enumerate(handle, start=1):
                terminated = text.endswith(b"\n")
                yield number, text.rstrip(b"\r\n"), terminated
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SymphonyError(f"cannot read {path}: {exc}", exit_code=2) from None


def read_mirror(directory: Path, node: str | None, stream: int | None) -> MirrorCopy:
    copy = MirrorCopy()
    for path in _files(directory):
        copy.files += 1
        for number, text, terminated in _lines(path):
            if not terminated:
                copy.unterminated += 1  # a write in progress or cut by a crash; rewritten in a later file
                continue
            if not text:
                continue
            copy.lines += 1
            try:
                parsed = fmt.parse_line(text)
            except fmt.MirrorLineError as exc:
                copy.malformed_count += 1
                if len(copy.malformed) < LISTED_MAX:
                    copy.malformed.append({"file": str(path), "line": number, "error": str(exc)})
                continue
            if (node is not None and parsed.node != node) or (stream is not None and parsed.stream != stream):
                continue
            key = (parsed.node, parsed.stream, parsed.seq)
            value = (parsed.chain_hash, parsed.canonical)
            seen = copy.records.get(key)
            if seen is None:
                copy.records[key] = value
            elif seen == value:
                copy.duplicates += 1
            else:
                copy.conflicts.append(key)
                copy.alternatives.setdefault(key, []).append(value)
    return copy


def chain_breaks(records: dict[Key, tuple[bytes, bytes]]) -> list[Key]:
    """Seqs whose chain hash does not follow from the previous seq's (where both are in the copy)."""
    broken = []
    for (node, stream, seq), (chain_hash, canonical) in sorted(records.items()):
        previous = records.get((node, stream, seq - 1))
        if previous is not None and hashlib.sha256(previous[0] + canonical).digest() != chain_hash:
            broken.append((node, stream, seq))
    return broken


def ranges(keys: list[Key]) -> list[dict[str, Any]]:
    """Consecutive seqs of one stream folded into from..to ranges."""
    out: list[dict[str, Any]] = []
    for node, stream, seq in sorted(keys):
        last = out[-1] if out else None
        if last and last["node_id"] == node and last["stream_id"] == stream and last["to_seq"] == seq - 1:
            last["to_seq"] = seq
            last["count"] += 1
        else:
            out.append({"node_id": node, "stream_id": stream, "from_seq": seq, "to_seq": seq, "count": 1})
    return out


async def compare(conn: asyncpg.Connection, copy: MirrorCopy, node: str | None,
                  stream: int | None) -> dict[str, Any]:
    """Stream PostgreSQL's rows past the copy; returns the report (see `report_text`)."""
    nodes = [node] if node is not None else sorted({key[0] for key in copy.records})
    remaining = dict(copy.records)
    missing_in_mirror: list[Key] = []
    differing: list[dict[str, Any]] = []
    seen: set[Key] = set()
    rows = matching = 0
    async with conn.transaction(readonly=True):
        cursor = conn.cursor(QUERIES["cross_check_rows"], nodes, stream, prefetch=PREFETCH_ROWS,
                             timeout=TIMEOUT_SECONDS)
        async for row in cursor:
            rows += 1
            key: Key = (row["node_id"], row["stream_id"], row["stream_seq"])
            if key in seen:
                differing.append({"node_id": key[0], "stream_id": key[1], "stream_seq": key[2],
                                  "fields": ["duplicate row in PostgreSQL"]})
                continue
            seen.add(key)
            mirrored = remaining.pop(key, None)
            if mirrored is None:
                missing_in_mirror.append(key)
                continue
            fields = [name for name, ours, theirs in (("chain_hash", mirrored[0], bytes(row["chain_hash"])),
                                                      ("canonical", mirrored[1], bytes(row["canonical"])))
                      if ours != theirs]
            if fields:
                differing.append({"node_id": key[0], "stream_id": key[1], "stream_seq": key[2], "fields": fields})
            else:
                matching += 1
    missing_in_postgres = list(remaining)
    breaks = chain_breaks(copy.records)
    found = bool(missing_in_mirror or missing_in_postgres or differing or copy.malformed_count or copy.conflicts
                 or breaks)
    return {
        "status": "DIFFERENT" if found else "MATCH",
        "nodes": nodes,
        "stream": stream,
        "mirror": {
            "files": copy.files, "lines": copy.lines, "records": len(copy.records),
            "identical_duplicates": copy.duplicates, "unterminated_lines": copy.unterminated,
            "malformed_count": copy.malformed_count, "malformed": copy.malformed,
            "conflicting_duplicates": [_key(k) for k in copy.conflicts[:LISTED_MAX]],
            "chain_breaks": [_key(k) for k in breaks[:LISTED_MAX]],
        },
        "postgres": {"rows": rows},
        "matching": matching,
        "missing_in_postgres": {"count": len(missing_in_postgres), "ranges": ranges(missing_in_postgres)[:LISTED_MAX]},
        "missing_in_mirror": {"count": len(missing_in_mirror), "ranges": ranges(missing_in_mirror)[:LISTED_MAX]},
        "differing": {"count": len(differing), "rows": differing[:LISTED_MAX]},
    }


def _key(key: Key) -> dict[str, Any]:
    return {"node_id": key[0], "stream_id": key[1], "stream_seq": key[2]}


def report_text(report: dict[str, Any]) -> str:
    mirror = report["mirror"]
    lines = [f"mirror: {mirror['files']} file(s), {mirror['records']} record(s)"
             f" ({mirror['identical_duplicates']} identical repeats, {mirror['unterminated_lines']} unterminated"
             f" line(s) skipped); PostgreSQL: {report['postgres']['rows']} row(s); {report['matching']} match"]
    for entry in report["missing_in_postgres"]["ranges"]:
        lines.append(f"missing in PostgreSQL: {entry['node_id']}/{entry['stream_id']} seq "
                     f"{entry['from_seq']}..{entry['to_seq']} ({entry['count']})")
    for entry in report["missing_in_mirror"]["ranges"]:
        lines.append(f"missing in mirror: {entry['node_id']}/{entry['stream_id']} seq "
                     f"{entry['from_seq']}..{entry['to_seq']} ({entry['count']})")
    for entry in report["differing"]["rows"]:
        lines.append(f"differs: {entry['node_id']}/{entry['stream_id']}/{entry['stream_seq']}: "
                     f"{', '.join(entry['fields'])}")
    for entry in mirror["malformed"]:
        lines.append(f"malformed mirror line: {entry['file']}:{entry['line']}: {entry['error']}")
    for entry in mirror["conflicting_duplicates"]:
        lines.append(f"mirror holds two different records for {entry['node_id']}/{entry['stream_id']}/"
                     f"{entry['stream_seq']}")
    for entry in mirror["chain_breaks"]:
        lines.append(f"mirror chain broken at {entry['node_id']}/{entry['stream_id']}/{entry['stream_seq']}")
    lines.append(f"{report['status']}: {report['missing_in_postgres']['count']} missing in PostgreSQL, "
                 f"{report['missing_in_mirror']['count']} missing in mirror, {report['differing']['count']} differing")
    return "\n".join(lines)
