-- SQL of the forwarder. Loaded once by forwarder/store.py; code uses QUERIES["name"].

-- name: lock_checkpoint
-- Locks the checkpoint row of stream ($1 node, $2 stream) for the rest of the
-- transaction and returns it; no row means the stream was never shipped.
SELECT epoch, last_seq, last_hash, last_record_at, halted_at, halt_reason
FROM journal_checkpoints
WHERE node_id = $1 AND stream_id = $2
FOR UPDATE;

-- name: create_checkpoint
-- First contact: the row for stream ($1, $2) with epoch $3 and nothing shipped
-- yet (last_seq 0, last_hash $4 = the genesis predecessor hash). A concurrent
-- forwarder that created it first wins; the caller locks the row afterwards.
INSERT INTO journal_checkpoints (node_id, stream_id, epoch, last_seq, last_hash)
VALUES ($1, $2, $3, 0, $4)
ON CONFLICT (node_id, stream_id) DO NOTHING;

-- name: advance_checkpoint
-- Moves the head of stream ($1, $2) to seq $3, hash $4, record time $5 after
-- $6 more records were copied in the same transaction. The WHERE clause
-- re-checks continuity ($7 = the seq the batch started after) so a head can
-- never move backwards or skip.
UPDATE journal_checkpoints
SET last_seq = $3,
    last_hash = $4,
    last_record_at = $5,
    records_shipped = records_shipped + $6,
    updated_at = now()
WHERE node_id = $1 AND stream_id = $2 AND last_seq = $7 AND halted_at IS NULL;

-- name: halt_stream
-- Stops shipping stream ($1, $2): the reason $3 stays on the checkpoint until an
-- operator clears halted_at after investigating the incident.
UPDATE journal_checkpoints
SET halted_at = now(), halt_reason = $3, updated_at = now()
WHERE node_id = $1 AND stream_id = $2 AND halted_at IS NULL;

-- name: create_halted_checkpoint
-- A stream that broke before anything was shipped (its first record was not
-- seq 1 GENESIS): a row with nothing shipped, an all-zero epoch (none was seen)
-- and the halt reason $3, so the halt survives restarts.
INSERT INTO journal_checkpoints
    (node_id, stream_id, epoch, last_seq, last_hash, halted_at, halt_reason)
VALUES ($1, $2, '\x00000000000000000000000000000000'::bytea, 0,
        '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea, now(), $3)
ON CONFLICT (node_id, stream_id) DO NOTHING;

-- name: open_incident
-- Opens a $1 (CHAIN_BREAK, SEQ_GAP, STREAM_REPLACED or STREAM_REWOUND) CRITICAL incident for stream ($3 node,
-- $4 stream) with dedup key $2, subject $5 and evidence $6 (jsonb); the same
-- open problem seen again is refreshed (open_incident_v1).
SELECT * FROM open_incident_v1($1, $2, 'CRITICAL', NULL, $3, $4, $5, $6::jsonb);

-- name: retire_epoch
-- The journal of stream ($1, $2) restarted with epoch $4: keep where the
-- checkpointed epoch ended (append-only), with $3 the newest seq the forwarder
-- saw in its journal and $5 why. Run under the checkpoint row's lock.
INSERT INTO journal_epochs (node_id, stream_id, epoch, last_seq, last_hash, records_shipped,
                            journal_head_seq, successor_epoch, reason)
SELECT node_id, stream_id, epoch, last_seq, last_hash, records_shipped, greatest($3, last_seq), $4, $5
FROM journal_checkpoints
WHERE node_id = $1 AND stream_id = $2;

-- name: start_epoch
-- Moves the checkpoint of stream ($1, $2) from epoch $5 to the new epoch $3
-- with nothing shipped (last_hash $4 = the genesis predecessor hash).
UPDATE journal_checkpoints
SET epoch = $3, last_seq = 0, last_hash = $4, last_record_at = NULL, records_shipped = 0, updated_at = now()
WHERE node_id = $1 AND stream_id = $2 AND epoch = $5 AND halted_at IS NULL;

-- name: list_checkpoints
-- Every checkpoint of node $1: where each stream resumes after a restart.
SELECT stream_id, epoch, last_seq, last_hash, last_record_at, records_shipped, halted_at, halt_reason
FROM journal_checkpoints
WHERE node_id = $1
ORDER BY stream_id;

-- name: ensure_partitions
-- Creates the missing daily partitions of ingress_attestations for UTC days
-- $1 .. $2 (dates); returns how many were created.
SELECT ensure_attestation_partitions_v1($1::date, $2::date);

-- name: ping
-- Readiness: the database answers.
SELECT 1;
