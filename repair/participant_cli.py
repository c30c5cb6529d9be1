"""`symphony participant`: administer participants without hand-written SQL.

    symphony participant list [--json]                          every participant
    symphony participant show ID [--json]                       one, with its history
    symphony participant suspend ID --reason TEXT [--operator NAME]
    symphony participant reinstate ID --reason TEXT [--operator NAME]
    symphony participant revoke-tokens ID --reason TEXT [--operator NAME]

A change and its record (who: --operator or $USER, and the database role;
when; why: --reason, required) are written by one statement into
participant_admin_events, which refuses UPDATE, DELETE and TRUNCATE. Sidecars
hear of the change through NOTIFY at COMMIT: a suspended participant is refused
with 403 within milliseconds (bench/participant_suspend_bench.py measures it).
`revoke-tokens` bumps the policy version, so every token issued before is
refused (`stale_policy_version`) while new tokens carry the new version.

It connects with the DSN of --database-url / --data-dir / the repair config:
a role that may UPDATE participants and INSERT into participant_admin_events
(an operator role, not the dashboard's read-only one; docs/operations.md).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
from typing import Any

import asyncpg

from repair import common
from symphony.db import queries
from symphony.errors import EXIT_OK, EXIT_USAGE, SymphonyError

QUERIES = queries.load("repair", "participants.sql")
TIMEOUT_SECONDS = 30.0
HISTORY_SHOWN_MAX = 100
# CLI verb -> the action recorded in participant_admin_events.
ACTIONS = {"suspend": "SUSPEND", "reinstate": "REINSTATE", "revoke-tokens": "REVOKE_TOKENS"}
OPERATOR_LENGTH_MAX = 128
REASON_LENGTH_MAX = 2000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_common(parser)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="every participant: status, policy version, last change")
    listing.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="one participant with its administrative history")
    show.add_argument("participant_id", metavar="ID")
    show.add_argument("--json", action="store_true")
    children = [listing, show]
    for verb, help_text in (("suspend", "refuse every request of the participant (403 participant_suspended)"),
                            ("reinstate", "accept the participant's requests again"),
                            ("revoke-tokens", "bump the policy version: every token issued before is refused")):
        change = sub.add_parser(verb, help=help_text)
        change.add_argument("participant_id", metavar="ID")
        change.add_argument("--reason", required=True, help="why (kept in the append-only record)")
        change.add_argument("--operator", default="", help="who asks (default: $USER, else the login name)")
        children.append(change)
    for child in children:
        common.add_common(child, suppress=True)


def operator_name(flag: str) -> str:
    """--operator, else $USER, else the login name of this process's user."""
    name = flag.strip() or os.environ.get("USER", "").strip()
    if not name:
        try:
            name = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            name = ""
    if not 1 <= len(name) <= OPERATOR_LENGTH_MAX:
        raise SymphonyError(f"--operator must name who asks (1 to {OPERATOR_LENGTH_MAX} characters)",
                            exit_code=EXIT_USAGE)
    return name


def run(args: argparse.Namespace) -> int:
    _, url = common.settings_and_dsn(args)
    if args.action == "list":
        return common.with_connection(url, lambda conn: _list(conn, args.json))
    if args.action == "show":
        return common.with_connection(url, lambda conn: _show(conn, args.participant_id, args.json))
    action = ACTIONS[args.action]
    reason = args.reason.strip()
    if not 1 <= len(reason) <= REASON_LENGTH_MAX:
        raise SymphonyError(f"--reason must say why (1 to {REASON_LENGTH_MAX} characters)", exit_code=EXIT_USAGE)
    operator = operator_name(args.operator)
    return common.with_connection(url, lambda conn: _change(conn, args.participant_id, action, operator, reason))


def _plain(row: asyncpg.Record) -> dict[str, Any]:
    return {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in row.items()}


async def _list(conn: asyncpg.Connection, as_json: bool) -> int:
    rows = [_plain(r) for r in await conn.fetch(QUERIES["participant_list"], timeout=TIMEOUT_SECONDS)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for r in rows:
        last = (f"{r['last_action']} by {r['last_operator']} at {r['last_action_at']}"
                if r["last_action"] else "no administrative change")
        print(f"{r['participant_id']:<24} {r['status']:<10} pv {r['policy_version']:<5} {last}")
    print(f"{len(rows)} participant(s)", file=sys.stderr)
    return EXIT_OK


async def _participant(conn: asyncpg.Connection, participant_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(QUERIES["participant_get"], participant_id, timeout=TIMEOUT_SECONDS)
    if row is None:
        raise SymphonyError(f"no participant {participant_id!r}", exit_code=EXIT_USAGE)
    return row


async def _show(conn: asyncpg.Connection, participant_id: str, as_json: bool) -> int:
    participant = _plain(await _participant(conn, participant_id))
    events = [_plain(r) for r in await conn.fetch(QUERIES["participant_events"], participant_id,
                                                  HISTORY_SHOWN_MAX, timeout=TIMEOUT_SECONDS)]
    if as_json:
        print(json.dumps({"participant": participant, "events": events}, indent=2))
        return EXIT_OK
    for key, value in participant.items():
        print(f"{key:<24} {value}")
    print("\nadministrative history (newest first):")
    for e in events:
        print(f"  #{e['event_id']} {e['occurred_at']} {e['action']:<13} by {e['operator']} "
              f"(role {e['database_role']}): {e['old_status']}/pv{e['old_policy_version']} -> "
              f"{e['new_status']}/pv{e['new_policy_version']}: {e['reason']}")
    if not events:
        print("  none")
    return EXIT_OK


async def _change(conn: asyncpg.Connection, participant_id: str, action: str, operator: str, reason: str) -> int:
    row = await conn.fetchrow(QUERIES["participant_change"], participant_id, action, operator, reason,
                              timeout=TIMEOUT_SECONDS)
    if row is None:
        current = await _participant(conn, participant_id)  # raises for an unknown participant
        print(f"participant {participant_id} is already {current['status']}: nothing changed, nothing recorded",
              file=sys.stderr)
        return EXIT_OK
    print(f"participant {participant_id}: {row['old_status']} pv {row['old_policy_version']} -> "
          f"{row['new_status']} pv {row['new_policy_version']} (event {row['event_id']}, by {operator}, "
          f"at {row['occurred_at'].isoformat()})")
    return EXIT_OK
