"""The dashboard's pages other than the overview: login, an incident and the
records its evidence chain links to (attestation, outbox row, participant).

Pure functions from plain data to HTML; every value is escaped here. An
incident is a page of tables and links, one per link of the evidence chain
(attestation -> ledger intent -> outbox row -> transitions -> rail attempts),
never a dump of Markdown or JSON (the JSON is a separate link, for tools).
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any
from urllib.parse import quote

STATUS_CLASS = {"HEALTHY": "ok", "ACTION_REQUIRED": "warn", "CRITICAL_GAP": "crit"}
CSS = """
body{font-family:sans-serif;margin:24px;color:#111;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right} th{background:#f0f0f0}
td.l,th.l{text-align:left}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-weight:bold;font-size:12px}
.ok{background:#dcfce7;color:#166534}.warn{background:#fef9c3;color:#854d0e}.crit{background:#fee2e2;color:#991b1b}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff;border:1px solid #ddd}
.meta{color:#555;font-size:12px} pre{background:#fff;border:1px solid #ddd;padding:8px;overflow:auto;font-size:12px}
nav{display:flex;gap:16px;align-items:center;margin-bottom:12px;font-size:13px} nav form{margin:0}
ul.conditions li{margin:2px 0} .login{max-width:420px;background:#fff;border:1px solid #ddd;padding:16px}
.login input[type=password]{width:100%;box-sizing:border-box;padding:6px;margin:6px 0 12px}
.error{color:#991b1b}
"""
RECORD_TYPES = {1: "GENESIS", 2: "INGRESS", 3: "OUTCOME", 4: "HEARTBEAT", 5: "DROPPED", 6: "CHECKPOINT"}


def iso(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, str) and len(value) >= 19 and value[10:11] == "T":
        try:
            return iso(dt.datetime.fromisoformat(value))
        except ValueError:
            return escape(value)
    return escape(str(value))


def badge(status: str) -> str:
    return f'<span class="badge {STATUS_CLASS.get(status, "warn")}">{escape(status)}</span>'


def dash(value: Any) -> str:
    return "—" if value is None or value == "" else escape(str(value))


def nav(csrf: str | None) -> str:
    """The top bar: back to the overview, and a logout form for a session."""
    logout = ""
    if csrf is not None:
        logout = (f'<form method="post" action="/logout" id="logout"><input type="hidden" name="csrf" '
                  f'value="{escape(csrf)}"><button type="submit">Log out</button></form>')
    return f'<nav><a href="/">Regulator dashboard</a>{logout}</nav>'


def page(title: str, body: str, *, csrf: str | None, refresh_seconds: int = 0) -> str:
    refresh = f'<meta http-equiv="refresh" content="{refresh_seconds}">' if refresh_seconds > 0 else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">{refresh}<title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n{nav(csrf)}\n{body}\n</body></html>")


def login(*, csrf: str, next_path: str, error: str = "") -> str:
    message = f'<p class="error" id="login-error">{escape(error)}</p>' if error else ""
    body = f"""<h1>Symphony — regulator dashboard</h1>
<div class="login"><form method="post" action="/login" id="login">
<input type="hidden" name="csrf" value="{escape(csrf)}">
<input type="hidden" name="next" value="{escape(next_path)}">
<label for="token">Supervisor token</label>
<input type="password" id="token" name="token" autocomplete="current-password" required autofocus>
<button type="submit" id="login-submit">Log in</button></form>{message}
<p class="meta">The token is exchanged once for a session cookie; or present a supervisor client certificate.</p>
</div>"""
    return page("Log in — Symphony", body, csrf=None)


def _table(table_id: str, headers: list[str], rows: list[str], empty: str) -> str:
    head = "".join(f'<th class="l">{escape(h)}</th>' for h in headers)
    content = "".join(rows) or f'<tr><td class="l" colspan="{len(headers)}">{escape(empty)}</td></tr>'
    return f'<table id="{table_id}"><tr>{head}</tr>{content}</table>'


def _fields(table_id: str, items: list[tuple[str, str]]) -> str:
    rows = "".join(f'<tr><th class="l">{escape(k)}</th><td class="l" data-field="{escape(k)}">{v}</td></tr>'
                   for k, v in items)
    return f'<table id="{table_id}">{rows}</table>'


def attestation_href(attestation_id: Any, node_id: Any) -> str:
    node = f"?node={quote(str(node_id))}" if node_id else ""
    return f"/attestations/{int(attestation_id)}{node}"


def outbox_href(outbox_id: Any) -> str:
    return f"/outbox/{quote(str(outbox_id))}"


def participant_href(participant_id: Any) -> str:
    return f"/participants/{quote(str(participant_id), safe='')}"


def participant_link(participant_id: Any) -> str:
    if not participant_id:
        return "—"
    return f'<a class="participant-link" href="{participant_href(participant_id)}">{escape(str(participant_id))}</a>'


def attestation_rows(records: list[dict[str, Any]]) -> list[str]:
    return [f'<tr data-seq="{r["stream_seq"]}"><td class="l">{escape(str(r["node_id"]))}/{r["stream_id"]}/'
            f'{r["stream_seq"]}</td><td class="l">{RECORD_TYPES.get(r["record_type"], r["record_type"])}</td>'
            f'<td class="l">{iso(r["recorded_at"])}</td><td class="l">{dash(r.get("method"))} {dash(r["route"])}</td>'
            f'<td class="l">{dash(r["status"])}</td><td class="l">{dash(r["disposition"])}</td>'
            f'<td class="l"><code>{escape(str(r["chain_hash"])[:16])}…</code></td></tr>' for r in records]


ATTESTATION_HEADERS = ["stream/seq", "type", "recorded", "route", "status", "disposition", "chain hash"]


def transition_rows(transitions: list[dict[str, Any]]) -> list[str]:
    return [f'<tr><td class="l">{iso(t["occurred_at"])}</td><td class="l">{dash(t["old_status"])}</td>'
            f'<td class="l">{escape(str(t["new_status"]))}</td><td class="l">{t["attempt"]}</td>'
            f'<td class="l">{escape(str(t["actor"]))}</td><td class="l">{dash(t["response_code"])}</td>'
            f'<td class="l">{dash(t["detail"])}</td></tr>' for t in transitions]


TRANSITION_HEADERS = ["at", "from", "to", "attempt", "actor", "response", "detail"]


def incident(data: dict[str, Any], *, csrf: str | None) -> str:
    """An incident report as a page; the evidence chain's links lead to their records."""
    inc, chain = data["incident"], data["evidence_chain"]
    severity = "CRITICAL_GAP" if inc["severity"] == "CRITICAL" else "ACTION_REQUIRED"
    state = f'{escape(str(inc["resolution"]))} at {iso(inc["resolved_at"])}' if inc.get("resolved_at") else "open"
    fields = _fields("incident-fields", [
        ("participant", participant_link(inc.get("participant_id"))),
        ("node/stream", f'{dash(inc.get("node_id"))}/{dash(inc.get("stream_id"))}'),
        ("detected", iso(inc.get("detected_at"))), ("last seen", iso(inc.get("last_seen_at"))),
        ("state", state), ("resolved by", dash(inc.get("resolved_by")))])
    links: list[str] = []
    if chain["attestation_id"] is not None:
        node = (chain["attestations"][0]["node_id"] if chain["attestations"]
                else (chain["outbox"] or {}).get("ingress_node_id"))
        links.append(f'<li>Attestation <a class="evidence-link" id="link-attestation" href="'
                     f'{attestation_href(chain["attestation_id"], node)}">{chain["attestation_id"]}</a>: '
                     f'{len(chain["attestations"])} record(s)</li>')
    else:
        links.append("<li>No attestation named by the evidence.</li>")
    intent = chain["ledger_intent"]
    links.append(f'<li>Ledger intent {escape(str(intent["intent_id"]))}: {dash(intent["amount_minor"])} '
                 f'{dash(intent["currency"])} at {iso(intent["created_at"])}</li>' if intent
                 else "<li>No ledger intent: nothing was executed.</li>")
    outbox = chain["outbox"]
    links.append(f'<li>Outbox row <a class="evidence-link" id="link-outbox" href="{outbox_href(outbox["outbox_id"])}">'
                 f'{escape(str(outbox["outbox_id"]))}</a>: {escape(str(outbox["status"]))} on '
                 f'{escape(str(outbox["rail"]))}, attempt {outbox["attempt_count"]} of {outbox["max_attempts"]}</li>'
                 if outbox else "<li>No outbox row.</li>")
    links.append(f'<li>Rail attempts: {len(chain["rail_attempts"])}</li>')
    automation = "".join(f'<li>{iso(a["occurred_at"])} {escape(str(a["actor"]))}: {escape(str(a["action"]))}</li>'
                         for a in data["automation"]) or "<li>Nothing.</li>"
    notes = "".join(f'<li>{iso(n.get("at"))} {dash(n.get("by"))} ({dash(n.get("outcome"))}): {dash(n.get("note"))}</li>'
                    for n in data["operator_notes"]) or "<li>None.</li>"
    evidence = _fields("incident-evidence", [(str(k), dash(v if not isinstance(v, (dict, list)) else str(v)))
                                             for k, v in sorted(data["evidence"].items())])
    body = f"""<h1>{escape(str(inc["kind"]))} {badge(severity)}</h1>
<p class="meta" id="incident-subject">{escape(str(inc["subject"]))}</p>
<p class="meta">Incident {escape(str(inc["incident_id"]))} ·
<a href="/api/incidents/{escape(str(inc["incident_id"]))}">as JSON</a></p>
{fields}
<h2>Action required</h2>
<p id="action-required">{escape(str(data["action_required"]))}</p>
<h2>Evidence chain</h2>
<ol id="evidence-chain">{"".join(links)}</ol>
<h3>Attestation records</h3>
{_table("attestations", ATTESTATION_HEADERS, attestation_rows(chain["attestations"]), "No attestation records.")}
<h3>Transitions and rail attempts</h3>
{_table("transitions", TRANSITION_HEADERS, transition_rows(chain["transitions"]), "None.")}
<h2>What the detector saw</h2>
{evidence}
<h2>What the automation did</h2>
<ul id="automation">{automation}</ul>
<h2>Operator notes</h2>
<ul id="operator-notes">{notes}</ul>"""
    return page(f"Incident {inc['incident_id']}", body, csrf=csrf)


def attestation(attestation_id: int, records: list[dict[str, Any]], outbox: dict[str, Any] | None, *,
                csrf: str | None) -> str:
    participant = next((r["participant_id"] for r in records if r.get("participant_id")), None)
    executed = (f'Executed as outbox row <a class="evidence-link" id="link-outbox" '
                f'href="{outbox_href(outbox["outbox_id"])}">{escape(str(outbox["outbox_id"]))}</a> '
                f'({escape(str(outbox["status"]))}).' if outbox else "No outbox row references it.")
    body = f"""<h1>Attestation {attestation_id}</h1>
<p class="meta">Participant {participant_link(participant)}. {executed}</p>
<p class="meta">The records as PostgreSQL holds them; `symphony audit verify-chain` checks their chain hashes.</p>
{_table("attestations", ATTESTATION_HEADERS, attestation_rows(records), "No records.")}"""
    return page(f"Attestation {attestation_id}", body, csrf=csrf)


def outbox_page(outbox: dict[str, Any], transitions: list[dict[str, Any]], *, csrf: str | None) -> str:
    attested = (f'<a class="evidence-link" id="link-attestation" href="'
                f'{attestation_href(outbox["attestation_id"], outbox.get("ingress_node_id"))}">'
                f'{outbox["attestation_id"]}</a>' if outbox.get("attestation_id") is not None else "—")
    fields = _fields("outbox-fields", [
        ("status", escape(str(outbox["status"]))), ("rail", escape(str(outbox["rail"]))),
        ("attempts", f'{outbox["attempt_count"]} of {outbox["max_attempts"]}'),
        ("attestation", attested), ("ledger intent", dash(outbox.get("intent_id"))),
        ("amount", f'{dash(outbox.get("amount_minor"))} {dash(outbox.get("currency"))}'),
        ("created", iso(outbox.get("created_at"))), ("completed", iso(outbox.get("completed_at"))),
        ("lease", f'{dash(outbox.get("lease_owner"))} until {iso(outbox.get("lease_expires_at"))}'),
        ("last response", dash(outbox.get("last_response_code"))), ("last error", dash(outbox.get("last_error"))),
        ("rail reference", dash(outbox.get("rail_reference")))])
    body = f"""<h1>Outbox row {escape(str(outbox["outbox_id"]))}</h1>
{fields}
<h2>Transitions and rail attempts</h2>
<p class="meta">A rail attempt is a transition out of IN_FLIGHT: the relayer asked the rail and recorded the answer.</p>
{_table("transitions", TRANSITION_HEADERS, transition_rows(transitions), "None.")}"""
    return page(f"Outbox row {outbox['outbox_id']}", body, csrf=csrf)


def admin_event_rows(events: list[dict[str, Any]]) -> list[str]:
    return [f'<tr data-event="{e["event_id"]}"><td class="l">{iso(e["occurred_at"])}</td>'
            f'<td class="l">{participant_link(e["participant_id"])}</td><td class="l action">{escape(e["action"])}</td>'
            f'<td class="l">{escape(e["old_status"])} pv {e["old_policy_version"]} → {escape(e["new_status"])} pv '
            f'{e["new_policy_version"]}</td><td class="l operator">{escape(e["operator"])} '
            f'<span class="meta">(role {escape(e["database_role"])})</span></td>'
            f'<td class="l reason">{escape(e["reason"])}</td></tr>' for e in events]


ADMIN_HEADERS = ["when", "participant", "action", "change", "who", "why"]


def admin_section(events: list[dict[str, Any]]) -> str:
    """The overview's record of `symphony participant` changes."""
    return (f'<h2>Participant administration</h2>\n<p class="meta">Suspensions, reinstatements and token '
            f'revocations (`symphony participant`), newest first; the record is append-only.</p>\n'
            f'{_table("participant-admin", ADMIN_HEADERS, admin_event_rows(events), "none")}')


def participant(row: dict[str, Any], events: list[dict[str, Any]], *, csrf: str | None) -> str:
    status = f'<span class="badge {"ok" if row["status"] == "ACTIVE" else "warn"}">{escape(str(row["status"]))}</span>'
    fields = _fields("participant-fields", [
        ("status", status), ("policy version", str(row["policy_version"])),
        ("per-payment limit (minor units)", str(row["per_payment_limit_minor"])),
        ("window limit (minor units)", f'{row["window_limit_minor"]} per {row["window_seconds"]} s'),
        ("created", iso(row["created_at"])), ("updated", iso(row["updated_at"]))])
    body = f"""<h1>Participant {escape(str(row["participant_id"]))}</h1>
{fields}
<h2>Administrative history</h2>
{_table("participant-admin", ADMIN_HEADERS, admin_event_rows(events), "No administrative change.")}"""
    return page(f"Participant {row['participant_id']}", body, csrf=csrf)
