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
    unattested_pending_seconds: float = 300.0
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
    oncall_metrics_seconds: float = 15.0
    shutdown_timeout_seconds: float = 10.0
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8470
    dashboard_token_file: str = ""
    dashboard_tls_cert: str = ""
    dashboard_tls_key: str = ""
    dashboard_client_ca: str = ""
    dashboard_client_uri_prefixes: list[str] = msgspec.field(default_factory=list)
    dashboard_chart_minutes: int = 60
    dashboard_refresh_seconds: int = 15
    dashboard_pending_age_seconds_max: float = 300.0
    dashboard_session_seconds: float = 28_800.0
    dashboard_sessions_max: int = 1_000
    evidence_signing_key: str = ""
    archive_signing_key: str = ""
    archive_public_key: str = ""
    archive_dir: str = ""
    evidence_environment: str = "sandbox"
    evidence_phase: str = "7R"
    evidence_issuer: str = "symphony"
    evidence_cert_ttl_hours: float = 4.0
    evidence_policy_propagation_seconds: float = 60.0
    reconcile_statement_dir: str = ""
    reconcile_rails: dict[str, str] = msgspec.field(default_factory=dict)
    gap_statement_signing_key: str = ""
    gap_statement_key_name: str = "symphony.example/local/gap-statements"
    gap_statement_window_seconds: int = 3600
    gap_statement_publish_dir: str = ""
    gap_statement_windows_per_cycle: int = 24
    evidence_gap_statement_hours: float = 168.0

    def __post_init__(self) -> None:
        super().__post_init__()
        config.check_range(self, "cycle_seconds", 0.05, 3600)
        config.check_range(self, "leader_retry_seconds", 0.05, 600)
        config.check_range(self, "ghost_grace_seconds", 0, 86_400)
        config.check_range(self, "outcome_grace_seconds", 0, 86_400)
        config.check_range(self, "unattested_pending_seconds", 0, 86_400 * 7)
        config.check_range(self, "zombie_grace_seconds", 0, 86_400)
        config.check_range(self, "stuck_key_seconds", 0, 86_400 * 7)
        config.check_range(self, "heartbeat_interval_seconds", 0.01, 3600)
        config.check_range(self, "scan_window_hours", 0.01, 24 * 400)
        config.check_range(self, "chain_full_verify_seconds", 1, 86_400 * 7)
        config.check_range(self, "shutdown_timeout_seconds", 0.1, 600)
        config.check_range(self, "oncall_metrics_seconds", 1, 3600)
        config.check_range(self, "silent_heartbeats", 1, 1000)
        config.check_range(self, "findings_max", 1, 1_000_000)
        config.check_range(self, "chain_batch_rows", 1, 1_000_000)
        config.check_range(self, "dashboard_port", 0, 65535)
        config.check_range(self, "metrics_port", 0, 65535)
        config.check_range(self, "dashboard_chart_minutes", 5, 7 * 24 * 60)
        config.check_range(self, "dashboard_refresh_seconds", 0, 3600, note=" (0: no refresh)")
        config.check_range(self, "dashboard_pending_age_seconds_max", 1, 86_400 * 7)
        config.check_range(self, "dashboard_session_seconds", 60, 86_400 * 7)
        config.check_range(self, "dashboard_sessions_max", 1, 100_000)
        config.check_range(self, "gap_statement_window_seconds", 60, 86_400)
        if 86_400 % self.gap_statement_window_seconds:
            raise ValueError("gap_statement_window_seconds must divide a day (86400) so windows align to UTC days")
        config.check_range(self, "gap_statement_windows_per_cycle", 1, 10_000)
        config.check_range(self, "evidence_gap_statement_hours", 0, 24 * 400)
        for rail, kind in self.reconcile_rails.items():
            if kind not in ("mtn_momo", "airtel_money", "iso20022"):
                raise ValueError(f"reconcile_rails.{rail} must be mtn_momo, airtel_money or iso20022")
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


def load(path: str | None) -> RepairConfig:
    return config.load(RepairConfig, DAEMON, path)
