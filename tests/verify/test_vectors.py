"""The worked example of docs/verifying.md: reproducible, and verified by an outsider's code.

Goal: the shipped vectors are exactly what the project's code produces (so the
documentation's hex is current), an independent verifier written from the
documentation alone (tests/independent_verifier.py, no Symphony import) accepts
them, and on altered copies it agrees with `symphony verify`. Method: rebuild
the vectors in memory; run both verifiers on the example proof and on variants.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import independent_verifier as outsider

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "symphony"
sys.path.insert(0, str(VECTORS))
import make_vectors  # noqa: E402


def test_vectors_are_reproducible() -> None:
    assert json.loads((VECTORS / "vectors.json").read_text()) == json.loads(json.dumps(make_vectors.build()))
    assert (VECTORS / "example.tlog-proof").read_text() == make_vectors.build()["proof_file"]


def test_the_documented_example_verifies_independently() -> None:
    v = json.loads((VECTORS / "vectors.json").read_text())
    leaves = [outsider.leaf_hash(bytes.fromhex(r)) for r in v["records_canonical_hex"]]
    assert [leaf.hex() for leaf in leaves] == v["leaf_hashes_hex"]
    assert outsider.node_hash(outsider.node_hash(leaves[0], leaves[1]), leaves[2]).hex() == v["root_hex"]
    assert outsider.proof_ok((VECTORS / "example.tlog-proof").read_bytes(), v["node_vkey"], [v["witness_vkey"]], 1)


def _variants(data: bytes) -> dict[str, bytes]:
    text = data.decode()
    lines = text.split("\n")
    return {
        "as shipped": data,
        "index moved": text.replace("index 1", "index 2").encode(),
        "path swapped": "\n".join(lines[:3] + [lines[4], lines[3]] + lines[5:]).encode(),
        "size raised": text.replace("\n3\n", "\n4\n").encode(),
        "cosignature dropped": "\n".join(line for line in lines if not line.startswith("\u2014 witness")).encode(),
        "record altered": text.replace("extra CAAAAAIAAAAA", "extra CAAAAAMAAAAA").encode(),
    }


@pytest.mark.parametrize("name", list(_variants((VECTORS / "example.tlog-proof").read_bytes())))
def test_outsider_and_symphony_verify_agree(name: str, tmp_path: Path) -> None:
    v = json.loads((VECTORS / "vectors.json").read_text())
    data = _variants((VECTORS / "example.tlog-proof").read_bytes())[name]
    path = tmp_path / "case.tlog-proof"
    path.write_bytes(data)
    try:
        outsider_says = outsider.proof_ok(data, v["node_vkey"], [v["witness_vkey"]], 1)
    except (ValueError, IndexError, AssertionError):
        outsider_says = False
    ours = subprocess.run([sys.executable, "-m", "symphony", "verify", "proof", str(path),
                           "--policy", str(VECTORS / "example.policy")], capture_output=True, text=True, timeout=60)
    assert ours.returncode in (0, 1), ours.stderr
    assert outsider_says == (ours.returncode == 0)
    assert outsider_says == (name == "as shipped")
