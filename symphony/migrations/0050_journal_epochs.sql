-- A journal stream that is replaced (its directory wiped and a writer started
-- again, so it restarts at seq 1 with a new random epoch) is a new stream with
-- the same (node_id, stream_id). The forwarder notices it while running, opens
-- a STREAM_REPLACED incident, records where the old epoch ended, and ships the
-- new epoch from seq 1. Owned by the forwarder and audit (migrations 0050-0059).

-- The epoch a row belongs to. NULL on rows shipped before this migration: they
-- belong to the stream's first epoch (the oldest journal_epochs row of the
-- stream, or the checkpoint's epoch when the stream never changed epoch). The
-- append-only trigger forbids back-filling, and nothing needs it. The primary
-- key is left as it is (rebuilding it on a large partitioned table would lock
-- it for long): as before, uniqueness of (node, stream, epoch, seq) is kept by
-- the forwarder under the checkpoint row's lock and proven by verify-chain,
-- which verifies each epoch on its own.
ALTER TABLE ingress_attestations
    ADD COLUMN epoch bytea CHECK (epoch IS NULL OR length(epoch) = 16);

-- Where each ended epoch of a stream stopped, append-only: last_seq/last_hash
-- is what PostgreSQL holds of it (the checkpoint when it ended), journal_head_seq
-- the newest seq the forwarder had seen in the journal before it went (records
-- last_seq+1 .. journal_head_seq were never shipped: lost with the journal).
CREATE TABLE journal_epochs (
    node_id          text    NOT NULL,
    stream_id        integer NOT NULL CHECK (stream_id BETWEEN 0 AND 1023),
    epoch            bytea   NOT NULL CHECK (length(epoch) = 16),
    last_seq         bigint  NOT NULL CHECK (last_seq >= 0),
    last_hash        bytea   NOT NULL CHECK (length(last_hash) = 32),
    records_shipped  bigint  NOT NULL CHECK (records_shipped >= 0),
    journal_head_seq bigint  NOT NULL CHECK (journal_head_seq >= last_seq),
    successor_epoch  bytea   NOT NULL CHECK (length(successor_epoch) = 16 AND successor_epoch <> epoch),
    reason           text    NOT NULL,
    ended_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, stream_id, epoch)
);

CREATE TRIGGER journal_epochs_append_only
    BEFORE UPDATE OR DELETE ON journal_epochs
    FOR EACH ROW EXECUTE FUNCTION refuse_change_v1();

CREATE TRIGGER journal_epochs_no_truncate
    BEFORE TRUNCATE ON journal_epochs
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_v1();

INSERT INTO incident_kinds (kind, description) VALUES
    ('STREAM_REPLACED', 'a journal stream restarted with a new epoch while its old epoch was being shipped'),
    ('STREAM_REWOUND', 'a journal stream''s head fell behind what PostgreSQL already checkpointed of it');
