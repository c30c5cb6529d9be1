-- SQL of the outbox relayer. Every statement that changes a row's status sets
-- `symphony.actor` (transaction-local) so the transition trigger records which
-- worker (or operator) made each change in outbox_events. The relayer's hot
-- statements set it themselves, in their first CTE (`actor`), and run as one
-- autocommit statement: one round trip instead of BEGIN, set_actor, the
-- statement and COMMIT. That is enough because the transition triggers are
-- statement-level AFTER triggers (migration 0021): they fire when the whole
-- statement has run, and every row the statement changes came through the join
-- with `actor`, so the setting is in place by then. Each UPDATE sets
-- updated_at itself, which spares the per-row BEFORE trigger that would
-- otherwise do it (migration 0021).

-- name: set_actor
-- Transaction-local actor for the outbox_events rows the trigger writes.
SELECT set_config('symphony.actor', $1::text, true);

-- name: claim_batch
-- Claims due rows for worker $1 with a lease of $2 seconds, per rail: for each
-- rail in $3 at most the matching count in $4 (its free concurrency; 0 or a
-- rail whose breaker is open is simply left out). SKIP LOCKED lets any number
-- of relayers claim at once without waiting on or taking each other's rows.
-- The attempt count goes up at claim time, so an attempt that never reports
-- (relayer killed) still counts against the budget. RETURNING OLD/NEW gives the
-- status the row came from and the previous response code (to know whether the
-- last attempt ended ambiguously).
WITH actor AS MATERIALIZED (
    SELECT set_config('symphony.actor', $1::text, true) AS name
),
claimable AS (
    SELECT c.id
    FROM actor
    CROSS JOIN unnest($3::text[], $4::int[]) AS r(rail, slots)
    CROSS JOIN LATERAL (
        SELECT o.id
        FROM payment_outbox o
        WHERE o.rail = r.rail
          AND o.status IN ('PENDING', 'RECOVERING')
          AND o.next_attempt_at <= now()
        ORDER BY o.next_attempt_at
        LIMIT r.slots
        FOR UPDATE SKIP LOCKED
    ) c
)
UPDATE payment_outbox o
SET status = 'IN_FLIGHT',
    lease_owner = $1,
    lease_expires_at = clock_timestamp() + make_interval(secs => $2),
    attempt_count = o.attempt_count + 1,
    updated_at = now()
FROM claimable c
WHERE o.id = c.id
RETURNING o.id, o.rail, o.payload, o.participant_id, o.created_at,
          NEW.attempt_count AS attempt, NEW.max_attempts,
          OLD.status AS old_status, OLD.last_response_code AS previous_response_code;

