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
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.conftest import _clean_env, start_up, stop_up
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def default_up() -> Iterator[Path]:
    """A `symphony up` with the default settings (chaos off) on a data dir of its own (outside pytest's
    shared temporary root, which concurrent pytest sessions prune)."""
    root = Path(tempfile.mkdtemp(prefix="symphony-not-set-up-"))
    data_dir, config = root / "data", root / "up.toml"
    config.write_text("embedded_fast = true\n")
    try:
        process = start_up(data_dir, config, root / "up.out")
        try:
            yield data_dir
        finally:
            stop_up(process)
    finally:
        shutil.rmtree(root, ignore_errors=True)


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
