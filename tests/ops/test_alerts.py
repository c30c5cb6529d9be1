"""The shipped Prometheus alert rules and Grafana dashboard.

Goal: ops/prometheus/alerts.yml is valid and its alerts fire exactly when they
should (`promtool test rules` on ops/prometheus/alerts_test.yml), and every
Symphony metric the rules and ops/grafana/symphony-oncall.json query is one a
daemon really exports, so a renamed metric cannot silently blind an alert.
Method: promtool installed by scripts/ensure_ops_tools.sh (never skipped);
metric names collected from the daemons' source and the sidecar's metric tables.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ingress_sidecar import metrics as sidecar_metrics
from tests.ops.conftest import ENSURE_SCRIPT
from tests.ops.ops_files import REPO_ROOT, resources_of

PROMETHEUS_DIR = REPO_ROOT / "ops" / "prometheus"
DASHBOARD = REPO_ROOT / "ops" / "grafana" / "symphony-oncall.json"
PACKAGES = ("ingress_sidecar", "forwarder", "relayer", "repair", "symphony", "witness", "payments_service")
METRIC = re.compile(r"\b(symphony_[a-z0-9_]+)\b")


@pytest.fixture(scope="session")
def promtool() -> str:
    """The promtool binary, installed by scripts/ensure_ops_tools.sh if missing."""
    found = shutil.which("promtool")
    if found is None:
        result = subprocess.run(["bash", str(ENSURE_SCRIPT)], capture_output=True, text=True, timeout=900)
        found = shutil.which("promtool")
        if found is None:
            pytest.fail(f"promtool is required by tests/ops and could not be installed:\n{result.stderr}")
    return found


def test_promtool_checks_and_unit_tests_the_rules(promtool: str) -> None:
    """`promtool check rules` and `promtool test rules` both pass on the shipped files."""
    check = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS_DIR,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout
    result = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS_DIR,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_systemd_scrape_config_is_valid_and_labels_every_daemon(promtool: str) -> None:
    """ops/prometheus/prometheus.yml passes `promtool check config` and gives each daemon the
    `daemon` label the rules use."""
    result = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS_DIR,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    labelled = {group["labels"]["daemon"] for job in config["scrape_configs"] for group in job["static_configs"]}
    assert labelled == {"sidecar", "forwarder", "relayer", "repair"}


def test_every_alert_has_a_unit_test() -> None:
    """Each alert in alerts.yml is evaluated by at least one promtool test case."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert alerts
    cases = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())
    tested = {case["alertname"] for test in cases["tests"] for case in test.get("alert_rule_test", [])}
    assert alerts <= tested, f"alerts without a promtool test: {sorted(alerts - tested)}"


def _exported() -> set[str]:
    """Every symphony_* metric name the daemons define (sample names included)."""
    names: set[str] = set()
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            names.update(METRIC.findall(path.read_text()))
    tables = (*sidecar_metrics.COUNTERS, *sidecar_metrics.GAUGES, *sidecar_metrics.HISTOGRAMS)
    names.update(sidecar_metrics.PREFIX + name for name in tables)
    source = (REPO_ROOT / "ingress_sidecar" / "metrics.py").read_text()
    names.update(sidecar_metrics.PREFIX + name for name in re.findall(r'PREFIX \+ "([a-z0-9_]+)"', source))
    samples = set(names)
    for name in names:
        samples.update({f"{name}_total", f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    return samples


def _queried(expressions: list[str]) -> set[str]:
    return {name for expression in expressions for name in METRIC.findall(expression)}


def test_rules_and_dashboard_query_only_exported_metrics() -> None:
    """No alert or panel queries a Symphony metric that no daemon exports."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queried = _queried(expressions)
    assert "symphony_outbox_oldest_pending_age_seconds" in queried and "symphony_build_info" in queried
    missing = queried - _exported()
    assert not missing, f"queried but exported by no daemon: {sorted(missing)}"


def test_dashboard_is_importable_grafana_json() -> None:
    """The dashboard has a uid, a Prometheus datasource variable and unique panel ids."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 10
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]


def test_prometheusrule_is_generated_from_the_rule_file() -> None:
    """k8s/monitoring/prometheusrule.yaml carries exactly ops/prometheus/alerts.yml's groups."""
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "gen_prometheusrule.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_podmonitor_scrapes_every_admin_port_and_pods_are_annotated() -> None:
    """Every admin port of k8s/ is scraped by the PodMonitor, and each pod template
    carries prometheus.io/scrape annotations naming one of its admin ports."""
    monitor = yaml.safe_load((REPO_ROOT / "k8s" / "monitoring" / "podmonitor.yaml").read_text())
    scraped = {endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]}
    for workload in resources_of("DaemonSet") + resources_of("Deployment"):
        if workload["metadata"]["name"] == "symphony-dashboard":
            continue  # a read-only web UI with no /metrics of its own (its data is repair's gauges)
        template = workload["spec"]["template"]
        ports = {port["name"]: port["containerPort"] for c in template["spec"]["containers"]
                 for port in c.get("ports", []) if "adm" in port["name"]}
        assert ports, workload["metadata"]["name"]
        assert set(ports) <= scraped, (workload["metadata"]["name"], ports)
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) in ports.values()
