"""The reference payments API behind the ingress sidecar (`symphony service`).

POST /v1/payments writes, in one transaction, the idempotency key's final state,
the payment intent and its PENDING payment_outbox row; the relayer takes it from
there. Every request must carry the sidecar's signed X-Symphony-* headers
(invariant 9); the answer says how it ended in X-Symphony-Disposition.
"""
