-- SQL of `symphony audit verify-log` (repair/verify_log.py): PostgreSQL's
-- copy of each stream epoch's log, read to be checked against witnessed
-- checkpoints held outside the database. Nothing read here is trusted: every
-- value is recomputed or compared with a signed anchor. Code uses
-- QUERIES["name"].

-- name: null_epoch_genesis
-- The GENESIS row of stream ($1, $2) among rows shipped before migration 0050
-- (epoch IS NULL): its body names the epoch those rows belong to.
SELECT canonical
FROM ingress_attestations
WHERE node_id = $1 AND stream_id = $2 AND epoch IS NULL AND stream_seq = 1
ORDER BY recorded_at
LIMIT 1;

-- name: epoch_leaves
-- Every row of epoch $3 of stream ($1, $2), in seq order (a second row with
-- the same seq sorts next to the first: that is how an insert shows); rows
-- with no epoch column belong to it when $4 (their GENESIS names it). Read
-- through a server-side cursor.
SELECT stream_seq, canonical, chain_hash
FROM ingress_attestations
WHERE node_id = $1 AND stream_id = $2 AND (epoch = $3 OR ($4 AND epoch IS NULL))
ORDER BY stream_seq, recorded_at;

-- name: epoch_tiles
-- The stored tiles of epoch $3 of stream ($1, $2) (c2sp.org/tlog-tiles,
-- height 8), read through a server-side cursor.
SELECT level, tile_index, width, hashes
FROM log_tiles
WHERE node_id = $1 AND stream_id = $2 AND epoch = $3
ORDER BY level, tile_index;

-- name: epoch_checkpoints
-- The checkpoints PostgreSQL kept for epoch $3 of stream ($1, $2): each one is
-- checked against the node keys of the policy and the recomputed tree.
SELECT tree_size, root, origin, note
FROM log_checkpoints
WHERE node_id = $1 AND stream_id = $2 AND epoch = $3
ORDER BY tree_size;

-- name: known_epochs
-- The stream epochs PostgreSQL says it holds (current ones and ended ones),
-- to name those no outside checkpoint anchors.
SELECT node_id, stream_id, epoch FROM journal_checkpoints WHERE epoch IS NOT NULL
UNION
SELECT node_id, stream_id, epoch FROM journal_epochs
ORDER BY 1, 2, 3;
