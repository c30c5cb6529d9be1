-- SQL of the forwarder's retention (forwarder/retention.py): segments are
-- released only under a witnessed checkpoint, and every release is recorded.
-- Code uses QUERIES["name"].

-- name: witnessed_checkpoint
-- The newest checkpoint of stream ($1 node, $2 stream, $3 epoch) covering at
-- least $4 records that holds cosignatures from at least $6 of the witnesses
-- named in $5; its note and the cosignature lines (by witness name), so the
-- release can carry the checkpoint verbatim with its cosignatures.
SELECT c.tree_size, c.root, c.note,
       coalesce(array_agg(s.line ORDER BY s.witness) FILTER (WHERE s.line IS NOT NULL), '{}') AS lines
FROM log_checkpoints c
LEFT JOIN log_cosignatures s
  ON s.node_id = c.node_id AND s.stream_id = c.stream_id AND s.epoch = c.epoch
 AND s.tree_size = c.tree_size AND s.witness = ANY($5::text[])
WHERE c.node_id = $1 AND c.stream_id = $2 AND c.epoch = $3 AND c.tree_size >= $4
GROUP BY c.tree_size, c.root, c.note
HAVING count(s.line) >= $6
ORDER BY c.tree_size DESC
LIMIT 1;

-- name: insert_release
-- A release (journal/FORMAT.md F18) of records $4 .. $5 of stream ($1, $2,
-- epoch $3), recorded after the RELEASES file and before the segments are
-- deleted. Recorded again after a crash (from the file): the first row stays.
INSERT INTO log_releases (node_id, stream_id, epoch, first_seq, last_seq, last_leaf_hash, last_chain_hash,
                          frontier, inclusion_proof, checkpoint_size, checkpoint, released_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (node_id, stream_id, epoch, first_seq) DO NOTHING;
