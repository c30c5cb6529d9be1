-- SQL of the reference payments service.

-- name: claim_key
-- Takes the idempotency lock for (participant $1, key $2) with fingerprint $3 on
-- behalf of attestation $4: inserts it IN_PROGRESS, or takes over an
-- IN_PROGRESS lock older than the TTL ($6 s) with the same fingerprint (its
-- holder died: recovery, not a 409 forever). Returns the lock time, which
-- fences the later write; no row means someone else holds or completed it.
INSERT INTO idempotency_keys AS k (participant_id, idempotency_key, request_fingerprint, state, locked_at,
                                   attestation_id, expires_at)
VALUES ($1, $2, $3, 'IN_PROGRESS', clock_timestamp(), $4, now() + make_interval(secs => $5))
ON CONFLICT (participant_id, idempotency_key) DO UPDATE
SET locked_at = clock_timestamp(),
    attestation_id = EXCLUDED.attestation_id,
    expires_at = EXCLUDED.expires_at
WHERE k.state = 'IN_PROGRESS'
  AND k.locked_at < clock_timestamp() - make_interval(secs => $6)
  AND k.request_fingerprint = EXCLUDED.request_fingerprint
RETURNING k.locked_at, (OLD.idempotency_key IS NOT NULL) AS recovered;

-- name: get_key
-- The current state of an idempotency key (after claim_key found it taken).
SELECT request_fingerprint, state, locked_at, response_status, response_body,
       extract(epoch FROM clock_timestamp() - locked_at)::float8 AS locked_seconds
FROM idempotency_keys
WHERE participant_id = $1 AND idempotency_key = $2;

-- name: lock_key
-- Inside the payment transaction: re-takes the key row and proves we still own
-- the lock taken at $3 (nobody recovered it in between).
SELECT 1
FROM idempotency_keys
WHERE participant_id = $1 AND idempotency_key = $2 AND state = 'IN_PROGRESS' AND locked_at = $3
FOR UPDATE;

-- name: participant_for_payment
-- The participant's status, policy version and limits, locked against a
-- concurrent payment of the same participant so the window check is exact.
SELECT status, policy_version, per_payment_limit_minor, window_limit_minor, window_seconds,
       (SELECT coalesce(sum(i.amount_minor), 0)::bigint
        FROM payment_intents i
        WHERE i.participant_id = p.participant_id
          AND i.created_at > now() - make_interval(secs => p.window_seconds)) AS window_used_minor
FROM participants p
WHERE p.participant_id = $1
FOR NO KEY UPDATE OF p;

-- name: participant_status
-- Before taking any lock: is this participant known, active and current?
SELECT status, policy_version FROM participants WHERE participant_id = $1;

-- name: insert_intent
INSERT INTO payment_intents (participant_id, idempotency_key, amount_minor, currency, rail,
                             destination_account, client_reference, attestation_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING intent_id, created_at;

-- name: insert_outbox
-- The outbox row, PENDING, referencing the ingress attestation that carried it
-- and the body hash the sidecar signed ($10), which the reverse-gap audit
-- compares with the INGRESS (execution_attestation_v1, migration 0040).
INSERT INTO payment_outbox (intent_id, participant_id, attestation_id, ingress_node_id, ingress_stream_id,
                            ingress_seq, rail, payload, max_attempts, ingress_body_sha256)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING id;

-- name: complete_key
-- The key's final state, in the same transaction as the intent and outbox row.
UPDATE idempotency_keys
SET state = 'COMPLETED', locked_at = NULL, response_status = $4, response_body = $5, intent_id = $6
WHERE participant_id = $1 AND idempotency_key = $2 AND locked_at = $3 AND state = 'IN_PROGRESS'
RETURNING 1;

-- name: release_key
-- A refused request leaves no key behind, so a retry is evaluated afresh.
DELETE FROM idempotency_keys
WHERE participant_id = $1 AND idempotency_key = $2 AND locked_at = $3 AND state = 'IN_PROGRESS';

-- name: payment_view
-- One payment of participant $2 with its outbox state and transition history.
SELECT i.intent_id, i.amount_minor, i.currency, i.rail, i.destination_account, i.client_reference,
       i.attestation_id, i.created_at, o.id AS outbox_id, o.status::text AS status, o.attempt_count,
       o.rail_reference, o.last_response_code, o.completed_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'from', e.old_status, 'to', e.new_status, 'at', e.occurred_at, 'attempt', e.attempt,
                    'actor', e.actor, 'response_code', e.response_code) ORDER BY e.event_id)
                 FROM outbox_events e WHERE e.outbox_id = o.id), '[]'::jsonb) AS history
FROM payment_intents i
JOIN payment_outbox o ON o.intent_id = i.intent_id
WHERE i.intent_id = $1 AND i.participant_id = $2;

-- name: purge_expired_keys
-- Keys past their retention period, at most $1 per run.
DELETE FROM idempotency_keys
WHERE ctid IN (SELECT ctid FROM idempotency_keys WHERE expires_at < now() LIMIT $1);

-- name: ping
SELECT 1;
