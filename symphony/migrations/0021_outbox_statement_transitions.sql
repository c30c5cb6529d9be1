-- Outbox transitions recorded per statement, not per row (relayer throughput).
--
-- Schema v1 wrote each outbox_events row from a per-row PL/pgSQL trigger: a
-- relayer batch of 1 000 claims or completions ran the function 1 000 times,
-- each with its own INSERT, and the database side topped out near 6 000 rows/s
-- (claim + complete) on the project's 2-core VM. The same events are now
-- written by statement-level AFTER triggers that read the statement's
-- transition tables and insert every event in one INSERT … SELECT.
--
-- Semantics kept exactly (tests/foundation/test_schema.py):
-- - INSERT: one event (NULL → status) per new row.
-- - UPDATE: one event per row whose status changed; a write that leaves the
--   status unchanged is not a transition.
-- - actor: the transaction-local `symphony.actor` setting, else the row's
--   lease_owner, else current_user; response code from the new row; detail
--   (last_error) only for FAILED and RECOVERING.
-- - updated_at moves to now() on every UPDATE: a BEFORE ROW trigger does it,
--   but only when the statement did not set updated_at itself (the WHEN clause
--   costs no function call); the relayer's queries set it, operator UPDATEs
--   and older code are covered by the trigger.
--
-- Ordering: events of one statement get consecutive event_ids (in outbox id
-- order); a row changes at most once per statement, so the per-row order of
-- events, which is what replay needs, is the order of the statements.
-- The outbox id cannot change under an UPDATE (the events' foreign key refuses
-- it once the insert event exists), so OLD and NEW rows pair up on id.
--
-- outbox_record_transition_v1 stays defined (no longer called): a function is
-- dropped in a later release than the one that stops using it.

DROP TRIGGER payment_outbox_transition_insert ON payment_outbox;
DROP TRIGGER payment_outbox_transition_update ON payment_outbox;

CREATE FUNCTION outbox_record_inserts_v2() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_events (outbox_id, old_status, new_status, attempt, actor, response_code, detail)
    SELECT n.id, NULL, n.status, n.attempt_count,
           coalesce(nullif(current_setting('symphony.actor', true), ''), n.lease_owner, current_user),
           n.last_response_code,
           CASE WHEN n.status IN ('FAILED', 'RECOVERING') THEN n.last_error END
    FROM outbox_inserted n
    ORDER BY n.id;
    RETURN NULL;
END;
$$;

-- The transition tables have no statistics: PL/pgSQL plans this INSERT once
-- per session, with the row counts of the first statement that fired it (often
-- 0 or 1, e.g. a reclaim that found nothing), and would keep a nested loop over
-- the two tuplestores: quadratic, 250 ms for 1 000 rows. With nested loops off
-- for this function the cached plan is a hash join, linear at every size.
CREATE FUNCTION outbox_record_updates_v2() RETURNS trigger LANGUAGE plpgsql
SET enable_nestloop = off AS $$
BEGIN
    INSERT INTO outbox_events (outbox_id, old_status, new_status, attempt, actor, response_code, detail)
    SELECT n.id, o.status, n.status, n.attempt_count,
           coalesce(nullif(current_setting('symphony.actor', true), ''), n.lease_owner, current_user),
           n.last_response_code,
           CASE WHEN n.status IN ('FAILED', 'RECOVERING') THEN n.last_error END
    FROM outbox_updated_new n
    JOIN outbox_updated_old o ON o.id = n.id
    WHERE n.status IS DISTINCT FROM o.status
    ORDER BY n.id;
    RETURN NULL;
END;
$$;

CREATE FUNCTION outbox_touch_updated_at_v2() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- AFTER INSERT: the events' foreign key needs the outbox rows to exist.
CREATE TRIGGER payment_outbox_transition_insert
    AFTER INSERT ON payment_outbox
    REFERENCING NEW TABLE AS outbox_inserted
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_record_inserts_v2();

CREATE TRIGGER payment_outbox_transition_update
    AFTER UPDATE ON payment_outbox
    REFERENCING OLD TABLE AS outbox_updated_old NEW TABLE AS outbox_updated_new
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_record_updates_v2();

CREATE TRIGGER payment_outbox_touch_updated_at
    BEFORE UPDATE ON payment_outbox
    FOR EACH ROW
    WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at)
    EXECUTE FUNCTION outbox_touch_updated_at_v2();
