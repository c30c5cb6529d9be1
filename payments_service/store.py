"""The service's database side: Stripe-style idempotency around one transaction.

Phase 1 (its own short statement) takes the key's lock: IN_PROGRESS with
`locked_at`, so a concurrent duplicate ("double-tap") sees it and gets 409
instead of waiting, and a lock whose holder died becomes recoverable after the
TTL. Phase 2 is ONE transaction: re-prove the lock, re-check the participant
(status, policy version, per-payment and per-window limits), insert the intent
and its PENDING outbox row, and set the key COMPLETED with the stored response.
Either all of it commits or none of it does.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from symphony.db import queries
from symphony.upstream_headers import Attested

QUERIES = queries.load(__package__, "queries.sql")
TIMEOUT_SECONDS = 10.0
# How long a client should wait before retrying when PostgreSQL is unreachable:
# a restart or failover takes seconds; the key's lock TTL covers a retry that
# finds its own earlier attempt still IN_PROGRESS.
UNAVAILABLE_RETRY_AFTER_SECONDS = 2
# payment_outbox's UNIQUE (ingress_node_id, attestation_id) (migration 0001):
# one request executes at most one intent.
OUTBOX_ONE_PER_ATTESTATION = "payment_outbox_ingress_node_id_attestation_id_key"
# payment_intents' UNIQUE (participant_id, idempotency_key): one intent per key.
INTENT_ONE_PER_KEY = "payment_intents_participant_id_idempotency_key_key"

# Failures that say the database cannot be reached or cannot serve right now
# (down, restarting, failing over, overloaded, too slow), not that the request
# is wrong: answered 503 + Retry-After, never a bare 500. Order matters in
# `unavailable_reason`: TimeoutError is an OSError, QueryCanceled an
# OperatorIntervention.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.ReadOnlySQLTransactionError,
)


@dataclass(frozen=True)
class PaymentRequest:
    amount_minor: int
    currency: str
    rail: str
    destination_account: str
    client_reference: str


@dataclass(frozen=True)
class Answer:
    """An HTTP answer and the disposition the sidecar records."""

    status: int
    body: dict[str, Any]
    disposition: str  # executed | replayed | rejected
    headers: dict[str, str] = field(default_factory=dict)
    recovered: bool = False


def rejected(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, {"error": {"code": code, "message": message}}, "rejected", headers or {})


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class PaymentStore:
    def __init__(self, pool: asyncpg.Pool, *, lock_ttl_seconds: float, retention_seconds: float,
                 retry_budget: int) -> None:
        self.pool = pool
        self.lock_ttl_seconds = lock_ttl_seconds
        self.retention_seconds = retention_seconds
        self.retry_budget = retry_budget

    async def participant_refusal(self, attested: Attested) -> Answer | None:
        """Defence in depth before any lock: unknown, suspended or stale policy -> 403."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(QUERIES["participant_status"], attested.participant_id,
                                      timeout=TIMEOUT_SECONDS)
        return _participant_refusal(row, attested)

    async def create_payment(self, attested: Attested, key: str, fingerprint: bytes,
                             payment: PaymentRequest) -> Answer:
        async with self.pool.acquire() as conn:
            claim = await conn.fetchrow(QUERIES["claim_key"], attested.participant_id, key, fingerprint,
                                        attested.attestation_id, self.retention_seconds, self.lock_ttl_seconds,
                                        timeout=TIMEOUT_SECONDS)
            if claim is None:
                return await self._key_taken(conn, attested, key, fingerprint)
            answer = await self._execute(conn, attested, key, claim["locked_at"], payment)
            return Answer(answer.status, answer.body, answer.disposition, answer.headers, bool(claim["recovered"]))

    async def _key_taken(self, conn: asyncpg.Connection, attested: Attested, key: str,
                         fingerprint: bytes) -> Answer:
        row = await conn.fetchrow(QUERIES["get_key"], attested.participant_id, key, timeout=TIMEOUT_SECONDS)
        if row is None:  # purged between the two statements: ask the client to retry
            return rejected(409, "IDEMPOTENCY_KEY_BUSY", "retry", {"Retry-After": "1"})
        if bytes(row["request_fingerprint"]) != fingerprint:
            return rejected(422, "IDEMPOTENCY_KEY_MISMATCH",
                            "this Idempotency-Key was used with a different request")
        if row["state"] == "COMPLETED":
            return Answer(row["response_status"], row["response_body"], "replayed",
                          {"Idempotent-Replayed": "true"})
        wait = max(1, math.ceil(self.lock_ttl_seconds - row["locked_seconds"]))
        return rejected(409, "IDEMPOTENCY_KEY_IN_PROGRESS",
                        "a request with this Idempotency-Key is being processed", {"Retry-After": str(wait)})

    async def _execute(self, conn: asyncpg.Connection, attested: Attested, key: str, locked_at: Any,
                       payment: PaymentRequest) -> Answer:
        participant = attested.participant_id
        async with conn.transaction():
            still_ours = await conn.fetchval(QUERIES["lock_key"], participant, key, locked_at,
                                             timeout=TIMEOUT_SECONDS)
            if still_ours is None:
                return rejected(409, "IDEMPOTENCY_KEY_IN_PROGRESS", "the lock on this key was recovered by "
                                "a newer request", {"Retry-After": "1"})
            limits = await conn.fetchrow(QUERIES["participant_for_payment"], participant, timeout=TIMEOUT_SECONDS)
            refusal = _participant_refusal(limits, attested) or _limit_refusal(limits, payment.amount_minor)
            if refusal is not None:
                await conn.execute(QUERIES["release_key"], participant, key, locked_at, timeout=TIMEOUT_SECONDS)
                return refusal
            try:
                intent, outbox_id = await self._insert_payment(conn, attested, key, payment)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == OUTBOX_ONE_PER_ATTESTATION:
                    await conn.execute(QUERIES["release_key"], participant, key, locked_at, timeout=TIMEOUT_SECONDS)
                    return rejected(409, "ATTESTATION_REPLAYED",
                                    f"attestation {attested.attestation_id} already carried a payment; every "
                                    "request is attested once (send it through the sidecar)")
                if exc.constraint_name != INTENT_ONE_PER_KEY:
                    raise
                answer = rejected(422, "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for an earlier "
                                  "payment whose key record is past its retention period")
                await conn.fetchval(QUERIES["complete_key"], participant, key, locked_at, answer.status,
                                    answer.body, None, timeout=TIMEOUT_SECONDS)
                return answer
            body = {"payment_id": str(intent["intent_id"]), "outbox_id": str(outbox_id), "status": "PENDING",
                    "amount_minor": payment.amount_minor, "currency": payment.currency, "rail": payment.rail,
                    "destination_account": payment.destination_account,
                    "client_reference": payment.client_reference, "attestation_id": str(attested.attestation_id),
                    "created_at": intent["created_at"].isoformat()}
            done = await conn.fetchval(QUERIES["complete_key"], participant, key, locked_at, 201, body,
                                       intent["intent_id"], timeout=TIMEOUT_SECONDS)
            assert done == 1, "the key row was locked FOR UPDATE by this transaction"
        return Answer(201, body, "executed")

    async def _insert_payment(self, conn: asyncpg.Connection, attested: Attested, key: str,
                              payment: PaymentRequest) -> tuple[asyncpg.Record, Any]:
        """The intent and its PENDING outbox row, in a savepoint so that a unique
        violation leaves neither and the caller can still record an answer:

        - on payment_intents (participant, key): the key was used for an earlier
          payment whose key record is past its retention period;
        - on payment_outbox OUTBOX_ONE_PER_ATTESTATION: this attestation already
          carried a payment. The sidecar gives every request its own attestation,
          so only a copy of its signed headers sent straight to the service with
          another Idempotency-Key gets here (a replay).
        """
        async with conn.transaction():
            intent = await conn.fetchrow(
                QUERIES["insert_intent"], attested.participant_id, key, payment.amount_minor, payment.currency,
                payment.rail, payment.destination_account, payment.client_reference, attested.attestation_id,
                timeout=TIMEOUT_SECONDS)
            payload = {"amount_minor": payment.amount_minor, "currency": payment.currency,
                       "destination_account": payment.destination_account,
                       "client_reference": payment.client_reference, "intent_id": str(intent["intent_id"])}
            outbox_id = await conn.fetchval(
                QUERIES["insert_outbox"], intent["intent_id"], attested.participant_id, attested.attestation_id,
                attested.node_id, attested.stream_id, attested.stream_seq, payment.rail, payload,
                self.retry_budget, bytes.fromhex(attested.body_sha256_hex), timeout=TIMEOUT_SECONDS)
        return intent, outbox_id

    async def payment_view(self, payment_id: Any, participant_id: str) -> dict[str, Any] | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(QUERIES["payment_view"], payment_id, participant_id, timeout=TIMEOUT_SECONDS)
        if row is None:
            return None
        view = dict(row)
        for name in ("intent_id", "outbox_id"):
            view[name] = str(view[name])
        view["payment_id"] = view.pop("intent_id")
        view["attestation_id"] = str(view["attestation_id"])
        for name in ("created_at", "completed_at"):
            view[name] = view[name].isoformat() if view[name] is not None else None
        return view

    async def purge_expired_keys(self, limit: int) -> int:
        async with self.pool.acquire() as conn:
            result = await conn.execute(QUERIES["purge_expired_keys"], limit, timeout=TIMEOUT_SECONDS)
        return int(result.split()[-1])

    async def ping(self) -> bool:
        async with self.pool.acquire() as conn:
            return bool(await conn.fetchval(QUERIES["ping"], timeout=2.0) == 1)


