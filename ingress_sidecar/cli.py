"""`symphony sidecar`: the attest-before-forward ingress sidecar."""

from __future__ import annotations

import argparse

from symphony.arguments import add_config_argument, add_database_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    add_config_argument(parser, "sidecar")


def run(args: argparse.Namespace) -> int:
    from ingress_sidecar.config import load
    from ingress_sidecar.supervisor import Supervisor
    from symphony import lifecycle
    from symphony.db import dsn

    settings = load(args.config)
    lifecycle.configure_logging("sidecar", settings.log_level)
    import msgspec

    data_dir = dsn.data_dir_from(args.data_dir or settings.data_dir or None).resolve()
    settings = msgspec.structs.replace(settings, data_dir=str(data_dir))
    database_url = dsn.resolve(flag_url=args.database_url, flag_data_dir=str(data_dir),
                               config_url=settings.database_url or None)
    supervisor = Supervisor(settings, config_path=args.config, database_url=database_url, data_dir=data_dir)
    return lifecycle.run(supervisor.run)
