"""Rail adapters: one interface, one class per operator API.

The rail idempotency key (invariant 6) is `rail_key(outbox_id)`, defined once in
symphony/rail_key.py: hex(SHA-256(the outbox row's uuid bytes)). Never the
client's Idempotency-Key, never a fresh UUID: every attempt for a row, by any
relayer, after any crash or redrive, sends the same key.

Adapters classify every answer into an `Outcome`:

    SUCCESS    the rail executed (final)
    FAILED     the rail refused for good (final, e.g. closed account)
    TRANSIENT  the rail did not execute and may later (5xx before execution,
               connection refused, rate limited): retry with backoff
    AMBIGUOUS  the request may have executed (timeout, connection lost after
               sending): the next attempt asks the rail for the key's status
               where the rail supports it, otherwise resends the same key
    PENDING    the rail accepted but has not settled within our polling bound
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import msgspec

from relayer.config import RailConfig
from relayer.store import ClaimedRow
from symphony.rail_key import rail_key as rail_key  # re-exported: callers import it from here


class Kind(enum.StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    TRANSIENT = "transient"
    AMBIGUOUS = "ambiguous"
    PENDING = "pending"
    POISON = "poison"  # set by the worker when an adapter raised


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    code: str  # e.g. HTTP_201, ACCOUNT_CLOSED, AMBIGUOUS_TIMEOUT
    detail: str | None = None
    reference: str | None = None

    @property
    def rail_healthy(self) -> bool:
        """Whether this outcome counts as the rail working (for the breaker)."""
        return self.kind in (Kind.SUCCESS, Kind.FAILED, Kind.PENDING)


class RailAdapter(Protocol):
    name: str
    supports_status: bool

    async def dispatch(self, row: ClaimedRow) -> Outcome: ...

    async def close(self) -> None: ...


def _transport_outcome(exc: BaseException) -> Outcome:
    """Map a client-side failure to TRANSIENT (never sent) or AMBIGUOUS (maybe executed)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Outcome(Kind.TRANSIENT, "CONNECT_FAILED", str(exc)[:300])
    if isinstance(exc, asyncio.TimeoutError):
        return Outcome(Kind.AMBIGUOUS, "AMBIGUOUS_TIMEOUT", "no answer within the rail timeout")
    return Outcome(Kind.AMBIGUOUS, "AMBIGUOUS_CONNECTION_LOST", f"{type(exc).__name__}: {exc}"[:300])


_CLIENT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


