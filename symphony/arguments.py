"""The command-line options every database-touching command shares.

Daemons' own `cli` modules and the application layer both use these, so they
live in the core: one spelling of `--database-url`, `--data-dir` and `--config`
everywhere, each naming its environment variable in `--help`.
"""

from __future__ import annotations

import argparse

from symphony.config import DATA_DIR_ENV, DATABASE_URL_ENV


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    """The two ways every database-touching command is told where PostgreSQL is."""
    group = parser.add_argument_group("database")
    group.add_argument(
        "--database-url", metavar="URL",
        help=f"PostgreSQL DSN (env {DATABASE_URL_ENV}); wins over --data-dir",
    )
    group.add_argument(
        "--data-dir", metavar="DIR",
        help=f"Symphony data dir whose embedded server `symphony up` runs (env {DATA_DIR_ENV}, default ./.symphony)",
    )


def add_config_argument(parser: argparse.ArgumentParser, daemon: str) -> None:
    parser.add_argument(
        "--config", metavar="FILE",
        help=f"TOML configuration file; every key can be overridden by SYMPHONY_{daemon.upper()}_<KEY> "
        "(see docs/configuration.md)",
    )
