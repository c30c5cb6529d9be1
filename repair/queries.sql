-- Named queries of repair/ (loaded once by symphony.db.queries.load).
-- Times: $n seconds are passed as double precision and turned into intervals.

-- name: detect_ghosts
-- GHOST: INGRESS on an executing route, older than the grace period ($1 s) and
-- inside the scan window ($2 s), neither executed nor handled. At most $3 rows.
SELECT node_id, stream_id, stream_seq, attestation_id, participant_id, method, route,
       encode(idempotency_key_hash, 'hex') AS idempotency_key_hash, recorded_at,
       outcome_disposition, outcome_status
FROM attestation_ghosts
WHERE recorded_at < now() - make_interval(secs => $1)
  AND recorded_at >= now() - make_interval(secs => $2)
ORDER BY recorded_at
LIMIT $3;

-- name: detect_outcome_missing
-- OUTCOME_MISSING: INGRESS older than $1 s (inside the $2 s window) without an
-- OUTCOME record on its stream, with the outbox row if one exists. At most $3.
SELECT i.node_id, i.stream_id, i.stream_seq, i.attestation_id,
       coalesce(nullif(i.participant_id, ''), '(unauthenticated)') AS participant_id,
       i.method, i.route, i.executes, i.recorded_at,
       encode(i.idempotency_key_hash, 'hex') AS idempotency_key_hash,
       x.id::text AS outbox_id, x.status::text AS outbox_status
FROM ingress_attestations i
LEFT JOIN payment_outbox x ON x.attestation_id = i.attestation_id AND x.ingress_node_id = i.node_id
WHERE i.record_type = 2
  AND i.recorded_at < now() - make_interval(secs => $1)
  AND i.recorded_at >= now() - make_interval(secs => $2)
  AND NOT EXISTS (
      SELECT 1 FROM ingress_attestations o
      WHERE o.attestation_id = i.attestation_id AND o.record_type = 3
        AND o.node_id = i.node_id AND o.stream_id = i.stream_id)
ORDER BY i.recorded_at
LIMIT $3;

-- name: detect_zombies
-- ZOMBIE: IN_FLIGHT rows whose lease expired more than $1 s ago. At most $2.
SELECT id::text AS outbox_id, participant_id, rail, attempt_count, max_attempts, lease_owner,
       lease_expires_at, attestation_id, ingress_node_id, ingress_stream_id, ingress_seq,
       extract(epoch FROM now() - lease_expires_at)::double precision AS expired_seconds
FROM payment_outbox
WHERE status = 'IN_FLIGHT' AND lease_expires_at < now() - make_interval(secs => $1)
ORDER BY lease_expires_at
LIMIT $2;

-- name: requeue_zombies
-- Makes zombies ($1 outbox ids, lease expired more than $2 s ago) claimable
-- again as RECOVERING: the relayer resends with the same rail key, so the rail
-- returns its cached result if the first attempt went through. Rows a relayer
-- holds right now are skipped, never waited for.
WITH target AS (
    SELECT id FROM payment_outbox
    WHERE id = ANY($1::uuid[]) AND status = 'IN_FLIGHT'
      AND lease_expires_at < now() - make_interval(secs => $2)
    FOR UPDATE SKIP LOCKED
)
UPDATE payment_outbox x
SET status = 'RECOVERING', lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = now(),
    last_error = 'lease expired; re-queued by repair (ambiguous outcome: resend with the same rail key)'
FROM target
WHERE x.id = target.id
RETURNING x.id::text AS outbox_id;

-- name: detect_stuck_keys
-- STUCK_KEY: idempotency keys IN_PROGRESS for more than $1 s. At most $2.
-- The key itself is not shown, only its SHA-256, as in the attestations.
SELECT k.participant_id, encode(sha256(convert_to(k.idempotency_key, 'UTF8')), 'hex') AS key_hash,
       k.locked_at, k.expires_at, k.intent_id::text AS intent_id, k.attestation_id,
       x.id::text AS outbox_id, x.status::text AS outbox_status,
       extract(epoch FROM now() - k.locked_at)::double precision AS locked_seconds
FROM idempotency_keys k
LEFT JOIN payment_outbox x ON x.intent_id = k.intent_id
WHERE k.state = 'IN_PROGRESS' AND k.locked_at < now() - make_interval(secs => $1)
ORDER BY k.locked_at
LIMIT $2;

