-- Evidence tables refuse TRUNCATE (DESIGN.md invariant 13).
--
-- The append-only triggers of schema v1 are BEFORE UPDATE OR DELETE … FOR EACH
-- ROW: TRUNCATE fires no row trigger, so `TRUNCATE outbox_events` or of an
-- attestation partition erased evidence without a sound. Statement-level
-- BEFORE TRUNCATE triggers close that door for every role, the tables' owner
-- included; only someone who may ALTER TABLE … DISABLE TRIGGER (the owner or a
-- superuser) can still get through, and what that leaves behind is listed in
-- docs/operations.md ("What the database owner can still do").
--
-- TRUNCATE triggers fire per table named or reached: TRUNCATE of the
-- partitioned ingress_attestations fires the parent's, TRUNCATE of one
-- partition fires only that partition's. So every partition gets its own,
-- those that exist now (below) and every future one (the partition function
-- creates it with the partition).

CREATE FUNCTION refuse_truncate_v1() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is evidence: TRUNCATE refused', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- Adds the TRUNCATE refusal to one table unless it has it already.
CREATE FUNCTION evidence_refuse_truncate_v1(target regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = target AND tgname = 'evidence_refuse_truncate') THEN
        EXECUTE format('CREATE TRIGGER evidence_refuse_truncate BEFORE TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION refuse_truncate_v1()', target);
    END IF;
END;
$$;

-- The append-only tables, the tables whose rows are the audit's subject
-- (executions, checkpoints, incidents), and every attestation partition.
DO $$
DECLARE
    target regclass;
BEGIN
    FOREACH target IN ARRAY ARRAY[
        'ingress_attestations', 'outbox_events', 'repair_actions', 'attestation_archives',
        'journal_checkpoints', 'payment_outbox', 'payment_intents', 'repair_incidents']::regclass[]
    LOOP
        PERFORM evidence_refuse_truncate_v1(target);
    END LOOP;
    FOR target IN SELECT inhrelid::regclass FROM pg_inherits
                  WHERE inhparent = 'ingress_attestations'::regclass
    LOOP
        PERFORM evidence_refuse_truncate_v1(target);
    END LOOP;
END;
$$;

-- Archive rows are the anchors verify-chain trusts for a dropped prefix: they
-- become append-only like the attestations themselves.
CREATE TRIGGER attestation_archives_append_only
    BEFORE UPDATE OR DELETE ON attestation_archives
    FOR EACH ROW EXECUTE FUNCTION refuse_change_v1();

-- A checkpoint is moved forward by the forwarder, never deleted: deleting one
-- would hide a cut tail (stream_sequence_gaps compares against it).
CREATE TRIGGER journal_checkpoints_no_delete
    BEFORE DELETE ON journal_checkpoints
    FOR EACH ROW EXECUTE FUNCTION refuse_change_v1();

-- Same contract as before; each partition it creates also gets the TRUNCATE
-- refusal. SECURITY DEFINER (owned by the migrating role, the tables' owner)
-- with a fixed search_path: the forwarder's role may extend the partitions
-- without owning ingress_attestations (creating a partition needs ownership
-- of the parent). Only the forwarder's role may execute it (migration 0042).
CREATE OR REPLACE FUNCTION ensure_attestation_partitions_v1(from_day date, to_day date)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER AS $$
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
        PERFORM evidence_refuse_truncate_v1(to_regclass(name));
        day := day + 1;
    END LOOP;
    RETURN created;
END;
$$;

-- The schema the migrations run in, then pg_temp last: a caller cannot shadow
-- a table or function the definer's code names.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION ensure_attestation_partitions_v1(date, date) SET search_path = %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION evidence_refuse_truncate_v1(regclass) SET search_path = %I, pg_temp',
                   current_schema());
END;
$$;
