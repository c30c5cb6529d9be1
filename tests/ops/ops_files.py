"""Readers for the operations files: systemd units, Kubernetes manifests, Vector.

Pure helpers shared by the tests in tests/ops. Unit files are read the way
systemd reads them (repeated keys accumulate, an empty assignment resets the
list, a trailing backslash continues the line), because configparser would
reject or merge the repeated keys the units rely on.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO_ROOT / "systemd"
K8S_DIR = REPO_ROOT / "k8s"
VENV_SYMPHONY = "/opt/symphony/venv/bin/symphony"

# daemon (the CLI subcommand and the SYMPHONY_<DAEMON>_ prefix) -> unit file, package
DAEMONS: dict[str, tuple[str, str]] = {
    "sidecar": ("symphony-sidecar.service", "ingress_sidecar"),
    "forwarder": ("symphony-forwarder.service", "forwarder"),
    "relayer": ("symphony-relayer@.service", "relayer"),
    "repair": ("symphony-repair.service", "repair"),
}
TARGET = "symphony.target"


# -- systemd --------------------------------------------------------------------


class Unit:
    """A unit file as (section, key) -> list of values, in file order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[tuple[str, str, str]] = list(_unit_entries(path.read_text()))
        assert self.entries, f"{path} has no settings"

    def values(self, section: str, key: str) -> list[str]:
        """Every assignment of `key`, with systemd's reset on an empty one."""
        found: list[str] = []
        for entry_section, entry_key, value in self.entries:
            if entry_section == section and entry_key == key:
                found = [] if value == "" and _resets(key) else found + [value]
        return found

    def words(self, section: str, key: str) -> list[str]:
        """The space-separated words of every assignment of a list setting."""
        return [word for value in self.values(section, key) for word in value.split()]

    def one(self, section: str, key: str) -> str:
        values = self.values(section, key)
        assert len(values) == 1, f"{self.path.name}: [{section}] {key} set {len(values)} times"
        return values[0]

    def has(self, section: str, key: str) -> bool:
        return any(s == section and k == key for s, k, _ in self.entries)


def _resets(key: str) -> bool:
    # Keys whose empty assignment clears the list; for CapabilityBoundingSet=
    # and AmbientCapabilities= the empty value *is* the setting.
    return key not in ("CapabilityBoundingSet", "AmbientCapabilities")


def _unit_entries(text: str) -> Iterator[tuple[str, str, str]]:
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, separator, value = line.partition("=")
        assert separator, f"not a key=value line: {line!r}"
        assert section, f"setting outside a section: {line!r}"
        yield section, key.strip(), value.strip()
    assert not pending, "file ends in a line continuation"


def unit(name: str) -> Unit:
    return Unit(SYSTEMD_DIR / name)


def unit_names() -> list[str]:
    return sorted(p.name for p in SYSTEMD_DIR.iterdir() if p.suffix in (".service", ".target"))


_DURATION_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "ms": 0.001}


def duration_seconds(value: str) -> float:
    """A systemd time span ("90s", "1min 30s", "30") in seconds."""
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip())
    assert parts and "".join(n + u for n, u in parts) == value.replace(" ", ""), f"bad time span {value!r}"
    for number, suffix in parts:
        assert suffix in _DURATION_UNITS, f"unsupported unit {suffix!r} in {value!r}"
        total += float(number) * _DURATION_UNITS[suffix]
    return total


# -- Kubernetes -------------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every resource the kustomization applies, the
    ConfigMaps of its configMapGenerator included (as kustomize builds them,
    without the content hash kustomize appends to their names)."""
    found = []
    for name in kustomization()["resources"]:
        for document in yaml.safe_load_all((K8S_DIR / name).read_text()):
            if document is not None:
                found.append((name, document))
    found.extend(generated_config_maps(K8S_DIR))
    assert found, "the kustomization applies nothing"
    return found


def generated_config_maps(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    """The ConfigMaps a kustomization's configMapGenerator builds (files only)."""
    settings = yaml.safe_load((directory / "kustomization.yaml").read_text())
    built = []
    for generator in settings.get("configMapGenerator", []):
        data = {}
        for entry in generator.get("files", []):
            key, _, path = entry.rpartition("=")
            data[key or Path(path).name] = (directory / path).read_text()
        metadata: dict[str, Any] = {"name": generator["name"], "namespace": settings.get("namespace")}
        metadata["labels"] = dict(generator.get("options", {}).get("labels", {}))
        built.append((f"configMapGenerator:{generator['name']}",
                      {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}))
    return built


def resource(kind: str, name: str) -> dict[str, Any]:
    matches = [d for _, d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def resources_of(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in k8s_documents() if d["kind"] == kind]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod_spec(workload)
    matches = [c for c in spec.get("containers", []) + spec.get("initContainers", []) if c["name"] == name]
    assert len(matches) == 1, f"{workload['metadata']['name']} has no single container {name!r}"
    return matches[0]


def all_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec.get("containers", [])


def daemon_config_toml(daemon: str) -> dict[str, Any]:
    """The TOML the ConfigMap gives `daemon` (mounted at /etc/symphony/<daemon>.toml)."""
    config_map = resource("ConfigMap", "symphony-config")
    return tomllib.loads(config_map["data"][f"{daemon}.toml"])


def vector_config() -> dict[str, Any]:
    return yaml.safe_load(resource("ConfigMap", "symphony-vector")["data"]["vector.yaml"])


# -- daemon configuration examples (written by the daemons' engineers) ----------------


def example_config(daemon: str) -> dict[str, Any]:
    """`<package>/config.example.toml` of `daemon` (every daemon has one: a missing one fails)."""
    path = REPO_ROOT / DAEMONS[daemon][1] / "config.example.toml"
    return tomllib.loads(path.read_text())


def drain_timeout_seconds(settings: dict[str, Any]) -> float | None:
    """The graceful-shutdown bound among `settings` (a key like *shutdown*_seconds)."""
    found = [float(v) for k, v in settings.items()
             if re.fullmatch(r".*(shutdown|drain).*_seconds(_max)?", k) and isinstance(v, int | float)]
    return max(found) if found else None
