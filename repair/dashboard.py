"""The regulator dashboard: server-rendered HTML with inline SVG charts, read-only.

Never open: every page but /healthz and the login form needs the supervisor
bearer token, a verified client certificate, or a session cookie obtained once
with the token on the login form (repair/dashboard_auth.py: `Secure; HttpOnly;
SameSite=Strict`, bounded lifetime, CSRF token on the login and logout forms).
Read-only twice over: login and logout are the only POSTs and touch nothing but
this process's session table, and its database sessions run with
default_transaction_read_only, so no bug here can write.

Status: CRITICAL_GAP when the attestation gap is non-zero; ACTION_REQUIRED when
an incident or dead letter is open or a condition check (CONDITION_CHECKS)
reports that payments are stuck: an unfinished payment older than
`dashboard_pending_age_seconds_max`, or a rail's circuit breaker open in a live
relayer; HEALTHY otherwise. Pages refresh themselves (meta refresh, no script).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import ssl
import uuid
from collections.abc import Awaitable, Callable
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
from aiohttp import web

from repair import dashboard_auth as auth
from repair import dashboard_pages as pages
from repair import proofs, reconcile, report, svg
from repair.config import RepairConfig
from repair.participant_cli import QUERIES as PARTICIPANT_QUERIES
from repair.store import QUERIES, TIMEOUT_SECONDS
from symphony.db import create_pool, queries
from symphony.errors import ConfigError, SymphonyError
from symphony.tls import server_context

log = logging.getLogger("repair.dashboard")
POOL_KEY = web.AppKey("pool", asyncpg.Pool)
SETTINGS_KEY = web.AppKey("settings", RepairConfig)
TOKEN_KEY = web.AppKey("token", str)
SESSIONS_KEY = web.AppKey("sessions", auth.Sessions)
SESSION_REQUEST_KEY = "symphony_session"  # the request's auth.Session, or None (token or certificate)
DASHBOARD_QUERIES = queries.load("repair", "dashboard.sql")
INCIDENTS_SHOWN_MAX = 200
ADMIN_EVENTS_SHOWN_MAX = 20
PUBLIC_PATHS = ("/healthz", "/readyz", "/login")
READY_TIMEOUT_SECONDS = 2.0
STATUS_CLASS = pages.STATUS_CLASS
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
CSS = pages.CSS


def read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"dashboard_token_file {path}: {exc.strerror or exc}") from None
    if len(token) < 16:
        raise ConfigError(f"dashboard_token_file {path}: the token must be at least 16 characters")
    return token


def ssl_context(settings: RepairConfig) -> ssl.SSLContext | None:
    if not settings.dashboard_tls_cert:
        return None
    # Client certificates optional at the TLS layer so token holders still get in; the
    # middleware admits a request only with a verified certificate or the token (symphony.tls).
    return server_context(settings.dashboard_tls_cert, settings.dashboard_tls_key, settings.dashboard_client_ca,
                          error=ConfigError, label="dashboard TLS files")


def _certificate_admits(request: web.Request, settings: RepairConfig) -> bool:
    if not settings.dashboard_client_ca or request.transport is None:
        return False
    cert = request.transport.get_extra_info("peercert")
    if not cert:
        return False  # no certificate, or one the CA did not verify (CERT_OPTIONAL drops those)
    if not settings.dashboard_client_uri_prefixes:
        return True
    uris = [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]
    return any(uri.startswith(prefix) for uri in uris for prefix in settings.dashboard_client_uri_prefixes)


def _session_admits(request: web.Request) -> auth.Session | None:
    return request.app[SESSIONS_KEY].get(request.cookies.get(auth.SESSION_COOKIE, ""))


def _refusal(request: web.Request) -> web.StreamResponse:
    """A browser asking for a page goes to the login form (when a token is
    configured); anything else (an API path, a refused bearer header) gets 401."""
    if (request.app[TOKEN_KEY] and request.method == "GET" and not request.path.startswith("/api/")
            and "Authorization" not in request.headers):
        raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
    return web.Response(
        status=401, text="supervisor credentials required (bearer token, session or client certificate)\n",
        headers={"WWW-Authenticate": 'Bearer realm="symphony-regulator"'})


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse
    try:
        if request.path not in PUBLIC_PATHS:
            settings, token = request.app[SETTINGS_KEY], request.app[TOKEN_KEY]
            header = request.headers.get("Authorization", "")
            bearer = header[7:].strip() if header[:7].lower() == "bearer " else ""
            session = _session_admits(request)
            if not (session or auth.same(bearer, token) or _certificate_admits(request, settings)):
                response = _refusal(request)
                response.headers.update(SECURITY_HEADERS)
                return response
            request[SESSION_REQUEST_KEY] = session
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


def _csrf(request: web.Request) -> str | None:
    """The logout form's CSRF token when the request came with a session."""
    session = request.get(SESSION_REQUEST_KEY)
    return session.csrf if isinstance(session, auth.Session) else None