-- name: release_stuck_keys
-- Releases keys stuck IN_PROGRESS for more than $2 s with nothing executed (no
-- intent): the client's retry with the same key then executes once. Keys of
-- participants/hashes in $1 (participant || ':' || key sha256) only; rows held
-- by a service transaction right now are skipped.
WITH target AS (
    SELECT participant_id, idempotency_key FROM idempotency_keys
    WHERE state = 'IN_PROGRESS' AND intent_id IS NULL
      AND locked_at < now() - make_interval(secs => $2)
      AND participant_id || ':' || encode(sha256(convert_to(idempotency_key, 'UTF8')), 'hex') = ANY($1::text[])
    FOR UPDATE SKIP LOCKED
)
DELETE FROM idempotency_keys k
USING target
WHERE k.participant_id = target.participant_id AND k.idempotency_key = target.idempotency_key
RETURNING k.participant_id || ':' || encode(sha256(convert_to(k.idempotency_key, 'UTF8')), 'hex') AS dedup_key;

-- name: detect_seq_gaps
-- SEQ_GAP: holes in each stream's numbering (view stream_sequence_gaps).
SELECT node_id, stream_id, missing_from, missing_to, position
FROM stream_sequence_gaps
ORDER BY node_id, stream_id, missing_from
LIMIT $1;

-- name: detect_silent_streams
-- NODE_SILENT: streams with no record at all (not even a heartbeat) for more
-- than $1 s; streams are known from checkpoints and from rows of the last $2 s.
WITH seen AS (
    SELECT node_id, stream_id, max(recorded_at) AS last_at
    FROM ingress_attestations
    WHERE recorded_at >= now() - make_interval(secs => $2)
    GROUP BY node_id, stream_id
),
streams AS (
    SELECT node_id, stream_id,
           coalesce(greatest(c.last_record_at, s.last_at), c.updated_at) AS last_seen_at
    FROM journal_checkpoints c
    FULL JOIN seen s USING (node_id, stream_id)
)
SELECT node_id, stream_id, last_seen_at,
       extract(epoch FROM now() - last_seen_at)::double precision AS silent_seconds
FROM streams
WHERE last_seen_at < now() - make_interval(secs => $1)
ORDER BY node_id, stream_id
LIMIT $3;

-- name: detect_dead_letters
-- DEAD_LETTER: outbox rows that exhausted their retry budget. At most $1.
SELECT id::text AS outbox_id, participant_id, rail, attempt_count, max_attempts, last_error,
       last_response_code, completed_at, attestation_id, ingress_node_id, ingress_stream_id, ingress_seq
FROM payment_outbox
WHERE status = 'FAILED'
ORDER BY completed_at
LIMIT $1;

-- name: detect_unattested
-- UNATTESTED_EXECUTION: outbox rows (executions) created within the last $2 s
-- whose INGRESS PostgreSQL does not hold with the same attestation id,
-- participant and body hash, plus those whose INGRESS is still not shipped
-- (halted stream, or beyond the checkpoint) after $1 s. At most $3.
SELECT e.outbox_id::text AS outbox_id, e.participant_id, e.attestation_id, e.node_id, e.stream_id, e.stream_seq,
       e.status::text AS outbox_status, e.rail, e.created_at AS recorded_at, e.age_seconds, e.rail_attempts,
       e.ingress_attestation_id, e.ingress_participant_id, e.body_sha256_compared, e.checkpoint_seq, e.halted_at,
       e.classification, e.reason
FROM execution_attestation_v1 e
WHERE e.created_at >= now() - make_interval(secs => $2)
  AND (e.classification = 'UNATTESTED'
       OR (e.classification = 'PENDING' AND e.created_at <= now() - make_interval(secs => $1)))
ORDER BY e.created_at
LIMIT $3;

-- name: detect_halted_streams
-- Streams whose forwarder halted (it refused a batch that did not continue the
-- chain at ingest): a CHAIN_BREAK seen at the journal side.
SELECT node_id, stream_id, last_seq, halted_at, halt_reason
FROM journal_checkpoints
WHERE halted_at IS NOT NULL
ORDER BY node_id, stream_id;

