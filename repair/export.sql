-- SQL of `symphony export` (repair/export.py). Code uses QUERIES["name"].
-- Every query runs in one REPEATABLE READ transaction: the export is one
-- consistent snapshot of the database.

-- name: window_ranges
-- The seq range of each stream epoch to export for the time window [$1, $2):
-- every record recorded in the window, the OUTCOMEs of its INGRESS records
-- (which may come after the window ends: attestation_classification looks
-- them up wherever they are), and the INGRESS each selected outbox row
-- points at (found by position as execution_attestation_v1 finds it: the
-- earliest recorded row at that node, stream and seq), looked up only for
-- the rows whose position is not already a window INGRESS (the few rows
-- created in the window for an INGRESS recorded before it). Rows with no
-- epoch (shipped before migration 0050) come back with a NULL epoch: the
-- caller refuses them.
WITH win AS MATERIALIZED (
    SELECT node_id, stream_id, epoch, stream_seq, record_type, attestation_id, executes
    FROM ingress_attestations
    WHERE recorded_at >= $1 AND recorded_at < $2
),
outside AS (
    SELECT x.ingress_node_id, x.ingress_stream_id, x.ingress_seq
    FROM payment_outbox x
    WHERE ((x.created_at >= $1 AND x.created_at < $2)
           OR EXISTS (SELECT 1 FROM win i
                      WHERE i.attestation_id = x.attestation_id AND i.node_id = x.ingress_node_id
                        AND i.record_type = 2 AND i.executes))
      AND NOT EXISTS (SELECT 1 FROM win w
                      WHERE w.node_id = x.ingress_node_id AND w.stream_id = x.ingress_stream_id
                        AND w.stream_seq = x.ingress_seq AND w.record_type = 2)
),
positions AS (
    SELECT node_id, stream_id, epoch, min(stream_seq) AS stream_seq, max(stream_seq) AS last_seq
    FROM win GROUP BY node_id, stream_id, epoch
    UNION ALL
    SELECT o.node_id, o.stream_id, o.epoch, min(o.stream_seq), max(o.stream_seq)
    FROM win i
    JOIN ingress_attestations o
      ON o.attestation_id = i.attestation_id AND o.record_type = 3
     AND o.node_id = i.node_id AND o.stream_id = i.stream_id
    WHERE i.record_type = 2 AND i.executes
    GROUP BY o.node_id, o.stream_id, o.epoch
    UNION ALL
    SELECT a.node_id, a.stream_id, a.epoch, a.stream_seq, a.stream_seq
    FROM outside s
    JOIN LATERAL (
        SELECT a.node_id, a.stream_id, a.epoch, a.stream_seq
        FROM ingress_attestations a
        WHERE a.node_id = s.ingress_node_id AND a.stream_id = s.ingress_stream_id AND a.stream_seq = s.ingress_seq
        ORDER BY a.recorded_at
        LIMIT 1) a ON true
)
SELECT node_id, stream_id, epoch, min(stream_seq) AS first_seq, max(last_seq) AS last_seq
FROM positions
GROUP BY node_id, stream_id, epoch
ORDER BY node_id, stream_id, min(stream_seq);

