"""`symphony chaos`: failure scenarios against a running `symphony up`, then the invariants.

    symphony chaos run --scenario NAME --duration S [--data-dir D] [--rate R] [--concurrency C]
                       [--seed N] [--report FILE]
    symphony chaos check [--data-dir D] [--since ISO]   # quiesce, then the invariants only
    symphony chaos env [--data-dir D]                   # the settings `up` gives its children when chaos = true

One run: signed demo traffic at a steady rate (duplicates and invalid requests
mixed in, as `symphony demo traffic` sends them) for `--duration` seconds; the
scenario's fault injected at random moments inside that time and healed before
its end; then quiescence (every journal record shipped, every outbox row
terminal or legitimately pending, repair has run past the grace periods); then
the invariants (docs/testing.md), each a list of findings, never an average:

- gap: `audit gap` = 0 once ghosts are accounted for: every ghost (`audit
  ghosts`) has exactly one GHOST incident, and nothing else is missing;
- chain: `audit verify-chain` and `audit seq-gaps` are clean (invariants 3, 4);
- rails: each simulator counts at most one execution per key, every executed
  key is `hex(SHA-256(outbox.id))` of an outbox row, and every SUCCESS row was
  executed exactly once on its rail (invariant 6);
- outbox: every row is SUCCESS/FAILED, or pending within its budget (a live
  lease, or attempts left and a retry scheduled) (invariant 7);
- zombies: every ZOMBIE incident of the run is resolved, each in < 60 s; no
  idempotency key stays IN_PROGRESS past the stuck-key period (invariant 7);
- ids: attestation ids increase with the stream seq on every stream (invariant 5);
- attested: every outbox row names an INGRESS that PostgreSQL holds (invariant 1),
  and a request the sidecar refused (503 journal_full / CLOCK_BACKWARDS) and never
  sent again executed nothing;
- the scenario's own: the fault took effect (a refusal, a takeover, a restart…),
  and for blackhole the dropped requests are exactly the new ghosts, each one
  GHOST incident, with no other incident.

Scenarios: blackhole, double-tap, kill-sidecar-worker, kill-forwarder,
kill-relayer, kill-repair-leader, pg-restart, rail-down, disk-full, clock-back;
`mixed` injects random ones back to back for the whole duration (the soak).
Processes are found through `<data_dir>/run/up.json`, which `symphony up`
writes. The target system must run with `chaos = true` and `child_restarts_max
> 0` in its up.toml (the service's test fault switch, the sidecar's test clock
file, short grace periods, restarts of killed daemons); disk-full also needs
the journal directory on a small filesystem of its own (e.g. a tmpfs), because
the scenario fills it. Exit codes: 0 every invariant holds, 1 findings, 2 the
system is not set up for the scenario (checked before any fault: a `symphony
up` without `chaos = true` is refused, nothing is killed).

The harness, by job: `system` (the processes, database and settings of the
running `up`), `load` (the traffic), `checks` (quiescence and the invariants,
their SQL in `queries.sql`), `scenarios` (the faults) and `cli`.
"""

from __future__ import annotations

from symphony.app.chaos.cli import add_arguments, run
from symphony.app.chaos.scenarios import MIXED, SCENARIOS
from symphony.app.chaos.system import CHAOS_SETTINGS, child_environment

__all__ = ["CHAOS_SETTINGS", "MIXED", "SCENARIOS", "add_arguments", "child_environment", "run"]