-- name: upsert_incidents
-- Opens each finding as an incident, or refreshes the open one with the same
-- (kind, dedup_key), through open_incident_v1 (a finding an operator closed as
-- ACCEPTED_LOSS or FALSE_POSITIVE is not reopened). Arrays: $1 kind,
-- $2 dedup_key, $3 severity, $4 participant, $5 node, $6 stream, $7 subject,
-- $8 evidence (json text).
SELECT o.incident_id, f.kind, f.dedup_key, o.opened
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[], $8::text[])
     AS f(kind, dedup_key, severity, participant_id, node_id, stream_id, subject, evidence),
     LATERAL open_incident_v1(f.kind, f.dedup_key, f.severity, f.participant_id, f.node_id, f.stream_id,
                              f.subject, f.evidence::jsonb) AS o;

-- name: resolve_cleared
-- Auto-resolves open incidents of kind $1 whose condition is gone: not among
-- this cycle's findings ($2 dedup keys). Incidents about records older than the
-- scan window ($3) are left alone: the detector no longer looks at them.
UPDATE repair_incidents
SET resolved_at = now(), resolution = $4, resolved_by = $5, last_seen_at = last_seen_at
WHERE kind = $1 AND resolved_at IS NULL
  AND NOT (dedup_key = ANY($2::text[]))
  AND coalesce((evidence->>'recorded_at')::timestamptz, 'infinity'::timestamptz) >= $3
RETURNING incident_id, dedup_key;

-- name: record_action
-- Appends what the automation (or an operator) did about an incident.
INSERT INTO repair_actions (incident_id, action, detail, actor)
VALUES ($1, $2, $3::jsonb, $4)
RETURNING action_id;

-- name: open_incident_ids
-- Open incidents of kind $1 by dedup key (to attach actions).
SELECT dedup_key, incident_id FROM repair_incidents
WHERE kind = $1 AND resolved_at IS NULL AND dedup_key = ANY($2::text[]);

-- name: list_streams
-- Every stream known to PostgreSQL: a loose index scan over the primary key
-- (one probe per stream instead of reading every row), plus checkpoints.
WITH RECURSIVE s AS (
    (SELECT node_id, stream_id FROM ingress_attestations ORDER BY node_id, stream_id LIMIT 1)
    UNION ALL
    SELECT n.node_id, n.stream_id
    FROM s, LATERAL (
        SELECT i.node_id, i.stream_id FROM ingress_attestations i
        WHERE (i.node_id, i.stream_id) > (s.node_id, s.stream_id)
        ORDER BY i.node_id, i.stream_id LIMIT 1) n
)
SELECT node_id, stream_id FROM s
UNION
SELECT node_id, stream_id FROM journal_checkpoints
ORDER BY node_id, stream_id;

-- name: stream_context
-- What verification of stream ($1, $2) starts from: its checkpoint and how far
-- archives cover it.
SELECT c.last_seq, c.last_hash, c.epoch,
       (SELECT max(a.last_seq) FROM attestation_archives a
        WHERE a.node_id = $1 AND a.stream_id = $2) AS archived_through
FROM (SELECT 1) one
LEFT JOIN journal_checkpoints c ON c.node_id = $1 AND c.stream_id = $2;

-- name: stream_rows
-- Rows of stream ($1, $2) after seq $3, in order, at most $4 (a second row
-- with the same seq sorts next to the first: that is how inserts show).
SELECT stream_seq, recorded_at, record_type, attestation_id, participant_id, method, route, executes,
       status, disposition, latency_us, idempotency_key_hash, body_sha256, chain_hash, canonical
FROM ingress_attestations
WHERE node_id = $1 AND stream_id = $2 AND stream_seq > $3
ORDER BY stream_seq, recorded_at
LIMIT $4;

-- name: stream_rows_filtered
-- The rows the audit CLI streams through a cursor: one stream, all of it.
SELECT stream_seq, recorded_at, record_type, attestation_id, participant_id, method, route, executes,
       status, disposition, latency_us, idempotency_key_hash, body_sha256, chain_hash, canonical
FROM ingress_attestations
WHERE node_id = $1 AND stream_id = $2
ORDER BY stream_seq, recorded_at;

-- name: get_progress
SELECT node_id, stream_id, verified_seq, verified_hash, broken_seq, broken_reason, epoch
FROM repair_chain_progress;

