"""W3C trace context (`traceparent`): continue the caller's trace or start one.

`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`. A valid incoming
header keeps its trace id and flags and gets a new parent (span) id for the hop
through the sidecar; anything else starts a new trace. Only the version 00
format is produced; a higher version is parsed by its first four fields, as the
specification asks.
"""

from __future__ import annotations

import os
import random

# Trace and span ids need to be unique and unpredictable enough to avoid
# collisions (W3C Trace Context, "trace-id"), not secret: a PRNG seeded once
# per process from the OS saves two getrandom(2) calls per request. Never 0.
_IDS = random.Random(os.urandom(32))
_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def _is_hex(value: str, length: int) -> bool:
    return len(value) == length and all(c in _HEX for c in value)


def parse(header: str | None) -> tuple[str, str] | None:
    """(trace id, flags) of a valid traceparent, else None."""
    if not header or len(header) < 55:
        return None
    parts = header.strip().split("-")
    if len(parts) < 4:
        return None
    version, trace_id, parent_id, flags = parts[0], parts[1], parts[2], parts[3][:2]
    if not _is_hex(version, 2) or version == "ff" or (version == "00" and len(parts) != 4):
        return None
    if not _is_hex(trace_id, 32) or trace_id == _ZERO_TRACE:
        return None
    if not _is_hex(parent_id, 16) or parent_id == _ZERO_SPAN or not _is_hex(flags, 2):
        return None
    return trace_id, flags


def continue_or_start(header: str | None) -> str:
    """The traceparent the sidecar sends upstream and attests."""
    parsed = parse(header)
    span_id = f"{_IDS.getrandbits(64) or 1:016x}"
    if parsed is None:
        return f"00-{_IDS.getrandbits(128) or 1:032x}-{span_id}-01"
    trace_id, flags = parsed
    return f"00-{trace_id}-{span_id}-{flags}"
