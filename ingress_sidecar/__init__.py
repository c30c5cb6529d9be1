"""The ingress sidecar: an attest-before-forward reverse proxy (invariants 1, 5, 8, 9, 10).

A request is forwarded only after its INGRESS record is durable in this
worker's journal stream; its OUTCOME record follows the answer. See
`server.py` for the per-request order and `supervisor.py` for the process model.
"""
