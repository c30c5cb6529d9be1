"""Settings of `symphony witness` (file given with --config, env SYMPHONY_WITNESS_<KEY>)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from symphony import config
from symphony.errors import ConfigError
from symphony.tlog import note
from witness.protocol import TrustedLog


class WitnessConfig(config.DaemonConfig, kw_only=True, forbid_unknown_fields=True):
    """The witness's identity, store, trusted logs and limits.

    The witness never touches PostgreSQL: `database_url` is accepted (every
    daemon shares it) and ignored.

    name: the witness's key name in its cosignature lines, a schema-less URL.
    key_file: its Ed25519 private key (PEM, PKCS#8; keep it mode 0600, owned
        by the witness's own user). `symphony witness keygen` makes one.
    state_dir: where the latest cosigned checkpoint per origin is kept.
    trusted_logs: lines `<origin prefix> <vkey>`: the node key (a C2SP verifier
        key, type 0x01) that may sign checkpoints of every origin under
        `<origin prefix>/`.
    trusted_logs_file: a file of such lines as well (blank lines and `#` comments
        ignored), read at start.
    listen_host, listen_port: the tlog-witness HTTP API.
    admin_host, admin_port: /healthz, /readyz, /metrics.
    request_body_bytes_max: larger add-checkpoint bodies get 413.
    request_timeout_seconds: a client that has not sent its whole request by
        then is disconnected.
    """

    name: str = "witness.symphony.example/w1"
    key_file: str = ""
    state_dir: str = ""
    trusted_logs: list[str] = msgspec.field(default_factory=list)
    trusted_logs_file: str = ""
    listen_host: str = "127.0.0.1"
    listen_port: int = 8095
    admin_host: str = "127.0.0.1"
    admin_port: int = 9095
    request_body_bytes_max: int = 65536
    request_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.name or any(c.isspace() or c == "+" for c in self.name):
            raise ValueError("name must be non-empty without spaces or '+'")
        for key in ("listen_port", "admin_port"):
            if not 0 <= getattr(self, key) <= 65535:
                raise ValueError(f"{key} must be in 0..65535")
        if not 1024 <= self.request_body_bytes_max <= 1 << 20:
            raise ValueError("request_body_bytes_max must be in [1024, 1048576]")
        if not 0 < self.request_timeout_seconds <= 300:
            raise ValueError("request_timeout_seconds must be in (0, 300]")


def parse_trusted_log(line: str) -> TrustedLog:
    parts = line.split()
    if len(parts) != 2:
        raise ConfigError(f"trusted log {line!r}: expected `<origin prefix> <vkey>`")
    prefix, vkey = parts
    try:
        key = note.Verifier.parse(vkey)
    except note.NoteError as exc:
        raise ConfigError(f"trusted log {prefix}: {exc}") from None
    if key.signature_type != note.ED25519:
        raise ConfigError(f"trusted log {prefix}: a log key has signature type 0x01")
    return TrustedLog(prefix.rstrip("/"), key)


def trusted_logs(settings: WitnessConfig) -> list[TrustedLog]:
    lines = list(settings.trusted_logs)
    if settings.trusted_logs_file:
        path = Path(settings.trusted_logs_file)
        try:
            lines += path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"trusted_logs_file {path}: {exc.strerror}") from None
    return [parse_trusted_log(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]
