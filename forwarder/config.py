"""Settings of `symphony forwarder` (TOML file + SYMPHONY_FORWARDER_<KEY>).

Every key is documented, with its default, in `config.example.toml` beside
this file; a test checks that the two agree exactly.
"""

from __future__ import annotations

from pathlib import Path

from symphony import config
from symphony.db import dsn
from symphony.tlog import note, origins

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
    log_origin_prefix: str = "symphony.example/local"
    log_key: str = ""
    witnesses: list[str] = []
    witness_timeout_seconds: float = 5.0
    witness_poll_interval_ms: int = 200
    witness_retry_delay_ms_initial: int = 500
    witness_retry_delay_ms_max: int = 30_000
    retention_witnesses_required: int = -1

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
        try:
            origins.log_name(self.log_origin_prefix, self.node_id)
        except ValueError as exc:
            raise ValueError(f"log_origin_prefix: {exc}") from None
        if self.log_key:
            self.log_verifier()
        self.witness_verifiers()
        config.check_range(self, "witness_poll_interval_ms", 1, 60_000)
        if not -1 <= self.retention_witnesses_required <= len(self.witnesses):
            raise ValueError(f"retention_witnesses_required must be -1 (every configured witness) or "
                             f"0..{len(self.witnesses)} (the number of witnesses configured)")
        if not 1 <= self.witness_retry_delay_ms_initial <= self.witness_retry_delay_ms_max <= 3_600_000:
            raise ValueError("need 1 <= witness_retry_delay_ms_initial <= witness_retry_delay_ms_max <= 3600000")
        for name in ("witness_timeout_seconds", "discovery_interval_seconds", "statement_timeout_seconds",
                     "startup_database_wait_seconds", "partition_interval_seconds",
                     "shutdown_timeout_seconds"):
            config.check_range(self, name, 0, low_open=True)

    def log_verifier(self) -> note.Verifier | None:
        """The node's checkpoint key (log_key), None when not configured."""
        if not self.log_key:
            return None
        try:
            verifier = note.Verifier.parse(self.log_key)
        except note.NoteError as exc:
            raise ValueError(f"log_key: {exc}") from None
        if verifier.signature_type != note.ED25519:
            raise ValueError("log_key: not an Ed25519 (type 0x01) note key")
        return verifier

    def witness_verifiers(self) -> list[tuple[str, note.Verifier]]:
        """(URL, cosigning key) of each configured witness: `<url> <vkey>`."""
        out = []
        for entry in self.witnesses:
            url, _, vkey = entry.strip().partition(" ")
            if not url.startswith(("http://", "https://")) or not vkey.strip():
                raise ValueError(f"witnesses: {entry!r} is not `<http(s) URL> <vkey>`")
            try:
                verifier = note.Verifier.parse(vkey.strip())
            except note.NoteError as exc:
                raise ValueError(f"witnesses: {entry!r}: {exc}") from None
            if verifier.signature_type != note.COSIGNATURE_V1:
                raise ValueError(f"witnesses: {entry!r}: not a cosignature/v1 (type 0x04) key")
            out.append((url.rstrip("/"), verifier))
        if len({v.name for _, v in out}) != len(out):
            raise ValueError("witnesses: two entries name the same witness")
        return out

    def retention_witness_quorum(self) -> int:
        """How many of the configured witnesses must have cosigned a checkpoint
        before the segments it covers may be released (0: the node's own
        signed checkpoint is enough, which is weaker: docs/operations.md)."""
        required = self.retention_witnesses_required
        return len(self.witnesses) if required < 0 else required

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
