-- SQL of inclusion and consistency proofs from PostgreSQL (repair/proofs.py):
-- `symphony proof` and the dashboard's /api/proof/*. Code uses QUERIES["name"].

-- name: record_by_attestation
-- The record of attestation $1 to prove (its INGRESS, else its lowest type),
-- optionally on node $2. Rows shipped before migration 0050 carry no epoch:
-- theirs is the stream's first (its oldest ended epoch, else the current one).
SELECT a.node_id, a.stream_id, a.stream_seq, a.canonical,
       coalesce(a.epoch,
                (SELECT e.epoch FROM journal_epochs e WHERE e.node_id = a.node_id AND e.stream_id = a.stream_id
                 ORDER BY e.ended_at LIMIT 1),
                (SELECT j.epoch FROM journal_checkpoints j WHERE j.node_id = a.node_id AND j.stream_id = a.stream_id)
       ) AS epoch
FROM ingress_attestations a
WHERE a.attestation_id = $1 AND ($2::text IS NULL OR a.node_id = $2) AND a.record_type <> 1
ORDER BY (a.record_type = 2) DESC, a.record_type, a.shipped_at
LIMIT 1;

-- name: record_by_seq
-- Record seq $3 of stream ($1 node, $2 stream) in epoch $4 (NULL: the stream's
-- current epoch, journal_checkpoints).
SELECT a.node_id, a.stream_id, a.stream_seq, a.canonical, e.epoch
FROM (SELECT coalesce($4::bytea, (SELECT j.epoch FROM journal_checkpoints j
                                   WHERE j.node_id = $1 AND j.stream_id = $2)) AS epoch) e
JOIN ingress_attestations a
  ON a.node_id = $1 AND a.stream_id = $2 AND a.stream_seq = $3 AND a.epoch = e.epoch;

-- name: current_epoch
-- The epoch stream ($1, $2) ships now.
SELECT epoch FROM journal_checkpoints WHERE node_id = $1 AND stream_id = $2;

-- name: covering_checkpoint
-- The newest checkpoint of stream ($1, $2, epoch $3) whose tree holds leaf
-- seq $4 (tree_size >= seq), cosigned by at least one witness unless $5, with
-- its cosignature lines (appended to the note, one per witness, by name).
SELECT c.tree_size, c.root, c.origin, c.note,
       coalesce((SELECT string_agg(s.line, '' ORDER BY s.witness) FROM log_cosignatures s
                 WHERE s.node_id = c.node_id AND s.stream_id = c.stream_id AND s.epoch = c.epoch
                   AND s.tree_size = c.tree_size), '') AS cosignatures
FROM log_checkpoints c
WHERE c.node_id = $1 AND c.stream_id = $2 AND c.epoch = $3 AND c.tree_size >= $4
  AND ($5 OR EXISTS (SELECT 1 FROM log_cosignatures s
                     WHERE s.node_id = c.node_id AND s.stream_id = c.stream_id AND s.epoch = c.epoch
                       AND s.tree_size = c.tree_size))
ORDER BY c.tree_size DESC
LIMIT 1;

-- name: checkpoint_at
-- The checkpoint of stream ($1, $2, epoch $3) at tree size $4, if one was kept.
SELECT c.tree_size, c.root, c.origin, c.note,
       coalesce((SELECT string_agg(s.line, '' ORDER BY s.witness) FROM log_cosignatures s
                 WHERE s.node_id = c.node_id AND s.stream_id = c.stream_id AND s.epoch = c.epoch
                   AND s.tree_size = c.tree_size), '') AS cosignatures
FROM log_checkpoints c
WHERE c.node_id = $1 AND c.stream_id = $2 AND c.epoch = $3 AND c.tree_size = $4;

-- name: tiles
-- Tiles ($4 levels, $5 indices, pairwise) of stream ($1, $2, epoch $3): every
-- tile a proof reads, in one query.
SELECT t.level, t.tile_index, t.hashes
FROM log_tiles t
JOIN unnest($4::smallint[], $5::bigint[]) AS w(level, tile_index)
  ON t.level = w.level AND t.tile_index = w.tile_index
WHERE t.node_id = $1 AND t.stream_id = $2 AND t.epoch = $3;

-- name: tree_size
-- Leaves of the tree of stream ($1, $2, epoch $3) PostgreSQL holds tiles for.
SELECT coalesce(max(tile_index * 256 + width), 0) AS size
FROM log_tiles
WHERE node_id = $1 AND stream_id = $2 AND epoch = $3 AND level = 0;
