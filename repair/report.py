"""The incident report: what happened, the evidence chain, what was tried, what to do.

Evidence chain = attestation (INGRESS, OUTCOME) → ledger intent → outbox row →
its transitions → the rail attempts among them. Rendered as JSON (for tools)
or Markdown (for people and tickets); both come from one dict.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import asyncpg

from repair.store import QUERIES, TIMEOUT_SECONDS
from symphony.errors import SymphonyError

ACTION_REQUIRED = {
    "GHOST": ("Received and never executed. It is not resurrected (attestations carry no payload): tell the "
              "participant, whose retry with the same idempotency key executes it exactly once. Close as RESOLVED "
              "when the retry executed, or ACCEPTED_LOSS when the participant abandons it."),
    "OUTCOME_MISSING": ("The sidecar gave no answer (it died mid-request). If an outbox row exists the payment "
                        "proceeds; otherwise treat as a ghost. Check the sidecar's logs for the crash."),
    "ZOMBIE": ("The relayer holding the row vanished. The row is re-queued as RECOVERING and resent with the "
               "same rail key; if it stays stuck, ask the rail for the status of that key."),
    "STUCK_KEY": ("A request held its idempotency key too long. With nothing executed the key is released; "
                  "with an intent, the client's retry gets the intent's result."),
    "SEQ_GAP": ("Records are missing from a stream: provable loss or deletion. Compare with the journal files "
                "and the independent object-storage copy; escalate as a security incident if they hold them."),
    "CHAIN_BREAK": ("The record was altered. Run `symphony audit verify-chain` and compare with the journal "
                    "and the object-storage copy; treat as a security incident."),
    "NODE_SILENT": ("A stream sent nothing, not even heartbeats. Check the node's sidecar and forwarder; if "
                    "the node is retired, close as ACCEPTED_LOSS."),
    "DEAD_LETTER": ("A payment exhausted its retry budget. Inspect the rail's answers below, then redrive it "
                    "(`symphony outbox redrive ID`) or close it with the participant."),
    "CLOCK_BACKWARDS": ("The node's wall clock stepped back past the attestation clock's bound and the sidecar "
                        "refused requests with 503 (nothing was attested or executed for them; clients may "
                        "retry). Check the node's time source (NTP/chrony, a VM restored from a snapshot), "
                        "then close as RESOLVED; later refusals open a new incident."),
}


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _row(record: asyncpg.Record | None) -> dict[str, Any] | None:
    return None if record is None else {key: _plain(value) for key, value in record.items()}


async def build(conn: asyncpg.Connection, incident_id: uuid.UUID) -> dict[str, Any]:
    incident = await conn.fetchrow(QUERIES["get_incident"], incident_id, timeout=TIMEOUT_SECONDS)
    if incident is None:
        raise SymphonyError(f"no incident {incident_id}", exit_code=2)
    data = _row(incident)
    assert data is not None
    evidence = json.loads(data.pop("evidence"))
    notes = json.loads(data.pop("operator_notes"))
    chain = await _evidence_chain(conn, evidence)
    actions = [{**_row(a), "detail": json.loads(a["detail"])}  # type: ignore[dict-item]
               for a in await conn.fetch(QUERIES["incident_actions"], incident_id, timeout=TIMEOUT_SECONDS)]
    return {"incident": data, "evidence": evidence, "evidence_chain": chain, "automation": actions,
            "operator_notes": notes, "action_required": ACTION_REQUIRED.get(data["kind"], "Investigate.")}


async def _evidence_chain(conn: asyncpg.Connection, evidence: dict[str, Any]) -> dict[str, Any]:
    outbox: dict[str, Any] | None = None
    attestation_id = evidence.get("attestation_id")
    node_id = evidence.get("node_id") or evidence.get("ingress_node_id")
    if evidence.get("outbox_id"):
        outbox = _row(await conn.fetchrow(QUERIES["outbox_by_id"], evidence["outbox_id"], timeout=TIMEOUT_SECONDS))
    elif attestation_id is not None:
        outbox = _row(await conn.fetchrow(QUERIES["outbox_for_attestation"], attestation_id, node_id,
                                          timeout=TIMEOUT_SECONDS))
    if outbox is not None and attestation_id is None:
        attestation_id, node_id = outbox.get("attestation_id"), outbox.get("ingress_node_id")
    records = []
    if attestation_id is not None:
        records = [_row(r) for r in await conn.fetch(QUERIES["attestation_records"], attestation_id, node_id,
                                                     timeout=TIMEOUT_SECONDS)]
    transitions = []
    if outbox is not None:
        transitions = [_row(r) for r in await conn.fetch(QUERIES["outbox_transitions"], outbox["outbox_id"],
                                                         timeout=TIMEOUT_SECONDS)]
    # A rail attempt is a transition out of IN_FLIGHT: the relayer asked the rail and recorded what came back.
    attempts = [t for t in transitions if t and t["old_status"] == "IN_FLIGHT"]
    intent = None
    if outbox is not None:
        intent = {"intent_id": outbox.get("intent_id"), "amount_minor": outbox.get("amount_minor"),
                  "currency": outbox.get("currency"), "created_at": outbox.get("intent_created_at")}
    return {"attestation_id": attestation_id, "attestations": records, "ledger_intent": intent, "outbox": outbox,
            "transitions": transitions, "rail_attempts": attempts}


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True, default=str)


def to_markdown(report: dict[str, Any]) -> str:
    inc = report["incident"]
    chain = report["evidence_chain"]
    lines = [f"# Incident {inc['incident_id']}: {inc['kind']} ({inc['severity']})", "", inc["subject"], "",
             "| field | value |", "|---|---|"]
    for key in ("participant_id", "node_id", "stream_id", "detected_at", "last_seen_at", "resolved_at",
                "resolution", "resolved_by"):
        lines.append(f"| {key} | {inc.get(key) if inc.get(key) is not None else '—'} |")
    lines += ["", "## Evidence chain", "", f"Attestation id: {chain['attestation_id'] or '—'}", ""]
    lines += ["### Attestations", ""]
    if chain["attestations"]:
        lines += ["| seq | type | at | route | status | disposition | chain hash |", "|---|---|---|---|---|---|---|"]
        for r in chain["attestations"]:
            kind = {2: "INGRESS", 3: "OUTCOME"}.get(r["record_type"], str(r["record_type"]))
            lines.append(f"| {r['node_id']}/{r['stream_id']}/{r['stream_seq']} | {kind} | {r['recorded_at']} | "
                         f"{r['route'] or '—'} | {r['status'] or '—'} | {r['disposition'] or '—'} | "
                         f"{r['chain_hash'][:16]}… |")
    else:
        lines.append("No attestation records.")
    intent = chain["ledger_intent"]
    lines += ["", "### Ledger intent", "",
              f"{intent['intent_id']}: {intent['amount_minor']} {intent['currency']} at {intent['created_at']}"
              if intent else "No ledger intent: nothing was executed."]
    outbox = chain["outbox"]
    lines += ["", "### Outbox", "",
              f"{outbox['outbox_id']}: {outbox['status']} on {outbox['rail']}, attempt {outbox['attempt_count']} "
              f"of {outbox['max_attempts']}, last error: {outbox['last_error'] or '—'}" if outbox else "No outbox row."]
    lines += ["", "### Transitions and rail attempts", ""]
    if chain["transitions"]:
        lines += ["| at | from | to | attempt | actor | response | detail |", "|---|---|---|---|---|---|---|"]
        for t in chain["transitions"]:
            lines.append(f"| {t['occurred_at']} | {t['old_status'] or '—'} | {t['new_status']} | {t['attempt']} | "
                         f"{t['actor']} | {t['response_code'] or '—'} | {t['detail'] or '—'} |")
        lines += ["", f"Rail attempts: {len(chain['rail_attempts'])}"]
    else:
        lines.append("None.")
    lines += ["", "## What the automation did", ""]
    lines += [f"- {a['occurred_at']} {a['actor']}: {a['action']}" for a in report["automation"]] or ["Nothing."]
    lines += ["", "## Operator notes", ""]
    lines += [f"- {n.get('at')} {n.get('by')} ({n.get('outcome')}): {n.get('note')}"
              for n in report["operator_notes"]] or ["None."]
    lines += ["", "## Action required", "", report["action_required"], ""]
    return "\n".join(lines)
