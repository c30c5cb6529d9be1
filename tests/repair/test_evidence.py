"""The evidence bundle: valid against its schema, signed, verifiable, tamper-evident,
and a CI gate on the attestation gap.

Method: hand-built records and test results; `symphony evidence keygen`,
`bundle` and `verify` run as real processes; then the bundle is changed in the
ways a forger would (edit a number, re-hash without the key, drop a section,
verify with another key, re-sign with the forger's key and embed it) and each
must fail with its reason, while a re-formatted copy (100.0 written 100,
other whitespace) still verifies.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import asyncpg
import jsonschema
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from repair import evidence
from tests.conftest import symphony_cli
from tests.repair.helpers import Stream, ago, executed_payment

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="7" failures="0" errors="0" skipped="1">
<testcase classname="tests.chaos.test_blackhole" name="test_blackhole_is_one_ghost" time="2.5">
  <properties><property name="evidence" value="failure_injection"/></properties></testcase>
<testcase classname="tests.relayer.test_crash" name="test_kill_after_rail_success" time="3.0">
  <properties><property name="evidence" value="failure_injection"/></properties></testcase>
<testcase classname="tests.ops.test_bcdr" name="test_database_restore_keeps_ledger" time="1.0">
  <properties><property name="evidence" value="database_restore"/></properties></testcase>
<testcase classname="tests.relayer.test_store" name="test_release_unstarted_restores_previous_status" time="1.0"/>
<testcase classname="tests.service.test_service" name="test_replayed_attestation_rebuild_failover" time="1.0"/>
<testcase classname="tests.sidecar.test_policy" name="test_revocation_propagates" time="1.0">
  <properties><property name="policy_propagation_seconds" value="1.7"/></properties></testcase>
<testcase classname="tests.bench" name="test_skipped_region" time="0"><skipped message="no"/>
  <properties><property name="evidence" value="region_failover"/></properties></testcase>
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


def _repo(tmp_path: Path) -> Path:
    """A git checkout with one commit for the bundle's provenance (the tests may
    run from a copy of the repository without .git, as the mutation runner does)."""
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    if not (repo / ".git").exists():
        for args in (["init", "-q"], ["-c", "user.name=Examiner", "-c", "user.email=examiner@example.org",
                                      "commit", "-q", "--allow-empty", "-m", "release\n\nAI-Assisted: yes"]):
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
    return repo


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
                         str(private), "--repo", str(_repo(tmp_path)), "--database-url", database_url)
    assert built.returncode == 0, built.stderr
    bundle = json.loads(out.read_text())
    jsonschema.Draft202012Validator(evidence.schema(), format_checker=jsonschema.FormatChecker()).validate(bundle)
    gap = bundle["ingress_attestation"]["attestation_gap"]
    assert gap == {"ingress_count": 4, "terminal_events": 4, "gap": 0, "unattested": 0, "pending_executions": 0,
                   "status": "PASS"}
    assert bundle["ingress_attestation"]["chain_verification"]["status"] == "OK"
    assert bundle["idempotency_metrics"]["duplicate_requests"] == 1
    assert bundle["idempotency_metrics"]["idempotency_success_rate"] == 100.0
    assert bundle["test_evidence"]["tests_executed"] == 6 and bundle["test_evidence"]["tests_skipped"] == 1
    assert bundle["build_attestation"]["build_status"] == "success"
    assert bundle["build_attestation"]["build_summary"].startswith("6 tests ran: 6 passed, 0 failed; 1 skipped")
    names = [s["name"] for s in bundle["failure_injection_results"]["scenarios"]]
    assert names == ["tests.chaos.test_blackhole::test_blackhole_is_one_ghost",
                     "tests.relayer.test_crash::test_kill_after_rail_success"]  # the marked ones, nothing else
    assert bundle["failure_injection_results"]["status"] == "pass"
    assert bundle["bcdr"]["database_restore"]["status"] == "pass"
    assert [t["name"] for t in bundle["bcdr"]["database_restore"]["tests"]] == [
        "tests.ops.test_bcdr::test_database_restore_keeps_ledger"]  # not the lease test named "restores"
    assert bundle["bcdr"]["ledger_rebuild"] == {  # "rebuild" in a name proves nothing
        "status": "not_run", "tests": [], "reason": "no test marked @pytest.mark.evidence('ledger_rebuild') ran"}
    assert bundle["bcdr"]["region_failover"]["status"] == "not_run"  # marked but skipped
    assert bundle["log_anchors"]["checkpoints"]["status"] == "available"  # the log's table exists (0120)
    assert bundle["log_anchors"]["checkpoints"]["checkpoints"] == []  # and holds nothing in this world
    assert bundle["log_anchors"]["checkpoints"]["unwitnessed"] == []
    statements = bundle["log_anchors"]["gap_statements"]  # the table exists (0135); nothing signed in this world
    assert statements["status"] == "available" and statements["statements"] == []
    assert "public_key" not in bundle["immutability"]["signature"]
    assert bundle["revocation_bounds"]["measured_policy_propagation_seconds"] == 1.7
    assert bundle["revocation_bounds"]["worst_case_revocation_seconds"] == 4 * 3600 + 60
    assert bundle["dlq_metrics"] == {"records_entered": 0, "records_recovered": 0, "records_terminal": 0}
    assert bundle["source_provenance"]["commit_hash"] == evidence._git(_repo(tmp_path), "rev-parse", "HEAD")
    assert bundle["immutability"]["bundle_hash"] == hashlib.sha256(evidence.canonical_bytes(bundle)).hexdigest()
    assert bundle["immutability"]["canonicalization"] == "RFC8785-JCS-without-immutability"

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

    # The same JSON written differently (100.0 as 100, other whitespace) is the same bundle.
    text = out.read_text()
    assert '"idempotency_success_rate": 100.0' in text
    respelled = tmp_path / "respelled.json"
    respelled.write_text(json.dumps(json.loads(text.replace('"idempotency_success_rate": 100.0',
                                                            '"idempotency_success_rate": 100')), indent=None))
    assert '"idempotency_success_rate": 100,' in respelled.read_text()
    result = symphony_cli("evidence", "verify", str(respelled), "--public-key", str(public))
    assert result.returncode == 0, result.stdout + result.stderr

    # The genuine key given as 64 hex digits (not a path), and in a keyring.
    raw_hex = evidence.raw_public_key(evidence.load_public_key(str(public))).hex()
    result = symphony_cli("evidence", "verify", str(out), "--public-key", raw_hex)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr
    keyring = tmp_path / "keyring"
    keyring.write_text(f"# evidence keys\n{raw_hex} node-a evidence key\n")
    result = symphony_cli("evidence", "verify", str(out), "--keyring", str(keyring))
    assert result.returncode == 0, result.stdout + result.stderr
    result = symphony_cli("evidence", "verify", str(out))
    assert result.returncode == 2 and "--public-key" in result.stderr


async def test_a_bundle_re_signed_by_a_forger_with_the_key_embedded_fails(
        db: asyncpg.Connection, database_url: str, tmp_path: Path) -> None:
    """Goal: verify trusts only the verifier's keys, never the bundle's. Method: a
    forger edits a real bundle, re-signs it with their own key and embeds that
    public key (as older bundles carried one); verifying with the operator's real
    key must fail on the key, and so must verifying with no key."""
    await _clean_world(db)
    private, public = _keys(tmp_path)
    out = tmp_path / "bundle.json"
    built = symphony_cli("evidence", "bundle", "--out", str(out), "--signing-key", str(private), "--repo",
                         str(_repo(tmp_path)), "--database-url", database_url)
    assert built.returncode == 0, built.stderr
    forged = json.loads(out.read_text())
    forged["ingress_attestation"]["attestation_gap"]["ingress_count"] = 4000
    forger = Ed25519PrivateKey.generate()
    evidence.sign(forged, forger)
    forged["immutability"]["signature"]["public_key"] = evidence.raw_public_key(forger.public_key()).hex()
    assert evidence.verify(forged, forger.public_key()) == []  # a consistent forgery in itself
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    result = symphony_cli("evidence", "verify", str(path), "--public-key", str(public))
    assert result.returncode == 1 and "key: signed by" in result.stdout and "not a trusted key" in result.stdout
    result = symphony_cli("evidence", "verify", str(path))
    assert result.returncode == 2


async def test_the_bundle_carries_every_streams_latest_witnessed_checkpoint_with_its_cosignatures(
        db: asyncpg.Connection, database_url: str, tmp_path: Path) -> None:
    """Goal: the bundle anchors each stream epoch on its latest *witnessed*
    checkpoint, the note carrying the witnesses' cosignature lines, and names the
    stream epochs no witness cosigned. Method: in log_checkpoints, stream 0 has
    checkpoints of size 3 (cosigned by two witnesses) and 7 (not cosigned);
    stream 1 one of size 2 that nobody cosigned; build and verify the bundle."""
    await _clean_world(db)
    epoch = bytes(range(16))
    for stream, size, at in ((0, 3, ago(minutes=2)), (0, 7, ago(minutes=1)), (1, 2, ago(minutes=1))):
        await db.execute("INSERT INTO log_checkpoints (node_id, stream_id, epoch, tree_size, root, origin, note, "
                         "record_seq, cut_at) VALUES ('node-a', $1, $2, $3::bigint, $4, $5, $6, $3::bigint + 1, $7)", stream, epoch,
                         size, bytes([size]) * 32, f"origin/{stream}",
                         f"origin/{stream}\n{size}\nroot\n\n\u2014 sig\n", at)
    for witness in ("w2", "w1"):
        await db.execute("INSERT INTO log_cosignatures (node_id, stream_id, epoch, tree_size, witness, line, "
                         "cosigned_at) VALUES ('node-a', 0, $1, 3, $2, $3, 1700000000)", epoch, witness,
                         f"\u2014 {witness} c2ln\n")
    private, public = _keys(tmp_path)
    out = tmp_path / "bundle.json"
    built = symphony_cli("evidence", "bundle", "--out", str(out), "--signing-key", str(private), "--repo",
                         str(_repo(tmp_path)), "--database-url", database_url)
    assert built.returncode == 0, built.stderr
    anchors = json.loads(out.read_text())["log_anchors"]["checkpoints"]
    assert anchors["status"] == "available"
    assert [(c["stream_id"], c["tree_size"], c["root"], c["witnesses"]) for c in anchors["checkpoints"]] == [
        (0, 3, "03" * 32, ["w1", "w2"])]  # the witnessed 3, not the newer 7 no witness vouched for
    assert anchors["checkpoints"][0]["epoch"] == epoch.hex()
    assert anchors["checkpoints"][0]["note"] == "origin/0\n3\nroot\n\n\u2014 sig\n\u2014 w1 c2ln\n\u2014 w2 c2ln\n"
    assert anchors["unwitnessed"] == [{"node_id": "node-a", "stream_id": 1, "epoch": epoch.hex(),
                                       "latest_tree_size": 2}]
    assert symphony_cli("evidence", "verify", str(out), "--public-key", str(public)).returncode == 0


async def test_bundle_exits_non_zero_when_the_gap_is_not_zero(
        db: asyncpg.Connection, database_url: str, tmp_path: Path) -> None:
    stream = await _clean_world(db)
    await stream.ingress("bank-a", at=ago(minutes=5))  # a ghost
    private, public = _keys(tmp_path)
    out = tmp_path / "bundle.json"
    built = symphony_cli("evidence", "bundle", "--out", str(out), "--signing-key", str(private), "--repo",
                         str(_repo(tmp_path)), "--database-url", database_url)
    assert built.returncode == 1 and "attestation gap = 1" in built.stderr
    bundle = json.loads(out.read_text())  # still written and signed: the failure is evidence too
    assert bundle["ingress_attestation"]["attestation_gap"]["status"] == "FAIL"
    assert len(bundle["ingress_attestation"]["ghosts"]) == 1
    assert symphony_cli("evidence", "verify", str(out), "--public-key", str(public)).returncode == 0
    nokey = symphony_cli("evidence", "bundle", "--out", str(out), "--database-url", database_url)
    assert nokey.returncode == 2 and "signing key" in nokey.stderr
