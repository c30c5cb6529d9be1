-- What the regulator dashboard asks beyond the auditors' views (repair/dashboard.py):
-- the conditions that make it say ACTION_REQUIRED while payments are stuck.

-- name: dashboard_unfinished_payments
-- Per rail: payments not finished yet (PENDING, RECOVERING or IN_FLIGHT), how
-- many of them are older than $1 seconds (stuck), and the oldest one's age.
SELECT rail,
       count(*) AS unfinished,
       count(*) FILTER (WHERE created_at < now() - make_interval(secs => $1)) AS stuck,
       extract(epoch FROM now() - min(created_at))::float8 AS oldest_age_seconds,
       count(*) FILTER (WHERE status = 'PENDING') AS pending,
       count(*) FILTER (WHERE status = 'RECOVERING') AS recovering,
       count(*) FILTER (WHERE status = 'IN_FLIGHT') AS in_flight
FROM payment_outbox
WHERE status IN ('PENDING', 'RECOVERING', 'IN_FLIGHT')
GROUP BY rail
ORDER BY rail;

-- name: dashboard_breakers
-- The circuit breakers live relayers report (rail_breaker_reports, written by
-- relayer/worker.py): an expired report is the last word of a relayer that
-- died and does not count.
SELECT rail, worker_id, state, opened_at, consecutive_failures, reported_at
FROM rail_breaker_reports
WHERE valid_until > now()
ORDER BY rail, worker_id;

-- name: dashboard_outbox
-- One outbox row ($1) with its intent and attestation, for the outbox page.
SELECT x.id::text AS outbox_id, x.status::text AS status, x.rail, x.attempt_count, x.max_attempts,
       x.lease_owner, x.lease_expires_at, x.last_response_code, x.last_error, x.rail_reference,
       x.created_at, x.completed_at, x.intent_id::text AS intent_id, x.attestation_id, x.ingress_node_id,
       x.participant_id, p.amount_minor, p.currency
FROM payment_outbox x
LEFT JOIN payment_intents p USING (intent_id)
WHERE x.id = $1::uuid;
