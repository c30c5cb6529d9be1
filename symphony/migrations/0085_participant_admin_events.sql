-- Participant administration without hand-written SQL (`symphony participant`):
-- every suspension, reinstatement and token revocation is one row here, with
-- who asked (the operator's name and the database role that ran it), when and
-- why. Append-only: UPDATE, DELETE and TRUNCATE are refused, like the other
-- evidence tables. Owned by repair/ (participant_cli.py, migrations 0085-0089).

CREATE TABLE participant_admin_events (
    event_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    participant_id      text NOT NULL REFERENCES participants,
    action              text NOT NULL CHECK (action IN ('SUSPEND', 'REINSTATE', 'REVOKE_TOKENS')),
    -- The name the operator gave (--operator, or their login name): self-declared,
    -- so the authenticated database role is kept beside it.
    operator            text NOT NULL CHECK (length(operator) BETWEEN 1 AND 128),
    database_role       text NOT NULL DEFAULT current_user,
    reason              text NOT NULL CHECK (length(btrim(reason)) BETWEEN 1 AND 2000),
    old_status          text NOT NULL,
    new_status          text NOT NULL,
    old_policy_version  integer NOT NULL,
    new_policy_version  integer NOT NULL,
    occurred_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX participant_admin_events_participant_idx
    ON participant_admin_events (participant_id, event_id);
CREATE INDEX participant_admin_events_occurred_idx
    ON participant_admin_events (occurred_at);

CREATE TRIGGER participant_admin_events_append_only
    BEFORE UPDATE OR DELETE ON participant_admin_events
    FOR EACH ROW EXECUTE FUNCTION refuse_change_v1();

CREATE TRIGGER participant_admin_events_no_truncate
    BEFORE TRUNCATE ON participant_admin_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_v1();
