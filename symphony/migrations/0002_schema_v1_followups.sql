-- Follow-ups to schema v1, found while building repair and audit.

-- An archive records the chain hash of its last record, so the first record
-- left in PostgreSQL after a partition is dropped can still be checked against
-- its predecessor instead of being taken on trust.
ALTER TABLE attestation_archives
    ADD COLUMN last_hash bytea CHECK (last_hash IS NULL OR length(last_hash) = 32);

-- The OUTCOME that classifies an INGRESS is the first one in its stream: a
-- deterministic choice should a stream ever hold two (which verify-chain and
-- the forwarder would already have reported).
CREATE OR REPLACE VIEW attestation_classification AS
SELECT i.node_id,
       i.stream_id,
       i.stream_seq,
       i.attestation_id,
       coalesce(nullif(i.participant_id, ''), '(unauthenticated)') AS participant_id,
       i.method,
       i.route,
       i.idempotency_key_hash,
       i.recorded_at,
       o.disposition AS outcome_disposition,
       o.status      AS outcome_status,
       x.id          AS outbox_id,
       CASE
           WHEN x.id IS NOT NULL THEN 'EXECUTED'
           WHEN o.disposition IN ('replayed', 'rejected', 'upstream_error', 'client_gone') THEN 'HANDLED'
           ELSE 'GHOST'
       END AS classification
FROM ingress_attestations i
LEFT JOIN LATERAL (
    SELECT oc.disposition, oc.status
    FROM ingress_attestations oc
    WHERE oc.attestation_id = i.attestation_id
      AND oc.record_type = 3
      AND oc.node_id = i.node_id
      AND oc.stream_id = i.stream_id
    ORDER BY oc.stream_seq
    LIMIT 1
) o ON true
LEFT JOIN payment_outbox x
       ON x.attestation_id = i.attestation_id AND x.ingress_node_id = i.node_id
WHERE i.record_type = 2 AND i.executes;

-- The gap with a grace period, for live displays: an unexplained INGRESS
-- younger than `grace` is a request still in flight (its OUTCOME or outbox row
-- may not be shipped yet), counted as in_flight rather than gap. Audits and
-- CI gates use attestation_gap_v1, which has no grace: after quiescence every
-- unexplained INGRESS is a ghost.
CREATE FUNCTION attestation_gap_v2(since timestamptz, until timestamptz, grace interval)
RETURNS TABLE (participant_id text, ingress_count bigint, executions bigint,
               handled bigint, in_flight bigint, gap bigint, status text)
LANGUAGE sql STABLE AS $$
    SELECT c.participant_id,
           count(*),
           count(*) FILTER (WHERE c.classification = 'EXECUTED'),
           count(*) FILTER (WHERE c.classification = 'HANDLED'),
           count(*) FILTER (WHERE c.classification = 'GHOST' AND c.recorded_at > now() - grace),
           count(*) FILTER (WHERE c.classification = 'GHOST' AND c.recorded_at <= now() - grace),
           CASE WHEN count(*) FILTER (WHERE c.classification = 'GHOST' AND c.recorded_at <= now() - grace) = 0
                THEN 'PASS' ELSE 'FAIL' END
    FROM attestation_classification c
    WHERE c.recorded_at >= since AND c.recorded_at < until
    GROUP BY c.participant_id
$$;

-- The dashboard counts with the repair daemon's default ghost grace (2 min),
-- so a request in flight never flashes CRITICAL_GAP; `in_flight` is shown.
CREATE OR REPLACE VIEW regulator_dashboard AS
WITH gap AS (
    SELECT * FROM attestation_gap_v2('-infinity', 'infinity', interval '2 minutes')
),
people AS (
    SELECT participant_id FROM participants
    UNION
    SELECT participant_id FROM gap
),
open_incidents AS (
    SELECT participant_id, count(*) AS n
    FROM repair_incidents WHERE resolved_at IS NULL
    GROUP BY participant_id
),
dead_letters AS (
    SELECT participant_id, count(*) AS n
    FROM payment_outbox WHERE status = 'FAILED'
    GROUP BY participant_id
)
SELECT p.participant_id,
       coalesce(g.ingress_count, 0) AS ingress_count,
       coalesce(g.executions, 0)    AS executions,
       coalesce(g.handled, 0)       AS handled,
       coalesce(g.gap, 0)           AS ghosts,
       coalesce(g.gap, 0)           AS gap,
       coalesce(i.n, 0)             AS open_incidents,
       coalesce(d.n, 0)             AS dead_letters,
       CASE WHEN coalesce(g.ingress_count, 0) = 0 THEN 100.00
            ELSE round(100.0 * (g.ingress_count - g.gap) / g.ingress_count, 2)
       END AS integrity_score,
       CASE WHEN coalesce(g.gap, 0) > 0 THEN 'CRITICAL_GAP'
            WHEN coalesce(i.n, 0) > 0 OR coalesce(d.n, 0) > 0 THEN 'ACTION_REQUIRED'
            ELSE 'HEALTHY'
       END AS status,
       coalesce(g.in_flight, 0)     AS in_flight
FROM people p
LEFT JOIN gap g            ON g.participant_id = p.participant_id
LEFT JOIN open_incidents i ON i.participant_id = p.participant_id
LEFT JOIN dead_letters d   ON d.participant_id = p.participant_id;

-- For the dashboard's charts and MTTR over time.
CREATE INDEX outbox_events_occurred_idx ON outbox_events (occurred_at);
CREATE INDEX repair_incidents_resolved_idx ON repair_incidents (resolved_at) WHERE resolved_at IS NOT NULL;
