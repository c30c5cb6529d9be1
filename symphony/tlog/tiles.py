"""Tree nodes kept as tiles (the layout of c2sp.org/tlog-tiles, height 8).

A tile at tile level L, index N, holds the hashes of the tree nodes at tree
level 8·L with indices 256·N … 256·N + width − 1, in order (width ≤ 256; only
the right-most tile of a level is partial). Level 0 tiles hold leaf hashes. A
node at tree level 8·L + r (0 ≤ r < 8) is the hash of 2^r consecutive entries
of one tile, so every node needed by a proof is in one tile.

`TileBuilder` turns appended leaf hashes into the tiles to store (the full
ones once, the partial right edge replaced as it grows); `TileReader` answers
`merkle.NodeReader` from stored tiles; `needed_tiles` says in advance which
tiles a proof will read, so a database answers it with one query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from symphony.tlog import merkle

HEIGHT = 8
WIDTH = 1 << HEIGHT

TileKey = tuple[int, int]  # (tile level, tile index)


class TileError(LookupError):
    """A tile a proof needs is missing or too narrow."""


def tile_of(level: int, index: int) -> tuple[TileKey, int, int]:
    """(tile, first position, count) of the entries that make up node (level, index)."""
    tile_level, r = divmod(level, HEIGHT)
    first = index << r
    return (tile_level, first // WIDTH), first % WIDTH, 1 << r


def _fold(hashes: list[bytes]) -> bytes:
    """The root of a perfect subtree given its 2^r bottom hashes."""
    level = hashes
    while len(level) > 1:
        level = [merkle.node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


class TileReader:
    """A `merkle.NodeReader` over tiles: {(level, index): concatenated hashes}."""

    def __init__(self, tiles: Mapping[TileKey, bytes]) -> None:
        self.tiles = tiles

    def __call__(self, level: int, index: int) -> bytes:
        key, first, count = tile_of(level, index)
        data = self.tiles.get(key)
        if data is None or len(data) < (first + count) * merkle.HASH_SIZE:
            raise TileError(f"tile {key} does not hold node ({level}, {index})")
        size = merkle.HASH_SIZE
        return _fold([data[(first + i) * size:(first + i + 1) * size] for i in range(count)])


def needed_tiles(proof: Callable[[merkle.NodeReader], object]) -> set[TileKey]:
    """The tiles `proof(read)` will read: a dry run records the nodes it asks for
    (which nodes a proof needs depends on sizes and indices, never on hashes)."""
    wanted: set[TileKey] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add(tile_of(level, index)[0])
        return bytes(merkle.HASH_SIZE)

    proof(record)
    return wanted


class TileBuilder:
    """Tiles of a growing tree: feed leaf hashes, take the tiles that changed.

    State is the partial (right-most) tile of each level, which a store can
    give back to resume (`TileBuilder.resume`).
    """

    def __init__(self) -> None:
        self.size = 0
        self.partial: list[list[bytes]] = [[]]  # per tile level, hashes of the right-edge tile

    @classmethod
    def resume(cls, size: int, partial_tiles: Mapping[int, bytes]) -> TileBuilder:
        """From a tree size and the stored right-edge tile of each level."""
        builder = cls()
        builder.size = size
        levels = max(partial_tiles, default=-1) + 1
        builder.partial = [[] for _ in range(max(levels, 1))]
        for level, data in partial_tiles.items():
            if len(data) % merkle.HASH_SIZE or len(data) >= WIDTH * merkle.HASH_SIZE:
                raise TileError(f"partial tile at level {level} has {len(data)} bytes")
            builder.partial[level] = [data[i:i + merkle.HASH_SIZE] for i in range(0, len(data), merkle.HASH_SIZE)]
        for level, entries in enumerate(builder.partial):
            expected = (size >> (HEIGHT * level)) % WIDTH
            if len(entries) != expected:
                raise TileError(f"level {level} right-edge tile has {len(entries)} entries, a tree of "
                                f"{size} leaves has {expected}")
        return builder

    def append(self, leaf_hashes: Iterable[bytes]) -> dict[TileKey, bytes]:
        """Add leaves; returns every tile whose content changed (full or partial).

        A full tile is taken as it fills; a partial one once, at the end of the
        call (not at every leaf: a batch of leaves costs one join per level)."""
        changed: dict[TileKey, bytes] = {}
        touched: set[int] = set()
        for leaf in leaf_hashes:
            self._push(0, leaf, changed, touched)
            self.size += 1
        for level in touched:
            entries = self.partial[level]
            if entries:
                changed[(level, (self.size >> (HEIGHT * level)) // WIDTH)] = b"".join(entries)
        return changed

    def _push(self, level: int, entry: bytes, changed: dict[TileKey, bytes], touched: set[int]) -> None:
        while True:
            if level == len(self.partial):
                self.partial.append([])
            entries = self.partial[level]
            entries.append(entry)
            if len(entries) < WIDTH:
                touched.add(level)
                return
            # The tile is full: store it, and its root is the next level's entry.
            # The entry is node (8·level, size >> 8·level): size counts the leaves before this one.
            changed[(level, (self.size >> (HEIGHT * level)) // WIDTH)] = b"".join(entries)
            entry = _fold(entries)
            self.partial[level] = []
            level += 1
