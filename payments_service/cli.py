"""`symphony service --config FILE`: the reference payments API behind the sidecar."""

from __future__ import annotations

import argparse

from payments_service.config import ServiceConfig
from symphony import config, lifecycle
from symphony.cli import add_config_argument, add_database_arguments
from symphony.db import dsn


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, "service")
    add_database_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = config.load(ServiceConfig, "service", args.config)
    from payments_service.server import load_verifier, main

    data_dir = dsn.data_dir_from(args.data_dir or settings.data_dir or None)
    verifier = load_verifier(settings, data_dir)
    url = dsn.resolve(flag_url=args.database_url, flag_data_dir=args.data_dir or settings.data_dir or None,
                      config_url=settings.database_url)
    lifecycle.configure_logging("service", settings.log_level)
    return lifecycle.run(lambda: main(settings, url, verifier))
