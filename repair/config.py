"""Settings of `symphony repair`, `audit`, `dashboard` and `evidence`.

One struct for the whole area, so one file (`config.example.toml`, beside this
module) documents every key and one environment prefix overrides them:
`SYMPHONY_REPAIR_<KEY>`. A test checks that the example and the struct agree.
"""

from __future__ import annotations

import msgspec

from symphony import config

DAEMON = "repair"


class RepairConfig(config.DaemonConfig, kw_only=True, forbid_unknown_fields=True):
    """See config.example.toml for the meaning of every key."""

    instance_id: str = ""
    cycle_seconds: float = 5.0
    leader_retry_seconds: float = 2.0
    leader_lock_key: int = 0x73796D7265706169  # "symrepai"
    ghost_grace_seconds: float = 120.0
    outcome_grace_seconds: float = 120.0
    zombie_grace_seconds: float = 30.0
    zombie_requeue: bool = True
    stuck_key_seconds: float = 60.0
    stuck_key_release: bool = True
    heartbeat_interval_seconds: float = 10.0
    silent_heartbeats: int = 3
    scan_window_hours: float = 168.0
    findings_max: int = 10_000
    chain_batch_rows: int = 5_000
    chain_full_verify_seconds: float = 3600.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    shutdown_timeout_seconds: float = 10.0
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8470
    dashboard_token_file: str = ""
    dashboard_tls_cert: str = ""
    dashboard_tls_key: str = ""
    dashboard_client_ca: str = ""
    dashboard_client_uri_prefixes: list[str] = msgspec.field(default_factory=list)
    dashboard_chart_minutes: int = 60
    evidence_signing_key: str = ""
    evidence_environment: str = "sandbox"
    evidence_phase: str = "7R"
    evidence_issuer: str = "symphony"
    evidence_cert_ttl_hours: float = 4.0
    evidence_policy_propagation_seconds: float = 60.0
    reconcile_statement_dir: str = ""
    reconcile_rails: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "cycle_seconds", 0.05, 3600)
        _check_positive(self, "leader_retry_seconds", 0.05, 600)
        _check_positive(self, "ghost_grace_seconds", 0, 86_400)
        _check_positive(self, "outcome_grace_seconds", 0, 86_400)
        _check_positive(self, "zombie_grace_seconds", 0, 86_400)
        _check_positive(self, "stuck_key_seconds", 0, 86_400 * 7)
        _check_positive(self, "heartbeat_interval_seconds", 0.01, 3600)
        _check_positive(self, "scan_window_hours", 0.01, 24 * 400)
        _check_positive(self, "chain_full_verify_seconds", 1, 86_400 * 7)
        _check_positive(self, "shutdown_timeout_seconds", 0.1, 600)
        if not 1 <= self.silent_heartbeats <= 1000:
            raise ValueError("silent_heartbeats must be in [1, 1000]")
        if not 1 <= self.findings_max <= 1_000_000:
            raise ValueError("findings_max must be in [1, 1000000]")
        if not 1 <= self.chain_batch_rows <= 1_000_000:
            raise ValueError("chain_batch_rows must be in [1, 1000000]")
        if not 0 <= self.dashboard_port <= 65535 or not 0 <= self.metrics_port <= 65535:
            raise ValueError("ports must be in [0, 65535]")
        for rail, kind in self.reconcile_rails.items():
            if kind not in ("mtn_momo", "airtel_money", "iso20022"):
                raise ValueError(f"reconcile_rails.{rail} must be mtn_momo, airtel_money or iso20022")
        if not 5 <= self.dashboard_chart_minutes <= 7 * 24 * 60:
            raise ValueError("dashboard_chart_minutes must be in [5, 10080]")
        if self.evidence_environment not in ("sandbox", "staging", "production"):
            raise ValueError("evidence_environment must be sandbox, staging or production")
        if bool(self.dashboard_tls_cert) != bool(self.dashboard_tls_key):
            raise ValueError("dashboard_tls_cert and dashboard_tls_key go together")
        if self.dashboard_client_ca and not self.dashboard_tls_cert:
            raise ValueError("dashboard_client_ca needs dashboard_tls_cert and dashboard_tls_key")

    @property
    def silent_after_seconds(self) -> float:
        """A stream with no record for this long is NODE_SILENT (k x heartbeat)."""
        return self.heartbeat_interval_seconds * self.silent_heartbeats


def _check_positive(settings: RepairConfig, name: str, low: float, high: float) -> None:
    value = getattr(settings, name)
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}]")


def load(path: str | None) -> RepairConfig:
    return config.load(RepairConfig, DAEMON, path)
