-- Cell parsers the rails' CSV statement readers share (repair/reconcile.sql:
-- lines_from_mtn_momo_csv, lines_from_airtel_money_csv): one place for what a
-- reference naming an outbox row looks like, and for an amount in major units
-- turned into minor units. Plain IMMUTABLE SQL expressions, so the planner
-- inlines them as if they were written out in each query.

-- The outbox id a statement's reference cell names (a UUID in its text form),
-- NULL when the cell names none.
CREATE FUNCTION outbox_id_of_reference_v1(p_reference text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_reference ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
                THEN p_reference::uuid END
$$;

-- An amount in major units (decimal text) in minor units of its currency
-- (currency_exponent_v1, migration 0100): not a whole number when the amount
-- has more decimals than the currency has.
CREATE FUNCTION minor_units_of_v1(p_amount text, p_currency text) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_amount::numeric * CASE currency_exponent_v1(p_currency) WHEN 0 THEN 1 WHEN 3 THEN 1000 ELSE 100 END
$$;
