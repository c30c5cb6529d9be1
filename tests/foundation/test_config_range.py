"""The one config-range helper (symphony.config.check_range): its messages name the file, key, range
and value given, for every daemon that uses it."""

from __future__ import annotations

import importlib
from pathlib import Path

import msgspec
import pytest

from symphony import config
from symphony.errors import ConfigError


class _Settings(config.DaemonConfig, kw_only=True, forbid_unknown_fields=True):
    count: int = 1
    seconds: float = 1.0
    port: int = 0
    floor_bytes: int = 4096

    def __post_init__(self) -> None:
        super().__post_init__()
        config.check_range(self, "count", 1, 10, note=" (1 = serial)")
        config.check_range(self, "seconds", 0, 600, low_open=True)
        config.check_range(self, "port", 0, 65535, label="rail")
        config.check_range(self, "floor_bytes", 4096)


@pytest.mark.parametrize(("toml", "message"), [
    ("count = 0", "count must be in [1, 10] (1 = serial), not 0"),
    ("count = 11", "count must be in [1, 10] (1 = serial), not 11"),
    ("seconds = 0", "seconds must be in (0, 600], not 0.0"),
    ("seconds = 600.5", "seconds must be in (0, 600], not 600.5"),
    ("port = 70000", "rail port must be in [0, 65535], not 70000"),
    ("floor_bytes = 10", "floor_bytes must be >= 4096, not 10"),
])
def test_out_of_range_names_file_key_range_and_value(tmp_path: Path, toml: str, message: str) -> None:
    """Goal: the operator reads which file, which key, the allowed range and what they gave, in one line.
    Method: load a file with one bad value through config.load, as every daemon does."""
    path = tmp_path / "test.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError) as caught:
        config.load(_Settings, "test", path, environ={})
    text = str(caught.value.reason)
    assert str(path) in text
    assert message in text
    assert "\n" not in text


def test_bounds_themselves_are_accepted() -> None:
    """Goal: closed bounds include their ends, an open low bound excludes it only. Method: convert edge values."""
    edge = msgspec.convert({"count": 10, "seconds": 600, "port": 0, "floor_bytes": 4096}, _Settings)
    assert (edge.count, edge.seconds, edge.port, edge.floor_bytes) == (10, 600, 0, 4096)
    low = msgspec.convert({"count": 1, "seconds": 1e-9}, _Settings)
    assert low.count == 1


@pytest.mark.parametrize(("daemon", "module", "key", "value", "fragment"), [
    ("forwarder", "forwarder.config", "batch_rows_max", "0", "batch_rows_max must be in [1, 100000], not 0"),
    ("relayer", "relayer.config", "pool_size", "1", "pool_size must be in [2, 64], not 1"),
    ("repair", "repair.config", "cycle_seconds", "0.01", "cycle_seconds must be in [0.05, 3600], not 0.01"),
    ("service", "payments_service.config", "retry_budget", "0", "retry_budget must be in [1, 100], not 0"),
    ("sidecar", "ingress_sidecar.config", "workers", "65", "workers must be in [0, 64] (0 = one per core), not 65"),
])
def test_every_daemon_reports_through_the_helper(daemon: str, module: str, key: str, value: str,
                                                 fragment: str) -> None:
    """Goal: each daemon's range checks go through the one helper and keep key, range and reason.
    Method: an environment override with an out-of-range value, through each daemon's config struct."""
    struct = {"forwarder": "ForwarderConfig", "relayer": "RelayerConfig", "repair": "RepairConfig",
              "service": "ServiceConfig", "sidecar": "SidecarConfig"}[daemon]
    settings_type = getattr(importlib.import_module(module), struct)
    environ = {config.env_name(daemon, key): value}
    if daemon == "relayer":
        environ[config.env_name(daemon, "rails")] = '{"sim": {"kind": "noop"}}'
    with pytest.raises(ConfigError) as caught:
        config.load(settings_type, daemon, None, environ=environ)
    assert fragment in str(caught.value.reason)
    assert "environment" in str(caught.value.reason)
