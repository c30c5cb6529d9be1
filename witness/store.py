"""The witness's own store: the latest cosigned checkpoint per origin, in files.

One file per origin, `<state_dir>/logs/<sha256(origin) hex>`, holding the
cosigned checkpoint note exactly as the monitoring endpoint serves it. A new
state is written to a temporary file, fsync'd, renamed over the old one and
the directory fsync'd, all before the witness answers: after a crash (kill -9
mid-request included) the file is the old state or the new one, never a mix,
and never older than a cosignature the witness handed out.

Refused submissions from trusted keys (rollback, fork) are kept as evidence
under `<state_dir>/refused/`, bounded in count.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import time
from pathlib import Path

from symphony.files import write_atomically
from symphony.tlog import checkpoint, note

REFUSED_KEEP_MAX = 1000
# Persistence is fsync-bound, not CPU-bound: one thread per origin being
# written lets the disk batch the syncs of many origins (asyncio's default
# executor has cpu + 4 threads, which capped the witness at a third of the
# disk's rate in bench/witness_bench.py).
PERSIST_THREADS = 64


def origin_hash(origin: str) -> str:
    return hashlib.sha256(origin.encode()).hexdigest()


class Store:
    def __init__(self, state_dir: Path) -> None:
        self.logs_dir = state_dir / "logs"
        self.refused_dir = state_dir / "refused"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.refused_dir.mkdir(parents=True, exist_ok=True)
        self._latest: dict[str, tuple[checkpoint.Checkpoint, bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._persist = concurrent.futures.ThreadPoolExecutor(PERSIST_THREADS, thread_name_prefix="witness-fsync")

    def close(self) -> None:
        self._persist.shutdown(wait=True)  # every write that was started completes

    def load(self) -> int:
        """Read every stored state (at start); returns how many origins."""
        for path in self.logs_dir.iterdir():
            if path.name.startswith("."):
                path.unlink()  # a temporary file a crash left behind: never the state
                continue
            signed = path.read_bytes()
            text, _ = note.split(signed)
            cp = checkpoint.Checkpoint.parse(text)
            if origin_hash(cp.origin) != path.name:
                raise ValueError(f"{path} holds a checkpoint of another origin ({cp.origin})")
            self._latest[cp.origin] = (cp, signed)
        return len(self._latest)

    def lock(self, origin: str) -> asyncio.Lock:
        """Held from reading the latest state to persisting the new one (the
        specification's atomicity: two requests can never roll each other back)."""
        return self._locks.setdefault(origin, asyncio.Lock())

    def latest(self, origin: str) -> tuple[checkpoint.Checkpoint, bytes] | None:
        return self._latest.get(origin)

    def latest_by_hash(self, hashed: str) -> bytes | None:
        path = self.logs_dir / hashed
        if len(hashed) != 64 or not all(c in "0123456789abcdef" for c in hashed) or not path.is_file():
            return None
        return path.read_bytes()

    @property
    def origins(self) -> int:
        return len(self._latest)

    async def save(self, cp: checkpoint.Checkpoint, cosigned: bytes) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._persist, write_atomically, self.logs_dir / origin_hash(cp.origin), cosigned)
        self._latest[cp.origin] = (cp, cosigned)

    async def keep_refused(self, origin: str, status: int, reason: str, body: bytes) -> None:
        """Evidence of misbehaviour by a trusted log, bounded in count."""
        if sum(1 for _ in self.refused_dir.iterdir()) >= REFUSED_KEEP_MAX:
            return
        name = f"{origin_hash(origin)[:16]}-{time.time_ns()}-{status}.txt"
        data = f"origin {origin}\nstatus {status}\nreason {reason}\n\n".encode() + body
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._persist, write_atomically, self.refused_dir / name, data)
