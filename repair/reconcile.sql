-- Reconciliation of one rail statement (repair/reconcile.py). The statement's
-- lines are COPYed into the session's temporary table recon_lines first.

-- name: create_lines
-- One row per statement line; dropped at the end of the session.
CREATE TEMPORARY TABLE IF NOT EXISTS recon_lines (
    line_no         bigint NOT NULL,
    handle          text   NOT NULL,
    outbox_id       uuid,
    expected_handle text,
    amount_minor    bigint NOT NULL,
    currency        text   NOT NULL,
    account         text   NOT NULL,
    rail_txn        text   NOT NULL,
    booked_on       date
) ON COMMIT PRESERVE ROWS;

-- name: create_raw
-- The statement's CSV cells as the rail wrote them (COPY ... CSV HEADER), in file order.
CREATE TEMPORARY TABLE IF NOT EXISTS recon_raw (
    line_no bigint GENERATED ALWAYS AS IDENTITY (START WITH 2),
    c1 text, c2 text, c3 text, c4 text, c5 text, c6 text, c7 text, c8 text, c9 text
) ON COMMIT PRESERVE ROWS;

-- name: clear_lines
TRUNCATE recon_lines;

-- name: clear_raw
TRUNCATE recon_raw RESTART IDENTITY;

-- The lines_from_* queries take the ISO 4217 table of symphony.money (the `iso4217`
-- package) as $1 (codes) and $2 (minor units per major unit, 10^exponent): one table,
-- in Python. A currency it does not list leaves the amount NULL, which recon_lines
-- refuses (the statement is not readable), as does an amount with more decimals than
-- its currency has. The reference names the outbox row; the handle it should carry is
-- rail_handle_of_digest_v1 (migration 0100). OFFSET 0 keeps the inner selects from
-- being flattened, so each cell is parsed once per line. A reference names an outbox
-- row when it is a uuid in the canonical form (8-4-4-4-12 hex digits, either case; the
-- camt.053 also 32 hex digits): pg_input_is_valid plus a comparison with the uuid's
-- own text is exactly that test, at a fifth of the cost of a regular expression.

-- name: lines_from_mtn_momo_csv
-- Id, External Transaction Id, Reference Id, Date, Status, Type, To, Amount, Currency;
-- SUCCESSFUL lines only.
INSERT INTO recon_lines (line_no, handle, outbox_id, expected_handle, amount_minor, currency, account, rail_txn,
                         booked_on)
SELECT line_no, handle, outbox_id, rail_handle_of_digest_v1('mtn_momo', digest),
       CASE WHEN minor = trunc(minor) THEN minor::bigint END, currency, account, rail_txn, booked_on
FROM (SELECT *, sha256(uuid_send(outbox_id)) AS digest FROM (SELECT line_no, c3 AS handle, CASE WHEN length(c2) = 36 AND pg_input_is_valid(c2, 'uuid') AND c2::uuid::text = lower(c2)
                  THEN c2::uuid END AS outbox_id,
             c8::numeric * unit.factor AS minor,
             c9 AS currency, c7 AS account, c1 AS rail_txn, left(c4, 10)::date AS booked_on
      FROM recon_raw LEFT JOIN unnest($1::text[], $2::bigint[]) AS unit (code, factor) ON unit.code = c9
      WHERE c5 = 'SUCCESSFUL' OFFSET 0) AS cells OFFSET 0) AS line;

-- name: lines_from_airtel_money_csv
-- Transaction ID, Airtel Money ID, Reference, Transaction Date, Status, MSISDN, Amount, Currency;
-- TS lines only.
INSERT INTO recon_lines (line_no, handle, outbox_id, expected_handle, amount_minor, currency, account, rail_txn,
                         booked_on)
SELECT line_no, handle, outbox_id, rail_handle_of_digest_v1('airtel_money', digest),
       CASE WHEN minor = trunc(minor) THEN minor::bigint END, currency, account, rail_txn, booked_on
FROM (SELECT *, sha256(uuid_send(outbox_id)) AS digest FROM (SELECT line_no, c1 AS handle, CASE WHEN length(c3) = 36 AND pg_input_is_valid(c3, 'uuid') AND c3::uuid::text = lower(c3)
                  THEN c3::uuid END AS outbox_id,
             c7::numeric * unit.factor AS minor,
             c8 AS currency, c6 AS account, c2 AS rail_txn, left(c4, 10)::date AS booked_on
      FROM recon_raw LEFT JOIN unnest($1::text[], $2::bigint[]) AS unit (code, factor) ON unit.code = c8
      WHERE c5 = 'TS' OFFSET 0) AS cells OFFSET 0) AS line;

