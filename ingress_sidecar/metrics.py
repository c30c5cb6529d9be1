"""Prometheus metrics of the sidecar.

Workers are separate processes, so prometheus-client runs in multiprocess mode:
the supervisor sets PROMETHEUS_MULTIPROC_DIR before it starts them, each worker
writes its values to memory-mapped files there, and the supervisor's /metrics
merges them (`registry()`). Import this module only after that variable is set.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily

REQUESTS = Counter(
    "symphony_sidecar_requests_total", "Requests answered, by route template, HTTP status and disposition",
    ["route", "status", "disposition"],
)
ATTEST_DURABLE = Histogram(
    "symphony_sidecar_attest_to_durable_seconds", "From INGRESS append to durable at the configured level",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
UPSTREAM_LATENCY = Histogram(
    "symphony_sidecar_upstream_seconds", "Upstream answer time (forward to response read)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
JOURNAL_REFUSALS = Counter(
    "symphony_sidecar_journal_refusals_total", "Records the journal refused (request answered 503)", ["reason"],
)
DROPPED = Counter(
    "symphony_sidecar_dropped_total", "Requests refused before attestation (counted in DROPPED records)", ["reason"],
)
CLOCK_REFUSALS = Counter(
    "symphony_sidecar_clock_refusals_total", "Requests refused with 503 CLOCK_BACKWARDS",
)
CLOCK_OFFSET = Gauge(
    "symphony_sidecar_clock_offset_ms", "How far the HLC runs ahead of the wall clock", ["stream"],
    multiprocess_mode="livemax",
)
CLOCK_ALARM = Gauge(
    "symphony_sidecar_clock_alarm", "1 while the wall clock is behind the HLC by more than the max offset",
    ["stream"], multiprocess_mode="livemax",
)
POLICY_STALENESS = Gauge(
    "symphony_sidecar_policy_staleness_seconds", "Seconds since the participant policy cache was last refreshed",
    ["stream"], multiprocess_mode="livemax",
)
POLICY_PROPAGATION = Histogram(
    "symphony_sidecar_policy_propagation_seconds",
    "From a participant row update (updated_at) to this sidecar applying it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
WORKER_READY = Gauge(
    "symphony_sidecar_worker_ready", "1 when the worker's journal is writable and its policy cache fresh",
    ["stream"], multiprocess_mode="livemax",
)
IN_FLIGHT = Gauge(
    "symphony_sidecar_in_flight", "Requests being handled", multiprocess_mode="livesum",
)


class JournalFilesCollector:
    """Journal bytes and segment files per stream, read from the directory on scrape."""

    def __init__(self, node_dir: Path) -> None:
        self.node_dir = node_dir

    def collect(self):  # noqa: ANN201 - prometheus collector protocol
        size = GaugeMetricFamily("symphony_sidecar_journal_bytes", "Bytes of journal files per stream", labels=["stream"])
        count = GaugeMetricFamily("symphony_sidecar_journal_segments", "Journal files per stream", labels=["stream"])
        try:
            streams = sorted(p for p in self.node_dir.iterdir() if p.is_dir())
        except FileNotFoundError:
            streams = []
        for stream in streams:
            files = [f for f in stream.iterdir() if f.is_file()]
            size.add_metric([stream.name], float(sum(f.stat().st_size for f in files)))
            count.add_metric([stream.name], float(len(files)))
        yield size
        yield count


def registry(node_dir: Path) -> CollectorRegistry:
    """The supervisor's registry: every worker's values merged, plus journal files."""
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR"), "multiprocess directory not set"
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)
    merged.register(JournalFilesCollector(node_dir))
    return merged


def worker_ready_values() -> dict[str, float]:
    """stream -> the worker_ready gauge of live workers (read from the mmap files)."""
    scratch = CollectorRegistry()
    multiprocess.MultiProcessCollector(scratch)
    values: dict[str, float] = {}
    for family in scratch.collect():
        if family.name == "symphony_sidecar_worker_ready":
            for sample in family.samples:
                values[sample.labels["stream"]] = sample.value
    return values
