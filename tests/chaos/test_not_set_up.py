"""`symphony chaos run` against a default `symphony up` (no `chaos = true`) refuses before any fault.

Goal (issue 15): an operator who points the chaos harness at a system not set
up for it gets exit 2 and one clear line, and nothing is killed; before, a
daemon was killed, `up` stopped everything, and the command printed "Task
exception was never retrieved" tracebacks. Method: a real default `symphony
up` (embedded PostgreSQL, every daemon), then `symphony chaos run --scenario
kill-forwarder` on its data dir; the forwarder and `up` must still run with
the same pids afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.conftest import _clean_env
from tests.conftest import REPO_ROOT

READY_TIMEOUT_SECONDS = 240


@pytest.fixture(scope="module")
def default_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A `symphony up` with the default settings (chaos off) on a data dir of its own."""
    root = tmp_path_factory.mktemp("not-set-up")
    data_dir, config = root / "data", root / "up.toml"
    config.write_text("embedded_fast = true\n")
    out_path = root / "up.out"
    with open(out_path, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "symphony", "up", "--data-dir", str(data_dir),
                                    "--config", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=REPO_ROOT, env=_clean_env())
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while "ready" not in out_path.read_text(errors="replace").splitlines():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"symphony up did not become ready:\n{out_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.2)
        yield data_dir
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _pids(data_dir: Path) -> tuple[int, int]:
    state = json.loads((data_dir / "run" / "up.json").read_text())
    return int(state["up_pid"]), int(state["children"]["forwarder"]["pid"])


def test_chaos_run_refuses_a_system_without_chaos(default_up: Path) -> None:
    """Goal: exit 2, one line naming `chaos = true`, no traceback, no process killed. Method: see the module."""
    up_pid, forwarder_pid = _pids(default_up)
    os.kill(forwarder_pid, 0)  # the victim the scenario would pick runs before the attempt
    result = subprocess.run([sys.executable, "-m", "symphony", "chaos", "run", "--scenario", "kill-forwarder",
                             "--duration", "1", "--data-dir", str(default_up)],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=_clean_env())
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "chaos = true" in lines[0]
    assert "Traceback" not in result.stderr and "never retrieved" not in result.stderr
    assert result.stdout == ""
    assert _pids(default_up) == (up_pid, forwarder_pid)
    os.kill(up_pid, 0)
    os.kill(forwarder_pid, 0)
