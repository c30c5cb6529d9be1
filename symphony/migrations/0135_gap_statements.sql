-- Signed gap statements (issue 14 item 3; migrations 0135-0139). For each
-- closed UTC window the repair leader computes the attestation gap per
-- participant (attestation_gap_v3, the rule `symphony audit gap` uses), signs
-- it as a C2SP signed note (body format: docs/verifying.md, "Gap statements")
-- and stores it here, exactly once per window: windows never overlap (the
-- exclusion constraint) and a window is stored at most once (its start is the
-- key), whatever the number of repair instances or restarts.
--
-- Append-only evidence: UPDATE and DELETE refused per row, TRUNCATE per
-- statement (0041), like the other evidence tables.

CREATE TABLE gap_statements (
    window_start timestamptz NOT NULL PRIMARY KEY,
    window_end   timestamptz NOT NULL,
    key_name     text        NOT NULL CHECK (key_name <> ''),
    body         text        NOT NULL CHECK (right(body, 1) = E'\n'),
    note         text        NOT NULL CHECK (left(note, length(body)) = body),
    ghosts       bigint      NOT NULL CHECK (ghosts >= 0),
    unattested   bigint      NOT NULL CHECK (unattested >= 0),
    signed_at    timestamptz NOT NULL DEFAULT now(),
    signed_by    text        NOT NULL,
    CHECK (window_end > window_start),
    EXCLUDE USING gist (tstzrange(window_start, window_end) WITH &&)
);

CREATE TRIGGER gap_statements_append_only
    BEFORE UPDATE OR DELETE ON gap_statements
    FOR EACH ROW EXECUTE FUNCTION refuse_change_v1();

SELECT evidence_refuse_truncate_v1('gap_statements');

-- Which logs were live in a window (repair/statements.sql
-- statement_checkpoints): per stream epoch, its checkpoints by cut time.
CREATE INDEX log_checkpoints_cut_idx ON log_checkpoints (node_id, stream_id, epoch, cut_at);

-- Repair signs and stores them; the dashboard reads them.
GRANT SELECT, INSERT ON gap_statements TO symphony_repair;
GRANT SELECT ON gap_statements TO symphony_dashboard;