-- name: save_progress
-- Records how far stream ($1, $2) is verified, in epoch $7, and its current break, if any.
INSERT INTO repair_chain_progress (node_id, stream_id, verified_seq, verified_hash, broken_seq, broken_reason,
                                   epoch)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (node_id, stream_id) DO UPDATE
SET verified_seq = EXCLUDED.verified_seq, verified_hash = EXCLUDED.verified_hash, verified_at = now(),
    broken_seq = EXCLUDED.broken_seq, broken_reason = EXCLUDED.broken_reason, epoch = EXCLUDED.epoch;

-- name: instance_status
-- Upserts this instance's role and last cycle.
INSERT INTO repair_instances (instance_id, role, became_leader_at, last_cycle_at, last_cycle_ms, last_error)
VALUES ($1, $2, CASE WHEN $2 = 'LEADER' THEN now() END, $3, $4, $5)
ON CONFLICT (instance_id) DO UPDATE
SET role = EXCLUDED.role,
    became_leader_at = CASE WHEN EXCLUDED.role = 'LEADER' AND repair_instances.role <> 'LEADER' THEN now()
                            WHEN EXCLUDED.role = 'LEADER' THEN repair_instances.became_leader_at END,
    last_cycle_at = coalesce(EXCLUDED.last_cycle_at, repair_instances.last_cycle_at),
    last_cycle_ms = coalesce(EXCLUDED.last_cycle_ms, repair_instances.last_cycle_ms),
    last_error = EXCLUDED.last_error,
    updated_at = now();

-- name: instance_took_over
-- This instance has just acquired the leader lock: a new term starts now, even
-- if the row still says LEADER (the same instance id killed and restarted).
INSERT INTO repair_instances (instance_id, role, became_leader_at)
VALUES ($1, 'LEADER', now())
ON CONFLICT (instance_id) DO UPDATE
SET role = 'LEADER', became_leader_at = now(), last_error = NULL, updated_at = now();

-- name: list_incidents
-- Incidents, newest first; $1 true for open ones only, $2 kind or NULL, $3 limit.
SELECT incident_id::text, kind, severity, participant_id, node_id, stream_id, subject,
       detected_at, last_seen_at, resolved_at, resolution
FROM repair_incidents
WHERE (NOT $1 OR resolved_at IS NULL) AND ($2::text IS NULL OR kind = $2)
ORDER BY detected_at DESC, incident_id DESC
LIMIT $3;

-- name: get_incident
SELECT incident_id::text, kind, dedup_key, severity, participant_id, node_id, stream_id, subject,
       evidence::text AS evidence, detected_at, last_seen_at, resolved_at, resolution, resolved_by,
       operator_notes::text AS operator_notes
FROM repair_incidents
WHERE incident_id = $1;

-- name: incident_actions
SELECT action_id, action, detail::text AS detail, actor, occurred_at
FROM repair_actions WHERE incident_id = $1 ORDER BY action_id;

-- name: resolve_incident
-- An operator closes an open incident with an outcome and a note.
UPDATE repair_incidents
SET resolved_at = now(), resolution = $2, resolved_by = $3,
    operator_notes = operator_notes || jsonb_build_array(
        jsonb_build_object('at', now(), 'by', $3::text, 'outcome', $2::text, 'note', $4::text))
WHERE incident_id = $1 AND resolved_at IS NULL
RETURNING incident_id::text;

-- name: attestation_records
-- The INGRESS and OUTCOME records of attestation $1 on node $2.
SELECT node_id, stream_id, stream_seq, record_type, recorded_at, participant_id, method, route, executes,
       status, disposition, latency_us, encode(idempotency_key_hash, 'hex') AS idempotency_key_hash,
       encode(body_sha256, 'hex') AS body_sha256, encode(chain_hash, 'hex') AS chain_hash
FROM ingress_attestations
WHERE attestation_id = $1 AND ($2::text IS NULL OR node_id = $2) AND record_type IN (2, 3)
ORDER BY stream_seq;

-- name: outbox_for_attestation
SELECT x.id::text AS outbox_id, x.status::text AS status, x.rail, x.attempt_count, x.max_attempts,
       x.lease_owner, x.lease_expires_at, x.last_response_code, x.last_error, x.rail_reference,
       x.created_at, x.completed_at, x.intent_id::text AS intent_id,
       p.amount_minor, p.currency, p.created_at AS intent_created_at
