"""Test-only fault switch of the service: the chaos suite's "blackhole".

A blackholed request is one the sidecar attested and forwarded, which the
service then loses: it answers 201 with disposition `executed`, as if the
payment had been accepted, but writes nothing (no idempotency key, no intent, no
outbox row). The INGRESS therefore has an OUTCOME that claims an execution and
no outbox row: exactly the ghost that repair must report as one GHOST incident
(invariant 2). The retry with the same Idempotency-Key executes once, because
nothing was stored for that key.

Off unless both hold (so a production configuration cannot turn it on by
itself): the configuration names a `test_fault_file`, and the process was
started with the command-line flag `--enable-test-faults`. The file is JSON,
re-read when its modification time changes:

    {"blackhole_rate": 0.1, "blackhole_max": 20, "latency_ms": 0}

`blackhole_rate` (0..1) is the chance that a create request is dropped;
`blackhole_max` (optional) stops dropping after that many; `latency_ms` delays
every create request by that much before it is handled (requests in flight
for a crash to catch). Every dropped
request is appended to `blackholed.jsonl` beside the fault file (attestation
id, node/stream/seq, participant), so a test knows exactly which requests it
must find as ghosts. A missing or invalid file means no faults.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

from symphony.upstream_headers import Attested

log = logging.getLogger("service")
BLACKHOLE_LOG = "blackholed.jsonl"


class FaultSwitch:
    def __init__(self, path: Path, *, seed: int | None = None) -> None:
        self.path = path
        self.log_path = path.parent / BLACKHOLE_LOG
        self._mtime = -1
        self._rate = 0.0
        self._max: int | None = None
        self._latency = 0.0
        self._dropped = 0
        self._rng = random.Random(seed)
        log.warning("TEST FAULT SWITCH ENABLED: requests may be dropped on purpose (chaos tests only)",
                    extra={"fault_file": str(path)})

    def _refresh(self) -> None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._rate, self._max, self._latency, self._mtime = 0.0, None, 0.0, -1
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            data = json.loads(self.path.read_text() or "{}")
            rate = float(data.get("blackhole_rate", 0.0))
            limit = data.get("blackhole_max")
            self._rate = min(max(rate, 0.0), 1.0)
            self._max = int(limit) if limit is not None else None
            self._latency = min(max(float(data.get("latency_ms", 0.0)), 0.0), 60_000.0) / 1000.0
            self._dropped = 0
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.error("test fault file unreadable; no faults", extra={"error": str(exc)})
            self._rate, self._max, self._latency = 0.0, None, 0.0
        log.warning("test faults changed", extra={"blackhole_rate": self._rate, "blackhole_max": self._max,
                                                  "latency_seconds": self._latency})

    def latency_seconds(self) -> float:
        self._refresh()
        return self._latency

    def blackhole(self, attested: Attested) -> dict[str, Any] | None:
        """The fake 201 body when this request is to be dropped, else None."""
        self._refresh()
        if self._rate <= 0.0 or (self._max is not None and self._dropped >= self._max):
            return None
        if self._rng.random() >= self._rate:
            return None
        self._dropped += 1
        record = {"attestation_id": attested.attestation_id, "node_id": attested.node_id,
                  "stream_id": attested.stream_id, "stream_seq": attested.stream_seq,
                  "participant_id": attested.participant_id, "at": time.time()}
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        log.warning("blackholed a request on purpose (test fault)", extra=record)
        return {"payment_id": str(uuid.uuid4()), "status": "PENDING",
                "attestation_id": str(attested.attestation_id)}
