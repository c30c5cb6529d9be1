-- Schema v1: participants, attestations, checkpoints, outbox, idempotency, incidents,
-- and the auditors' views. PostgreSQL 18 or newer (uuidv7(), RETURNING OLD/NEW).
--
-- Conventions: times are timestamptz in UTC; money is bigint minor units; hashes
-- are bytea of exactly 32 bytes; journal sequence numbers come from the journal,
-- never from a PostgreSQL SEQUENCE (sequences have gaps by design).

-- ---------------------------------------------------------------------------
-- Participants and the kill-switch
-- ---------------------------------------------------------------------------

CREATE TABLE participants (
    participant_id          text PRIMARY KEY
        CHECK (participant_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    display_name            text NOT NULL DEFAULT '',
    status                  text NOT NULL DEFAULT 'ACTIVE'
        CHECK (status IN ('ACTIVE', 'SUSPENDED')),
    -- Bumped to revoke every token issued before: a token's `pv` claim must be
    -- at least this value (invariant 10).
    policy_version          integer NOT NULL DEFAULT 1 CHECK (policy_version >= 1),
    per_payment_limit_minor bigint NOT NULL DEFAULT 100000000 CHECK (per_payment_limit_minor > 0),
    window_limit_minor      bigint NOT NULL DEFAULT 1000000000 CHECK (window_limit_minor > 0),
    window_seconds          integer NOT NULL DEFAULT 86400 CHECK (window_seconds > 0),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- Sidecars cache participants and listen on this channel; the payload is the
-- participant id so a sidecar can refresh one row instead of the table.
CREATE FUNCTION participants_notify_v1() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    PERFORM pg_notify('symphony_participants', NEW.participant_id);
    RETURN NEW;
END;
$$;

CREATE TRIGGER participants_notify
    BEFORE INSERT OR UPDATE ON participants
    FOR EACH ROW EXECUTE FUNCTION participants_notify_v1();

-- ---------------------------------------------------------------------------
-- Attestations shipped from the journals
-- ---------------------------------------------------------------------------

-- One row per journal record (GENESIS, INGRESS, OUTCOME, HEARTBEAT, DROPPED).
-- `canonical` holds the exact bytes the record's chain hash covers, so the chain
-- can be recomputed from PostgreSQL alone: chain_hash = sha256(prev || canonical).
-- The other columns are decoded from `canonical` by the forwarder for queries.
--
-- Partitioned by day of `recorded_at`. PostgreSQL requires a unique constraint
-- on a partitioned table to include the partition key, so the key is
-- (node_id, stream_id, stream_seq, recorded_at): a record shipped twice has the
-- same recorded_at (it is part of the hashed bytes) and lands in the same
-- partition, where it is rejected. Global uniqueness of (node, stream, seq) is
-- kept by the forwarder, which inserts only seq = checkpoint.last_seq + 1
-- onwards under the checkpoint row's lock, and proven by `audit verify-chain`,
-- which reports any extra row as an inserted record.
CREATE TABLE ingress_attestations (
    node_id              text     NOT NULL,
    stream_id            integer  NOT NULL CHECK (stream_id BETWEEN 0 AND 1023),
    stream_seq           bigint   NOT NULL CHECK (stream_seq >= 1),
    record_type          smallint NOT NULL CHECK (record_type BETWEEN 1 AND 5),
    attestation_id       bigint   NOT NULL CHECK (attestation_id >= 0),
    recorded_at          timestamptz NOT NULL,
    participant_id       text,
    method               text,
    route                text,
    executes             boolean,
    status               smallint,
    disposition          text
        CHECK (disposition IS NULL OR disposition IN
               ('executed', 'replayed', 'rejected', 'upstream_error', 'client_gone')),
    latency_us           bigint,
    idempotency_key_hash bytea CHECK (idempotency_key_hash IS NULL OR length(idempotency_key_hash) = 32),
    body_sha256          bytea CHECK (body_sha256 IS NULL OR length(body_sha256) = 32),
    chain_hash           bytea    NOT NULL CHECK (length(chain_hash) = 32),
    canonical            bytea    NOT NULL,
    shipped_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, stream_id, stream_seq, recorded_at)
) PARTITION BY RANGE (recorded_at);

CREATE INDEX ingress_attestations_attestation_idx
    ON ingress_attestations (attestation_id, record_type);
CREATE INDEX ingress_attestations_participant_idx
    ON ingress_attestations (participant_id, recorded_at) WHERE record_type = 2;

-- Attestations are evidence: they are inserted, never changed. Dropping an
-- archived partition is a DDL step and not affected; a superuser who disables
-- this trigger to tamper is caught by chain verification instead.
CREATE FUNCTION refuse_change_v1() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER ingress_attestations_append_only
    BEFORE UPDATE OR DELETE ON ingress_attestations
    FOR EACH ROW EXECUTE FUNCTION refuse_change_v1();

-- Creates the daily partitions covering [from_day, to_day] (UTC days) that do
-- not exist yet; returns how many it created. Serialised by an advisory lock so
-- concurrent maintainers do not race on CREATE TABLE.
CREATE FUNCTION ensure_attestation_partitions_v1(from_day date, to_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    day     date;
    name    text;
    created integer := 0;
BEGIN
    IF to_day < from_day OR to_day - from_day > 400 THEN
        RAISE EXCEPTION 'partition range % .. % refused (at most 400 days at once)', from_day, to_day;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ingress_attestations partitions'));
    day := from_day;
    WHILE day <= to_day LOOP
        name := format('ingress_attestations_p%s', to_char(day, 'YYYYMMDD'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF ingress_attestations FOR VALUES FROM (%L) TO (%L)',
                name,
                (day::timestamp AT TIME ZONE 'UTC'),
                ((day + 1)::timestamp AT TIME ZONE 'UTC'));
            created := created + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END;
$$;

-- Yesterday (late records), today, and a week ahead, so no insert fails for a
-- missing partition; the forwarder extends this on every maintenance tick.
SELECT ensure_attestation_partitions_v1(
    (now() AT TIME ZONE 'UTC')::date - 1,
    (now() AT TIME ZONE 'UTC')::date + 7);

-- The per-stream head anchored outside the writer (invariant 3): last shipped
-- seq and hash, updated in the same transaction as the rows it covers.
CREATE TABLE journal_checkpoints (
    node_id         text    NOT NULL,
    stream_id       integer NOT NULL CHECK (stream_id BETWEEN 0 AND 1023),
    epoch           bytea   NOT NULL CHECK (length(epoch) = 16),
    last_seq        bigint  NOT NULL CHECK (last_seq >= 0),
    last_hash       bytea   NOT NULL CHECK (length(last_hash) = 32),
    last_record_at  timestamptz,
    records_shipped bigint  NOT NULL DEFAULT 0 CHECK (records_shipped >= 0),
    halted_at       timestamptz,
    halt_reason     text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, stream_id)
);

-- Partitions exported (signed) before they were dropped: which seqs of each
-- stream left the hot window, so a missing prefix is not mistaken for loss.
CREATE TABLE attestation_archives (
    archive_id   uuid PRIMARY KEY DEFAULT uuidv7(),
    partition    text NOT NULL,
    node_id      text NOT NULL,
    stream_id    integer NOT NULL,
    first_seq    bigint NOT NULL CHECK (first_seq >= 1),
    last_seq     bigint NOT NULL CHECK (last_seq >= first_seq),
    sha256       bytea NOT NULL CHECK (length(sha256) = 32),
    signature    bytea NOT NULL,
    key_id       text NOT NULL,
    archived_at  timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------
-- Payments: intents, the transactional outbox and its transition log
-- ---------------------------------------------------------------------------

CREATE TYPE outbox_status AS ENUM ('PENDING', 'IN_FLIGHT', 'SUCCESS', 'FAILED', 'RECOVERING');

-- A ledger-scoped payment intent; one per (participant, idempotency key).
CREATE TABLE payment_intents (
    intent_id           uuid PRIMARY KEY DEFAULT uuidv7(),
    participant_id      text NOT NULL REFERENCES participants,
    idempotency_key     text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    amount_minor        bigint NOT NULL CHECK (amount_minor > 0),
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    rail                text NOT NULL CHECK (rail ~ '^[a-z0-9_-]{1,32}$'),
    destination_account text NOT NULL CHECK (length(destination_account) BETWEEN 1 AND 64),
    client_reference    text NOT NULL DEFAULT '' CHECK (length(client_reference) <= 128),
    attestation_id      bigint NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (participant_id, idempotency_key)
);

CREATE TABLE payment_outbox (
    id                 uuid PRIMARY KEY DEFAULT uuidv7(),
    intent_id          uuid NOT NULL UNIQUE REFERENCES payment_intents,
    participant_id     text NOT NULL REFERENCES participants,
    -- The INGRESS attestation that carried this request (sidecar headers). Not a
    -- foreign key: attestations arrive later, through the forwarder.
    attestation_id     bigint NOT NULL,
    ingress_node_id    text NOT NULL,
    ingress_stream_id  integer NOT NULL,
    ingress_seq        bigint NOT NULL CHECK (ingress_seq >= 1),
    rail               text NOT NULL,
    payload            jsonb NOT NULL,
    status             outbox_status NOT NULL DEFAULT 'PENDING',
    attempt_count      integer NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    max_attempts       integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    lease_owner        text,
    lease_expires_at   timestamptz,
    last_response_code text,
    last_error         text,
    rail_reference     text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz,
    -- A lease exists exactly while a relayer holds the row.
    CONSTRAINT outbox_lease_iff_in_flight CHECK
        ((status = 'IN_FLIGHT') = (lease_expires_at IS NOT NULL AND lease_owner IS NOT NULL)),
    CONSTRAINT outbox_completed_iff_terminal CHECK
        ((status IN ('SUCCESS', 'FAILED')) = (completed_at IS NOT NULL)),
    -- One request executes at most one intent.
    UNIQUE (ingress_node_id, attestation_id)
);

CREATE INDEX payment_outbox_claimable_idx
    ON payment_outbox (next_attempt_at) WHERE status IN ('PENDING', 'RECOVERING');
CREATE INDEX payment_outbox_lease_idx
    ON payment_outbox (lease_expires_at) WHERE status = 'IN_FLIGHT';
CREATE INDEX payment_outbox_attestation_idx ON payment_outbox (attestation_id);

-- Every status change, ever: state can be replayed from this log alone. Written
-- by trigger so no code path (or operator UPDATE) can change a status without
-- leaving a row. Context comes from the new row and, when the writer sets it,
-- the transaction-local setting `symphony.actor`.
CREATE TABLE outbox_events (
    event_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id     uuid NOT NULL REFERENCES payment_outbox,
    old_status    outbox_status,
    new_status    outbox_status NOT NULL,
    attempt       integer NOT NULL,
    actor         text NOT NULL,
    response_code text,
    detail        text,
    occurred_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX outbox_events_outbox_idx ON outbox_events (outbox_id, event_id);

CREATE FUNCTION outbox_record_transition_v1() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
        IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
            RETURN NEW;
        END IF;
    END IF;
    INSERT INTO outbox_events (outbox_id, old_status, new_status, attempt, actor, response_code, detail)
    VALUES (
        NEW.id,
        CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
        NEW.status,
        NEW.attempt_count,
        coalesce(nullif(current_setting('symphony.actor', true), ''), NEW.lease_owner, current_user),
        NEW.last_response_code,
        CASE WHEN NEW.status IN ('FAILED', 'RECOVERING') THEN NEW.last_error END);
    RETURN NEW;
END;
$$;

-- On UPDATE the trigger runs BEFORE, so updated_at lands in the same row
-- version. On INSERT it must run AFTER: the event's foreign key needs the
-- outbox row to exist already.
CREATE TRIGGER payment_outbox_transition_insert
    AFTER INSERT ON payment_outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_record_transition_v1();
CREATE TRIGGER payment_outbox_transition_update
    BEFORE UPDATE ON payment_outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_record_transition_v1();

CREATE TRIGGER outbox_events_append_only
    BEFORE UPDATE OR DELETE ON outbox_events
    FOR EACH ROW EXECUTE FUNCTION refuse_change_v1();

-- Relayers LISTEN here; one notification per inserting statement is enough.
CREATE FUNCTION outbox_notify_v1() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('symphony_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER payment_outbox_notify
    AFTER INSERT ON payment_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify_v1();

-- ---------------------------------------------------------------------------
-- Idempotency keys (Stripe-style recovery, not a 409 loop)
-- ---------------------------------------------------------------------------

CREATE TABLE idempotency_keys (
    participant_id      text NOT NULL REFERENCES participants,
    idempotency_key     text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_fingerprint bytea NOT NULL CHECK (length(request_fingerprint) = 32),
    state               text NOT NULL DEFAULT 'IN_PROGRESS'
        CHECK (state IN ('IN_PROGRESS', 'COMPLETED')),
    locked_at           timestamptz,
    response_status     smallint,
    response_body       jsonb,
    intent_id           uuid REFERENCES payment_intents,
    attestation_id      bigint NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    PRIMARY KEY (participant_id, idempotency_key),
    CONSTRAINT idempotency_completed_has_response CHECK
        ((state = 'COMPLETED') = (response_status IS NOT NULL)),
    CONSTRAINT idempotency_in_progress_locked CHECK
        ((state = 'IN_PROGRESS') = (locked_at IS NOT NULL))
);

CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);
CREATE INDEX idempotency_keys_in_progress_idx ON idempotency_keys (locked_at) WHERE state = 'IN_PROGRESS';

-- ---------------------------------------------------------------------------
-- Incidents
-- ---------------------------------------------------------------------------

CREATE TABLE repair_incidents (
    incident_id    uuid PRIMARY KEY DEFAULT uuidv7(),
    kind           text NOT NULL CHECK (kind IN (
                       'GHOST', 'OUTCOME_MISSING', 'ZOMBIE', 'STUCK_KEY', 'SEQ_GAP',
                       'CHAIN_BREAK', 'NODE_SILENT', 'DEAD_LETTER', 'CLOCK_BACKWARDS')),
    -- Identifies "the same problem" so a detector that runs every cycle updates
    -- one open incident instead of opening a new one each time.
    dedup_key      text NOT NULL,
    severity       text NOT NULL CHECK (severity IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW')),
    participant_id text,
    node_id        text,
    stream_id      integer,
    subject        text NOT NULL,
    evidence       jsonb NOT NULL DEFAULT '{}'::jsonb,
    detected_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    resolution     text CHECK (resolution IS NULL OR resolution IN
                       ('AUTO_RESOLVED', 'RESOLVED', 'FALSE_POSITIVE', 'ACCEPTED_LOSS', 'REDRIVEN')),
    resolved_by    text,
    operator_notes jsonb NOT NULL DEFAULT '[]'::jsonb,
    CONSTRAINT incident_resolution_complete CHECK ((resolved_at IS NULL) = (resolution IS NULL))
);

CREATE UNIQUE INDEX repair_incidents_open_dedup_idx
    ON repair_incidents (kind, dedup_key) WHERE resolved_at IS NULL;
CREATE INDEX repair_incidents_detected_idx ON repair_incidents (detected_at);

-- ---------------------------------------------------------------------------
-- Auditors' views
-- ---------------------------------------------------------------------------

-- Every INGRESS on an executing route, classified (invariant 2):
--   EXECUTED  an outbox row references it;
--   HANDLED   no outbox row, and its OUTCOME says it was handled without
--             execution (replayed, rejected, upstream error, client gone);
--   GHOST     neither: received, never executed, never explained.
-- Executions take precedence: an OUTCOME of upstream_error with an outbox row
-- is an execution (the service committed before the answer was lost).
CREATE VIEW attestation_classification AS
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
    LIMIT 1
) o ON true
LEFT JOIN payment_outbox x
       ON x.attestation_id = i.attestation_id AND x.ingress_node_id = i.node_id
WHERE i.record_type = 2 AND i.executes;

-- gap = ingress - executions - handled, per participant, over [since, until).
CREATE FUNCTION attestation_gap_v1(since timestamptz, until timestamptz)
RETURNS TABLE (participant_id text, ingress_count bigint, executions bigint,
               handled bigint, gap bigint, status text)
LANGUAGE sql STABLE AS $$
    SELECT c.participant_id,
           count(*)                                          AS ingress_count,
           count(*) FILTER (WHERE c.classification = 'EXECUTED') AS executions,
           count(*) FILTER (WHERE c.classification = 'HANDLED')  AS handled,
           count(*) FILTER (WHERE c.classification = 'GHOST')    AS gap,
           CASE WHEN count(*) FILTER (WHERE c.classification = 'GHOST') = 0
                THEN 'PASS' ELSE 'FAIL' END                  AS status
    FROM attestation_classification c
    WHERE c.recorded_at >= since AND c.recorded_at < until
    GROUP BY c.participant_id
$$;

CREATE VIEW attestation_gap AS
SELECT * FROM attestation_gap_v1('-infinity', 'infinity');

CREATE VIEW attestation_ghosts AS
SELECT node_id, stream_id, stream_seq, attestation_id, participant_id, method, route,
       idempotency_key_hash, recorded_at, outcome_disposition, outcome_status
FROM attestation_classification
WHERE classification = 'GHOST';

-- Holes in each stream's gapless numbering (invariant 3), as missing ranges:
--   inside what was shipped (a row deleted in PostgreSQL),
--   before the first shipped row and not covered by an archive,
--   after the last row but at or below the checkpoint (the tail was cut).
CREATE VIEW stream_sequence_gaps AS
WITH ordered AS (
    SELECT node_id, stream_id, stream_seq,
           lead(stream_seq) OVER (PARTITION BY node_id, stream_id ORDER BY stream_seq) AS next_seq
    FROM ingress_attestations
),
bounds AS (
    SELECT node_id, stream_id, min(stream_seq) AS first_seq, max(stream_seq) AS last_seq
    FROM ingress_attestations
    GROUP BY node_id, stream_id
),
archived AS (
    SELECT node_id, stream_id, max(last_seq) AS archived_through
    FROM attestation_archives
    GROUP BY node_id, stream_id
)
SELECT node_id, stream_id, stream_seq + 1 AS missing_from, next_seq - 1 AS missing_to,
       'inside' AS position
FROM ordered
WHERE next_seq > stream_seq + 1
UNION ALL
SELECT b.node_id, b.stream_id, coalesce(a.archived_through, 0) + 1, b.first_seq - 1, 'before_first'
FROM bounds b
LEFT JOIN archived a USING (node_id, stream_id)
WHERE b.first_seq > coalesce(a.archived_through, 0) + 1
UNION ALL
SELECT c.node_id, c.stream_id, coalesce(b.last_seq, 0) + 1, c.last_seq, 'after_last'
FROM journal_checkpoints c
LEFT JOIN bounds b USING (node_id, stream_id)
WHERE c.last_seq > coalesce(b.last_seq, coalesce(
          (SELECT max(last_seq) FROM attestation_archives ar
           WHERE ar.node_id = c.node_id AND ar.stream_id = c.stream_id), 0));

-- What a human must look at: dead letters and open incidents.
CREATE VIEW manual_intervention_queue AS
SELECT 'DEAD_LETTER'::text AS item_kind,
       x.id::text          AS item_id,
       x.participant_id,
       x.completed_at      AS since,
       format('outbox %s on rail %s failed after %s attempts: %s',
              x.id, x.rail, x.attempt_count, coalesce(x.last_error, 'no error recorded')) AS summary
FROM payment_outbox x
WHERE x.status = 'FAILED'
UNION ALL
SELECT 'INCIDENT',
       r.incident_id::text,
       r.participant_id,
       r.detected_at,
       format('%s (%s): %s', r.kind, r.severity, r.subject)
FROM repair_incidents r
WHERE r.resolved_at IS NULL;

-- One row per participant for supervisors. (The draft grouped by a table alias
-- it never joined; here every participant appears, with or without traffic.)
--   CRITICAL_GAP     the attestation gap is not zero;
--   ACTION_REQUIRED  no gap, but dead letters or open incidents wait for people;
--   HEALTHY          neither.
-- integrity_score = 100 x (ingress - gap) / ingress, and 100 with no ingress.
CREATE VIEW regulator_dashboard AS
WITH gap AS (
    SELECT * FROM attestation_gap
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
       END AS status
FROM people p
LEFT JOIN gap g            ON g.participant_id = p.participant_id
LEFT JOIN open_incidents i ON i.participant_id = p.participant_id
LEFT JOIN dead_letters d   ON d.participant_id = p.participant_id;
