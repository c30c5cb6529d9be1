"""`symphony forwarder --config FILE`: ship this node's journal streams to PostgreSQL."""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

from forwarder import config
from symphony import lifecycle
from symphony.arguments import add_config_argument, add_database_arguments
from symphony.db import dsn

# Objects of the first GC generation before a collection (CPython's default is
# 700). While draining, the forwarder creates a Record and a row per record,
# and each lives for about one batch (thousands of allocations), so with the
# default every one was traversed by two or three collections before reference
# counting freed it: 19 % of the process's CPU (py-spy --native, drain
# benchmark). At 50,000 most die first. Memory held by unreachable cycles
# (rare here: asyncio, asyncpg) grows by at most that many objects.
GC_FIRST_GENERATION_THRESHOLD = 50_000


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
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_FIRST_GENERATION_THRESHOLD, second, third)

    from forwarder import server, source

    def open_stream(stream_id: int, path: Path) -> source.JournalSource:
        return source.JournalSource(path, buffer_records_max=2 * settings.batch_rows_max,
                                    poll_seconds=settings.poll_interval_ms / 1000,
                                    retention_seconds=settings.journal_retention_seconds,
                                    node_id=settings.node_id, stream_id=stream_id)

    return lifecycle.run(lambda: server.serve(settings, url, open_stream))


def _with_data_dir(settings: config.ForwarderConfig, data_dir: str) -> config.ForwarderConfig:
    import msgspec

    return msgspec.structs.replace(settings, data_dir=data_dir)
