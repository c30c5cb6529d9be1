-- One ISO 4217 table, in one place (symphony/money.py, from the `iso4217`
-- package). Migration 0100 kept a second copy in SQL, currency_exponent_v1,
-- which already disagreed with the standard (CLF and UYW have 4 decimals) and
-- would drift whenever the package brings a new table. Reconciliation now passes
-- the package's table to its queries as a parameter (repair/reconcile.sql), so
-- nothing calls the SQL copy any more: it is dropped rather than kept in step.
DROP FUNCTION currency_exponent_v1(text);
