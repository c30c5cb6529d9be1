-- The reverse gap (DESIGN.md invariant 11): no execution without an attestation.
--
-- attestation_gap_v1/v2 look from the INGRESS side: every INGRESS is executed,
-- handled or a ghost. They cannot see an execution whose INGRESS PostgreSQL
-- does not hold: an outbox row written while the forwarder lagged and the
-- journal tail was then cut, a stream the forwarder halted, INGRESS rows
-- deleted or truncated by the tables' owner, or an outbox row naming another
-- participant or body than its INGRESS. This migration looks from the
-- execution side: every payment_outbox row (and with it every rail attempt
-- recorded in outbox_events, which reference it) must name an INGRESS that
-- PostgreSQL holds, with the same attestation id, participant and body hash.

INSERT INTO incident_kinds (kind, description) VALUES
    ('UNATTESTED_EXECUTION', 'an execution (outbox row, rail attempt) whose INGRESS PostgreSQL does not hold with '
                             'the same attestation id, participant and body hash');

-- The body hash the sidecar signed (X-Symphony-Body-SHA256), recorded by the
-- service beside the INGRESS reference so the audit can compare it with the
-- INGRESS's body_sha256. NULL on rows written before this column existed (and
-- by tools that insert rows by hand): then only id, participant and position
-- are compared, and the row says body_sha256_compared = false.
ALTER TABLE payment_outbox
    ADD COLUMN ingress_body_sha256 bytea
        CHECK (ingress_body_sha256 IS NULL OR length(ingress_body_sha256) = 32);

-- One row per execution, classified against the INGRESS it references (found
-- by its position: node, stream, seq, which the primary key indexes):
--   ATTESTED    the INGRESS is there with the same attestation id, participant
--               and (when recorded) body hash;
--   ARCHIVED    its seq was exported to an archive and dropped from the hot
--               window (verified by verify-chain against the archive);
--   UNATTESTED  anything else at or below the stream's checkpoint: the INGRESS
--               is missing (deleted, truncated, never written), or the record
--               at that position differs (reason says which field);
--   PENDING     the INGRESS is not in PostgreSQL and its seq lies beyond what
--               the forwarder has shipped: reason 'halted' (the stream's
--               checkpoint is halted: it will not arrive without an operator)
--               or 'unshipped' (the forwarder has not got there yet, or the
--               stream has no checkpoint at all). A caller turns PENDING older
--               than its bound into UNATTESTED (attestation_gap_v3).
-- rail_attempts counts the rail calls recorded for the row (transitions into
-- IN_FLIGHT), so the report says how often an unattested row reached the rail.
CREATE VIEW execution_attestation_v1 AS
SELECT x.id AS outbox_id,
       x.participant_id,
       x.attestation_id,
       x.ingress_node_id AS node_id,
       x.ingress_stream_id AS stream_id,
       x.ingress_seq AS stream_seq,
       x.status,
       x.rail,
       x.created_at,
       extract(epoch FROM now() - x.created_at)::double precision AS age_seconds,
       (SELECT count(*) FROM outbox_events e
        WHERE e.outbox_id = x.id AND e.new_status = 'IN_FLIGHT') AS rail_attempts,
       i.attestation_id AS ingress_attestation_id,
       i.participant_id AS ingress_participant_id,
       x.ingress_body_sha256 IS NOT NULL AS body_sha256_compared,
       c.last_seq AS checkpoint_seq,
       c.halted_at,
       CASE
           WHEN i.stream_seq IS NOT NULL AND i.record_type = 2 AND i.attestation_id = x.attestation_id
                AND i.participant_id IS NOT DISTINCT FROM x.participant_id
                AND (x.ingress_body_sha256 IS NULL OR i.body_sha256 = x.ingress_body_sha256) THEN 'ATTESTED'
           WHEN i.stream_seq IS NOT NULL THEN 'UNATTESTED'
           WHEN ar.covered THEN 'ARCHIVED'
           WHEN c.last_seq IS NULL OR x.ingress_seq > c.last_seq THEN 'PENDING'
           ELSE 'UNATTESTED'
       END AS classification,
       CASE
           WHEN i.stream_seq IS NOT NULL AND i.record_type <> 2 THEN 'not_an_ingress'
           WHEN i.stream_seq IS NOT NULL AND i.attestation_id <> x.attestation_id THEN 'attestation_id_differs'
           WHEN i.stream_seq IS NOT NULL AND i.participant_id IS DISTINCT FROM x.participant_id
               THEN 'participant_differs'
           WHEN i.stream_seq IS NOT NULL AND x.ingress_body_sha256 IS NOT NULL
                AND i.body_sha256 IS DISTINCT FROM x.ingress_body_sha256 THEN 'body_sha256_differs'
           WHEN i.stream_seq IS NOT NULL THEN 'attested'
           WHEN ar.covered THEN 'archived'
           WHEN c.last_seq IS NOT NULL AND x.ingress_seq <= c.last_seq THEN 'missing'
           WHEN c.halted_at IS NOT NULL THEN 'halted'
           ELSE 'unshipped'
       END AS reason
