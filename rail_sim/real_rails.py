"""Simulators that speak the published shapes of three real rails.

mtn_momo: MTN MoMo Open API, Disbursement product
    POST /disbursement/token/                 Authorization: Basic base64(api_user:api_key),
                                              Ocp-Apim-Subscription-Key
        200 {"access_token", "token_type": "access_token", "expires_in": 3600}; 401 {"error": "login_failed"}
    POST /disbursement/v1_0/transfer          Authorization: Bearer, X-Reference-Id (a UUID),
                                              X-Target-Environment, Ocp-Apim-Subscription-Key
        body {"amount": "12.34", "currency", "externalId", "payee": {"partyIdType": "MSISDN", "partyId"},
              "payerMessage", "payeeNote"}
        202 (empty)  accepted; 409 {"code": "RESOURCE_ALREADY_EXIST"} the reference id was used before;
        400 {"code": "..."} invalid; 401 bad token or key; 500 {"code": "INTERNAL_PROCESSING_ERROR"}
    GET  /disbursement/v1_0/transfer/{referenceId}
        200 {"amount", "currency", "financialTransactionId", "externalId", "payee", "status":
             "PENDING" | "SUCCESSFUL" | "FAILED", "reason": {"code", "message"}?}; 404 RESOURCE_NOT_FOUND
    A payee that is not 8-15 digits settles FAILED with reason PAYEE_NOT_FOUND.

airtel_money: Airtel Money Open API, Disbursement v1
    POST /auth/oauth2/token                   {"client_id", "client_secret", "grant_type": "client_credentials"}
        200 {"access_token", "expires_in": "180", "token_type": "bearer"}; 401 {"error": "invalid_client"}
    POST /standard/v1/disbursements/          Authorization: Bearer, X-Country, X-Currency
        body {"payee": {"msisdn"}, "reference", "pin", "transaction": {"amount": number, "id"}}
        200 {"data": {"transaction": {"id", "airtel_money_id", "reference_id", "status"}},
             "status": {"code", "success", "response_code", "result_code", "message"}}
        transaction.status: TS success, TF failed, TIP in progress (Airtel's enquiry vocabulary);
        a business refusal is HTTP 200 with success false (status.response_code says why), as Airtel does.
    GET  /standard/v1/disbursements/{id}      the same headers; 200 as above; 404 not found
    The simulator's response codes (DP009000010xx) follow Airtel's published pattern; the
    adapter classifies by transaction.status and HTTP status only.

iso20022: an RTGS taking ISO 20022 XML over HTTP (HTTP Basic auth when credentials are set)
    POST /iso20022/pacs.008   one FIToFICstmrCdtTrf transaction -> pacs.002: ACSP accepted (settling),
                              ACSC settled, RJCT with reason AC04 (closed account), AM05 (TxId reused
                              with other content), FF01 (invalid message, HTTP 400)
    POST /iso20022/pacs.028   status request for one TxId -> pacs.002 of its state; 404 if never seen
    Transactions settle `settle_ms` after acceptance.

Every profile keeps the fault injection of rail_sim.faults and the durable store
of rail_sim.store (key = the rail's handle, reference = the outbox id the
payment names), and answers `GET /_sim/statement` with its end-of-day statement:
CSV for the two mobile money operators, camt.053.001.08 for the RTGS.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import hmac
import io
import secrets
import time
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

import msgspec
from aiohttp import web

from rail_sim.handlers import Handler, Simulator
from rail_sim.store import Execution, ExecutionStore
from symphony import iso20022, money

TOKEN_SECONDS = 3600
MTN_CSV_COLUMNS = ("Id", "External Transaction Id", "Reference Id", "Date", "Status", "Type", "To", "Amount",
                   "Currency")
AIRTEL_CSV_COLUMNS = ("Transaction ID", "Airtel Money ID", "Reference", "Transaction Date", "Status", "MSISDN",
                      "Amount", "Currency")


Route = Handler


def _json(status: int, body: object) -> web.Response:
    return web.Response(status=status, body=msgspec.json.encode(body), content_type="application/json")


def _issue_token(sim: Simulator) -> str:
    token = secrets.token_urlsafe(24)
    sim.tokens[token] = time.time() + TOKEN_SECONDS
    return token


def _bearer_ok(sim: Simulator, request: web.Request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    expiry = sim.tokens.get(token) if scheme.lower() == "bearer" else None
    return expiry is not None and expiry > time.time()


def _same(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def _settled(execution: Execution, now: float) -> bool:
    return now >= execution.settle_at


# -- MTN MoMo ---------------------------------------------------------------------


class MomoParty(msgspec.Struct):
    partyIdType: str
    partyId: str


class MomoTransfer(msgspec.Struct):
    amount: str
    currency: str
    externalId: str
    payee: MomoParty
    payerMessage: str = ""
    payeeNote: str = ""


async def momo_token(sim: Simulator, request: web.Request) -> web.StreamResponse:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    try:
        user, _, key = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        user, key = "", ""
    if scheme != "Basic" or not _same(request.headers.get("Ocp-Apim-Subscription-Key", ""),
                                      sim.credentials.get("subscription_key")) \
            or not _same(user, sim.credentials.get("api_user")) or not _same(key, sim.credentials.get("api_key")):
        return _json(401, {"error": "login_failed"})
    return _json(200, {"access_token": _issue_token(sim), "token_type": "access_token", "expires_in": TOKEN_SECONDS})


def _momo_refused(sim: Simulator, request: web.Request) -> web.Response | None:
    if not _same(request.headers.get("Ocp-Apim-Subscription-Key", ""), sim.credentials.get("subscription_key")):
        return _json(401, {"statusCode": 401, "message": "Access denied due to invalid subscription key."})
    if not _bearer_ok(sim, request):
        return _json(401, {"code": "NOT_AUTHORIZED", "message": "Access token is missing, invalid or expired"})
    if request.headers.get("X-Target-Environment", "") != sim.credentials.get("target_environment", "sandbox"):
        return _json(400, {"code": "INVALID_TARGET_ENVIRONMENT", "message": "unknown X-Target-Environment"})
    return None


def _momo_state(execution: Execution, now: float) -> dict[str, object]:
    state: dict[str, object] = {
        "amount": money.major_text(execution.amount_minor, execution.currency), "currency": execution.currency,
        "externalId": execution.reference, "payee": {"partyIdType": "MSISDN", "partyId": execution.account},
        "payerMessage": "", "payeeNote": ""}
    if not _settled(execution, now):
        return {**state, "status": "PENDING"}
    if execution.outcome == "SUCCESSFUL":
        return {**state, "status": "SUCCESSFUL", "financialTransactionId": execution.transfer_id}
    return {**state, "status": "FAILED", "reason": {"code": execution.outcome, "message": "payee not found"}}


async def momo_transfer(sim: Simulator, request: web.Request) -> web.StreamResponse:
    refused = _momo_refused(sim, request)
    if refused is not None:
        return refused
    try:
        reference_id = str(uuid.UUID(request.headers.get("X-Reference-Id", "")))
    except ValueError:
        return _json(400, {"code": "INVALID_REFERENCE_ID", "message": "X-Reference-Id must be a UUID"})
    body = await request.read()
    try:
        order = msgspec.json.decode(body, type=MomoTransfer)
        amount_minor = money.to_minor(order.amount, order.currency)
    except (msgspec.DecodeError, msgspec.ValidationError, InvalidOperation, ValueError, AssertionError) as exc:
        return _json(400, {"code": "INVALID_REQUEST", "message": str(exc)[:200]})
    if amount_minor <= 0 or order.payee.partyIdType != "MSISDN":
        return _json(400, {"code": "INVALID_REQUEST", "message": "amount or payee"})
    sim.store.note_request(reference_id)
    fault = await sim.before_execute(request, error_body={"code": "INTERNAL_PROCESSING_ERROR"}, error_status=500)
    if fault is not None:
        return fault
    now = time.time()
    valid = order.payee.partyId.isdigit() and 8 <= len(order.payee.partyId) <= 15
    candidate = Execution(key=reference_id, reference=order.externalId,
                          fingerprint=hashlib.sha256(body).hexdigest(),
                          outcome="SUCCESSFUL" if valid else "PAYEE_NOT_FOUND",
                          transfer_id=str(secrets.randbelow(10**10)), amount_minor=amount_minor,
                          executed_at=now, settle_at=now + sim.settle_ms / 1000.0,
                          currency=order.currency, account=order.payee.partyId)
    execution = sim.store.execute(candidate)
    replayed = execution is not candidate
    dropped = await sim.after_execute(request, new_execution=not replayed)
    if dropped is not None:
        return dropped
    if replayed:
        return _json(409, {"code": "RESOURCE_ALREADY_EXIST",
                           "message": "Duplicated reference id. Creation of resource failed."})
    return web.Response(status=202)


async def momo_status(sim: Simulator, request: web.Request) -> web.StreamResponse:
    refused = _momo_refused(sim, request)
    if refused is not None:
        return refused
    fault = await sim.before_execute(request, error_body={"code": "INTERNAL_PROCESSING_ERROR"}, error_status=500)
    if fault is not None:
        return fault
    execution = sim.store.get(request.match_info["reference_id"])
    if execution is None:
        return _json(404, {"code": "RESOURCE_NOT_FOUND", "message": "Requested resource was not found."})
    return _json(200, _momo_state(execution, time.time()))


def _successful_csv(store: ExecutionStore, columns: tuple[str, ...],
                    row: Callable[[Execution, str], tuple[str, ...]]) -> bytes:
    """A CSV statement: `columns`, then `row(execution, settled at ISO 8601)` of
    each successful execution (a statement lists settled money only)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for execution in store.executions():
        if execution.outcome == "SUCCESSFUL":
            when = dt.datetime.fromtimestamp(execution.settle_at, dt.UTC).isoformat(timespec="seconds")
            writer.writerow(row(execution, when))
    return out.getvalue().encode()


