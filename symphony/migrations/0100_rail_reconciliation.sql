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

-- The rail handle of an outbox row, as symphony/rail_handles.py defines it (a test
-- compares the two for every kind): reconciliation derives it in the database so
-- a statement can be COPYed in and matched without a Python step per line.
-- rail_handle_of_digest_v1 takes d = sha256(uuid_send(id)), so a statement line
-- hashes its reference once (pass a column, not an expression, so the planner
-- inlines it: one expression without FROM).
CREATE FUNCTION rail_handle_of_digest_v1(p_kind text, d bytea) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_kind
        WHEN 'mtn_momo' THEN encode(set_byte(set_byte(substring(d FROM 1 FOR 16), 6, (get_byte(d, 6) & 15) | 64),
                                             8, (get_byte(d, 8) & 63) | 128), 'hex')::uuid::text
        WHEN 'airtel_money' THEN left(encode(d, 'hex'), 30)
        WHEN 'iso20022' THEN left(encode(d, 'hex'), 35)
        ELSE encode(d, 'hex') END
$$;

CREATE FUNCTION rail_handle_v1(p_kind text, p_id uuid) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT rail_handle_of_digest_v1(p_kind, sha256(uuid_send(p_id)))
$$;

-- ISO 4217 minor-unit exponent, as symphony/money.py defines it.
CREATE FUNCTION currency_exponent_v1(p_currency text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_currency IN ('BIF', 'CLP', 'DJF', 'GNF', 'ISK', 'JPY', 'KMF', 'KRW', 'PYG', 'RWF', 'UGX', 'UYI',
                            'VND', 'VUV', 'XAF', 'XOF', 'XPF') THEN 0
        WHEN p_currency IN ('BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND') THEN 3
        ELSE 2 END
$$;
