-- The verifiable log in PostgreSQL (issue 13; owned by the forwarder, read by
-- `symphony proof`, audit and the dashboard; migrations 0120-0129).
--
-- One RFC 9162 Merkle tree per journal stream epoch (node_id, stream_id,
-- epoch): leaf i is the canonical bytes of record seq i + 1. The forwarder
-- computes the tree from the records it ships, in the batch's transaction, and
-- keeps its nodes as C2SP tlog-tiles (height 8) in log_tiles. The journal's
-- CHECKPOINT records (type 6, journal/FORMAT.md F17) are shipped like any
-- record; each one whose signed root equals the root the forwarder computed is
-- also kept in log_checkpoints, and the witnesses' cosignatures of it in
-- log_cosignatures.

-- CHECKPOINT records are rows of ingress_attestations like any other record.
ALTER TABLE ingress_attestations DROP CONSTRAINT ingress_attestations_record_type_check;
ALTER TABLE ingress_attestations
    ADD CONSTRAINT ingress_attestations_record_type_check CHECK (record_type BETWEEN 1 AND 6);

-- A checkpoint the node signed and the forwarder checked against its own tree:
-- tree_size = the CHECKPOINT record's seq - 1, root = the root of the records
-- shipped before it, note = the signed note (C2SP signed-note), verbatim.
-- Append-only evidence.
CREATE TABLE log_checkpoints (
    node_id     text        NOT NULL,
    stream_id   integer     NOT NULL CHECK (stream_id BETWEEN 0 AND 1023),
    epoch       bytea       NOT NULL CHECK (length(epoch) = 16),
    tree_size   bigint      NOT NULL CHECK (tree_size >= 0),
    root        bytea       NOT NULL CHECK (length(root) = 32),
    origin      text        NOT NULL,
    note        text        NOT NULL,
    record_seq  bigint      NOT NULL CHECK (record_seq = tree_size + 1),
    cut_at      timestamptz NOT NULL,
    shipped_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, stream_id, epoch, tree_size)
);

CREATE INDEX log_checkpoints_shipped_idx ON log_checkpoints (shipped_at);

CREATE TRIGGER log_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON log_checkpoints
    FOR EACH ROW EXECUTE FUNCTION refuse_change_v1();

CREATE TRIGGER log_checkpoints_no_truncate
    BEFORE TRUNCATE ON log_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_v1();

-- A witness's cosignature of a checkpoint (c2sp.org/tlog-cosignature, type
-- 0x04): `line` is the note signature line to append to the checkpoint's note,
-- verified against the witness's configured key before it is stored;
-- cosigned_at is the time the witness signed (seconds since the Unix epoch).
CREATE TABLE log_cosignatures (
    node_id     text        NOT NULL,
    stream_id   integer     NOT NULL,
    epoch       bytea       NOT NULL,
    tree_size   bigint      NOT NULL,
    witness     text        NOT NULL CHECK (witness <> ''),
    line        text        NOT NULL CHECK (line LIKE '— % %' AND right(line, 1) = E'\n'),
    cosigned_at bigint      NOT NULL CHECK (cosigned_at >= 0),
    stored_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, stream_id, epoch, tree_size, witness),
    FOREIGN KEY (node_id, stream_id, epoch, tree_size) REFERENCES log_checkpoints
);

CREATE TRIGGER log_cosignatures_append_only
    BEFORE UPDATE OR DELETE ON log_cosignatures
    FOR EACH ROW EXECUTE FUNCTION refuse_change_v1();

CREATE TRIGGER log_cosignatures_no_truncate
    BEFORE TRUNCATE ON log_cosignatures
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_v1();

-- Tree nodes as tiles (c2sp.org/tlog-tiles, height 8): tile `tile_index` at
-- tile level `level` holds the hashes of the nodes at tree level 8*level with
-- indices 256*tile_index .. + width - 1, concatenated. Derived data (a tree
-- recomputed from the rows of ingress_attestations gives the same tiles), kept
-- so a proof reads a handful of rows. A full tile (width 256) never changes;
-- the right-edge partial tile of a level is replaced as it grows, only by a
-- longer tile that starts with the same hashes.
CREATE TABLE log_tiles (
    node_id    text     NOT NULL,
    stream_id  integer  NOT NULL CHECK (stream_id BETWEEN 0 AND 1023),
    epoch      bytea    NOT NULL CHECK (length(epoch) = 16),
    level      smallint NOT NULL CHECK (level BETWEEN 0 AND 7),
    tile_index bigint   NOT NULL CHECK (tile_index >= 0),
    width      smallint NOT NULL CHECK (width BETWEEN 1 AND 256),
    hashes     bytea    NOT NULL CHECK (length(hashes) = 32 * width),
    PRIMARY KEY (node_id, stream_id, epoch, level, tile_index)
);

CREATE FUNCTION log_tiles_only_grow_v1() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.node_id <> OLD.node_id OR NEW.stream_id <> OLD.stream_id OR NEW.epoch <> OLD.epoch
       OR NEW.level <> OLD.level OR NEW.tile_index <> OLD.tile_index THEN
        RAISE EXCEPTION 'log_tiles: a tile cannot move';
    END IF;
    IF OLD.width = 256 AND NEW.hashes <> OLD.hashes THEN
        RAISE EXCEPTION 'log_tiles: full tile (%, %, %) is immutable', OLD.stream_id, OLD.level, OLD.tile_index;
    END IF;
    IF NEW.width < OLD.width OR substring(NEW.hashes FROM 1 FOR length(OLD.hashes)) <> OLD.hashes THEN
        RAISE EXCEPTION 'log_tiles: tile (%, %, %) may only grow at its right edge',
            OLD.stream_id, OLD.level, OLD.tile_index;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER log_tiles_only_grow
    BEFORE UPDATE ON log_tiles
    FOR EACH ROW EXECUTE FUNCTION log_tiles_only_grow_v1();

-- The witnesses as the forwarder's publisher last saw them, per origin: the
-- tree size the witness last cosigned (what the next add-checkpoint starts
-- from), and the last refusal. Small mutable state; the cosignatures
-- themselves are in log_cosignatures.
CREATE TABLE log_witness_state (
    witness        text        NOT NULL,
    origin         text        NOT NULL,
    node_id        text        NOT NULL,
    stream_id      integer     NOT NULL,
    epoch          bytea       NOT NULL,
    cosigned_size  bigint      NOT NULL DEFAULT 0 CHECK (cosigned_size >= 0),
    refused_size   bigint,
    refused_reason text,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (witness, origin)
);

INSERT INTO incident_kinds (kind, description) VALUES
    ('CHECKPOINT_MISMATCH', 'a signed checkpoint in the journal does not match the Merkle tree of the records shipped'),
    ('CHECKPOINT_REFUSED', 'a witness refused a checkpoint of this log (rollback, fork or rewritten history)');