FROM payment_outbox x
LEFT JOIN LATERAL (
    SELECT a.stream_seq, a.record_type, a.attestation_id, a.participant_id, a.body_sha256
    FROM ingress_attestations a
    WHERE a.node_id = x.ingress_node_id AND a.stream_id = x.ingress_stream_id AND a.stream_seq = x.ingress_seq
    ORDER BY a.recorded_at
    LIMIT 1
) i ON true
LEFT JOIN journal_checkpoints c
       ON c.node_id = x.ingress_node_id AND c.stream_id = x.ingress_stream_id
LEFT JOIN LATERAL (
    SELECT true AS covered FROM attestation_archives r
    WHERE r.node_id = x.ingress_node_id AND r.stream_id = x.ingress_stream_id
      AND x.ingress_seq BETWEEN r.first_seq AND r.last_seq
    LIMIT 1
) ar ON true;

-- The gap from both sides, per participant, over [since, until): the terms of
-- attestation_gap_v1 (INGRESS in the window by recorded_at) in the same order,
-- then the execution side (outbox rows in the window by created_at):
--   unattested  executions classified UNATTESTED, plus PENDING ones older than
--               pending_bound (a halted or unshipped range that did not arrive);
--   pending     PENDING executions younger than the bound, with the oldest age.
-- status is FAIL when gap or unattested is not zero. Pending alone is not a
-- failure (the forwarder may simply be behind); it becomes one at the bound.
CREATE FUNCTION attestation_gap_v3(since timestamptz, until timestamptz, pending_bound interval)
RETURNS TABLE (participant_id text, ingress_count bigint, executions bigint, handled bigint, gap bigint,
               status text, unattested bigint, pending bigint, pending_age_seconds_max double precision)
LANGUAGE sql STABLE AS $$
    WITH ingress AS (
        SELECT c.participant_id,
               count(*) AS ingress_count,
               count(*) FILTER (WHERE c.classification = 'EXECUTED') AS executions,
               count(*) FILTER (WHERE c.classification = 'HANDLED') AS handled,
               count(*) FILTER (WHERE c.classification = 'GHOST') AS gap
        FROM attestation_classification c
        WHERE c.recorded_at >= since AND c.recorded_at < until
        GROUP BY c.participant_id
    ),
    executed AS (
        SELECT e.participant_id,
               count(*) FILTER (WHERE e.classification = 'UNATTESTED'
                                   OR (e.classification = 'PENDING'
                                       AND e.created_at <= now() - pending_bound)) AS unattested,
               count(*) FILTER (WHERE e.classification = 'PENDING'
                                  AND e.created_at > now() - pending_bound) AS pending,
               max(e.age_seconds) FILTER (WHERE e.classification = 'PENDING'
                                            AND e.created_at > now() - pending_bound) AS pending_age_seconds_max
        FROM execution_attestation_v1 e
        WHERE e.created_at >= since AND e.created_at < until
          AND e.classification IN ('UNATTESTED', 'PENDING')
        GROUP BY e.participant_id
    )
    SELECT coalesce(i.participant_id, x.participant_id),
           coalesce(i.ingress_count, 0),
           coalesce(i.executions, 0),
           coalesce(i.handled, 0),
           coalesce(i.gap, 0),
           CASE WHEN coalesce(i.gap, 0) = 0 AND coalesce(x.unattested, 0) = 0 THEN 'PASS' ELSE 'FAIL' END,
           coalesce(x.unattested, 0),
           coalesce(x.pending, 0),
           x.pending_age_seconds_max
    FROM ingress i
    FULL JOIN executed x ON x.participant_id = i.participant_id
$$;

-- The view keeps its columns and gains the execution side (at the repair
-- daemon's default bound for pending executions, 300 s; the daemon, the audit
-- and the dashboard pass their configured bound to attestation_gap_v3).
CREATE OR REPLACE VIEW attestation_gap AS
SELECT * FROM attestation_gap_v3('-infinity', 'infinity', interval '300 seconds');

-- The dashboard view gains the two execution-side terms; an unattested
-- execution makes the participant CRITICAL_GAP like a ghost does.
CREATE OR REPLACE VIEW regulator_dashboard AS
WITH gap AS (
    SELECT * FROM attestation_gap_v2('-infinity', 'infinity', interval '2 minutes')
),
executed AS (
    SELECT participant_id, unattested, pending
    FROM attestation_gap_v3('-infinity', 'infinity', interval '300 seconds')
    WHERE unattested > 0 OR pending > 0
),
people AS (
    SELECT participant_id FROM participants
    UNION
    SELECT participant_id FROM gap
    UNION
    SELECT participant_id FROM executed
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
       CASE WHEN coalesce(g.gap, 0) > 0 OR coalesce(x.unattested, 0) > 0 THEN 'CRITICAL_GAP'
            WHEN coalesce(i.n, 0) > 0 OR coalesce(d.n, 0) > 0 THEN 'ACTION_REQUIRED'
            ELSE 'HEALTHY'
       END AS status,
       coalesce(g.in_flight, 0)     AS in_flight,
       coalesce(x.unattested, 0)    AS unattested,
       coalesce(x.pending, 0)       AS pending_executions
FROM people p
LEFT JOIN gap g            ON g.participant_id = p.participant_id
LEFT JOIN executed x       ON x.participant_id = p.participant_id
LEFT JOIN open_incidents i ON i.participant_id = p.participant_id
LEFT JOIN dead_letters d   ON d.participant_id = p.participant_id;
