"""Metrics: plain counters on the hot path, published once per tick.

Workers are separate processes. Each keeps its numbers in ordinary Python
dicts and lists (an increment is a dict update, no lock, no I/O) and writes a
snapshot to `<metrics dir>/stream-<id>.json` once per housekeeping tick and at
exit: batching at its own pace instead of paying per request. The supervisor's
/metrics reads the snapshots on scrape and exposes them with a `stream` label
(a restarted worker starts its counters at zero, which Prometheus handles as
a counter reset of that series), plus the journal's file sizes per stream.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from symphony.files import write_atomically

PREFIX = "symphony_sidecar_"
COUNTERS = {
    "requests": ("Requests answered, by route template, HTTP status and disposition", ("route", "status", "disposition")),
    "journal_refusals": ("Records the journal refused (request answered 503)", ("reason",)),
    "dropped": ("Requests and connections refused before attestation (counted in DROPPED records): "
                "rate_limited_unauthenticated, clock_backwards, header_read_timeout, body_read_timeout, "
                "worker_connections_max, source_connections_max, requests_in_flight_max, upstream_queue_full",
                ("reason",)),
    "clock_refusals": ("Requests refused with 503 CLOCK_BACKWARDS", ()),
    "checkpoints": ("Signed checkpoints cut into the journal as CHECKPOINT records", ()),
    "upstream_signatures": ("Ed25519 signatures of upstream headers (one per batch of requests)", ()),
    "upstream_signed_requests": ("Requests whose upstream headers were signed (divide by signatures: batch size)", ()),
    "mirror_lines": ("Records written to the NDJSON attestation mirror", ()),
    "mirror_dropped": ("Records dropped from the full mirror queue (then read back from the journal)", ()),
    "mirror_recovered": ("Mirror records read back from the journal (queue drops, catch-up at start)", ()),
    "mirror_unrecoverable": ("Records missing from the mirror: no longer in the journal", ()),
    "mirror_errors": ("Failed mirror writes (retried from the journal)", ()),
    "mirror_pruned": ("Mirror files deleted after the shipper acknowledged them in full", ()),
}
HISTOGRAMS = {
    "attest_to_durable_seconds": ("From INGRESS append to durable at the configured level",
                                  (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                   0.25, 1.0)),
    "upstream_seconds": ("Upstream answer time (forward to response read)",
                         (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)),
    "policy_propagation_seconds": ("From a participant row update (updated_at) to this sidecar applying it",
                                   (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)),
}
GAUGES = {
    "clock_offset_seconds": "How far the HLC runs ahead of the wall clock, in seconds",
    "clock_alarm": "1 while the wall clock is behind the HLC by more than the max offset",
    "policy_staleness_seconds": "Seconds since the participant policy cache was last refreshed (-1: never)",
    "worker_ready": "1 when the worker's journal is writable and its policy cache fresh",
    "in_flight": "Requests being handled",
    "connections_open": "Client connections open (worker_connections_max caps them)",
    "upstream_waiting": "Requests waiting for a free upstream connection (upstream_queue_max caps them)",
    "open_ingress": "INGRESS records whose OUTCOME is not written yet",
    "mirror_queue": "Records waiting for the NDJSON mirror writer",
    "checkpoint_tree_size": "Records covered by the newest checkpoint this worker cut",
    "mirror_files": "Mirror files of this stream kept on local disk",
    "mirror_unacknowledged_bytes": "Mirror bytes of this stream not yet acknowledged by the shipper",
}


class Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        index = 0
        for bound in self.bounds:
            if value <= bound:
                break
            index += 1
        self.counts[index] += 1
        self.total += value


class WorkerStats:
    """One worker's numbers; `publish()` writes them for the supervisor."""

    def __init__(self, directory: Path | None, stream_id: int) -> None:
        self.path = directory / f"stream-{stream_id}.json" if directory else None
        self.counters: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in COUNTERS}
        self.histograms = {name: Histogram(bounds) for name, (_, bounds) in HISTOGRAMS.items()}
        self.gauges: dict[str, float] = dict.fromkeys(GAUGES, 0.0)

    def count(self, name: str, *labels: str) -> None:
        series = self.counters[name]
        series[labels] = series.get(labels, 0.0) + 1.0

    def add(self, name: str, value: float, *labels: str) -> None:
        series = self.counters[name]
        series[labels] = series.get(labels, 0.0) + value

    def observe(self, name: str, value: float) -> None:
        self.histograms[name].observe(value)

    def publish(self) -> None:
        if self.path is None:
            return
        snapshot = {
            "pid": os.getpid(),
            # CLOCK_MONOTONIC is one clock for every process on the host: the
            # supervisor feeds systemd's watchdog only while each worker's
            # housekeeping tick (which publishes this) keeps running.
            "published_monotonic": time.monotonic(),
            "counters": {name: [[list(labels), value] for labels, value in series.items()]
                         for name, series in self.counters.items()},
            "histograms": {name: [h.counts, h.total] for name, h in self.histograms.items()},
            "gauges": self.gauges,
            "process": process_figures(),
        }
        write_atomically(self.path, json.dumps(snapshot).encode(), durable=False)


