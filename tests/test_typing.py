"""The code base type-checks: mypy over every package, as configured in pyproject.toml.

A failure lists mypy's findings; fix them (or, where mypy is wrong, a
narrow `# type: ignore[code]` with the reason beside it).
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_mypy_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
