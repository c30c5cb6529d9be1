-- DROPPED records (record_type 5) by time, for repair's CLOCK_BACKWARDS
-- detector: a sidecar that refuses requests because its clock stepped back
-- counts them under the reason `clock_backwards` in the DROPPED record of the
-- window (ingress_sidecar/handler.py, symphony/attestation.py DroppedBody).
-- DROPPED records are a tiny share of the rows, so a partial index lets the
-- detector read them each cycle without scanning the window's INGRESS and
-- OUTCOME rows. On the partitioned table this creates the index on every
-- partition, present and future.
CREATE INDEX ingress_attestations_dropped_idx
    ON ingress_attestations (recorded_at) WHERE record_type = 5;
