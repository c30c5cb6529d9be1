#!/usr/bin/env python3
"""Write k8s/monitoring/prometheusrule.yaml from ops/prometheus/alerts.yml.

One source for the alert rules: the Prometheus rule file (unit-tested with
promtool). The Prometheus Operator's PrometheusRule carries the same `groups`.
`--check` exits 1 when the committed file is stale (tests/ops/test_alerts.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "ops" / "prometheus" / "alerts.yml"
TARGET = ROOT / "k8s" / "monitoring" / "prometheusrule.yaml"
HEADER = ("# GENERATED from ops/prometheus/alerts.yml by scripts/gen_prometheusrule.py: DO NOT EDIT.\n"
          "# tests/ops/test_alerts.py fails when it is stale.\n")


def render() -> str:
    rules = yaml.safe_load(SOURCE.read_text())
    document = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                "metadata": {"name": "symphony", "namespace": "symphony",
                             "labels": {"app.kubernetes.io/part-of": "symphony"}},
                "spec": {"groups": rules["groups"]}}
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=200)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run scripts/gen_prometheusrule.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
