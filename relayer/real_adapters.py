"""Adapters for the published shapes of three real rails (simulators: rail_sim/real_rails.py).

Each presents the rail's own idempotency handle, derived from the outbox id
(symphony.rail_handles), so every attempt at a row presents the same handle:

    mtn_momo      X-Reference-Id = rail_uuid(id)    (a version-4-shaped UUID)
    airtel_money  transaction.id = rail_id30(id)
    iso20022      pacs.008 InstrId = TxId = rail_id35(id), EndToEndId = id.hex, UETR = rail_uuid(id)

All three are asynchronous: a retry first asks the rail for the handle's
status (MTN GET transfer, Airtel enquiry, pacs.028) and submits only if the rail
never saw it; an accepted submission is polled until final or the polling bound.
Bearer tokens (MTN API-user/API-key, Airtel OAuth2 client credentials) are
fetched lazily, cached until shortly before expiry, and fetched again once on a
401. Credentials come from relayer/credentials.py and never reach a log line.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import time
import uuid
from typing import Any

import msgspec

from relayer import credentials as rail_credentials
from relayer import adapters
from relayer.adapters import _CLIENT_ERRORS, Kind, Outcome, RailAdapter, _decode, _HttpAdapter, _transport_outcome
from relayer.config import CREDENTIAL_FIELDS, RailConfig
from relayer.store import ClaimedRow
from symphony import iso20022, money
from symphony.rail_handles import rail_id30, rail_id35, rail_uuid

TOKEN_MARGIN_SECONDS = 30.0
_number_encoder = msgspec.json.Encoder(decimal_format="number")


class _AuthFailed(Exception):
    """The rail refused our credentials (nothing was executed)."""


class _AsyncRail(_HttpAdapter):
    """Status-first retries, polling, and a cached bearer token."""

    supports_status = True

    def __init__(self, name: str, settings: RailConfig) -> None:
        super().__init__(name, settings)
        self.secrets = rail_credentials.load(name, settings.credentials_file, CREDENTIAL_FIELDS[settings.kind])
        self._token = ""
        self._token_expiry = 0.0
        self._token_lock = asyncio.Lock()

    async def _fetch_token(self) -> tuple[str, float]:
        raise NotImplementedError

    async def bearer(self, *, refresh: bool = False) -> str:
        async with self._token_lock:
            if refresh or not self._token or time.monotonic() >= self._token_expiry:
                token, lifetime = await self._fetch_token()
                self._token = token
                self._token_expiry = time.monotonic() + max(1.0, lifetime - TOKEN_MARGIN_SECONDS)
            return self._token

    async def status(self, row: ClaimedRow, handle: str) -> Outcome | None:
        raise NotImplementedError

    async def submit(self, row: ClaimedRow, handle: str) -> Outcome | None:
        """Send the payment: an Outcome if final or failed, None if accepted (poll next)."""
        raise NotImplementedError

    def handle(self, outbox_id: uuid.UUID) -> str:
        raise NotImplementedError

    async def dispatch(self, row: ClaimedRow) -> Outcome:
        handle = self.handle(row.id)
        try:
            if row.attempt > 1:
                # A retry: the rail may hold the handle already (lost answer, relayer
                # killed, still settling). Ask first; submit only if it never saw it.
                known = await self.status(row, handle)
                if known is not None:
                    return known if known.kind != Kind.PENDING else await self._poll(row, handle)
            submitted = await self.submit(row, handle)
        except _AuthFailed as exc:
            return Outcome(Kind.TRANSIENT, "RAIL_AUTH_FAILED", str(exc))
        except _CLIENT_ERRORS as exc:
            return _transport_outcome(exc)
        return submitted if submitted is not None else await self._poll(row, handle)

    async def _poll(self, row: ClaimedRow, handle: str) -> Outcome:
        deadline = time.monotonic() + self.settings.status_poll_max_seconds
        last = Outcome(Kind.PENDING, "RAIL_PENDING", "accepted, not settled within the polling bound")
        while time.monotonic() < deadline:
            await asyncio.sleep(self.settings.status_poll_interval_seconds)
            try:
                known = await self.status(row, handle)
            except _AuthFailed as exc:
                return Outcome(Kind.AMBIGUOUS, "AMBIGUOUS_AUTH_FAILED", str(exc))
            except _CLIENT_ERRORS:
                continue  # a failed status query executes nothing: ask again
            if known is None:
                return Outcome(Kind.AMBIGUOUS, "AMBIGUOUS_UNKNOWN_AFTER_ACCEPT", "rail forgot an accepted request")
            if known.kind not in (Kind.PENDING, Kind.AMBIGUOUS, Kind.TRANSIENT):
                return known
            last = known if known.kind == Kind.PENDING else last
        return last


class MtnMomoAdapter(_AsyncRail):
    """MTN MoMo Disbursement: token, POST transfer (202), GET transfer/{referenceId}."""

    def handle(self, outbox_id: uuid.UUID) -> str:
        return str(rail_uuid(outbox_id))

    def _headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "X-Target-Environment": self.settings.target_environment,
                "Ocp-Apim-Subscription-Key": self.secrets["subscription_key"]}

    async def _fetch_token(self) -> tuple[str, float]:
        basic = base64.b64encode(f"{self.secrets['api_user']}:{self.secrets['api_key']}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}", "Ocp-Apim-Subscription-Key": self.secrets["subscription_key"]}
        async with self.session.post("/disbursement/token/", headers=headers) as response:
            answer = _decode(await response.read())
            if response.status != 200 or not answer.get("access_token"):
                raise _AuthFailed(f"MTN MoMo token endpoint answered {response.status}")
        return str(answer["access_token"]), float(answer.get("expires_in") or 3600)

    async def _request(self, method: str, path: str, *, body: Any = None,
                       extra_headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One call with the cached token; on 401 once more with a fresh token (a 401 executed nothing)."""
        for refresh in (False, True):
            headers = {**self._headers(await self.bearer(refresh=refresh)), **(extra_headers or {})}
            async with self.session.request(method, path, headers=headers, json=body) as response:
                data = await response.read()
                if response.status != 401 or refresh:
                    return response.status, data
        raise AssertionError("unreachable")

    async def submit(self, row: ClaimedRow, handle: str) -> Outcome | None:
        payload = row.payload
        currency = str(payload["currency"])
        body = {"amount": money.major_text(int(payload["amount_minor"]), currency), "currency": currency,
                "externalId": str(row.id),
                "payee": {"partyIdType": "MSISDN", "partyId": str(payload["destination_account"])},
                "payerMessage": "Symphony disbursement", "payeeNote": str(row.id)}
        status, data = await self._request("POST", "/disbursement/v1_0/transfer", body=body,
                                           extra_headers={"X-Reference-Id": handle})
        if status == 202:
            return None
        code = str(_decode(data).get("code") or f"HTTP_{status}")
        if status == 409:
            # RESOURCE_ALREADY_EXIST: an earlier attempt of ours created it; ask its state.
            return await self.status(row, handle) or Outcome(Kind.AMBIGUOUS, "AMBIGUOUS_CONFLICT_UNKNOWN", code)
        if status == 401:
            raise _AuthFailed("MTN MoMo refused the access token twice")
        if status >= 500 or status == 429:
            return Outcome(Kind.TRANSIENT, code, f"mtn_momo answered {status}")
        return Outcome(Kind.FAILED, code, f"mtn_momo refused with {status} {code}")

    async def status(self, row: ClaimedRow, handle: str) -> Outcome | None:
        status, data = await self._request("GET", f"/disbursement/v1_0/transfer/{handle}")
        if status == 404:
            return None
        if status == 401:
            raise _AuthFailed("MTN MoMo refused the access token twice")
        if status != 200:
            return Outcome(Kind.AMBIGUOUS, f"AMBIGUOUS_STATUS_{status}", "status query failed; outcome unknown")
        answer = _decode(data)
        state = str(answer.get("status") or "")
        reference = str(answer.get("financialTransactionId") or "") or None
        if state == "SUCCESSFUL":
            return Outcome(Kind.SUCCESS, "SUCCESSFUL", None, reference)
        if state == "FAILED":
            reason = answer.get("reason")
            code = str(reason.get("code") if isinstance(reason, dict) else reason or "FAILED")
            return Outcome(Kind.FAILED, code, f"mtn_momo settled FAILED: {code}", reference)
        return Outcome(Kind.PENDING, "RAIL_PENDING", "accepted, not settled yet", reference)


