"""`symphony service --config FILE`: the reference payments API behind the sidecar."""

from __future__ import annotations

import argparse
from pathlib import Path

from payments_service.config import ServiceConfig
from symphony import config, lifecycle
from symphony.arguments import add_config_argument, add_database_arguments
from symphony.db import dsn
from symphony.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, "service")
    add_database_arguments(parser)
    parser.add_argument("--enable-test-faults", action="store_true",
                        help="tests only: honour test_fault_file (the chaos suite's blackhole); never in production")


def run(args: argparse.Namespace) -> int:
    settings = config.load(ServiceConfig, "service", args.config)
    if settings.test_fault_file and not args.enable_test_faults:
        raise ConfigError("test_fault_file is set but the service was not started with --enable-test-faults "
                          "(a test-only switch; remove test_fault_file in production)")
    from payments_service.server import load_verifier, main

    data_dir = dsn.data_dir_from(args.data_dir or settings.data_dir or None)
    verifier = load_verifier(settings, data_dir)
    url = dsn.resolve(flag_url=args.database_url, flag_data_dir=args.data_dir or settings.data_dir or None,
                      config_url=settings.database_url)
    lifecycle.configure_logging("service", settings.log_level)
    faults = None
    if settings.test_fault_file and args.enable_test_faults:
        from payments_service.faults import FaultSwitch

        faults = FaultSwitch(Path(settings.test_fault_file))
    return lifecycle.run(lambda: main(settings, url, verifier, faults))