def unavailable_reason(exc: BaseException) -> str:
    """A short, stable name for why the database could not serve (an UNAVAILABLE_ERRORS instance)."""
    if isinstance(exc, (asyncio.TimeoutError, asyncpg.QueryCanceledError)):
        return "timeout"
    if isinstance(exc, asyncpg.CannotConnectNowError):
        return "starting_or_stopping"
    if isinstance(exc, asyncpg.OperatorInterventionError):
        return "server_shutting_down"
    if isinstance(exc, asyncpg.InsufficientResourcesError):
        return "overloaded"
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return "read_only"  # reached a standby (failover in progress)
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    return "connection_lost"


def database_unavailable(exc: BaseException) -> Answer:
    """503 for a database that cannot serve. No disposition: if the failure hit
    the commit, the payment may or may not be stored, so the service does not
    claim `rejected`; the sidecar records `upstream_error`, the outbox row (if
    any) proves an execution, and the client's retry with the same
    Idempotency-Key replays or executes exactly once."""
    reason = unavailable_reason(exc)
    return Answer(503, {"error": {"code": "DATABASE_UNAVAILABLE", "reason": reason,
                                  "message": f"the payments database is unavailable ({reason}); retry with the "
                                             "same Idempotency-Key"}},
                  "", {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)})


def _participant_refusal(row: asyncpg.Record | None, attested: Attested) -> Answer | None:
    if row is None:
        return rejected(403, "PARTICIPANT_UNKNOWN", "participant is not registered")
    if row["status"] != "ACTIVE":
        return rejected(403, "PARTICIPANT_SUSPENDED", "participant is suspended")
    if attested.policy_version < row["policy_version"]:
        return rejected(403, "POLICY_VERSION_STALE",
                        f"credential policy version {attested.policy_version} is older than {row['policy_version']}")
    return None


def _limit_refusal(row: asyncpg.Record, amount_minor: int) -> Answer | None:
    if amount_minor > row["per_payment_limit_minor"]:
        return rejected(422, "LIMIT_PER_PAYMENT", f"amount exceeds the per-payment limit of "
                        f"{row['per_payment_limit_minor']}")
    if row["window_used_minor"] + amount_minor > row["window_limit_minor"]:
        return rejected(422, "LIMIT_WINDOW", f"amount exceeds the limit of {row['window_limit_minor']} per "
                        f"{row['window_seconds']} s")
    return None
