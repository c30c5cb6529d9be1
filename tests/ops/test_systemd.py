"""The systemd units: valid for systemd, hardened, and wired to the daemons' lifecycle.

Method: `systemd-analyze verify` on a stubbed copy of each unit (see conftest)
must exit 0 with nothing on stderr, because verify exits 0 on unknown keys and
only warns; `systemd-analyze security --offline=yes` must rate every daemon at
an overall exposure of 2.0 or less. The remaining tests read the unit files and
check the contract with the daemons: Type=notify with a watchdog, restarts that
stop on configuration and start-up errors (exit codes from symphony.errors),
the journal directory, the order of start-up, and the hardening the issue asks.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from symphony.db import CONNECT_TIMEOUT_SECONDS
from symphony.errors import EXIT_STARTUP, EXIT_USAGE
from tests.ops.ops_files import (
    DAEMONS, SYSTEMD_DIR, TARGET, VENV_SYMPHONY, drain_timeout_seconds, duration_seconds,
    example_config, unit, unit_names,
)

EXPOSURE_MAX = 2.0
JOURNAL_STATE_DIRECTORY = "symphony/journal"
# How verify and security name each unit: the template is checked as an instance.
CHECKED_AS = {
    "symphony-sidecar.service": "symphony-sidecar.service",
    "symphony-forwarder.service": "symphony-forwarder.service",
    "symphony-relayer@.service": "symphony-relayer@1.service",
    "symphony-repair.service": "symphony-repair.service",
    "symphony-dashboard.service": "symphony-dashboard.service",
    "symphony-witness.service": "symphony-witness.service",
    TARGET: TARGET,
}
DAEMON_UNITS = [file_name for file_name, _ in DAEMONS.values()]
DASHBOARD_UNIT = "symphony-dashboard.service"


def run_analyze(binary: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """systemd-analyze without a pager or colours, bounded in time."""
    return subprocess.run(
        [binary, "--no-pager", *args], capture_output=True, text=True, timeout=60, cwd=cwd,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_COLORS": "0", "LANG": "C.UTF-8"},
    )


def test_every_unit_is_checked() -> None:
    """Goal: a unit added to systemd/ without a check here fails this test."""
    assert sorted(CHECKED_AS) == unit_names()


@pytest.mark.parametrize("file_name", sorted(CHECKED_AS))
def test_verify_is_clean(systemd_analyze: str, stubbed_units: Path, file_name: str) -> None:
    """Goal: systemd loads the unit without an error or a warning."""
    result = run_analyze(systemd_analyze, "verify", str(stubbed_units / CHECKED_AS[file_name]),
                         cwd=stubbed_units)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_verify_reports_what_the_check_relies_on(systemd_analyze: str, stubbed_units: Path,
                                                 tmp_path: Path) -> None:
    """Goal: the harness can fail. An unknown key only warns (exit 0, stderr),
    and the real ExecStart path fails verify where Symphony is not installed,
    which is why the other tests verify a stubbed copy."""
    for name in unit_names():
        (tmp_path / name).write_text((stubbed_units / name).read_text())
    sidecar = tmp_path / "symphony-sidecar.service"
    sidecar.write_text(sidecar.read_text().replace("[Service]\n", "[Service]\nNoSuchSetting=1\n"))
    result = run_analyze(systemd_analyze, "verify", str(sidecar), cwd=tmp_path)
    assert result.returncode == 0
    assert "NoSuchSetting" in result.stderr

    if not Path(VENV_SYMPHONY).exists():
        real = run_analyze(systemd_analyze, "verify", str(SYSTEMD_DIR / "symphony-sidecar.service"),
                           cwd=SYSTEMD_DIR)
        assert real.returncode != 0
        assert VENV_SYMPHONY in real.stderr


@pytest.mark.parametrize("file_name", [*DAEMON_UNITS, DASHBOARD_UNIT])
def test_security_exposure_is_at_most_2(systemd_analyze: str, stubbed_units: Path, file_name: str) -> None:
    """Goal: each daemon's sandbox rates 2.0 or better ("OK") in systemd's own score."""
    checked = CHECKED_AS[file_name]
    threshold = str(int(EXPOSURE_MAX * 10))  # systemd scores exposure 0.0-10.0 as 0-100
    result = run_analyze(systemd_analyze, "security", "--offline=yes", f"--threshold={threshold}",
                         str(stubbed_units / checked), cwd=stubbed_units)
    match = re.search(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(2))
    assert exposure <= EXPOSURE_MAX, f"{checked}: exposure {exposure}\n{result.stdout}"
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_lifecycle_contract(daemon: str) -> None:
    """Goal: the unit runs the daemon the way symphony.lifecycle expects."""
    file_name = DAEMONS[daemon][0]
    service = unit(file_name)
    assert service.one("Service", "Type") == "notify"
    assert service.one("Service", "NotifyAccess") == "main"
    assert duration_seconds(service.one("Service", "WatchdogSec")) >= 10
    assert service.one("Service", "Restart") == "on-failure"
    # SIGTERM reaches the main process only, as in a container, so a daemon
    # with worker processes stops them itself, the same way under both.
    assert service.one("Service", "KillMode") == "mixed"
    prevented = {int(code) for code in service.words("Service", "RestartPreventExitStatus")}
    assert {EXIT_USAGE, EXIT_STARTUP} <= prevented
    assert service.one("Service", "User") == "symphony"
    assert service.one("Service", "Group") == "symphony"
    assert service.one("Service", "ExecStart") == (
        f"{VENV_SYMPHONY} {daemon} --config /etc/symphony/{daemon}.toml")
    assert service.values("Service", "EnvironmentFile")[0] == f"/etc/symphony/{daemon}.env"
    assert "PYTHONOPTIMIZE" in service.words("Service", "UnsetEnvironment")
    assert not any("PYTHONOPTIMIZE" in v for v in service.values("Service", "Environment"))
    assert service.one("Unit", "PartOf") == TARGET
    assert service.one("Install", "WantedBy") == TARGET
    assert int(service.one("Unit", "StartLimitBurst")) > 0


def test_dashboard_unit() -> None:
    """Goal: the dashboard runs like the daemons (notify, restart, user, target),
    under the repair area's settings, with its token as a systemd credential
    (never in the environment file or the command line)."""
    service = unit(DASHBOARD_UNIT)
    assert service.one("Service", "Type") == "notify"
    assert service.one("Service", "Restart") == "on-failure"
    assert EXIT_USAGE in {int(code) for code in service.words("Service", "RestartPreventExitStatus")}
    assert (service.one("Service", "User"), service.one("Service", "Group")) == ("symphony", "symphony")
    assert service.one("Service", "ExecStart") == f"{VENV_SYMPHONY} dashboard --config /etc/symphony/repair.toml"
    assert service.one("Service", "LoadCredential") == "dashboard-token:/etc/symphony/dashboard-token"
    assert "SYMPHONY_REPAIR_DASHBOARD_TOKEN_FILE=%d/dashboard-token" in service.values("Service", "Environment")
    assert "PYTHONOPTIMIZE" in service.words("Service", "UnsetEnvironment")
    assert service.one("Unit", "PartOf") == TARGET and service.one("Install", "WantedBy") == TARGET
    # It never pings the watchdog, so the unit must not ask for it.
    assert service.values("Service", "WatchdogSec") == []
    drain = drain_timeout_seconds(example_config("repair") or {})
    assert drain is not None and duration_seconds(service.one("Service", "TimeoutStopSec")) > drain + 10


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_stop_timeout_exceeds_the_drain(daemon: str) -> None:
    """Goal: systemd never SIGKILLs a drain that is still within the daemon's own bound."""
    drain = drain_timeout_seconds(example_config(daemon))
    assert drain is not None, f"{daemon} documents no *shutdown*/*drain* timeout key"
    stop = duration_seconds(unit(DAEMONS[daemon][0]).one("Service", "TimeoutStopSec"))
    assert stop > drain + 10, f"TimeoutStopSec {stop}s is not above the {drain}s drain"


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_start_timeout_exceeds_the_start_up_wait(daemon: str) -> None:
    """Goal: a daemon that waits for PostgreSQL at start reports exit code 3 itself
    (no restart loop) instead of being killed by systemd's start timeout. Method:
    its start-up wait is its startup_*_seconds key where it has one (it retries
    until then), else one connection attempt, bounded by the core's
    CONNECT_TIMEOUT_SECONDS; TimeoutStartSec must leave room above it."""
    settings = example_config(daemon)
    waits = [float(v) for k, v in settings.items()
             if re.fullmatch(r"startup_.*_seconds", k) and isinstance(v, int | float)]
    wait = max(waits) if waits else CONNECT_TIMEOUT_SECONDS
    start = duration_seconds(unit(DAEMONS[daemon][0]).one("Service", "TimeoutStartSec"))
    assert start > wait + 10, f"TimeoutStartSec {start}s is not above the {wait}s start-up wait"


HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
}


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_hardening(daemon: str) -> None:
    """Goal: every setting the issue names is present, with the strict value."""
    service = unit(DAEMONS[daemon][0])
    for key, expected in HARDENING.items():
        assert service.values("Service", key) == [expected], key
    assert set(service.words("Service", "RestrictAddressFamilies")) <= {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "AF_UNIX" in service.words("Service", "RestrictAddressFamilies"), "sd_notify needs AF_UNIX"
    filters = service.values("Service", "SystemCallFilter")
    assert "@system-service" in filters
    assert any(f.startswith("~") and "@privileged" in f for f in filters)
    assert int(service.one("Service", "LimitNOFILE")) >= 16384


def test_sidecar_does_not_wait_for_postgresql() -> None:
    """Goal: the sidecar attests while the database is down (the forwarder catches up)."""
    sidecar = unit("symphony-sidecar.service")
    for key in ("After", "Wants", "Requires", "Requisite", "BindsTo", "PartOf"):
        for word in sidecar.words("Unit", key):
            assert "postgres" not in word.lower(), f"sidecar {key}={word}"
            assert word != "network-online.target" or key == "After", "sidecar need not wait for the network"


def test_forwarder_starts_after_the_network_and_the_journal() -> None:
    """Goal: the forwarder starts once the network is up and the sidecar's journal exists."""
    forwarder = unit("symphony-forwarder.service")
    after = forwarder.words("Unit", "After")
    assert "network-online.target" in after
    assert "network-online.target" in forwarder.words("Unit", "Wants")
    assert "symphony-sidecar.service" in after
    assert not forwarder.values("Unit", "Requires"), "the forwarder drains the journal without the sidecar"
    assert "/var/lib/symphony/journal" in forwarder.words("Unit", "RequiresMountsFor")


def test_sidecar_and_forwarder_share_the_journal_state_directory() -> None:
    """Goal: both see /var/lib/symphony/journal, created by systemd for the same user."""
    for daemon in ("sidecar", "forwarder"):
        service = unit(DAEMONS[daemon][0])
        assert JOURNAL_STATE_DIRECTORY in service.words("Service", "StateDirectory"), daemon
        assert service.one("Service", "StateDirectoryMode") == "0750"
    for daemon in ("relayer", "repair"):
        assert not unit(DAEMONS[daemon][0]).values("Service", "StateDirectory"), daemon


def test_relayer_is_a_template_with_per_instance_overrides() -> None:
    """Goal: several relayers per host, each able to override e.g. its admin port."""
    relayer = unit("symphony-relayer@.service")
    assert "-/etc/symphony/relayer-%i.env" in relayer.values("Service", "EnvironmentFile")
    assert relayer.one("Install", "DefaultInstance")


def test_target_groups_the_daemons() -> None:
    """Goal: `systemctl enable --now symphony.target` at boot brings up what is enabled into it."""
    target = unit(TARGET)
    assert target.one("Install", "WantedBy") == "multi-user.target"
    sysusers = (SYSTEMD_DIR / "symphony.sysusers").read_text()
    assert re.search(r"^u symphony - ", sysusers, re.MULTILINE)


def test_sysusers_creates_the_service_user(systemd_analyze: str, tmp_path: Path) -> None:
    """Goal: the sysusers snippet the docs install really creates `symphony`
    (run against a scratch root, never the host's /etc)."""
    sysusers = Path(systemd_analyze).with_name("systemd-sysusers")
    if not sysusers.exists():
        pytest.skip("systemd-sysusers is not installed")
    (tmp_path / "etc").mkdir()
    result = subprocess.run([str(sysusers), f"--root={tmp_path}", str(SYSTEMD_DIR / "symphony.sysusers")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    assert re.search(r"^symphony:x:\d+:\d+:[^:]*:/var/lib/symphony:/usr/sbin/nologin$", passwd, re.MULTILINE)


def test_documentation_points_at_installed_docs() -> None:
    """Goal: every unit's Documentation= names a file the documented install puts on the
    host (docs/operations.md copies docs/*.md to /opt/symphony/docs/), and that file is in
    the repository."""
    from tests.ops.ops_files import REPO_ROOT

    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    assert "sudo install -m 0644 /path/to/symphony/docs/*.md /opt/symphony/docs/" in operations
    for name in unit_names():
        for target in unit(name).words("Unit", "Documentation"):
            assert target.startswith("file:///opt/symphony/docs/"), (name, target)
            assert (REPO_ROOT / "docs" / target.removeprefix("file:///opt/symphony/docs/")).is_file(), target
