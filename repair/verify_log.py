"""`symphony audit verify-log`: PostgreSQL's copy of the log, checked against
witnessed checkpoints held outside it.

`audit verify-chain` recomputes hashes from rows an insider with the tables'
owner role can rewrite, together with the checkpoint rows that would betray
them. This check trusts nothing the database says. Its anchors come from
elsewhere: signed checkpoints in files (the witness's own store
`<state_dir>/logs/`, the sidecar's `<publish_dir>/<origin>/checkpoint`, or
copies an auditor keeps), accepted only when a c2sp.org/tlog-policy (node keys,
witnesses, quorum) accepts them. For each stream epoch such a checkpoint names
(its origin `<prefix>/<node>/<stream>/<epoch>`), it

  L1  streams the epoch's rows in seq order through a server-side cursor and
      folds their canonical bytes, as RFC 9162 leaves, into a compact range
      (symphony.tlog.merkle.Frontier);
  L2  requires the seq run to be 1, 2, 3, ... with no hole and no seq twice,
      the seq inside each row's canonical bytes to be the row's seq, and seq 1
      to be the GENESIS of this epoch;
  L3  compares the recomputed root at every witnessed size with the witnessed
      root: the tree commits to every leaf and its position, so an edited,
      deleted, inserted, reordered or re-chained row below that size fails it,
      and rows ending before it are a cut tail (or a lost epoch);
  L4  checks the node-signed checkpoints PostgreSQL keeps (log_checkpoints):
      each must verify with a node key of the policy and match the rows;
  L5  rebuilds the tiles (c2sp.org/tlog-tiles) of the rows' tree and compares
      log_tiles with them: a tampered tile would serve false proofs.

Chain hashes (the chain_hash column) are compared too, only to say at which
seq an edit sits; they prove nothing on their own here (an insider recomputes
them). Every finding names node, stream, epoch and a seq or a tree size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from repair import canonical
from repair.store import TIMEOUT_SECONDS
from symphony.db import queries
from symphony.tlog import checkpoint, merkle, note, tiles
from symphony.tlog.policy import Policy, PolicyError

QUERIES = queries.load("repair", "verify_log.sql")
CURSOR_PREFETCH_ROWS = 2_000
LEAF_BATCH = 4_096  # leaf hashes handed to the tile builder at once
CHECKPOINT_FILE_MAX = 64 * 1024
REPORTED_PER_CHECK = 20  # findings of one kind per epoch listed one by one; the rest are counted

EpochKey = tuple[str, int, bytes]


@dataclass(frozen=True)
class Finding:
    """Something PostgreSQL holds that the outside anchors contradict."""

    check: str
    node_id: str
    stream_id: int
    epoch: bytes
    seq: int | None
    size: int | None
    detail: str

    def text(self) -> str:
        where = f" seq {self.seq}" if self.seq is not None else ""
        where += f" size {self.size}" if self.size is not None else ""
        return f"{self.node_id}/{self.stream_id} epoch {self.epoch.hex()}{where}: {self.check}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "node_id": self.node_id, "stream_id": self.stream_id, "epoch": self.epoch.hex(),
                "seq": self.seq, "size": self.size, "detail": self.detail}


@dataclass(frozen=True)
class Witnessed:
    """A checkpoint from a file, accepted by the policy (node key and witness quorum)."""

    path: str
    origin: str
    node_id: str
    stream_id: int
    epoch: bytes
    size: int
    root: bytes
    cosigned_by: tuple[str, ...]


@dataclass
class Anchors:
    checkpoints: list[Witnessed] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (file, why it is not an anchor)


def parse_origin(origin: str) -> EpochKey | None:
    """(node, stream, epoch) of `<prefix>/<node>/<stream>/<epoch hex>`, else None."""
    parts = origin.split("/")
    if len(parts) < 4 or not parts[-2].isdigit() or len(parts[-1]) != 32:
        return None
    try:
        epoch = bytes.fromhex(parts[-1])
    except ValueError:
        return None
    return parts[-3], int(parts[-2]), epoch


def load_anchors(directories: Sequence[Path], policy: Policy) -> Anchors:
    """Every file under the directories that is a checkpoint the policy accepts.

    Files that are not (another kind of file, a checkpoint without the witness
    quorum, a foreign origin) are listed as ignored, never trusted."""
    found = Anchors()
    for directory in directories:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            try:
                if path.stat().st_size > CHECKPOINT_FILE_MAX:
                    found.ignored.append((str(path), "larger than a checkpoint"))
                    continue
                data = path.read_bytes()
            except OSError as exc:
                found.ignored.append((str(path), f"unreadable: {exc.strerror}"))
                continue
            try:
                cp, cosigned = policy.verify(data)
            except (PolicyError, UnicodeDecodeError, ValueError) as exc:
                found.ignored.append((str(path), str(exc)))
                continue
            key = parse_origin(cp.origin)
            if key is None:
                found.ignored.append((str(path), f"origin {cp.origin!r} is not a Symphony stream epoch"))
                continue
            found.checkpoints.append(Witnessed(str(path), cp.origin, *key, cp.size, cp.root, tuple(sorted(cosigned))))
    return found


@dataclass
class EpochResult:
    node_id: str
    stream_id: int
    epoch: bytes
    origin: str
    rows_read: int = 0
    leaves_checked: int = 0
    last_seq: int = 0
    witnessed_sizes: list[int] = field(default_factory=list)
    witnessed_compared: int = 0
    node_checkpoints_checked: int = 0
    tiles_compared: int = 0
    findings: list[Finding] = field(default_factory=list)
    suppressed: dict[str, int] = field(default_factory=dict)

    def add(self, check: str, detail: str, *, seq: int | None = None, size: int | None = None) -> None:
        if sum(1 for f in self.findings if f.check == check) >= REPORTED_PER_CHECK:
            self.suppressed[check] = self.suppressed.get(check, 0) + 1
            return
        self.findings.append(Finding(check, self.node_id, self.stream_id, self.epoch, seq, size, detail))

    def as_dict(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "stream_id": self.stream_id, "epoch": self.epoch.hex(),
                "origin": self.origin, "status": "BROKEN" if self.findings else "OK", "rows_read": self.rows_read,
                "leaves_checked": self.leaves_checked, "last_seq": self.last_seq,
                "witnessed_sizes": self.witnessed_sizes, "witnessed_compared": self.witnessed_compared,
                "node_checkpoints_checked": self.node_checkpoints_checked, "tiles_compared": self.tiles_compared,
                "rows_after_newest_witnessed": max(0, self.last_seq - max(self.witnessed_sizes, default=0)),
                "findings": [f.as_dict() for f in self.findings], "findings_not_listed": self.suppressed}


class _Fold:
    """The rows of one epoch, in the order PostgreSQL gives them, folded into a tree."""

    def __init__(self, result: EpochResult, sizes: set[int]) -> None:
        self.result = result
        self.sizes = sizes
        self.frontier = merkle.Frontier()
        self.roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT} if 0 in sizes else {}
        self.builder = tiles.TileBuilder()
        self.pending: list[bytes] = []
        self.tiles: dict[tiles.TileKey, tuple[int, bytes]] = {}  # key -> (width, sha256 of its hashes)
        self.hole_at: int | None = None  # first missing seq: the tree cannot be built past it
        self.prev_chain: bytes | None = canonical.GENESIS_PREV_HASH

    def feed(self, seq: int, data: bytes, stored_chain: bytes) -> None:
        result = self.result
        result.rows_read += 1
        if seq <= result.last_seq:
            result.add("seq_repeated", f"a second row carries seq {seq} (a row was inserted)", seq=seq)
            return
        expected = result.last_seq + 1
        if seq != expected:  # L2: the seq run must be contiguous from 1
            missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            why = "the first rows were deleted" if expected == 1 else "rows were deleted"
            result.add("seq_hole", f"seq {missing} missing before seq {seq} ({why})", seq=expected)
            if self.hole_at is None:
                self.hole_at = expected
            self.prev_chain = None
        result.last_seq = seq
        self._check_bytes(seq, data)
        if self.prev_chain is not None and canonical.chain_hash(self.prev_chain, data) != stored_chain:
            result.add("chain_break", "the row's chain hash is not sha256(previous row's hash || its canonical "
                                      "bytes): this row (or its hash) was edited", seq=seq)
        self.prev_chain = stored_chain
        if self.hole_at is not None:
            return
        leaf = merkle.leaf_hash(data)
        self.frontier.append(leaf)
        result.leaves_checked += 1
        self.pending.append(leaf)
        if len(self.pending) >= LEAF_BATCH:
            self._flush()
        if self.frontier.size in self.sizes:
            self.roots[self.frontier.size] = self.frontier.root()

    def _check_bytes(self, seq: int, data: bytes) -> None:
        result = self.result
        try:
            parsed = canonical.parse(data)
        except canonical.CanonicalError as exc:
            result.add("unparsable", f"the row's canonical bytes are not a record: {exc}", seq=seq)
            return
        if parsed.stream_seq != seq:
            result.add("reordered", f"the row at seq {seq} holds the bytes of record {parsed.stream_seq}", seq=seq)
        if seq == 1 and canonical.epoch_of(parsed) != result.epoch:
            result.add("genesis", "seq 1 is not the GENESIS record of this epoch", seq=1)

    def _flush(self) -> None:
        for key, hashes in self.builder.append(self.pending).items():
            self.tiles[key] = (len(hashes) // merkle.HASH_SIZE, hashlib.sha256(hashes).digest())
        self.pending = []

    def finish(self) -> None:
        self._flush()


def _node_signed(policy: Policy, signed: bytes) -> checkpoint.Checkpoint | None:
    """The checkpoint if a node key of the policy signed it (no witness needed)."""
    try:
        text, _ = note.split(signed)
        origin = text.split("\n", 1)[0]
    except note.NoteError:
        return None
    for key in policy.logs:
        if checkpoint.key_covers(key.name, origin):
            try:
                return checkpoint.open_checkpoint(signed, key)[0]
            except (checkpoint.CheckpointError, ValueError):
                continue
    return None


async def verify_epoch(conn: asyncpg.Connection, policy: Policy, witnessed: Sequence[Witnessed]) -> EpochResult:
    """One stream epoch of PostgreSQL against the witnessed checkpoints of its origin."""
    first = witnessed[0]
    node_id, stream_id, epoch = first.node_id, first.stream_id, first.epoch
    result = EpochResult(node_id, stream_id, epoch, first.origin)
    by_size: dict[int, list[Witnessed]] = {}
    for w in witnessed:
        by_size.setdefault(w.size, []).append(w)
    for size, same in sorted(by_size.items()):
        if len({w.root for w in same}) > 1:
            result.add("checkpoint_fork", "witnessed checkpoints of this size have different roots: "
                       + ", ".join(f"{w.root.hex()[:16]} ({w.path})" for w in same), size=size)
    result.witnessed_sizes = sorted(by_size)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        genesis = await conn.fetchval(QUERIES["null_epoch_genesis"], node_id, stream_id, timeout=TIMEOUT_SECONDS)
        with_null = genesis is not None and _genesis_epoch(bytes(genesis)) == epoch
        kept = await conn.fetch(QUERIES["epoch_checkpoints"], node_id, stream_id, epoch, timeout=TIMEOUT_SECONDS)
        fold = _Fold(result, set(by_size) | {int(row["tree_size"]) for row in kept})
        async for row in conn.cursor(QUERIES["epoch_leaves"], node_id, stream_id, epoch, with_null,
                                     prefetch=CURSOR_PREFETCH_ROWS, timeout=TIMEOUT_SECONDS):
            fold.feed(int(row["stream_seq"]), bytes(row["canonical"]), bytes(row["chain_hash"]))
        fold.finish()
        _compare_witnessed(result, fold, by_size)
        _compare_kept(result, fold, policy, kept)
        if fold.hole_at is None:
            await _compare_tiles(conn, result, fold)
    return result


def _genesis_epoch(data: bytes) -> bytes | None:
    try:
        return canonical.epoch_of(canonical.parse(data))
    except canonical.CanonicalError:
        return None


def _compare_witnessed(result: EpochResult, fold: _Fold, by_size: Mapping[int, list[Witnessed]]) -> None:
    """L3: the recomputed root at each witnessed size is the witnessed root."""
    reproduced = 0
    for size, same in sorted(by_size.items()):
        w = same[0]
        names = ", ".join(w.cosigned_by) or "no witness"
        if size in fold.roots:
            result.witnessed_compared += 1
            if fold.roots[size] == w.root:
                reproduced = size
                continue
            result.add("root_mismatch", f"rows 1..{size} do not reproduce the root of the checkpoint cosigned by "
                       f"{names} ({w.path}): a row in seq {reproduced + 1}..{size} was altered, removed, inserted "
                       "or reordered, or the epoch was rewritten", size=size)
        elif fold.hole_at is not None and fold.hole_at <= size:
            result.add("unprovable", f"the checkpoint cosigned by {names} covers {size} records; seq {fold.hole_at} "
                       "is missing, so PostgreSQL cannot reproduce it", size=size, seq=fold.hole_at)
        elif result.rows_read == 0:
            result.add("epoch_missing", f"PostgreSQL holds no row of this epoch, yet the checkpoint cosigned by "
                       f"{names} ({w.path}) covers {size} records", size=size)
        else:
            result.add("tail_cut", f"PostgreSQL holds seq 1..{result.last_seq}; the checkpoint cosigned by {names} "
                       f"covers {size} records: seq {result.last_seq + 1}..{size} are missing", size=size,
                       seq=result.last_seq + 1)


def _compare_kept(result: EpochResult, fold: _Fold, policy: Policy, kept: Sequence[asyncpg.Record]) -> None:
    """L4: PostgreSQL's own checkpoints are the node's, and match the rows."""
    for row in kept:
        size = int(row["tree_size"])
        result.node_checkpoints_checked += 1
        signed = _node_signed(policy, str(row["note"]).encode())
        if signed is None or signed.origin != result.origin:
            result.add("forged_checkpoint", "log_checkpoints holds a checkpoint no node key of the policy signed "
                       "for this origin", size=size)
            continue
        if signed.size != size or signed.root != bytes(row["root"]):
            result.add("forged_checkpoint", f"the log_checkpoints row (size {size}, root {bytes(row['root']).hex()}) "
                       f"differs from its signed note (size {signed.size})", size=size)
            continue
        if size in fold.roots and fold.roots[size] != signed.root:
            result.add("node_root_mismatch", "rows do not reproduce the root the node signed at this size "
                       "(log_checkpoints)", size=size)


async def _compare_tiles(conn: asyncpg.Connection, result: EpochResult, fold: _Fold) -> None:
    """L5: log_tiles are the tiles of the rows' tree, no more, no less."""
    seen: set[tiles.TileKey] = set()
    async for row in conn.cursor(QUERIES["epoch_tiles"], result.node_id, result.stream_id, result.epoch,
                                 prefetch=CURSOR_PREFETCH_ROWS, timeout=TIMEOUT_SECONDS):
        key = (int(row["level"]), int(row["tile_index"]))
        seen.add(key)
        result.tiles_compared += 1
        expected = fold.tiles.get(key)
        stored = bytes(row["hashes"])
        if expected is None:
            result.add("tile_extra", f"log_tiles level {key[0]} tile {key[1]} is beyond the tree of the "
                       f"{result.leaves_checked} rows", size=result.leaves_checked)
        elif (int(row["width"]), hashlib.sha256(stored).digest()) != expected:
            first = key[1] * tiles.WIDTH << (tiles.HEIGHT * key[0])
            result.add("tile_mismatch", f"log_tiles level {key[0]} tile {key[1]} (width {row['width']}) is not the "
                       f"tile of the rows' tree: proofs read from it would be false", seq=first + 1)
    for key in sorted(set(fold.tiles) - seen):
        result.add("tile_missing", f"log_tiles has no tile at level {key[0]} index {key[1]}",
                   size=result.leaves_checked)