class AirtelMoneyAdapter(_AsyncRail):
    """Airtel Money Disbursement v1: OAuth2 token, POST disbursements/, GET disbursements/{id}."""

    def handle(self, outbox_id: uuid.UUID) -> str:
        return rail_id30(outbox_id)

    async def _fetch_token(self) -> tuple[str, float]:
        grant = {"client_id": self.secrets["client_id"], "client_secret": self.secrets["client_secret"],
                 "grant_type": "client_credentials"}
        async with self.session.post("/auth/oauth2/token", json=grant) as response:
            answer = _decode(await response.read())
            if response.status != 200 or not answer.get("access_token"):
                raise _AuthFailed(f"Airtel token endpoint answered {response.status}")
        return str(answer["access_token"]), float(answer.get("expires_in") or 180)

    async def _request(self, method: str, path: str, currency: str, body: bytes | None = None) -> tuple[int, bytes]:
        for refresh in (False, True):
            headers = {"Authorization": f"Bearer {await self.bearer(refresh=refresh)}",
                       "X-Country": self.settings.country, "X-Currency": currency,
                       "Content-Type": "application/json", "Accept": "*/*"}
            async with self.session.request(method, path, headers=headers, data=body) as response:
                data = await response.read()
                if response.status != 401 or refresh:
                    return response.status, data
        raise AssertionError("unreachable")

    def _classify(self, answer: dict[str, Any]) -> Outcome | None:
        data = answer.get("data")
        transaction = data.get("transaction") if isinstance(data, dict) else None
        state = str(transaction.get("status") or "") if isinstance(transaction, dict) else ""
        reference = str(transaction.get("airtel_money_id") or "") or None if isinstance(transaction, dict) else None
        if state == "TS":
            return Outcome(Kind.SUCCESS, "TS", None, reference)
        if state == "TF":
            message = str(transaction.get("message")) if isinstance(transaction, dict) else ""
            return Outcome(Kind.FAILED, "TF", f"airtel_money settled TF: {message}"[:300], reference)
        if state in ("TIP", "TA"):
            return Outcome(Kind.PENDING, "RAIL_PENDING", f"airtel_money says {state}", reference)
        return None

    async def submit(self, row: ClaimedRow, handle: str) -> Outcome | None:
        payload = row.payload
        currency = str(payload["currency"])
        body = {"payee": {"msisdn": str(payload["destination_account"]), "wallet_type": "NORMAL"},
                "reference": str(row.id), "pin": self.secrets["pin"],
                "transaction": {"amount": money.to_major(int(payload["amount_minor"]), currency), "id": handle,
                                "type": "B2C"}}
        status, data = await self._request("POST", "/standard/v1/disbursements/", currency,
                                           _number_encoder.encode(body))
        answer = _decode(data)
        if status == 401:
            raise _AuthFailed("Airtel refused the access token twice")
        if status >= 500 or status == 429:
            return Outcome(Kind.TRANSIENT, f"HTTP_{status}", f"airtel_money answered {status}")
        raw_verdict = answer.get("status")
        verdict: dict[str, Any] = raw_verdict if isinstance(raw_verdict, dict) else {}
        code = str(verdict.get("response_code") or f"HTTP_{status}")
        if status != 200:
            return Outcome(Kind.FAILED, code, f"airtel_money refused with {status} {code}")
        known = self._classify(answer)
        if known is not None:
            return None if known.kind == Kind.PENDING else known
        if verdict.get("success") is False:
            return Outcome(Kind.FAILED, code, f"airtel_money refused: {verdict.get('message')}"[:300])
        return Outcome(Kind.AMBIGUOUS, "AMBIGUOUS_NO_STATUS", "airtel_money answered without a transaction status")

    async def status(self, row: ClaimedRow, handle: str) -> Outcome | None:
        status, data = await self._request("GET", f"/standard/v1/disbursements/{handle}",
                                           str(row.payload["currency"]))
        if status == 404:
            return None
        if status == 401:
            raise _AuthFailed("Airtel refused the access token twice")
        if status != 200:
            return Outcome(Kind.AMBIGUOUS, f"AMBIGUOUS_STATUS_{status}", "status query failed; outcome unknown")
        return self._classify(_decode(data)) or Outcome(Kind.AMBIGUOUS, "AMBIGUOUS_STATUS_UNREADABLE",
                                                        "enquiry answered without a transaction status")


