"""One request through the sidecar, in the order the invariants need.

1. strip every incoming X-Symphony-* header (they are rebuilt, never passed),
   header names compared after folding `_` to `-` so `X_Symphony_Participant`
   is stripped too;
2. read the body within its cap (413 beyond it) and within
   body_read_timeout_seconds (ingress_sidecar/guard.py closes a slower
   connection); past requests_in_flight_max the request is refused 503 first;
3. verify identity (JWT or client certificate; never a header);
4. rate-limit sources whose identity failed (429, counted in DROPPED, not attested);
   refuse an accepted request whose upstream queue is full (503, DROPPED);
5. decide policy (kill-switch, staleness fail-closed for executing routes);
6. assign the attestation id (HLC; 503 CLOCK_BACKWARDS beyond the max offset);
   a caller's X-Symphony-HLC moves the clock only after identity verified and
   only with a valid X-Symphony-HLC-Signature by a configured peer sidecar key;
7. append INGRESS — durable before forwarding when the request is accepted;
   a refused append answers 503 with the reason and nothing is forwarded;
8. forward with the signed Symphony headers and a traceparent;
9. append OUTCOME (status, disposition, latency), also when the upstream fails
   or times out, or the client goes away.

`RequestHandler.handle` orchestrates; the steps are small helpers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from dataclasses import dataclass

import msgspec
from aiohttp import web

from ingress_sidecar import metrics, trace
from ingress_sidecar.attest import AttestationRefused, Attestor, now_us
from ingress_sidecar.config import SidecarConfig
from ingress_sidecar.hlc import ClockRefused, CounterExhausted, HybridClock
from ingress_sidecar.identity import CertificateVerifier, Identity, IdentityFailure, JwtVerifier
from ingress_sidecar.policy import PolicyCache
from ingress_sidecar.ratelimit import DropCounter, RefusalLog, SourceLimiter
from ingress_sidecar.routes import UNMATCHED, ResolvedRoute, RouteTable
from ingress_sidecar.signing import BatchSigner
from ingress_sidecar.guard import BODY_READ_TIMEOUT, GuardedProtocol
from ingress_sidecar.upstream import UpstreamBusy, UpstreamError, UpstreamPool, UpstreamProtocolError
from symphony import attestation as att
from symphony import upstream_headers as uh
from symphony.attestation import Disposition

log = logging.getLogger("sidecar.request")

EMPTY_SHA256 = hashlib.sha256(b"").digest()
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length", "expect",
})
COUNTER_WAIT_SECONDS = 0.001
COUNTER_WAITS_MAX = 20
_JSON = msgspec.json.Encoder()


@dataclass(slots=True)
class Verdict:
    """Where a request stands before forwarding: accepted, or why not."""

    status: int  # 200 while accepted
    reason: str  # "accepted" or a short machine-readable reason
    identity: Identity | None
    auth_method: str
    key_id: str


def error_response(status: int, reason: str, attestation_id: int = 0, **extra: object) -> web.Response:
    payload: dict[str, object] = {"error": reason, **extra}
    headers = {}
    if attestation_id:
        payload["attestation_id"] = str(attestation_id)
        headers = {uh.ATTESTATION_ID: str(attestation_id), uh.HLC: str(attestation_id)}
    return web.Response(status=status, body=_JSON.encode(payload), content_type="application/json", headers=headers)


class RequestHandler:
    def __init__(self, settings: SidecarConfig, *, attestor: Attestor, clock: HybridClock, routes: RouteTable,
                 jwt_verifier: JwtVerifier, cert_verifier: CertificateVerifier | None, policy: PolicyCache,
                 limiter: SourceLimiter, drops: DropCounter, signer: BatchSigner,
                 upstreams: dict[str, UpstreamPool], stats: metrics.WorkerStats,
                 hlc_peers: uh.HlcVerifier | None = None) -> None:
        self.settings = settings
        self.attestor = attestor
        self.clock = clock
        self.routes = routes
        self.jwt = jwt_verifier
        self.certs = cert_verifier
        self.policy = policy
        self.limiter = limiter
        self.drops = drops
        self.signer = signer
        self.upstreams = upstreams  # one keep-alive pool per route upstream (base URL)
        self.stream_label = str(attestor.stream_id)
        self.shutting_down = False
        self.stats = stats
        self.in_flight = 0
        self.in_flight_max = settings.requests_in_flight_max
        self.body_timeout = settings.body_read_timeout_seconds
        self.loop_time = asyncio.get_running_loop().time  # built inside the worker's loop
        self.hlc_peers = hlc_peers  # None: no peer keys configured, X-Symphony-HLC never counts
        self.refusal_log = RefusalLog(log, "journal refused records; requests answered 503 and not forwarded",
                                      interval_seconds=settings.refusal_log_interval_seconds)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        # The guard's read deadline (ingress_sidecar/guard.py), set inline: this is the hot path.
        protocol: GuardedProtocol = request.protocol  # type: ignore[assignment]
        if self.in_flight >= self.in_flight_max:  # refused before the body is read or anything attested
            protocol.deadline = 0.0
            protocol.awaiting_headers = True
            response = self._drop("requests_in_flight_max", 503)
            response.force_close()
            return response
        # Headers are in; the body must be within body_read_timeout_seconds.
        protocol.deadline = self.loop_time() + self.body_timeout
        protocol.deadline_reason = BODY_READ_TIMEOUT
        self.in_flight += 1
        try:
            return await self._handle(request, protocol)
        finally:
            self.in_flight -= 1
            protocol.deadline = 0.0
            protocol.awaiting_headers = True  # the next request's first byte starts its header clock

    async def _handle(self, request: web.BaseRequest, protocol: GuardedProtocol) -> web.StreamResponse:
        route = self.routes.match(request.method, request.path) or UNMATCHED
        body = await self._read_body(request)
        protocol.deadline = 0.0  # body read: no read deadline while the request is handled
        verdict = self._verify(request, route, body is None)
        if verdict.identity is None and not self.limiter.allow(request.remote or ""):
            return self._drop("rate_limited_unauthenticated", 429)
        if verdict.status == 200 and self.upstreams[route.upstream].saturated():
            return self._drop("upstream_queue_full", 503)
        attestation_id = await self._next_id(request, verdict.identity is not None)
        if attestation_id is None:
            return self._drop("clock_backwards", 503, error="CLOCK_BACKWARDS")
        ingress = self._ingress_body(request, route, verdict, body)
        if verdict.status != 200:
            return self._reject(route, verdict, attestation_id, ingress)
        try:
            seq = self.attestor.append_ingress(ingress, attestation_id)
        except AttestationRefused as refused:
            return self._journal_refused(route, refused, attestation_id)
        # From here on this request owns an open INGRESS: every path writes its OUTCOME.
        started = time.perf_counter()
        try:
            await self.attestor.wait_durable(seq)
        except AttestationRefused as refused:
            self._finish(route, attestation_id, seq, 503, Disposition.REJECTED, started, refused.reason)
            return self._journal_refused(route, refused, attestation_id)
        except asyncio.CancelledError:
            self._finish(route, attestation_id, seq, 0, Disposition.CLIENT_GONE, started, self._gone_reason())
            raise
        self.stats.observe("attest_to_durable_seconds", time.perf_counter() - started)
        assert body is not None, "an accepted request has its body"
        return await self._forward(request, route, verdict.identity, body, ingress, attestation_id, seq)

    def _gone_reason(self) -> str:
        return "sidecar_shutdown" if self.shutting_down else "client_disconnected"

    async def _read_body(self, request: web.BaseRequest) -> bytes | None:
        """The request body, or None when it exceeds body_bytes_max (answered 413)."""
        cap = self.settings.body_bytes_max
        length = request.content_length
        if length is not None and length > cap:
            return None
        if length == 0 or (length is None and not request.body_exists):
            return b""
        body = await request.content.read(cap + 1) if length is None else await request.content.readexactly(length)
        if length is None:
            while len(body) <= cap and not request.content.at_eof():
                chunk = await request.content.read(cap + 1 - len(body))
                if not chunk:
                    break
                body += chunk
        return None if len(body) > cap else body

    def _verify(self, request: web.BaseRequest, route: ResolvedRoute, too_large: bool) -> Verdict:
        """Identity, then policy: the verdict the INGRESS record carries (pure but for caches)."""
        outcome = self._identify(request)
        if isinstance(outcome, IdentityFailure):
            return Verdict(outcome.status, outcome.reason, None, outcome.auth_method, outcome.key_id)
        verdict = Verdict(200, "accepted", outcome, outcome.auth_method, outcome.key_id)
        if too_large:
            verdict.status, verdict.reason = 413, "body_too_large"
        elif route is UNMATCHED:
            verdict.status, verdict.reason = 404, "no_route"
        else:
            decision = self.policy.decide(outcome.participant_id, outcome.policy_version, route.executes)
            if not decision.allowed:
                verdict.status, verdict.reason = decision.status, decision.reason
        return verdict

    def _identify(self, request: web.BaseRequest) -> Identity | IdentityFailure:
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token:
                return IdentityFailure("unsupported_authorization", 401)
            return self.jwt.verify(token.strip())
        if self.certs is not None and request.transport is not None:
            ssl_object = request.transport.get_extra_info("ssl_object")
            if isinstance(ssl_object, ssl.SSLObject):
                der = ssl_object.getpeercert(binary_form=True)
                if der:
                    return self.certs.verify(der)
        return IdentityFailure("missing_credentials", 401)

    async def _next_id(self, request: web.BaseRequest, identity_verified: bool) -> int | None:
        """The next attestation id, or None when the clock is refused.

        Nothing a client sends decides the clock: X-Symphony-HLC is observed
        only for a request whose identity verified and only when a peer
        sidecar's key signed it (X-Symphony-HLC-Signature).
        """
        if identity_verified and self.hlc_peers is not None:
            remote = request.headers.get(uh.HLC)
            if remote is not None:
                observed = self.hlc_peers.verify(remote, request.headers.get(uh.HLC_SIGNATURE))
                if observed is not None:
                    self.clock.observe(observed)
        for _ in range(COUNTER_WAITS_MAX):
            try:
                return self.clock.next_id()
            except CounterExhausted:
                await asyncio.sleep(COUNTER_WAIT_SECONDS)
            except ClockRefused as refused:
                self.stats.count("clock_refusals")
                self.stats.gauges["clock_alarm"] = 1.0
                log.error("clock refused: wall clock behind the attestation ids beyond the max offset",
                          extra={"offset_ms": refused.offset_ms, "offset_ms_max": self.clock.offset_ms_max,
                                 "stream_id": self.attestor.stream_id})
                return None
        return None

    def _ingress_body(self, request: web.BaseRequest, route: ResolvedRoute, verdict: Verdict,
                      body: bytes | None) -> att.IngressBody:
        identity = verdict.identity
        idempotency_key = request.headers.get("Idempotency-Key")
        return att.IngressBody(
            version=att.BODY_VERSION, received_at_us=now_us(),
            participant_id=identity.participant_id if identity else "",
            auth_method=verdict.auth_method, key_id=verdict.key_id[:att.MAX_TEXT],
            policy_version=identity.policy_version if identity else 0,
            method=request.method[:att.MAX_TEXT], route=route.template, executes=route.executes,
            body_sha256=hashlib.sha256(body).digest() if body else EMPTY_SHA256,
            idempotency_key_hash=hashlib.sha256(idempotency_key.encode()).digest() if idempotency_key else b"",
            traceparent=trace.continue_or_start(request.headers.get("traceparent")),
            verdict=verdict.reason,
        )

    def _drop(self, reason: str, status: int, *, error: str | None = None) -> web.Response:
        """Refused before attestation: counted for the next DROPPED record."""
        self.drops.add(reason)
        self.stats.count("dropped", reason)
        self.stats.count("requests", "", str(status), "dropped")
        return error_response(status, error or reason)

    def _reject(self, route: ResolvedRoute, verdict: Verdict, attestation_id: int,
                ingress: att.IngressBody) -> web.Response:
        """Attest a refused request (INGRESS + OUTCOME rejected) and answer it."""
        try:
            seq = self.attestor.append_ingress(ingress, attestation_id)
        except AttestationRefused as refused:
            return self._journal_refused(route, refused, attestation_id)
        try:
            self._outcome(route, attestation_id, seq, verdict.status, Disposition.REJECTED, 0, verdict.reason)
        except AttestationRefused as refused:
            return self._journal_refused(route, refused, attestation_id)
        response = error_response(verdict.status, verdict.reason, attestation_id)
        if verdict.status == 413:
            response.force_close()  # the unread body makes the connection unusable
        return response

    def _journal_refused(self, route: ResolvedRoute, refused: AttestationRefused, attestation_id: int) -> web.Response:
        self.stats.count("journal_refusals", refused.reason)
        self.stats.count("requests", route.template, "503", "not_attested")
        self.refusal_log.refused(refused.reason, detail=refused.detail, attestation_id=attestation_id)
        return error_response(503, refused.reason, detail=refused.detail)

    def _outcome(self, route: ResolvedRoute, attestation_id: int, ingress_seq: int, status: int,
                 disposition: Disposition, latency_us: int, reason: str) -> None:
        body = att.OutcomeBody(version=att.BODY_VERSION, ingress_seq=ingress_seq, completed_at_us=now_us(),
                               status=status, disposition=disposition.value, latency_us=latency_us,
                               reason=reason[:att.MAX_TEXT])
        self.attestor.append_outcome(body, attestation_id)
        self.stats.count("requests", route.template, str(status), disposition.value)

    def _finish(self, route: ResolvedRoute, attestation_id: int, seq: int, status: int,
                disposition: Disposition, started: float, reason: str) -> None:
        """OUTCOME after forwarding; a refusal here cannot un-send the answer, so it is logged."""
        latency_us = int((time.perf_counter() - started) * 1_000_000)
        try:
            self._outcome(route, attestation_id, seq, status, disposition, latency_us, reason)
        except AttestationRefused as refused:
            self.stats.count("journal_refusals", refused.reason)
            log.error("journal refused an OUTCOME: the INGRESS stays open and repair classifies it",
                      extra={"reason": refused.reason, "attestation_id": attestation_id, "ingress_seq": seq})

    async def _forward(self, request: web.BaseRequest, route: ResolvedRoute, identity: Identity | None,
                       body: bytes, ingress: att.IngressBody, attestation_id: int, seq: int) -> web.StreamResponse:
        assert identity is not None
        started = time.perf_counter()
        policy_version = identity.policy_version or self.policy.current_version(identity.participant_id)
        attested = uh.Attested(
            attestation_id=attestation_id, node_id=self.attestor.node_id, stream_id=self.attestor.stream_id,
            stream_seq=seq, participant_id=identity.participant_id, policy_version=policy_version,
            body_sha256_hex=ingress.body_sha256.hex(),
        )
        try:
            signed = await self.signer.sign(attested, request.method, request.path)
        except asyncio.CancelledError:
            self._finish(route, attestation_id, seq, 0, Disposition.CLIENT_GONE, started, self._gone_reason())
            raise
        except ValueError as exc:  # never forwarded: handled without execution
            self._finish(route, attestation_id, seq, 500, Disposition.REJECTED, started, "signing_failed")
            log.error("upstream headers could not be signed; request not forwarded",
                      extra={"attestation_id": attestation_id, "error": str(exc)})
            return error_response(500, "signing_failed", attestation_id)
        headers = self._upstream_headers(request, signed, ingress.traceparent)
        try:
            answer = await self.upstreams[route.upstream].request(request.method, request.rel_url.raw_path_qs,
                                                                  headers, body)
        except UpstreamBusy:  # never sent: handled without execution
            self._finish(route, attestation_id, seq, 503, Disposition.REJECTED, started, "upstream_queue_full")
            return error_response(503, "upstream_queue_full", attestation_id)
        except asyncio.TimeoutError:
            self._finish(route, attestation_id, seq, 504, Disposition.UPSTREAM_ERROR, started, "upstream_timeout")
            return error_response(504, "upstream_timeout", attestation_id)
        except UpstreamProtocolError:  # malformed framing: its connection is closed, never reused
            self._finish(route, attestation_id, seq, 502, Disposition.UPSTREAM_ERROR, started, "upstream_bad_response")
            return error_response(502, "upstream_bad_response", attestation_id)
        except (UpstreamError, OSError) as exc:
            self._finish(route, attestation_id, seq, 502, Disposition.UPSTREAM_ERROR, started, "upstream_unreachable")
            return error_response(502, "upstream_unreachable", attestation_id, detail=type(exc).__name__)
        except asyncio.CancelledError:
            self._finish(route, attestation_id, seq, 0, Disposition.CLIENT_GONE, started, self._gone_reason())
            raise
        self.stats.observe("upstream_seconds", time.perf_counter() - started)
        status = answer.status
        response_headers, declared = _response_headers(answer.headers, str(attestation_id))
        disposition = _disposition(status, declared)
        self._finish(route, attestation_id, seq, status, disposition, started, "" if status < 400 else f"http_{status}")
        return web.Response(status=status, body=answer.body, headers=response_headers)

    def _upstream_headers(self, request: web.BaseRequest, signed: dict[str, str],
                          traceparent: str) -> list[tuple[str, str]]:
        """The caller's end-to-end headers, then the signed X-Symphony-* set and the traceparent."""
        headers: list[tuple[str, str]] = []
        forward_authorization = self.settings.forward_authorization
        for name, value in request.headers.items():
            lower = name.lower()
            if "_" in lower:  # `X_Symphony_Participant` names the same header to many servers
                lower = lower.replace("_", "-")
            if lower in HOP_BY_HOP or lower.startswith(uh.PREFIX) or lower == "traceparent":
                continue
            if lower == "authorization" and not forward_authorization:
                continue
            headers.append((name, value))
        headers.extend(signed.items())
        headers.append(("traceparent", traceparent))
        if request.remote:
            headers.append(("X-Forwarded-For", request.remote))
        return headers


def _disposition(status: int, declared: str | None) -> Disposition:
    """The service's word on what happened, or the sidecar's reading of the status."""
    if declared in ("executed", "replayed", "rejected"):
        return Disposition(declared)
    if status >= 500:
        return Disposition.UPSTREAM_ERROR
    if status >= 400:
        return Disposition.REJECTED
    return Disposition.EXECUTED


def _response_headers(upstream_headers: list[tuple[str, str]],
                      attestation_id: str) -> tuple[list[tuple[str, str]], str | None]:
    """The headers the caller gets (hop-by-hop and X-Symphony-* dropped, the
    attestation id added), and the service's X-Symphony-Disposition if any."""
    headers: list[tuple[str, str]] = []
    declared = None
    for name, value in upstream_headers:
        lower = name.lower()
        if "_" in lower:
            lower = lower.replace("_", "-")
        if lower.startswith(uh.PREFIX):
            if lower == "x-symphony-disposition":
                declared = value
            continue
        if lower not in HOP_BY_HOP:
            headers.append((name, value))
    headers.append((uh.ATTESTATION_ID, attestation_id))
    headers.append((uh.HLC, attestation_id))
    return headers, declared