FROM payment_outbox x
JOIN payment_intents p USING (intent_id)
WHERE x.attestation_id = $1 AND ($2::text IS NULL OR x.ingress_node_id = $2);

-- name: outbox_by_id
SELECT x.id::text AS outbox_id, x.status::text AS status, x.rail, x.attempt_count, x.max_attempts,
       x.lease_owner, x.lease_expires_at, x.last_response_code, x.last_error, x.rail_reference,
       x.created_at, x.completed_at, x.intent_id::text AS intent_id, x.attestation_id,
       x.ingress_node_id, p.amount_minor, p.currency, p.created_at AS intent_created_at
FROM payment_outbox x
JOIN payment_intents p USING (intent_id)
WHERE x.id = $1::uuid;

-- name: outbox_transitions
SELECT event_id, old_status::text AS old_status, new_status::text AS new_status, attempt, actor,
       response_code, detail, occurred_at
FROM outbox_events WHERE outbox_id = $1::uuid ORDER BY event_id;

-- name: audit_gap
-- The attestation gap from both sides per participant over [$1, $2),
-- optionally one participant ($3); executions whose INGRESS is unshipped for
-- more than $4 s count as unattested.
SELECT participant_id, ingress_count, executions, handled, gap, unattested, pending, pending_age_seconds_max,
       status
FROM attestation_gap_v3($1, $2, make_interval(secs => $4))
WHERE $3::text IS NULL OR participant_id = $3
ORDER BY participant_id;

-- name: audit_unattested
-- Executions created in [$1, $2) (optionally of participant $3) without their
-- INGRESS: UNATTESTED, or PENDING (older than $4 s: counted as UNATTESTED), at most $5.
SELECT e.outbox_id::text AS outbox_id, e.participant_id, e.attestation_id, e.node_id, e.stream_id, e.stream_seq,
       e.status::text AS outbox_status, e.created_at, e.age_seconds, e.rail_attempts, e.reason,
       CASE WHEN e.classification = 'PENDING' AND e.created_at > now() - make_interval(secs => $4)
            THEN 'PENDING' ELSE 'UNATTESTED' END AS classification
FROM execution_attestation_v1 e
WHERE e.created_at >= $1 AND e.created_at < $2 AND ($3::text IS NULL OR e.participant_id = $3)
  AND e.classification IN ('UNATTESTED', 'PENDING')
ORDER BY e.created_at
LIMIT $5;

-- name: audit_ghosts
-- Every ghost older than $1 seconds, oldest first, at most $2.
SELECT node_id, stream_id, stream_seq, attestation_id, participant_id, method, route,
       encode(idempotency_key_hash, 'hex') AS idempotency_key_hash, recorded_at,
       outcome_disposition, outcome_status
FROM attestation_ghosts
WHERE recorded_at < now() - make_interval(secs => $1)
ORDER BY recorded_at
LIMIT $2;

-- name: audit_seq_gaps
SELECT node_id, stream_id, missing_from, missing_to, missing_to - missing_from + 1 AS missing_count, position
FROM stream_sequence_gaps
ORDER BY node_id, stream_id, missing_from;

-- name: cross_check_rows
-- Every attestation row of the nodes in $1, only stream $2 when it is not NULL,
-- with the columns the NDJSON mirror also holds (audit cross-check), in stream order.
SELECT node_id, stream_id, stream_seq, chain_hash, canonical
FROM ingress_attestations
WHERE node_id = ANY($1::text[]) AND ($2::integer IS NULL OR stream_id = $2)
ORDER BY node_id, stream_id, stream_seq;

