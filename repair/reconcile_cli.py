"""`symphony reconcile --rail R --statement FILE`: match a rail's statement to the outbox.

Reads the statement (mtn_momo / airtel_money CSV, iso20022 camt.053; see
repair/reconcile.py), opens RAIL_UNMATCHED / RAIL_MISMATCH incidents for every
line without its outbox row, every second execution, every amount, currency or
account that differs, and every SUCCESS row the statement does not show. Prints
one summary line and one line per finding. Exit 0: clean; 1: findings; 2: usage.
The repair daemon runs the same on a schedule over `reconcile_statement_dir`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import asyncpg

from repair import common
from repair.reconcile import FORMATS, Report, StatementError, reconcile
from symphony.errors import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, SymphonyError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_common(parser)
    parser.add_argument("--rail", required=True, help="the rail's name (payment_outbox.rail)")
    parser.add_argument("--statement", required=True, metavar="FILE", help="the rail's statement file")
    parser.add_argument("--kind", choices=FORMATS,
                        help="the statement's format / adapter kind (default: the rail's name)")


def run(args: argparse.Namespace) -> int:
    kind = args.kind or args.rail
    if kind not in FORMATS:
        raise SymphonyError(f"rail {args.rail!r}: give --kind ({', '.join(FORMATS)})", exit_code=EXIT_USAGE)
    path = Path(args.statement)
    if not path.is_file():
        raise SymphonyError(f"no statement file at {path}", exit_code=EXIT_USAGE)
    _, url = common.settings_and_dsn(args)

    async def work(conn: asyncpg.Connection) -> Report:
        return await reconcile(conn, args.rail, kind, path)

    try:
        report = common.with_connection(url, work)
    except StatementError as exc:
        raise SymphonyError(f"{path}: {exc}", exit_code=EXIT_USAGE) from None
    rate = report.lines / report.seconds if report.seconds else 0.0
    print(f"{report.rail}: {report.lines} lines, {report.matched} matched, {report.unmatched} unmatched, "
          f"{report.mismatched} mismatched, {report.missing} missing from the statement "
          f"({report.seconds:.2f} s, {rate:,.0f} lines/s)")
    for incident in report.incidents:
        print(f"{incident['kind']} {incident['severity']} {incident['reason']}: {incident['subject']}")
    return EXIT_OK if report.clean else EXIT_FINDINGS
