"""One `symphony up` for the whole chaos suite (module scope), set up for chaos.

The system runs with `chaos = true` (the service's test fault switch, the
sidecar's test clock file, short repair grace periods), `child_restarts_max`
(a killed daemon is started again, as systemd would), and durable PostgreSQL
(`embedded_fast = false`, as production runs: the pg-restart scenario
crashes the server). As root, the
journal lives on a 64 MiB tmpfs of its own, which the disk-full scenario fills;
without root that scenario is skipped.

Each scenario's JSON report is kept for the JUnit file the evidence bundle
reads; the daemons' logs are copied to test-artifacts/chaos-logs/ at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"
UP_START_TIMEOUT_SECONDS = 240
TMPFS_SIZE = "64m"
UP_TOML = """embedded_fast = false
chaos = true
child_restarts_max = 10
child_stop_timeout_seconds = 20
"""


@dataclass
class ChaosSystem:
    data_dir: Path
    database_url: str
    journal_on_tmpfs: bool
    reports: list[dict[str, Any]] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "symphony", *args], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO_ROOT, env=_clean_env())


def _clean_env() -> dict[str, str]:
    """The environment without settings that would point `up` or the CLI elsewhere."""
    return {k: v for k, v in os.environ.items()
            if k not in ("SYMPHONY_DATABASE_URL", "SYMPHONY_DATA_DIR") and not k.startswith("SYMPHONY_UP_")}


def _mount_tmpfs(path: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "tmpfs", str(path)],
                            capture_output=True, text=True, timeout=30)
    return result.returncode == 0


def start_up(data_dir: Path, config: Path, out_path: Path) -> subprocess.Popen[bytes]:
    """`symphony up` on `data_dir` with `config`, its output in `out_path`, waited for until `ready`."""
    with open(out_path, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "symphony", "up", "--data-dir", str(data_dir),
                                    "--config", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=REPO_ROOT, env=_clean_env())
    deadline = time.monotonic() + UP_START_TIMEOUT_SECONDS
    while "ready" not in out_path.read_text(errors="replace").splitlines():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_up(process)
            pytest.fail(f"symphony up did not become ready:\n{out_path.read_text(errors='replace')[-4000:]}")
        time.sleep(0.5)
    return process


def stop_up(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if `up` has not stopped its children and itself within 90 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def chaos_system() -> Iterator[ChaosSystem]:
    data_dir = Path(tempfile.mkdtemp(prefix="symphony-chaos-"))
    journal = data_dir / "journal"
    journal.mkdir()
    mounted = _mount_tmpfs(journal)
    config = data_dir / "up.toml"
    config.write_text(UP_TOML)
    out_path = data_dir / "up.out"
    process: subprocess.Popen[bytes] | None = None
    try:
        process = start_up(data_dir, config, out_path)
        state = json.loads((data_dir / "embedded-db.json").read_text())
        yield ChaosSystem(data_dir=data_dir, database_url=state["dsn"], journal_on_tmpfs=mounted)
    finally:
        if process is not None:
            stop_up(process)
        _keep_logs(data_dir, out_path)
        if mounted:
            subprocess.run(["umount", str(journal)], capture_output=True, timeout=60)
        shutil.rmtree(data_dir, ignore_errors=True)


def _keep_logs(data_dir: Path, out_path: Path) -> None:
    target = ARTIFACTS / "chaos-logs"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    if (data_dir / "logs").is_dir():
        for log in (data_dir / "logs").iterdir():
            shutil.copy2(log, target / log.name)
    if out_path.exists():
        shutil.copy2(out_path, target / "up.out")
