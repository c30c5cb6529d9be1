"""Service settings (`symphony service --config FILE`, env SYMPHONY_SERVICE_<KEY>)."""

from __future__ import annotations

import ipaddress

import msgspec

from symphony.config import DaemonConfig


class ServiceConfig(DaemonConfig, kw_only=True, forbid_unknown_fields=True):
    listen_host: str = "127.0.0.1"
    listen_port: int = 8000
    unix_socket: str = ""
    upstream_public_keys: list[str] = []
    signature_max_age_seconds: int = 300
    idempotency_lock_ttl_seconds: float = 30.0
    idempotency_retention_seconds: float = 86_400.0
    rails: list[str] = msgspec.field(default_factory=lambda: ["swiftpay", "mobimoney", "mtn_momo", "airtel_money",
                                                              "iso20022"])
    retry_budget: int = 5
    admin_host: str = "127.0.0.1"
    admin_port: int = 9481
    pool_size: int = 10
    maintenance_interval_seconds: float = 60.0
    purge_batch_max: int = 1000
    shutdown_timeout_seconds: float = 10.0
    test_fault_file: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.unix_socket:
            try:
                loopback = self.listen_host == "localhost" or ipaddress.ip_address(self.listen_host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise ValueError("listen_host must be a loopback address (127.0.0.1, ::1): the service is reached "
                                 "only through the sidecar; use unix_socket for a socket file")
        if not 0 <= self.listen_port <= 65535 or not 0 <= self.admin_port <= 65535:
            raise ValueError("listen_port and admin_port must be in 0..65535")
        if not 1 <= self.signature_max_age_seconds <= 3600:
            raise ValueError("signature_max_age_seconds must be in [1, 3600]")
        if not 0 < self.idempotency_lock_ttl_seconds <= 3600:
            raise ValueError("idempotency_lock_ttl_seconds must be in (0, 3600]")
        if not self.idempotency_lock_ttl_seconds < self.idempotency_retention_seconds <= 90 * 86_400:
            raise ValueError("idempotency_retention_seconds must exceed the lock TTL and be at most 90 days")
        if not self.rails or any(not (1 <= len(r) <= 32 and all(c.islower() or c.isdigit() or c in "_-" for c in r))
                                 for r in self.rails):
            raise ValueError("rails must be a non-empty list of names matching ^[a-z0-9_-]{1,32}$")
        if not 1 <= self.retry_budget <= 100:
            raise ValueError("retry_budget must be in [1, 100]")
        if not 2 <= self.pool_size <= 200:
            raise ValueError("pool_size must be in [2, 200]")
        if not 1 <= self.maintenance_interval_seconds <= 86_400 or not 1 <= self.purge_batch_max <= 100_000:
            raise ValueError("maintenance_interval_seconds must be in [1, 86400], purge_batch_max in [1, 100000]")
        if not 0 < self.shutdown_timeout_seconds <= 600:
            raise ValueError("shutdown_timeout_seconds must be in (0, 600]")
