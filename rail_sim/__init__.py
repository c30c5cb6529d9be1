"""Rail simulators: real HTTP servers that behave like two payment operators.

`symphony rail-sim --profile swiftpay|mobimoney --port P` runs one operator with a
durable idempotency store, per-key execution counts (`GET /_sim/stats`) and fault
injection set at start (flags) or at runtime (`POST /_sim/faults`). See
rail_sim/README.md for both operators' APIs and the fault model.
"""
