"""The service's test-only fault switch cannot be turned on by configuration alone,
and `symphony chaos` refuses to run without a system to run against."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import symphony_cli


def test_service_refuses_fault_file_without_the_flag(tmp_path: Path) -> None:
    """Goal: a test_fault_file in production configuration is refused at start (exit 2), not honoured."""
    result = symphony_cli("service", "--data-dir", str(tmp_path),
                          env={"SYMPHONY_SERVICE_TEST_FAULT_FILE": str(tmp_path / "faults.json")})
    assert result.returncode == 2
    assert "--enable-test-faults" in result.stderr
    assert "Traceback" not in result.stderr


def test_chaos_run_needs_a_running_system(tmp_path: Path) -> None:
    """Goal: no `symphony up` on the data dir is a clear usage error, not a traceback."""
    result = symphony_cli("chaos", "run", "--scenario", "rail-down", "--duration", "1",
                          "--data-dir", str(tmp_path), "--database-url", "postgresql://x@127.0.0.1:1/x")
    assert result.returncode == 2, result.stderr
    assert "symphony up" in result.stderr
    assert "Traceback" not in result.stderr
