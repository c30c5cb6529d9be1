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
        config.check_range(self, "admin_port", 0, 65535)
        config.check_range(self, "batch_rows_max", 1, 100_000)
        config.check_range(self, "batch_wait_ms", 0, 60_000)
        config.check_range(self, "poll_interval_ms", 1, 10_000)
        config.check_range(self, "streams_max", 1, 1024, note=" (stream ids are 0-1023)")
        config.check_range(self, "database_connections_max", 1, 64)
        if not 1 <= self.retry_delay_ms_initial <= self.retry_delay_ms_max <= 600_000:
            raise ValueError("need 1 <= retry_delay_ms_initial <= retry_delay_ms_max <= 600000")
        config.check_range(self, "journal_retention_seconds", 0, 30 * 86400)
        config.check_range(self, "partition_days_ahead", 0, 365)
        for name in ("discovery_interval_seconds", "statement_timeout_seconds",
                     "startup_database_wait_seconds", "partition_interval_seconds",
                     "shutdown_timeout_seconds"):
            config.check_range(self, name, 0, low_open=True)

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
