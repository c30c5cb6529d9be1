"""The add-checkpoint request body and the witness's decision, as pure functions.

Body (c2sp.org/tlog-witness): `old <size>\\n`, at most 63 base64 proof lines,
an empty line, then the signed checkpoint note. The decision compares it with
the latest checkpoint cosigned for the origin; the HTTP layer turns each
`Refusal` into its status code.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from symphony.tlog import checkpoint, merkle, note

MAX_PROOF_LINES = 63
_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")


class Refusal(Exception):
    """A request the witness will not cosign: `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str, current_size: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.current_size = current_size


@dataclass(frozen=True)
class Request:
    old_size: int
    proof: list[bytes]
    note: bytes  # the signed checkpoint, verbatim


def parse_request(body: bytes) -> Request:
    """Split a request body; malformed framing is a 400."""
    head, sep, signed = body.partition(b"\n\n")
    if not sep:
        raise Refusal(400, "no empty line between the proof and the checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise Refusal(400, "the old size and proof lines must be ASCII") from None
    match = _OLD.fullmatch(lines[0])
    if match is None:
        raise Refusal(400, "the first line must be `old <size>` in decimal without leading zeros")
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise Refusal(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in proof_lines:
        try:
            value = base64.b64decode(line, validate=True)
        except binascii.Error:
            raise Refusal(400, "a consistency proof line is not base64") from None
        if len(value) != merkle.HASH_SIZE:
            raise Refusal(400, "a consistency proof line is not a 32-byte hash")
        proof.append(value)
    return Request(int(match.group(1)), proof, signed)


@dataclass(frozen=True)
class TrustedLog:
    """A node key and the origins it may sign: every origin under `prefix + '/'`."""

    prefix: str
    key: note.Verifier

    def covers(self, origin: str) -> bool:
        return checkpoint.key_covers(self.prefix, origin)


def origin_of(signed: bytes) -> str:
    """The origin line of a signed checkpoint (before any verification)."""
    try:
        text, _ = note.split(signed)
    except note.NoteError as exc:
        raise Refusal(400, f"malformed checkpoint note: {exc}") from None
    return text.split("\n", 1)[0]


def verify_checkpoint(signed: bytes, logs: list[TrustedLog]) -> checkpoint.Checkpoint:
    """The checkpoint, if a trusted key for its origin signed it (404 unknown origin, 403 bad signature)."""
    origin = origin_of(signed)
    keys = [log.key for log in logs if log.covers(origin)]
    if not keys:
        raise Refusal(404, f"unknown origin {origin!r}")
    try:
        text, _ = note.open_note(signed, keys)
    except note.NoteError as exc:
        raise Refusal(403, str(exc)) from None
    try:
        return checkpoint.Checkpoint.parse(text)
    except checkpoint.CheckpointError as exc:
        raise Refusal(400, f"malformed checkpoint: {exc}") from None


def check_consistency(request: Request, new: checkpoint.Checkpoint, latest: checkpoint.Checkpoint | None) -> None:
    """The tlog-witness rules, in the order the specification states them."""
    if request.old_size > new.size:
        raise Refusal(400, f"old size {request.old_size} is larger than the checkpoint's {new.size}")
    current = latest.size if latest is not None else 0
    if request.old_size != current:
        raise Refusal(409, f"old size {request.old_size} is not the latest cosigned size {current}", current)
    if new.size == 0 and new.root != merkle.EMPTY_ROOT:
        raise Refusal(422, "a checkpoint of size 0 must have the empty tree's root")
    if request.old_size == 0:
        if request.proof:
            raise Refusal(422, "a proof from size 0 must be empty")
        return
    assert latest is not None
    if request.old_size == new.size:
        if new.root != latest.root:
            raise Refusal(422, "same size, another root: the log forked")
        if request.proof:
            raise Refusal(422, "same size takes an empty proof")
        return
    try:
        merkle.verify_consistency(request.old_size, new.size, request.proof, latest.root, new.root)
    except merkle.ProofError as exc:
        raise Refusal(422, f"consistency proof does not verify: {exc}") from None