-- name: dashboard_participants
-- One row per participant (view regulator_dashboard), worst first, with the
-- execution side counted at the configured pending bound ($1 s): an
-- unattested execution makes the participant CRITICAL_GAP like a ghost.
WITH executed AS (
    SELECT participant_id, unattested, pending
    FROM attestation_gap_v3('-infinity', 'infinity', make_interval(secs => $1))
),
rows AS (
    SELECT d.participant_id, d.ingress_count, d.executions, d.handled, d.ghosts, d.gap,
           coalesce(x.unattested, 0) AS unattested, coalesce(x.pending, 0) AS pending_executions,
           d.open_incidents, d.dead_letters, d.integrity_score::float8 AS integrity_score,
           CASE WHEN d.gap > 0 OR coalesce(x.unattested, 0) > 0 THEN 'CRITICAL_GAP'
                WHEN d.open_incidents > 0 OR d.dead_letters > 0 THEN 'ACTION_REQUIRED'
                ELSE 'HEALTHY' END AS status
    FROM regulator_dashboard d
    LEFT JOIN executed x USING (participant_id)
)
SELECT * FROM rows
ORDER BY CASE status WHEN 'CRITICAL_GAP' THEN 0 WHEN 'ACTION_REQUIRED' THEN 1 ELSE 2 END, participant_id;

-- name: dashboard_streams
SELECT node_id, stream_id, last_seq, last_record_at, halted_at, halt_reason, last_heartbeat_at, lag_seconds,
       last_verified_seq, verified_at, broken_seq, broken_reason
FROM stream_status
ORDER BY node_id, stream_id;

-- name: dashboard_instances
SELECT instance_id, role, became_leader_at, last_cycle_at, last_cycle_ms, last_error, updated_at
FROM repair_instances
WHERE role <> 'STOPPED' OR updated_at > now() - interval '1 hour'
ORDER BY role, instance_id;

-- name: dashboard_series
-- Per minute over the last $1 minutes: INGRESS records, ghosts (by when the
-- request arrived), retries (transitions into RECOVERING, or back to IN_FLIGHT
-- after the first attempt), dead letters (transitions into FAILED), and the
-- mean time to resolve of incidents resolved in that minute (seconds).
WITH minutes AS (
    SELECT generate_series(date_trunc('minute', now()) - make_interval(mins => $1 - 1),
                           date_trunc('minute', now()), interval '1 minute') AS minute
),
ingress AS (
    SELECT date_trunc('minute', recorded_at) AS minute, count(*) AS n
    FROM ingress_attestations
    WHERE record_type = 2 AND recorded_at >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
    GROUP BY 1
),
ghosts AS (
    SELECT date_trunc('minute', recorded_at) AS minute, count(*) AS n
    FROM attestation_ghosts
    WHERE recorded_at >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
    GROUP BY 1
),
transitions AS (
    SELECT date_trunc('minute', occurred_at) AS minute,
           count(*) FILTER (WHERE new_status = 'RECOVERING'
                               OR (new_status = 'IN_FLIGHT' AND attempt > 1)) AS retries,
           count(*) FILTER (WHERE new_status = 'FAILED') AS dead_letters
    FROM outbox_events
    WHERE occurred_at >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
    GROUP BY 1
),
mttr AS (
    SELECT date_trunc('minute', resolved_at) AS minute,
           avg(extract(epoch FROM resolved_at - detected_at))::float8 AS seconds
    FROM repair_incidents
    WHERE resolved_at >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
    GROUP BY 1
)
SELECT m.minute,
       coalesce(i.n, 0) AS ingress,
       coalesce(g.n, 0) AS ghosts,
       coalesce(t.retries, 0) AS retries,
       coalesce(t.dead_letters, 0) AS dead_letters,
       coalesce(r.seconds, 0) AS mttr_seconds
FROM minutes m
LEFT JOIN ingress i USING (minute)
LEFT JOIN ghosts g USING (minute)
LEFT JOIN transitions t USING (minute)
LEFT JOIN mttr r USING (minute)
ORDER BY m.minute;

-- name: evidence_idempotency
-- Duplicates answered by replay (no second execution), transitions out of a
-- terminal SUCCESS (must never happen), keys in progress and stuck past $1 s.
SELECT (SELECT count(*) FROM ingress_attestations WHERE record_type = 3 AND disposition = 'replayed') AS replayed,
       (SELECT count(*) FROM outbox_events WHERE old_status = 'SUCCESS') AS terminal_reentry_attempts,
       (SELECT count(*) FROM idempotency_keys WHERE state = 'IN_PROGRESS') AS keys_in_progress,
       (SELECT count(*) FROM idempotency_keys
        WHERE state = 'IN_PROGRESS' AND locked_at < now() - make_interval(secs => $1)) AS keys_stuck;

