"""The operations files against the daemons' own configuration examples.

Method: each daemon documents its keys in `<package>/config.example.toml`. Every
key the ConfigMaps set, and every SYMPHONY_<DAEMON>_<KEY> variable the
manifests or units set, must be a key of that example: the loader refuses an
unknown key in a file (exit 2), but silently ignores an unknown variable, so a
renamed key would otherwise be lost without a trace.
"""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.ops.ops_files import (
    DAEMONS, K8S_DIR, REPO_ROOT, daemon_config_toml, example_config, resource, unit,
)

VARIABLE = re.compile(r"\bSYMPHONY_(SIDECAR|FORWARDER|RELAYER|REPAIR)_([A-Z0-9_]+)\b")


def test_config_maps_parse() -> None:
    """Goal: every daemon's TOML in the ConfigMap is valid TOML."""
    data = resource("ConfigMap", "symphony-config")["data"]
    assert set(data) == {f"{daemon}.toml" for daemon in DAEMONS}
    for text in data.values():
        tomllib.loads(text)


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_config_map_keys_exist(daemon: str) -> None:
    """Goal: the daemon starts with the ConfigMap's file (no unknown key)."""
    example = example_config(daemon)
    unknown = set(daemon_config_toml(daemon)) - set(example)
    assert not unknown, f"{daemon}: keys not in the example: {sorted(unknown)}"


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_environment_overrides_name_real_keys(daemon: str) -> None:
    """Goal: no variable in k8s/ or systemd/ overrides a key the daemon does not have."""
    example = example_config(daemon)
    texts = [path.read_text() for path in K8S_DIR.glob("*.yaml")]
    texts += [(REPO_ROOT / "systemd" / DAEMONS[daemon][0]).read_text()]
    texts += [(REPO_ROOT / "docs" / "operations.md").read_text()]
    prefix = daemon.upper()
    used = {key.lower() for text in texts for d, key in VARIABLE.findall(text) if d == prefix}
    unknown = used - set(example)
    assert not unknown, f"{daemon}: variables for keys it does not have: {sorted(unknown)}"


def test_systemd_units_and_k8s_run_the_same_commands() -> None:
    """Goal: one command line per daemon, whichever way it is run."""
    daemonset = resource("DaemonSet", "symphony-node")
    containers = {c["name"]: c for c in daemonset["spec"]["template"]["spec"]["containers"]}
    for name in ("relayer", "repair"):
        deployment = resource("Deployment", f"symphony-{name}")
        containers[name] = deployment["spec"]["template"]["spec"]["containers"][0]
    for daemon in DAEMONS:
        exec_start = unit(DAEMONS[daemon][0]).one("Service", "ExecStart").split()[1:]
        assert containers[daemon]["args"] == exec_start, daemon
