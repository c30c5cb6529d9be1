"""The export format (docs/verifying.md, "Exports"): shared by `symphony export`
(repair/export.py, which writes it from PostgreSQL) and `symphony verify
export` (symphony/app/commands/verify_export.py, which checks it offline).

An export is a directory of plain files and one signed manifest:

    manifest          C2SP signed note: what was exported and every file's SHA-256
    streams.jsonl     one line per stream epoch: range, frontier, consistency proof
    records-K.txt     stream epoch K's records, one `<chain hex> <canonical hex>` line each
    checkpoints.jsonl the checkpoint (note verbatim) and cosignature lines per stream epoch
    outbox.jsonl      payment_outbox rows that reference the exported attestations
    events.jsonl      outbox_events of those rows

Nothing here does I/O beyond what a caller hands it: building and parsing the
manifest text, and the JSON shapes of the lines.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import msgspec

FORMAT = "symphony-export/v1"
MANIFEST = "manifest"
STREAMS = "streams.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
OUTBOX = "outbox.jsonl"
EVENTS = "events.jsonl"
DEFAULT_KEY_NAME = "symphony-export"
_RECORDS = re.compile(r"^records-(0|[1-9][0-9]{0,5})\.txt$")
_FILE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}$")


def records_file(index: int) -> str:
    return f"records-{index}.txt"


def records_index(name: str) -> int | None:
    match = _RECORDS.match(name)
    return int(match.group(1)) if match else None


class ManifestError(ValueError):
    """A manifest text that is not in the format."""


class Ended(msgspec.Struct, frozen=True):
    """Where an ended epoch stopped (PostgreSQL journal_epochs)."""

    last_seq: int
    last_hash: str
    journal_head_seq: int
    successor_epoch: str
    reason: str
    ended_at: str


class StreamLine(msgspec.Struct, frozen=True):
    """One stream epoch of the export (streams.jsonl)."""

    stream: int  # K: its records are records-K.txt, its checkpoint has "stream": K
    node_id: str
    stream_id: int
    epoch: str  # 32 lowercase hex digits
    first_seq: int  # a
    last_seq: int  # b
    prev_chain_hash: str  # chain hash of record a - 1 (64 zeros when a = 1)
    frontier: list[str]  # compact range of the tree of size a - 1, largest subtree first
    checkpoint_size: int  # n, the size of the covering checkpoint
    consistency: list[str]  # RFC 9162 consistency proof from b to n (empty when b = n)
    ended: Ended | None = None


class CheckpointLine(msgspec.Struct, frozen=True):
    stream: int
    tree_size: int
    note: str  # the node's signed note, verbatim
    cosignatures: list[str]  # witness signature lines, each ending in a newline


class OutboxLine(msgspec.Struct, frozen=True):
    id: str
    intent_id: str
    participant_id: str
    attestation_id: int
    ingress_node_id: str
    ingress_stream_id: int
    ingress_seq: int
    ingress_body_sha256: str | None
    rail: str
    status: str
    attempt_count: int
    created_at: str
    completed_at: str | None


class EventLine(msgspec.Struct, frozen=True):
    event_id: int
    outbox_id: str
    old_status: str | None
    new_status: str
    attempt: int
    actor: str
    response_code: str | None
    occurred_at: str


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    sha256: str
    items: int


@dataclass(frozen=True)
class Selection:
    """What was exported: a time window (either end may be open) or a seq
    range of one stream epoch."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    node_id: str | None = None
    stream_id: int | None = None
    epoch: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None

    @property
    def by_seq(self) -> bool:
        return self.node_id is not None

    def line(self) -> str:
        if self.by_seq:
            return f"seq {self.node_id} {self.stream_id} {self.epoch} {self.first_seq} {self.last_seq}"
        return f"window {format_time(self.since)} {format_time(self.until)}"

    def window_us(self) -> tuple[int | None, int | None]:
        return to_us(self.since), to_us(self.until)


@dataclass(frozen=True)
class Manifest:
    selection: Selection
    created_at: str
    files: list[FileEntry]

    def text(self) -> str:
        lines = [FORMAT, self.selection.line(), f"created {self.created_at}"]
        lines += [f"file {f.name} {f.size} {f.sha256} {f.items}" for f in self.files]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Manifest:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or lines[0] != FORMAT:
            raise ManifestError(f"not a {FORMAT} manifest")
        selection = _selection(lines[1])
        created = lines[2].split(" ")
        if len(created) != 2 or created[0] != "created":
            raise ManifestError("line 3 is not `created <time>`")
        files: list[FileEntry] = []
        for raw in lines[3:-1]:
            words = raw.split(" ")
            if len(words) != 5 or words[0] != "file" or not _FILE_NAME.match(words[1]) \
                    or not re.fullmatch(r"[0-9a-f]{64}", words[3]) \
                    or not words[2].isdigit() or not words[4].isdigit():
                raise ManifestError(f"manifest line {raw!r} is not `file <name> <bytes> <sha256> <items>`")
            if any(f.name == words[1] for f in files):
                raise ManifestError(f"file {words[1]} is listed twice")
            files.append(FileEntry(words[1], int(words[2]), words[3], int(words[4])))
        return cls(selection, created[1], files)


def _selection(line: str) -> Selection:
    words = line.split(" ")
    try:
        if words[0] == "window" and len(words) == 3:
            return Selection(since=parse_time(words[1]), until=parse_time(words[2]))
        if words[0] == "seq" and len(words) == 6 and re.fullmatch(r"[0-9a-f]{32}", words[3]):
            return Selection(node_id=words[1], stream_id=int(words[2]), epoch=words[3], first_seq=int(words[4]),
                             last_seq=int(words[5]))
    except ValueError:
        pass
    raise ManifestError(f"line 2 {line!r} is not `window <since> <until>` or `seq <node> <stream> <epoch> <a> <b>`")


def format_time(value: dt.datetime | None) -> str:
    """RFC 3339 in UTC with microseconds, `-` for an open end."""
    if value is None:
        return "-"
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime | None:
    if text == "-":
        return None
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text):
        raise ValueError(f"time {text!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


_UNIX = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def to_us(value: dt.datetime | None) -> int | None:
    """Microseconds since the Unix epoch (what record bodies carry)."""
    if value is None:
        return None
    return (value - _UNIX) // dt.timedelta(microseconds=1)
