-- Reconciliation against the rails' own statements (repair/reconcile.py).
--
-- Two incident kinds, opened through open_incident_v1 like every other:
--   RAIL_UNMATCHED  a rail-side transaction with no outbox row of that rail and
--                   handle (money moved without an intent: CRITICAL; a second
--                   execution of one handle counts here too), or an outbox row
--                   the service recorded as SUCCESS that the rail's statement
--                   for its period does not show (HIGH);
--   RAIL_MISMATCH   a rail-side transaction matched to its outbox row by the
--                   derived handle, but with another amount, currency or
--                   account (CRITICAL), or executed on a row Symphony holds as
--                   FAILED (CRITICAL).
-- rail_statements keeps one row per ingested statement (by SHA-256 of the
-- file), so the scheduled ingestion never reads a file twice and the dashboard
-- and the evidence bundle can count what was reconciled.

INSERT INTO incident_kinds (kind, description) VALUES
    ('RAIL_UNMATCHED', 'a rail statement line with no outbox row (money moved without an intent), '
                       'or a SUCCESS outbox row the rail''s statement does not show'),
    ('RAIL_MISMATCH', 'a rail statement line matched to its outbox row by handle but with another amount, '
                      'currency or account, or executed on a FAILED row');

CREATE TABLE rail_statements (
    statement_sha256 bytea PRIMARY KEY CHECK (length(statement_sha256) = 32),
    rail             text        NOT NULL CHECK (rail ~ '^[a-z0-9_-]{1,32}$'),
    source           text        NOT NULL,
    lines            bigint      NOT NULL CHECK (lines >= 0),
    matched          bigint      NOT NULL CHECK (matched >= 0),
    unmatched        bigint      NOT NULL CHECK (unmatched >= 0),
    mismatched       bigint      NOT NULL CHECK (mismatched >= 0),
    missing          bigint      NOT NULL CHECK (missing >= 0),
    period_from      date,
    period_to        date,
    ingested_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX rail_statements_rail_idx ON rail_statements (rail, ingested_at);
