-- Grants for reconciliation (0100): repair ingests the rails' statements on its
-- cycle (reconcile_statement_dir) and records each one in rail_statements; the
-- dashboard counts them. Repair's own incidents go through open_incident_v1,
-- granted in 0042. (Temporary tables for the COPY need only the database's
-- default TEMPORARY privilege.)
GRANT SELECT, INSERT ON rail_statements TO symphony_repair;
GRANT SELECT ON rail_statements TO symphony_dashboard;
