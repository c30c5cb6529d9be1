-- Epochs (0050) for the readers that follow a stream: the repair daemon's
-- incremental chain verification and the sequence-gap view.

-- The epoch repair_chain_progress was verified in: when the stream moves to a
-- new epoch (STREAM_REPLACED), verification starts again from its seq 1.
ALTER TABLE repair_chain_progress
    ADD COLUMN epoch bytea CHECK (epoch IS NULL OR length(epoch) = 16);

-- Holes per epoch: a replaced stream numbers its new epoch from 1 again, so
-- the old epoch's rows must neither fill nor hide holes of the new one. Rows
-- with no epoch (shipped before 0050) belong to the stream's first epoch;
-- archives cover the first epoch only; the checkpoint is the current epoch's.
-- The epoch is the last column (NULL: the stream has no checkpoint).
CREATE OR REPLACE VIEW stream_sequence_gaps AS
WITH first_epochs AS (
    SELECT c.node_id, c.stream_id,
           coalesce((SELECT e.epoch FROM journal_epochs e
                     WHERE e.node_id = c.node_id AND e.stream_id = c.stream_id
                     ORDER BY e.ended_at, e.epoch LIMIT 1), c.epoch) AS first_epoch,
           c.epoch AS current_epoch
    FROM journal_checkpoints c
),
tagged AS (
    SELECT i.node_id, i.stream_id, i.stream_seq, coalesce(i.epoch, f.first_epoch) AS epoch,
           coalesce(i.epoch, f.first_epoch) IS NOT DISTINCT FROM f.first_epoch AS in_first_epoch
    FROM ingress_attestations i
    LEFT JOIN first_epochs f USING (node_id, stream_id)
),
ordered AS (
    SELECT node_id, stream_id, epoch, stream_seq,
           lead(stream_seq) OVER (PARTITION BY node_id, stream_id, epoch ORDER BY stream_seq) AS next_seq
    FROM tagged
),
bounds AS (
    SELECT node_id, stream_id, epoch, bool_or(in_first_epoch) AS in_first_epoch,
           min(stream_seq) AS first_seq, max(stream_seq) AS last_seq
    FROM tagged
    GROUP BY node_id, stream_id, epoch
),
archived AS (
    SELECT node_id, stream_id, max(last_seq) AS archived_through
    FROM attestation_archives
    GROUP BY node_id, stream_id
)
SELECT node_id, stream_id, stream_seq + 1 AS missing_from, next_seq - 1 AS missing_to,
       'inside' AS position, epoch
FROM ordered
WHERE next_seq > stream_seq + 1
UNION ALL
SELECT b.node_id, b.stream_id,
       CASE WHEN b.in_first_epoch THEN coalesce(a.archived_through, 0) ELSE 0 END + 1, b.first_seq - 1,
       'before_first', b.epoch
FROM bounds b
LEFT JOIN archived a USING (node_id, stream_id)
WHERE b.first_seq > CASE WHEN b.in_first_epoch THEN coalesce(a.archived_through, 0) ELSE 0 END + 1
UNION ALL
SELECT c.node_id, c.stream_id, coalesce(b.last_seq, 0) + 1, c.last_seq, 'after_last', c.epoch
FROM journal_checkpoints c
LEFT JOIN first_epochs f USING (node_id, stream_id)
LEFT JOIN bounds b ON b.node_id = c.node_id AND b.stream_id = c.stream_id AND b.epoch = c.epoch
WHERE c.last_seq > coalesce(b.last_seq, CASE WHEN f.first_epoch IS NOT DISTINCT FROM c.epoch THEN coalesce(
          (SELECT max(last_seq) FROM attestation_archives ar
           WHERE ar.node_id = c.node_id AND ar.stream_id = c.stream_id), 0) ELSE 0 END);
