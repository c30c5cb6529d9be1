"""The sidecar's /metrics carries what an on-call needs about it.

Goal: build info, the supervisor's process_* metrics, each worker's CPU,
memory and file descriptors (the workers carry the load), and the clock
offset in base units (seconds; the old `_ms` gauge is gone). Method: a real
sidecar with two workers; its admin /metrics scraped over HTTP until every
worker has published.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable

from tests.sidecar.conftest import Sidecar, Upstream

WAIT_SECONDS = 30.0


async def test_sidecar_metrics_for_on_call(sidecar_factory: Callable[..., Sidecar], module_database_url: str,
                                           upstream: Upstream) -> None:
    """Every expected family is there, per worker where it should be."""
    sidecar = sidecar_factory(module_database_url, upstream.url, workers=2,
                              extra={"heartbeat_interval_seconds": 0.2})
    deadline = time.monotonic() + WAIT_SECONDS
    text = ""
    wanted = ['symphony_sidecar_worker_resident_memory_bytes{stream="0"}',
              'symphony_sidecar_worker_resident_memory_bytes{stream="1"}']
    while not all(w in text for w in wanted):
        assert time.monotonic() < deadline, f"workers' process figures never appeared:\n{text[-3000:]}"
        with urllib.request.urlopen(f"http://127.0.0.1:{sidecar.admin_port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        await asyncio.sleep(0.1)
    assert 'symphony_build_info{daemon="sidecar"' in text
    assert "process_resident_memory_bytes " in text and "process_open_fds " in text
    assert 'symphony_sidecar_worker_cpu_seconds_total{stream="1"}' in text
    assert 'symphony_sidecar_worker_open_fds{stream="0"}' in text
    assert 'symphony_sidecar_clock_offset_seconds{stream="0"}' in text
    assert "clock_offset_ms{" not in text
    assert sidecar.stop() == 0