-- name: complete_batch
-- Writes many outcomes in one statement; one row back: (rows written, incidents
-- opened or refreshed). Arrays $2.. are parallel: outbox id,
-- the attempt number the outcome belongs to, new status, response code, error,
-- rail reference, retry delay in seconds (RECOVERING only) and whether a FAILED
-- row is a dead letter (budget exhausted: opens a DEAD_LETTER incident, deduped
-- on the outbox id). A row is written only while worker $1 still holds the lease
-- for that very attempt: a relayer whose lease expired and was reclaimed by
-- another cannot overwrite the newer attempt (fencing).
WITH actor AS MATERIALIZED (
    SELECT set_config('symphony.actor', $1::text, true) AS name
),
input AS (
    SELECT t.*
    FROM actor
    CROSS JOIN unnest($2::uuid[], $3::int[], $4::outbox_status[], $5::text[], $6::text[], $7::text[],
                      $8::float8[], $9::bool[])
         AS t(id, attempt, status, response_code, error, rail_reference, retry_delay_seconds, dead_letter)
),
done AS (
    UPDATE payment_outbox o
    SET status = i.status,
        lease_owner = NULL,
        lease_expires_at = NULL,
        last_response_code = i.response_code,
        last_error = i.error,
        rail_reference = coalesce(i.rail_reference, o.rail_reference),
        next_attempt_at = CASE WHEN i.status = 'RECOVERING'
                               THEN clock_timestamp() + make_interval(secs => i.retry_delay_seconds)
                               ELSE o.next_attempt_at END,
        completed_at = CASE WHEN i.status IN ('SUCCESS', 'FAILED') THEN clock_timestamp() END,
        updated_at = now()
    FROM input i
    WHERE o.id = i.id
      AND o.status = 'IN_FLIGHT'
      AND o.lease_owner = $1
      AND o.attempt_count = i.attempt
    RETURNING o.id, o.participant_id, o.rail, NEW.status AS new_status, NEW.attempt_count,
              NEW.last_response_code, NEW.last_error, i.dead_letter
),
incidents AS (
    SELECT o.incident_id
    FROM done d,
         LATERAL open_incident_v1(
             'DEAD_LETTER', d.id::text,
             CASE WHEN d.last_response_code LIKE 'AMBIGUOUS%' THEN 'CRITICAL' ELSE 'HIGH' END,
             d.participant_id, NULL, NULL,
             format('outbox %s on rail %s dead-lettered after %s attempts: %s',
                    d.id, d.rail, d.attempt_count, coalesce(d.last_error, d.last_response_code)),
             jsonb_build_object('outbox_id', d.id, 'rail', d.rail, 'attempts', d.attempt_count,
                                'last_response_code', d.last_response_code, 'last_error', d.last_error,
                                'worker', $1::text)) AS o
    WHERE d.dead_letter AND d.new_status = 'FAILED'
)
SELECT count(*) AS written, (SELECT count(*) FROM incidents) AS incidents_opened
FROM done d;