class Iso20022Adapter(_AsyncRail):
    """An RTGS over ISO 20022: pacs.008 out, pacs.002 back, pacs.028 to ask."""

    def handle(self, outbox_id: uuid.UUID) -> str:
        return rail_id35(outbox_id)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": iso20022.CONTENT_TYPE}
        if self.secrets.get("username"):
            basic = base64.b64encode(f"{self.secrets['username']}:{self.secrets.get('password', '')}".encode())
            headers["Authorization"] = f"Basic {basic.decode()}"
        return headers

    async def _fetch_token(self) -> tuple[str, float]:
        raise AssertionError("the ISO 20022 rail uses HTTP Basic, not tokens")

    def _classify(self, status: int, data: bytes) -> Outcome | None:
        if status == 401:
            raise _AuthFailed("the RTGS refused our credentials")
        if status >= 500 or status == 429:
            return Outcome(Kind.TRANSIENT, f"HTTP_{status}", f"iso20022 answered {status}")
        try:
            report = iso20022.pacs002_read(data)
        except iso20022.MessageError:
            return Outcome(Kind.AMBIGUOUS, f"AMBIGUOUS_HTTP_{status}", "no readable pacs.002")
        if report.status == "ACSC":
            return Outcome(Kind.SUCCESS, "ACSC", None, report.reference)
        if report.status == "RJCT":
            code = f"RJCT_{report.reason or 'NARR'}"
            return Outcome(Kind.FAILED, code, f"iso20022 rejected: {report.reason}", report.reference)
        return Outcome(Kind.PENDING, "RAIL_PENDING", f"iso20022 says {report.status}", report.reference)

    async def submit(self, row: ClaimedRow, handle: str) -> Outcome | None:
        payload = row.payload
        currency = str(payload["currency"])
        transfer = iso20022.Transfer(
            msg_id=f"{handle[:30]}-{row.attempt % 10_000:04d}", tx_id=handle,
            end_to_end_id=iso20022.end_to_end_id(row.id),
            uetr=str(rail_uuid(row.id)), amount=money.to_major(int(payload["amount_minor"]), currency),
            currency=currency, debtor_agent_bic=self.settings.debtor_agent_bic,
            creditor_agent_bic=self.settings.creditor_agent_bic,
            creditor_account=str(payload["destination_account"]), settlement_date=dt.datetime.now(dt.UTC).date())
        async with self.session.post("/iso20022/pacs.008", data=iso20022.pacs008_build(transfer),
                                     headers=self._headers()) as response:
            data = await response.read()
            status = response.status
        outcome = self._classify(status, data)
        assert outcome is not None
        return None if outcome.kind == Kind.PENDING else outcome

    async def status(self, row: ClaimedRow, handle: str) -> Outcome | None:
        request = iso20022.pacs028_build(f"Q{handle[:30]}", handle)
        async with self.session.post("/iso20022/pacs.028", data=request, headers=self._headers()) as response:
            data = await response.read()
            status = response.status
        if status == 404:
            return None
        return self._classify(status, data)


def build_any(name: str, settings: RailConfig) -> RailAdapter:
    """The adapter of any kind: the real rails here, the others from relayer.adapters."""
    if settings.kind in REAL_KINDS:
        return build(name, settings)
    return adapters.build(name, settings)


REAL_KINDS = ("mtn_momo", "airtel_money", "iso20022")


def build(name: str, settings: RailConfig) -> _AsyncRail:
    if settings.kind == "mtn_momo":
        return MtnMomoAdapter(name, settings)
    if settings.kind == "airtel_money":
        return AirtelMoneyAdapter(name, settings)
    if settings.kind == "iso20022":
        return Iso20022Adapter(name, settings)
    raise AssertionError(f"not a real-rail kind: {settings.kind}")


