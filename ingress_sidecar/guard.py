"""Bounded connections: caps and read deadlines in front of the request handler.

aiohttp's server has a keep-alive timeout but no deadline for reading a
request's headers or body, and no cap on connections: thousands of
half-sent requests (slowloris) held a worker at its file-descriptor limit and
new clients got no answer. Each worker therefore runs its connections
through a `ConnectionGuard`:

- `worker_connections_max` connections per worker (checked at start-up to
  fit under the process's file-descriptor limit with room for the journal,
  the upstream pool and the rest). A connection beyond it is answered at once
  with a canned `503` and closed, never left in the kernel's accept queue;
- `source_connections_max` connections per source address per worker;
- `header_read_timeout_seconds` from a request's first byte (or the
  connection's start) to its complete header block;
- `body_read_timeout_seconds` for reading the body once the headers are in.

A connection past its deadline is aborted. The deadlines are not one timer
per request (a timer costs more than the rest of this guard on the hot path):
each connection holds one float, and a sweep over the worker's connections
runs a few times per timeout. Every refusal and every expiry is counted by
reason through `on_refused` (the DROPPED record and the `dropped` metric),
and none is attested: all happen before the request's INGRESS.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("sidecar.guard")

FD_RESERVE = 256  # journal segments, mirror, logs, metrics, policy database, pipes
SWEEP_SECONDS_MAX = 1.0
SWEEP_SECONDS_MIN = 0.05
_REFUSED_BODY = b'{"error": "connections_max"}'
REFUSED_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    b"Content-Length: " + str(len(_REFUSED_BODY)).encode() + b"\r\n\r\n" + _REFUSED_BODY)

HEADER_READ_TIMEOUT = "header_read_timeout"
BODY_READ_TIMEOUT = "body_read_timeout"
WORKER_CONNECTIONS_MAX = "worker_connections_max"
SOURCE_CONNECTIONS_MAX = "source_connections_max"


def ensure_fd_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to `needed` if the hard limit allows; returns the soft limit.

    Raises ValueError naming both numbers when the hard limit is too low.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed if soft == resource.RLIM_INFINITY else soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ValueError(f"needs {needed} file descriptors, the hard limit is {hard}: raise LimitNOFILE "
                         "(systemd) or ulimit -n, or lower worker_connections_max")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


class ConnectionGuard:
    """One worker's open connections, by source, with their read deadlines."""

    def __init__(self, *, connections_max: int, source_connections_max: int, header_timeout_seconds: float,
                 body_timeout_seconds: float, on_refused: Callable[[str], None]) -> None:
        assert connections_max >= 1 and source_connections_max >= 1
        assert header_timeout_seconds > 0 and body_timeout_seconds > 0
        self.connections_max = connections_max
        self.source_connections_max = source_connections_max
        self.header_timeout = header_timeout_seconds
        self.body_timeout = body_timeout_seconds
        self.on_refused = on_refused
        self.connections: set[GuardedProtocol] = set()
        self.by_source: dict[str, int] = {}

    def admit(self, protocol: GuardedProtocol) -> str | None:
        """Count a new connection in; returns the refusal reason when it must be refused."""
        if len(self.connections) >= self.connections_max:
            return WORKER_CONNECTIONS_MAX
        held = self.by_source.get(protocol.source, 0)
        if held >= self.source_connections_max:
            return SOURCE_CONNECTIONS_MAX
        self.by_source[protocol.source] = held + 1
        self.connections.add(protocol)
        return None

    def release(self, protocol: GuardedProtocol) -> None:
        if protocol not in self.connections:
            return
        self.connections.discard(protocol)
        held = self.by_source[protocol.source] - 1
        assert held >= 0, protocol.source
        if held:
            self.by_source[protocol.source] = held
        else:
            del self.by_source[protocol.source]

    def sweep(self, now: float) -> int:
        """Abort every connection past its read deadline; returns how many."""
        expired = [p for p in self.connections if 0.0 < p.deadline <= now]
        for protocol in expired:
            reason = protocol.deadline_reason
            protocol.deadline = 0.0
            self.on_refused(reason)
            protocol.expire()
        return len(expired)

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep a few times per timeout until `stop` is set."""
        interval = min(SWEEP_SECONDS_MAX, max(SWEEP_SECONDS_MIN, min(self.header_timeout, self.body_timeout) / 4))
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                return
            except asyncio.TimeoutError:
                pass
            self.sweep(loop.time())


class GuardedProtocol(RequestHandler):
    """aiohttp's per-connection protocol, admitted by the guard and holding its read deadline.

    `deadline` is 0.0 while no read is pending (idle keep-alive, which aiohttp's
    own keep-alive timeout bounds, or a request being handled), else the loop
    time by which the headers or the body must be complete.
    """

    __slots__ = ("guard", "source", "admitted", "deadline", "deadline_reason", "awaiting_headers")

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.source = ""
        self.admitted = False
        self.deadline = 0.0
        self.deadline_reason = HEADER_READ_TIMEOUT
        self.awaiting_headers = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if peer else ""
        refused = self.guard.admit(self)
        if refused is not None:
            self.guard.on_refused(refused)
            transport.write(REFUSED_RESPONSE)  # type: ignore[attr-defined]
            transport.close()  # flushes the short answer, then closes: refused at once, never hung
            return
        self.admitted = True
        super().connection_made(transport)
        self.deadline = self._loop.time() + self.guard.header_timeout
        self.deadline_reason = HEADER_READ_TIMEOUT

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self.guard.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if self.awaiting_headers:  # the first byte of the next request starts its header clock
            self.awaiting_headers = False
            self.deadline = self._loop.time() + self.guard.header_timeout
            self.deadline_reason = HEADER_READ_TIMEOUT
        super().data_received(data)

    # The request handler (ingress_sidecar/handler.py) sets `deadline`,
    # `deadline_reason` and `awaiting_headers` itself (inline on the hot path):
    # body deadline once the headers are in, 0.0 once the body is read, and
    # awaiting_headers when the request is done.

    def expire(self) -> None:
        """Past its deadline: drop the connection now (its handler, if any, is cancelled)."""
        if self.transport is not None:
            self.transport.abort()


class GuardedServer(web.Server):
    """web.Server whose connections go through a ConnectionGuard."""

    def __init__(self, handler: Any, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.guard = guard

    def __call__(self) -> GuardedProtocol:
        return GuardedProtocol(self, self.guard, loop=self._loop, **self._kwargs)