-- name: evidence_retries
SELECT coalesce((SELECT max(max_attempts) FROM payment_outbox), 5) AS retry_budget,
       count(*) FILTER (WHERE new_status = 'RECOVERING' OR (new_status = 'IN_FLIGHT' AND attempt > 1)) AS retries_total,
       count(DISTINCT outbox_id) FILTER (WHERE new_status = 'RECOVERING'
                                            OR (new_status = 'IN_FLIGHT' AND attempt > 1)) AS rows_retried
FROM outbox_events;

-- name: evidence_zombies
SELECT count(*) AS detected,
       avg(extract(epoch FROM resolved_at - detected_at))::float8 AS mttr_seconds
FROM repair_incidents WHERE kind = 'ZOMBIE';

-- name: evidence_dlq
-- Entered: rows that ever reached FAILED; recovered: rows redriven out of
-- FAILED; terminal: rows FAILED now.
SELECT (SELECT count(DISTINCT outbox_id) FROM outbox_events WHERE new_status = 'FAILED') AS records_entered,
       (SELECT count(DISTINCT outbox_id) FROM outbox_events WHERE old_status = 'FAILED') AS records_recovered,
       (SELECT count(*) FROM payment_outbox WHERE status = 'FAILED') AS records_terminal;

-- name: evidence_integrity
-- Ledger integrity violations: outbox rows that reached SUCCESS more than once
-- (a second rail effect), or left SUCCESS; and intents with no outbox row.
SELECT (SELECT count(*) FROM (SELECT outbox_id FROM outbox_events WHERE new_status = 'SUCCESS'
                              GROUP BY outbox_id HAVING count(*) > 1) twice) AS duplicate_rail_effects,
       (SELECT count(DISTINCT outbox_id) FROM outbox_events WHERE old_status = 'SUCCESS') AS left_success,
       (SELECT count(*) FROM payment_intents p
        WHERE NOT EXISTS (SELECT 1 FROM payment_outbox x WHERE x.intent_id = p.intent_id)) AS intents_without_outbox;

-- name: detect_clock_refusals
-- CLOCK_BACKWARDS: DROPPED records (type 5) of the last $1 s that may count
-- requests refused under the reason `clock_backwards`, not yet covered by a
-- resolved CLOCK_BACKWARDS incident of their stream (seq above the `last_seq`
-- of its evidence: seqs, unlike a stepped-back clock, only go forward). At most
-- $2 rows, oldest first per stream. The byte test is only a prefilter: 0xaf
-- followed by "clock_backwards" is how MessagePack writes that 15-byte string;
-- repair decodes every body and counts the map entry itself.
SELECT a.node_id, a.stream_id, a.stream_seq, a.recorded_at, a.canonical
FROM ingress_attestations a
WHERE a.record_type = 5
  AND a.recorded_at >= now() - make_interval(secs => $1)
  AND position('\xaf636c6f636b5f6261636b7761726473'::bytea IN a.canonical) > 0
  AND a.stream_seq > coalesce(
        (SELECT max((r.evidence->>'last_seq')::bigint)
         FROM repair_incidents r
         WHERE r.kind = 'CLOCK_BACKWARDS' AND r.resolved_at IS NOT NULL
           AND r.node_id = a.node_id AND r.stream_id = a.stream_id), 0)
ORDER BY a.node_id, a.stream_id, a.stream_seq
LIMIT $2;

-- name: stream_archives
-- Every archive row of stream ($1, $2), oldest seqs first: verify-chain checks
-- each signature against the pinned key before trusting the prefix it covers.
SELECT archive_id, partition, node_id, stream_id, first_seq, last_seq, sha256, signature, key_id, last_hash
FROM attestation_archives
WHERE node_id = $1 AND stream_id = $2
ORDER BY first_seq, last_seq, archive_id;

-- name: stream_epochs
-- The ended epochs of stream ($1, $2), in the order they ended (journal_epochs).
SELECT epoch, last_seq, last_hash, journal_head_seq, successor_epoch, ended_at
FROM journal_epochs
WHERE node_id = $1 AND stream_id = $2
ORDER BY ended_at, epoch;

