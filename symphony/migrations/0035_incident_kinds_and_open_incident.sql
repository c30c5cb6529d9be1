-- One way to open an incident, for every daemon, and incident kinds as rows.
--
-- Before this migration the forwarder, the relayer (twice) and repair each had
-- their own INSERT … ON CONFLICT into repair_incidents, with three slightly
-- different ideas of what "seen again" updates. open_incident_v1 is the one
-- rule; the daemons' queries call it. Kinds move from a CHECK list to a table so
-- that a migration adds a kind with one INSERT instead of rewriting the list
-- (two migrations rewriting one CHECK would silently drop each other's kinds).

CREATE TABLE incident_kinds (
    kind        text PRIMARY KEY CHECK (kind ~ '^[A-Z][A-Z0-9_]{1,62}$'),
    description text NOT NULL
);

INSERT INTO incident_kinds (kind, description) VALUES
    ('GHOST', 'an INGRESS of an executing route with neither an outbox row nor a handled OUTCOME'),
    ('OUTCOME_MISSING', 'an INGRESS whose OUTCOME never arrived'),
    ('ZOMBIE', 'an outbox row stuck past its lease or due time'),
    ('STUCK_KEY', 'an idempotency key held in progress past its TTL'),
    ('SEQ_GAP', 'a hole in a journal stream''s sequence numbers'),
    ('CHAIN_BREAK', 'a record whose hash does not continue its stream''s chain'),
    ('NODE_SILENT', 'a stream that stopped writing records and heartbeats'),
    ('DEAD_LETTER', 'an outbox row that exhausted its retry budget'),
    ('CLOCK_BACKWARDS', 'a sidecar refused requests because its clock stepped back past the bound');

ALTER TABLE repair_incidents DROP CONSTRAINT repair_incidents_kind_check;
ALTER TABLE repair_incidents
    ADD CONSTRAINT repair_incidents_kind_fkey FOREIGN KEY (kind) REFERENCES incident_kinds (kind);

-- Opens an incident, or refreshes the open one with the same (kind, dedup_key):
-- the latest observation's severity, subject and evidence win and last_seen_at
-- moves. A finding an operator closed as ACCEPTED_LOSS or FALSE_POSITIVE is
-- not reopened (no row returned). Returns the incident and whether it is new.
CREATE FUNCTION open_incident_v1(
    p_kind text, p_dedup_key text, p_severity text, p_participant_id text,
    p_node_id text, p_stream_id integer, p_subject text, p_evidence jsonb)
RETURNS TABLE (incident_id uuid, opened boolean)
LANGUAGE sql AS $$
    INSERT INTO repair_incidents AS r
        (kind, dedup_key, severity, participant_id, node_id, stream_id, subject, evidence)
    SELECT p_kind, p_dedup_key, p_severity, p_participant_id, p_node_id, p_stream_id, p_subject,
           coalesce(p_evidence, '{}'::jsonb)
    WHERE NOT EXISTS (
        SELECT 1 FROM repair_incidents c
        WHERE c.kind = p_kind AND c.dedup_key = p_dedup_key
          AND c.resolution IN ('ACCEPTED_LOSS', 'FALSE_POSITIVE'))
    ON CONFLICT (kind, dedup_key) WHERE resolved_at IS NULL
    DO UPDATE SET last_seen_at = now(), severity = EXCLUDED.severity, subject = EXCLUDED.subject,
                  evidence = EXCLUDED.evidence
    RETURNING r.incident_id, (r.xmax = 0);
$$;
