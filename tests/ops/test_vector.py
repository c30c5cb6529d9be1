"""Vector's configuration: every source reaches a sink, and the WORM copy cannot lose a line.

Method: no Vector binary can be installed here (operators run
`vector validate`, see docs/operations.md), so the test parses the config from
the ConfigMap and checks the graph: inputs name existing components, nothing
dangles, the attestation mirror written by the sidecar reaches the Object Lock
sink through components that keep the bytes, and that sink acknowledges end to
end and buffers on disk, blocking rather than dropping when full. The
environment variables the config interpolates must be given to the container.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.ops.ops_files import container, daemon_config_toml, resource, vector_config

WORM_SINK = "attestations_worm"
DISK_BUFFER_BYTES_MIN = 268_435_488  # Vector refuses a smaller disk buffer
ACKNOWLEDGING_SOURCES = {"file", "http_server", "kafka", "aws_sqs", "aws_s3", "vector", "datadog_agent",
                         "splunk_hec", "fluent", "journald", "opentelemetry"}


def _components(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for kind in ("sources", "transforms", "sinks"):
        for name, component in config.get(kind, {}).items():
            assert name not in found, f"{name} defined twice"
            found[name] = {**component, "_kind": kind}
    return found


def _upstream_sources(components: dict[str, dict[str, Any]], name: str, depth: int = 0) -> set[str]:
    assert depth < 16, "cycle in Vector's graph"
    component = components[name]
    if component["_kind"] == "sources":
        return {name}
    return set().union(*(_upstream_sources(components, i, depth + 1) for i in component["inputs"]))


def test_graph_is_wired() -> None:
    """Goal: inputs name real components, every source and transform feeds something,
    and every sink is fed."""
    config = vector_config()
    components = _components(config)
    consumed = set()
    for name, component in components.items():
        if component["_kind"] == "sources":
            assert "inputs" not in component, name
            continue
        assert component["inputs"], name
        for upstream in component["inputs"]:
            assert upstream in components, f"{name} reads unknown {upstream}"
            assert components[upstream]["_kind"] != "sinks", f"{name} reads sink {upstream}"
            consumed.add(upstream)
    producers = {n for n, c in components.items() if c["_kind"] != "sinks"}
    assert producers == consumed, f"not consumed: {producers - consumed}"
    assert config["sinks"], "no sinks"


def test_worm_sink_acknowledges_and_buffers_on_disk() -> None:
    """Goal: a line leaves the mirror file (checkpoint advances) only once S3 has it,
    and an outage backs up to disk, never drops."""
    sink = vector_config()["sinks"][WORM_SINK]
    assert sink["type"] == "aws_s3"
    assert sink["acknowledgements"]["enabled"] is True
    assert sink["buffer"]["type"] == "disk"
    assert sink["buffer"]["when_full"] == "block"
    assert int(sink["buffer"]["max_size"]) >= DISK_BUFFER_BYTES_MIN
    assert sink["bucket"] and sink["endpoint"] and sink["region"]


def test_worm_sink_ships_the_sidecar_mirror_byte_for_byte() -> None:
    """Goal: the copy holds exactly the lines the sidecar wrote to <mirror_dir>/*.ndjson, and the
    sidecar reads this very source's checkpoints as its acknowledgements (pruning)."""
    config = vector_config()
    components = _components(config)
    sources = _upstream_sources(components, WORM_SINK)
    assert len(sources) == 1
    source_id = sources.pop()
    source = components[source_id]
    assert source["type"] in ACKNOWLEDGING_SOURCES
    assert source["type"] == "file"
    sidecar = daemon_config_toml("sidecar")
    assert sidecar["mirror_enabled"] is True
    assert source["include"] == [f"{sidecar['mirror_dir']}/*.ndjson"]
    assert sidecar["mirror_acknowledgements_file"] == f"{config['data_dir']}/{source_id}/checkpoints.json"
    assert source["read_from"] == "beginning"
    assert "decoding" not in source, "the line must stay as written"
    sink = config["sinks"][WORM_SINK]
    assert sink["inputs"] == [name for name, c in components.items() if c["_kind"] == "sources"
                              and c["type"] == "file"], "no transform between mirror and copy"
    assert sink["encoding"]["codec"] == "text"
    assert sink["framing"]["method"] == "newline_delimited"


def test_logs_are_shipped() -> None:
    """Goal: every daemon's JSON log lines reach the bucket too."""
    config = vector_config()
    components = _components(config)
    logged = [name for name, c in config["sinks"].items()
              if any(components[s]["type"] == "kubernetes_logs" for s in _upstream_sources(components, name))]
    assert logged
    for name in logged:
        assert config["sinks"][name]["buffer"]["type"] == "disk"


def test_state_and_inputs_are_mounted() -> None:
    """Goal: Vector's checkpoints and buffers live on the node, and it can read what it ships."""
    config = vector_config()
    daemonset = resource("DaemonSet", "symphony-node")
    vector = container(daemonset, "vector")
    mounts = {m["mountPath"]: m["name"] for m in vector["volumeMounts"]}
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    assert "hostPath" in volumes[mounts[config["data_dir"]]], "data_dir must survive the pod"
    for source in config["sources"].values():
        for pattern in source.get("include", []):
            directory = pattern.rsplit("/", 1)[0]
            assert directory in mounts, pattern
    assert "/var/log/pods" in mounts
    assert mounts["/etc/vector"] == "vector-config"
    assert vector["args"] == ["--config", "/etc/vector/vector.yaml"]


def test_interpolated_variables_are_provided() -> None:
    """Goal: every ${VAR} in the config is set in Vector's container."""
    text = resource("ConfigMap", "symphony-vector")["data"]["vector.yaml"]
    wanted = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", text))
    vector = container(resource("DaemonSet", "symphony-node"), "vector")
    given = {e["name"] for e in vector["env"]}
    for source in vector.get("envFrom", []):
        given |= set(resource("ConfigMap", source["configMapRef"]["name"])["data"])
    assert wanted, "expected the bucket and node name to be interpolated"
    assert wanted <= given, f"missing: {wanted - given}"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= given


def test_systemd_hosts_ship_the_same_copy() -> None:
    """Goal: ops/vector/vector.yaml (Vector on a systemd host) ships the mirror the way the
    Kubernetes pipeline does (acknowledged, disk-buffered, byte for byte), from the
    mirror_dir the docs give the sidecar, and its checkpoints are where the sidecar looks."""
    import yaml

    host = yaml.safe_load((Path(__file__).resolve().parents[2] / "ops" / "vector" / "vector.yaml").read_text())
    pod = vector_config()
    assert host["sources"]["attestation_mirror"] == pod["sources"]["attestation_mirror"]
    assert host["sinks"][WORM_SINK]["acknowledgements"]["enabled"] is True
    for key in ("buffer", "encoding", "framing", "compression", "inputs"):
        assert host["sinks"][WORM_SINK][key] == pod["sinks"][WORM_SINK][key], key
    assert host["data_dir"] == pod["data_dir"] == "/var/lib/vector"
    from tests.ops.ops_files import unit

    sidecar = unit("symphony-sidecar.service")
    environment = dict(item.split("=", 1) for item in sidecar.words("Service", "Environment"))
    mirror_dir = environment["SYMPHONY_SIDECAR_MIRROR_DIR"]
    assert host["sources"]["attestation_mirror"]["include"] == [f"{mirror_dir}/*.ndjson"]
    assert environment["SYMPHONY_SIDECAR_MIRROR_ACKNOWLEDGEMENTS_FILE"] == \
        f"{host['data_dir']}/attestation_mirror/checkpoints.json"
    assert mirror_dir.removeprefix("/var/lib/") in sidecar.words("Service", "StateDirectory")
    assert mirror_dir in sidecar.words("Unit", "RequiresMountsFor")
    operations = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert "symphony audit cross-check --mirror" in operations
