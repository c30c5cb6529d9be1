"""The participant API contract: an OpenAPI 3.1 document built from the code.

One source: the request body schema is the service's own `PaymentBody` struct,
the answer schemas are the structs below (the store builds exactly these
fields), and every error code the service can answer is listed in ERRORS by
HTTP status. tests/service/test_contract.py fails when they drift: the
published docs/openapi.json must equal `document()`, the routes must be the
app's routes, every `rejected(status, "CODE", ...)` in payments_service/ must be
in ERRORS under that status, and Schemathesis checks the running sidecar +
service against the document.

    python -m payments_service.contract > docs/openapi.json     (re-publish)
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from typing import Any, Literal

import msgspec

from payments_service.app import BODY_BYTES_MAX, PaymentBody

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
OutboxStatus = Literal["PENDING", "IN_FLIGHT", "SUCCESS", "FAILED", "RECOVERING"]


class PaymentCreated(msgspec.Struct, kw_only=True):
    """201: the payment was recorded with its outbox row in one transaction."""

    payment_id: uuid.UUID
    outbox_id: uuid.UUID
    status: Literal["PENDING"]
    amount_minor: int
    currency: str
    rail: str
    destination_account: str
    client_reference: str
    attestation_id: str
    created_at: dt.datetime


class Transition(msgspec.Struct, kw_only=True, rename={"old": "from", "new": "to"}):
    """One outbox status change (outbox_events)."""

    old: OutboxStatus | None
    new: OutboxStatus
    at: dt.datetime
    attempt: int
    actor: str | None
    response_code: str | None


class PaymentView(msgspec.Struct, kw_only=True):
    """200: one payment of the caller with its outbox state and history."""

    payment_id: uuid.UUID
    amount_minor: int
    currency: str
    rail: str
    destination_account: str
    client_reference: str
    attestation_id: str
    created_at: dt.datetime
    outbox_id: uuid.UUID
    status: OutboxStatus
    attempt_count: int
    rail_reference: str | None
    last_response_code: str | None
    completed_at: dt.datetime | None
    history: list[Transition]


# Every error code the service answers, by HTTP status (body {"error": {"code", "message"}}).
ERRORS: dict[int, dict[str, str]] = {
    400: {"IDEMPOTENCY_KEY_REQUIRED": "the Idempotency-Key header is missing or longer than 255 characters"},
    401: {"NOT_FROM_SIDECAR": "the sidecar's signature over the X-Symphony-* headers is missing or invalid "
                              "(only when the service is reached around the sidecar)"},
    403: {"PARTICIPANT_UNKNOWN": "the participant is not registered",
          "PARTICIPANT_SUSPENDED": "the participant is suspended",
          "POLICY_VERSION_STALE": "the credential's policy version is older than the participant's"},
    404: {"NOT_FOUND": "no payment with this id for this participant"},
    409: {"IDEMPOTENCY_KEY_IN_PROGRESS": "another request with this Idempotency-Key is being processed; "
                                         "retry after Retry-After seconds",
          "IDEMPOTENCY_KEY_BUSY": "the key's record changed between two statements; retry",
          "ATTESTATION_REPLAYED": "this attestation (sidecar-signed headers) was already used by another request"},
    422: {"INVALID_BODY": "the body is not a valid payment (unknown or missing field, wrong type, amount not "
                          "positive, unknown rail, lengths)",
          "DUPLICATE_JSON_KEY": "the body names a member twice (also through a \\u escape)",
          "CURRENCY_NOT_ACCEPTED": "currency is not an active ISO 4217 currency with minor units (funds, precious "
                                   "metals, test and no-currency codes are refused)",
          "IDEMPOTENCY_KEY_MISMATCH": "this Idempotency-Key was used with a different request (method, path, body)",
          "IDEMPOTENCY_KEY_REUSED": "this Idempotency-Key named an earlier payment whose key record has expired",
          "LIMIT_PER_PAYMENT": "the amount exceeds the participant's per-payment limit",
          "LIMIT_WINDOW": "the amount exceeds the participant's limit per window"},
    503: {"DATABASE_UNAVAILABLE": "the payments database cannot serve; retry with the same Idempotency-Key"},
}

# What the sidecar answers itself, before or instead of forwarding (body {"error": "<reason>", ...}).
SIDECAR_ERRORS: dict[int, list[str]] = {
    401: ["missing_credentials", "unsupported_authorization", "malformed_token", "token_expired",
          "token_not_yet_valid", "wrong_audience", "wrong_issuer", "missing_claim", "bad_signature",
          "invalid_token", "unsupported_alg", "unknown_kid", "alg_mismatch", "invalid_sub", "invalid_pv",
          "malformed_certificate", "no_spiffe_participant"],
    403: ["unknown_participant", "participant_suspended", "stale_policy_version",
          "certificate_lifetime_exceeds_max"],
    404: ["no_route"],
    413: ["body_too_large"],
    429: ["rate_limited_unauthenticated"],
    500: ["signing_failed"],
    502: ["upstream_unreachable"],
    503: ["CLOCK_BACKWARDS", "journal_full", "journal_io_error", "journal_error", "journal_busy"],
    504: ["upstream_timeout"],
}

ATTESTATION_HEADERS = {
    "X-Symphony-Attestation-Id": "The attestation id (decimal, 64-bit Snowflake/HLC) of this request's INGRESS "
                                 "record: quote it to the operator or auditor. Present on every answer the "
                                 "sidecar attested.",
    "X-Symphony-HLC": "The same id as a hybrid-logical-clock value; send it back on a later request to keep "
                      "causality across nodes.",
}

IDEMPOTENCY = """\
Every POST /v1/payments carries an `Idempotency-Key` (1-255 characters, chosen by the client).
The service keeps, per participant and key, the request's fingerprint (SHA-256 of method, path
and exact body) and, once it finished, its answer:

- missing or too long: **400** `IDEMPOTENCY_KEY_REQUIRED`;
- first use: the payment executes (**201**) or is refused (4xx); the answer is stored;
- the same key with the same request again: **the first answer, replayed** (same status and body,
  header `Idempotent-Replayed: true`), no new execution;
- the same key while the first request is still running: **409** `IDEMPOTENCY_KEY_IN_PROGRESS`
  with `Retry-After`; a key whose holder died is recovered after the lock TTL, never a 409 forever;
- the same key with another body: **422** `IDEMPOTENCY_KEY_MISMATCH`.

A 503 `DATABASE_UNAVAILABLE` (or a lost connection) leaves the outcome unknown to the client:
retry with the same key and the same body; it replays or executes exactly once.
"""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _service_error(status: int) -> dict[str, Any]:
    codes = sorted(ERRORS[status])
    return {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string", "enum": codes}, "message": {"type": "string"},
                       "reason": {"type": "string"}}}}}


def _sidecar_error(status: int) -> dict[str, Any]:
    return {"type": "object", "required": ["error"], "description": "Known reasons: "
            + ", ".join(SIDECAR_ERRORS[status]) + ".",
            "properties": {"error": {"type": "string"}, "attestation_id": {"type": "string"},
                           "detail": {"type": "string"}}}


def _headers(status: int) -> dict[str, Any]:
    headers: dict[str, Any] = {name: {"description": text, "schema": {"type": "string", "pattern": "^[0-9]+$"}}
                               for name, text in ATTESTATION_HEADERS.items()}
    if status in (409, 429, 503):
        headers["Retry-After"] = {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}
    return headers


def _error_response(status: int) -> dict[str, Any]:
    variants = []
    lines = []
    if status in ERRORS:
        variants.append(_service_error(status))
        lines += [f"`{code}`: {text}" for code, text in sorted(ERRORS[status].items())]
    if status in SIDECAR_ERRORS:
        variants.append(_sidecar_error(status))
        lines += [f"sidecar `{reason}`" for reason in SIDECAR_ERRORS[status]]
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {"description": "; ".join(lines), "headers": _headers(status),
            "content": {"application/json": {"schema": schema}}}


def _responses(success: int, schema: str, statuses: list[int], replay: bool) -> dict[str, Any]:
    ok_headers = _headers(success)
    if replay:
        ok_headers["Idempotent-Replayed"] = {"description": "`true` when this is the stored first answer.",
                                             "schema": {"type": "string", "enum": ["true"]}}
    responses: dict[str, Any] = {str(success): {"description": "OK", "headers": ok_headers,
                                                "content": {"application/json": {"schema": _ref(schema)}}}}
    for status in statuses:
        responses[str(status)] = _error_response(status)
    return responses


# The routes behind the sidecar: (method, path, operation id, summary, success status, schema, error statuses).
ROUTES: list[tuple[str, str, str, str, int, str, list[int]]] = [
    ("post", "/v1/payments", "createPayment", "Create a payment (executes: attested, then one rail effect)",
     201, "PaymentCreated", [400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503, 504]),
    ("get", "/v1/payments/{payment_id}", "getPayment", "Read one payment of the caller with its outbox history",
     200, "PaymentView", [401, 403, 404, 413, 429, 500, 502, 503, 504]),
]


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the participant API (deterministic)."""
    _, components = msgspec.json.schema_components([PaymentBody, PaymentCreated, PaymentView],
                                                   ref_template="#/components/schemas/{name}")
    body_schema = components["PaymentBody"]
    body_schema["description"] = (f"A payment instruction (at most {BODY_BYTES_MAX} bytes of JSON; duplicate keys "
                                  "are refused). amount_minor is in the currency's minor unit; currency is an "
                                  "ISO 4217 alphabetic code; rail names a rail the deployment drives.")
    paths: dict[str, Any] = {}
    for method, path, operation_id, summary, success, schema, statuses in ROUTES:
        operation: dict[str, Any] = {"operationId": operation_id, "summary": summary,
                                     "responses": _responses(success, schema, statuses, method == "post")}
        if method == "post":
            operation["description"] = IDEMPOTENCY
            operation["parameters"] = [{"name": "Idempotency-Key", "in": "header", "required": True,
                                        "description": "The client's key for exactly-once execution (see above).",
                                        "schema": {"type": "string", "minLength": 1, "maxLength": 255}}]
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": _ref("PaymentBody")}}}
        else:
            operation["parameters"] = [{"name": "payment_id", "in": "path", "required": True,
                                        "schema": {"type": "string", "format": "uuid"}}]
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Symphony participant API", "version": API_VERSION,
                 "description": "The payments API a participant reaches through the Symphony ingress sidecar. "
                                "Every request is attested (an INGRESS record in the journal) before it is "
                                "forwarded, and its answer is recorded (OUTCOME). Identity comes from the "
                                "bearer JWT (or a client certificate), never from a header the client sets; "
                                "X-Symphony-* request headers are stripped."},
        "servers": [{"url": "http://127.0.0.1:8443", "description": "a local `symphony up` sidecar"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                                      "description": "A JWT with sub (participant id) and pv "
                                                                     "(policy version), or mTLS with a SPIFFE "
                                                                     "URI SAN instead."}}},
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
