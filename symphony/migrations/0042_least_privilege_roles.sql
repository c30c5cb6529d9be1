-- Least privilege (DESIGN.md invariant 13): one NOLOGIN group role per daemon,
-- holding only the grants that daemon needs. The tables stay owned by the
-- role that runs the migrations; no daemon connects as that owner or as a
-- superuser. Login roles are members of these groups: `symphony up` creates
-- one per daemon on its embedded server, production creates them by hand
-- (docs/operations.md, "Database roles").
--
-- Roles are cluster-wide and many databases of one cluster run these
-- migrations (the test suite, several environments on one server): the roles
-- are created only when missing, and a concurrent creation by another
-- database's migration is not an error. Grants are per database and simply
-- repeated.

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['symphony_sidecar', 'symphony_forwarder', 'symphony_service',
                                     'symphony_relayer', 'symphony_repair', 'symphony_dashboard']
    LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE', role_name);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN
                    NULL;  -- another database's migration created it a moment ago
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION 'role % does not exist and % may not create roles', role_name, current_user
                        USING HINT = 'create the group roles first (docs/operations.md, "Database roles"), '
                                     'or migrate as a role with CREATEROLE';
            END;
        END IF;
    END LOOP;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO symphony_sidecar, symphony_forwarder, symphony_service, '
                   'symphony_relayer, symphony_repair, symphony_dashboard', current_schema());
END;
$$;

-- Incidents are opened through open_incident_v1 only, with the definer's
-- rights: a daemon that reports incidents needs EXECUTE, not INSERT or UPDATE
-- on repair_incidents (so it cannot close or rewrite an incident).
ALTER FUNCTION open_incident_v1(text, text, text, text, text, integer, text, jsonb) SECURITY DEFINER;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION open_incident_v1(text, text, text, text, text, integer, text, jsonb) '
                   'SET search_path = %I, pg_temp', current_schema());
END;
$$;
REVOKE ALL ON FUNCTION open_incident_v1(text, text, text, text, text, integer, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION open_incident_v1(text, text, text, text, text, integer, text, jsonb)
    TO symphony_forwarder, symphony_relayer, symphony_repair;

REVOKE ALL ON FUNCTION ensure_attestation_partitions_v1(date, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ensure_attestation_partitions_v1(date, date) TO symphony_forwarder;
REVOKE ALL ON FUNCTION evidence_refuse_truncate_v1(regclass) FROM PUBLIC;

-- The sidecar: the participants' status and policy version (and LISTEN, which
-- needs no grant).
GRANT SELECT ON participants TO symphony_sidecar;

-- The forwarder: appends attestations and moves its checkpoints (insert, move
-- forward, halt); reads both to continue the chain. No UPDATE or DELETE of
-- attestations, no TRUNCATE of anything.
GRANT SELECT, INSERT ON ingress_attestations TO symphony_forwarder;
GRANT SELECT, INSERT, UPDATE ON journal_checkpoints TO symphony_forwarder;

-- The payments service: its own tables. UPDATE on participants is limited to
-- updated_at, the least a `SELECT … FOR NO KEY UPDATE` of the participant row
-- (the limit check's lock) requires. outbox_events gets its INSERT from the
-- transition trigger, which runs with the writer's rights.
GRANT SELECT, UPDATE (updated_at) ON participants TO symphony_service;
GRANT SELECT, INSERT ON payment_intents, payment_outbox TO symphony_service;
GRANT SELECT, INSERT ON outbox_events TO symphony_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO symphony_service;

-- The relayer: claims and completes outbox rows (their transitions are
-- inserted into outbox_events by trigger), opens DEAD_LETTER incidents and
-- marks them re-driven.
GRANT SELECT ON participants, payment_intents TO symphony_relayer;
GRANT SELECT, UPDATE ON payment_outbox TO symphony_relayer;
GRANT SELECT, INSERT ON outbox_events TO symphony_relayer;
GRANT SELECT, UPDATE ON repair_incidents TO symphony_relayer;

-- Repair and audit: read everything; write incidents and their own tables;
-- re-queue zombies (an outbox UPDATE, hence an outbox_events INSERT by
-- trigger) and release stuck keys that executed nothing (DELETE).
DO $$
BEGIN
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO symphony_repair, symphony_dashboard',
                   current_schema());
    -- Tables later migrations create are readable by the auditors too.
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES '
                   'TO symphony_repair, symphony_dashboard', current_schema());
END;
$$;
GRANT INSERT, UPDATE ON repair_incidents, repair_chain_progress, repair_instances TO symphony_repair;
GRANT INSERT ON repair_actions TO symphony_repair;
GRANT UPDATE ON payment_outbox TO symphony_repair;
GRANT INSERT ON outbox_events TO symphony_repair;
-- (UPDATE of locked_at: the least `FOR UPDATE SKIP LOCKED` of the key row requires.)
GRANT DELETE, UPDATE (locked_at) ON idempotency_keys TO symphony_repair;

-- The dashboard reads (its sessions are also default_transaction_read_only).
