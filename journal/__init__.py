"""Symphony's journal: a memory-mapped, hash-chained write-ahead log per stream.

The public surface is this module (see docs/architecture.md, "Journal"):

    w = Writer(stream_dir, node_id="node-a", stream_id=0, durability="batch")
    seq, chain_hash = w.append(RecordType.INGRESS, body, attestation_id)
    seq, chain_hash = await w.append_durable(RecordType.INGRESS, body, attestation_id)
    for record in Reader(stream_dir).records(from_seq=1): ...
    async for record in Reader(stream_dir).follow(from_seq=1): ...
    async for records in Reader(stream_dir).follow_batches(from_seq=1): ...
    result = verify(stream_dir)

The format is specified in journal/FORMAT.md; caveats are in journal/README.md.
The C core is the private extension journal._journal (cffi, API mode).
"""

from journal._errors import JournalCorrupt, JournalError, JournalFull, JournalIOError, JournalLocked
from journal._format import (
    CheckpointBody,
    Durability,
    Genesis,
    Record,
    RecordType,
    SegmentHeader,
    chain_hash,
    checkpoint_body,
    parse_checkpoint,
    parse_genesis,
    record_size,
)
from journal._reader import Reader, VerifyResult, releasable_segments, release_segments, verify
from journal._releases import Release, ReleaseLog, append_release, read_releases
from journal._writer import DEFAULT_SEGMENT_BYTES, CheckpointCut, Writer

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "Durability",
    "Genesis",
    "JournalCorrupt",
    "JournalError",
    "JournalFull",
    "JournalIOError",
    "JournalLocked",
    "Reader",
    "Record",
    "RecordType",
    "SegmentHeader",
    "VerifyResult",
    "Writer",
    "CheckpointBody",
    "CheckpointCut",
    "chain_hash",
    "checkpoint_body",
    "parse_checkpoint",
    "parse_genesis",
    "record_size",
    "Release",
    "ReleaseLog",
    "append_release",
    "read_releases",
    "releasable_segments",
    "release_segments",
    "verify",
]