def momo_statement(store: ExecutionStore) -> bytes:
    """The disbursement account's transaction history as the partner portal exports it (CSV)."""
    return _successful_csv(store, MTN_CSV_COLUMNS, lambda execution, when: (
        execution.transfer_id, execution.reference, execution.key, when, "SUCCESSFUL", "TRANSFER",
        execution.account, money.major_text(execution.amount_minor, execution.currency), execution.currency))


# -- Airtel Money -----------------------------------------------------------------


class AirtelPayee(msgspec.Struct):
    msisdn: str
    wallet_type: str = "NORMAL"


class AirtelTransaction(msgspec.Struct):
    amount: Decimal
    id: str
    type: str = "B2C"


class AirtelDisbursement(msgspec.Struct):
    payee: AirtelPayee
    reference: str
    pin: str
    transaction: AirtelTransaction


_AIRTEL_STATUS = {"success": ("DP00900001001", "ESB000010", "Transaction is successful."),
                  "progress": ("DP00900001006", "ESB000010", "Transaction is in progress."),
                  "failed": ("DP00900001012", "ESB000001", "Invalid mobile number."),
                  "duplicate": ("DP00900001015", "ESB000001", "Transaction ID is not unique."),
                  "pin": ("DP00900001003", "ESB000001", "Incorrect PIN.")}


