"""`symphony relayer --config FILE`: drive the payment outbox to the rails."""

from __future__ import annotations

import argparse

import msgspec

from relayer.config import RelayerConfig
from symphony import config, lifecycle
from symphony.arguments import add_config_argument, add_database_arguments
from symphony.db import dsn


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, "relayer")
    add_database_arguments(parser)
    parser.add_argument("--poll-only", action="store_true",
                        help="do not LISTEN (behind a transaction-mode pooler); same as listen = false")


def run(args: argparse.Namespace) -> int:
    settings = config.load(RelayerConfig, "relayer", args.config)
    if args.poll_only:
        settings = msgspec.structs.replace(settings, listen=False)
    url = dsn.resolve(flag_url=args.database_url, flag_data_dir=args.data_dir or settings.data_dir or None,
                      config_url=settings.database_url)
    lifecycle.configure_logging("relayer", settings.log_level)
    from relayer.server import main

    return lifecycle.run(lambda: main(settings, url))
