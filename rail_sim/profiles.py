"""Two invented payment operators that behave differently (the three real-rail
shapes, mtn_momo, airtel_money and iso20022, are in rail_sim/real_rails.py).

swiftpay (synchronous, JSON, Stripe-like):
    POST /v1/transfers   header Idempotency-Key (required)
        body {"amount_minor": int, "currency": "KES", "account": str, "reference": str}
        201 {"transfer_id", "status": "COMPLETED", ...}    executed (or replayed:
            same body again -> the cached answer with `Idempotent-Replayed: true`)
        422 {"error": {"code": "ACCOUNT_CLOSED"}}          terminal (accounts containing "closed")
        409 {"error": {"code": "IDEMPOTENCY_CONFLICT"}}    same key, different body
        400 {"error": {"code": "BAD_REQUEST" | "MISSING_IDEMPOTENCY_KEY"}}
        429/503 {"error": {"code": "RATE_LIMITED" | "UNAVAILABLE"}}  transient
    No status endpoint: after an ambiguous outcome a client resends the same key.

mobimoney (asynchronous, its own vocabulary, amounts as decimal strings):
    POST /api/v2/disbursements
        body {"request_id": key, "msisdn": digits, "amount": "12.34", "currency", "narration": str}
        202 {"status_code": "ACCEPTED", "transaction_id", "request_id"}
        200 {"status_code": "DUPLICATE", "state": ...}      request_id seen before (same body)
        400 {"status_code": "INVALID_REQUEST" | "REQUEST_ID_REUSED"}
        500 {"status_code": "SYSTEM_ERROR"}, 503 {"status_code": "SERVICE_UNAVAILABLE"}
    GET /api/v2/disbursements/{request_id}
        200 {"status_code": "PENDING" | "SUCCESSFUL" | "FAILED", "reason": ...}
        404 {"status_code": "NOT_FOUND"}
    A disbursement settles `settle_ms` after acceptance; an msisdn that is not
    8-15 digits settles FAILED with reason INVALID_MSISDN.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from decimal import Decimal, InvalidOperation
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from rail_sim.handlers import Handler, Simulator
from rail_sim.store import Execution


PROFILES = ("swiftpay", "mobimoney", "mtn_momo", "airtel_money", "iso20022")


def _json(status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=msgspec.json.encode(body), content_type="application/json",
                        headers=headers)


# -- swiftpay -------------------------------------------------------------------


class SwiftpayTransfer(msgspec.Struct, forbid_unknown_fields=True):
    amount_minor: int
    currency: str
    account: str
    reference: str = ""


def _swiftpay_answer(execution: Execution, replayed: bool) -> web.Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    if execution.outcome == "COMPLETED":
        return _json(201, {"transfer_id": execution.transfer_id, "status": "COMPLETED",
                           "amount_minor": execution.amount_minor, "reference": execution.reference}, headers)
    return _json(422, {"error": {"code": execution.outcome, "transfer_id": execution.transfer_id}}, headers)


async def swiftpay_transfer(sim: Simulator, request: web.Request) -> web.StreamResponse:
    key = request.headers.get("Idempotency-Key", "")
    if not 1 <= len(key) <= 255:
        return _json(400, {"error": {"code": "MISSING_IDEMPOTENCY_KEY"}})
    body = await request.read()
    try:
        transfer = msgspec.json.decode(body, type=SwiftpayTransfer)
    except msgspec.DecodeError as exc:
        return _json(400, {"error": {"code": "BAD_REQUEST", "message": str(exc)}})
    if transfer.amount_minor <= 0 or len(transfer.currency) != 3:
        return _json(400, {"error": {"code": "BAD_REQUEST", "message": "amount or currency"}})
    sim.store.note_request(key)
    fault = await sim.before_execute(request, error_body={"error": {"code": "UNAVAILABLE"}})
    if fault is not None:
        return fault
    fingerprint = hashlib.sha256(body).hexdigest()
    existing = sim.store.get(key)
    if existing is not None and existing.fingerprint != fingerprint:
        return _json(409, {"error": {"code": "IDEMPOTENCY_CONFLICT"}})
    now = time.time()
    outcome = "ACCOUNT_CLOSED" if "closed" in transfer.account.lower() else "COMPLETED"
    candidate = Execution(key=key, reference=transfer.reference, fingerprint=fingerprint, outcome=outcome,
                          transfer_id=f"sp_{uuid.uuid4().hex[:20]}", amount_minor=transfer.amount_minor,
                          executed_at=now, settle_at=now)
    execution = sim.store.execute(candidate)
    replayed = execution is not candidate
    dropped = await sim.after_execute(request, new_execution=not replayed)
    if dropped is not None:
        return dropped
    return _swiftpay_answer(execution, replayed)


# -- mobimoney ------------------------------------------------------------------


class Disbursement(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    msisdn: str
    amount: str
    currency: str
    narration: str = ""


def _mobimoney_state(execution: Execution, now: float) -> dict[str, object]:
    if now < execution.settle_at:
        state, reason = "PENDING", None
    elif execution.outcome == "SUCCESSFUL":
        state, reason = "SUCCESSFUL", None
    else:
        state, reason = "FAILED", execution.outcome
    return {"status_code": state, "reason": reason, "transaction_id": execution.transfer_id,
            "request_id": execution.key}


async def mobimoney_disburse(sim: Simulator, request: web.Request) -> web.StreamResponse:
    body = await request.read()
    try:
        order = msgspec.json.decode(body, type=Disbursement)
        amount_minor = int((Decimal(order.amount) * 100).to_integral_exact())
    except (msgspec.DecodeError, InvalidOperation, ValueError) as exc:
        return _json(400, {"status_code": "INVALID_REQUEST", "message": str(exc)})
    if not 1 <= len(order.request_id) <= 255 or amount_minor <= 0:
        return _json(400, {"status_code": "INVALID_REQUEST", "message": "request_id or amount"})
    sim.store.note_request(order.request_id)
    fault = await sim.before_execute(request, error_body={"status_code": "SYSTEM_ERROR"}, error_status=500)
    if fault is not None:
        return fault
    fingerprint = hashlib.sha256(body).hexdigest()
    existing = sim.store.get(order.request_id)
    if existing is not None and existing.fingerprint != fingerprint:
        return _json(400, {"status_code": "REQUEST_ID_REUSED"})
    now = time.time()
    valid = order.msisdn.isdigit() and 8 <= len(order.msisdn) <= 15
    candidate = Execution(key=order.request_id, reference=order.narration, fingerprint=fingerprint,
                          outcome="SUCCESSFUL" if valid else "INVALID_MSISDN",
                          transfer_id=f"MM{uuid.uuid4().hex[:16].upper()}", amount_minor=amount_minor,
                          executed_at=now, settle_at=now + sim.settle_ms / 1000.0)
    execution = sim.store.execute(candidate)
    replayed = execution is not candidate
    dropped = await sim.after_execute(request, new_execution=not replayed)
    if dropped is not None:
        return dropped
    if replayed:
        state = _mobimoney_state(execution, time.time())
        return _json(200, {**state, "status_code": "DUPLICATE", "state": state["status_code"]})
    return _json(202, {"status_code": "ACCEPTED", "transaction_id": execution.transfer_id,
                       "request_id": execution.key})


async def mobimoney_status(sim: Simulator, request: web.Request) -> web.StreamResponse:
    fault = await sim.before_execute(request, error_body={"status_code": "SERVICE_UNAVAILABLE"}, error_status=503)
    if fault is not None:
        return fault
    execution = sim.store.get(request.match_info["request_id"])
    if execution is None:
        return _json(404, {"status_code": "NOT_FOUND"})
    return _json(200, _mobimoney_state(execution, time.time()))


def add_routes(sim: Simulator, app: web.Application) -> None:
    def bind(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await handler(sim, request)
        return handle

    if sim.profile == "swiftpay":
        app.router.add_post("/v1/transfers", bind(swiftpay_transfer))
    elif sim.profile == "mobimoney":
        app.router.add_post("/api/v2/disbursements", bind(mobimoney_disburse))
        app.router.add_get("/api/v2/disbursements/{request_id}", bind(mobimoney_status))
    else:
        # The published shapes of real rails (rail_sim/real_rails.py).
        from rail_sim import real_rails

        for method, path, route in real_rails.routes(sim.profile):
            app.router.add_route(method, path, bind(route))
