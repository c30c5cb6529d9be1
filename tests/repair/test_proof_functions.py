"""The SQL functions proofs read checkpoints through (migration 0155).

Goal: log_checkpoint_covering_v1 picks the newest checkpoint covering a
record, cosigned unless unwitnessed ones are allowed, and
log_cosignatures_of_v1 gives the cosignature lines in witness order; the
roles that answer proofs (repair, dashboard) may call both. Method: two
checkpoints and their cosignatures are inserted into a fresh migrated
PostgreSQL 18, then each function is called as the owner and as each role.
"""

from __future__ import annotations

import asyncpg
import pytest

from repair import proofs

EPOCH, ROOT = bytes(range(16)), bytes(32)
COVERING = "SELECT tree_size, cosignatures FROM log_checkpoint_covering_v1('n1', 0, $1, $2, $3)"


async def _checkpoints(db: asyncpg.Connection) -> None:
    for size in (3, 5, 8):
        await db.execute("INSERT INTO log_checkpoints (node_id, stream_id, epoch, tree_size, root, origin, note, "
                         "record_seq, cut_at) VALUES ('n1', 0, $1, $2, $3, 'origin', 'note\n', $2::bigint + 1, now())",
                         EPOCH, size, ROOT)
    for witness in ("w-b", "w-a"):  # size 3 cosigned by two witnesses, stored out of order; 5 and 8 by none
        await db.execute("INSERT INTO log_cosignatures (node_id, stream_id, epoch, tree_size, witness, line, "
                         "cosigned_at) VALUES ('n1', 0, $1, 3, $2, $3, 1)", EPOCH, witness, f"— {witness} sig\n")


async def test_newest_covering_checkpoint_and_cosignatures(db: asyncpg.Connection) -> None:
    """The newest covering checkpoint wins; unwitnessed ones only when allowed; none past the newest."""
    await _checkpoints(db)
    witnessed = await db.fetch(COVERING, EPOCH, 2, False)
    assert [(r["tree_size"], r["cosignatures"]) for r in witnessed] == [(3, "— w-a sig\n— w-b sig\n")]
    unwitnessed = await db.fetch(COVERING, EPOCH, 2, True)
    assert [(r["tree_size"], r["cosignatures"]) for r in unwitnessed] == [(8, "")]
    assert await db.fetch(COVERING, EPOCH, 4, False) == []
    assert await db.fetch(COVERING, EPOCH, 9, True) == []
    assert await db.fetchval("SELECT log_cosignatures_of_v1('n1', 0, $1, 5)", EPOCH) == ""


async def test_proof_roles_may_call_the_functions(db: asyncpg.Connection) -> None:
    """Repair and the dashboard call both functions with their own rights; the sidecar may not."""
    await _checkpoints(db)
    for role in ("symphony_repair", "symphony_dashboard"):
        async with db.transaction():
            await db.execute(f"SET LOCAL ROLE {role}")
            row = await db.fetchrow(COVERING, EPOCH, 1, False)
            assert row is not None and row["tree_size"] == 3
            assert await db.fetchval("SELECT log_cosignatures_of_v1('n1', 0, $1, 3)", EPOCH) != ""
    async with db.transaction():
        await db.execute("SET LOCAL ROLE symphony_sidecar")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.fetch(COVERING, EPOCH, 1, False)


def test_epoch_from_hex_takes_32_hex_digits_only() -> None:
    """The epoch parser the CLI and the dashboard share: 16 bytes as hex, anything else refused."""
    assert proofs.epoch_from_hex("ab" * 16) == bytes([0xAB]) * 16
    for bad in ("", "ab" * 15, "ab" * 17, "zz" * 16):
        with pytest.raises(ValueError, match="not 32 hex digits"):
            proofs.epoch_from_hex(bad)
