-- name: participants_all
-- Every participant's kill-switch state: the sidecar's policy cache is
-- rebuilt from this on start and on every poll (the polling fallback).
SELECT participant_id, status, policy_version, updated_at
FROM participants;

-- name: participant_one
-- One participant, refreshed when a NOTIFY on symphony_participants names it.
SELECT participant_id, status, policy_version, updated_at
FROM participants
WHERE participant_id = $1;
