"""Property tests (hypothesis): encoding, rotation, reopen and recovery (F7-F9).

1. Any sequence of appends, batched appends and reopens reads back exactly,
   with seqs 1..n and a chain that hashlib recomputes.
2. Cutting the last segment at any byte (a torn write) keeps exactly the
   records whose bytes are untouched, and the stream continues after them.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import Reader, RecordType, Writer, verify
from journal._format import list_segments

from .conftest import SMALL_SEGMENT
from .disk import abandon, patch, record_offsets

TYPES = st.sampled_from([RecordType.INGRESS, RecordType.OUTCOME, RecordType.HEARTBEAT,
                         RecordType.DROPPED])
APPEND = st.tuples(st.just("append"), TYPES, st.binary(max_size=3000), st.integers(0, 2**64 - 1))
MANY = st.tuples(st.just("many"), TYPES, st.lists(st.binary(max_size=400), min_size=1, max_size=60))
REOPEN = st.tuples(st.just("reopen"), st.sampled_from(["none", "batch", "always"]))
OPERATIONS = st.lists(st.one_of(APPEND, APPEND, MANY, REOPEN), max_size=50)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _open(path: Path, durability: str = "none") -> Writer:
    return Writer(path, "node-a", 0, durability, segment_bytes=SMALL_SEGMENT)


@SETTINGS
@given(OPERATIONS)
def test_appends_rotations_and_reopens_read_back_identically(operations: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "node-a" / "0"
        model: list[tuple[int, bytes, int]] = []  # (type, body, attestation_id) from seq 2
        hashes: dict[int, bytes] = {}
        writer = _open(stream)
        try:
            for operation in operations:
                if operation[0] == "append":
                    _, kind, body, attestation_id = operation
                    seq, digest = writer.append(kind, body, attestation_id)
                    model.append((kind, body, attestation_id))
                    hashes[seq] = digest
                elif operation[0] == "many":
                    _, kind, bodies = operation
                    first, digest = writer.append_many(kind, bodies)
                    model.extend((kind, body, 0) for body in bodies)
                    hashes[first + len(bodies) - 1] = digest
                else:
                    writer.close()
                    writer = _open(stream, operation[1])
                assert writer.next_seq == len(model) + 2
        finally:
            writer.close()
        records = list(Reader(stream).records())
        assert [r.seq for r in records] == list(range(1, len(model) + 2))
        assert [(r.type, r.body, r.attestation_id) for r in records[1:]] == model
        previous = bytes(32)
        for record in records:
            assert record.prev_hash == previous
            assert record.chain_hash == hashlib.sha256(previous + record.canonical).digest()
            previous = record.chain_hash
        assert all(records[seq - 1].chain_hash == digest for seq, digest in hashes.items())
        result = verify(stream)
        assert result.ok and result.last_seq == len(model) + 1


@SETTINGS
@given(st.lists(st.binary(min_size=0, max_size=500), min_size=1, max_size=200), st.floats(0, 1))
def test_a_torn_write_anywhere_keeps_exactly_the_untouched_records(bodies: list[bytes],
                                                                   where: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "node-a" / "0"
        writer = Writer(stream, "node-a", 0, "none", segment_bytes=SMALL_SEGMENT, prefault=False)
        for i, body in enumerate(bodies):
            writer.append(RecordType.INGRESS, body, i)
        abandon(writer)
        segment = list_segments(stream)[-1][1]
        records = record_offsets(segment)
        end = records[-1][1] + records[-1][2]
        cut = 256 + int(where * (end - 256))
        before = segment.read_bytes()
        patch(segment, cut, bytes(end - cut))
        after = segment.read_bytes()
        kept = [seq for seq, offset, size in records
                if before[offset:offset + size] == after[offset:offset + size]]
        assert kept == [seq for seq, _, _ in records][:len(kept)]  # a prefix
        expected_next = (kept[-1] + 1) if kept else records[0][0]
        with _open(stream) as reopened:
            assert reopened.next_seq == max(expected_next, 2)
            reopened.append(RecordType.HEARTBEAT, b"", 0)
        assert verify(stream).ok
