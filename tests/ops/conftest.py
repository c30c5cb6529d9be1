"""Fixtures for the operations tests: systemd-analyze, stubbed unit copies.

`systemd-analyze verify` checks that every ExecStart= binary exists and is
executable, and fails ("Command ... is not executable") otherwise. The real
path, /opt/symphony/venv/bin/symphony, exists only on an installed host, so the
tests verify a temporary copy of the units in which that path is replaced by a
stub executable; the arguments stay as written, and nothing else changes.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ops.ops_files import REPO_ROOT, SYSTEMD_DIR, VENV_SYMPHONY, unit_names

ENSURE_SCRIPT = REPO_ROOT / "scripts" / "ensure_ops_tools.sh"


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """The systemd-analyze binary, installed by scripts/ensure_ops_tools.sh if missing."""
    found = shutil.which("systemd-analyze")
    if found is None:
        result = subprocess.run(["bash", str(ENSURE_SCRIPT)], capture_output=True, text=True, timeout=600)
        found = shutil.which("systemd-analyze")
        if found is None:
            pytest.fail(f"systemd-analyze is required by tests/ops and could not be installed:\n{result.stderr}")
    return found


@pytest.fixture(scope="session")
def stubbed_units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of systemd/ whose ExecStart binary is a stub that exists."""
    directory = tmp_path_factory.mktemp("units")
    stub = directory / "symphony-stub"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for name in unit_names():
        text = (SYSTEMD_DIR / name).read_text()
        (directory / name).write_text(text.replace(f"ExecStart={VENV_SYMPHONY} ", f"ExecStart={stub} "))
    return directory

