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
-- The checkpoints a statement of [$1, $2) names: one per stream epoch (the
-- forwarder's current epochs and the ended ones) whose log was live in the
-- window (a checkpoint cut before its end and one at or after its start); for
-- each, the largest checkpoint a witness cosigned, or, when no witness cosigned
-- any checkpoint of that epoch, its largest checkpoint. Index lookups per
-- epoch (log_checkpoints_cut_idx, the primary keys), never a scan of the log.
WITH epochs AS (
    SELECT node_id, stream_id, epoch FROM journal_checkpoints
    UNION
    SELECT node_id, stream_id, epoch FROM journal_epochs
),
live AS (
    SELECT e.node_id, e.stream_id, e.epoch
    FROM epochs e
    WHERE EXISTS (SELECT 1 FROM log_checkpoints c
                  WHERE c.node_id = e.node_id AND c.stream_id = e.stream_id AND c.epoch = e.epoch AND c.cut_at < $2)
      AND EXISTS (SELECT 1 FROM log_checkpoints c
                  WHERE c.node_id = e.node_id AND c.stream_id = e.stream_id AND c.epoch = e.epoch
                    AND c.cut_at >= $1)
),
chosen AS (
    SELECT l.node_id, l.stream_id, l.epoch,
           coalesce((SELECT max(s.tree_size) FROM log_cosignatures s
                     WHERE s.node_id = l.node_id AND s.stream_id = l.stream_id AND s.epoch = l.epoch),
                    (SELECT max(c.tree_size) FROM log_checkpoints c
                     WHERE c.node_id = l.node_id AND c.stream_id = l.stream_id AND c.epoch = l.epoch)) AS tree_size
    FROM live l
)
SELECT c.origin, c.tree_size, c.root
FROM chosen x
JOIN log_checkpoints c
  ON c.node_id = x.node_id AND c.stream_id = x.stream_id AND c.epoch = x.epoch AND c.tree_size = x.tree_size
ORDER BY c.origin;

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
