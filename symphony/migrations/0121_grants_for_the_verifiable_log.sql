-- Grants for the verifiable log's tables (0120), per daemon role (0042).
-- The forwarder keeps the tree (tiles: the right edge grows, a rebuild deletes
-- first), records checked checkpoints and cosignatures (append-only by
-- trigger) and the witnesses' last sizes; it reads the shipped rows and the
-- ended epochs when it recomputes a tree. Repair (the `proof` command, audits)
-- and the dashboard (its proof API) read.
GRANT SELECT, INSERT ON log_checkpoints, log_cosignatures TO symphony_forwarder;
GRANT SELECT, INSERT, UPDATE, DELETE ON log_tiles, log_witness_state TO symphony_forwarder;
GRANT SELECT ON ingress_attestations, journal_epochs TO symphony_forwarder;
GRANT SELECT ON log_checkpoints, log_cosignatures, log_tiles, log_witness_state
    TO symphony_repair, symphony_dashboard;
