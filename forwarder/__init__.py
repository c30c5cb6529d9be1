"""The forwarder: ships journal streams to PostgreSQL exactly once, chain checked at ingest.

`symphony forwarder --config FILE` runs one per node. See forwarder/README.md.
"""