-- name: lines_from_iso20022
-- The cells repair/reconcile.py takes from each camt.053 <Ntry>, in document order:
-- handle (TxId), EndToEndId, signed amount, currency, creditor account, AcctSvcrRef,
-- booking date. recon_raw numbers rows from 2 (a CSV's first line is its header):
-- entry n is row n + 1. The EndToEndId names the outbox row when it is its uuid as 32
-- hex digits (what the adapter sends) or in the hyphenated form.
INSERT INTO recon_lines (line_no, handle, outbox_id, expected_handle, amount_minor, currency, account, rail_txn,
                         booked_on)
SELECT line_no, handle, outbox_id, rail_handle_of_digest_v1('iso20022', digest),
       CASE WHEN minor = trunc(minor) THEN minor::bigint END, currency, account, rail_txn, booked_on
FROM (SELECT *, sha256(uuid_send(outbox_id)) AS digest FROM (SELECT line_no - 1 AS line_no, c1 AS handle,
             CASE WHEN length(c2) IN (32, 36) AND pg_input_is_valid(c2, 'uuid')
                       AND CASE length(c2) WHEN 32 THEN replace(c2::uuid::text, '-', '') ELSE c2::uuid::text END
                           = lower(c2)
                  THEN c2::uuid END AS outbox_id,
             c3::numeric * unit.factor AS minor,
             c4 AS currency, c5 AS account, c6 AS rail_txn, c7::date AS booked_on
      FROM recon_raw LEFT JOIN unnest($1::text[], $2::bigint[]) AS unit (code, factor) ON unit.code = c4
      OFFSET 0) AS cells OFFSET 0) AS line;

-- name: index_lines
CREATE INDEX IF NOT EXISTS recon_lines_outbox_idx ON recon_lines (outbox_id);

-- name: analyze_lines
-- Statistics for the planner: the temporary table has none until analysed.
ANALYZE recon_lines;

-- name: findings
-- Every finding of the statement for rail $1, as (kind, dedup_key, severity,
-- participant_id, subject, evidence). Each line is matched to the outbox row
-- its reference names, if that row is of rail $1 and the line's handle is the
-- row's derived handle (computed by the loader from symphony.rail_handles).
-- The first line of a handle is its execution; any later line of the same
-- handle is a second execution. SUCCESS rows of rail $1 completed inside the
-- statement's booking days that no line shows are missing from the rail.
WITH lines AS (
    SELECT l.*, o.id AS row_id, o.status::text AS row_status, o.participant_id,
           (o.payload->>'amount_minor')::bigint AS row_amount, o.payload->>'currency' AS row_currency,
           o.payload->>'destination_account' AS row_account,
           row_number() OVER (PARTITION BY l.handle ORDER BY l.line_no) AS nth
    FROM recon_lines l
    LEFT JOIN payment_outbox o ON o.id = l.outbox_id AND o.rail = $1 AND l.handle = l.expected_handle
),
period AS (
    SELECT min(booked_on) AS first_day, max(booked_on) AS last_day FROM recon_lines
)
SELECT 'RAIL_UNMATCHED' AS kind, $1 || ':' || handle || ':' || rail_txn AS dedup_key, 'CRITICAL' AS severity,
       NULL::text AS participant_id,
       format('%s moved %s %s to %s (rail txn %s) with no outbox row of that rail and handle', $1,
              amount_minor, currency, account, rail_txn) AS subject,
       jsonb_build_object('rail', $1, 'reason', 'NO_OUTBOX_ROW', 'line', line_no, 'handle', handle,
                          'reference', outbox_id, 'amount_minor', amount_minor, 'currency', currency,
                          'account', account, 'rail_txn', rail_txn) AS evidence
FROM lines WHERE row_id IS NULL
UNION ALL
SELECT 'RAIL_UNMATCHED', $1 || ':' || handle || ':' || rail_txn, 'CRITICAL', participant_id,
       format('%s executed handle %s again (execution %s, rail txn %s): a second payment for outbox %s', $1,
              handle, nth, rail_txn, row_id),
       jsonb_build_object('rail', $1, 'reason', 'DOUBLE_EXECUTION', 'line', line_no, 'handle', handle,
                          'outbox_id', row_id, 'execution', nth, 'amount_minor', amount_minor,
                          'currency', currency, 'rail_txn', rail_txn)
FROM lines WHERE row_id IS NOT NULL AND nth > 1
UNION ALL
SELECT 'RAIL_MISMATCH', $1 || ':' || row_id, 'CRITICAL', participant_id,
       CASE WHEN row_status = 'FAILED'
            THEN format('%s executed outbox %s (rail txn %s), which Symphony holds as FAILED', $1, row_id, rail_txn)
            ELSE format('%s executed outbox %s as %s %s to %s; the outbox says %s %s to %s', $1, row_id,
                        amount_minor, currency, account, row_amount, row_currency, row_account) END,
       jsonb_build_object('rail', $1, 'reason', CASE WHEN row_status = 'FAILED' THEN 'EXECUTED_BUT_FAILED'
                                                     ELSE 'AMOUNT_CURRENCY_OR_ACCOUNT' END,
                          'line', line_no, 'handle', handle, 'outbox_id', row_id, 'rail_txn', rail_txn,
                          'rail_amount_minor', amount_minor, 'rail_currency', currency, 'rail_account', account,
                          'outbox_amount_minor', row_amount, 'outbox_currency', row_currency,
                          'outbox_account', row_account, 'outbox_status', row_status)
FROM lines
WHERE row_id IS NOT NULL AND nth = 1
  AND (row_status = 'FAILED' OR amount_minor IS DISTINCT FROM row_amount OR currency IS DISTINCT FROM row_currency
       OR account IS DISTINCT FROM row_account)
UNION ALL
SELECT 'RAIL_UNMATCHED', $1 || ':missing:' || o.id, 'HIGH', o.participant_id,
       format('outbox %s is SUCCESS on %s but its statement for %s..%s does not show it', o.id, $1,
              p.first_day, p.last_day),
       jsonb_build_object('rail', $1, 'reason', 'MISSING_FROM_STATEMENT', 'outbox_id', o.id,
                          'amount_minor', (o.payload->>'amount_minor')::bigint, 'currency', o.payload->>'currency',
                          'completed_at', o.completed_at, 'rail_reference', o.rail_reference)
FROM payment_outbox o, period p
WHERE o.rail = $1 AND o.status = 'SUCCESS'
  AND o.completed_at >= p.first_day::timestamptz AND o.completed_at < (p.last_day + 1)::timestamptz
  AND NOT EXISTS (SELECT 1 FROM recon_lines l WHERE l.outbox_id = o.id AND l.handle = l.expected_handle);

-- name: counts
-- Lines, and lines matched to a row of rail $1 by handle.
SELECT count(*) AS lines, count(o.id) AS matched, min(l.booked_on) AS period_from, max(l.booked_on) AS period_to
FROM recon_lines l
LEFT JOIN payment_outbox o ON o.id = l.outbox_id AND o.rail = $1 AND l.handle = l.expected_handle;

-- name: session_memory
-- The matching sorts every line by handle: give this session room to do it in memory.
SET work_mem = '128MB';

-- name: session_temp_buffers
-- Room for the temporary tables in memory; PostgreSQL accepts it only before the
-- session's first use of a temporary table (the caller ignores a refusal).
SET temp_buffers = '128MB';

-- name: statement_seen
SELECT ingested_at FROM rail_statements WHERE statement_sha256 = $1;

-- name: record_statement
INSERT INTO rail_statements (statement_sha256, rail, source, lines, matched, unmatched, mismatched, missing,
                             period_from, period_to)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (statement_sha256) DO NOTHING;

-- name: summary
-- For the dashboard and the evidence bundle: statements ingested, their lines,
-- and the open incidents of the two kinds.
SELECT (SELECT count(*) FROM rail_statements) AS statements,
       (SELECT coalesce(sum(lines), 0) FROM rail_statements)::bigint AS lines,
       (SELECT coalesce(sum(matched), 0) FROM rail_statements)::bigint AS matched,
       (SELECT count(*) FROM repair_incidents WHERE kind = 'RAIL_UNMATCHED' AND resolved_at IS NULL) AS unmatched_open,
       (SELECT count(*) FROM repair_incidents WHERE kind = 'RAIL_MISMATCH' AND resolved_at IS NULL) AS mismatched_open,
       (SELECT count(*) FROM repair_incidents
        WHERE kind IN ('RAIL_UNMATCHED', 'RAIL_MISMATCH') AND severity = 'CRITICAL' AND resolved_at IS NULL)
           AS critical_open;
