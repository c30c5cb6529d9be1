"""`symphony migrate`: apply pending migrations to the database."""

from __future__ import annotations

import argparse
import asyncio

from symphony.arguments import add_database_arguments
from symphony.db import connect, dsn, migrate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)


def run(args: argparse.Namespace) -> int:
    url = dsn.resolve(flag_url=args.database_url, flag_data_dir=args.data_dir)
    applied = asyncio.run(_migrate(url))
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("database is up to date")
    return 0


async def _migrate(url: str) -> list[str]:
    conn = await connect(url)
    try:
        return await migrate.apply(conn)
    finally:
        await conn.close()
