"""`symphony forwarder --config FILE`: ship this node's journal streams to PostgreSQL."""

from __future__ import annotations

import argparse
from pathlib import Path

from forwarder import config
from symphony import lifecycle
from symphony.cli import add_config_argument, add_database_arguments
from symphony.db import dsn


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    add_config_argument(parser, config.DAEMON)


def run(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    if args.data_dir:
        settings = _with_data_dir(settings, args.data_dir)
    url = dsn.resolve(flag_url=args.database_url, flag_data_dir=args.data_dir or settings.data_dir or None,
                      config_url=settings.database_url)
    lifecycle.configure_logging(config.DAEMON, settings.log_level)

    from forwarder import server, source

    def open_stream(stream_id: int, path: Path) -> source.JournalSource:
        return source.JournalSource(path, buffer_records_max=2 * settings.batch_rows_max,
                                    poll_seconds=settings.poll_interval_ms / 1000,
                                    retention_seconds=settings.journal_retention_seconds)

    return lifecycle.run(lambda: server.serve(settings, url, open_stream))


def _with_data_dir(settings: config.ForwarderConfig, data_dir: str) -> config.ForwarderConfig:
    import msgspec

    return msgspec.structs.replace(settings, data_dir=data_dir)
