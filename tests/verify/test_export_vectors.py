"""The worked export example of docs/verifying.md: reproducible, verified by both verifiers.

Goal: the files under tests/vectors/export/ are exactly what make_vectors.py
builds (so the documentation's bytes are current); `symphony verify export`
accepts them with exit 0 and the documented gap; the outsider's verifier
(tests/independent_verifier.py, written from docs/verifying.md with hashlib,
cryptography and its own MessagePack reader) agrees; and its RFC 9162
consistency check agrees with the project's on every pair of sizes. Method:
rebuild in memory and compare; run both verifiers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from symphony.tlog import merkle
from tests import independent_verifier as outsider
from tests.conftest import REPO_ROOT

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "export"
sys.path.insert(0, str(VECTORS))
import make_export_vectors as make_vectors  # noqa: E402


def _keys() -> tuple[str, str, list[str]]:
    policy = (VECTORS / "example.policy").read_text().split("\n")
    return (VECTORS / "example.vkey").read_text().strip(), policy[0].split()[1], [policy[1].split()[2]]


def test_the_example_is_reproducible() -> None:
    """The shipped files are byte for byte what make_export_vectors.py builds now."""
    built = make_vectors.build()
    assert sorted(p.name for p in (VECTORS / "example").iterdir()) == sorted(
        name for name in built if not name.startswith("../"))
    for name, data in built.items():
        assert (VECTORS / "example" / name).read_bytes() == data, name


def test_both_verifiers_accept_the_example_with_the_documented_gap() -> None:
    """`symphony verify export` exits 0 with the gap docs/verifying.md shows; the
    outsider agrees, and refuses it under a quorum the example does not meet."""
    done = subprocess.run([sys.executable, "-m", "symphony", "verify", "export", str(VECTORS / "example"),
                           "--policy", str(VECTORS / "example.policy"), "--export-key",
                           str(VECTORS / "example.vkey"), "--json"], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["participants"] == [{"participant_id": "bank-a", "ingress_count": 2, "executions": 1,
                                       "handled": 1, "gap": 0, "unattested": 0, "status": "PASS"}]
    export_key, log_key, witnesses = _keys()
    checked = outsider.check_export(VECTORS / "example", export_key, log_key, witnesses, 1)
    assert checked.ok and checked.problems == [] and checked.gap == {"bank-a": (2, 1, 1, 0, 0)}
    assert not outsider.check_export(VECTORS / "example", export_key, log_key, witnesses, 2).ok  # quorum of 2


def test_the_outsiders_consistency_check_agrees_with_the_projects() -> None:
    """Every (m, n) with 1 <= m <= n <= 40: a true proof passes both, a wrong root fails both."""
    tree = merkle.MemoryTree()
    for i in range(40):
        tree.append(bytes([i]))
    for n in range(1, 41):
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(tree.read, m, n)
            assert outsider.verify_consistency(m, n, proof, tree.root(m), tree.root(n)), (m, n)
            assert not outsider.verify_consistency(m, n, proof, tree.root(m), bytes(32)), (m, n)
            if m < n:
                assert not outsider.verify_consistency(m, n, proof, bytes(32), tree.root(n)), (m, n)
            merkle.verify_consistency(m, n, proof, tree.root(m), tree.root(n))
