-- Leader election of repair instances (repair/leader.py): one PostgreSQL
-- session advisory lock, held by the leader's session for as long as it lives.

-- name: try_lock
-- Take the leader lock ($1, a bigint key) if no other session holds it.
SELECT pg_try_advisory_lock($1)

-- name: holds_lock
-- Whether this session still holds the leader lock $1. pg_locks shows a
-- bigint key as classid (high 32 bits) and objid (low 32 bits).
SELECT count(*) = 1 FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
  AND ((classid::bigint << 32) | objid::bigint) = $1

-- name: unlock
-- Give the leader lock $1 up (a clean stop; the session's end would too).
SELECT pg_advisory_unlock($1)
