"""The evidence bundle: valid against its schema, signed, verifiable, tamper-evident,
and a CI gate on the attestation gap.

Method: hand-built records and test results; `symphony evidence keygen`,
`bundle` and `verify` run as real processes; then the bundle is changed in the
ways a forger would (edit a number, re-hash without the key, drop a section,
verify with another key) and each must fail with its reason.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import asyncpg
import jsonschema

from repair import evidence
from tests.conftest import REPO_ROOT, symphony_cli
from tests.repair.helpers import Stream, ago, executed_payment

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="5" failures="0" errors="0" skipped="1">
<testcase classname="tests.chaos.test_blackhole" name="test_blackhole_is_one_ghost" time="2.5"/>
<testcase classname="tests.relayer.test_crash" name="test_kill_after_rail_success" time="3.0"/>
<testcase classname="tests.ops.test_bcdr" name="test_database_restore_keeps_ledger" time="1.0"/>
<testcase classname="tests.sidecar.test_policy" name="test_revocation_propagates" time="1.0">
  <properties><property name="policy_propagation_seconds" value="1.7"/></properties></testcase>
<testcase classname="tests.bench" name="test_skipped_region" time="0"><skipped message="no"/></testcase>
</testsuite></testsuites>
"""


def test_schema_is_2020_12_and_keeps_the_reference_structure() -> None:
    schema = evidence.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    reference = json.loads(Path("/work/shared/reference/evidence-bundle.reference.schema.json").read_text()) \
        if Path("/work/shared/reference/evidence-bundle.reference.schema.json").exists() else None
    if reference is not None:
        kept = set(reference["required"]) & set(schema["required"])
        assert kept == set(reference["required"])  # every reference section is still there
    for section in ("idempotency_metrics", "retry_metrics", "ingress_attestation", "failure_injection_results",
                    "bcdr", "stress_test_summary", "revocation_bounds", "dlq_metrics"):
        assert section in schema["required"]
    gap = schema["properties"]["ingress_attestation"]["properties"]["attestation_gap"]
    assert gap["required"] == ["ingress_count", "terminal_events", "gap", "unattested", "pending_executions",
                               "status"]
    security = schema["properties"]["security_enforcement"]["properties"]
    assert set(security) == {"mypy_strict", "ruff", "dependency_audit"}
    assert schema["properties"]["dlq_metrics"]["required"] == ["records_entered", "records_recovered",
                                                               "records_terminal"]


async def _clean_world(db: asyncpg.Connection) -> Stream:
    stream = Stream(db)
    await stream.genesis()
    for _ in range(3):
        await executed_payment(stream)
    replay, seq = await stream.ingress()
    await stream.outcome(replay, seq, "replayed", 201)
    await stream.heartbeat(ago(seconds=1))
    return stream


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "signing.pem", tmp_path / "signing.pub.pem"
    made = symphony_cli("evidence", "keygen", "--private", str(private), "--public", str(public))
    assert made.returncode == 0, made.stderr
    return private, public


async def test_bundle_validates_signs_verifies_and_detects_tampering(
        db: asyncpg.Connection, database_url: str, tmp_path: Path) -> None:
    await _clean_world(db)
    private, public = _keys(tmp_path)
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    out = tmp_path / "bundle.json"
    built = symphony_cli("evidence", "bundle", "--out", str(out), "--test-results", str(junit), "--signing-key",
                         str(private), "--repo", str(REPO_ROOT), "--database-url", database_url)
    assert built.returncode == 0, built.stderr
    bundle = json.loads(out.read_text())
    jsonschema.Draft202012Validator(evidence.schema(), format_checker=jsonschema.FormatChecker()).validate(bundle)
    gap = bundle["ingress_attestation"]["attestation_gap"]
    assert gap == {"ingress_count": 4, "terminal_events": 4, "gap": 0, "unattested": 0, "pending_executions": 0,
                   "status": "PASS"}
    assert bundle["ingress_attestation"]["chain_verification"]["status"] == "OK"
    assert bundle["idempotency_metrics"]["duplicate_requests"] == 1
    assert bundle["idempotency_metrics"]["idempotency_success_rate"] == 100.0
    assert bundle["test_evidence"]["tests_executed"] == 4 and bundle["test_evidence"]["tests_skipped"] == 1
    names = [s["name"] for s in bundle["failure_injection_results"]["scenarios"]]
    assert any("blackhole" in n for n in names) and any("kill_after" in n for n in names)
    assert bundle["bcdr"]["database_restore"]["status"] == "pass"
    assert bundle["revocation_bounds"]["measured_policy_propagation_seconds"] == 1.7
    assert bundle["revocation_bounds"]["worst_case_revocation_seconds"] == 4 * 3600 + 60
    assert bundle["dlq_metrics"] == {"records_entered": 0, "records_recovered": 0, "records_terminal": 0}
    assert bundle["source_provenance"]["commit_hash"] == evidence._git(REPO_ROOT, "rev-parse", "HEAD")
    assert bundle["immutability"]["bundle_hash"] == hashlib.sha256(evidence.canonical_bytes(bundle)).hexdigest()

    ok = symphony_cli("evidence", "verify", str(out), "--public-key", str(public))
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stdout + ok.stderr

    def write(name: str, data: dict) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return path

    edited = json.loads(out.read_text())
    edited["ingress_attestation"]["attestation_gap"]["ingress_count"] = 3
    result = symphony_cli("evidence", "verify", str(write("edited.json", edited)), "--public-key", str(public))
    assert result.returncode == 1 and "hash" in result.stdout
    edited["immutability"]["bundle_hash"] = hashlib.sha256(evidence.canonical_bytes(edited)).hexdigest()
    result = symphony_cli("evidence", "verify", str(write("rehashed.json", edited)), "--public-key", str(public))
    assert result.returncode == 1 and "signature" in result.stdout
    dropped = json.loads(out.read_text())
    del dropped["dlq_metrics"]
    result = symphony_cli("evidence", "verify", str(write("dropped.json", dropped)), "--public-key", str(public))
    assert result.returncode == 1 and "schema" in result.stdout and "dlq_metrics" in result.stdout
    (tmp_path / "other").mkdir()
    _, other_public = _keys(tmp_path / "other")
    result = symphony_cli("evidence", "verify", str(out), "--public-key", str(other_public))
    assert result.returncode == 1 and "key" in result.stdout
    missing = symphony_cli("evidence", "verify", str(out), "--public-key", str(tmp_path / "nope.pem"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


async def test_bundle_exits_non_zero_when_the_gap_is_not_zero(
        db: asyncpg.Connection, database_url: str, tmp_path: Path) -> None:
    stream = await _clean_world(db)
    await stream.ingress("bank-a", at=ago(minutes=5))  # a ghost
    private, public = _keys(tmp_path)
    out = tmp_path / "bundle.json"
    built = symphony_cli("evidence", "bundle", "--out", str(out), "--signing-key", str(private), "--repo",
                         str(REPO_ROOT), "--database-url", database_url)
    assert built.returncode == 1 and "attestation gap = 1" in built.stderr
    bundle = json.loads(out.read_text())  # still written and signed: the failure is evidence too
    assert bundle["ingress_attestation"]["attestation_gap"]["status"] == "FAIL"
    assert len(bundle["ingress_attestation"]["ghosts"]) == 1
    assert symphony_cli("evidence", "verify", str(out), "--public-key", str(public)).returncode == 0
    nokey = symphony_cli("evidence", "bundle", "--out", str(out), "--database-url", database_url)
    assert nokey.returncode == 2 and "signing key" in nokey.stderr
