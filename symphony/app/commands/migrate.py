"""`symphony migrate`: apply pending database migrations, or check that none is pending.

`--check` changes nothing: it exits 0 when the database has every migration of
this release and 1 (listing them) when some are pending. With
`--wait-seconds N` it waits up to N seconds for another process (the
Kubernetes migration Job, an operator) to apply them: the daemons' init
containers use it so that no daemon starts on an older schema. The database
being unreachable counts as "not yet" until the wait is over (then exit 3).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from symphony.arguments import add_database_arguments
from symphony.db import connect, dsn, migrate
from symphony.errors import EXIT_FINDINGS, EXIT_OK, StartupError

POLL_SECONDS = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    parser.add_argument("--check", action="store_true",
                        help="apply nothing: exit 0 if no migration is pending, 1 if some are")
    parser.add_argument("--wait-seconds", type=float, default=0.0, metavar="N",
                        help="with --check: wait up to N seconds for the pending migrations to be applied")


def run(args: argparse.Namespace) -> int:
    url = dsn.resolve(flag_url=args.database_url, flag_data_dir=args.data_dir)
    if args.check:
        return asyncio.run(_check(url, max(0.0, args.wait_seconds)))
    applied = asyncio.run(migrate.apply_url(url))
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("database is up to date")
    return 0


async def _pending(url: str) -> list[str]:
    conn = await connect(url)
    try:
        return await migrate.pending(conn)
    finally:
        await conn.close()


async def _check(url: str, wait_seconds: float) -> int:
    deadline = time.monotonic() + wait_seconds
    waiting_said = False
    while True:
        try:
            missing = await _pending(url)
        except StartupError:
            if time.monotonic() >= deadline:
                raise
            missing = None
        if missing == []:
            print("database is up to date")
            return EXIT_OK
        if time.monotonic() >= deadline:
            assert missing is not None
            print(f"{len(missing)} migration(s) pending: {', '.join(missing)}", file=sys.stderr)
            return EXIT_FINDINGS
        if not waiting_said:
            print(f"waiting up to {wait_seconds:g} s for the database schema "
                  f"({'unreachable' if missing is None else f'{len(missing)} migration(s) pending'})",
                  file=sys.stderr)
            waiting_said = True
        await asyncio.sleep(POLL_SECONDS)