-- name: window_outbox
-- outbox.jsonl of window [$1, $2), one JSON object per row (COPY in CSV mode
-- with a quote and delimiter JSON text never holds, so the text is written
-- as PostgreSQL makes it): the rows created in the window (the execution side
-- of attestation_gap_v3), or executing an INGRESS recorded in it (the ingress
-- side: attestation_classification joins on attestation id and node).
SELECT json_build_object(
           'id', x.id, 'intent_id', x.intent_id, 'participant_id', x.participant_id,
           'attestation_id', x.attestation_id, 'ingress_node_id', x.ingress_node_id,
           'ingress_stream_id', x.ingress_stream_id, 'ingress_seq', x.ingress_seq,
           'ingress_body_sha256', encode(x.ingress_body_sha256, 'hex'), 'rail', x.rail, 'status', x.status,
           'attempt_count', x.attempt_count,
           'created_at', to_char(x.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'completed_at', to_char(x.completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text
FROM payment_outbox x
WHERE (x.created_at >= $1 AND x.created_at < $2)
       OR EXISTS (SELECT 1 FROM ingress_attestations i
                  WHERE i.attestation_id = x.attestation_id AND i.node_id = x.ingress_node_id
                    AND i.record_type = 2 AND i.executes AND i.recorded_at >= $1 AND i.recorded_at < $2)
ORDER BY x.id

-- name: window_events
-- events.jsonl of window [$1, $2): the outbox_events of the rows window_outbox selects.
WITH sel AS MATERIALIZED (
    SELECT x.id FROM payment_outbox x
    WHERE (x.created_at >= $1 AND x.created_at < $2)
       OR EXISTS (SELECT 1 FROM ingress_attestations i
                  WHERE i.attestation_id = x.attestation_id AND i.node_id = x.ingress_node_id
                    AND i.record_type = 2 AND i.executes AND i.recorded_at >= $1 AND i.recorded_at < $2)
)
SELECT json_build_object(
           'event_id', e.event_id, 'outbox_id', e.outbox_id, 'old_status', e.old_status,
           'new_status', e.new_status, 'attempt', e.attempt, 'actor', e.actor, 'response_code', e.response_code,
           'occurred_at', to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text
FROM outbox_events e
JOIN sel ON sel.id = e.outbox_id
ORDER BY e.outbox_id, e.event_id

-- name: seq_outbox
-- outbox.jsonl of records $3 .. $4 of stream epoch ($1 node, $2 stream, $5
-- epoch): the rows executing one of its INGRESS records.
SELECT json_build_object(
           'id', x.id, 'intent_id', x.intent_id, 'participant_id', x.participant_id,
           'attestation_id', x.attestation_id, 'ingress_node_id', x.ingress_node_id,
           'ingress_stream_id', x.ingress_stream_id, 'ingress_seq', x.ingress_seq,
           'ingress_body_sha256', encode(x.ingress_body_sha256, 'hex'), 'rail', x.rail, 'status', x.status,
           'attempt_count', x.attempt_count,
           'created_at', to_char(x.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'completed_at', to_char(x.completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text
FROM payment_outbox x
WHERE x.ingress_node_id = $1
      AND EXISTS (SELECT 1 FROM ingress_attestations i
                  WHERE i.node_id = $1 AND i.stream_id = $2 AND i.epoch = $5 AND i.stream_seq BETWEEN $3 AND $4
                    AND i.record_type = 2 AND i.executes AND i.attestation_id = x.attestation_id)
ORDER BY x.id

-- name: seq_events
-- events.jsonl of the rows seq_outbox selects.
WITH sel AS MATERIALIZED (
    SELECT x.id FROM payment_outbox x
    WHERE x.ingress_node_id = $1
      AND EXISTS (SELECT 1 FROM ingress_attestations i
                  WHERE i.node_id = $1 AND i.stream_id = $2 AND i.epoch = $5 AND i.stream_seq BETWEEN $3 AND $4
                    AND i.record_type = 2 AND i.executes AND i.attestation_id = x.attestation_id)
)
SELECT json_build_object(
           'event_id', e.event_id, 'outbox_id', e.outbox_id, 'old_status', e.old_status,
           'new_status', e.new_status, 'attempt', e.attempt, 'actor', e.actor, 'response_code', e.response_code,
           'occurred_at', to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text
FROM outbox_events e
JOIN sel ON sel.id = e.outbox_id
ORDER BY e.outbox_id, e.event_id

-- name: current_epoch
-- The epoch stream ($1, $2) ships now.
SELECT epoch FROM journal_checkpoints WHERE node_id = $1 AND stream_id = $2;

-- name: covering_checkpoint
-- The checkpoint of stream epoch ($1, $2, $3) that covers seq $4: the newest
-- one a witness cosigned, else the newest one at all; with its cosignature
-- lines in witness order.
SELECT c.tree_size, c.root, c.origin, c.note,
       coalesce((SELECT array_agg(s.line ORDER BY s.witness) FROM log_cosignatures s
                 WHERE s.node_id = c.node_id AND s.stream_id = c.stream_id AND s.epoch = c.epoch
                   AND s.tree_size = c.tree_size), '{}') AS cosignatures
FROM log_checkpoints c
WHERE c.node_id = $1 AND c.stream_id = $2 AND c.epoch = $3 AND c.tree_size >= $4
ORDER BY EXISTS (SELECT 1 FROM log_cosignatures s
                 WHERE s.node_id = c.node_id AND s.stream_id = c.stream_id AND s.epoch = c.epoch
                   AND s.tree_size = c.tree_size) DESC,
         c.tree_size DESC
LIMIT 1;

-- name: chain_hash_at
-- The chain hash of record $4 of stream epoch ($1, $2, $3), if PostgreSQL holds it.
SELECT chain_hash FROM ingress_attestations
WHERE node_id = $1 AND stream_id = $2 AND epoch = $3 AND stream_seq = $4
ORDER BY recorded_at
LIMIT 1;

-- name: ended_epoch
-- Where epoch $3 of stream ($1, $2) ended, if it did.
SELECT last_seq, last_hash, journal_head_seq, successor_epoch, reason, ended_at
FROM journal_epochs
WHERE node_id = $1 AND stream_id = $2 AND epoch = $3;

-- name: tiles
-- Tiles ($4 levels, $5 indices, pairwise) of stream epoch ($1, $2, $3).
SELECT t.level, t.tile_index, t.hashes
FROM log_tiles t
JOIN unnest($4::smallint[], $5::bigint[]) AS w(level, tile_index)
  ON t.level = w.level AND t.tile_index = w.tile_index
WHERE t.node_id = $1 AND t.stream_id = $2 AND t.epoch = $3;

-- name: tree_size
-- Leaves of the tree of stream epoch ($1, $2, $3) PostgreSQL holds tiles for.
SELECT coalesce(max(tile_index * 256 + width), 0) AS size
FROM log_tiles
WHERE node_id = $1 AND stream_id = $2 AND epoch = $3 AND level = 0;

-- name: records
-- Records $4 .. $5 of stream epoch ($1, $2, $3) as export lines: the chain
-- hash and the canonical bytes (the journal's bytes, never re-encoded), in hex.
SELECT encode(chain_hash, 'hex') || ' ' || encode(canonical, 'hex')
FROM ingress_attestations
WHERE node_id = $1 AND stream_id = $2 AND epoch = $3 AND stream_seq BETWEEN $4 AND $5
ORDER BY stream_seq, recorded_at;

-- name: newest_checkpoint_below
-- The newest checkpoint of stream epoch ($1, $2, $3) below seq $4 (its size),
-- cosigned ones first, and the last INGRESS or OUTCOME after it up to $4.
SELECT c.tree_size,
       (SELECT max(a.stream_seq) FROM ingress_attestations a
        WHERE a.node_id = $1 AND a.stream_id = $2 AND a.epoch = $3 AND a.record_type IN (2, 3)
          AND a.stream_seq > c.tree_size AND a.stream_seq <= $4) AS attestation_after
FROM log_checkpoints c
WHERE c.node_id = $1 AND c.stream_id = $2 AND c.epoch = $3 AND c.tree_size < $4
ORDER BY EXISTS (SELECT 1 FROM log_cosignatures s
                 WHERE s.node_id = c.node_id AND s.stream_id = c.stream_id AND s.epoch = c.epoch
                   AND s.tree_size = c.tree_size) DESC,
         c.tree_size DESC
LIMIT 1;

-- name: export_snapshot
-- The snapshot of this REPEATABLE READ transaction, for a second connection to share.
SELECT pg_export_snapshot();

-- name: import_snapshot
-- Adopt the exporting transaction's snapshot (SET TRANSACTION takes no bind
-- parameter: the code puts the id PostgreSQL gave, checked against the
-- pattern repair/export.py holds, in place of the quoted placeholder).
SET TRANSACTION SNAPSHOT '<snapshot>'
