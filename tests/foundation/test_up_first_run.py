"""First run of a real `symphony up`: a daemon that dies comes back, and `demo
traffic` finds the sidecar and tells the truth about failures (issue 15 item 7).

Method: one `symphony up` on a fresh data dir with up's DEFAULT restart policy
(no child_restarts_max in its config), started while something holds port 8080
so the sidecar cannot take the port `demo traffic` used to assume. Then, as an
operator would: `symphony demo traffic --data-dir DIR` (no --target); kill -9 of
the payments service and a wait (with a deadline) for `up` to start it again:
a new pid and a restart count in run/up.json, the service answering on its
endpoint, demo traffic through it succeeding; demo traffic whose requests fail
(unknown participant, nothing listening) exits 1 with a summary; and demo
traffic for a data dir with no `up`, or a stale run/up.json, exits 2.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, server_user_dir, symphony_cli

READY_TIMEOUT_SECONDS = 240
RESTART_TIMEOUT_SECONDS = 60
DEMO_PORT = 8080


def _clean_env() -> dict[str, str]:
    """No settings that would point `up` or the CLI at another system."""
    return {k: v for k, v in os.environ.items()
            if k not in ("SYMPHONY_DATABASE_URL", "SYMPHONY_DATA_DIR", "SYMPHONY_DEMO_TARGET")
            and not k.startswith("SYMPHONY_UP_")}


@dataclass
class RunningUp:
    process: subprocess.Popen[bytes]
    data_dir: Path
    out_path: Path

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / "run" / "up.json").read_text()))

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "symphony", *args], capture_output=True, text=True,
                              timeout=180, cwd=REPO_ROOT, env={**_clean_env(), **(env or {})})


def _hold_port(port: int) -> socket.socket | None:
    """Listen on `port` so nothing else can; None when something already does."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    sock.listen(1)
    return sock


@pytest.fixture(scope="module")
def running_up() -> Iterator[RunningUp]:
    with server_user_dir("up-first-run") as data_dir:  # the server user must reach it
        yield from _running_up(data_dir)


