"""The relayer starts with the configuration k8s/ ships, and says what to change.

Goal: as shipped, the Kubernetes relayer no longer crash-loops (it used to
exit 2: no rails); it starts, serves its admin endpoint, and logs a warning
naming every rail that still points at an example address. Method: the real
`symphony relayer` with k8s/config/relayer.toml as its --config (admin port
overridden by environment, as a pod would not need), against the embedded
PostgreSQL; wait (bounded) for /healthz, then read its log.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

from relayer.config import RelayerConfig
from relayer.server import example_rails
from symphony import config
from tests.conftest import REPO_ROOT
from tests.relayer.conftest import Processes, free_port, wait_port

SHIPPED = REPO_ROOT / "k8s" / "config" / "relayer.toml"


def test_the_shipped_relayer_starts_and_names_its_example_rails(database_url: str, processes: Processes,
                                                                tmp_path: Path) -> None:
    """Starts with k8s/config/relayer.toml; a warning per example rail."""
    settings = config.load(RelayerConfig, "relayer", SHIPPED, environ={})
    rails = example_rails(settings)
    assert rails == sorted(settings.rails) and rails, "the shipped rails are example addresses"
    port = free_port()
    relayer = processes.start("shipped", "relayer", "--config", str(SHIPPED), "--database-url", database_url,
                              env={"SYMPHONY_RELAYER_ADMIN_PORT": str(port),
                                   "SYMPHONY_RELAYER_ADMIN_HOST": "127.0.0.1"})
    wait_port(port, relayer)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        assert answer.status == 200
    assert relayer.poll() is None
    log = (tmp_path / "shipped.log").read_text()
    for rail in rails:
        assert f"rail {rail} points at an example address" in log, log[-2000:]
        assert f"[rails.{rail}] url" in log
