-- Queries of the evidence bundle's log anchors (repair/evidence.py).

-- name: evidence_table_exists
-- Whether a table of the verifiable log exists yet ($1: its name).
SELECT to_regclass($1::text) IS NOT NULL AS present;

-- name: evidence_latest_checkpoints
-- The latest *witnessed* checkpoint of every journal stream epoch: the largest
-- tree a witness cosigned, as the forwarder stored it in log_checkpoints (TLOG
-- design, decision 5), its note followed by every stored cosignature line (the
-- note as a C2SP verifier reads it), and the witnesses' names.
WITH witnessed AS (
    SELECT node_id, stream_id, epoch, max(tree_size) AS tree_size
    FROM log_cosignatures
    GROUP BY node_id, stream_id, epoch
)
SELECT c.node_id, c.stream_id, encode(c.epoch, 'hex') AS epoch, c.tree_size, encode(c.root, 'hex') AS root,
       c.note || w.lines AS note, w.witnesses, c.cut_at
FROM witnessed x
JOIN log_checkpoints c
  ON c.node_id = x.node_id AND c.stream_id = x.stream_id AND c.epoch = x.epoch AND c.tree_size = x.tree_size
JOIN LATERAL (
    SELECT string_agg(s.line, '' ORDER BY s.witness) AS lines, array_agg(s.witness ORDER BY s.witness) AS witnesses
    FROM log_cosignatures s
    WHERE s.node_id = c.node_id AND s.stream_id = c.stream_id AND s.epoch = c.epoch AND s.tree_size = c.tree_size
) w ON true
ORDER BY c.node_id, c.stream_id, c.epoch;

-- name: evidence_unwitnessed_streams
-- Stream epochs with checkpoints but none cosigned by a witness (no witness is
-- configured, or it refused or never answered): named so none is left out silently.
SELECT c.node_id, c.stream_id, encode(c.epoch, 'hex') AS epoch, max(c.tree_size) AS latest_tree_size
FROM log_checkpoints c
GROUP BY c.node_id, c.stream_id, c.epoch
HAVING NOT EXISTS (SELECT 1 FROM log_cosignatures s
                   WHERE s.node_id = c.node_id AND s.stream_id = c.stream_id AND s.epoch = c.epoch)
ORDER BY c.node_id, c.stream_id, c.epoch;

-- name: evidence_checkpoint_notes
-- The checkpoints a gap statement names ($1 origins, $2 tree sizes, pairwise),
-- each note followed by its stored cosignature lines (a complete C2SP note).
SELECT c.origin, c.tree_size, c.note || coalesce(string_agg(s.line, '' ORDER BY s.witness), '') AS note
FROM log_checkpoints c
JOIN unnest($1::text[], $2::bigint[]) AS named(origin, tree_size)
  ON named.origin = c.origin AND named.tree_size = c.tree_size
LEFT JOIN log_cosignatures s
  ON s.node_id = c.node_id AND s.stream_id = c.stream_id AND s.epoch = c.epoch AND s.tree_size = c.tree_size
GROUP BY c.node_id, c.stream_id, c.epoch, c.tree_size, c.origin, c.note
ORDER BY c.origin;
