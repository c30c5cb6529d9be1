-- Participant administration (`symphony participant`, repair/participant_cli.py)
-- and what the dashboard shows of it. Every change goes through
-- `participant_change`: the participant row and its participant_admin_events
-- row are written by one statement, so there is never one without the other.

-- name: participant_list
-- Every participant with its status, policy version and latest administrative
-- change (if any), by id.
SELECT p.participant_id, p.display_name, p.status, p.policy_version, p.updated_at,
       e.action AS last_action, e.operator AS last_operator, e.occurred_at AS last_action_at
FROM participants p
LEFT JOIN LATERAL (
    SELECT action, operator, occurred_at FROM participant_admin_events a
    WHERE a.participant_id = p.participant_id
    ORDER BY event_id DESC LIMIT 1
) e ON true
ORDER BY p.participant_id;

-- name: participant_get
-- One participant ($1), or no row.
SELECT participant_id, display_name, status, policy_version, per_payment_limit_minor, window_limit_minor,
       window_seconds, created_at, updated_at
FROM participants
WHERE participant_id = $1;

-- name: participant_events
-- The administrative history of participant $1, newest first, at most $2 rows;
-- $1 NULL for every participant's.
SELECT event_id, participant_id, action, operator, database_role, reason, old_status, new_status,
       old_policy_version, new_policy_version, occurred_at
FROM participant_admin_events
WHERE $1::text IS NULL OR participant_id = $1
ORDER BY event_id DESC
LIMIT $2;

-- name: participant_change
-- Applies action $2 (SUSPEND, REINSTATE or REVOKE_TOKENS) to participant $1
-- and records it with operator $3 and reason $4, in one statement. SUSPEND and
-- REINSTATE change the status; REVOKE_TOKENS bumps policy_version, so every
-- token issued before (its `pv` claim is lower) is refused by the sidecars.
-- No row comes back when nothing changed (unknown participant, or already in
-- that state): nothing is recorded then. The participants trigger NOTIFYs
-- `symphony_participants` at COMMIT; sidecars refresh that participant.
WITH changed AS (
    UPDATE participants p
    SET status = CASE $2::text WHEN 'SUSPEND' THEN 'SUSPENDED' WHEN 'REINSTATE' THEN 'ACTIVE' ELSE p.status END,
        policy_version = p.policy_version + CASE WHEN $2::text = 'REVOKE_TOKENS' THEN 1 ELSE 0 END
    WHERE p.participant_id = $1
      AND CASE $2::text WHEN 'SUSPEND' THEN p.status <> 'SUSPENDED'
                        WHEN 'REINSTATE' THEN p.status <> 'ACTIVE'
                        ELSE $2::text = 'REVOKE_TOKENS' END
    RETURNING OLD.status AS old_status, NEW.status AS new_status,
              OLD.policy_version AS old_policy_version, NEW.policy_version AS new_policy_version
)
INSERT INTO participant_admin_events (participant_id, action, operator, reason, old_status, new_status,
                                      old_policy_version, new_policy_version)
SELECT $1, $2, $3, $4, old_status, new_status, old_policy_version, new_policy_version
FROM changed
RETURNING event_id, old_status, new_status, old_policy_version, new_policy_version, occurred_at;
