"""Relayer settings (`symphony relayer --config FILE`, env SYMPHONY_RELAYER_<KEY>).

Lease policy (one policy, used by every relayer and by repair): a claimed row is
IN_FLIGHT for `lease_seconds`. A rail call can take at most the rail's
`timeout_seconds` plus, for an asynchronous rail, `status_poll_max_seconds` of
polling; the lease must exceed the longest rail's worst case by
`lease_margin_seconds`, which the loader checks. An expired lease makes the row
claimable again (RECOVERING, outcome unknown: resend the same key).
"""

from __future__ import annotations

import msgspec

from symphony.config import DaemonConfig, check_range

ADAPTER_KINDS = ("swiftpay", "mobimoney", "mtn_momo", "airtel_money", "iso20022", "noop")
# Kinds that accept, then settle later: a call may poll the rail's status after it.
ASYNCHRONOUS_KINDS = ("mobimoney", "mtn_momo", "airtel_money", "iso20022")
# Kinds that need credentials (relayer/credentials.py: a file, overridden by the environment).
CREDENTIAL_FIELDS: dict[str, tuple[str, ...]] = {
    "mtn_momo": ("subscription_key", "api_user", "api_key"),
    "airtel_money": ("client_id", "client_secret", "pin"),
    "iso20022": (),  # username/password optional: HTTP Basic when given
}


class RailConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One rail: which adapter speaks to it, where, and how hard to push it."""

    kind: str
    url: str = ""
    timeout_seconds: float = 10.0
    concurrency: int = 32
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 10.0
    status_poll_interval_seconds: float = 0.05
    status_poll_max_seconds: float = 5.0
    # Real-rail adapters: where the credentials are (a JSON object in a file that
    # only the relayer's user can read; SYMPHONY_RAIL_<NAME>_<FIELD> overrides a field).
    credentials_file: str = ""
    # mtn_momo: the X-Target-Environment header (sandbox, mtnuganda, ...).
    target_environment: str = "sandbox"
    # airtel_money: the X-Country header (ISO 3166 alpha-2).
    country: str = "KE"
    # iso20022: the agents of the pacs.008 (the participant's settlement bank and the creditor's).
    debtor_agent_bic: str = "SYMPKENAXXX"
    creditor_agent_bic: str = "RTGSKENAXXX"

    def __post_init__(self) -> None:
        if self.kind not in ADAPTER_KINDS:
            raise ValueError(f"rail kind must be one of {', '.join(ADAPTER_KINDS)}")
        if self.kind != "noop" and not self.url.startswith(("http://", "https://")):
            raise ValueError("rail url must be an http:// or https:// URL")
        check_range(self, "timeout_seconds", 0, 300, low_open=True, label="rail")
        check_range(self, "concurrency", 1, 10_000, label="rail")
        check_range(self, "breaker_failure_threshold", 1, 1000, label="rail")
        check_range(self, "breaker_reset_seconds", 0, 3600, low_open=True, label="rail")
        if not 0 < self.status_poll_interval_seconds <= self.status_poll_max_seconds <= 600:
            raise ValueError("need 0 < status_poll_interval_seconds <= status_poll_max_seconds <= 600")
        if len(self.country) != 2 or not self.country.isalpha():
            raise ValueError("rail country must be an ISO 3166 alpha-2 code")
        if not (8 <= len(self.debtor_agent_bic) <= 11 and 8 <= len(self.creditor_agent_bic) <= 11):
            raise ValueError("rail debtor_agent_bic and creditor_agent_bic must be BICs (8 or 11 characters)")

    @property
    def worst_case_seconds(self) -> float:
        if self.kind not in ASYNCHRONOUS_KINDS:
            return self.timeout_seconds
        # A status query before the submit, the submit, polling, and (real rails) a token request.
        token = self.timeout_seconds if self.kind != "mobimoney" else 0.0
        return 2 * self.timeout_seconds + self.status_poll_max_seconds + token


class RelayerConfig(DaemonConfig, kw_only=True, forbid_unknown_fields=True):
    worker_id: str = ""
    rails: dict[str, RailConfig] = {}
    listen: bool = True
    poll_interval_seconds: float = 1.0
    batch_size: int = 200
    lease_seconds: float = 30.0
    lease_margin_seconds: float = 5.0
    reclaim_batch_max: int = 100
    completion_batch_max: int = 500
    completion_flush_seconds: float = 0.005
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    shutdown_timeout_seconds: float = 15.0
    admin_host: str = "127.0.0.1"
    admin_port: int = 9480
    pool_size: int = 4
    breaker_report_seconds: float = 15.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.worker_id) > 64:
            raise ValueError("worker_id must be at most 64 characters")
        if not self.rails:
            raise ValueError("rails must name at least one rail ([rails.NAME] with kind and url)")
        for name in self.rails:
            if not (1 <= len(name) <= 32 and all(c.islower() or c.isdigit() or c in "_-" for c in name)):
                raise ValueError(f"rail name {name!r} must match ^[a-z0-9_-]{{1,32}}$")
        check_range(self, "poll_interval_seconds", 0.01, 60)
        check_range(self, "batch_size", 1, 10_000)
        check_range(self, "reclaim_batch_max", 1, 10_000)
        check_range(self, "completion_batch_max", 1, 10_000)
        check_range(self, "completion_flush_seconds", 0, 1)
        if not 0 < self.backoff_base_seconds <= self.backoff_max_seconds <= 86_400:
            raise ValueError("need 0 < backoff_base_seconds <= backoff_max_seconds <= 86400")
        check_range(self, "shutdown_timeout_seconds", 0, 600, low_open=True)
        check_range(self, "admin_port", 0, 65535)
        check_range(self, "pool_size", 2, 64)
        check_range(self, "breaker_report_seconds", 0.1, 3600)
        check_range(self, "lease_margin_seconds", 0)
        worst = max(rail.worst_case_seconds for rail in self.rails.values())
        if self.lease_seconds < worst + self.lease_margin_seconds or self.lease_seconds > 3600:
            raise ValueError(
                f"lease_seconds ({self.lease_seconds:g}) must cover the slowest rail call ({worst:g} s) plus "
                f"lease_margin_seconds ({self.lease_margin_seconds:g}), and be at most 3600")
