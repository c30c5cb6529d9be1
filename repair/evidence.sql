-- Queries of the evidence bundle's log anchors (repair/evidence.py).

-- name: evidence_table_exists
-- Whether a table of the verifiable log exists yet ($1: its name).
SELECT to_regclass($1::text) IS NOT NULL AS present;

-- name: evidence_latest_checkpoints
-- The latest checkpoint of every journal stream (its newest epoch, its largest
-- tree), as the forwarder stored it in log_checkpoints (TLOG design, decision 5).
SELECT DISTINCT ON (node_id, stream_id)
       node_id, stream_id, encode(epoch, 'hex') AS epoch, tree_size, encode(root, 'hex') AS root, note,
       cut_at
FROM log_checkpoints
ORDER BY node_id, stream_id, cut_at DESC, tree_size DESC;
