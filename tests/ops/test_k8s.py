"""The Kubernetes manifests: schema-valid, and safe in the ways a schema cannot say.

Method: every resource the kustomization applies is validated offline against
the Kubernetes OpenAPI schemas (kubernetes-validate, strict mode: unknown fields
are errors) for the oldest supported and the newest bundled version. Strict
mode does not check enum values (it accepts `hostPath.type: DirectoryOrCreat`),
so a walk over every resource checks the enums we use against the API's lists.
Then the properties the design depends on: one journal writer per node (maxSurge
0), a grace period above the drain, node_id from the node's name, probes on the
admin endpoints, the security contexts, budgets, and network policies.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.ops.ops_files import (
    K8S_DIR, REPO_ROOT, all_containers, container, daemon_config_toml, drain_timeout_seconds,
    k8s_documents, kustomization, pod_spec, resource, resources_of,
)

KUBERNETES_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
NAMESPACE = "symphony"
DAEMON_UID = 10001
JOURNAL_PATH = "/var/lib/symphony/journal"
# Containers allowed to run as uid 0, and why (each keeps every other restriction).
ROOT_ALLOWED = {
    "journal-owner": "chowns the hostPath journal, which fsGroup does not cover",
    "vector": "reads kubelet's root-owned 0640 pod logs as their owner, with no capabilities",
}
CAPABILITIES_ALLOWED = {"journal-owner": {"CHOWN", "FOWNER"}}

LINUX_CAPABILITIES = {
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE", "ALL",
}
# (parent key or None for any parent, key) -> the values the API accepts.
ENUMS: dict[tuple[str | None, str], set[str]] = {
    ("hostPath", "type"): {"", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket",
                           "CharDevice", "BlockDevice"},
    ("updateStrategy", "type"): {"RollingUpdate", "OnDelete"},
    ("strategy", "type"): {"RollingUpdate", "Recreate"},
    ("seccompProfile", "type"): {"RuntimeDefault", "Localhost", "Unconfined"},
    ("emptyDir", "medium"): {"", "Memory"},
    ("httpGet", "scheme"): {"HTTP", "HTTPS"},
    ("capabilities", "add"): LINUX_CAPABILITIES,
    ("capabilities", "drop"): LINUX_CAPABILITIES,
    (None, "imagePullPolicy"): {"Always", "IfNotPresent", "Never"},
    (None, "protocol"): {"TCP", "UDP", "SCTP"},
    (None, "fsGroupChangePolicy"): {"OnRootMismatch", "Always"},
    (None, "policyTypes"): {"Ingress", "Egress"},
    (None, "whenUnsatisfiable"): {"DoNotSchedule", "ScheduleAnyway"},
    (None, "unhealthyPodEvictionPolicy"): {"IfHealthyBudget", "AlwaysAllow"},
    (None, "scopeName"): {"Terminating", "NotTerminating", "BestEffort", "NotBestEffort",
                          "PriorityClass", "CrossNamespacePodAffinity"},
    (None, "operator"): {"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "Equal"},
    (None, "restartPolicy"): {"Always", "OnFailure", "Never"},
    (None, "dnsPolicy"): {"ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"},
}
FIELD_PATHS = re.compile(
    r"metadata\.(name|namespace|uid|labels\['[^']+'\]|annotations\['[^']+'\])"
    r"|spec\.(nodeName|serviceAccountName)|status\.(hostIP|hostIPs|podIP|podIPs)")
PORT_NAME = re.compile(r"(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*")
DNS_LABEL = re.compile(r"(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?")
QUANTITY = re.compile(r"\d+(\.\d+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?")
PSA_LEVELS = {"privileged", "baseline", "restricted"}
# Containers that run under another daemon's configuration: container name ->
# (its ConfigMap TOML and SYMPHONY_<X>_ prefix, the settings' endpoint key).
# The dashboard reads repair.toml and serves /healthz and /readyz on dashboard_port.
CONFIG_OF = {"dashboard": ("repair", "dashboard")}


def _walk(node: Any, parent: str | None = None) -> Iterator[tuple[str | None, str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield parent, key, value
            yield from _walk(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, parent)


def enum_errors(document: dict[str, Any]) -> list[str]:
    """Every enum value in `document` that the API would refuse."""
    errors = []
    for parent, key, value in _walk(document):
        allowed = ENUMS.get((parent, key), ENUMS.get((None, key)))
        if key == "operator" and parent == "matchLabels":
            continue  # a label named "operator", not a selector operator
        if allowed is not None:
            for item in value if isinstance(value, list) else [value]:
                if item not in allowed:
                    errors.append(f"{parent}.{key}: {item!r} not in {sorted(allowed)}")
        if parent == "fieldRef" and key == "fieldPath" and not FIELD_PATHS.fullmatch(value):
            errors.append(f"fieldRef.fieldPath: {value!r}")
    if document["kind"] == "Service":
        service_type = document["spec"].get("type", "ClusterIP")
        if service_type not in {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"}:
            errors.append(f"Service type {service_type!r}")
    return errors


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return k8s_documents()


def _ids() -> list[str]:
    return [f"{name}:{doc['kind']}/{doc['metadata']['name']}" for name, doc in _documents()]


def _workloads() -> list[dict[str, Any]]:
    return resources_of("DaemonSet") + resources_of("Deployment")


def test_kustomization_applies_every_manifest() -> None:
    """Goal: no manifest in k8s/ is forgotten by `kubectl apply -k k8s/`."""
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization()["resources"]) == on_disk
    generated = {f for g in kustomization()["configMapGenerator"] for e in g["files"] for f in [e.rpartition("=")[2]]}
    assert generated == {f"config/{p.name}" for p in (K8S_DIR / "config").iterdir()}
    assert kustomization()["namespace"] == NAMESPACE


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("file_name", "document"), _documents(), ids=_ids())
def test_schema_strict(file_name: str, document: dict[str, Any], version: str) -> None:
    """Goal: the API server would accept every resource (unknown fields included)."""
    kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize(("file_name", "document"), _documents(), ids=_ids())
def test_enum_values(file_name: str, document: dict[str, Any]) -> None:
    """Goal: every enum value we use is one the API accepts."""
    assert enum_errors(document) == []


def test_enum_check_catches_what_strict_schema_validation_misses() -> None:
    """Goal: the enum walk is not vacuous; the schema alone accepts this typo."""
    daemonset = copy.deepcopy(resource("DaemonSet", "symphony-node"))
    pod_spec(daemonset)["volumes"][0]["hostPath"]["type"] = "DirectoryOrCreat"
    kubernetes_validate.validate(daemonset, KUBERNETES_VERSIONS[-1], strict=True)
    assert enum_errors(daemonset) == [
        "hostPath.type: 'DirectoryOrCreat' not in ['', 'BlockDevice', 'CharDevice', 'Directory', "
        "'DirectoryOrCreate', 'File', 'FileOrCreate', 'Socket']"]


@pytest.mark.parametrize(("file_name", "document"), _documents(), ids=_ids())
def test_names_and_namespace(file_name: str, document: dict[str, Any]) -> None:
    """Goal: namespaced resources land in the symphony namespace; names are valid."""
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    if document["kind"] not in cluster_scoped:
        assert document["metadata"]["namespace"] == NAMESPACE
    assert DNS_LABEL.fullmatch(document["metadata"]["name"])
    assert document["metadata"]["labels"]["app.kubernetes.io/part-of"] == "symphony"


@pytest.mark.parametrize("workload", _workloads(), ids=lambda w: w["metadata"]["name"])
def test_ports_probes_and_names(workload: dict[str, Any]) -> None:
    """Goal: port names are valid IANA service names, and every probe targets a declared port."""
    spec = pod_spec(workload)
    volume_names = {v["name"] for v in spec.get("volumes", [])}
    for item in all_containers(workload):
        assert DNS_LABEL.fullmatch(item["name"])
        ports = {p["name"]: p["containerPort"] for p in item.get("ports", [])}
        for name in ports:
            assert PORT_NAME.fullmatch(name), name
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in item:
                port = item[probe]["httpGet"]["port"]
                assert port in ports or port in ports.values(), f"{item['name']} {probe} port {port}"
        for mount in item.get("volumeMounts", []):
            assert mount["name"] in volume_names, mount["name"]


@pytest.mark.parametrize("workload", _workloads(), ids=lambda w: w["metadata"]["name"])
def test_security_contexts(workload: dict[str, Any]) -> None:
    """Goal: no container can gain privilege; uid 0 only where a hostPath needs it, with no capabilities."""
    spec = pod_spec(workload)
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(forbidden), forbidden
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["securityContext"]["runAsUser"] == DAEMON_UID
    assert spec["automountServiceAccountToken"] is False
    for item in all_containers(workload):
        context = item["securityContext"]
        name = item["name"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert not context.get("privileged", False), name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert set(context["capabilities"].get("add", [])) <= CAPABILITIES_ALLOWED.get(name, set()), name
        if name in ROOT_ALLOWED:
            assert context["runAsUser"] == 0, name
        else:
            assert context["runAsNonRoot"] is True, name
            assert context["runAsUser"] == DAEMON_UID, name
            assert context["runAsGroup"] == DAEMON_UID, name


@pytest.mark.parametrize("workload", _workloads(), ids=lambda w: w["metadata"]["name"])
def test_resources(workload: dict[str, Any]) -> None:
    """Goal: every container is scheduled with requests and bounded by limits."""
    for item in all_containers(workload):
        for bound in ("requests", "limits"):
            for kind in ("cpu", "memory"):
                assert QUANTITY.fullmatch(str(item["resources"][bound][kind])), (item["name"], bound, kind)


def test_daemonset_never_runs_two_writers_of_one_journal() -> None:
    """Goal: during a rollout the old pod is gone before the new one starts on a node."""
    daemonset = resource("DaemonSet", "symphony-node")
    strategy = daemonset["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxSurge"] == 0
    assert strategy["rollingUpdate"]["maxUnavailable"] == 1
    assert pod_spec(daemonset)["priorityClassName"] == "system-node-critical"


def test_daemonset_journal_on_a_host_path_given_to_the_daemons() -> None:
    """Goal: the journal survives the pod, and the non-root daemons own it."""
    daemonset = resource("DaemonSet", "symphony-node")
    spec = pod_spec(daemonset)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["journal"]["hostPath"] == {"path": JOURNAL_PATH, "type": "DirectoryOrCreate"}
    init = container(daemonset, "journal-owner")
    command = " ".join(init["command"])
    assert f"chown -R {DAEMON_UID}:{DAEMON_UID} {JOURNAL_PATH}" in command
    assert any(m["name"] == "journal" and m["mountPath"] == JOURNAL_PATH for m in init["volumeMounts"])
    for name in ("sidecar", "forwarder"):
        mounts = {m["name"]: m for m in container(daemonset, name)["volumeMounts"]}
        assert mounts["journal"]["mountPath"] == JOURNAL_PATH
        assert not mounts["journal"].get("readOnly", False)
        assert daemon_config_toml(name)["journal_dir"] == JOURNAL_PATH
    vector_mounts = {m["name"]: m for m in container(daemonset, "vector")["volumeMounts"]}
    assert vector_mounts["journal"]["readOnly"] is True


def test_the_write_once_copy_is_on_with_its_own_volume() -> None:
    """Goal: the mirror is on as shipped, on its own host path (not the journal's), owned by
    the daemons' user, read-only for Vector, and the sidecar can read Vector's checkpoints."""
    daemonset = resource("DaemonSet", "symphony-node")
    volumes = {v["name"]: v for v in pod_spec(daemonset)["volumes"]}
    settings = daemon_config_toml("sidecar")
    assert settings["mirror_enabled"] is True
    mirror_dir = settings["mirror_dir"]
    assert not mirror_dir.startswith(JOURNAL_PATH + "/")
    assert volumes["mirror"]["hostPath"]["path"] == mirror_dir
    assert volumes["mirror"]["hostPath"]["path"] != volumes["journal"]["hostPath"]["path"]
    assert f"{DAEMON_UID}:{DAEMON_UID}" in " ".join(container(daemonset, "journal-owner")["command"])
    assert mirror_dir in " ".join(container(daemonset, "journal-owner")["command"])
    sidecar = {m["name"]: m for m in container(daemonset, "sidecar")["volumeMounts"]}
    assert sidecar["mirror"]["mountPath"] == mirror_dir and not sidecar["mirror"].get("readOnly", False)
    assert settings["mirror_acknowledgements_file"].startswith(sidecar["vector-data"]["mountPath"] + "/")
    assert sidecar["vector-data"]["readOnly"] is True
    vector = {m["name"]: m for m in container(daemonset, "vector")["volumeMounts"]}
    assert vector["mirror"]["mountPath"] == mirror_dir and vector["mirror"]["readOnly"] is True


def test_node_id_comes_from_the_node_name() -> None:
    """Goal: the sidecar and the forwarder name the same per-node streams."""
    daemonset = resource("DaemonSet", "symphony-node")
    for name, variable in (("sidecar", "SYMPHONY_SIDECAR_NODE_ID"), ("forwarder", "SYMPHONY_FORWARDER_NODE_ID")):
        env = {e["name"]: e for e in container(daemonset, name)["env"]}
        assert env[variable]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


@pytest.mark.parametrize("workload", _workloads(), ids=lambda w: w["metadata"]["name"])
def test_probes_hit_the_admin_endpoints(workload: dict[str, Any]) -> None:
    """Goal: liveness on /healthz and readiness on /readyz of each daemon's admin port,
    which its configuration binds on every interface."""
    for item in pod_spec(workload)["containers"]:
        if item["name"] == "vector":
            assert item["livenessProbe"]["httpGet"]["path"] == "/health"
            continue
        assert item["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert item["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert item["startupProbe"]["httpGet"]["path"] == "/healthz"
        port_name = item["readinessProbe"]["httpGet"]["port"]
        port = {p["name"]: p["containerPort"] for p in item["ports"]}[port_name]
        config_name, endpoint = CONFIG_OF.get(item["name"], (item["name"], ""))
        settings = daemon_config_toml(config_name)
        env = {e["name"]: e.get("value") for e in item.get("env", [])}
        prefix = f"SYMPHONY_{config_name.upper()}_"
        # The repair daemon names its admin endpoint metrics_host/metrics_port.
        key = endpoint or ("metrics" if "metrics_port" in settings else "admin")
        admin_port = int(env.get(f"{prefix}{key.upper()}_PORT") or settings.get(f"{key}_port", -1))
        admin_host = env.get(f"{prefix}{key.upper()}_HOST") or settings.get(f"{key}_host")
        assert admin_port == port, f"{item['name']}: admin_port {admin_port}, probes {port}"
        assert admin_host == "0.0.0.0", f"{item['name']}: the kubelet probes the pod IP"


def test_grace_period_covers_every_drain() -> None:
    """Goal: the kubelet never SIGKILLs a container that is still within its drain bound."""
    for workload in _workloads():
        spec = pod_spec(workload)
        grace = spec["terminationGracePeriodSeconds"]
        for item in spec["containers"]:
            if item["name"] == "vector":
                continue
            pause = 0
            pre_stop = item.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            if pre_stop[:1] == ["/bin/sleep"]:
                pause = int(pre_stop[1])
            drain = drain_timeout_seconds(daemon_config_toml(CONFIG_OF.get(item["name"], (item["name"], ""))[0]))
            if drain is None:
                drain = 30.0  # the lifecycle's customary bound until the daemon's example says otherwise
            assert grace > pause + drain + 10, f"{item['name']}: {grace}s grace, {pause}s + {drain}s"


def test_deployments_replicas_and_budgets() -> None:
    """Goal: relayers and repair survive a voluntary disruption; the DaemonSet has no budget."""
    relayer = resource("Deployment", "symphony-relayer")
    repair = resource("Deployment", "symphony-repair")
    assert relayer["spec"]["replicas"] >= 2
    assert repair["spec"]["replicas"] == 2
    budgets = {b["metadata"]["name"]: b for b in resources_of("PodDisruptionBudget")}
    assert set(budgets) == {"symphony-relayer", "symphony-repair"}
    for deployment in (relayer, repair):
        budget = budgets[deployment["metadata"]["name"]]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert 1 <= budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_network_policies() -> None:
    """Goal: default deny both ways; each workload has an allow-list that opens its ports."""
    policies = {p["metadata"]["name"]: p for p in resources_of("NetworkPolicy")}
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    for workload in _workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in policies.values()
                    if p["spec"]["podSelector"].get("matchLabels")
                    and p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, workload["metadata"]["name"]
        opened = {port["port"] for rule in matching[0]["spec"].get("ingress", []) for port in rule["ports"]}
        declared = {p["containerPort"] for c in pod_spec(workload)["containers"] for p in c.get("ports", [])}
        assert declared <= opened, f"{workload['metadata']['name']}: {declared - opened} not reachable"


def test_namespace_pod_security_level_is_the_minimal_one_for_host_path() -> None:
    """Goal: `privileged` is enforced only because a hostPath is used (baseline forbids
    it), and the rest is still measured against `restricted`."""
    labels = resource("Namespace", NAMESPACE)["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] in PSA_LEVELS
    uses_host_path = any("hostPath" in v for w in _workloads() for v in pod_spec(w).get("volumes", []))
    assert uses_host_path
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert "baseline" in (K8S_DIR / "namespace.yaml").read_text(), "the comment explains the level"


def test_secrets_are_referenced_never_shipped() -> None:
    """Goal: no Secret in the manifests; each referenced one is documented for operators."""
    assert not resources_of("Secret")
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    referenced = set()
    for workload in _workloads():
        for _, key, value in _walk(pod_spec(workload)):
            if key == "secretKeyRef":
                referenced.add(value["name"])
            if key == "secret":
                referenced.add(value["secretName"])
    assert referenced == {"symphony-database", "symphony-sidecar-keys", "symphony-worm", "symphony-dashboard"}
    for name in referenced:
        assert f"kubectl -n symphony create secret generic {name}" in operations, name


def test_images() -> None:
    """Goal: the daemons run the image kustomize sets; Vector is pinned to a version."""
    images = {i["name"] for i in kustomization()["images"]}
    assert images == {"symphony"}
    for workload in _workloads():
        for item in all_containers(workload):
            image = item["image"]
            if item["name"] == "vector":
                assert re.fullmatch(r"timberio/vector:\d+\.\d+\.\d+-[a-z-]+", image), image
            else:
                assert image == "symphony", image


def test_migrations_run_before_the_daemons() -> None:
    """Goal: a Job applies the migrations with the owner's credentials (no daemon holds them),
    and every Deployment waits in an init container until the schema is current, using its
    own database credentials and the same image."""
    job = resource("Job", "symphony-migrate")
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] in ("OnFailure", "Never")
    migrate = container(job, "migrate")
    assert migrate["args"] == ["migrate"]
    assert migrate["image"] == "symphony"
    owner = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in migrate["env"]}
    assert owner["SYMPHONY_DATABASE_URL"] == "symphony-database-owner"
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
    assert migrate["securityContext"]["readOnlyRootFilesystem"] is True
    policies = {p["metadata"]["name"]: p for p in resources_of("NetworkPolicy")}
    selector = policies["symphony-migrate"]["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    for workload in resources_of("Deployment"):
        wait = container(workload, "wait-for-schema")
        assert wait["args"][:2] == ["migrate", "--check"] and "--wait-seconds" in wait["args"]
        assert wait in pod_spec(workload)["initContainers"]
        assert wait["image"] == container(workload, workload["metadata"]["name"].removeprefix("symphony-"))["image"]
        secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in wait["env"]}
        assert "symphony-database-owner" not in secrets
    for _, document in _documents():
        if document["kind"] in ("DaemonSet", "Deployment"):
            for item in all_containers(document):
                for variable in item.get("env", []):
                    reference = variable.get("valueFrom", {}).get("secretKeyRef", {})
                    assert reference.get("name") != "symphony-database-owner", item["name"]


def test_config_changes_roll_the_pods() -> None:
    """Goal: the configuration ConfigMaps come from configMapGenerator with the content hash
    kept (kustomize then renames them and rewrites the references, so an edit rolls the
    pods), and every workload mounts them by the generator's name."""
    generators = {g["name"]: g for g in kustomization()["configMapGenerator"]}
    assert {"symphony-config", "symphony-vector"} <= set(generators)
    assert not kustomization().get("generatorOptions", {}).get("disableNameSuffixHash", False)
    for generator in generators.values():
        assert not generator.get("options", {}).get("disableNameSuffixHash", False)
    static = [d["metadata"]["name"] for f, d in _documents() if d["kind"] == "ConfigMap" and ":" not in f]
    assert not set(static) & set(generators), "a generated ConfigMap is also a static file"
    mounted = {v["configMap"]["name"] for w in _workloads() for v in pod_spec(w)["volumes"] if "configMap" in v}
    assert {"symphony-config", "symphony-vector"} <= mounted
