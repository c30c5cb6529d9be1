-- Signed gap statements (repair/statements.py; table: migration 0135).

-- name: statement_last
-- The newest stored statement's window: the next window starts at its end.
SELECT window_start, window_end FROM gap_statements ORDER BY window_start DESC LIMIT 1;

-- name: statement_first_record
-- When the record begins: the first window is the one holding the oldest record.
SELECT min(recorded_at) FROM ingress_attestations;

-- name: statement_ghosts
-- Every ghost whose INGRESS was recorded in [$1, $2), by position, at most $3
-- (the GHOST class of attestation_classification: the rule attestation_gap_v3 counts).
SELECT participant_id, node_id, stream_id, stream_seq, attestation_id
FROM attestation_classification
WHERE classification = 'GHOST' AND recorded_at >= $1 AND recorded_at < $2
ORDER BY node_id, stream_id, stream_seq
LIMIT $3;

-- name: statement_checkpoints
-- The checkpoints a statement of [$1, $2) names: one per stream epoch whose log
-- was live in the window (a checkpoint cut before its end and one at or after
-- its start); for each, the largest checkpoint a witness cosigned, or, when no
-- witness cosigned any checkpoint of that epoch, the largest checkpoint.
WITH live AS (
    SELECT node_id, stream_id, epoch
    FROM log_checkpoints
    GROUP BY node_id, stream_id, epoch
    HAVING max(cut_at) >= $1 AND min(cut_at) < $2
)
SELECT DISTINCT ON (c.node_id, c.stream_id, c.epoch) c.origin, c.tree_size, c.root
FROM log_checkpoints c
JOIN live l ON l.node_id = c.node_id AND l.stream_id = c.stream_id AND l.epoch = c.epoch
ORDER BY c.node_id, c.stream_id, c.epoch,
         EXISTS (SELECT 1 FROM log_cosignatures s
                 WHERE s.node_id = c.node_id AND s.stream_id = c.stream_id AND s.epoch = c.epoch
                   AND s.tree_size = c.tree_size) DESC,
         c.tree_size DESC;

-- name: statement_insert
-- Store a signed statement once: a second instance (or a restart) that signed
-- the same window inserts nothing (primary key, non-overlap constraint).
INSERT INTO gap_statements (window_start, window_end, key_name, body, note, ghosts, unattested, signed_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT DO NOTHING
RETURNING window_start;

-- name: statements_overlapping
-- The stored statements whose window overlaps [$1, $2), oldest first, at most $3.
SELECT window_start, window_end, key_name, body, note, ghosts, unattested, signed_at, signed_by
FROM gap_statements
WHERE window_end > $1 AND window_start < $2
ORDER BY window_start
LIMIT $3;

-- name: statements_newest
-- The newest $1 statements (repair re-publishes any whose file is missing).
SELECT window_start, window_end, key_name, body, note, ghosts, unattested, signed_at, signed_by
FROM gap_statements
ORDER BY window_start DESC
LIMIT $1;
