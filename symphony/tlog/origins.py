"""Names in Symphony's logs: one log key per node, one origin per stream epoch.

    log name = <origin prefix>/<node id>                  (the node key's note name)
    origin   = <log name>/<stream id>/<epoch, 32 hex>     (one Merkle tree each)

The prefix is a deployment's schema-less URL (default `symphony.example/local`);
an origin is never reused: a wiped stream restarts under a new random epoch.
"""

from __future__ import annotations

import re

DEFAULT_PREFIX = "symphony.example/local"
_PREFIX = re.compile(r"[A-Za-z0-9.-]+(/[A-Za-z0-9._-]+)*")


def log_name(prefix: str, node_id: str) -> str:
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"origin prefix {prefix!r} must be a schema-less URL path without spaces or '+'")
    return f"{prefix}/{node_id}"


def origin(name: str, stream_id: int, epoch: bytes) -> str:
    if len(epoch) != 16:
        raise ValueError("an epoch is 16 bytes")
    return f"{name}/{stream_id}/{epoch.hex()}"
