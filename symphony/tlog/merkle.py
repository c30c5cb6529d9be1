"""RFC 9162 Merkle tree hashing, proofs and their verification: small pure functions.

    leaf hash  = SHA-256(0x00 || leaf bytes)
    node hash  = SHA-256(0x01 || left || right)
    MTH({})    = SHA-256("")

Nothing here does I/O. Proofs are built from a `NodeReader`: a function that
returns the hash of the perfect subtree at (level, index), i.e. of the leaves
index·2^level … (index+1)·2^level − 1. The same code serves a tree in memory,
rows in PostgreSQL or static tiles. Verification follows RFC 9162 §2.1.3.2
(inclusion) and §2.1.4.2 (consistency) step by step, and is tested against
published vectors and an independent implementation (see tests/tlog/).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

NodeReader = Callable[[int, int], bytes]
"""(level, index) -> hash of the perfect subtree of 2**level leaves starting at index << level."""


class ProofError(ValueError):
    """A proof that does not verify, or arguments no proof can satisfy."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two strictly below `size` (size > 1): RFC 9162's k."""
    assert size > 1, size
    return 1 << ((size - 1).bit_length() - 1)


def subtree_hash(read: NodeReader, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range whose left edge is aligned as in RFC 9162's recursion."""
    assert 0 <= start < end, (start, end)
    size = end - start
    if size & (size - 1) == 0 and start % size == 0:
        return read(size.bit_length() - 1, start // size)
    k = _split(size)
    return node_hash(subtree_hash(read, start, start + k), subtree_hash(read, start + k, end))


def root(read: NodeReader, size: int) -> bytes:
    """The tree head MTH(D[0:size])."""
    if size < 0:
        raise ProofError(f"tree size {size} is negative")
    return EMPTY_ROOT if size == 0 else subtree_hash(read, 0, size)


def frontier(read: NodeReader, size: int) -> list[bytes]:
    """The compact range of the tree of `size` leaves: one perfect-subtree hash
    per set bit of size, largest (leftmost) first, as `Frontier` holds it."""
    if size < 0:
        raise ProofError(f"no tree has {size} leaves")
    hashes: list[bytes] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if (size >> level) & 1:
            hashes.append(read(level, start >> level))
            start += 1 << level
    assert start == size
    return hashes


def inclusion_proof(read: NodeReader, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1: sibling hashes from the leaf up."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(subtree_hash(read, start + k, end))
            end = start + k
        else:
            path.append(subtree_hash(read, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(read: NodeReader, size1: int, size2: int) -> list[bytes]:
    """PROOF(size1, D[0:size2]) of RFC 9162 §2.1.4.1 (empty when the sizes are equal)."""
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to size {size2}")
    path: list[bytes] = []
    start, end, whole = 0, size2, True  # SUBPROOF(m, D[start:end], whole)
    m = size1
    while True:
        n = end - start
        if m == n:
            if not whole:
                path.append(subtree_hash(read, start, end))
            break
        k = _split(n)
        if m <= k:
            path.append(subtree_hash(read, start + k, end))
            end = start + k
        else:
            path.append(subtree_hash(read, start, start + k))
            start, m, whole = start + k, m - k, False
    path.reverse()
    return path


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes, not {HASH_SIZE}")


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes) -> None:
    """RFC 9162 §2.1.3.2: raise ProofError unless `leaf` (a leaf hash) is at `index` under `expected_root`."""
    _check_hash("leaf hash", leaf)
    _check_hash("root", expected_root)
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        _check_hash("proof hash", p)
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    if r != expected_root:
        raise ProofError("inclusion proof leads to another root")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """RFC 9162 §2.1.4.2: raise ProofError unless the tree of `size2` extends the one of `size1`.

    Equal sizes need an empty proof and equal roots; a proof from the empty
    tree proves nothing and is refused, even to the empty tree (the order of
    these checks is transparency-dev/merkle's, whose vectors we pass).
    """
    if size1 < 0 or size2 < size1:
        raise ProofError(f"no consistency from size {size1} to size {size2}")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree is meaningless")
    if size1 == size2:
        if proof:
            raise ProofError("equal sizes take an empty consistency proof")
        if root1 != root2:
            raise ProofError("equal sizes with different roots")
        return
    _check_hash("first root", root1)
    _check_hash("second root", root2)
    if not proof:
        raise ProofError("empty consistency proof")
    for c in proof:
        _check_hash("proof hash", c)
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than needed")
    if fr != root1:
        raise ProofError("consistency proof does not lead to the first root")
    if sr != root2:
        raise ProofError("consistency proof does not lead to the second root")


class Frontier:
    """The compact range [0, size): one perfect-subtree hash per set bit of size.

    What the journal keeps per stream (at most 64 hashes) so that the root is
    known after every append without reading old leaves; `append` also reports
    the perfect subtrees it completed, which is what a store of tree nodes
    needs to answer proofs later.
    """

    __slots__ = ("size", "hashes")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != bin(size).count("1"):
            raise ProofError(f"a frontier of size {size} has {bin(max(size, 0)).count('1')} hashes, not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)  # largest (leftmost) subtree first

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; returns every (level, index, hash) node it completed, leaf first."""
        _check_hash("leaf hash", leaf)
        completed = [(0, self.size, leaf)]
        h, level, index = leaf, 0, self.size
        while (self.size >> level) & 1:
            h = node_hash(self.hashes.pop(), h)
            level, index = level + 1, index >> 1
            completed.append((level, index, h))
        self.hashes.append(h)
        self.size += 1
        return completed

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        r = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            r = node_hash(h, r)
        return r


class MemoryTree:
    """Every node of a tree in memory: for tests, vectors and small exports."""

    def __init__(self) -> None:
        self.frontier = Frontier()
        self.nodes: dict[tuple[int, int], bytes] = {}

    def append(self, leaf: bytes) -> int:
        """Append leaf *bytes* (hashed here); returns the leaf's index."""
        index = self.frontier.size
        for level, position, h in self.frontier.append(leaf_hash(leaf)):
            self.nodes[(level, position)] = h
        return index

    def read(self, level: int, index: int) -> bytes:
        try:
            return self.nodes[(level, index)]
        except KeyError:
            raise ProofError(f"no node at level {level} index {index}") from None

    @property
    def size(self) -> int:
        return self.frontier.size

    def root(self, size: int | None = None) -> bytes:
        return self.frontier.root() if size is None else root(self.read, size)