-- name: reclaim_expired
-- At most $2 IN_FLIGHT rows whose lease has expired (their relayer died or
-- stalled mid-call) become RECOVERING and claimable at once, marked ambiguous:
-- the rail may have executed, so the next attempt asks the rail or resends the
-- same key. A row whose expired attempt was its last becomes a dead letter
-- (FAILED + CRITICAL incident) instead: a payload that kills its relayer every
-- time cannot crash-loop the fleet. Bounded so a mass expiry after an outage is
-- rescued over several cycles, not in one storm.
WITH expired AS (
    SELECT id
    FROM payment_outbox
    WHERE status = 'IN_FLIGHT' AND lease_expires_at < clock_timestamp()
    ORDER BY lease_expires_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
done AS (
    UPDATE payment_outbox o
    SET status = CASE WHEN o.attempt_count >= o.max_attempts THEN 'FAILED' ELSE 'RECOVERING' END::outbox_status,
        last_response_code = 'AMBIGUOUS_LEASE_EXPIRED',
        last_error = format('lease of %s expired at %s during attempt %s: outcome unknown',
                            o.lease_owner, o.lease_expires_at, o.attempt_count),
        lease_owner = NULL,
        lease_expires_at = NULL,
        next_attempt_at = clock_timestamp(),
        completed_at = CASE WHEN o.attempt_count >= o.max_attempts THEN clock_timestamp() END,
        updated_at = now()
    FROM expired e
    WHERE o.id = e.id
    RETURNING o.id, o.participant_id, o.rail, NEW.status AS new_status, NEW.attempt_count,
              NEW.last_error, OLD.lease_owner AS previous_owner
),
incidents AS (
    SELECT o.incident_id
    FROM done d,
         LATERAL open_incident_v1(
             'DEAD_LETTER', d.id::text, 'CRITICAL', d.participant_id, NULL, NULL,
             format('outbox %s on rail %s dead-lettered: last attempt (%s) ended with an expired lease, outcome unknown',
                    d.id, d.rail, d.attempt_count),
             jsonb_build_object('outbox_id', d.id, 'rail', d.rail, 'attempts', d.attempt_count,
                                'last_response_code', 'AMBIGUOUS_LEASE_EXPIRED', 'last_error', d.last_error,
                                'previous_owner', d.previous_owner, 'worker', $1::text)) AS o
    WHERE d.new_status = 'FAILED'
)
SELECT d.id, d.new_status, d.previous_owner, (SELECT count(*) FROM incidents) AS incidents_opened
FROM done d;

-- name: release_unstarted
-- Gives back rows worker $1 claimed but never sent to the rail (shutdown came
-- first): their previous status ($4) again, due now, the unused attempt returned.
UPDATE payment_outbox o
SET status = r.previous_status,
    attempt_count = o.attempt_count - 1,
    lease_owner = NULL,
    lease_expires_at = NULL,
    next_attempt_at = clock_timestamp(),
    updated_at = now()
FROM unnest($2::uuid[], $3::int[], $4::outbox_status[]) AS r(id, attempt, previous_status)
WHERE o.id = r.id AND o.status = 'IN_FLIGHT' AND o.lease_owner = $1 AND o.attempt_count = r.attempt
RETURNING o.id;

-- name: redrive
-- An operator re-drives dead letter $1: RECOVERING, due now, with $2 more
-- attempts on top of those used. The reason ($3) lands in last_error and so in
-- the outbox_events row the trigger writes, with the operator as actor. Same
-- outbox id, so the same rail key: a redrive can never strike the rail twice.
UPDATE payment_outbox
SET status = 'RECOVERING',
    max_attempts = attempt_count + $2,
    next_attempt_at = clock_timestamp(),
    completed_at = NULL,
    last_response_code = 'REDRIVE',
    last_error = $3,
    updated_at = now()
WHERE id = $1 AND status = 'FAILED'
RETURNING id, attempt_count, max_attempts, OLD.last_error AS previous_error;

-- name: resolve_dead_letter_incident
-- Marks the open DEAD_LETTER incident of outbox $1 as re-driven by $2 with note $3.
UPDATE repair_incidents
SET resolved_at = now(),
    resolution = 'REDRIVEN',
    resolved_by = $2,
    operator_notes = operator_notes || jsonb_build_array(
        jsonb_build_object('at', now(), 'by', $2::text, 'note', $3::text, 'action', 'redrive'))
WHERE kind = 'DEAD_LETTER' AND dedup_key = $1::text AND resolved_at IS NULL
RETURNING incident_id;

-- name: outbox_row
-- One outbox row by id, for the operator CLI.
SELECT id, status, attempt_count, max_attempts, rail, last_response_code, last_error
FROM payment_outbox
WHERE id = $1;

-- name: ping
-- Readiness: the database answers.
SELECT 1;

-- name: report_breakers
-- Worker $1's circuit breaker per rail, for readers outside the process (the
-- regulator dashboard): parallel arrays $2 rail, $3 state, $4 when it last
-- opened, $5 consecutive failures; the report is valid for $6 seconds. Reports
-- of workers dead for more than a day are pruned on the way.
WITH pruned AS (
    DELETE FROM rail_breaker_reports WHERE valid_until < now() - interval '1 day'
)
INSERT INTO rail_breaker_reports (rail, worker_id, state, opened_at, consecutive_failures, reported_at,
                                  valid_until)
SELECT r.rail, $1, r.state, r.opened_at, r.failures, now(), now() + make_interval(secs => $6)
FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::int[]) AS r(rail, state, opened_at, failures)
ON CONFLICT (rail, worker_id) DO UPDATE
SET state = EXCLUDED.state, opened_at = EXCLUDED.opened_at, consecutive_failures = EXCLUDED.consecutive_failures,
    reported_at = EXCLUDED.reported_at, valid_until = EXCLUDED.valid_until;

-- name: forget_breakers
-- Worker $1 stops cleanly: its breaker reports go with it.
DELETE FROM rail_breaker_reports WHERE worker_id = $1;
