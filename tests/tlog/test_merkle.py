"""RFC 9162 Merkle hashing and proofs against vectors and an independent implementation.

Goal: symphony.tlog.merkle computes the roots, inclusion and consistency proofs
that the rest of the world computes, and its verifiers accept exactly the proofs
they should. Method: (1) every vector of transparency-dev/merkle (shipped under
tests/vectors/, written by others) through our verifiers, wantErr honoured;
(2) proofs we build for many tree sizes checked by pymerkle, an independent
RFC 9162 implementation from the Python package index, and roots compared;
(3) our own proofs verified by our verifiers, and every one-bit corruption refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pymerkle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from symphony.tlog import merkle

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "transparency-dev-merkle"
INCLUSION = sorted((VECTORS / "inclusion").rglob("*.json"))
CONSISTENCY = sorted((VECTORS / "consistency").rglob("*.json"))
# The reference leaves of RFC 6962's test tree (as in Certificate Transparency).
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243",
                                     "5051525354555657", "606162636465666768696a6b6c6d6e6f")]


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def test_the_vectors_are_there() -> None:
    # Both sets present and each has happy paths and failures: nothing passes vacuously.
    assert len(INCLUSION) >= 98 and len(CONSISTENCY) >= 98
    cases = [json.loads(p.read_text()) for p in INCLUSION + CONSISTENCY]
    assert {c["wantErr"] for c in cases} == {True, False}


@pytest.mark.parametrize("path", INCLUSION, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_inclusion_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    proof = [_b64(p) for p in case["proof"] or []]
    try:
        merkle.verify_inclusion(_b64(case["leafHash"]), case["leafIdx"], case["treeSize"], proof, _b64(case["root"]))
    except merkle.ProofError:
        assert case["wantErr"], case["desc"]
    else:
        assert not case["wantErr"], case["desc"]


@pytest.mark.parametrize("path", CONSISTENCY, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_consistency_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    proof = [_b64(p) for p in case["proof"] or []]
    try:
        merkle.verify_consistency(case["size1"], case["size2"], proof, _b64(case["root1"]), _b64(case["root2"]))
    except merkle.ProofError:
        assert case["wantErr"], case["desc"]
    else:
        assert not case["wantErr"], case["desc"]


def test_reference_tree_roots() -> None:
    """Roots of the RFC 6962 reference tree, as published with Certificate Transparency."""
    tree = merkle.MemoryTree()
    for leaf in LEAVES:
        tree.append(leaf)
    assert tree.root(0) == hashlib.sha256(b"").digest()
    assert tree.root(1).hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert tree.root(2).hex() == "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
    assert tree.root(8).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert tree.root() == tree.root(8)


def _pymerkle_tree(leaves: list[bytes]) -> pymerkle.InmemoryTree:
    other = pymerkle.InmemoryTree(algorithm="sha256")
    for leaf in leaves:
        other.append_entry(leaf)
    return other


@settings(max_examples=40, deadline=None)
@given(size=st.integers(min_value=1, max_value=70), data=st.data())
def test_agrees_with_pymerkle(size: int, data: st.DataObject) -> None:
    """Roots equal pymerkle's at every size; our inclusion paths are pymerkle's
    (its path starts with the leaf hash itself, and it counts leaves from 1);
    each side's proofs verify with the other side's verifier."""
    leaves = [f"leaf-{i}".encode() for i in range(size)]
    ours, theirs = merkle.MemoryTree(), _pymerkle_tree(leaves)
    for leaf in leaves:
        ours.append(leaf)
    for n in range(1, size + 1):
        assert ours.root(n) == theirs.get_root(n)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    path = merkle.inclusion_proof(ours.read, index, size)
    their = theirs.prove_inclusion(index + 1, size).serialize()["path"]
    assert their[0] == merkle.leaf_hash(leaves[index]).hex()
    assert [h.hex() for h in path] == their[1:]
    pymerkle.verify_inclusion(merkle.leaf_hash(leaves[index]), ours.root(size), theirs.prove_inclusion(index + 1, size))
    merkle.verify_inclusion(merkle.leaf_hash(leaves[index]), index, size, path, ours.root(size))
    size1 = data.draw(st.integers(min_value=1, max_value=size))
    proof = merkle.consistency_proof(ours.read, size1, size)
    merkle.verify_consistency(size1, size, proof, ours.root(size1), ours.root(size))
    pymerkle.verify_consistency(ours.root(size1), ours.root(size), theirs.prove_consistency(size1, size))


def test_our_proofs_have_rfc_lengths_and_every_bit_matters() -> None:
    """Inclusion paths are ceil(log2 n) or shorter (right edge), and flipping any
    bit of any proof hash, or using another index or size, is refused."""
    tree = merkle.MemoryTree()
    for i in range(37):
        tree.append(i.to_bytes(4, "big"))
    size = tree.size
    for index in range(size):
        path = merkle.inclusion_proof(tree.read, index, size)
        assert len(path) <= (size - 1).bit_length()
        leaf = merkle.leaf_hash(index.to_bytes(4, "big"))
        merkle.verify_inclusion(leaf, index, size, path, tree.root())
        for k in range(len(path)):
            bad = list(path)
            bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
            with pytest.raises(merkle.ProofError):
                merkle.verify_inclusion(leaf, index, size, bad, tree.root())
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(leaf, (index + 1) % size, size, path, tree.root())
    for size1 in range(1, size):
        proof = merkle.consistency_proof(tree.read, size1, size)
        merkle.verify_consistency(size1, size, proof, tree.root(size1), tree.root())
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(size1, size, proof, tree.root(size1), tree.root(size - 1))


def test_frontier_keeps_at_most_one_hash_per_bit() -> None:
    frontier = merkle.Frontier()
    tree = merkle.MemoryTree()
    for i in range(300):
        frontier.append(merkle.leaf_hash(bytes([i % 256, i // 256])))
        tree.append(bytes([i % 256, i // 256]))
        assert len(frontier.hashes) == bin(frontier.size).count("1")
        assert frontier.root() == tree.root(frontier.size)
    resumed = merkle.Frontier(frontier.size, frontier.hashes)
    assert resumed.root() == frontier.root()
    with pytest.raises(merkle.ProofError):
        merkle.Frontier(5, frontier.hashes[:1])


def test_frontier_read_from_a_tree_equals_the_one_built_by_appending() -> None:
    """merkle.frontier_hashes(read, size) (what `symphony export` reads from tiles)
    is, for every size, the compact range an appending Frontier holds."""
    frontier = merkle.Frontier()
    tree = merkle.MemoryTree()
    assert merkle.frontier_hashes(tree.read, 0) == []
    for i in range(300):
        leaf = bytes([i % 256, i // 256])
        frontier.append(merkle.leaf_hash(leaf))
        tree.append(leaf)
        assert merkle.frontier_hashes(tree.read, frontier.size) == frontier.hashes
    with pytest.raises(merkle.ProofError):
        merkle.frontier_hashes(tree.read, -1)
