"""kill -9 at random points: every acknowledged record survives (invariants 1, 3, 4).

Method: a child process appends in a loop at level none, batch or always and
prints each acknowledged (seq, chain hash) — at "batch" only after
append_durable returned. The parent SIGKILLs it after a random number of
acknowledgements (so the kill lands anywhere: mid-append, mid-rotation, during
a sync, before GENESIS), reopens the stream, and checks that every
acknowledged record is there with the same hash, the chain verifies, and a new
append continues the sequence. The same stream lives through all repetitions.
"""

from __future__ import annotations

import os
import random
import select
import signal
from pathlib import Path

import pytest

from journal import Reader, RecordType, Writer, verify

from .conftest import SMALL_SEGMENT, python_child

REPETITIONS = int(os.environ.get("JOURNAL_CRASH_REPETITIONS", "60"))
CHILD = """
import asyncio, os, sys
from journal import Writer, RecordType
path, level = sys.argv[1], sys.argv[2]
writer = Writer(path, "node-a", 0, level, segment_bytes=65536)
out = sys.stdout.buffer
def ack(seq, chain_hash):
    out.write(b"%d %s\\n" % (seq, chain_hash.hex().encode()))
    out.flush()
async def durable_loop():
    for i in range(10**9):
        ack(*await writer.append_durable(RecordType.INGRESS, os.urandom(i % 400), i))
if level == "batch":
    asyncio.run(durable_loop())
for i in range(10**9):
    ack(*writer.append(RecordType.INGRESS, os.urandom(i % 400), i))
"""


def _acknowledged(child: object, wanted: int) -> dict[int, str]:
    """Read up to `wanted` complete ack lines (bounded wait), then stop."""
    fd = child.stdout.fileno()  # type: ignore[attr-defined]
    buffer, acks = b"", {}
    while len(acks) < wanted:
        ready, _, _ = select.select([fd], [], [], 60)
        assert ready, "child produced nothing for 60 s"
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            seq, digest = line.split()
            acks[int(seq)] = digest.decode()
    return acks


@pytest.mark.evidence("failure_injection")
@pytest.mark.slow
def test_kill_minus_nine_loses_no_acknowledged_record(stream_dir: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    all_acks: dict[int, str] = {}
    for repetition in range(REPETITIONS):
        level = ("none", "batch", "always")[repetition % 3]
        wanted = rng.choice([0, 1, rng.randrange(1, 50), rng.randrange(50, 600)])
        child = python_child(CHILD, str(stream_dir), level, stdout=-1, stderr=-1)
        acks = _acknowledged(child, wanted) if wanted else {}
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
        assert child.returncode == -signal.SIGKILL, f"seed {seed}: child exited by itself"
        # The parent reads whatever the child printed after `wanted` too: also acknowledged.
        all_acks.update(acks)

        with Writer(stream_dir, "node-a", 0, "none", segment_bytes=SMALL_SEGMENT) as writer:
            head_seq = writer.next_seq - 1
            assert head_seq >= max(acks, default=0), f"seed {seed} rep {repetition}: lost the tail"
            seq, _ = writer.append(RecordType.HEARTBEAT, b"", 0)
            assert seq == head_seq + 1
        result = verify(stream_dir)
        assert result.ok, f"seed {seed} rep {repetition}: {result.reason}"
        if acks:
            first = min(acks)
            found = {r.seq: r.chain_hash.hex() for r in Reader(stream_dir).records(from_seq=first)
                     if r.seq in acks}
            assert found == acks, f"seed {seed} rep {repetition} ({level}): acknowledged records differ"
    assert verify(stream_dir).last_seq > len(all_acks)
