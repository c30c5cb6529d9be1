"""Settings of `symphony sidecar` (TOML file + SYMPHONY_SIDECAR_<KEY>).

Every key is documented, with its default, in `config.example.toml` beside
this file; a test checks that the two agree exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from symphony import config
from symphony.db import dsn
from symphony.tlog import origins

DAEMON = "sidecar"
DURABILITY_LEVELS = ("none", "batch", "always")
HTTP_METHODS = ("*", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class Route(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One entry of the route table.

    method: the HTTP method this route takes, or "*" for any.
    prefix: path prefix, matched at a segment boundary ("/v1/payments" matches
        "/v1/payments" and "/v1/payments/42", not "/v1/paymentsX").
    template: what the attestation records as the route (never the raw path,
        which may carry identifiers); empty means the prefix.
    upstream: base URL of the service; empty means the top-level upstream_url.
    executes: whether the route executes (moves money): these are the ones
        that fail closed on stale policy and count in the attestation gap.
    """

    method: str = "*"
    prefix: str = "/"
    template: str = ""
    upstream: str = ""
    executes: bool = False

    def __post_init__(self) -> None:
        if self.method not in HTTP_METHODS:
            raise ValueError(f"route method must be one of {', '.join(HTTP_METHODS)}")
        if not self.prefix.startswith("/"):
            raise ValueError("route prefix must start with '/'")
        if self.upstream and not self.upstream.startswith(("http://", "https://")):
            raise ValueError("route upstream must be an http:// or https:// URL")


def _default_routes() -> list[Route]:
    return [
        Route(method="POST", prefix="/v1/payments", template="/v1/payments", executes=True),
        Route(method="GET", prefix="/v1/payments/", template="/v1/payments/{id}", executes=False),
    ]