def _running_up(data_dir: Path) -> Iterator[RunningUp]:
    config = data_dir / "up.toml"
    config.write_text("embedded_fast = true\n")  # default restart policy on purpose
    out_path = data_dir / "up.out"
    holder = _hold_port(DEMO_PORT)
    with out_path.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "symphony", "up", "--data-dir", str(data_dir),
                                    "--config", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=REPO_ROOT, env=_clean_env())
    system = RunningUp(process, data_dir, out_path)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while "ready" not in system.output().splitlines():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"symphony up did not become ready:\n{system.output()[-4000:]}")
            time.sleep(0.5)
        yield system
    finally:
        if holder is not None:
            holder.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _traffic(system: RunningUp, *args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    return system.cli("demo", "traffic", "--data-dir", str(data_dir or system.data_dir), "--requests", "20",
                      "--concurrency", "4", "--seed", "7", *args)


def test_demo_traffic_finds_the_sidecar_of_up(running_up: RunningUp) -> None:
    """The sidecar is not on 8080 here; demo traffic reads run/up.json and succeeds."""
    ingress = running_up.state()["children"]["sidecar"]["endpoints"]["ingress"]
    assert not ingress.endswith(f":{DEMO_PORT}"), ingress  # the old fixed target would have missed it
    result = _traffic(running_up, "--duplicate-rate", "0.2", "--invalid-rate", "0.1")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["target"] == ingress + "/v1/payments"
    assert summary["failed"] == 0 and summary["by_disposition"].get("executed", 0) > 0, summary
    assert result.stderr == ""


def test_demo_traffic_exits_1_when_requests_fail(running_up: RunningUp) -> None:
    """Refused requests (an unregistered participant: 403 at the sidecar) and
    unanswered ones (nothing listening) each make the exit code 1 with a summary."""
    refused = _traffic(running_up, "--participant", "nobody-registered", "--policy-version", "1")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    summary = json.loads(refused.stdout)
    assert summary["failed"] == 20 and not any(status.startswith("2") for status in summary["by_status"]), summary
    assert refused.stderr.count("\n") == 1 and "20 of 20 requests failed" in refused.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    unreachable = _traffic(running_up, "--target", f"http://127.0.0.1:{closed_port}")
    assert unreachable.returncode == 1, unreachable.stdout + unreachable.stderr
    assert json.loads(unreachable.stdout)["failed"] == 20 and "no answer" in unreachable.stderr


def test_demo_traffic_without_up_is_a_usage_error(running_up: RunningUp, tmp_path: Path) -> None:
    missing = _traffic(running_up, data_dir=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert "no `symphony up` is running" in missing.stderr and "Traceback" not in missing.stderr
    # A run/up.json left behind by an `up` that was killed: its pid is gone.
    (tmp_path / "run").mkdir()
    stale = running_up.state()
    stale["up_pid"] = _a_dead_pid()
    (tmp_path / "run" / "up.json").write_text(json.dumps(stale))
    result = _traffic(running_up, data_dir=tmp_path)
    assert result.returncode == 2 and "not running" in result.stderr, result.stderr


def _a_dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_up_restarts_a_daemon_killed_with_sigkill(running_up: RunningUp) -> None:
    """Default policy: the killed service comes back (new pid, counted, logged),
    serves on its endpoint, and payments flow through it again."""
    before = running_up.state()["children"]["service"]
    assert before["restarts"] == 0
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + RESTART_TIMEOUT_SECONDS
    after = before
    while after["pid"] == before["pid"]:
        assert running_up.process.poll() is None, f"up stopped:\n{running_up.output()[-3000:]}"
        assert time.monotonic() < deadline, f"service not restarted:\n{running_up.output()[-3000:]}"
        time.sleep(0.2)
        after = running_up.state()["children"]["service"]
    assert after["restarts"] == 1 and after["endpoints"] == before["endpoints"]
    assert f"up: service was killed by SIGKILL; restarted as pid {after['pid']}" in running_up.output()
    metrics = after["endpoints"]["metrics"]
    while True:  # serving again: its admin endpoint answers
        try:
            with urllib.request.urlopen(metrics, timeout=5) as response:
                assert response.status == 200
                break
        except OSError:
            assert time.monotonic() < deadline, f"restarted service not serving:\n{running_up.output()[-3000:]}"
            time.sleep(0.2)
    result = _traffic(running_up)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["by_disposition"].get("executed", 0) > 0
    assert running_up.process.poll() is None  # one death did not stop the system


def test_a_new_user_builds_and_verifies_the_evidence_bundle(running_up: RunningUp, tmp_path: Path) -> None:
    """Goal: after `symphony up` the README's bundle -> verify works with no key
    set up by hand (issue 14 item 4). Method: up created the evidence key (private
    0600) under the data dir and printed where its public key is; demo traffic;
    `evidence bundle --out F --data-dir D` with no --signing-key; `evidence verify
    F --public-key <the printed path>` exits 0."""
    keys = running_up.data_dir / "keys"
    private, public = keys / "evidence-signing.pem", keys / "evidence-signing.pub.pem"
    assert private.stat().st_mode & 0o777 == 0o600
    assert f"repair evidence public key: {public} (ed25519:" in running_up.output()
    traffic = _traffic(running_up)
    assert traffic.returncode == 0, traffic.stdout + traffic.stderr
    out = tmp_path / "bundle.json"
    built = running_up.cli("evidence", "bundle", "--out", str(out), "--data-dir", str(running_up.data_dir))
    assert out.exists() and built.returncode in (0, 1), built.stdout + built.stderr  # 1: a gap (still signed)
    verified = running_up.cli("evidence", "verify", str(out), "--public-key", str(public))
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stdout + verified.stderr


def test_up_creates_the_gap_statement_key_and_prints_its_verifier_key(running_up: RunningUp) -> None:
    """Goal: `symphony up` gives repair a gap-statement key (private 0600) and
    prints where its verifier key and the statements are, so a new user can
    verify a published statement (docs/verifying.md, "Gap statements"). Method:
    look at the key files and up's output; repair started with the key (an
    unusable one would have stopped it at start)."""
    from symphony.tlog import note

    keys = running_up.data_dir / "keys"
    private, vkey = keys / "gap-statement.pem", keys / "gap-statement.vkey"
    assert private.stat().st_mode & 0o777 == 0o600
    verifier = note.Verifier.parse(vkey.read_text())
    assert verifier.name == "symphony.example/local/gap-statements" and verifier.signature_type == note.ED25519
    published = running_up.data_dir / "tlog" / "gap-statements"
    assert f"repair gap statements: {published}/<window start> (verifier key: {vkey};" in running_up.output()
    assert running_up.state()["children"]["repair"]["restarts"] == 0


README = REPO_ROOT / "README.md"
PROOF_HEADING = "### Prove one payment to an outsider"


def _readme_commands(heading: str) -> list[str]:
    """The command lines of the first ```sh block after `heading` in the README."""
    text = README.read_text()
    assert heading in text, f"the README lost its section {heading!r}"
    after = text.split(heading, 1)[1]
    block = after.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_proves_one_payment_to_an_outsider(running_up: RunningUp, tmp_path: Path) -> None:
    """Goal: the README's three commands that prove one payment to an outsider
    work verbatim after `symphony up` (issue 13: send a payment, write its
    inclusion proof, verify it offline against <data_dir>/keys/policy.txt).
    Method: a working directory laid out as the README assumes (a checkout's
    `.venv`, the default data dir `.symphony`: symlinks to this test's
    virtualenv and to the running `up`'s data dir); the exact lines of the
    README's block run by bash there, one after the other; each exits 0, and
    `verify` prints OK. Then, so it cannot pass vacuously: `up` wrote the
    policy; the proof file exists, and the record it carries is the INGRESS of
    the attestation id the first command wrote."""
    commands = _readme_commands(PROOF_HEADING)
    assert len(commands) == 3, commands
    venv = Path(sys.prefix)
    assert (venv / "bin" / "symphony").exists(), f"no symphony console script in {venv}"
    (tmp_path / ".venv").symlink_to(venv, target_is_directory=True)
    (tmp_path / ".symphony").symlink_to(running_up.data_dir, target_is_directory=True)
    assert (running_up.data_dir / "keys" / "policy.txt").exists(), "symphony up wrote no policy file"
    results = []
    for command in commands:
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                                env=_clean_env())
        assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stdout}{result.stderr}"
        results.append(result)
    assert "OK: verified" in results[-1].stdout, results[-1].stdout
    [attestation_id] = (tmp_path / "payment.id").read_text().split()
    from symphony.tlog import proof

    parsed = proof.ProofFile.parse((tmp_path / "payment.tlog-proof").read_bytes())
    assert parsed.extra is not None
    _, seq, record_attestation, record_type = struct.unpack_from("<IQQH", parsed.extra)
    assert record_attestation == int(attestation_id) and seq == parsed.index + 1
    assert record_type == 2, record_type  # INGRESS (journal/FORMAT.md)
