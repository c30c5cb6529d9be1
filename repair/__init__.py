"""Repair and audit: the reconciliation daemon, the audit CLI, the regulator
dashboard and the signed evidence bundle.

Everything here reads what the forwarder, the payments service and the relayer
wrote to PostgreSQL; the daemon writes only `repair_*` tables, plus the two
recovery actions documented in `repair/README.md` (re-queueing a zombie outbox
row whose lease expired long ago, releasing an idempotency key that is stuck in
progress with nothing executed).
"""