class _HttpAdapter:
    def __init__(self, name: str, settings: RailConfig) -> None:
        self.name = name
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.settings.concurrency, enable_cleanup_closed=True)
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
            self._session = aiohttp.ClientSession(self.settings.url.rstrip("/"), connector=connector,
                                                  timeout=timeout, raise_for_status=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class SwiftpayAdapter(_HttpAdapter):
    """Synchronous JSON API; `Idempotency-Key` header; the answer is final."""

    supports_status = False

    async def dispatch(self, row: ClaimedRow) -> Outcome:
        payload = row.payload
        body = {"amount_minor": int(payload["amount_minor"]), "currency": str(payload["currency"]),
                "account": str(payload["destination_account"]), "reference": str(row.id)}
        try:
            async with self.session.post("/v1/transfers", json=body,
                                         headers={"Idempotency-Key": rail_key(row.id)}) as response:
                data = await response.read()
                status = response.status
        except _CLIENT_ERRORS as exc:
            return _transport_outcome(exc)
        return self.classify(status, data)

    @staticmethod
    def classify(status: int, data: bytes) -> Outcome:
        try:
            answer = msgspec.json.decode(data) if data else {}
        except msgspec.DecodeError:
            answer = {}
        if 200 <= status < 300:
            return Outcome(Kind.SUCCESS, f"HTTP_{status}", None, str(answer.get("transfer_id") or "") or None)
        error = answer.get("error") if isinstance(answer, dict) else None
        code = str(error.get("code")) if isinstance(error, dict) and error.get("code") else f"HTTP_{status}"
        if status in (408, 429) or status >= 500:
            return Outcome(Kind.TRANSIENT, code, f"swiftpay answered {status}")
        return Outcome(Kind.FAILED, code, f"swiftpay refused with {status} {code}")


class MobimoneyAdapter(_HttpAdapter):
    """Asynchronous API: 202 on acceptance, then poll the request's status.

    Its vocabulary: amounts as decimal strings of major units, the key in the
    body as `request_id`, status codes PENDING / SUCCESSFUL / FAILED."""

    supports_status = True

    async def dispatch(self, row: ClaimedRow) -> Outcome:
        key = rail_key(row.id)
        if row.attempt > 1:
            # A retry: the rail may have the key already (lost answer, relayer
            # killed, still pending). Ask first; submit only if it does not.
            known = await self._status(key)
            if known is not None:
                return known if known.kind != Kind.PENDING else await self._poll(key)
        payload = row.payload
        amount_minor = int(payload["amount_minor"])
        assert amount_minor > 0, "amount must be positive"
        body = {"request_id": key, "msisdn": str(payload["destination_account"]),
                "amount": f"{amount_minor // 100}.{amount_minor % 100:02d}",
                "currency": str(payload["currency"]), "narration": str(row.id)}
        try:
            async with self.session.post("/api/v2/disbursements", json=body) as response:
                data = await response.read()
                status = response.status
        except _CLIENT_ERRORS as exc:
            return _transport_outcome(exc)
        answer = _decode(data)
        code = str(answer.get("status_code") or f"HTTP_{status}")
        if status in (200, 202):
            return await self._poll(key)
        if status >= 500 or status == 429:
            return Outcome(Kind.TRANSIENT, code, f"mobimoney answered {status}")
        return Outcome(Kind.FAILED, code, f"mobimoney refused with {status} {code}")

    async def _status(self, key: str) -> Outcome | None:
        """The rail's view of `key`: None if it never saw it."""
        try:
            async with self.session.get(f"/api/v2/disbursements/{key}") as response:
                data = await response.read()
                status = response.status
        except _CLIENT_ERRORS as exc:
            outcome = _transport_outcome(exc)
            # A failed status query never executes anything: retry later.
            return Outcome(Kind.TRANSIENT if outcome.kind == Kind.TRANSIENT else Kind.AMBIGUOUS,
                           outcome.code, outcome.detail)
        answer = _decode(data)
        state = str(answer.get("status_code") or "")
        if status == 404:
            return None
        if status != 200:
            return Outcome(Kind.AMBIGUOUS, f"AMBIGUOUS_STATUS_{status}", "status query failed; outcome unknown")
        reference = str(answer.get("transaction_id") or "") or None
        if state == "SUCCESSFUL":
            return Outcome(Kind.SUCCESS, "SUCCESSFUL", None, reference)
        if state == "FAILED":
            reason = str(answer.get("reason") or "FAILED")
            return Outcome(Kind.FAILED, reason, f"mobimoney settled FAILED: {reason}", reference)
        return Outcome(Kind.PENDING, "RAIL_PENDING", "accepted, not settled yet", reference)

    async def _poll(self, key: str) -> Outcome:
        deadline = time.monotonic() + self.settings.status_poll_max_seconds
        last = Outcome(Kind.PENDING, "RAIL_PENDING", "accepted, not settled within the polling bound")
        while time.monotonic() < deadline:
            await asyncio.sleep(self.settings.status_poll_interval_seconds)
            known = await self._status(key)
            if known is None:
                return Outcome(Kind.AMBIGUOUS, "AMBIGUOUS_UNKNOWN_AFTER_ACCEPT", "rail forgot an accepted request")
            if known.kind != Kind.PENDING and known.kind != Kind.AMBIGUOUS and known.kind != Kind.TRANSIENT:
                return known
            last = known if known.kind == Kind.PENDING else last
        return last


def _decode(data: bytes) -> dict[str, Any]:
    try:
        answer = msgspec.json.decode(data) if data else {}
    except msgspec.DecodeError:
        return {}
    return answer if isinstance(answer, dict) else {}


class NoopAdapter:
    """An in-process rail that succeeds at once (benchmarks and tests only)."""

    supports_status = False

    def __init__(self, name: str, settings: RailConfig) -> None:
        self.name = name
        self.settings = settings
        self.calls: list[tuple[uuid.UUID, str, float]] = []
        self.record_calls = False

    async def dispatch(self, row: ClaimedRow) -> Outcome:
        key = rail_key(row.id)
        if self.record_calls:
            self.calls.append((row.id, key, time.time()))
        return Outcome(Kind.SUCCESS, "NOOP", None, key[:16])

    async def close(self) -> None:
        return None


def build(name: str, settings: RailConfig) -> RailAdapter:
    if settings.kind == "swiftpay":
        return SwiftpayAdapter(name, settings)
    if settings.kind == "mobimoney":
        return MobimoneyAdapter(name, settings)
    if settings.kind == "noop":
        return NoopAdapter(name, settings)
    raise AssertionError(f"unknown adapter kind {settings.kind}")
