"""What the evidence bundle's signature covers, the keys `evidence verify`
trusts, and where its test results come from: checked without a database.

Method: the shipped vector (tests/vectors/evidence/jcs-signing.json) is rebuilt
and compared, then recomputed with the project's functions; RFC 8785's own
published examples (section 3.2.3's sorting sample, appendix B's numbers) go
through `evidence.canonical_bytes`; keys are given to the real CLI as a PEM
file, as 64 hex digits and as a keyring; a tiny test module is run by a real
pytest with the evidence plugin and its JUnit XML read back.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from repair import evidence
from symphony.errors import SymphonyError
from tests.conftest import REPO_ROOT

VECTORS = REPO_ROOT / "tests" / "vectors" / "evidence"
# Loaded by path under its own name: tests/vectors/*/ each have a make_vectors.py.
_spec = importlib.util.spec_from_file_location("evidence_make_vectors", VECTORS / "make_vectors.py")
assert _spec is not None and _spec.loader is not None
make_vectors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_vectors)


def test_the_signing_vector_is_reproducible_and_matches_the_code() -> None:
    """Goal: the worked example of docs/verifying.md is current and is what the
    project signs. Method: rebuild it; recompute canonical bytes, hash, key id
    and signature with repair.evidence; the signature verifies."""
    vector = json.loads((VECTORS / "jcs-signing.json").read_text(encoding="utf-8"))
    assert vector == make_vectors.build()
    document = json.loads(vector["document"])
    canonical = evidence.canonical_bytes(document)
    assert canonical.hex() == vector["canonical_hex"]
    assert b"immutability" not in canonical and b"100}" in canonical  # excluded; 100.0 is written 100
    assert hashlib.sha256(canonical).hexdigest() == vector["bundle_hash"]
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["private_key_seed_hex"]))
    assert evidence.raw_public_key(key.public_key()).hex() == vector["public_key_hex"]
    assert evidence.key_id(key.public_key()) == vector["key_id"]
    assert base64.b64encode(key.sign(canonical)).decode() == vector["signature_base64"]
    public = evidence.load_public_key(vector["public_key_hex"])
    public.verify(base64.b64decode(vector["signature_base64"]), canonical)


def test_the_same_json_number_written_two_ways_has_one_canonical_form() -> None:
    """Goal: 100.0 and 100 (one JSON number) and any whitespace or key order give
    the same signed bytes. Method: canonicalise three spellings of one document."""
    spellings = ['{"b": 100.0, "a": [1E2, 0.5]}', '{"a":[100,5e-1],"b":100}', '{\n "a": [100.00, 0.50],\n "b": 1e2}']
    forms = {evidence.canonical_bytes(json.loads(text)) for text in spellings}
    assert forms == {b'{"a":[100,0.5],"b":100}'}


def test_rfc_8785_published_examples() -> None:
    """Goal: the canonical form is RFC 8785's, byte for byte. Method: the RFC's
    section 3.2.2 sample, its section 3.2.3 sorting sample and every row of
    appendix B (IEEE 754 bits -> JSON text; NaN and Infinity are refused)."""
    sample = json.loads('{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
                        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
                        ' "literals": [null, true, false]}')
    assert evidence.canonical_bytes(sample) == (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}').encode("utf-8")
    sorting = json.loads('{"\\u20ac": "Euro Sign", "\\r": "Carriage Return", "\\ufb33": "Hebrew Letter Dalet With '
                         'Dagesh", "1": "One", "\\ud83d\\ude00": "Emoji: Grinning Face", "\\u0080": "Control", '
                         '"\\u00f6": "Latin Small Letter O With Diaeresis"}')
    keys_in_order = [key for key in json.loads(evidence.canonical_bytes(sorting))]
    assert keys_in_order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    appendix_b = [
        ("0000000000000000", "0"), ("8000000000000000", "0"), ("0000000000000001", "5e-324"),
        ("8000000000000001", "-5e-324"), ("7fefffffffffffff", "1.7976931348623157e+308"),
        ("ffefffffffffffff", "-1.7976931348623157e+308"), ("4340000000000000", "9007199254740992"),
        ("c340000000000000", "-9007199254740992"), ("4430000000000000", "295147905179352830000"),
        ("44b52d02c7e14af5", "9.999999999999997e+22"), ("44b52d02c7e14af6", "1e+23"),
        ("44b52d02c7e14af7", "1.0000000000000001e+23"), ("444b1ae4d6e2ef4e", "999999999999999700000"),
        ("444b1ae4d6e2ef4f", "999999999999999900000"), ("444b1ae4d6e2ef50", "1e+21"),
        ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"), ("3eb0c6f7a0b5ed8d", "0.000001"),
        ("41b3de4355555553", "333333333.3333332"), ("41b3de4355555554", "333333333.33333325"),
        ("41b3de4355555555", "333333333.3333333"), ("41b3de4355555556", "333333333.3333334"),
        ("41b3de4355555557", "333333333.33333343"), ("becbf647612f3696", "-0.0000033333333333333333"),
        ("43143ff3c1cb0959", "1424953923781206.2"),
    ]
    for bits, text in appendix_b:
        (value,) = struct.unpack(">d", bytes.fromhex(bits))
        assert evidence.canonical_bytes({"n": value}) == b'{"n":' + text.encode() + b"}", bits
    for bits in ("7fffffffffffffff", "7ff0000000000000"):
        (value,) = struct.unpack(">d", bytes.fromhex(bits))
        with pytest.raises(ValueError):
            evidence.canonical_bytes({"n": value})


def test_public_key_hex_is_parsed_as_hex_and_a_keyring_is_read(tmp_path: Path) -> None:
    """Goal: `--public-key` takes 64 hex digits as the key itself (not a path),
    a PEM file or a file of hex; a keyring lists keys; bad input is a one-line
    usage error. Method: call the loaders with each form."""
    key = Ed25519PrivateKey.generate().public_key()
    raw = evidence.raw_public_key(key)
    assert evidence.raw_public_key(evidence.load_public_key(raw.hex())) == raw
    assert evidence.raw_public_key(evidence.load_public_key(raw.hex().upper())) == raw
    (tmp_path / "key.hex").write_text(raw.hex() + "\n")
    assert evidence.raw_public_key(evidence.load_public_key(str(tmp_path / "key.hex"))) == raw
    ring = tmp_path / "ring"
    other = Ed25519PrivateKey.generate().public_key()
    ring.write_text(f"# trusted evidence keys\n{raw.hex()} node-a\n\n{evidence.raw_public_key(other).hex()}\n")
    assert [evidence.key_id(k) for k in evidence.load_keyring(str(ring))] == [evidence.key_id(key),
                                                                               evidence.key_id(other)]
    for bad in ("zz" * 32, raw.hex()[:-2], str(tmp_path / "missing.pem")):
        with pytest.raises(SymphonyError) as caught:
            evidence.load_public_key(bad)
        assert caught.value.exit_code == 2
    ring.write_text("not-a-key\n")
    with pytest.raises(SymphonyError):
        evidence.load_keyring(str(ring))


MARKED_MODULE = '''
import pytest

@pytest.mark.evidence("database_restore")
def test_restore_drill():
    """A drill that passes."""

@pytest.mark.evidence("failure_injection")
def test_injected_fault():
    """A failure injection that fails."""
    assert False

@pytest.mark.evidence("ledger_rebuild")
@pytest.mark.skip(reason="not on this machine")
def test_skipped_rebuild():
    """Marked but not run."""

def test_database_restore_by_name_only():
    """Named like a restore test, not marked: proves nothing."""
'''


def _run_pytest(tmp_path: Path, module: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    (tmp_path / "test_marked.py").write_text(module)
    junit = tmp_path / "junit.xml"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.evidence_plugin", "--strict-markers",
                             "-p", "no:cacheprovider", f"--junitxml={junit}", "--rootdir", str(tmp_path),
                             "-c", "/dev/null", str(tmp_path / "test_marked.py")],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    return result, junit


def test_results_come_only_from_marked_tests(tmp_path: Path) -> None:
    """Goal: a mark lands in the JUnit XML as the `evidence` property and only
    marked tests fill a result; a skipped mark is not_run; a test named like a
    drill proves nothing. Method: a real pytest run of a small module with the
    plugin, then repair.evidence reads its JUnit XML."""
    result, junit = _run_pytest(tmp_path, MARKED_MODULE)
    assert result.returncode == 1, result.stdout + result.stderr  # one marked test fails on purpose
    assert '<property name="evidence" value="database_restore"' in junit.read_text()
    results = evidence.read_junit(str(junit))
    assert results.executed == 3 and results.failed == 1 and results.skipped == 1
    assert [c["name"].rsplit("::", 1)[1] for c in results.marked["database_restore"]] == ["test_restore_drill"]
    assert evidence._bcdr_item(results, "database_restore")["status"] == "pass"
    assert evidence._bcdr_item(results, "ledger_rebuild")["status"] == "not_run"  # marked, skipped
    assert evidence._bcdr_item(results, "region_failover")["status"] == "not_run"  # nobody marked
    assert "region_failover" in evidence._bcdr_item(results, "region_failover")["reason"]
    assert evidence._marked_status(results.marked["failure_injection"]) == "fail"
    assert results.outcome() == "failure"


def test_an_unknown_evidence_name_stops_the_run(tmp_path: Path) -> None:
    """Goal: a misspelt mark cannot silently prove nothing (or something else).
    Method: a real pytest run with `evidence("database_restor")`: it must fail
    at collection and run no test."""
    result, junit = _run_pytest(tmp_path, 'import pytest\n\n@pytest.mark.evidence("database_restor")\n'
                                          'def test_x():\n    """x"""\n')
    assert result.returncode not in (0, 1), result.stdout + result.stderr
    assert "database_restor" in result.stdout + result.stderr
    forged = tmp_path / "forged.xml"
    forged.write_text('<testsuite><testcase classname="t" name="x"><properties>'
                      '<property name="evidence" value="moon_landing"/></properties></testcase></testsuite>')
    with pytest.raises(SymphonyError) as caught:
        evidence.read_junit(str(forged))
    assert caught.value.exit_code == 2 and "moon_landing" in str(caught.value)


def test_build_status_is_never_success_when_no_test_ran(tmp_path: Path) -> None:
    """Goal: "success" needs tests that ran; otherwise the status says what ran.
    Method: no results, results whose cases were all skipped, and results with
    one passing case."""
    none = evidence.read_junit(None)
    assert none.outcome() == "not_run" and none.summary().startswith("no tests ran")
    skipped = tmp_path / "skipped.xml"
    skipped.write_text('<testsuite><testcase classname="t" name="a"><skipped/></testcase></testsuite>')
    all_skipped = evidence.read_junit(str(skipped))
    assert all_skipped.outcome() == "not_run" and "none executed" in all_skipped.summary()
    passed = tmp_path / "passed.xml"
    passed.write_text('<testsuite><testcase classname="t" name="a"/></testsuite>')
    one = evidence.read_junit(str(passed))
    assert one.outcome() == "success" and one.summary().startswith("1 tests ran: 1 passed, 0 failed")
