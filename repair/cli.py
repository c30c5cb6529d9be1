"""`symphony repair`: run the reconciliation daemon, or work with incidents.

    symphony repair [--config FILE]                       run the daemon
    symphony repair list [--all] [--kind K] [--json]      open (or all) incidents
    symphony repair show ID                               one incident, as JSON
    symphony repair resolve ID --outcome O --note TEXT    close it, with a note
    symphony repair report ID [--format md|json]          the incident report
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

import asyncpg

from repair import common, report, store
from repair.detectors import KINDS
from symphony import lifecycle
from symphony.errors import EXIT_OK, SymphonyError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_common(parser)
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    listing = sub.add_parser("list", help="list incidents (open ones unless --all)")
    listing.add_argument("--all", action="store_true", help="include resolved incidents")
    listing.add_argument("--kind", choices=KINDS + ("STREAM_REPLACED", "STREAM_REWOUND"))
    listing.add_argument("--limit", type=int, default=200)
    listing.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="one incident with its evidence, as JSON")
    show.add_argument("incident_id", metavar="ID")
    resolve = sub.add_parser("resolve", help="close an open incident with an outcome and a note")
    resolve.add_argument("incident_id", metavar="ID")
    resolve.add_argument("--outcome", required=True, choices=store.RESOLUTIONS)
    resolve.add_argument("--note", required=True, help="what was done and why (kept with the incident)")
    resolve.add_argument("--by", default="", help="operator name (default: the login name)")
    rep = sub.add_parser("report", help="render the incident report")
    rep.add_argument("incident_id", metavar="ID")
    rep.add_argument("--format", choices=("md", "json"), default="md")
    for child in (listing, show, resolve, rep):
        common.add_common(child, suppress=True)


def run(args: argparse.Namespace) -> int:
    settings, url = common.settings_and_dsn(args)
    if args.action is None:
        return _run_daemon(settings, url)
    if args.action == "list":
        return common.with_connection(url, lambda conn: _list(conn, args))
    incident_id = store.parse_incident_id(args.incident_id)
    if args.action == "show":
        data = common.with_connection(url, lambda conn: report.build(conn, incident_id))
        print(report.to_json(data))
        return EXIT_OK
    if args.action == "report":
        data = common.with_connection(url, lambda conn: report.build(conn, incident_id))
        print(report.to_markdown(data) if args.format == "md" else report.to_json(data))
        return EXIT_OK
    assert args.action == "resolve"
    by = args.by or getpass.getuser()
    return common.with_connection(url, lambda conn: _resolve(conn, incident_id, args.outcome, by, args.note))


def _run_daemon(settings: Any, url: str) -> int:
    from repair import worker

    lifecycle.configure_logging("repair", settings.log_level)

    async def main() -> int:
        shutdown = lifecycle.Shutdown()
        shutdown.install()
        return await worker.serve(settings, url, shutdown)

    return lifecycle.run(main)


async def _list(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    rows = await conn.fetch(store.QUERIES["list_incidents"], not args.all, args.kind, args.limit,
                            timeout=store.TIMEOUT_SECONDS)
    items = [{key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in row.items()}
             for row in rows]
    if args.json:
        print(json.dumps(items, indent=2))
    else:
        for item in items:
            state = item["resolution"] or "OPEN"
            print(f"{item['incident_id']}  {item['kind']:<15} {item['severity']:<8} {state:<13} "
                  f"{item['detected_at']}  {item['subject']}")
        print(f"{len(items)} incident(s)", file=sys.stderr)
    return EXIT_OK


async def _resolve(conn: asyncpg.Connection, incident_id: Any, outcome: str, by: str, note: str) -> int:
    if not note.strip():
        raise SymphonyError("--note must say what was done", exit_code=2)
    async with conn.transaction():
        done = await conn.fetchval(store.QUERIES["resolve_incident"], incident_id, outcome, by, note,
                                   timeout=store.TIMEOUT_SECONDS)
        if done is None:
            exists = await conn.fetchval(store.QUERIES["get_incident"], incident_id, timeout=store.TIMEOUT_SECONDS)
            raise SymphonyError(f"incident {incident_id} is already resolved" if exists
                                else f"no incident {incident_id}", exit_code=2)
        await conn.execute(store.QUERIES["record_action"], incident_id, f"operator_{outcome.lower()}",
                           store.to_json({"note": note}), f"operator:{by}", timeout=store.TIMEOUT_SECONDS)
    print(f"incident {incident_id} resolved as {outcome}")
    return EXIT_OK
