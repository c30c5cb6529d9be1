"""The witness as shipped for operators: a systemd unit and a Kubernetes kustomization.

Goal: the witness runs under another owner than the operator's daemons (its own
system user; its own namespace, service account and volume), with the same
hardening, a store that survives restarts, and only the forwarders allowed to
reach it. Method: the unit is read as systemd reads it (systemd-analyze verify
runs on it in test_systemd.py); the kustomization is built with kubectl
kustomize and every resource validated strictly with kubernetes-validate.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate

from tests.ops.ops_files import REPO_ROOT, SYSTEMD_DIR, Unit
from tests.ops.test_k8s_build import build, kubectl  # noqa: F401 - kubectl is a fixture

WITNESS_K8S = REPO_ROOT / "k8s" / "witness"


def test_the_unit_runs_as_its_own_user_with_its_own_state() -> None:
    unit = Unit(SYSTEMD_DIR / "symphony-witness.service")
    operator = Unit(SYSTEMD_DIR / "symphony-repair.service")
    assert unit.one("Service", "User") == "symphony-witness" != operator.one("Service", "User")
    assert unit.one("Service", "StateDirectory") == "symphony-witness"
    assert unit.one("Service", "Type") == "notify" and unit.one("Service", "WatchdogSec")
    assert unit.one("Service", "ExecStart").split()[1:3] == ["witness", "--config"]
    for key in ("NoNewPrivileges", "ProtectSystem", "PrivateUsers", "RestrictAddressFamilies", "SystemCallFilter"):
        assert unit.values("Service", key) == operator.values("Service", key), key
    sysusers = (SYSTEMD_DIR / "symphony-witness.sysusers").read_text()
    assert "u symphony-witness " in sysusers


def test_the_kustomization_builds_valid_resources_in_its_own_namespace(kubectl: str) -> None:
    documents = build(kubectl, WITNESS_K8S)
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == ["ConfigMap", "Namespace", "NetworkPolicy", "Service", "ServiceAccount", "StatefulSet"]
    for document in documents:
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "symphony-witness"
    statefulset = next(d for d in documents if d["kind"] == "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] != 10001  # not the operator daemons' uid
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    policy = next(d for d in documents if d["kind"] == "NetworkPolicy")
    assert policy["spec"]["egress"] == []
    config = next(d for d in documents if d["kind"] == "ConfigMap")
    assert 'state_dir = "/var/lib/symphony-witness/state"' in config["data"]["witness.toml"]


def test_the_shipped_witness_config_loads(tmp_path: Path) -> None:
    from symphony import config as config_loader
    from witness.config import WitnessConfig

    settings = config_loader.load(WitnessConfig, "witness", WITNESS_K8S / "witness.toml", environ={})
    assert settings.listen_port == 8095 and settings.key_file.endswith("witness.pem")
