"""Local retention of the write-once copy: a mirror file is deleted only after
the shipper has acknowledged all of it.

Goal: the sidecar prunes exactly the files that are acknowledged in full by
Vector's checkpoint (position >= size, matched by device and inode), sealed
(not the stream's newest file) and older than the keep time; never a file
acknowledged in part, never the newest file, never without or with an
unreadable acknowledgements file, never another stream's files. Method: real
mirror files in a temporary directory, a checkpoints.json in Vector's format
(`{"version":"1","checkpoints":[{"fingerprint":{"dev_inode":[dev,ino]},
"position":N}]}`) written the way Vector writes it, and Mirror.prune.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ingress_sidecar import metrics
from ingress_sidecar.mirror import Mirror
from symphony import attestation_mirror as fmt

NODE = "node-r"


def _file(directory: Path, stream: int, first_seq: int, size: int, age_seconds: float = 3600.0) -> Path:
    path = directory / fmt.file_name(NODE, stream, first_seq)
    path.write_bytes(b"x" * (size - 1) + b"\n")
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))
    return path


def _acknowledge(ack_file: Path, positions: dict[Path, int]) -> None:
    checkpoints = []
    for path, position in positions.items():
        info = path.stat()
        checkpoints.append({"fingerprint": {"dev_inode": [info.st_dev, info.st_ino]}, "position": position,
                            "modified": "2026-01-01T00:00:00Z"})
    ack_file.write_text(json.dumps({"version": "1", "checkpoints": checkpoints}))


def _mirror(directory: Path, stream: int, ack_file: Path | None, keep_seconds: float = 60.0) -> Mirror:
    return Mirror(directory, node_id=NODE, stream_id=stream, stream_dir=directory / "unused",
                  file_bytes_max=4096, queue_records_max=16, stats=metrics.WorkerStats(None, stream),
                  acknowledgements_file=ack_file, keep_acknowledged_seconds=keep_seconds)


def test_only_acknowledged_sealed_old_files_are_pruned(tmp_path: Path) -> None:
    """Full ack + sealed + old: pruned. Partial ack, newest, unknown, young, other stream: kept."""
    directory = tmp_path / "mirror"
    directory.mkdir()
    acked = _file(directory, 0, 1, 100)
    partial = _file(directory, 0, 50, 100)
    unknown = _file(directory, 0, 80, 100)
    young = _file(directory, 0, 90, 100, age_seconds=1.0)
    newest = _file(directory, 0, 120, 100)
    other_stream = _file(directory, 1, 1, 100)
    other_newest = _file(directory, 1, 9, 100)
    ack_file = tmp_path / "checkpoints.json"
    _acknowledge(ack_file, {acked: 100, partial: 99, young: 100, newest: 100, other_stream: 100,
                            other_newest: 100})
    mirror = _mirror(directory, 0, ack_file)
    assert mirror.prune() == 1
    assert not acked.exists()
    for kept in (partial, unknown, young, newest, other_stream, other_newest):
        assert kept.exists(), kept.name
    assert mirror.stats.counters["mirror_pruned"][()] == 1
    # 1 byte of `partial` and all of `unknown` are not acknowledged.
    assert mirror.stats.gauges["mirror_unacknowledged_bytes"] == 101
    _acknowledge(ack_file, {partial: 100})  # the rest of it reaches the object store
    assert mirror.prune() == 1
    assert not partial.exists() and unknown.exists() and newest.exists()


def test_nothing_is_pruned_without_a_readable_acknowledgement(tmp_path: Path) -> None:
    """No acknowledgements file configured, one not written yet, or one malformed: every file stays."""
    directory = tmp_path / "mirror"
    directory.mkdir()
    sealed = _file(directory, 0, 1, 100)
    _file(directory, 0, 10, 100)
    ack_file = tmp_path / "checkpoints.json"
    assert _mirror(directory, 0, None, keep_seconds=0).prune() == 0
    assert _mirror(directory, 0, ack_file, keep_seconds=0).prune() == 0  # not written yet
    ack_file.write_text('{"version": "2", "checkpoints": []}')
    assert _mirror(directory, 0, ack_file, keep_seconds=0).prune() == 0
    ack_file.write_text("not json")
    assert _mirror(directory, 0, ack_file, keep_seconds=0).prune() == 0
    assert sealed.exists()
    _acknowledge(ack_file, {sealed: 100})
    assert _mirror(directory, 0, ack_file, keep_seconds=0).prune() == 1  # the same file, once acknowledged
    assert not sealed.exists()