def _airtel_envelope(kind: str, transaction: dict[str, object] | None) -> dict[str, object]:
    response_code, result_code, message = _AIRTEL_STATUS[kind]
    success = kind in ("success", "progress")
    return {"data": {"transaction": transaction} if transaction is not None else {},
            "status": {"code": "200", "success": success, "response_code": response_code,
                       "result_code": result_code, "message": message}}


def _airtel_transaction(execution: Execution, now: float) -> dict[str, object]:
    if not _settled(execution, now):
        state = "TIP"
    else:
        state = "TS" if execution.outcome == "SUCCESSFUL" else "TF"
    return {"id": execution.key, "airtel_money_id": execution.transfer_id, "reference_id": execution.reference,
            "status": state, "message": execution.outcome}


def _airtel_refused(sim: Simulator, request: web.Request) -> web.Response | None:
    if not _bearer_ok(sim, request):
        return _json(401, {"error": "invalid_token", "error_description": "token missing, invalid or expired"})
    country, currency = request.headers.get("X-Country", ""), request.headers.get("X-Currency", "")
    if len(country) != 2 or len(currency) != 3:
        return _json(400, {"status": {"code": "400", "success": False, "response_code": "DP00900001000",
                                      "message": "X-Country and X-Currency are required"}})
    return None


