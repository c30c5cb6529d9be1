"""Tiles: proofs read from stored tiles equal proofs from the whole tree.

Goal: the tiles the forwarder will store answer every root and proof exactly
as the full tree does, a dry run names the tiles a proof reads, and a builder
resumed from stored right-edge tiles continues identically. Method: a
MemoryTree and a TileBuilder fed the same leaves, tiles kept in a dict as a
store would keep them (later writes replace the partial tile).
"""

from __future__ import annotations

import pytest

from symphony.tlog import merkle, tiles


def _grow(count: int) -> tuple[merkle.MemoryTree, dict[tiles.TileKey, bytes], tiles.TileBuilder]:
    tree, store, builder = merkle.MemoryTree(), {}, tiles.TileBuilder()
    for i in range(count):
        tree.append(i.to_bytes(4, "big"))
    leaves = [tree.read(0, i) for i in range(count)]
    for start in range(0, count, 97):  # in batches, as the forwarder ships them
        store.update(builder.append(leaves[start:start + 97]))
    return tree, store, builder


@pytest.mark.parametrize("count", [1, 255, 256, 257, 65536 + 300])
def test_roots_and_proofs_from_tiles(count: int) -> None:
    tree, store, builder = _grow(count)
    read = tiles.TileReader(store)
    assert builder.size == count
    for size in {1, count // 3 or 1, count - 1 or 1, count}:
        assert merkle.root(read, size) == tree.root(size)
        for index in {0, size // 2, size - 1}:
            assert merkle.inclusion_proof(read, index, size) == merkle.inclusion_proof(tree.read, index, size)
        assert merkle.consistency_proof(read, max(size // 2, 1), size) == \
            merkle.consistency_proof(tree.read, max(size // 2, 1), size)
    assert all(len(data) <= tiles.WIDTH * merkle.HASH_SIZE for data in store.values())


def test_a_dry_run_names_exactly_the_tiles_a_proof_reads() -> None:
    tree, store, _ = _grow(70_000)
    wanted = tiles.needed_tiles(lambda read: merkle.inclusion_proof(read, 12_345, 70_000))
    assert 1 <= len(wanted) <= 6
    only = {key: store[key] for key in wanted}
    assert merkle.inclusion_proof(tiles.TileReader(only), 12_345, 70_000) == \
        merkle.inclusion_proof(tree.read, 12_345, 70_000)
    with pytest.raises(tiles.TileError):  # and a missing tile is an error, never a wrong answer
        merkle.root(tiles.TileReader(only), 70_000)


def test_resume_from_stored_partial_tiles() -> None:
    tree, store, builder = _grow(66_000)
    partial = {level: store[(level, (66_000 >> (8 * level)) // 256)]
               for level in range(3) if (66_000 >> (8 * level)) % 256}
    resumed = tiles.TileBuilder.resume(66_000, partial)
    more = [merkle.leaf_hash(b"more %d" % i) for i in range(600)]
    store_a, store_b = dict(store), dict(store)
    store_a.update(builder.append(more))
    store_b.update(resumed.append(more))
    assert store_a == store_b
    with pytest.raises(tiles.TileError):
        tiles.TileBuilder.resume(66_001, partial)
