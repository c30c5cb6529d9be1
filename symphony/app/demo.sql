-- Demo helpers (symphony/app/demo.py).

-- name: ensure_participant
-- Register a demo participant ($1 id, $2 display name) once; ACTIVE with
-- policy_version 1 by the table's defaults.
INSERT INTO participants (participant_id, display_name) VALUES ($1, $2) ON CONFLICT DO NOTHING

-- name: policy_version
-- The current policy_version of participant $1 (a demo token carries it).
SELECT policy_version FROM participants WHERE participant_id = $1
