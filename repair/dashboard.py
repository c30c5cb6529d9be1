"""The regulator dashboard: read-only, server-rendered HTML with inline SVG charts.

Never open: every page but /healthz needs the supervisor bearer token or a
verified client certificate (and refuses to start with neither configured).
Read-only twice over: only GET routes exist, and its database sessions run
with default_transaction_read_only, so no bug here can write.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import ssl
import uuid
from html import escape
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from repair import report, svg
from repair.config import RepairConfig
from repair.store import QUERIES, TIMEOUT_SECONDS
from symphony.db import create_pool
from symphony.errors import ConfigError, SymphonyError

log = logging.getLogger("repair.dashboard")
POOL_KEY = web.AppKey("pool", asyncpg.Pool)
SETTINGS_KEY = web.AppKey("settings", RepairConfig)
TOKEN_KEY = web.AppKey("token", str)
INCIDENTS_SHOWN_MAX = 200
STATUS_CLASS = {"HEALTHY": "ok", "ACTION_REQUIRED": "warn", "CRITICAL_GAP": "crit"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
CSS = """
body{font-family:sans-serif;margin:24px;color:#111;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right} th{background:#f0f0f0}
td.l,th.l{text-align:left}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-weight:bold;font-size:12px}
.ok{background:#dcfce7;color:#166534}.warn{background:#fef9c3;color:#854d0e}.crit{background:#fee2e2;color:#991b1b}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff;border:1px solid #ddd}
.meta{color:#555;font-size:12px} pre{background:#fff;border:1px solid #ddd;padding:8px;overflow:auto;font-size:12px}
"""


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
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.dashboard_tls_cert, settings.dashboard_tls_key)
        if settings.dashboard_client_ca:
            context.load_verify_locations(settings.dashboard_client_ca)
            # Optional at the TLS layer so token holders still get in; the middleware
            # admits a request only with a verified certificate or the token.
            context.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"dashboard TLS files: {exc}") from None
    return context


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


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path != "/healthz":
        settings, token = request.app[SETTINGS_KEY], request.app[TOKEN_KEY]
        header = request.headers.get("Authorization", "")
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else ""
        token_ok = bool(token) and bool(bearer) and hmac.compare_digest(bearer.encode(), token.encode())
        if not (token_ok or _certificate_admits(request, settings)):
            response: web.StreamResponse = web.Response(
                status=401, text="supervisor credentials required (bearer token or client certificate)\n",
                headers={"WWW-Authenticate": 'Bearer realm="symphony-regulator"'})
            response.headers.update(SECURITY_HEADERS)
            return response
    response = await handler(request)
    response.headers.update(SECURITY_HEADERS)
    return response


def _iso(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


async def overview_data(conn: asyncpg.Connection, settings: RepairConfig) -> dict[str, Any]:
    """Everything the overview page shows, as plain data (also served as JSON)."""
    participants = [dict(r) for r in await conn.fetch(QUERIES["dashboard_participants"], timeout=TIMEOUT_SECONDS)]
    incidents = [dict(r) for r in await conn.fetch(QUERIES["list_incidents"], True, None, INCIDENTS_SHOWN_MAX,
                                                   timeout=TIMEOUT_SECONDS)]
    streams = [dict(r) for r in await conn.fetch(QUERIES["dashboard_streams"], timeout=TIMEOUT_SECONDS)]
    instances = [dict(r) for r in await conn.fetch(QUERIES["dashboard_instances"], timeout=TIMEOUT_SECONDS)]
    series = [dict(r) for r in await conn.fetch(QUERIES["dashboard_series"], settings.dashboard_chart_minutes,
                                                timeout=TIMEOUT_SECONDS)]
    totals = {key: sum(p[key] for p in participants)
              for key in ("ingress_count", "executions", "handled", "gap", "open_incidents", "dead_letters")}
    totals["status"] = ("CRITICAL_GAP" if totals["gap"] else
                        "ACTION_REQUIRED" if totals["open_incidents"] or totals["dead_letters"] else "HEALTHY")
    from repair import reconcile  # the rails' statements (repair/reconcile.py)

    rails = await reconcile.summary(conn)
    return {"generated_at": dt.datetime.now(dt.timezone.utc), "participants": participants, "totals": totals,
            "incidents": incidents, "streams": streams, "instances": instances, "series": series,
            "rail_reconciliation": rails}


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


def render_overview(data: dict[str, Any]) -> str:
    t = data["totals"]
    r = data["rail_reconciliation"]
    rows = []
    for p in data["participants"]:
        rows.append(
            f'<tr data-participant="{escape(p["participant_id"])}"><td class="l participant">'
            f'{escape(p["participant_id"])}</td><td class="ingress">{p["ingress_count"]}</td>'
            f'<td class="executions">{p["executions"]}</td><td class="handled">{p["handled"]}</td>'
            f'<td class="ghosts">{p["ghosts"]}</td><td class="gap">{p["gap"]}</td>'
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
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Symphony — regulator dashboard</title>
<style>{CSS}</style></head><body>
<h1>Symphony — regulator dashboard</h1>
<p class="meta">Read-only. Generated {_iso(data["generated_at"])}. Repair: {leaders}.</p>
<p id="overall">Overall: {_badge(t["status"])} ingress <b id="total-ingress">{t["ingress_count"]}</b>,
executions <b id="total-executions">{t["executions"]}</b>, handled <b id="total-handled">{t["handled"]}</b>,
gap <b id="total-gap">{t["gap"]}</b>, open incidents <b id="total-incidents">{t["open_incidents"]}</b>,
dead letters <b id="total-dead-letters">{t["dead_letters"]}</b>.</p>
<p id="rail-reconciliation">Rail statements reconciled: <b id="rail-statements">{r["statements"]}</b>
({r["lines"]} lines, {r["matched"]} matched); open <b id="rail-unmatched">{r["unmatched_open"]}</b> RAIL_UNMATCHED,
<b id="rail-mismatched">{r["mismatched_open"]}</b> RAIL_MISMATCH, of which <b id="rail-critical">{r["critical_open"]}</b>
critical (money moved without an outbox row, or not as the outbox says).</p>
<h2>Participants</h2>
<table id="participants"><tr><th class="l">participant</th><th>ingress</th><th>executions</th><th>handled</th>
<th>ghosts</th><th>gap</th><th>integrity score</th><th>open incidents</th><th>dead letters</th>
<th class="l">status</th></tr>{"".join(rows)}</table>
<h2>Open incidents</h2>
<table id="incidents"><tr><th class="l">kind</th><th class="l">severity</th><th class="l">participant</th>
<th class="l">detected</th><th class="l">subject</th></tr>{"".join(incidents) or
'<tr><td class="l" colspan="5">none</td></tr>'}</table>
<h2>Streams</h2>
<table id="streams"><tr><th class="l">stream</th><th>last seq</th><th>lag</th><th class="l">last heartbeat</th>
<th>last verified seq</th><th class="l">integrity</th></tr>{"".join(streams) or
'<tr><td class="l" colspan="6">none</td></tr>'}</table>
<h2>Over time</h2>
<div class="charts">{charts}</div>
</body></html>"""


def render_incident(data: dict[str, Any]) -> str:
    inc = data["incident"]
    body = escape(report.to_markdown(data))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Incident {escape(inc["incident_id"])}</title>
<style>{CSS}</style></head><body>
<p><a href="/">← dashboard</a></p>
<h1>{escape(inc["kind"])} {_badge("CRITICAL_GAP" if inc["severity"] == "CRITICAL" else "ACTION_REQUIRED")}</h1>
<p class="meta">{escape(inc["subject"])}</p>
<pre id="report">{body}</pre>
<h2>Evidence chain (JSON)</h2>
<pre id="evidence-chain">{escape(json.dumps(data["evidence_chain"], indent=2, default=str))}</pre>
</body></html>"""


async def _overview(request: web.Request) -> web.Response:
    async with request.app[POOL_KEY].acquire() as conn:
        data = await overview_data(conn, request.app[SETTINGS_KEY])
    return web.Response(text=render_overview(data), content_type="text/html")


async def _summary(request: web.Request) -> web.Response:
    async with request.app[POOL_KEY].acquire() as conn:
        data = await overview_data(conn, request.app[SETTINGS_KEY])
    return web.Response(text=json.dumps(data, default=str, indent=2), content_type="application/json")


async def _incident(request: web.Request) -> web.Response:
    try:
        incident_id = uuid.UUID(request.match_info["incident_id"])
    except ValueError:
        raise web.HTTPNotFound(text="no such incident\n") from None
    async with request.app[POOL_KEY].acquire() as conn:
        try:
            data = await report.build(conn, incident_id)
        except SymphonyError:
            raise web.HTTPNotFound(text="no such incident\n") from None
    return web.Response(text=render_incident(data), content_type="text/html")


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


def make_app(settings: RepairConfig, pool: asyncpg.Pool, token: str) -> web.Application:
    if not token and not settings.dashboard_client_ca:
        raise ConfigError("the dashboard is never open: set dashboard_token_file or dashboard_client_ca")
    app = web.Application(middlewares=[_guard], client_max_size=1024)
    app[POOL_KEY] = pool
    app[SETTINGS_KEY] = settings
    app[TOKEN_KEY] = token
    app.router.add_get("/", _overview)
    app.router.add_get("/api/summary", _summary)
    app.router.add_get("/incidents/{incident_id}", _incident)
    app.router.add_get("/healthz", _healthz)
    return app


async def create_read_only_pool(dsn: str) -> asyncpg.Pool:
    return await create_pool(dsn, min_size=1, max_size=4,
                             server_settings={"default_transaction_read_only": "on",
                                              "application_name": "symphony-dashboard"})
