-- The newest checkpoint that covers a record, and a checkpoint's cosignature
-- lines, as SQL functions: inclusion proofs by attestation and by sequence
-- number (repair/proofs.sql) and the consistency proof's checkpoints read them
-- the same way, written once here.
--
-- Both run with the caller's rights (SECURITY INVOKER, the default): a caller
-- still needs SELECT on log_checkpoints and log_cosignatures (0121). Plain
-- STABLE SQL, so the planner inlines log_checkpoint_covering_v1 into the
-- query that calls it as if the join were written out.

-- The cosignature lines of checkpoint (node, stream, epoch, tree_size),
-- concatenated in witness order: what follows the checkpoint's note in a
-- cosigned checkpoint ('' when no witness has cosigned it).
CREATE FUNCTION log_cosignatures_of_v1(p_node_id text, p_stream_id integer, p_epoch bytea, p_tree_size bigint)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(string_agg(s.line, '' ORDER BY s.witness), '')
    FROM log_cosignatures s
    WHERE s.node_id = p_node_id AND s.stream_id = p_stream_id AND s.epoch = p_epoch
      AND s.tree_size = p_tree_size
$$;

-- The newest checkpoint of stream (node, stream, epoch) that covers record
-- p_seq (tree_size >= p_seq), with its cosignatures; only a cosigned one
-- unless p_unwitnessed. No row: none covers it yet.
CREATE FUNCTION log_checkpoint_covering_v1(p_node_id text, p_stream_id integer, p_epoch bytea, p_seq bigint,
                                           p_unwitnessed boolean)
RETURNS TABLE (tree_size bigint, root bytea, origin text, note text, cosignatures text)
LANGUAGE sql STABLE AS $$
    SELECT c.tree_size, c.root, c.origin, c.note,
           log_cosignatures_of_v1(c.node_id, c.stream_id, c.epoch, c.tree_size)
    FROM log_checkpoints c
    WHERE c.node_id = p_node_id AND c.stream_id = p_stream_id AND c.epoch = p_epoch AND c.tree_size >= p_seq
      AND (p_unwitnessed OR EXISTS (SELECT 1 FROM log_cosignatures s
                                    WHERE s.node_id = c.node_id AND s.stream_id = c.stream_id
                                      AND s.epoch = c.epoch AND s.tree_size = c.tree_size))
    ORDER BY c.tree_size DESC
    LIMIT 1
$$;

-- Repair (`symphony proof`) and the dashboard (its proof API) read proofs.
REVOKE ALL ON FUNCTION log_cosignatures_of_v1(text, integer, bytea, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION log_checkpoint_covering_v1(text, integer, bytea, bigint, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION log_cosignatures_of_v1(text, integer, bytea, bigint)
    TO symphony_repair, symphony_dashboard;
GRANT EXECUTE ON FUNCTION log_checkpoint_covering_v1(text, integer, bytea, bigint, boolean)
    TO symphony_repair, symphony_dashboard;
