"""`symphony outbox redrive ID --note TEXT`: re-drive a dead letter deliberately.

The row becomes RECOVERING with a fresh budget; the transition is recorded in
outbox_events with the operator as actor and the note as detail, and the open
DEAD_LETTER incident is resolved as REDRIVEN. The outbox id, and so the rail
key, is unchanged: a redrive cannot strike the rail twice.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import uuid

from relayer import store
from symphony.arguments import add_database_arguments
from symphony.db import connect, dsn
from symphony.errors import EXIT_USAGE, SymphonyError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    redrive = sub.add_parser("redrive", help="re-drive a FAILED (dead-letter) outbox row")
    redrive.add_argument("outbox_id", metavar="ID", help="payment_outbox.id (uuid)")
    redrive.add_argument("--note", required=True, help="why (recorded in outbox_events and the incident)")
    redrive.add_argument("--actor", help="who (default: operator:<login name>)")
    redrive.add_argument("--attempts", type=int, default=5, help="attempts to allow on top of those used")
    add_database_arguments(redrive)


def run(args: argparse.Namespace) -> int:
    try:
        outbox_id = uuid.UUID(args.outbox_id)
    except ValueError:
        raise SymphonyError(f"{args.outbox_id!r} is not an outbox id (uuid)", exit_code=EXIT_USAGE) from None
    if not args.note.strip():
        raise SymphonyError("--note must say why", exit_code=EXIT_USAGE)
    if not 1 <= args.attempts <= 100:
        raise SymphonyError("--attempts must be in 1..100", exit_code=EXIT_USAGE)
    actor = args.actor or f"operator:{getpass.getuser()}"
    url = dsn.resolve(flag_url=args.database_url, flag_data_dir=args.data_dir)
    return asyncio.run(_redrive(url, outbox_id, actor, args.note.strip(), args.attempts))


async def _redrive(url: str, outbox_id: uuid.UUID, actor: str, note: str, attempts: int) -> int:
    conn = await connect(url)
    try:
        row = await store.redrive(conn, outbox_id, actor=actor, note=note, extra_attempts=attempts)
        if row is None:
            current = await store.outbox_row(conn, outbox_id)
            if current is None:
                raise SymphonyError(f"no outbox row {outbox_id}", exit_code=EXIT_USAGE)
            raise SymphonyError(f"outbox {outbox_id} is {current['status']}, not FAILED: nothing to redrive",
                                exit_code=EXIT_USAGE)
    finally:
        await conn.close()
    print(f"outbox {outbox_id}: FAILED -> RECOVERING by {actor}; attempts used {row['attempt_count']}, "
          f"now allowed {row['max_attempts']}")
    return 0
