"""A reader follows a live writer in another process across rotation and restarts.

Method: the test process follows the stream (starting before it exists) while
two successive writer processes append 1500 records each with 64 KiB segments
(about a dozen rotations, one writer restart). The reader must see seqs
1..3001 exactly once, in order, with an unbroken chain. No timing assertions:
only a generous bound on the whole run.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from pathlib import Path

from journal import Reader, Record, RecordType

from .conftest import python_child

WRITER = """
import sys, time
from journal import Writer, RecordType
path, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with Writer(path, "node-a", 0, "none", segment_bytes=65536) as writer:
    for i in range(start, start + count):
        writer.append(RecordType.INGRESS, b"record-%06d" % i + b"#" * (i % 300), i)
        if i % 97 == 0:
            time.sleep(0.001)  # let the reader catch up mid-segment sometimes
"""
PER_WRITER = 1500


async def test_reader_in_another_process_follows_a_live_writer(stream_dir: Path) -> None:
    seen: list[Record] = []

    async def follow() -> None:
        async for record in Reader(stream_dir).follow(from_seq=1, poll_seconds=0.002):
            seen.append(record)
            if record.seq == 2 * PER_WRITER + 1:
                return

    follower = asyncio.create_task(follow())
    for start in (0, PER_WRITER):
        writer = python_child(WRITER, str(stream_dir), str(start), str(PER_WRITER),
                              stderr=subprocess.PIPE)
        await asyncio.to_thread(writer.wait, 120)  # bounded: raises TimeoutExpired past it
        assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
    await asyncio.wait_for(follower, timeout=120)

    assert [r.seq for r in seen] == list(range(1, 2 * PER_WRITER + 2))
    assert seen[0].type == RecordType.GENESIS
    for previous, record in zip(seen, seen[1:]):
        assert record.prev_hash == previous.chain_hash
        assert record.chain_hash == hashlib.sha256(record.prev_hash + record.canonical).digest()
        i = record.attestation_id
        assert record.body == b"record-%06d" % i + b"#" * (i % 300)


async def test_follow_from_the_middle_and_records_from_seq(stream_dir: Path) -> None:
    from journal import Writer
    with Writer(stream_dir, "node-a", 0, "none", segment_bytes=65536) as writer:
        for i in range(1000):
            writer.append(RecordType.INGRESS, b"m" * 150, i)
        got = []
        async for record in Reader(stream_dir).follow(from_seq=777):
            got.append(record.seq)
            if record.seq == 1001:
                break
    assert got == list(range(777, 1002))
    assert [r.seq for r in Reader(stream_dir).records(from_seq=1000)] == [1000, 1001]
    assert list(Reader(stream_dir).records(from_seq=5000)) == []
