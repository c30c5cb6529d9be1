"""Signed gap statements: the body text, its parser, and signing as a C2SP signed note.

A gap statement says, for one closed UTC window, how many INGRESS records of
executing routes each participant had, how many were executed, handled without
execution, or are ghosts (the gap), and how many executions lack their INGRESS
(unattested); it names the checkpoints (origin, tree size, root) of the logs it
was computed over, and every ghost by position. The repair leader signs it
with its gap-statement key (repair/statements.py); `symphony verify
gap-statement` checks it offline. docs/verifying.md ("Gap statements") defines
the body byte for byte, with a worked example (tests/vectors/gap-statement/).

Body, one line each, every line ending in a newline, fields separated by one space:

    symphony.example/gap-statement/v1
    window <start> <end>
    as-of <time>
    checkpoint <origin> <tree size> <base64 root>                    (0 or more, sorted by origin)
    participant <id> <ingress> <executions> <handled> <gap> <unattested>   (0 or more, sorted by id)
    total <ingress> <executions> <handled> <gap> <unattested>
    ghost <participant id> <node id> <stream id> <seq> <attestation id>    (0 or more, by node, stream, seq)

Times are UTC, `YYYY-MM-DDTHH:MM:SSZ`; numbers are decimal without leading
zeros; ids are percent-encoded (any byte outside `A-Z a-z 0-9 - . _ ~ ( ) @ :`
as `%XX`, UTF-8, upper-case hex).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass, field

from symphony.tlog import note

FORMAT = "symphony.example/gap-statement/v1"
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_NUMBER = re.compile(r"0|[1-9][0-9]{0,18}")
_ID_SAFE = re.compile(r"[A-Za-z0-9\-._~()@:]")
_ENCODED_ID = re.compile(r"(?:[A-Za-z0-9\-._~()@:]|%[0-9A-F]{2})+")
TUPLE = ("ingress", "executions", "handled", "gap", "unattested")


class StatementError(ValueError):
    """A gap statement that does not parse or whose signature does not verify."""


def format_time(value: dt.datetime) -> str:
    if value.tzinfo is None or value.microsecond:
        raise StatementError(f"{value!r} is not a whole-second UTC time")
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> dt.datetime:
    if not _TIME.fullmatch(text):
        raise StatementError(f"time {text!r} is not YYYY-MM-DDTHH:MM:SSZ")
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise StatementError(f"time {text!r} is not a valid date and time") from None


def encode_id(value: str) -> str:
    if not value:
        raise StatementError("an id is empty")
    return "".join(c if _ID_SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in value)


def decode_id(text: str) -> str:
    if not _ENCODED_ID.fullmatch(text):
        raise StatementError(f"id {text[:40]!r} is not percent-encoded as the format says")
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            raw.append(int(text[i + 1:i + 3], 16))
            i += 3
        else:
            raw.extend(text[i].encode())
            i += 1
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StatementError(f"id {text[:40]!r} is not UTF-8") from None
    if encode_id(decoded) != text:
        raise StatementError(f"id {text[:40]!r} is not in its one encoded form")
    return decoded


def _number(text: str, what: str) -> int:
    if not _NUMBER.fullmatch(text):
        raise StatementError(f"{what} {text!r} is not a decimal without leading zeros")
    return int(text)


@dataclass(frozen=True)
class CheckpointRef:
    origin: str
    size: int
    root: bytes

    def line(self) -> str:
        return f"checkpoint {self.origin} {self.size} {base64.b64encode(self.root).decode()}\n"


@dataclass(frozen=True)
class Counts:
    """The gap tuple of one participant (or the total): gap = ingress - executions - handled."""

    ingress: int
    executions: int
    handled: int
    gap: int
    unattested: int

    def fields(self) -> str:
        return f"{self.ingress} {self.executions} {self.handled} {self.gap} {self.unattested}"


@dataclass(frozen=True)
class Ghost:
    participant_id: str
    node_id: str
    stream_id: int
    seq: int
    attestation_id: int

    def line(self) -> str:
        return (f"ghost {encode_id(self.participant_id)} {encode_id(self.node_id)} {self.stream_id} {self.seq} "
                f"{self.attestation_id}\n")


@dataclass(frozen=True)
class Statement:
    window_start: dt.datetime
    window_end: dt.datetime
    as_of: dt.datetime
    checkpoints: tuple[CheckpointRef, ...] = ()
    participants: dict[str, Counts] = field(default_factory=dict)
    ghosts: tuple[Ghost, ...] = ()

    @property
    def total(self) -> Counts:
        values = list(self.participants.values())
        return Counts(*(sum(getattr(c, name) for c in values) for name in TUPLE))

    def body(self) -> str:
        if self.window_end <= self.window_start:
            raise StatementError("a window ends after it starts")
        lines = [f"{FORMAT}\n", f"window {format_time(self.window_start)} {format_time(self.window_end)}\n",
                 f"as-of {format_time(self.as_of)}\n"]
        lines += [ref.line() for ref in sorted(self.checkpoints, key=lambda r: r.origin)]
        lines += [f"participant {encode_id(pid)} {self.participants[pid].fields()}\n"
                  for pid in sorted(self.participants)]
        lines.append(f"total {self.total.fields()}\n")
        lines += [ghost.line() for ghost in sorted(self.ghosts, key=lambda g: (g.node_id, g.stream_id, g.seq))]
        return "".join(lines)

    def as_dict(self) -> dict[str, object]:
        return {"window": {"start": format_time(self.window_start), "end": format_time(self.window_end)},
                "as_of": format_time(self.as_of),
                "checkpoints": [{"origin": r.origin, "tree_size": r.size, "root": base64.b64encode(r.root).decode()}
                                for r in self.checkpoints],
                "participants": {pid: vars(c) for pid, c in self.participants.items()},
                "total": vars(self.total),
                "ghosts": [vars(g) for g in self.ghosts]}


def parse(body: str) -> Statement:
    """The statement a body states; refuses anything but the exact format."""
    if not body.endswith("\n"):
        raise StatementError("the body does not end with a newline")
    lines = body[:-1].split("\n")
    if lines[0] != FORMAT:
        raise StatementError(f"the first line is {lines[0][:60]!r}, not {FORMAT}")
    if len(lines) < 4:
        raise StatementError("the body is shorter than format, window, as-of and total lines")
    window = lines[1].split(" ")
    if len(window) != 3 or window[0] != "window":
        raise StatementError("the second line is not `window <start> <end>`")
    start, end = parse_time(window[1]), parse_time(window[2])
    if end <= start:
        raise StatementError("the window ends before it starts")
    as_of = lines[2].split(" ")
    if len(as_of) != 2 or as_of[0] != "as-of":
        raise StatementError("the third line is not `as-of <time>`")
    checkpoints: list[CheckpointRef] = []
    participants: dict[str, Counts] = {}
    ghosts: list[Ghost] = []
    total: Counts | None = None
    order = {"checkpoint": 0, "participant": 1, "total": 2, "ghost": 3}
    stage = 0
    for number, line in enumerate(lines[3:], start=4):
        words = line.split(" ")
        kind = words[0]
        if kind not in order or order[kind] < stage or (kind == "total" and total is not None):
            raise StatementError(f"line {number}: {line[:60]!r} is not expected here")
        stage = order[kind]
        if kind == "checkpoint":
            if len(words) != 4:
                raise StatementError(f"line {number}: not `checkpoint <origin> <size> <root>`")
            try:
                root = base64.b64decode(words[3], validate=True)
            except binascii.Error:
                root = b""
            if len(root) != 32 or base64.b64encode(root).decode() != words[3]:
                raise StatementError(f"line {number}: the root is not 32 bytes in standard base64")
            checkpoints.append(CheckpointRef(words[1], _number(words[2], "tree size"), root))
        elif kind == "participant":
            if len(words) != 7:
                raise StatementError(f"line {number}: not `participant <id> <five counts>`")
            pid = decode_id(words[1])
            if pid in participants:
                raise StatementError(f"line {number}: participant {pid} is listed twice")
            participants[pid] = _counts(words[2:], number)
        elif kind == "total":
            if len(words) != 6:
                raise StatementError(f"line {number}: not `total <five counts>`")
            total = _counts(words[1:], number)
        else:
            if len(words) != 6:
                raise StatementError(f"line {number}: not `ghost <participant> <node> <stream> <seq> <id>`")
            ghosts.append(Ghost(decode_id(words[1]), decode_id(words[2]), _number(words[3], "stream id"),
                                _number(words[4], "seq"), _number(words[5], "attestation id")))
    if total is None:
        raise StatementError("the body has no total line")
    statement = Statement(start, end, parse_time(as_of[1]), tuple(checkpoints), participants, tuple(ghosts))
    if statement.total != total:
        raise StatementError("the total line is not the sum of the participant lines")
    if statement.body() != body:
        raise StatementError("the body is not in its one canonical form (order of lines)")
    return statement


def _counts(words: list[str], number: int) -> Counts:
    counts = Counts(*(_number(w, name) for w, name in zip(words, TUPLE, strict=True)))
    if counts.gap != counts.ingress - counts.executions - counts.handled:
        raise StatementError(f"line {number}: gap is not ingress - executions - handled")
    return counts


def sign(statement: Statement, signer: note.Signer) -> str:
    """The signed note: the body, a blank line, the repair key's signature line."""
    return note.sign(statement.body(), signer)


def open_statement(signed: bytes, key: note.Verifier) -> tuple[Statement, str]:
    """Verify the signature with the key the verifier trusts; the statement and its body."""
    try:
        text, _ = note.open_note(signed, [key])
    except note.NoteError as exc:
        raise StatementError(str(exc)) from None
    return parse(text), text