@dataclass
class LogReport:
    anchors: Anchors
    epochs: list[EpochResult]
    unanchored: list[EpochKey]

    @property
    def ok(self) -> bool:
        return not any(e.findings for e in self.epochs)

    def as_dict(self) -> dict[str, Any]:
        return {"status": "OK" if self.ok else "BROKEN",
                "checkpoints_accepted": len(self.anchors.checkpoints),
                "leaves_checked": sum(e.leaves_checked for e in self.epochs),
                "witnessed_compared": sum(e.witnessed_compared for e in self.epochs),
                "epochs": [e.as_dict() for e in self.epochs],
                "ignored_files": [{"path": p, "reason": r} for p, r in self.anchors.ignored],
                "unanchored_epochs": [{"node_id": n, "stream_id": s, "epoch": e.hex()} for n, s, e in self.unanchored]}

    def text(self) -> str:
        lines = []
        for e in self.epochs:
            lines.append(f"{e.node_id}/{e.stream_id} epoch {e.epoch.hex()}: {'BROKEN' if e.findings else 'OK'}, "
                         f"{e.rows_read} rows, {e.leaves_checked} leaves folded, {e.witnessed_compared} of "
                         f"{len(e.witnessed_sizes)} witnessed sizes compared, {e.node_checkpoints_checked} node "
                         f"checkpoints, {e.tiles_compared} tiles")
            lines += [f"  FINDING {f.text()}" for f in e.findings]
            lines += [f"  ... and {n} more {check} finding(s)" for check, n in e.suppressed.items()]
        for node_id, stream_id, epoch in self.unanchored:
            lines.append(f"{node_id}/{stream_id} epoch {epoch.hex()}: not anchored (no accepted checkpoint names it)")
        for path, reason in self.anchors.ignored:
            lines.append(f"ignored {path}: {reason}")
        summary = self.as_dict()
        lines.append(f"{summary['status']}: {len(self.epochs)} epoch(s), {summary['leaves_checked']} leaves, "
                     f"{summary['witnessed_compared']} witnessed checkpoint(s) compared, "
                     f"{summary['checkpoints_accepted']} accepted")
        return "\n".join(lines)


async def verify_log(conn: asyncpg.Connection, policy: Policy, anchors: Anchors, *, node_id: str | None = None,
                     stream_id: int | None = None) -> LogReport:
    """Every anchored stream epoch of PostgreSQL, checked against its witnessed checkpoints."""
    grouped: dict[EpochKey, list[Witnessed]] = {}
    for w in anchors.checkpoints:
        if (node_id is None or w.node_id == node_id) and (stream_id is None or w.stream_id == stream_id):
            grouped.setdefault((w.node_id, w.stream_id, w.epoch), []).append(w)
    known = [(str(r["node_id"]), int(r["stream_id"]), bytes(r["epoch"]))
             for r in await conn.fetch(QUERIES["known_epochs"], timeout=TIMEOUT_SECONDS)]
    # Driven by the anchors, not by what PostgreSQL lists: an epoch it lost is checked (and named) too.
    epochs = [await verify_epoch(conn, policy, grouped[key]) for key in sorted(grouped)]
    unanchored = [k for k in known if k not in grouped and (node_id is None or k[0] == node_id)
                  and (stream_id is None or k[1] == stream_id)]
    return LogReport(anchors, epochs, unanchored)
