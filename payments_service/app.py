"""HTTP handlers: verify the sidecar's signature, validate, then let the store decide.

Every answer carries X-Symphony-Disposition (executed | replayed | rejected) so
the sidecar's OUTCOME record says what happened (invariant 2). GET answers on
the non-executing read route carry none when they succeed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import uuid
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from payments_service.currencies import PUBLISHED as CURRENCY_TABLE_PUBLISHED
from payments_service.currencies import is_payable
from payments_service.faults import FaultSwitch
from payments_service.store import (UNAVAILABLE_ERRORS, Answer, PaymentRequest, PaymentStore,
                                    database_unavailable, rejected)
from symphony.upstream_headers import DISPOSITION, Attested, HeaderVerifier, SignatureError

log = logging.getLogger("service")

# C0 controls and DEL: PostgreSQL refuses NUL in text (found by the Schemathesis
# contract test as a 500), and no account or reference contains the others.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
BODY_BYTES_MAX = 16 * 1024


class PaymentBody(msgspec.Struct, forbid_unknown_fields=True):
    amount_minor: int
    currency: str
    rail: str
    destination_account: str
    client_reference: str = ""


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("symphony_service_requests_total", "Requests by route, status and disposition",
                                ["route", "status", "disposition"], registry=r)
        self.latency = Histogram("symphony_service_request_seconds", "Request handling time", ["route"],
                                 registry=r)
        self.duplicate_requests = Counter("symphony_service_duplicate_requests_total",
                                          "Requests that reused an Idempotency-Key", registry=r)
        self.duplicates_blocked = Counter("symphony_service_duplicates_blocked_total",
                                          "Duplicates answered without a new execution (replay or 409)",
                                          registry=r)
        self.keys_recovered = Counter("symphony_service_idempotency_keys_recovered_total",
                                      "In-progress keys taken over after their TTL", registry=r)
        self.signature_refused = Counter("symphony_service_signature_refused_total",
                                         "Requests without a valid sidecar signature", registry=r)
        self.database_unavailable = Counter("symphony_service_database_unavailable_total",
                                            "Requests answered 503 because PostgreSQL could not serve",
                                            ["route", "reason"], registry=r)


class DuplicateKey(ValueError):
    """A JSON object names the same member twice."""


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise DuplicateKey(name)
            seen.add(name)
    return members


def duplicate_key_problem(body: bytes) -> str | None:
    """Why `body` (JSON msgspec accepted) is refused for a repeated member name, or None.

    msgspec, like most decoders, keeps the last of two equal keys, so
    `{"amount_minor": 1, "amount_minor": 900000}` would mean whatever the last
    one says while a log, a signature or an audit tool that keeps the first
    reads the other. RFC 8259 leaves duplicates undefined; this service refuses
    them. The check is the standard library's decoder with a pairs hook: it
    compares names after unescaping (`"a"` and `"\\u0061"` are the same key),
    which a byte scan would miss, and costs a few microseconds on a payment body
    (at most BODY_BYTES_MAX). It runs only on a body msgspec already accepted.
    """
    try:
        json.loads(body, object_pairs_hook=_refuse_duplicates)
    except DuplicateKey as exc:
        return f"the body names {str(exc)[:64]!r} more than once"
    except json.JSONDecodeError as exc:  # msgspec accepted it: the two decoders disagree
        return f"the body is not JSON both decoders accept ({exc.msg})"
    return None


def parse_payment(body: bytes, rails: list[str]) -> PaymentRequest | Answer:
    """Pure validation of a payment body: the request, or a 422 answer."""
    try:
        data = msgspec.json.decode(body, type=PaymentBody)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return rejected(422, "INVALID_BODY", str(exc))
    repeated = duplicate_key_problem(body)
    if repeated is not None:
        return rejected(422, "DUPLICATE_JSON_KEY", repeated)
    if not is_payable(data.currency):
        return rejected(422, "CURRENCY_NOT_ACCEPTED",
                        f"currency {data.currency[:8]!r} is not an active ISO 4217 currency (funds, precious "
                        f"metals, test and no-currency codes are refused; table of {CURRENCY_TABLE_PUBLISHED})")
    problems = []
    if not 0 < data.amount_minor < 2**62:
        problems.append("amount_minor must be a positive integer")
    if data.rail not in rails:
        problems.append(f"rail must be one of {', '.join(rails)}")
    if not 1 <= len(data.destination_account) <= 64:
        problems.append("destination_account must be 1-64 characters")
    if len(data.client_reference) > 128:
        problems.append("client_reference must be at most 128 characters")
    if _CONTROL.search(data.destination_account) or _CONTROL.search(data.client_reference):
        problems.append("destination_account and client_reference must not contain control characters")
    if problems:
        return rejected(422, "INVALID_BODY", "; ".join(problems))
    return PaymentRequest(data.amount_minor, data.currency, data.rail, data.destination_account,
                          data.client_reference)


def request_fingerprint(method: str, path: str, body: bytes) -> bytes:
    """What "the same request" means for an idempotency key: method, path, exact body."""
    return hashlib.sha256(f"{method} {path}\n".encode() + body).digest()


class PaymentsApp:
    def __init__(self, store: PaymentStore, verifier: HeaderVerifier, rails: list[str],
                 metrics: ServiceMetrics, faults: FaultSwitch | None = None) -> None:
        self.store = store
        self.verifier = verifier
        self.rails = rails
        self.metrics = metrics
        self.faults = faults  # test-only (payments_service.faults); None in production

    def build(self) -> web.Application:
        app = web.Application(client_max_size=BODY_BYTES_MAX)
        app.router.add_post("/v1/payments", self.create_payment)
        app.router.add_get("/v1/payments/{payment_id}", self.get_payment)
        return app

    def _verify(self, request: web.Request, body: bytes) -> Attested | Answer:
        try:
            return self.verifier.verify(request.headers, request.method, request.rel_url.raw_path, body)  # type: ignore[arg-type]
        except SignatureError as exc:
            self.metrics.signature_refused.inc()
            log.warning("refused: no valid sidecar signature", extra={"reason": str(exc), "path": request.path})
            return rejected(401, "NOT_FROM_SIDECAR", str(exc))

    async def create_payment(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = await request.read()
        try:
            answer = await self._create(request, body)
        except UNAVAILABLE_ERRORS as exc:
            answer = self._unavailable("create", exc)
        if answer.disposition == "replayed" or answer.body.get("error", {}).get("code") == \
                "IDEMPOTENCY_KEY_IN_PROGRESS":
            self.metrics.duplicate_requests.inc()
            self.metrics.duplicates_blocked.inc()
        if answer.recovered:
            self.metrics.keys_recovered.inc()
        self.metrics.latency.labels("create").observe(time.perf_counter() - started)
        return self._respond("create", answer)

    async def _create(self, request: web.Request, body: bytes) -> Answer:
        attested = self._verify(request, body)
        if isinstance(attested, Answer):
            return attested
        if self.faults is not None:
            delay = self.faults.latency_seconds()
            if delay:
                await asyncio.sleep(delay)
            dropped = self.faults.blackhole(attested)
            if dropped is not None:
                return Answer(201, dropped, "executed")
        key = request.headers.get("Idempotency-Key", "")
        if not 1 <= len(key) <= 255:
            return rejected(400, "IDEMPOTENCY_KEY_REQUIRED", "the Idempotency-Key header is required (1-255 chars)")
        payment = parse_payment(body, self.rails)
        if isinstance(payment, Answer):
            return payment
        refusal = await self.store.participant_refusal(attested)
        if refusal is not None:
            return refusal
        fingerprint = request_fingerprint(request.method, request.rel_url.raw_path, body)
        return await self.store.create_payment(attested, key, fingerprint, payment)

    async def get_payment(self, request: web.Request) -> web.Response:
        body = await request.read()
        attested = self._verify(request, body)
        if isinstance(attested, Answer):
            return self._respond("get", attested)
        try:
            payment_id = uuid.UUID(request.match_info["payment_id"])
        except ValueError:
            return self._respond("get", rejected(404, "NOT_FOUND", "no such payment"))
        try:
            view = await self.store.payment_view(payment_id, attested.participant_id)
        except UNAVAILABLE_ERRORS as exc:
            return self._respond("get", self._unavailable("get", exc))
        if view is None:
            return self._respond("get", rejected(404, "NOT_FOUND", "no such payment"))
        return self._respond("get", Answer(200, view, ""))

    def _unavailable(self, route: str, exc: BaseException) -> Answer:
        answer = database_unavailable(exc)
        reason = answer.body["error"]["reason"]
        self.metrics.database_unavailable.labels(route, reason).inc()
        log.warning("database unavailable; answered 503", extra={"route": route, "reason": reason,
                                                                 "error": f"{type(exc).__name__}: {exc}"[:300]})
        return answer

    def _respond(self, route: str, answer: Answer) -> web.Response:
        headers: dict[str, Any] = dict(answer.headers)
        if answer.disposition:
            headers[DISPOSITION] = answer.disposition
        self.metrics.requests.labels(route, str(answer.status), answer.disposition or "none").inc()
        return web.Response(status=answer.status, body=msgspec.json.encode(answer.body),
                            content_type="application/json", headers=headers)