async def airtel_token(sim: Simulator, request: web.Request) -> web.StreamResponse:
    try:
        grant = msgspec.json.decode(await request.read(), type=dict[str, str])
    except (msgspec.DecodeError, msgspec.ValidationError):
        grant = {}
    if grant.get("grant_type") != "client_credentials" \
            or not _same(grant.get("client_id", ""), sim.credentials.get("client_id")) \
            or not _same(grant.get("client_secret", ""), sim.credentials.get("client_secret")):
        return _json(401, {"error": "invalid_client", "error_description": "client authentication failed"})
    return _json(200, {"access_token": _issue_token(sim), "expires_in": str(TOKEN_SECONDS), "token_type": "bearer"})


async def airtel_disburse(sim: Simulator, request: web.Request) -> web.StreamResponse:
    refused = _airtel_refused(sim, request)
    if refused is not None:
        return refused
    body = await request.read()
    currency = request.headers["X-Currency"]
    try:
        order = msgspec.json.decode(body, type=AirtelDisbursement)
        amount_minor = money.to_minor(order.transaction.amount, currency)
    except (msgspec.DecodeError, msgspec.ValidationError, InvalidOperation, ValueError, AssertionError) as exc:
        return _json(400, {"status": {"code": "400", "success": False, "response_code": "DP00900001000",
                                      "message": str(exc)[:200]}})
    if amount_minor <= 0 or not 1 <= len(order.transaction.id) <= 64:
        return _json(400, {"status": {"code": "400", "success": False, "response_code": "DP00900001000",
                                      "message": "amount or transaction id"}})
    if not _same(order.pin, sim.credentials.get("pin")):
        return _json(200, _airtel_envelope("pin", None))
    sim.store.note_request(order.transaction.id)
    fault = await sim.before_execute(request, error_body={"status": {"code": "500", "success": False,
                                                                      "message": "Internal Server Error"}},
                                     error_status=500)
    if fault is not None:
        return fault
    fingerprint = hashlib.sha256(body).hexdigest()
    existing = sim.store.get(order.transaction.id)
    if existing is not None and existing.fingerprint != fingerprint:
        return _json(200, _airtel_envelope("duplicate", None))
    now = time.time()
    valid = order.payee.msisdn.isdigit() and 8 <= len(order.payee.msisdn) <= 15
    candidate = Execution(key=order.transaction.id, reference=order.reference, fingerprint=fingerprint,
                          outcome="SUCCESSFUL" if valid else "INVALID_MSISDN",
                          transfer_id=f"MP{secrets.token_hex(6).upper()}", amount_minor=amount_minor,
                          executed_at=now, settle_at=now + sim.settle_ms / 1000.0, currency=currency,
                          account=order.payee.msisdn)
    execution = sim.store.execute(candidate)
    replayed = execution is not candidate
    dropped = await sim.after_execute(request, new_execution=not replayed)
    if dropped is not None:
        return dropped
    transaction = _airtel_transaction(execution, time.time())
    kind = {"TS": "success", "TIP": "progress", "TF": "failed"}[str(transaction["status"])]
    return _json(200, _airtel_envelope(kind, transaction))


