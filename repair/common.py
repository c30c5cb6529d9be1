"""What the repair area's commands share: argument groups and the DSN."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from repair import config as repair_config
from repair.config import RepairConfig
from symphony.arguments import add_config_argument, add_database_arguments
from symphony.db import connect, dsn

T = TypeVar("T")


def add_common(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """--database-url, --data-dir and --config; `suppress` keeps a subcommand's
    unset flags from overwriting the ones given before the subcommand."""
    add_database_arguments(parser)
    add_config_argument(parser, repair_config.DAEMON)
    if suppress:
        for action in parser._actions:
            if action.dest in ("database_url", "data_dir", "config"):
                action.default = argparse.SUPPRESS


def settings_and_dsn(args: argparse.Namespace) -> tuple[RepairConfig, str]:
    settings = repair_config.load(getattr(args, "config", None))
    url = dsn.resolve(flag_url=getattr(args, "database_url", None), flag_data_dir=getattr(args, "data_dir", None),
                      config_url=settings.database_url or None)
    return settings, url


def with_connection(url: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def main() -> T:
        conn = await connect(url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())
