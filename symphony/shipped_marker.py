"""The forwarder's shipped marker: how far PostgreSQL had checkpointed a stream,
written beside the journal, outside the database.

`<journal_dir>/<node_id>/<stream_id>/forwarder-shipped.json`, replaced
atomically (write to a temporary name, then rename) by the forwarder after its
commits, at most once a second and once more when it stops. One JSON object:

| key | value |
|---|---|
| `version` | 1 |
| `node_id`, `stream_id` | the stream |
| `epoch` | the stream's epoch, 32 lower-case hex digits |
| `seq` | the last seq PostgreSQL had committed (the checkpoint) |
| `chain_hash` | that record's chain hash, 64 lower-case hex digits |

`symphony audit verify-chain --journal-dir` reads it: PostgreSQL's checkpoint
must not be behind it. The marker can lag the database by up to a second (and
by more after a power loss, since it is not fsync'd), never lead it, unless the
database lost commits or had its checkpoint moved back. The journal's segment
names never match this file's name, so the journal ignores it; a wiped stream
directory takes its marker with it, as it should (a new epoch).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from symphony.files import write_atomically

FILE_NAME = "forwarder-shipped.json"
VERSION = 1


class ShippedMarker(msgspec.Struct, frozen=True):
    version: int
    node_id: str
    stream_id: int
    epoch: str
    seq: int
    chain_hash: str

    def epoch_bytes(self) -> bytes:
        return bytes.fromhex(self.epoch)

    def hash_bytes(self) -> bytes:
        return bytes.fromhex(self.chain_hash)


class MarkerError(ValueError):
    """A marker file that cannot be read or is not well formed."""


def write(stream_dir: Path, node_id: str, stream_id: int, epoch: bytes, seq: int, chain_hash: bytes) -> None:
    """Replace the marker atomically (raises OSError)."""
    assert len(epoch) == 16 and len(chain_hash) == 32 and seq >= 0
    marker = ShippedMarker(VERSION, node_id, stream_id, epoch.hex(), seq, chain_hash.hex())
    write_atomically(stream_dir / FILE_NAME, msgspec.json.encode(marker) + b"\n", durable=False)


def read(stream_dir: Path) -> ShippedMarker | None:
    """The marker of a stream directory, None when there is none."""
    path = stream_dir / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MarkerError(f"cannot read {path}: {exc}") from None
    try:
        marker = msgspec.json.decode(raw, type=ShippedMarker)
        if marker.version != VERSION or len(marker.epoch_bytes()) != 16 or len(marker.hash_bytes()) != 32:
            raise ValueError("unknown version or bad lengths")
    except (msgspec.DecodeError, ValueError) as exc:
        raise MarkerError(f"{path} is not a shipped marker: {exc}") from None
    return marker