class SidecarConfig(config.DaemonConfig, kw_only=True, forbid_unknown_fields=True):
    """See config.example.toml for the meaning of every key."""

    node_id: str = "node-local"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    workers: int = 0
    admin_host: str = "127.0.0.1"
    admin_port: int = 9180
    journal_dir: str = ""
    durability: str = "batch"
    journal_segment_bytes: int = 0
    journal_bytes_max: int = 0
    journal_flush_interval_us: int = 1000
    mirror_enabled: bool = True
    mirror_dir: str = ""
    mirror_acknowledgements_file: str = ""
    mirror_keep_acknowledged_hours: float = 24.0
    mirror_file_bytes_max: int = 64 * 1024 * 1024
    mirror_queue_records_max: int = 65_536
    upstream_url: str = "http://127.0.0.1:8000"
    routes: list[Route] = msgspec.field(default_factory=_default_routes)
    body_bytes_max: int = 1_048_576
    header_bytes_max: int = 8190
    header_read_timeout_seconds: float = 10.0
    body_read_timeout_seconds: float = 30.0
    worker_connections_max: int = 4096
    source_connections_max: int = 256
    requests_in_flight_max: int = 1024
    upstream_queue_max: int = 1024
    upstream_timeout_seconds: float = 10.0
    upstream_connect_timeout_seconds: float = 2.0
    upstream_connections_max: int = 256
    forward_authorization: bool = False
    upstream_signing_key_file: str = ""
    shutdown_timeout_seconds: float = 30.0
    heartbeat_interval_seconds: float = 1.0
    log_key_file: str = ""
    log_origin_prefix: str = "symphony.example/local"
    checkpoint_interval_seconds: float = 1.0
    checkpoint_publish_dir: str = ""
    jwks_file: str = ""
    jwks_reload_seconds: float = 2.0
    jwt_issuer: str = "symphony-demo"
    jwt_audience: str = "symphony-ingress"
    jwt_leeway_seconds: int = 30
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    spiffe_trust_domain: str = ""
    client_cert_lifetime_seconds_max: int = 14_400
    policy_poll_seconds: float = 5.0
    policy_staleness_seconds_max: float = 60.0
    rate_limit_unauthenticated_per_second: float = 10.0
    rate_limit_unauthenticated_burst: int = 20
    rate_limit_sources_max: int = 10_000
    clock_offset_ms_max: int = 500
    refusal_log_interval_seconds: float = 10.0
    worker_id_base: int = -1
    hlc_peer_public_key_files: list[str] = msgspec.field(default_factory=list)
    test_clock_file: str = ""
    test_clock_allowed: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_node_id(self.node_id)
        if self.durability not in DURABILITY_LEVELS:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY_LEVELS)}")
        config.check_range(self, "workers", 0, 64, note=" (0 = one per core)")
        for name in ("listen_port", "admin_port"):
            config.check_range(self, name, 0, 65535)
        if not self.routes:
            raise ValueError("routes must name at least one route")
        if not self.upstream_url.startswith(("http://", "https://")):
            raise ValueError("upstream_url must be an http:// or https:// URL")
        _check_positive(self, "body_bytes_max", "header_bytes_max", "header_read_timeout_seconds",
                        "body_read_timeout_seconds", "worker_connections_max", "source_connections_max",
                        "requests_in_flight_max", "upstream_queue_max", "upstream_timeout_seconds",
                        "upstream_connect_timeout_seconds", "upstream_connections_max",
                        "shutdown_timeout_seconds", "heartbeat_interval_seconds", "jwks_reload_seconds",
                        "client_cert_lifetime_seconds_max", "policy_poll_seconds",
                        "policy_staleness_seconds_max", "rate_limit_unauthenticated_per_second",
                        "rate_limit_unauthenticated_burst", "rate_limit_sources_max", "clock_offset_ms_max",
                        "refusal_log_interval_seconds")
        config.check_range(self, "checkpoint_interval_seconds", 0.05, 3600)
        try:
            origins.log_name(self.log_origin_prefix, self.node_id)
        except ValueError as exc:
            raise ValueError(f"log_origin_prefix: {exc}") from None
        config.check_range(self, "header_read_timeout_seconds", high=300)
        config.check_range(self, "body_read_timeout_seconds", high=3600)
        config.check_range(self, "jwt_leeway_seconds", 0, 300)
        if not -1 <= self.worker_id_base <= 1023:
            raise ValueError("worker_id_base must be -1 (derive) or in [0, 1023]")
        if self.journal_segment_bytes < 0 or self.journal_segment_bytes % 4096:
            raise ValueError("journal_segment_bytes must be 0 (the journal's default) or a multiple of 4096")
        config.check_range(self, "journal_flush_interval_us", 0, 100_000)
        config.check_range(self, "mirror_file_bytes_max", 4096)
        config.check_range(self, "mirror_queue_records_max", 1, 10_000_000)
        config.check_range(self, "mirror_keep_acknowledged_hours", 0, 24 * 400)
        if self.mirror_enabled and self.node_id == "mirror" and not self.mirror_dir:
            raise ValueError("node_id 'mirror' is the mirror's directory under journal_dir; choose another node_id")
        config.check_range(self, "journal_bytes_max", 0, note=" (0 = no cap)")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file are given together")
        if self.test_clock_file and not self.test_clock_allowed:
            raise ValueError("test_clock_file is for tests only and is refused unless test_clock_allowed = true")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")

    # -- derived paths: empty settings fall back to the data dir of `symphony up`.

    def data_path(self) -> Path:
        return dsn.data_dir_from(self.data_dir or None).resolve()

    def journal_root(self) -> Path:
        return Path(self.journal_dir) if self.journal_dir else self.data_path() / "journal"

    def mirror_path(self) -> Path:
        """Where the mirror files go: mirror_dir, else <journal_dir>/mirror."""
        return Path(self.mirror_dir) if self.mirror_dir else self.journal_root() / "mirror"

    def mirror_acknowledgements_path(self) -> Path | None:
        return Path(self.mirror_acknowledgements_file) if self.mirror_acknowledgements_file else None

    def jwks_path(self) -> Path:
        return Path(self.jwks_file) if self.jwks_file else self.data_path() / "keys" / "jwks.json"

    def signing_key_path(self) -> Path:
        if self.upstream_signing_key_file:
            return Path(self.upstream_signing_key_file)
        return self.data_path() / "keys" / "sidecar-upstream.pem"

    def worker_count(self) -> int:
        return self.workers or max(1, len(os.sched_getaffinity(0)))


def _check_node_id(node_id: str) -> None:
    if not (0 < len(node_id) <= 63 and all(c.isalnum() or c in "._-" for c in node_id) and node_id.isascii()):
        raise ValueError("node_id must be 1-63 ASCII letters, digits, '.', '_' or '-'")


def _check_positive(settings: SidecarConfig, *names: str) -> None:
    for name in names:
        config.check_range(settings, name, 0, low_open=True)


def load(path: str | None) -> SidecarConfig:
    return config.load(SidecarConfig, DAEMON, path)
