"""The journal's Merkle tree: kept in C on every append, equal to RFC 9162's over the records.

Goal: after any append the writer knows the root of the stream epoch's tree
(leaf i = the canonical bytes of record seq i + 1), across rotation, reopen and
a kill -9, and the C hashing is the same as symphony.tlog.merkle's (itself
checked against published vectors and pymerkle in tests/tlog/). Method: real
writers on small segments; the reference tree is rebuilt from what the Reader
reads back; a child process is killed mid-append.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from journal import Reader, RecordType, Writer, release_segments
from journal._format import list_segments
from journal._journal import ffi, lib
from symphony.tlog import merkle

from .conftest import SMALL_SEGMENT, python_child

INGRESS, OUTCOME = RecordType.INGRESS, RecordType.OUTCOME


def _writer(path: Path, durability: str = "none") -> Writer:
    return Writer(path, "node-a", 0, durability, segment_bytes=SMALL_SEGMENT)


def _reference(path: Path) -> merkle.MemoryTree:
    tree = merkle.MemoryTree()
    for record in Reader(path).records(from_seq=1):
        assert record.seq == tree.size + 1
        tree.append(record.canonical)
    return tree


def test_c_hashing_is_rfc_9162() -> None:
    out = ffi.new("char[32]")
    for data in (b"", b"\x00", b"x" * 1000):
        lib.jn_merkle_leaf(data, len(data), out)
        assert ffi.buffer(out, 32)[:] == merkle.leaf_hash(data)
    left, right = os.urandom(32), os.urandom(32)
    lib.jn_merkle_node(left, right, out)
    assert ffi.buffer(out, 32)[:] == merkle.node_hash(left, right)


def test_root_after_every_append_across_rotation(stream_dir: Path) -> None:
    with _writer(stream_dir) as writer:
        assert writer.tree_size == 1  # GENESIS is leaf 0
        roots = {}
        for i in range(700):
            seq, _ = writer.append(INGRESS if i % 3 else OUTCOME, os.urandom(i % 300), i)
            assert writer.tree_size == seq
            if i % 97 == 0:
                roots[seq] = writer.tree_root()
        last = writer.next_seq - 1
        final_root = writer.tree_root()
        frontier = writer.tree_frontier()
    assert len(list_segments(stream_dir)) >= 3  # it rotated
    reference = _reference(stream_dir)
    assert reference.size == last and reference.root() == final_root
    assert all(reference.root(size) == root for size, root in roots.items())
    assert merkle.Frontier(last, frontier).root() == final_root


def test_reopen_resumes_the_tree(stream_dir: Path) -> None:
    for round_number in range(3):
        with _writer(stream_dir, "batch") as writer:
            before = writer.tree_root()
            assert before == _reference(stream_dir).root()
            for _ in range(300):
                writer.append(INGRESS, b"r" * 90, round_number)
    assert _reference(stream_dir).size == 901


def test_kill_9_mid_append_then_the_tree_covers_exactly_what_survived(stream_dir: Path) -> None:
    child = python_child(
        """
        import sys
        from journal import Writer, RecordType
        w = Writer(sys.argv[1], "node-a", 0, "none", segment_bytes=64 * 1024)
        print("ready", flush=True)
        i = 0
        while True:
            w.append(RecordType.INGRESS, b"k" * (i % 200), i)
            i += 1
        """, str(stream_dir), stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    # Let it write until it has rotated a few times, then kill it mid-stream.
    deadline = time.monotonic() + 60
    while len(list_segments(stream_dir)) < 4:
        assert time.monotonic() < deadline, "the child did not rotate"
        time.sleep(0.01)  # poll interval while waiting for the condition
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with _writer(stream_dir) as writer:
        reference = _reference(stream_dir)
        assert reference.size > 100
        assert writer.tree_size == reference.size and writer.tree_root() == reference.root()
        writer.append(INGRESS, b"after", 1)
        assert writer.tree_root() == _reference(stream_dir).root()


def test_released_first_segment_leaves_the_tree_unknown(stream_dir: Path) -> None:
    """Until CHECKPOINT records carry the frontier, a stream whose first segment
    was released cannot rebuild its tree: it says so (None), never guesses."""
    with _writer(stream_dir) as writer:
        for _ in range(600):
            writer.append(INGRESS, b"z" * 200, 1)
        last = writer.next_seq - 1
    assert release_segments(stream_dir, last, 0.0)
    with _writer(stream_dir) as writer:
        assert writer.tree_size is None and writer.tree_root() is None
        writer.append(INGRESS, b"still appends", 2)


def _signer(seen: list[tuple[int, bytes]]):  # noqa: ANN202 - a test double for the node's signer
    def sign(size: int, root: bytes) -> bytes:
        seen.append((size, root))
        return f"note for {size} {root.hex()}\n".encode()
    return sign


def test_checkpoint_records_carry_the_frontier_and_resume_after_release(stream_dir: Path) -> None:
    """A CHECKPOINT record (F17) covers the records before it and carries the
    frontier; with the first segments released, a reopened writer resumes its
    tree from the newest CHECKPOINT and the records after it."""
    from journal import parse_checkpoint

    seen: list[tuple[int, bytes]] = []
    with _writer(stream_dir) as writer:
        for round_number in range(4):
            for i in range(200):
                writer.append(INGRESS, os.urandom(50 + i % 90), i)
            cut = writer.checkpoint(_signer(seen))
            assert cut is not None
            assert cut.seq == cut.tree_size + 1 and writer.last_checkpoint_size == cut.tree_size
        for _ in range(150):
            writer.append(OUTCOME, b"after the last checkpoint", 9)
        expected_root, expected_size = writer.tree_root(), writer.tree_size
    reference = _reference(stream_dir)
    assert reference.root() == expected_root
    checkpoints = [r for r in Reader(stream_dir).records() if r.type == RecordType.CHECKPOINT]
    assert len(checkpoints) == 4
    for record, (size, root) in zip(checkpoints, seen):
        body = parse_checkpoint(record.body)
        assert body.tree_size == size == record.seq - 1
        assert reference.root(size) == root == merkle.Frontier(size, body.frontier).root()
        assert body.note == f"note for {size} {root.hex()}\n".encode()
    released = release_segments(stream_dir, checkpoints[-1].seq - 1, 0.0)
    assert released and list_segments(stream_dir)[0][0] > 1
    with _writer(stream_dir) as writer:
        assert writer.tree_size == expected_size and writer.tree_root() == expected_root
        assert writer.last_checkpoint_size == seen[-1][0]
        writer.append(INGRESS, b"still growing", 1)
        assert writer.tree_size == expected_size + 1


def test_a_checkpoint_whose_frontier_lies_is_refused(stream_dir: Path) -> None:
    """A CHECKPOINT record that claims another tree size than its position is corruption."""
    from journal import JournalCorrupt, checkpoint_body

    with _writer(stream_dir) as writer:
        for i in range(600):
            writer.append(INGRESS, b"y" * 100, i)
        size = writer.tree_size
        assert size is not None
        lie = size - 5  # a checkpoint that says it covers fewer records than precede it
        writer.append(RecordType.CHECKPOINT, checkpoint_body(lie, [os.urandom(32)] * bin(lie).count("1"), b"x"), 0)
        last = writer.next_seq - 1
    release_segments(stream_dir, last - 1, 0.0)
    try:
        with _writer(stream_dir):
            raise AssertionError("the writer opened a stream whose CHECKPOINT lies")
    except (JournalCorrupt, ValueError):
        pass
