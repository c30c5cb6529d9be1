"""Fixtures for the journal tests: stream directories and child processes.

Segments are small here (64 KiB) so rotation happens within a few hundred
records; nothing waits on wall-clock time except bounded timeouts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL_SEGMENT = 64 * 1024


@pytest.fixture
def stream_dir(tmp_path: Path) -> Path:
    """A not-yet-existing stream directory following the layout convention."""
    return tmp_path / "journal" / "node-a" / "0"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONOPTIMIZE", None)  # assertions stay on (STYLE.md section 1)
    return env


def python_child(code: str, *args: str, **popen: object) -> subprocess.Popen[str]:
    """Start `python -c code args...` with the repo importable."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=child_env(), text=True, **popen,  # type: ignore[arg-type]
    )


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=child_env(), text=True, capture_output=True, timeout=timeout,
    )
