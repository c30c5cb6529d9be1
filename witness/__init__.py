"""The witness: an independent cosigner of the nodes' checkpoints (C2SP tlog-witness).

It runs under another owner than the operator's daemons, with its own key and
its own small store (files, not the operator's PostgreSQL), and cosigns a
checkpoint only when it is consistent with the last one it cosigned for the
same origin. A cut tail, a rewritten history or a fork then shows as a
refusal, and a cosigned checkpoint is evidence the operator alone cannot forge.
"""