def _iso(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


# A condition check looks at the database and returns the reasons (each a dict
# with `condition` and `detail`) why payments are stuck now; any reason makes
# the overall status at least ACTION_REQUIRED. One seam for every such signal:
# witness and checkpoint staleness become one more check here once they exist.
ConditionCheck = Callable[[asyncpg.Connection, RepairConfig, dict[str, Any]], Awaitable[list[dict[str, str]]]]


async def _payments_stuck(conn: asyncpg.Connection, settings: RepairConfig,
                          data: dict[str, Any]) -> list[dict[str, str]]:
    rails = [dict(r) for r in await conn.fetch(DASHBOARD_QUERIES["dashboard_unfinished_payments"],
                                               settings.dashboard_pending_age_seconds_max, timeout=TIMEOUT_SECONDS)]
    data["rails"] = rails
    return [{"condition": "payments_stuck", "rail": r["rail"],
             "detail": f"{r['stuck']} payment(s) on rail {r['rail']} unfinished for more than "
                       f"{settings.dashboard_pending_age_seconds_max:g} s (oldest {r['oldest_age_seconds']:.0f} s)"}
            for r in rails if r["stuck"]]


async def _breakers_open(conn: asyncpg.Connection, settings: RepairConfig,
                         data: dict[str, Any]) -> list[dict[str, str]]:
    breakers = [dict(r) for r in await conn.fetch(DASHBOARD_QUERIES["dashboard_breakers"], timeout=TIMEOUT_SECONDS)]
    data["breakers"] = breakers
    return [{"condition": "breaker_open", "rail": b["rail"],
             "detail": f"rail {b['rail']}: circuit breaker {b['state']} in relayer {b['worker_id']} "
                       f"(since {_iso(b['opened_at'])}): no payment reaches the rail"}
            for b in breakers if b["state"] != "CLOSED"]


CONDITION_CHECKS: tuple[ConditionCheck, ...] = (_payments_stuck, _breakers_open)


def overall_status(totals: dict[str, Any], conditions: list[dict[str, str]]) -> str:
    """CRITICAL_GAP (a ghost, or an execution without its attestation) beats
    ACTION_REQUIRED beats HEALTHY."""
    if totals["gap"] or totals.get("unattested"):
        return "CRITICAL_GAP"
    if totals["open_incidents"] or totals["dead_letters"] or conditions:
        return "ACTION_REQUIRED"
    return "HEALTHY"


async def overview_data(conn: asyncpg.Connection, settings: RepairConfig) -> dict[str, Any]:
    """Everything the overview page shows, as plain data (also served as JSON)."""
    participants = [dict(r) for r in await conn.fetch(QUERIES["dashboard_participants"],
                                                      settings.unattested_pending_seconds, timeout=TIMEOUT_SECONDS)]
    incidents = [dict(r) for r in await conn.fetch(QUERIES["list_incidents"], True, None, INCIDENTS_SHOWN_MAX,
                                                   timeout=TIMEOUT_SECONDS)]
    streams = [dict(r) for r in await conn.fetch(QUERIES["dashboard_streams"], timeout=TIMEOUT_SECONDS)]
    instances = [dict(r) for r in await conn.fetch(QUERIES["dashboard_instances"], timeout=TIMEOUT_SECONDS)]
    series = [dict(r) for r in await conn.fetch(QUERIES["dashboard_series"], settings.dashboard_chart_minutes,
                                                timeout=TIMEOUT_SECONDS)]
    totals = {key: sum(p[key] for p in participants)
              for key in ("ingress_count", "executions", "handled", "gap", "unattested", "pending_executions",
                          "open_incidents", "dead_letters")}
    data: dict[str, Any] = {"rails": [], "breakers": []}
    conditions = [reason for check in CONDITION_CHECKS for reason in await check(conn, settings, data)]
    totals["status"] = overall_status(totals, conditions)
    data["rail_reconciliation"] = await reconcile.summary(conn)
    admin_events = [dict(r) for r in await conn.fetch(PARTICIPANT_QUERIES["participant_events"], None,
                                                      ADMIN_EVENTS_SHOWN_MAX, timeout=TIMEOUT_SECONDS)]
    return {"generated_at": dt.datetime.now(dt.timezone.utc), "participants": participants, "totals": totals,
            "conditions": conditions, **data, "admin_events": admin_events,
            "pending_age_seconds_max": settings.dashboard_pending_age_seconds_max,
            "incidents": incidents, "streams": streams, "instances": instances, "series": series}


def _badge(status: str) -> str:
    return f'<span class="badge {STATUS_CLASS.get(status, "warn")}">{escape(status)}</span>'


def _dash(value: Any) -> str:
    return "—" if value is None else escape(str(value))


def _stream_row(s: dict[str, Any]) -> str:
    lag = "—" if s["lag_seconds"] is None else f"{s['lag_seconds']:.0f} s"
    integrity = ""
    if s["broken_seq"]:
        integrity += _badge("CRITICAL_GAP") + f" chain broken at seq {s['broken_seq']} ({escape(s['broken_reason'])})"
    if s["halted_at"]:
        integrity += escape(f" forwarder halted: {s['halt_reason'] or 'no reason'}")
    where = f"{escape(s['node_id'])}/{s['stream_id']}"
    return (f'<tr data-stream="{where}"><td class="l">{where}</td><td class="last-seq">{_dash(s["last_seq"])}</td>'
            f'<td class="lag">{lag}</td><td class="l">{_iso(s["last_heartbeat_at"])}</td>'
            f'<td class="verified">{_dash(s["last_verified_seq"])}</td><td class="l">{integrity or "verified"}</td></tr>')


def _conditions_html(conditions: list[dict[str, str]]) -> str:
    items = "".join(f'<li data-condition="{escape(c["condition"])}">{escape(c["detail"])}</li>' for c in conditions)
    return f'<ul class="conditions" id="conditions">{items}</ul>' if items else ""


def _rails_html(data: dict[str, Any]) -> str:
    """Per rail: unfinished payments, the stuck ones, the oldest age, the breakers."""
    breakers: dict[str, list[str]] = {}
    for b in data["breakers"]:
        breakers.setdefault(b["rail"], []).append(f'{escape(b["state"])} ({escape(b["worker_id"])})')
    names = sorted({r["rail"] for r in data["rails"]} | set(breakers))
    rails = {r["rail"]: r for r in data["rails"]}
    rows = []
    for name in names:
        r = rails.get(name, {"unfinished": 0, "stuck": 0, "oldest_age_seconds": None})
        oldest = "—" if r["oldest_age_seconds"] is None else f'{r["oldest_age_seconds"]:.0f} s'
        rows.append(f'<tr data-rail="{escape(name)}"><td class="l">{escape(name)}</td>'
                    f'<td class="unfinished">{r["unfinished"]}</td><td class="stuck">{r["stuck"]}</td>'
                    f'<td class="oldest">{oldest}</td>'
                    f'<td class="l breaker">{", ".join(breakers.get(name, [])) or "no live report"}</td></tr>')
    return ('<table id="rails"><tr><th class="l">rail</th><th>unfinished payments</th><th>stuck</th>'
            '<th>oldest</th><th class="l">circuit breaker (relayer)</th></tr>'
            + ("".join(rows) or '<tr><td class="l" colspan="5">no unfinished payment, no breaker report</td></tr>')
            + "</table>")


def render_overview(data: dict[str, Any], *, csrf: str | None = None, refresh_seconds: int = 0) -> str:
    t = data["totals"]
    r = data["rail_reconciliation"]
    rows = []
    for p in data["participants"]:
        rows.append(
            f'<tr data-participant="{escape(p["participant_id"])}"><td class="l participant">'
            f'{escape(p["participant_id"])}</td><td class="ingress">{p["ingress_count"]}</td>'
            f'<td class="executions">{p["executions"]}</td><td class="handled">{p["handled"]}</td>'
            f'<td class="ghosts">{p["ghosts"]}</td><td class="gap">{p["gap"]}</td>'
            f'<td class="unattested">{p["unattested"]}</td><td class="pending">{p["pending_executions"]}</td>'
            f'<td class="score">{p["integrity_score"]:.2f}</td><td class="incidents">{p["open_incidents"]}</td>'
            f'<td class="dead-letters">{p["dead_letters"]}</td><td class="l status">{_badge(p["status"])}</td></tr>')
    incidents = [
        f'<tr data-incident="{i["incident_id"]}"><td class="l"><a href="/incidents/{i["incident_id"]}">'
        f'{escape(i["kind"])}</a></td><td class="l">{escape(i["severity"])}</td>'
        f'<td class="l">{escape(i["participant_id"] or "—")}</td><td class="l">{_iso(i["detected_at"])}</td>'
        f'<td class="l">{escape(i["subject"])}</td></tr>' for i in data["incidents"]]
    streams = [_stream_row(s) for s in data["streams"]]
    leaders = ", ".join(f'{escape(i["instance_id"])} ({escape(i["role"])}, last cycle {_iso(i["last_cycle_at"])})'
                        for i in data["instances"]) or "no repair instance has reported"
    points = data["series"]
    charts = "".join([
        svg.bar_chart("Attestations per minute", [(p["minute"], p["ingress"]) for p in points], chart_id="chart-ingress"),
        svg.bar_chart("Attestation gap (ghosts by arrival minute)", [(p["minute"], p["ghosts"]) for p in points],
                      color="#dc2626", chart_id="chart-gap"),
        svg.bar_chart("Retries per minute", [(p["minute"], p["retries"]) for p in points], color="#d97706",
                      chart_id="chart-retries"),
        svg.bar_chart("Dead letters per minute", [(p["minute"], p["dead_letters"]) for p in points],
                      color="#7c3aed", chart_id="chart-dead-letters"),
        svg.bar_chart("MTTR of incidents resolved (s)", [(p["minute"], p["mttr_seconds"]) for p in points],
                      unit=" s", color="#059669", chart_id="chart-mttr"),
    ])
    refresh = f'<meta http-equiv="refresh" content="{refresh_seconds}">' if refresh_seconds > 0 else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{refresh}<title>Symphony — regulator dashboard</title>
<style>{CSS}</style></head><body>
{pages.nav(csrf)}
<h1>Symphony — regulator dashboard</h1>
<p class="meta">Read-only. Generated {_iso(data["generated_at"])}, refreshed every {refresh_seconds} s.
Repair: {leaders}.</p>
<p id="overall">Overall: {_badge(t["status"])} ingress <b id="total-ingress">{t["ingress_count"]}</b>,
executions <b id="total-executions">{t["executions"]}</b>, handled <b id="total-handled">{t["handled"]}</b>,
gap <b id="total-gap">{t["gap"]}</b>, unattested executions <b id="total-unattested">{t["unattested"]}</b>
(pending <b id="total-pending">{t["pending_executions"]}</b>), open incidents <b id="total-incidents">{t["open_incidents"]}</b>,
dead letters <b id="total-dead-letters">{t["dead_letters"]}</b>.</p>
{_conditions_html(data["conditions"])}
<p id="rail-reconciliation">Rail statements reconciled: <b id="rail-statements">{r["statements"]}</b>
({r["lines"]} lines, {r["matched"]} matched); open <b id="rail-unmatched">{r["unmatched_open"]}</b> RAIL_UNMATCHED,
<b id="rail-mismatched">{r["mismatched_open"]}</b> RAIL_MISMATCH, of which <b id="rail-critical">{r["critical_open"]}</b>
critical (money moved without an outbox row, or not as the outbox says).</p>
<h2>Participants</h2>
<table id="participants"><tr><th class="l">participant</th><th>ingress</th><th>executions</th><th>handled</th>
<th>ghosts</th><th>gap</th><th title="executions whose INGRESS PostgreSQL does not hold">unattested</th>
<th title="executions whose INGRESS is not shipped yet">pending</th><th>integrity score</th><th>open incidents</th><th>dead letters</th>
<th class="l">status</th></tr>{"".join(rows)}</table>
<h2>Open incidents</h2>
<table id="incidents"><tr><th class="l">kind</th><th class="l">severity</th><th class="l">participant</th>
<th class="l">detected</th><th class="l">subject</th></tr>{"".join(incidents) or
'<tr><td class="l" colspan="5">none</td></tr>'}</table>
<h2>Rails</h2>
<p class="meta">A payment unfinished (PENDING, RECOVERING or IN_FLIGHT) for longer than {
data.get("pending_age_seconds_max", 0):g} s is stuck.</p>
{_rails_html(data)}
{pages.admin_section(data["admin_events"])}
<h2>Streams</h2>
<table id="streams"><tr><th class="l">stream</th><th>last seq</th><th>lag</th><th class="l">last heartbeat</th>
<th>last verified seq</th><th class="l">integrity</th></tr>{"".join(streams) or
'<tr><td class="l" colspan="6">none</td></tr>'}</table>
<h2>Over time</h2>
<div class="charts">{charts}</div>
</body></html>"""


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html")


async def _overview(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    async with request.app[POOL_KEY].acquire() as conn:
        data = await overview_data(conn, settings)
    return _html(render_overview(data, csrf=_csrf(request), refresh_seconds=settings.dashboard_refresh_seconds))


async def _summary(request: web.Request) -> web.Response:
    async with request.app[POOL_KEY].acquire() as conn:
        data = await overview_data(conn, request.app[SETTINGS_KEY])
    return web.Response(text=json.dumps(data, default=str, indent=2), content_type="application/json")


async def _incident_report(request: web.Request) -> dict[str, Any]:
    try:
        incident_id = uuid.UUID(request.match_info["incident_id"])
    except ValueError:
        raise web.HTTPNotFound(text="no such incident\n") from None
    async with request.app[POOL_KEY].acquire() as conn:
        try:
            return await report.build(conn, incident_id)
        except SymphonyError:
            raise web.HTTPNotFound(text="no such incident\n") from None


async def _incident(request: web.Request) -> web.Response:
    return _html(pages.incident(await _incident_report(request), csrf=_csrf(request)))


async def _incident_json(request: web.Request) -> web.Response:
    return web.Response(text=report.to_json(await _incident_report(request)), content_type="application/json")


def _query_int(request: web.Request, name: str, *, required: bool = True) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        if required:
            raise web.HTTPBadRequest(text=f"missing query parameter {name}\n")
        return None
    try:
        number = int(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer\n") from None
    if not 0 <= number < 2**63:
        raise web.HTTPBadRequest(text=f"{name} is out of range\n")
    return number


def _query_epoch(request: web.Request) -> bytes | None:
    value = request.query.get("epoch")
    if not value:
        return None
    try:
        return proofs.epoch_from_hex(value)
    except ValueError:
        raise web.HTTPBadRequest(text="epoch must be 32 hex digits\n") from None


async def _proof_inclusion(request: web.Request) -> web.Response:
    """A c2sp.org/tlog-proof@v1 file (text/plain) for ?attestation_id=ID[&node=N]
    or ?node=N&stream=S&seq=Q[&epoch=HEX]; 404 when nothing witnessed covers it."""
    attestation_id = _query_int(request, "attestation_id", required=False)
    node = request.query.get("node") or None
    stream = seq = None
    if attestation_id is None:
        stream, seq = _query_int(request, "stream"), _query_int(request, "seq")
        if node is None:
            raise web.HTTPBadRequest(text="give attestation_id, or node, stream and seq\n")
    async with request.app[POOL_KEY].acquire() as conn:
        try:
            found = await proofs.inclusion(conn, attestation_id=attestation_id, node_id=node, stream_id=stream,
                                           epoch=_query_epoch(request), seq=seq)
        except proofs.NotFound as exc:
            raise web.HTTPNotFound(text=exc.reason + "\n") from None
    return web.Response(body=found.file.text(), content_type="text/plain", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{found.node_id}-{found.stream_id}-'
                                                        f'{found.seq}.tlog-proof"'})


async def _proof_consistency(request: web.Request) -> web.Response:
    """?node=N&stream=S&old_size=M&new_size=K[&epoch=HEX]: the consistency proof as JSON."""
    node = request.query.get("node")
    if not node:
        raise web.HTTPBadRequest(text="missing query parameter node\n")
    stream, old, new = (_query_int(request, name) for name in ("stream", "old_size", "new_size"))
    assert stream is not None and old is not None and new is not None
    async with request.app[POOL_KEY].acquire() as conn:
        try:
            result = await proofs.consistency(conn, node, stream, _query_epoch(request), old, new)
        except proofs.NotFound as exc:
            raise web.HTTPNotFound(text=exc.reason + "\n") from None
        except SymphonyError as exc:
            raise web.HTTPBadRequest(text=exc.reason + "\n") from None
    return web.json_response({"old_size": result.old_size, "new_size": result.new_size,
                              "proof": [base64.b64encode(h).decode() for h in result.path],
                              "old_checkpoint": result.old_checkpoint, "new_checkpoint": result.new_checkpoint})


async def _attestation(request: web.Request) -> web.Response:
    try:
        attestation_id = int(request.match_info["attestation_id"])
    except ValueError:
        raise web.HTTPNotFound(text="no such attestation\n") from None
    if not 0 <= attestation_id < 2**63:
        raise web.HTTPNotFound(text="no such attestation\n")
    node = request.query.get("node") or None
    async with request.app[POOL_KEY].acquire() as conn:
        records = [dict(r) for r in await conn.fetch(QUERIES["attestation_records"], attestation_id, node,
                                                     timeout=TIMEOUT_SECONDS)]
        outbox = await conn.fetchrow(QUERIES["outbox_for_attestation"], attestation_id, node,
                                     timeout=TIMEOUT_SECONDS)
    if not records and outbox is None:
        raise web.HTTPNotFound(text="no such attestation\n")
    return _html(pages.attestation(attestation_id, records, None if outbox is None else dict(outbox),
                                   csrf=_csrf(request)))


async def _outbox(request: web.Request) -> web.Response:
    try:
        outbox_id = uuid.UUID(request.match_info["outbox_id"])
    except ValueError:
        raise web.HTTPNotFound(text="no such outbox row\n") from None
    async with request.app[POOL_KEY].acquire() as conn:
        row = await conn.fetchrow(DASHBOARD_QUERIES["dashboard_outbox"], str(outbox_id), timeout=TIMEOUT_SECONDS)
        transitions = [dict(r) for r in await conn.fetch(QUERIES["outbox_transitions"], str(outbox_id),
                                                         timeout=TIMEOUT_SECONDS)]
    if row is None:
        raise web.HTTPNotFound(text="no such outbox row\n")
    return _html(pages.outbox_page(dict(row), transitions, csrf=_csrf(request)))


async def _participant(request: web.Request) -> web.Response:
    participant_id = request.match_info["participant_id"]
    async with request.app[POOL_KEY].acquire() as conn:
        row = await conn.fetchrow(PARTICIPANT_QUERIES["participant_get"], participant_id, timeout=TIMEOUT_SECONDS)
        events = [dict(r) for r in await conn.fetch(PARTICIPANT_QUERIES["participant_events"], participant_id,
                                                    INCIDENTS_SHOWN_MAX, timeout=TIMEOUT_SECONDS)]
    if row is None:
        raise web.HTTPNotFound(text="no such participant\n")
    return _html(pages.participant(dict(row), events, csrf=_csrf(request)))


def _login_form(request: web.Request, next_path: str, *, error: str = "", status: int = 200) -> web.Response:
    """The login form with a fresh CSRF token, bound to a short-lived cookie (double submit)."""
    csrf = auth.new_secret()
    response = _html(pages.login(csrf=csrf, next_path=next_path, error=error), status)
    auth.set_cookie(response, auth.LOGIN_CSRF_COOKIE, csrf, auth.LOGIN_CSRF_SECONDS)
    return response


async def _login_page(request: web.Request) -> web.Response:
    if not request.app[TOKEN_KEY]:
        raise web.HTTPNotFound(text="token login is not configured: present a supervisor client certificate\n")
    next_path = auth.safe_next(request.query.get("next", "/"))
    if _session_admits(request):
        raise web.HTTPSeeOther(next_path)
    return _login_form(request, next_path)


async def _login(request: web.Request) -> web.Response:
    token = request.app[TOKEN_KEY]
    if not token:
        raise web.HTTPNotFound(text="token login is not configured: present a supervisor client certificate\n")
    form = await request.post()
    next_path = auth.safe_next(str(form.get("next", "/")))
    if not auth.same(str(form.get("csrf", "")), request.cookies.get(auth.LOGIN_CSRF_COOKIE, "")):
        return _login_form(request, next_path, error="The login form expired or did not come from this site: "
                                                     "try again.", status=403)
    if not auth.same(str(form.get("token", "")), token):
        log.warning("dashboard login refused", extra={"remote": request.remote})
        return _login_form(request, next_path, error="Wrong token.", status=401)
    sessions = request.app[SESSIONS_KEY]
    cookie, _ = sessions.create()
    log.info("dashboard login", extra={"remote": request.remote, "sessions": len(sessions)})
    response = web.HTTPSeeOther(next_path)
    auth.set_cookie(response, auth.SESSION_COOKIE, cookie, int(sessions.lifetime_seconds))
    auth.clear_cookie(response, auth.LOGIN_CSRF_COOKIE)
    raise response


async def _logout(request: web.Request) -> web.Response:
    session = request.get(SESSION_REQUEST_KEY)
    if not isinstance(session, auth.Session):
        raise web.HTTPBadRequest(text="no session to end (admitted by token or certificate)\n")
    form = await request.post()
    if not auth.same(str(form.get("csrf", "")), session.csrf):
        raise web.HTTPForbidden(text="logout refused: the form did not come from this session\n")
    request.app[SESSIONS_KEY].end(request.cookies.get(auth.SESSION_COOKIE, ""))
    response = web.HTTPSeeOther("/login")
    auth.clear_cookie(response, auth.SESSION_COOKIE)
    raise response


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def _readyz(request: web.Request) -> web.Response:
    """Ready when PostgreSQL answers: without it every page would fail."""
    try:
        async with request.app[POOL_KEY].acquire(timeout=READY_TIMEOUT_SECONDS) as conn:
            await conn.fetchval("SELECT 1", timeout=READY_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return web.json_response({"status": "not ready", "checks": {"database": type(exc).__name__}}, status=503)
    return web.json_response({"status": "ready", "checks": {"database": "ok"}})


def make_app(settings: RepairConfig, pool: asyncpg.Pool, token: str) -> web.Application:
    if not token and not settings.dashboard_client_ca:
        raise ConfigError("the dashboard is never open: set dashboard_token_file or dashboard_client_ca")
    app = web.Application(middlewares=[_guard], client_max_size=4096)
    app[POOL_KEY] = pool
    app[SETTINGS_KEY] = settings
    app[TOKEN_KEY] = token
    app[SESSIONS_KEY] = auth.Sessions(settings.dashboard_session_seconds, settings.dashboard_sessions_max)
    app.router.add_get("/", _overview)
    app.router.add_get("/api/summary", _summary)
    app.router.add_get("/api/incidents/{incident_id}", _incident_json)
    app.router.add_get("/api/proof/inclusion", _proof_inclusion)
    app.router.add_get("/api/proof/consistency", _proof_consistency)
    app.router.add_get("/incidents/{incident_id}", _incident)
    app.router.add_get("/attestations/{attestation_id}", _attestation)
    app.router.add_get("/outbox/{outbox_id}", _outbox)
    app.router.add_get("/participants/{participant_id}", _participant)
    app.router.add_get("/login", _login_page)
    app.router.add_post("/login", _login)
    app.router.add_post("/logout", _logout)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


async def create_read_only_pool(dsn: str) -> asyncpg.Pool:
    return await create_pool(dsn, min_size=1, max_size=4,
                             server_settings={"default_transaction_read_only": "on",
                                              "application_name": "symphony-dashboard"})
