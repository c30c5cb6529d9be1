-- Archiving an attestation partition (`symphony audit archive`): the rows are
-- exported and one signed attestation_archives row per stream records what left
-- (see symphony/archive_signature.py for the exact signed bytes). Only then may
-- the partition go, through this function, which refuses a partition holding a
-- stream no archive row covers.

CREATE FUNCTION drop_archived_partition_v1(p_partition text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    uncovered integer;
BEGIN
    IF p_partition !~ '^ingress_attestations_p[0-9]{8}$' THEN
        RAISE EXCEPTION 'not an attestation partition: %', p_partition;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                   WHERE i.inhparent = 'ingress_attestations'::regclass AND c.relname = p_partition) THEN
        RAISE EXCEPTION 'no partition % of ingress_attestations', p_partition;
    END IF;
    EXECUTE format(
        'SELECT count(*) FROM (SELECT node_id, stream_id, max(stream_seq) AS last_seq FROM %I '
        'GROUP BY node_id, stream_id) s WHERE NOT EXISTS (SELECT 1 FROM attestation_archives a '
        'WHERE a.partition = %L AND a.node_id = s.node_id AND a.stream_id = s.stream_id '
        'AND a.last_seq >= s.last_seq)', p_partition, p_partition) INTO uncovered;
    IF uncovered > 0 THEN
        RAISE EXCEPTION 'partition % holds % stream(s) no archive row covers', p_partition, uncovered;
    END IF;
    EXECUTE format('ALTER TABLE ingress_attestations DETACH PARTITION %I', p_partition);
    EXECUTE format('DROP TABLE %I', p_partition);
END;
$$;
