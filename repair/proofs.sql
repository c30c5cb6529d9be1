-- SQL of inclusion and consistency proofs from PostgreSQL (repair/proofs.py):
-- `symphony proof` and the dashboard's /api/proof/*. Code uses QUERIES["name"].
-- The checkpoint covering a record and a checkpoint's cosignatures are the SQL
-- functions log_checkpoint_covering_v1 and log_cosignatures_of_v1 (migration
-- 0155), shared by the queries below.

-- name: record_by_attestation
-- The record of attestation $1 to prove (its INGRESS, else its lowest type),
-- optionally on node $2, with the newest checkpoint covering it (NULL
-- columns: none yet), cosigned by a witness unless $3. Rows shipped before
-- migration 0050 carry no epoch: theirs is the stream's first (its oldest
-- ended epoch, else the current one). One round trip.
SELECT r.node_id, r.stream_id, r.stream_seq, r.canonical, r.epoch,
       c.tree_size, c.root, c.origin, c.note, c.cosignatures
FROM (SELECT a.node_id, a.stream_id, a.stream_seq, a.canonical,
             coalesce(a.epoch,
                      (SELECT e.epoch FROM journal_epochs e WHERE e.node_id = a.node_id AND e.stream_id = a.stream_id
                       ORDER BY e.ended_at LIMIT 1),
                      (SELECT j.epoch FROM journal_checkpoints j
                       WHERE j.node_id = a.node_id AND j.stream_id = a.stream_id)) AS epoch
      FROM ingress_attestations a
      WHERE a.attestation_id = $1 AND ($2::text IS NULL OR a.node_id = $2) AND a.record_type <> 1
      ORDER BY (a.record_type = 2) DESC, a.record_type, a.shipped_at
      LIMIT 1) r
LEFT JOIN LATERAL log_checkpoint_covering_v1(r.node_id, r.stream_id, r.epoch, r.stream_seq, $3) c ON true;

-- name: record_by_seq
-- Record seq $3 of stream ($1 node, $2 stream) in epoch $4 (NULL: the stream's
-- current epoch, journal_checkpoints), with the newest checkpoint covering it
-- as in record_by_attestation ($5: unwitnessed allowed). One round trip.
SELECT a.node_id, a.stream_id, a.stream_seq, a.canonical, a.epoch,
       c.tree_size, c.root, c.origin, c.note, c.cosignatures
FROM ingress_attestations a
LEFT JOIN LATERAL log_checkpoint_covering_v1(a.node_id, a.stream_id, a.epoch, a.stream_seq, $5) c ON true
WHERE a.node_id = $1 AND a.stream_id = $2 AND a.stream_seq = $3
  AND a.epoch = coalesce($4::bytea, (SELECT j.epoch FROM journal_checkpoints j
                                     WHERE j.node_id = $1 AND j.stream_id = $2));

-- name: current_epoch
-- The epoch stream ($1, $2) ships now.
SELECT epoch FROM journal_checkpoints WHERE node_id = $1 AND stream_id = $2;

-- name: checkpoint_at
-- The checkpoint of stream ($1, $2, epoch $3) at tree size $4, if one was kept.
SELECT c.tree_size, c.root, c.origin, c.note,
       log_cosignatures_of_v1(c.node_id, c.stream_id, c.epoch, c.tree_size) AS cosignatures
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
