"""Load for a chaos run: signed demo payments at a steady rate, duplicates and
invalid requests mixed in (as `symphony demo traffic` sends them)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import time
from collections import Counter
from typing import Any

from symphony.app.chaos.system import System


@dataclasses.dataclass
class Sent:
    participant: str
    key: str
    body: bytes
    status: int = 0
    disposition: str = ""
    error: str = ""
    attestation_id: int | None = None


class Load:
    """Signed demo payments at a steady rate, at most `concurrency` in flight."""

    def __init__(self, system: System, *, rate: float, concurrency: int, rng: random.Random,
                 duplicate_rate: float = 0.1, invalid_rate: float = 0.05) -> None:
        from symphony.app import demo

        self.system = system
        # Read once: a request never looks up a system that has gone away (its
        # failure is an answer like any other, not an exception in a task).
        self.url = system.target.rstrip("/") + "/v1/payments"
        self.rate = rate
        self.concurrency = concurrency
        self.rng = rng
        self.duplicate_rate = duplicate_rate
        self.invalid_rate = invalid_rate
        self.tokens = {p: demo.make_token(system.data_dir, p, ttl_seconds=3600) for p in demo.DEMO_PARTICIPANTS}
        self.sent: list[Sent] = []
        self.skipped = 0
        self.stop = asyncio.Event()
        self.session: Any = None
        self.in_flight: set[asyncio.Task[Sent]] = set()

    def next_request(self) -> tuple[str, str, bytes]:
        from symphony.app import demo

        if self.sent and self.rng.random() < self.duplicate_rate:
            prior = self.rng.choice(self.sent)
            return prior.participant, prior.key, prior.body
        return demo.plan_requests(1, list(self.tokens), 0.0, self.invalid_rate, self.rng)[0]

    async def send(self, participant: str, key: str, body: bytes) -> Sent:
        import aiohttp

        from symphony.app import demo

        sent = Sent(participant, key, body)
        self.sent.append(sent)
        headers = {"Authorization": f"Bearer {self.tokens[participant]}", "Idempotency-Key": key,
                   "Content-Type": "application/json"}
        try:
            async with self.session.post(self.url, data=body, headers=headers) as response:
                raw = await response.read()
                sent.status = response.status
                sent.disposition = demo.disposition_of(response.status, response.headers)
                with contextlib.suppress(ValueError, TypeError):
                    sent.attestation_id = int(response.headers.get("X-Symphony-Attestation-Id", ""))
                if response.status >= 500:
                    with contextlib.suppress(ValueError, AttributeError):
                        error = json.loads(raw).get("error", "")
                        sent.error = error if isinstance(error, str) else str(error.get("code", ""))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            sent.error = type(exc).__name__
        return sent

    async def run(self, seconds: float) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=timeout,
                                         connector=aiohttp.TCPConnector(limit=self.concurrency * 4)) as session:
            self.session = session
            interval = 1.0 / self.rate
            deadline = time.monotonic() + seconds
            next_at = time.monotonic()
            while time.monotonic() < deadline and not self.stop.is_set():
                if len(self.in_flight) < self.concurrency:
                    task = asyncio.create_task(self.send(*self.next_request()))
                    self.in_flight.add(task)
                    task.add_done_callback(self.in_flight.discard)
                else:
                    self.skipped += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if self.in_flight:
                await asyncio.wait(list(self.in_flight), timeout=30)
            self.session = None

    def summary(self) -> dict[str, Any]:
        return {"sent": len(self.sent), "skipped_at_concurrency_limit": self.skipped,
                "by_status": dict(sorted(Counter(str(s.status) for s in self.sent).items())),
                "by_disposition": dict(sorted(Counter(s.disposition or "none" for s in self.sent).items())),
                "errors": dict(sorted(Counter(s.error for s in self.sent if s.error).items()))}

    def refused_keys(self, *errors: str) -> set[tuple[str, str]]:
        """(participant, key) whose every answer was one of these refusals."""
        answered: dict[tuple[str, str], set[str]] = {}
        for s in self.sent:
            answered.setdefault((s.participant, s.key), set()).add(s.error if s.status == 503 else "other")
        return {k for k, v in answered.items() if v and v <= set(errors)}
