-- SQL of the forwarder's Merkle tree upkeep (forwarder/tree.py) and witness
-- publisher (forwarder/publisher.py). Code uses QUERIES["name"].

-- name: tiles
-- Tiles ($4 levels, $5 indices, pairwise) of the tree of stream ($1 node, $2
-- stream, $3 epoch): the right-edge tiles a resume needs, in one query.
SELECT t.level, t.tile_index, t.hashes
FROM log_tiles t
JOIN unnest($4::smallint[], $5::bigint[]) AS w(level, tile_index)
  ON t.level = w.level AND t.tile_index = w.tile_index
WHERE t.node_id = $1 AND t.stream_id = $2 AND t.epoch = $3;

-- name: upsert_tiles
-- Stores tiles ($4 levels, $5 indices, $6 hashes, pairwise) of stream ($1, $2,
-- epoch $3): new tiles are inserted, a grown right-edge tile replaces the
-- shorter one (the log_tiles_only_grow trigger refuses anything but growth);
-- an unchanged tile is left alone.
INSERT INTO log_tiles (node_id, stream_id, epoch, level, tile_index, width, hashes)
SELECT $1, $2, $3, t.level, t.tile_index, length(t.hashes) / 32, t.hashes
FROM unnest($4::smallint[], $5::bigint[], $6::bytea[]) AS t(level, tile_index, hashes)
ON CONFLICT (node_id, stream_id, epoch, level, tile_index) DO UPDATE
SET width = EXCLUDED.width, hashes = EXCLUDED.hashes
WHERE log_tiles.hashes IS DISTINCT FROM EXCLUDED.hashes;

-- name: delete_tiles
-- Forgets the tiles of stream ($1, $2, epoch $3) before they are recomputed
-- from the shipped rows (tiles are derived data).
DELETE FROM log_tiles WHERE node_id = $1 AND stream_id = $2 AND epoch = $3;

-- name: leaves
-- The canonical bytes of records 1 .. $4 of stream ($1, $2, epoch $3), in seq
-- order, to recompute its tree. Rows shipped before migration 0050 carry no
-- epoch: they belong to the stream's first epoch (the one no journal_epochs
-- row names as a successor).
SELECT stream_seq, canonical
FROM ingress_attestations a
WHERE a.node_id = $1 AND a.stream_id = $2 AND a.stream_seq <= $4
  AND (a.epoch = $3
       OR (a.epoch IS NULL AND NOT EXISTS (
             SELECT 1 FROM journal_epochs e
             WHERE e.node_id = $1 AND e.stream_id = $2 AND e.successor_epoch = $3)))
ORDER BY a.stream_seq;

-- name: insert_checkpoint
-- A CHECKPOINT record whose signed checkpoint matches the tree computed from
-- the shipped records (same transaction as the batch). Shipped again after a
-- restored database: the first one stays.
INSERT INTO log_checkpoints (node_id, stream_id, epoch, tree_size, root, origin, note, record_seq, cut_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (node_id, stream_id, epoch, tree_size) DO NOTHING;

-- name: open_incident
-- Opens a CRITICAL incident of kind $1 (CHECKPOINT_MISMATCH, CHECKPOINT_REFUSED)
-- for stream ($3 node, $4 stream) with dedup key $2, subject $5 and evidence
-- $6 (jsonb), through open_incident_v1.
SELECT * FROM open_incident_v1($1, $2, 'CRITICAL', NULL, $3, $4, $5, $6::jsonb);

-- name: latest_checkpoints
-- The newest checkpoint of every epoch of each stream of node $1: the current
-- epoch (journal_checkpoints) and every ended one (journal_epochs, a replaced
-- journal). What the publisher submits to the witnesses (a witness needs only
-- the newest per origin); an ended epoch's last checkpoint is what proves its
-- final size, so it is submitted too, once, after the journal was replaced.
SELECT c.node_id, c.stream_id, c.epoch, c.tree_size, c.root, c.origin, c.note, c.cut_at, j.ended
FROM (SELECT node_id, stream_id, epoch, false AS ended FROM journal_checkpoints WHERE node_id = $1
      UNION ALL
      SELECT node_id, stream_id, epoch, true AS ended FROM journal_epochs WHERE node_id = $1) j
CROSS JOIN LATERAL (
    SELECT * FROM log_checkpoints c
    WHERE c.node_id = j.node_id AND c.stream_id = j.stream_id AND c.epoch = j.epoch
    ORDER BY c.tree_size DESC
    LIMIT 1) c
ORDER BY c.stream_id, c.cut_at;

-- name: witness_states
-- What the publisher knows of each witness per origin (node $1).
SELECT witness, origin, cosigned_size, refused_size
FROM log_witness_state
WHERE node_id = $1;

-- name: insert_cosignature
-- A verified cosignature line of witness $5 for checkpoint ($1, $2, $3, size $4).
INSERT INTO log_cosignatures (node_id, stream_id, epoch, tree_size, witness, line, cosigned_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (node_id, stream_id, epoch, tree_size, witness) DO NOTHING;

-- name: note_cosigned
-- Witness $1 cosigned origin $2 (stream $3, $4, epoch $5) at size $6.
INSERT INTO log_witness_state (witness, origin, node_id, stream_id, epoch, cosigned_size)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (witness, origin) DO UPDATE
SET cosigned_size = greatest(log_witness_state.cosigned_size, EXCLUDED.cosigned_size),
    refused_size = NULL, refused_reason = NULL, updated_at = now();

-- name: note_refused
-- Witness $1 refused origin $2's checkpoint of size $6 for reason $7.
INSERT INTO log_witness_state (witness, origin, node_id, stream_id, epoch, refused_size, refused_reason)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (witness, origin) DO UPDATE
SET refused_size = EXCLUDED.refused_size, refused_reason = EXCLUDED.refused_reason, updated_at = now();