-- name: stream_rows_epoch
-- The rows of one epoch ($3) of stream ($1, $2), in order; rows shipped before
-- epochs were recorded (epoch IS NULL) belong to the stream's first epoch ($4).
SELECT stream_seq, recorded_at, record_type, attestation_id, participant_id, method, route, executes,
       status, disposition, latency_us, idempotency_key_hash, body_sha256, chain_hash, canonical
FROM ingress_attestations
WHERE node_id = $1 AND stream_id = $2 AND (epoch = $3 OR ($4 AND epoch IS NULL))
ORDER BY stream_seq, recorded_at;

-- name: stream_rows_of_unknown_epoch
-- Rows of stream ($1, $2) whose epoch is neither one of $3 (the epochs the
-- checkpoint and journal_epochs know) nor NULL: they would escape verification.
SELECT count(*) AS rows, min(stream_seq) AS first_seq
FROM ingress_attestations
WHERE node_id = $1 AND stream_id = $2 AND epoch IS NOT NULL AND NOT (epoch = ANY($3::bytea[]));

-- name: stream_hashes_from
-- (seq, chain hash) of stream ($1, $2), epoch $3 (NULL rows too when $4), from seq $5 on.
SELECT stream_seq, chain_hash
FROM ingress_attestations
WHERE node_id = $1 AND stream_id = $2 AND (epoch = $3 OR ($4 AND epoch IS NULL)) AND stream_seq >= $5
ORDER BY stream_seq, recorded_at;

-- name: archive_partition_rows
-- Every row of one partition of ingress_attestations ($1, a regclass name), by stream and seq.
SELECT node_id, stream_id, stream_seq, record_type, attestation_id, chain_hash, canonical
FROM ingress_attestations
WHERE tableoid = $1::regclass
ORDER BY node_id, stream_id, stream_seq, recorded_at;

-- name: insert_archive
-- One signed archive row (see symphony/archive_signature.py for what is signed).
INSERT INTO attestation_archives (partition, node_id, stream_id, first_seq, last_seq, sha256, signature, key_id,
                                  last_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING archive_id;

-- name: drop_archived_partition
-- Detaches and drops partition $1 once archive rows cover every stream in it.
SELECT drop_archived_partition_v1($1);

-- name: partitions_older_than
-- Attestation partitions whose whole day ends at or before $1 (UTC), oldest first.
SELECT c.relname AS partition
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'ingress_attestations'::regclass
  AND c.relname ~ '^ingress_attestations_p[0-9]{8}$'
  AND to_date(substring(c.relname from '[0-9]{8}$'), 'YYYYMMDD') + 1 <= $1::date
ORDER BY c.relname;

-- name: stream_rows_epoch_after
-- Rows of epoch $3 of stream ($1, $2) (NULL-epoch rows too when $4) after seq $5, in order, at most $6.
SELECT stream_seq, recorded_at, record_type, attestation_id, participant_id, method, route, executes,
       status, disposition, latency_us, idempotency_key_hash, body_sha256, chain_hash, canonical
FROM ingress_attestations
WHERE node_id = $1 AND stream_id = $2 AND (epoch = $3 OR ($4 AND epoch IS NULL)) AND stream_seq > $5
ORDER BY stream_seq, recorded_at
LIMIT $6;

-- name: oncall_outbox
-- On-call gauges: outbox rows per non-SUCCESS status and the age in seconds of
-- the oldest row of each (PENDING, IN_FLIGHT and RECOVERING are the working
-- set; FAILED are the dead letters). SUCCESS is not counted: it only grows.
SELECT status::text AS status, count(*) AS n,
       extract(epoch FROM now() - min(created_at))::float8 AS oldest_age_seconds
FROM payment_outbox
WHERE status IN ('PENDING', 'IN_FLIGHT', 'RECOVERING', 'FAILED')
GROUP BY status;

-- name: oncall_incidents
-- On-call gauges: open incidents by kind and severity.
SELECT kind, severity, count(*) AS n
FROM repair_incidents
WHERE resolved_at IS NULL
GROUP BY kind, severity;

-- name: oncall_gap
-- On-call gauges: the attestation gap per participant as repair accounts for it:
-- open GHOST incidents (a ghost counts in the gap until it is resolved).
SELECT coalesce(participant_id, '(unauthenticated)') AS participant_id, count(*) AS n
FROM repair_incidents
WHERE resolved_at IS NULL AND kind = 'GHOST'
GROUP BY 1;
