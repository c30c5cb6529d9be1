"""Tampering with closed segments is found by verify with the first bad seq (invariant 4).

Method: write a stream over several segments and close it; change it the way
an operator with file access could; verify must name the first bad seq. The
CLI reports the same through its exit code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from journal import RecordType, Writer, verify
from journal._format import list_segments

from .conftest import REPO_ROOT, SMALL_SEGMENT, child_env
from .disk import fix_crc, flip, locate, patch

TARGET = 400  # in the middle of a sealed segment
TOTAL = 1200


@pytest.fixture
def closed_stream(stream_dir: Path) -> Path:
    with Writer(stream_dir, "node-a", 0, "batch", segment_bytes=SMALL_SEGMENT) as writer:
        for i in range(TOTAL - 1):
            writer.append(RecordType.INGRESS, b"payment-%05d" % i + b"-" * 180, 5000 + i)
    assert verify(stream_dir).ok and len(list_segments(stream_dir)) >= 4
    segment, _, _ = locate(stream_dir, TARGET)
    assert segment != list_segments(stream_dir)[-1][1]
    return stream_dir


def _first_bad(stream: Path) -> tuple[int | None, str]:
    result = verify(stream)
    assert not result.ok
    return result.first_bad_seq, result.reason or ""


def test_flipped_byte_is_found(closed_stream: Path) -> None:
    segment, offset, _ = locate(closed_stream, TARGET)
    flip(segment, offset + 100)
    assert _first_bad(closed_stream) == (TARGET, _first_bad(closed_stream)[1])
    assert "CRC32C" in _first_bad(closed_stream)[1]


def test_flipped_byte_with_recomputed_crc_breaks_the_chain(closed_stream: Path) -> None:
    segment, offset, size = locate(closed_stream, TARGET)
    flip(segment, offset + 100)
    fix_crc(segment, offset, size)
    seq, why = _first_bad(closed_stream)
    assert seq == TARGET and "chain hash" in why


def test_deleted_record_is_found(closed_stream: Path) -> None:
    segment, offset, size = locate(closed_stream, TARGET)
    data = segment.read_bytes()
    patch(segment, offset, data[offset + size:] + bytes(size))  # shift the rest up
    seq, why = _first_bad(closed_stream)
    assert seq == TARGET and f"found seq {TARGET + 1}" in why


def test_swapped_records_are_found(closed_stream: Path) -> None:
    segment, offset, size = locate(closed_stream, TARGET)
    _, next_offset, next_size = locate(closed_stream, TARGET + 1)
    assert size == next_size and next_offset == offset + size
    data = segment.read_bytes()
    patch(segment, offset, data[next_offset:next_offset + size] + data[offset:offset + size])
    assert _first_bad(closed_stream)[0] == TARGET


def test_deleted_segment_is_found(closed_stream: Path) -> None:
    segments = list_segments(closed_stream)
    first_seq, path = segments[1]
    path.unlink()
    seq, why = _first_bad(closed_stream)
    assert seq == first_seq and "missing" in why


def test_edited_segment_header_is_found(closed_stream: Path) -> None:
    first_seq, path = list_segments(closed_stream)[2]
    flip(path, 130)  # prev_hash
    seq, why = _first_bad(closed_stream)
    assert seq == first_seq and "header CRC32C" in why


def test_cut_tail_is_found_only_against_an_anchor(closed_stream: Path) -> None:
    """Invariant 3: a shorter chain still verifies; the outside anchor exposes it."""
    anchor = (TOTAL, verify(closed_stream).last_hash)
    segment, offset, _ = locate(closed_stream, TOTAL - 4)
    patch(segment, offset, bytes(segment.stat().st_size - offset))  # drop the last 5 records
    assert verify(closed_stream).ok  # as the design says: a cut tail alone looks fine
    result = verify(closed_stream, anchor=anchor)
    assert not result.ok and result.first_bad_seq == TOTAL - 4 and "cut" in (result.reason or "")


def test_rewritten_history_differs_from_the_anchor(closed_stream: Path, tmp_path: Path) -> None:
    """A wiped and rewritten stream (new epoch) does not match the old checkpoint."""
    anchor = (TARGET, _hash_of(closed_stream, TARGET))
    for path in closed_stream.iterdir():
        path.unlink()
    with Writer(closed_stream, "node-a", 0, "none", segment_bytes=SMALL_SEGMENT) as writer:
        for i in range(TOTAL - 1):
            writer.append(RecordType.INGRESS, b"payment-%05d" % i + b"-" * 180, 5000 + i)
    result = verify(closed_stream, anchor=anchor)
    assert not result.ok and result.first_bad_seq == TARGET


def _hash_of(stream: Path, seq: int) -> bytes:
    from journal import Reader
    return next(iter(Reader(stream).records(from_seq=seq))).chain_hash


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "journal.cli", *args], capture_output=True,
                          text=True, timeout=60, env=child_env(), cwd=REPO_ROOT)


def test_cli_verify_and_dump_exit_codes(closed_stream: Path, tmp_path: Path) -> None:
    """0 intact, 1 with the first bad seq, 2 for a missing path (one line, no traceback)."""
    ok = _cli("verify", str(closed_stream))
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 1200 records"), ok.stderr
    head = verify(closed_stream).last_hash.hex()
    assert _cli("verify", str(closed_stream), "--anchor", f"{TOTAL}:{head}").returncode == 0
    dumped = _cli("dump", str(closed_stream), "--from", "1199", "--json")
    lines = [json.loads(line) for line in dumped.stdout.splitlines()]
    assert [line["seq"] for line in lines] == [1199, 1200] and lines[-1]["chain_hash"] == head
    assert _cli("dump", str(closed_stream), "--from", "1200").stdout.split()[0] == "1200"

    segment, offset, _ = locate(closed_stream, TARGET)
    flip(segment, offset + 100)
    bad = _cli("verify", str(closed_stream))
    assert bad.returncode == 1 and f"first bad seq {TARGET}" in bad.stdout
    assert json.loads(_cli("verify", str(closed_stream), "--json").stdout)["first_bad_seq"] == TARGET
    dump_bad = _cli("dump", str(closed_stream))
    assert dump_bad.returncode == 1 and f"first bad seq {TARGET}" in dump_bad.stdout

    for args in (["verify", str(tmp_path / "missing")], ["dump", str(tmp_path / "missing")],
                 ["verify", str(closed_stream), "--anchor", "nonsense"]):
        missing = _cli(*args)
        assert missing.returncode == 2, args
        assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