def process_figures() -> dict[str, float]:
    """This worker's CPU seconds, resident memory and open file descriptors: the
    supervisor's process_* metrics describe the supervisor only, and the
    workers are where the load is. Cheap (/proc reads, once per tick)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures = {"cpu_seconds": usage.ru_utime + usage.ru_stime}
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        figures["resident_memory_bytes"] = float(pages * os.sysconf("SC_PAGE_SIZE"))
        figures["open_fds"] = float(len(os.listdir("/proc/self/fd")))
    except (OSError, ValueError, IndexError):
        pass  # not Linux: CPU only
    return figures


def read_snapshots(directory: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    """stream id -> the last snapshot its worker published."""
    snapshots = {}
    for path in sorted(directory.glob("stream-*.json")):
        try:
            snapshots[path.stem.removeprefix("stream-")] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # replaced while we read it: the next scrape sees it
    return snapshots


class SidecarCollector:
    """The supervisor's view: every worker's snapshot, plus journal files per stream."""

    def __init__(self, metrics_dir: Path, node_dir: Path) -> None:
        self.metrics_dir = metrics_dir
        self.node_dir = node_dir

    def collect(self) -> Iterator[Metric]:
        snapshots = read_snapshots(self.metrics_dir)
        for name, (help_text, labels) in COUNTERS.items():
            family = CounterMetricFamily(PREFIX + name, help_text, labels=["stream", *labels])
            for stream, snapshot in snapshots.items():
                for label_values, value in snapshot["counters"].get(name, []):
                    family.add_metric([stream, *label_values], value)
            yield family
        for name, (help_text, bounds) in HISTOGRAMS.items():
            histogram = HistogramMetricFamily(PREFIX + name, help_text, labels=["stream"])
            for stream, snapshot in snapshots.items():
                counts, total = snapshot["histograms"][name]
                cumulative, buckets = 0, []
                for bound, count in zip([*map(str, bounds), "+Inf"], counts):
                    cumulative += count
                    buckets.append((bound, cumulative))
                histogram.add_metric([stream], buckets, total)
            yield histogram
        for name, help_text in GAUGES.items():
            gauge = GaugeMetricFamily(PREFIX + name, help_text, labels=["stream"])
            for stream, snapshot in snapshots.items():
                gauge.add_metric([stream], snapshot["gauges"].get(name, 0.0))
            yield gauge
        yield from self._worker_processes(snapshots)
        yield from self._journal_files()

    def _worker_processes(self, snapshots: dict[str, dict]) -> Iterator[Metric]:  # type: ignore[type-arg]
        cpu = CounterMetricFamily(PREFIX + "worker_cpu_seconds", "CPU seconds of each worker process",
                                  labels=["stream"])
        memory = GaugeMetricFamily(PREFIX + "worker_resident_memory_bytes",
                                   "Resident memory of each worker process", labels=["stream"])
        descriptors = GaugeMetricFamily(PREFIX + "worker_open_fds", "Open file descriptors of each worker process",
                                        labels=["stream"])
        for stream, snapshot in snapshots.items():
            figures = snapshot.get("process", {})
            if "cpu_seconds" in figures:
                cpu.add_metric([stream], figures["cpu_seconds"])
            if "resident_memory_bytes" in figures:
                memory.add_metric([stream], figures["resident_memory_bytes"])
            if "open_fds" in figures:
                descriptors.add_metric([stream], figures["open_fds"])
        yield cpu
        yield memory
        yield descriptors

    def _journal_files(self) -> Iterator[Metric]:
        size = GaugeMetricFamily(PREFIX + "journal_bytes", "Bytes of journal files per stream", labels=["stream"])
        count = GaugeMetricFamily(PREFIX + "journal_segments", "Journal files per stream", labels=["stream"])
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


def registry(metrics_dir: Path, node_dir: Path) -> CollectorRegistry:
    merged = CollectorRegistry()
    merged.register(SidecarCollector(metrics_dir, node_dir))
    return merged
