"""Prometheus metrics of one relayer process (served on /metrics).

Names follow the Phase 7R plan where it names them (dlq records_entered /
records_terminal); everything is labelled by rail.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class RelayerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.claimed = Counter("symphony_relayer_claimed_total", "Rows leased", ["rail"], registry=r)
        self.dispatches = Counter("symphony_relayer_dispatch_total", "Rail calls by outcome kind",
                                  ["rail", "outcome"], registry=r)
        self.rail_call_seconds = Histogram("symphony_relayer_rail_call_seconds", "Rail call duration",
                                           ["rail"], buckets=_LATENCY_BUCKETS, registry=r)
        self.insert_to_dispatch_seconds = Histogram(
            "symphony_relayer_insert_to_dispatch_seconds", "From outbox insert to the first rail call",
            ["rail"], buckets=_LATENCY_BUCKETS, registry=r)
        self.retries = Counter("symphony_relayer_retries_total", "Attempts scheduled for retry", ["rail"],
                               registry=r)
        self.dlq_records_entered = Counter("symphony_relayer_dlq_records_entered_total",
                                           "Rows dead-lettered (budget exhausted)", ["rail"], registry=r)
        self.records_terminal = Counter("symphony_relayer_records_terminal_total",
                                        "Rows the rail refused for good (FAILED, not dead letters)", ["rail"],
                                        registry=r)
        self.succeeded = Counter("symphony_relayer_succeeded_total", "Rows completed SUCCESS", ["rail"],
                                 registry=r)
        self.breaker_state = Gauge("symphony_relayer_breaker_state", "0 closed, 1 half-open, 2 open", ["rail"],
                                   registry=r)
        self.breaker_opens = Counter("symphony_relayer_breaker_opens_total", "Times the breaker opened",
                                     ["rail"], registry=r)
        self.inflight = Gauge("symphony_relayer_inflight", "Rows leased and not yet written back", ["rail"],
                              registry=r)
        self.leases_reclaimed = Counter("symphony_relayer_leases_reclaimed_total",
                                        "Expired leases made claimable again", registry=r)
        self.completion_rows = Histogram("symphony_relayer_completion_batch_rows", "Rows per completion write",
                                         buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 5000), registry=r)
        self.database_errors = Counter("symphony_relayer_database_errors_total", "Failed database round trips",
                                       ["operation"], registry=r)
        self.claimed_again_total = Counter(
            "symphony_relayer_claimed_again_total",
            "Rows this worker claimed again while it still held an earlier attempt (its lease expired while the "
            "process stalled); earlier_call: running (the new attempt waited for it) or returned",
            ["rail", "earlier_call"], registry=r)
        self.completions_fenced = Counter("symphony_relayer_completions_fenced_total",
                                          "Outcomes not written because the lease or attempt was no longer "
                                          "this worker's", registry=r)
        self.completions_lost = Counter("symphony_relayer_completions_unwritten_total",
                                        "Outcomes not written (database down): recovered by lease expiry",
                                        registry=r)
        self.listening = Gauge("symphony_relayer_listening", "1 while LISTEN symphony_outbox is active",
                               registry=r)


class RailMetrics:
    """The labelled children of one rail, looked up once.

    `Counter.labels(rail)` hashes the label values and takes a lock on every
    call; at 10 000 rows/s and ten metric updates per row that was a tenth of
    the relayer's CPU. The worker keeps one of these per rail instead.
    """

    __slots__ = ("_metrics", "_rail", "claimed", "dispatches", "rail_call_seconds", "insert_to_dispatch_seconds", "retries",
                 "dlq_records_entered", "records_terminal", "succeeded", "breaker_state", "breaker_opens",
                 "inflight", "_claimed_again")

    def __init__(self, metrics: RelayerMetrics, rail: str) -> None:
        self._metrics = metrics
        self._rail = rail
        self.claimed = metrics.claimed.labels(rail)
        self.dispatches: dict[str, Counter] = {}  # by outcome kind, created on first use
        self.rail_call_seconds = metrics.rail_call_seconds.labels(rail)
        self.insert_to_dispatch_seconds = metrics.insert_to_dispatch_seconds.labels(rail)
        self.retries = metrics.retries.labels(rail)
        self.dlq_records_entered = metrics.dlq_records_entered.labels(rail)
        self.records_terminal = metrics.records_terminal.labels(rail)
        self.succeeded = metrics.succeeded.labels(rail)
        self.breaker_state = metrics.breaker_state.labels(rail)
        self.breaker_opens = metrics.breaker_opens.labels(rail)
        self.inflight = metrics.inflight.labels(rail)
        self._claimed_again = (metrics.claimed_again_total.labels(rail, "returned"),
                               metrics.claimed_again_total.labels(rail, "running"))

    def claimed_again(self, earlier_call_running: bool) -> Counter:
        """The counter of rows claimed again while this worker held an earlier attempt."""
        return self._claimed_again[1 if earlier_call_running else 0]

    def dispatch_counter(self, outcome: str) -> Counter:
        """The dispatch counter of one outcome kind (created, then cached, on first use)."""
        counter = self.dispatches.get(outcome)
        if counter is None:
            counter = self.dispatches[outcome] = self._metrics.dispatches.labels(self._rail, outcome)
        return counter
