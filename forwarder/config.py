"""Settings of `symphony forwarder` (TOML file + SYMPHONY_FORWARDER_<KEY>).

Every key is documented, with its default, in `config.example.toml` beside
this file; a test checks that the two agree exactly.
"""

from __future__ import annotations

from pathlib import Path

from symphony import config
from symphony.db import dsn

DAEMON = "forwarder"


class ForwarderConfig(config.DaemonConfig, kw_only=True, forbid_unknown_fields=True):
    """See config.example.toml for the meaning of every key."""

    node_id: str = "node-local"
    journal_dir: str = ""
    admin_host: str = "127.0.0.1"
    admin_port: int = 9181
    journal_retention_seconds: float = 600.0
    batch_rows_max: int = 5000
    batch_wait_ms: int = 100
    poll_interval_ms: int = 20
    discovery_interval_seconds: float = 2.0
    streams_max: int = 1024
    database_connections_max: int = 4
    statement_timeout_seconds: float = 30.0
    startup_database_wait_seconds: float = 30.0
    retry_delay_ms_initial: int = 100
    retry_delay_ms_max: int = 10_000
    partition_interval_seconds: float = 3600.0
    partition_days_ahead: int = 7
    shutdown_timeout_seconds: float = 20.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 < len(self.node_id) <= 63 and self.node_id.isascii()
                and all(c.isalnum() or c in "._-" for c in self.node_id)):
            raise ValueError("node_id must be 1-63 ASCII letters, digits, '.', '_' or '-'")
        if not 0 <= self.admin_port <= 65535:
            raise ValueError("admin_port must be in [0, 65535]")
        if not 1 <= self.batch_rows_max <= 100_000:
            raise ValueError("batch_rows_max must be in [1, 100000]")
        if not 0 <= self.batch_wait_ms <= 60_000:
            raise ValueError("batch_wait_ms must be in [0, 60000]")
        if not 1 <= self.poll_interval_ms <= 10_000:
            raise ValueError("poll_interval_ms must be in [1, 10000]")
        if not 1 <= self.streams_max <= 1024:
            raise ValueError("streams_max must be in [1, 1024] (stream ids are 0-1023)")
        if not 1 <= self.database_connections_max <= 64:
            raise ValueError("database_connections_max must be in [1, 64]")
        if not 1 <= self.retry_delay_ms_initial <= self.retry_delay_ms_max <= 600_000:
            raise ValueError("need 1 <= retry_delay_ms_initial <= retry_delay_ms_max <= 600000")
        if not 0 <= self.journal_retention_seconds <= 30 * 86400:
            raise ValueError("journal_retention_seconds must be in [0, 2592000]")
        if not 0 <= self.partition_days_ahead <= 365:
            raise ValueError("partition_days_ahead must be in [0, 365]")
        for name in ("discovery_interval_seconds", "statement_timeout_seconds",
                     "startup_database_wait_seconds", "partition_interval_seconds",
                     "shutdown_timeout_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")

    # Empty settings fall back to the data dir of `symphony up`.

    def journal_root(self) -> Path:
        if self.journal_dir:
            return Path(self.journal_dir)
        return dsn.data_dir_from(self.data_dir or None).resolve() / "journal"

    def node_journal_dir(self) -> Path:
        """Where this node's streams live: one directory per stream id."""
        return self.journal_root() / self.node_id


def load(path: str | None) -> ForwarderConfig:
    return config.load(ForwarderConfig, DAEMON, path)
