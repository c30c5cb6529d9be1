"""`symphony audit cross-check`: the NDJSON mirror (the write-once copy) against PostgreSQL.

Method: a journal Writer appends what a sidecar would; the sidecar's mirror
writer (ingress_sidecar.mirror, reading the records back from the journal, as
it does at start-up) writes the copy; `symphony forwarder` ships the journal
to PostgreSQL as a real process; `symphony audit cross-check` runs as a real
process. An untouched copy must match exactly (exit 0); a line removed from
the copy, a row altered in PostgreSQL and a row removed from PostgreSQL must
each be named by (node, stream, seq) (exit 1); Vector's gzip'd objects are
read like plain files; an unusable directory is exit 2.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import time
from pathlib import Path

import asyncpg

import journal
from ingress_sidecar import metrics
from ingress_sidecar import mirror as mirror_module
from symphony import attestation
from tests.conftest import symphony_cli
from tests.forwarder import conftest as forwarder_support
from tests.repair.helpers import tamper


def _append_requests(writer: journal.Writer, count: int) -> int:
    head = 0
    for index in range(count):
        now_us = time.time_ns() // 1000
        ingress = attestation.encode(attestation.IngressBody(
            1, now_us, "bank-a", "jwt", "kid-1", 1, "POST", "/v1/payments", True, b"\x01" * 32, b"", "", "accepted"))
        seq, _ = writer.append(journal.RecordType.INGRESS, ingress, 1000 + index)
        outcome = attestation.encode(attestation.OutcomeBody(1, seq, now_us, 201, "executed", 500, ""))
        head, _ = writer.append(journal.RecordType.OUTCOME, outcome, 1000 + index)
    return head


def _cross_check(database_url: str, mirror_dir: Path) -> tuple[int, dict]:
    result = symphony_cli("audit", "cross-check", "--mirror", str(mirror_dir), "--json", "--database-url", database_url)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


async def test_cross_check_matches_an_intact_copy_and_names_every_difference(
        tmp_path: Path, database_url: str, db: asyncpg.Connection) -> None:
    """Goal: exit 0 for an intact copy (plain or as Vector ships it), and every
    difference named by (node, stream, seq) with exit 1. Method: see the module."""
    node = forwarder_support.NODE
    journal_dir = tmp_path / "journal"
    writer = forwarder_support.open_writer(journal_dir, 0)
    try:
        head = _append_requests(writer, 40)
    finally:
        writer.close()
    mirror_dir = journal_dir / "mirror"
    mirror = mirror_module.Mirror(mirror_dir, node_id=node, stream_id=0,
                                  stream_dir=forwarder_support.stream_dir(journal_dir, 0), file_bytes_max=4096,
                                  queue_records_max=16, stats=metrics.WorkerStats(None, 0))
    mirror.open(head_seq=head)
    stop = asyncio.Event()
    stop.set()  # catch up from the journal, then stop: nothing is queued
    await mirror.run(stop)
    files = sorted(mirror_dir.glob("*.ndjson"))
    assert len(files) > 1, "small files: the copy spans several rotated files"
    assert files[0].name == f"{node}-0-{1:020d}.ndjson"

    process = forwarder_support.ForwarderProcess(database_url, journal_dir, tmp_path / "forwarder.log").start()
    try:
        async def shipped() -> bool:
            return (await forwarder_support.checkpoints(db)).get(0, 0) >= head

        await forwarder_support.wait_for(shipped, "the forwarder to ship the stream", diagnostics=process.log_tail)
    finally:
        assert process.terminate() == 0

    code, report = _cross_check(database_url, mirror_dir)
    assert code == 0, report
    assert report["status"] == "MATCH" and report["matching"] == head == report["postgres"]["rows"]
    assert report["mirror"]["chain_breaks"] == [] and report["mirror"]["malformed_count"] == 0

    # Vector's shipped objects: gzip'd, named by Vector, nested by node and date; repeats are harmless.
    shipped_dir = tmp_path / "worm" / f"node={node}" / "date=2026-01-01"
    shipped_dir.mkdir(parents=True)
    for index, path in enumerate(files + files[:1]):
        (shipped_dir / f"{index}-object.ndjson.gz").write_bytes(gzip.compress(path.read_bytes()))
    code, report = _cross_check(database_url, tmp_path / "worm")
    assert code == 0, report
    assert report["mirror"]["identical_duplicates"] > 0

    # A line removed from the copy: exactly that seq is missing from the mirror.
    cut_dir = tmp_path / "cut"
    shutil.copytree(mirror_dir, cut_dir)
    victim = sorted(cut_dir.glob("*.ndjson"))[1]
    lines = victim.read_bytes().splitlines(keepends=True)
    removed_seq = json.loads(lines[2])["seq"]
    victim.write_bytes(b"".join(lines[:2] + lines[3:]))
    code, report = _cross_check(database_url, cut_dir)
    assert code == 1
    assert report["missing_in_mirror"]["ranges"] == [
        {"node_id": node, "stream_id": 0, "from_seq": removed_seq, "to_seq": removed_seq, "count": 1}]
    assert report["missing_in_postgres"]["count"] == 0 and report["differing"]["count"] == 0

    # A row altered in PostgreSQL (as a superuser could): named, with the field that differs.
    altered_seq = 7
    await tamper(db, "UPDATE ingress_attestations SET canonical = canonical || '\\x00'::bytea "
                     "WHERE node_id = $1 AND stream_seq = $2", node, altered_seq)
    # A row deleted from PostgreSQL: missing there.
    deleted_seq = 11
    await tamper(db, "DELETE FROM ingress_attestations WHERE node_id = $1 AND stream_seq = $2", node, deleted_seq)
    code, report = _cross_check(database_url, mirror_dir)
    assert code == 1
    assert report["differing"]["rows"] == [
        {"node_id": node, "stream_id": 0, "stream_seq": altered_seq, "fields": ["canonical"]}]
    assert report["missing_in_postgres"]["ranges"] == [
        {"node_id": node, "stream_id": 0, "from_seq": deleted_seq, "to_seq": deleted_seq, "count": 1}]
    assert report["matching"] == head - 2

    text = symphony_cli("audit", "cross-check", "--mirror", str(mirror_dir), "--database-url", database_url)
    assert text.returncode == 1
    assert f"missing in PostgreSQL: {node}/0 seq {deleted_seq}..{deleted_seq}" in text.stdout
    assert f"differs: {node}/0/{altered_seq}: canonical" in text.stdout


async def test_cross_check_reports_a_tampered_copy_and_refuses_an_unusable_directory(
        tmp_path: Path, database_url: str) -> None:
    """Goal: the copy is checked against itself too (a line whose canonical bytes
    were changed breaks the copy's chain and is reported even before PostgreSQL
    is asked about it), and a directory without mirror files is a usage error.
    Method: write a copy from a journal nobody shipped, alter one line, cross-check."""
    journal_dir = tmp_path / "journal"
    writer = forwarder_support.open_writer(journal_dir, 0)
    try:
        head = _append_requests(writer, 5)
    finally:
        writer.close()
    mirror_dir = tmp_path / "mirror"
    mirror = mirror_module.Mirror(mirror_dir, node_id=forwarder_support.NODE, stream_id=0,
                                  stream_dir=forwarder_support.stream_dir(journal_dir, 0), file_bytes_max=1 << 20,
                                  queue_records_max=16, stats=metrics.WorkerStats(None, 0))
    mirror.open(head_seq=head)
    stop = asyncio.Event()
    stop.set()
    await mirror.run(stop)
    (path,) = mirror_dir.glob("*.ndjson")
    lines = path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[4])
    record["chain_hash"] = "00" * 32
    lines[4] = json.dumps(record).encode() + b"\n"
    lines.append(b'{"node": "x"')  # an unterminated last line (a write in progress) is skipped, not an error
    path.write_bytes(b"".join(lines))
    code, report = _cross_check(database_url, mirror_dir)
    assert code == 1
    assert report["missing_in_postgres"]["count"] == head  # nothing was shipped
    assert {"node_id": forwarder_support.NODE, "stream_id": 0, "stream_seq": 5} in report["mirror"]["chain_breaks"]
    assert report["mirror"]["unterminated_lines"] == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    for directory in (empty, tmp_path / "absent"):
        result = symphony_cli("audit", "cross-check", "--mirror", str(directory), "--database-url", database_url)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "error: --mirror" in result.stderr and "Traceback" not in result.stderr
