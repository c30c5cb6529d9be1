-- Indexes for the relayer's per-rail claim and the service's window-limit check.
--
-- The relayer claims per rail (each rail has its own concurrency and circuit
-- breaker), so the claimable index leads with the rail. The service sums a
-- participant's intents over its limit window on every payment.

CREATE INDEX payment_outbox_rail_claimable_idx
    ON payment_outbox (rail, next_attempt_at) WHERE status IN ('PENDING', 'RECOVERING');

CREATE INDEX payment_intents_participant_window_idx
    ON payment_intents (participant_id, created_at) INCLUDE (amount_minor);
