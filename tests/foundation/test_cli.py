"""The `symphony` command as an operator meets it: real processes, real signals.

Method: run the CLI as a subprocess; `symphony up` on an empty data dir must
print `ready`, stop cleanly on SIGTERM and leave no PostgreSQL behind; operating
errors must be one line on stderr with a non-zero exit code and no traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from symphony import config
from symphony.errors import ConfigError
from tests.conftest import REPO_ROOT, symphony_cli, wait_up_ready

def _postgres_processes_for(pgdata: Path) -> list[int]:
    """PIDs of postgres processes whose command line names this data dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "postgres" in cmdline and str(pgdata) in cmdline:
            found.append(int(entry.name))
    return found


def _assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]


def test_up_reaches_ready_and_stops_cleanly_on_sigterm(tmp_path: Path, server_dir: Path) -> None:
    """Goal: `symphony up` starts every daemon on an embedded PostgreSQL, says
    "ready", and on SIGTERM stops them and the server, exit 0, leaving no
    postgres process and no state file. Method: a real `up` process; its data
    directory is outside pytest's tmp_path (tests/conftest.py: server_user_dir),
    where the unprivileged server user can always reach it."""
    data_dir = server_dir / "data"
    up_config = tmp_path / "up.toml"
    up_config.write_text("embedded_fast = true\n")
    env = {key: value for key, value in os.environ.items() if key != "SYMPHONY_DATABASE_URL"}
    process = subprocess.Popen(
        [sys.executable, "-m", "symphony", "up", "--data-dir", str(data_dir), "--config", str(up_config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env,
    )
    try:
        lines = wait_up_ready(process)
        # Every daemon of the system is up, none skipped.
        for endpoint in ("sidecar ingress:", "service ", "relayer ", "forwarder ", "repair ", "dashboard "):
            assert any(line.startswith(endpoint) for line in lines), (endpoint, lines)
        assert any(line.startswith("database: embedded PostgreSQL") for line in lines)
        # The archive signing key exists, readable by its owner only, and up says where its public half is.
        public_key = data_dir / "keys" / "archive-signing.pub"
        assert any(line.startswith(f"repair archive public key: {public_key}") for line in lines), lines
        assert (data_dir / "keys" / "archive-signing.pem").stat().st_mode & 0o777 == 0o600
        # The password never appears in what `up` prints.
        password = (data_dir / "pg-password").read_text().strip()
        assert all(password not in line for line in lines)
        # While up runs, `symphony db url` gives a DSN that works.
        url = symphony_cli("db", "url", "--data-dir", str(data_dir), env=env)
        assert url.returncode == 0 and url.stdout.startswith("postgresql://symphony:")
        migrate = symphony_cli("migrate", "--data-dir", str(data_dir), env=env)
        assert migrate.returncode == 0 and "database is up to date" in migrate.stdout, migrate.stderr
        assert _postgres_processes_for(data_dir / "pg")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # pg_ctl stop -w returns once the postmaster has exited; its children are
    # reaped by then, but allow the kernel a bounded moment to drop them.
    deadline = time.monotonic() + 10
    while _postgres_processes_for(data_dir / "pg") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _postgres_processes_for(data_dir / "pg") == []
    assert not (data_dir / "embedded-db.json").exists()
    gone = symphony_cli("db", "url", "--data-dir", str(data_dir), env=env)
    _assert_one_line_error(gone, 3, "no embedded server is running")


def test_bad_config_is_one_line_with_key_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "up.toml"
    bad.write_text("node_id = 'has spaces'\n")
    _assert_one_line_error(symphony_cli("up", "--config", str(bad), "--data-dir", str(tmp_path)), 2, "node_id")
    bad.write_text("no_such_key = 1\n")
    _assert_one_line_error(symphony_cli("up", "--config", str(bad), "--data-dir", str(tmp_path)), 2, "no_such_key")
    bad.write_text("this is not toml = = =\n")
    _assert_one_line_error(symphony_cli("up", "--config", str(bad), "--data-dir", str(tmp_path)), 2, "not valid TOML")
    _assert_one_line_error(
        symphony_cli("up", "--config", str(tmp_path / "missing.toml"), "--data-dir", str(tmp_path)),
        2, "configuration file not found")


def test_unreachable_database_is_one_line_error() -> None:
    result = symphony_cli("migrate", "--database-url", "postgresql://symphony:hunter2@127.0.0.1:1/symphony")
    _assert_one_line_error(result, 3, "cannot connect to PostgreSQL at postgresql://symphony:***@127.0.0.1:1/")
    assert "hunter2" not in result.stderr
    malformed = symphony_cli("migrate", "--database-url", "not a url")
    assert malformed.returncode == 3 and "Traceback" not in malformed.stderr


def test_migrate_against_database_url(database_url: str) -> None:
    result = symphony_cli("migrate", "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    assert "database is up to date" in result.stdout


def test_unknown_command_and_help() -> None:
    assert symphony_cli("--help").returncode == 0
    _assert_one_line_error(symphony_cli("frobnicate"), 2, "unknown command")


class _Sample(config.DaemonConfig, kw_only=True, forbid_unknown_fields=True):
    port: int = 8080
    ratio: float = 0.5
    enabled: bool = False
    routes: list[str] = msgspec.field(default_factory=list)


def test_config_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "sample.toml"
    path.write_text("port = 9000\nratio = 0.25\n")
    env = {"SYMPHONY_SAMPLE_PORT": "9100", "SYMPHONY_SAMPLE_ENABLED": "true",
           "SYMPHONY_SAMPLE_ROUTES": '["a", "b"]', "SYMPHONY_DATABASE_URL": "postgresql://x@h/db"}
    loaded = config.load(_Sample, "sample", path, environ=env)
    assert (loaded.port, loaded.ratio, loaded.enabled, loaded.routes) == (9100, 0.25, True, ["a", "b"])
    assert loaded.database_url == "postgresql://x@h/db"
    assert config.load(_Sample, "sample", None, environ={}).port == 8080


def test_config_refuses_invalid_values_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$\.port"):
        config.load(_Sample, "sample", None, environ={"SYMPHONY_SAMPLE_PORT": "eighty"})
    with pytest.raises(ConfigError, match="log_level"):
        config.load(_Sample, "sample", None, environ={"SYMPHONY_SAMPLE_LOG_LEVEL": "loud"})
