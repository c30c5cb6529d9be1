-- Grants for the tables added after the per-daemon roles (0042). Each daemon
-- writes only what it owns: the forwarder records a replaced stream's ended
-- epoch (0050), the relayer publishes its rails' breaker states (0086).
-- Repair and the dashboard read everything (0042's default privileges cover
-- tables created later by the same migrating role; said again here so this
-- file alone tells who reads what).
GRANT SELECT, INSERT ON journal_epochs TO symphony_forwarder;
GRANT SELECT, INSERT, UPDATE, DELETE ON rail_breaker_reports TO symphony_relayer;
GRANT SELECT ON journal_epochs, rail_breaker_reports, participant_admin_events TO symphony_repair, symphony_dashboard;
