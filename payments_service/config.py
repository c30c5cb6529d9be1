"""Service settings (`symphony service --config FILE`, env SYMPHONY_SERVICE_<KEY>)."""

from __future__ import annotations

import ipaddress

import msgspec

from symphony.config import DaemonConfig, check_range


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
        check_range(self, "listen_port", 0, 65535)
        check_range(self, "admin_port", 0, 65535)
        check_range(self, "signature_max_age_seconds", 1, 3600)
        check_range(self, "idempotency_lock_ttl_seconds", 0, 3600, low_open=True)
        if not self.idempotency_lock_ttl_seconds < self.idempotency_retention_seconds <= 90 * 86_400:
            raise ValueError("idempotency_retention_seconds must exceed the lock TTL and be at most 90 days")
        if not self.rails or any(not (1 <= len(r) <= 32 and all(c.islower() or c.isdigit() or c in "_-" for c in r))
                                 for r in self.rails):
            raise ValueError("rails must be a non-empty list of names matching ^[a-z0-9_-]{1,32}$")
        check_range(self, "retry_budget", 1, 100)
        check_range(self, "pool_size", 2, 200)
        check_range(self, "maintenance_interval_seconds", 1, 86_400)
        check_range(self, "purge_batch_max", 1, 100_000)
        check_range(self, "shutdown_timeout_seconds", 0, 600, low_open=True)
