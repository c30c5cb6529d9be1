-- Each relayer's circuit breaker per rail, as the relayer last reported it.
-- The breaker lives in the relayer's memory (relayer/breaker.py); the relayer
-- writes its state here when it changes and at least every
-- `breaker_report_seconds`, with `valid_until` three report intervals ahead,
-- so a reader (the regulator dashboard) can tell a live report from the last
-- word of a relayer that died. A relayer that stops cleanly deletes its rows.
-- Not evidence: a status board, rewritten in place.

CREATE TABLE rail_breaker_reports (
    rail         text NOT NULL,
    worker_id    text NOT NULL,
    state        text NOT NULL CHECK (state IN ('CLOSED', 'HALF_OPEN', 'OPEN')),
    -- When the breaker last opened (NULL while it never has in this process).
    opened_at    timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    reported_at  timestamptz NOT NULL DEFAULT now(),
    valid_until  timestamptz NOT NULL,
    PRIMARY KEY (rail, worker_id),
    CHECK (valid_until >= reported_at)
);
