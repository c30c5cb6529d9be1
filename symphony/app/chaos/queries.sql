-- Queries of `symphony chaos` (symphony/app/chaos/): what quiescence waits
-- for, what the invariant checks read, and what the scenarios watch. All are
-- read-only; the harness never writes to the system's database.

-- name: db_now
-- The database's clock: `since` of a run, and the moment of a kill.
SELECT now() AS now

-- name: checkpoint_last_seq
-- The last shipped seq of one journal stream ($1 node_id, $2 stream_id).
SELECT last_seq FROM journal_checkpoints WHERE node_id = $1 AND stream_id = $2

-- name: checkpoints
-- Every stream's last shipped seq (quiescence: the journal is in PostgreSQL).
SELECT node_id, stream_id, last_seq FROM journal_checkpoints

-- name: outbox_not_terminal_count
-- Outbox rows not yet SUCCESS or FAILED (quiescence: the outbox drains).
SELECT count(*) AS n FROM payment_outbox WHERE status NOT IN ('SUCCESS', 'FAILED')

-- name: newest_ingress
-- When the newest INGRESS was recorded (repair's grace periods start there).
SELECT coalesce(max(recorded_at), now()) AS newest, now() AS now
FROM ingress_attestations WHERE record_type = 2

-- name: repair_last_cycle
-- The repair leader's last completed cycle.
SELECT now() AS now, max(last_cycle_at) AS cycle FROM repair_instances WHERE role = 'LEADER'

-- name: incidents
-- Every incident (gap accounting, zombies, stuck keys, blackhole exclusivity).
SELECT kind, dedup_key, detected_at, resolved_at, resolution, evidence FROM repair_incidents

-- name: outbox_rows
-- Every outbox row with its budget and lease (rails and outbox invariants).
SELECT id, rail, status::text AS status, attempt_count, max_attempts,
       next_attempt_at, lease_expires_at, attestation_id, ingress_node_id,
       ingress_stream_id, ingress_seq, now() AS now
FROM payment_outbox

-- name: stuck_idempotency_keys
-- Idempotency keys IN_PROGRESS for longer than $1 seconds (invariant 7).
SELECT participant_id, locked_at, attestation_id FROM idempotency_keys
WHERE state = 'IN_PROGRESS' AND locked_at < now() - make_interval(secs => $1)
LIMIT 20

-- name: ids_backwards
-- INGRESS records whose attestation id is not above the previous one on the
-- same stream (invariant 5).
SELECT node_id, stream_id, stream_seq, attestation_id, prev_id FROM (
    SELECT node_id, stream_id, stream_seq, attestation_id,
           lag(attestation_id) OVER (PARTITION BY node_id, stream_id ORDER BY stream_seq) AS prev_id
    FROM ingress_attestations WHERE record_type = 2) s
WHERE prev_id >= attestation_id LIMIT 20

-- name: outbox_without_ingress
-- Outbox rows whose INGRESS PostgreSQL does not hold (invariant 1).
SELECT x.id, x.attestation_id FROM payment_outbox x
WHERE NOT EXISTS (SELECT 1 FROM ingress_attestations i
                  WHERE i.record_type = 2 AND i.node_id = x.ingress_node_id
                    AND i.stream_id = x.ingress_stream_id AND i.stream_seq = x.ingress_seq
                    AND i.attestation_id = x.attestation_id) LIMIT 20

-- name: intents_of_keys
-- Payment intents of the given (participant, key) pairs ($1 participants,
-- $2 keys, aligned): requests the sidecar refused must have none.
SELECT participant_id, idempotency_key FROM payment_intents
WHERE (participant_id, idempotency_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))

-- name: intent_count_per_key
-- How many intents each (participant, key) pair has ($1, $2 as above): one
-- per key, whatever the double-tap storm.
SELECT participant_id, idempotency_key, count(*) AS n FROM payment_intents
WHERE (participant_id, idempotency_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))
GROUP BY 1, 2

-- name: in_flight_leases
-- Rows a relayer holds, and the latest lease expiry among them.
SELECT count(*) AS n, max(lease_expires_at) AS until FROM payment_outbox
WHERE status = 'IN_FLIGHT' AND lease_owner IS NOT NULL

-- name: zombie_incidents_since
-- ZOMBIE incidents detected since $1.
SELECT count(*) AS n FROM repair_incidents WHERE kind = 'ZOMBIE' AND detected_at >= $1

-- name: in_flight_expired_by
-- IN_FLIGHT rows whose lease expired by $1 (repair has not re-queued them yet).
SELECT count(*) AS n FROM payment_outbox WHERE status = 'IN_FLIGHT' AND lease_expires_at <= $1

-- name: repair_leaders_since
-- Repair instances that became leader after $1 (a takeover).
SELECT instance_id, became_leader_at FROM repair_instances
WHERE role = 'LEADER' AND became_leader_at > $1

-- name: repair_instance_role
-- The role a repair instance ($1) registered.
SELECT role FROM repair_instances WHERE instance_id = $1

-- name: repair_lock_holders
-- Sessions of repair instances holding an advisory lock (the leader lock).
SELECT a.application_name FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'symphony-repair:%'
