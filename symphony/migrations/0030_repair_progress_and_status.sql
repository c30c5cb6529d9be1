-- Repair and audit: incremental chain-verification progress, the log of what
-- the automation did, each repair instance's status, and the per-stream view
-- the dashboard shows. Owned by repair/ (migrations 0030-0039).

-- How far the repair daemon has verified each stream's chain (invariant 4),
-- so each cycle checks only newly shipped records. A break stops progress at
-- the last good record until the break is gone.
CREATE TABLE repair_chain_progress (
    node_id        text    NOT NULL,
    stream_id      integer NOT NULL CHECK (stream_id BETWEEN 0 AND 1023),
    verified_seq   bigint  NOT NULL DEFAULT 0 CHECK (verified_seq >= 0),
    verified_hash  bytea   NOT NULL CHECK (length(verified_hash) = 32),
    verified_at    timestamptz NOT NULL DEFAULT now(),
    broken_seq     bigint,
    broken_reason  text,
    PRIMARY KEY (node_id, stream_id),
    CONSTRAINT repair_chain_break_complete CHECK ((broken_seq IS NULL) = (broken_reason IS NULL))
);

-- What the automation tried, per incident, append-only: the incident report's
-- "what was done" section comes from here, not from a mutable field.
CREATE TABLE repair_actions (
    action_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id  uuid REFERENCES repair_incidents,
    action       text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
    actor        text NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX repair_actions_incident_idx ON repair_actions (incident_id, action_id);

CREATE TRIGGER repair_actions_append_only
    BEFORE UPDATE OR DELETE ON repair_actions
    FOR EACH ROW EXECUTE FUNCTION refuse_change_v1();

-- One row per repair instance: its role and its last cycle, for the dashboard
-- and for operators asking "who is the leader, and is it working?".
CREATE TABLE repair_instances (
    instance_id      text PRIMARY KEY,
    role             text NOT NULL CHECK (role IN ('LEADER', 'STANDBY', 'STOPPED')),
    started_at       timestamptz NOT NULL DEFAULT now(),
    became_leader_at timestamptz,
    last_cycle_at    timestamptz,
    last_cycle_ms    integer,
    last_error       text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Per stream: how far PostgreSQL has it, when it last spoke, when it last
-- sent a heartbeat, and how far its chain has been verified.
CREATE VIEW stream_status AS
WITH streams AS (
    SELECT node_id, stream_id FROM journal_checkpoints
    UNION
    SELECT node_id, stream_id FROM repair_chain_progress
)
SELECT s.node_id,
       s.stream_id,
       c.last_seq,
       c.last_record_at,
       c.halted_at,
       c.halt_reason,
       hb.recorded_at AS last_heartbeat_at,
       extract(epoch FROM now() - c.last_record_at)::double precision AS lag_seconds,
       p.verified_seq AS last_verified_seq,
       p.verified_at,
       p.broken_seq,
       p.broken_reason
FROM streams s
LEFT JOIN journal_checkpoints c   USING (node_id, stream_id)
LEFT JOIN repair_chain_progress p USING (node_id, stream_id)
LEFT JOIN LATERAL (
    SELECT a.recorded_at
    FROM ingress_attestations a
    WHERE a.node_id = s.node_id AND a.stream_id = s.stream_id AND a.record_type = 4
    ORDER BY a.stream_seq DESC
    LIMIT 1
) hb ON true;
