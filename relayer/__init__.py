"""The transactional-outbox relayer: drives payment_outbox rows to the rails.

store.py owns the SQL (queries.sql); worker.py owns the loop (claim, dispatch,
complete, drain); adapters.py speaks each rail's API; breaker.py is the per-rail
circuit breaker. See relayer/README.md for the lease policy and the rail key.
"""
