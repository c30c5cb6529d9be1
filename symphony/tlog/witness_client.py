"""A client of the C2SP tlog-witness API: submit a checkpoint, get cosignatures.

The log keeps, per witness, the size the witness last cosigned. It sends
`old <that size>` with a consistency proof from it; a 409 says which size the
witness really has (after a restart on either side), and the client retries
once from there. Anything else that is not 200 is a refusal the caller turns
into an incident (a rollback or fork is 409 again or 422).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from symphony.tlog import checkpoint, note

SIZE_CONTENT_TYPE = "text/x.tlog.size"
RESPONSE_BYTES_MAX = 64 * 1024


class WitnessUnavailable(Exception):
    """The witness could not be reached or did not answer in time: try later."""


@dataclass(frozen=True)
class Refused:
    status: int
    reason: str
    witness_size: int | None = None


@dataclass(frozen=True)
class Cosigned:
    lines: list[str]      # the signature lines to append to the checkpoint note
    timestamps: dict[str, int]


ConsistencyProof = Callable[[int, int], list[bytes]]
"""(old size, new size) -> the RFC 9162 consistency proof (empty for old size 0)."""


def request_body(old_size: int, proof: list[bytes], signed: str) -> bytes:
    lines = [f"old {old_size}"] + [base64.b64encode(h).decode() for h in proof]
    return ("\n".join(lines) + "\n\n" + signed).encode()


async def add_checkpoint(session: aiohttp.ClientSession, url: str, signed: str, cp: checkpoint.Checkpoint,
                         old_size: int, prove: ConsistencyProof, witness: note.Verifier, *,
                         timeout_seconds: float = 5.0) -> Cosigned | Refused:
    """Submit `signed` (the node-signed checkpoint `cp`) to the witness at `url`."""
    for attempt in range(2):
        proof = prove(old_size, cp.size) if 0 < old_size < cp.size else []
        status, body, content_type = await _post(session, url, request_body(old_size, proof, signed), timeout_seconds)
        if status == 200:
            return _cosignatures(body, cp, witness)
        if status == 409 and content_type == SIZE_CONTENT_TYPE and attempt == 0:
            size = _size(body)
            if size is not None and size <= cp.size:
                old_size = size  # the witness is behind or ahead of what we thought: retry from its size
                continue
            return Refused(409, f"the witness has size {size}, beyond this checkpoint's {cp.size}", size)
        return Refused(status, body.decode("utf-8", errors="replace").strip()[:500],
                       _size(body) if content_type == SIZE_CONTENT_TYPE else None)
    raise AssertionError("unreachable: the loop returns")


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, timeout_seconds: float
                ) -> tuple[int, bytes, str]:
    try:
        async with session.post(url.rstrip("/") + "/add-checkpoint", data=body,
                                timeout=aiohttp.ClientTimeout(total=timeout_seconds)) as response:
            data = await response.content.read(RESPONSE_BYTES_MAX + 1)
            if len(data) > RESPONSE_BYTES_MAX:
                raise WitnessUnavailable(f"{url}: answer larger than {RESPONSE_BYTES_MAX} bytes")
            return response.status, data, response.headers.get("Content-Type", "").split(";")[0].strip()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise WitnessUnavailable(f"{url}: {exc or type(exc).__name__}") from None


def _size(body: bytes) -> int | None:
    text = body.decode("ascii", errors="replace")
    if text.endswith("\n") and text[:-1].isdigit() and (text[:-1] == "0" or not text.startswith("0")):
        return int(text[:-1])
    return None


def _cosignatures(body: bytes, cp: checkpoint.Checkpoint, witness: note.Verifier) -> Cosigned | Refused:
    """Keep only lines from the witness we trust, after checking them."""
    try:
        text = body.decode("utf-8")
        signatures = note.split((cp.text() + "\n" + text).encode())[1]
        timestamps = checkpoint.verify_cosignatures(cp.text(), signatures, [witness])
    except (UnicodeDecodeError, note.NoteError, checkpoint.CheckpointError) as exc:
        return Refused(200, f"the witness answered 200 with an unusable cosignature: {exc}")
    if witness.name not in timestamps:
        return Refused(200, "the witness answered 200 without a cosignature from its known key")
    lines = [line + "\n" for line in text.split("\n") if line.startswith(f"\u2014 {witness.name} ")]
    return Cosigned(lines, timestamps)