async def airtel_enquiry(sim: Simulator, request: web.Request) -> web.StreamResponse:
    refused = _airtel_refused(sim, request)
    if refused is not None:
        return refused
    fault = await sim.before_execute(request, error_body={"status": {"code": "503", "success": False}})
    if fault is not None:
        return fault
    execution = sim.store.get(request.match_info["transaction_id"])
    if execution is None:
        return _json(404, {"status": {"code": "404", "success": False, "response_code": "DP00900001005",
                                      "message": "Transaction not found."}})
    transaction = _airtel_transaction(execution, time.time())
    kind = {"TS": "success", "TIP": "progress", "TF": "failed"}[str(transaction["status"])]
    return _json(200, _airtel_envelope(kind, transaction))


def airtel_statement(store: ExecutionStore) -> bytes:
    """The disbursement wallet's transaction statement (CSV), successful transactions only."""
    return _successful_csv(store, AIRTEL_CSV_COLUMNS, lambda execution, when: (
        execution.key, execution.transfer_id, execution.reference, when, "TS", execution.account,
        money.major_text(execution.amount_minor, execution.currency), execution.currency))


# -- ISO 20022 RTGS ---------------------------------------------------------------


def _iso_status(execution: Execution, now: float) -> iso20022.Status:
    if execution.outcome != "SUCCESSFUL":
        return iso20022.Status(execution.key, "RJCT", execution.outcome, execution.transfer_id)
    return iso20022.Status(execution.key, "ACSC" if _settled(execution, now) else "ACSP", None,
                           execution.transfer_id)


def _xml(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type=iso20022.CONTENT_TYPE)


def _iso_report(original_msg_id: str, original_name: str, status: iso20022.Status, http_status: int = 200
                ) -> web.Response:
    return _xml(http_status, iso20022.pacs002_build(f"RTGS{secrets.token_hex(8)}", original_msg_id, original_name,
                                                    status))


def _iso_refused(sim: Simulator, request: web.Request) -> web.Response | None:
    if "username" not in sim.credentials:
        return None
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        user, password = "", ""
    if scheme != "Basic" or not _same(user, sim.credentials.get("username")) \
            or not _same(password, sim.credentials.get("password")):
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="rtgs"'})
    return None


def _reference_of(end_to_end_id: str) -> str:
    try:
        return str(uuid.UUID(hex=end_to_end_id))
    except ValueError:
        return end_to_end_id


async def iso_pacs008(sim: Simulator, request: web.Request) -> web.StreamResponse:
    refused = _iso_refused(sim, request)
    if refused is not None:
        return refused
    try:
        transfer = iso20022.pacs008_read(await request.read())
        amount_minor = money.to_minor(transfer.amount, transfer.currency)
    except (iso20022.MessageError, ValueError, AssertionError) as exc:
        return _iso_report("UNKNOWN", "pacs.008.001.08", iso20022.Status("", "RJCT", "FF01", str(exc)[:35]), 400)
    if amount_minor <= 0 or not 1 <= len(transfer.tx_id) <= 35:
        return _iso_report(transfer.msg_id, "pacs.008.001.08", iso20022.Status(transfer.tx_id, "RJCT", "AM12", None),
                           400)
    sim.store.note_request(transfer.tx_id)
    fault = await sim.before_execute(request, error_body={"error": "RTGS unavailable"})
    if fault is not None:
        return fault
    content = f"{transfer.tx_id}|{transfer.end_to_end_id}|{amount_minor}|{transfer.currency}|" \
              f"{transfer.creditor_account}|{transfer.creditor_agent_bic}"
    fingerprint = hashlib.sha256(content.encode()).hexdigest()
    existing = sim.store.get(transfer.tx_id)
    if existing is not None and existing.fingerprint != fingerprint:
        return _iso_report(transfer.msg_id, "pacs.008.001.08", iso20022.Status(transfer.tx_id, "RJCT", "AM05", None))
    now = time.time()
    closed = "closed" in transfer.creditor_account.lower()
    candidate = Execution(key=transfer.tx_id, reference=_reference_of(transfer.end_to_end_id),
                          fingerprint=fingerprint, outcome="AC04" if closed else "SUCCESSFUL",
                          transfer_id=f"RTGS{secrets.token_hex(8).upper()}", amount_minor=amount_minor,
                          executed_at=now, settle_at=now + sim.settle_ms / 1000.0, currency=transfer.currency,
                          account=transfer.creditor_account)
    execution = sim.store.execute(candidate)
    dropped = await sim.after_execute(request, new_execution=execution is candidate)
    if dropped is not None:
        return dropped
    return _iso_report(transfer.msg_id, "pacs.008.001.08", _iso_status(execution, time.time()))


