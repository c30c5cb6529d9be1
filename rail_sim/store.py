"""The simulator's durable idempotency store and its execution counters.

One append-only file of JSON lines per profile (`<state_dir>/<profile>.jsonl`),
one line per *new* execution, written with a single `write()` on an O_APPEND
descriptor before the answer is sent (and fsynced when asked). A process killed
at any point therefore either executed and remembers it, or did not execute.
On start the file is replayed, so a restarted simulator still answers an old key
with its cached result and still counts one execution for it.

Counters: executions per idempotency key and per payment reference (the
relayer sends the outbox id as reference: a relayer that invented a fresh key
for a retry would show two executions for one reference), and requests per key.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec


class Execution(msgspec.Struct, kw_only=True):
    key: str
    reference: str
    fingerprint: str
    outcome: str  # profile-specific final state, e.g. COMPLETED / ACCOUNT_CLOSED
    transfer_id: str
    amount_minor: int
    executed_at: float
    settle_at: float  # when an asynchronous operator reports the final state
    currency: str = ""  # the real-rail profiles record what moved, for their statements
    account: str = ""


class ExecutionStore:
    def __init__(self, path: Path | None, *, fsync: bool = False) -> None:
        self._path = path
        self._fsync = fsync
        self._by_key: dict[str, Execution] = {}
        self.executions_per_key: Counter[str] = Counter()
        self.executions_per_reference: Counter[str] = Counter()
        self.requests_per_key: Counter[str] = Counter()
        self.replays = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._replay(path)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _replay(self, path: Path) -> None:
        if not path.exists():
            return
        decoder = msgspec.json.Decoder(Execution)
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                execution = decoder.decode(line)
            except msgspec.DecodeError:
                break  # a torn last line: that execution never answered, so it never happened
            self._remember(execution)

    def _remember(self, execution: Execution) -> None:
        self._by_key[execution.key] = execution
        self.executions_per_key[execution.key] += 1
        self.executions_per_reference[execution.reference] += 1

    def get(self, key: str) -> Execution | None:
        return self._by_key.get(key)

    def executions(self) -> list[Execution]:
        """Every execution, oldest first (the statements are made from these)."""
        with self._lock:
            return sorted(self._by_key.values(), key=lambda execution: execution.executed_at)

    def note_request(self, key: str) -> None:
        self.requests_per_key[key] += 1

    def execute(self, execution: Execution) -> Execution:
        """Record a new execution; returns the stored one if the key already executed."""
        with self._lock:
            existing = self._by_key.get(execution.key)
            if existing is not None:
                self.replays += 1
                return existing
            if self._fd is not None:
                line = msgspec.json.encode(execution) + b"\n"
                written = os.write(self._fd, line)
                assert written == len(line), "short append to the execution log"
                if self._fsync:
                    os.fsync(self._fd)
            self._remember(execution)
            return execution

    def stats(self) -> dict[str, Any]:
        doubles_key = {k: n for k, n in self.executions_per_key.items() if n > 1}
        doubles_ref = {r: n for r, n in self.executions_per_reference.items() if n > 1}
        return {
            "executions_total": sum(self.executions_per_key.values()),
            "keys": len(self.executions_per_key),
            "requests_total": sum(self.requests_per_key.values()),
            "replays_total": self.replays,
            "executions_per_key": dict(self.executions_per_key),
            "executions_per_reference": dict(self.executions_per_reference),
            "requests_per_key": dict(self.requests_per_key),
            "double_executions_by_key": doubles_key,
            "double_executions_by_reference": doubles_ref,
        }

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
