-- Retention that cannot hide deletion (issue 13 item 7; migrations 0140-0144).
--
-- The forwarder deletes a journal segment only when a witnessed checkpoint
-- (one with the configured number of witness cosignatures in
-- log_cosignatures, or the node's own signed checkpoint when no witness is
-- required) covers the segment's last record. Each such release is recorded
-- here and, first, in the stream directory's RELEASES file (journal/FORMAT.md
-- F18): the range, the last released record's leaf and chain hashes, the tree's
-- frontier at the end of the range, an inclusion proof of that last leaf, and
-- the covering checkpoint verbatim with its cosignatures. `symphony verify
-- journal` anchors a copy whose first segments are gone on these entries.
-- Append-only evidence: rows are never changed or removed.
CREATE TABLE log_releases (
    node_id         text        NOT NULL,
    stream_id       integer     NOT NULL CHECK (stream_id BETWEEN 0 AND 1023),
    epoch           bytea       NOT NULL CHECK (length(epoch) = 16),
    first_seq       bigint      NOT NULL CHECK (first_seq >= 1),
    last_seq        bigint      NOT NULL,
    last_leaf_hash  bytea       NOT NULL CHECK (length(last_leaf_hash) = 32),
    last_chain_hash bytea       NOT NULL CHECK (length(last_chain_hash) = 32),
    frontier        bytea       NOT NULL CHECK (length(frontier) % 32 = 0),
    inclusion_proof bytea       NOT NULL CHECK (length(inclusion_proof) % 32 = 0),
    checkpoint_size bigint      NOT NULL,
    checkpoint      text        NOT NULL,
    released_at     timestamptz NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, stream_id, epoch, first_seq),
    CHECK (last_seq >= first_seq),
    CHECK (checkpoint_size >= last_seq),
    FOREIGN KEY (node_id, stream_id, epoch, checkpoint_size) REFERENCES log_checkpoints
);

CREATE TRIGGER log_releases_append_only
    BEFORE UPDATE OR DELETE ON log_releases
    FOR EACH ROW EXECUTE FUNCTION refuse_change_v1();

SELECT evidence_refuse_truncate_v1('log_releases');

GRANT SELECT, INSERT ON log_releases TO symphony_forwarder;
GRANT SELECT ON log_releases TO symphony_repair, symphony_dashboard;