async def iso_pacs028(sim: Simulator, request: web.Request) -> web.StreamResponse:
    refused = _iso_refused(sim, request)
    if refused is not None:
        return refused
    try:
        tx_id = iso20022.pacs028_read(await request.read())
    except iso20022.MessageError as exc:
        return _iso_report("UNKNOWN", "pacs.028.001.03", iso20022.Status("", "RJCT", "FF01", str(exc)[:35]), 400)
    fault = await sim.before_execute(request, error_body={"error": "RTGS unavailable"})
    if fault is not None:
        return fault
    execution = sim.store.get(tx_id)
    if execution is None:
        return web.Response(status=404)
    return _iso_report("STATUSREQ", "pacs.028.001.03", _iso_status(execution, time.time()))


def iso_statement(store: ExecutionStore, account: str = "SETTLEMENT") -> bytes:
    """camt.053 of the settlement account: one booked debit per settled transfer."""
    entries = [iso20022.StatementEntry(tx_id=e.key, end_to_end_id=uuid.UUID(e.reference).hex
                                       if _is_uuid(e.reference) else e.reference,
                                       amount=money.to_major(e.amount_minor, e.currency), currency=e.currency,
                                       creditor_account=e.account, reference=e.transfer_id,
                                       booked_on=dt.datetime.fromtimestamp(e.settle_at, dt.UTC).date())
               for e in store.executions() if e.outcome == "SUCCESSFUL"]
    currency = entries[0].currency if entries else "XXX"
    return iso20022.camt053_build(f"STMT{secrets.token_hex(8)}", account, currency, entries)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


STATEMENTS: dict[str, tuple[str, Callable[[ExecutionStore], bytes]]] = {
    "mtn_momo": ("text/csv", momo_statement),
    "airtel_money": ("text/csv", airtel_statement),
    "iso20022": (iso20022.CONTENT_TYPE, iso_statement),
}


def routes(profile: str) -> list[tuple[str, str, Route]]:
    """(method, path, handler) of a real-rail profile."""
    if profile == "mtn_momo":
        return [("POST", "/disbursement/token/", momo_token),
                ("POST", "/disbursement/v1_0/transfer", momo_transfer),
                ("GET", "/disbursement/v1_0/transfer/{reference_id}", momo_status)]
    if profile == "airtel_money":
        return [("POST", "/auth/oauth2/token", airtel_token),
                ("POST", "/standard/v1/disbursements/", airtel_disburse),
                ("GET", "/standard/v1/disbursements/{transaction_id}", airtel_enquiry)]
    if profile == "iso20022":
        return [("POST", "/iso20022/pacs.008", iso_pacs008), ("POST", "/iso20022/pacs.028", iso_pacs028)]
    raise AssertionError(f"not a real-rail profile: {profile}")
