"""The sidecar's HTTP/1.1 client to its upstreams: pooled keep-alive connections, little per request.

Why not aiohttp's ClientSession: per request it builds a ClientRequest, a
ClientResponse, timer contexts, a payload object and a CIMultiDict, and writes
headers and body in separate steps; in the sidecar that was the largest single
CPU cost, larger than the attestation itself. Here a request is one bytes
object written with one `transport.write`, and the answer is parsed from the
connection's buffer by llhttp (httptools), the parser Node.js uses, in its
strict mode: framing is never guessed by code of ours. It speaks only what
the sidecar needs from its own services:

- requests carry a `Content-Length` body (possibly empty), never chunked;
- answers are framed by `Content-Length`, `Transfer-Encoding: chunked`, or
  the end of the connection; 1xx interim answers are skipped (at most 8);
  HEAD, 204 and 304 have no body; an answer above `body_bytes_max` is an error;
- malformed framing (a chunk size of `-2`, `0x5` or `0_5`, a Content-Length
  of `²` or two that differ, Content-Length with Transfer-Encoding, a
  Transfer-Encoding other than exactly `chunked`, a 101 upgrade...) raises
  `UpstreamProtocolError` (502) and the connection is closed. Bytes after a
  complete answer close the connection too (the complete answer is passed
  on): a connection is never reused with a stray byte in it, so no stray
  byte can become another request's answer;
- a connection is reused only after a complete answer that did not say
  `Connection: close`, and only while it has been idle less than
  `idle_seconds` (below the services' keep-alive timeout, so the pool does not
  race the server closing it). A request is never retried: a failure is the
  caller's 502 (`UpstreamError`) or 504 (`TimeoutError`).

One `UpstreamPool` per upstream base URL, bounded by `connections_max`.
Beyond it callers wait for a free connection, at most `queue_max` of them
and each within its request's deadline: a full queue raises `UpstreamBusy`
at once (503), a wait past the deadline `TimeoutError` (504). Not
thread-safe: one event loop.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

HEADER_BYTES_MAX = 64 * 1024
HEADERS_MAX = 100
INTERIM_MAX = 8
_NO_BODY_STATUSES = frozenset({204, 304})


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer with valid HTTP/1.1."""


class UpstreamProtocolError(UpstreamError):
    """The answer broke HTTP/1.1 framing (llhttp refused it, or a check here did):
    the connection is closed, never reused, and the caller answers 502."""


class UpstreamBusy(Exception):
    """Every connection is in use and `queue_max` requests already wait: refused, never sent."""


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[str, str]]  # as received, in order
    body: bytes


class _Interim(Exception):
    """Internal: more than INTERIM_MAX 1xx answers before the final one."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight.

    Answers are parsed by llhttp (httptools.HttpResponseParser, strict mode),
    one parser per connection kept across its answers. Its callbacks only
    collect; `data_received` decides once `feed_data` returns.
    """

    def __init__(self, body_bytes_max: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.body_bytes_max = body_bytes_max
        self.waiter: asyncio.Future[UpstreamResponse] | None = None
        self.head_request = False
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._parser_stale = False  # after a HEAD answer the parser still expects a body: use a fresh one
        self._begin()

    def _begin(self) -> None:
        """Parse state of the answer in progress."""
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._framed = False  # Content-Length or chunked: the end is known without a close
        self._headers_done = False  # of the final (non-1xx) answer
        self._complete = False
        self._keep_alive = False
        self._interim = 0

    # ------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self._complete:  # bytes after a complete answer: never part of the next one
            raise UpstreamProtocolError("upstream sent bytes after its answer")
        self._headers = []
        self._header_bytes = 0
        self._framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if len(self._headers) >= HEADERS_MAX or self._header_bytes > HEADER_BYTES_MAX:
            raise UpstreamProtocolError("upstream answer header too large")
        lower = name.lower()
        if lower == b"transfer-encoding":
            # The sidecar asks for nothing but identity and chunked: any other
            # coding (or a list) makes the framing ambiguous, so the answer is refused.
            if value.strip().lower() != b"chunked" or self._framed:
                raise UpstreamProtocolError("upstream answer with an unsupported Transfer-Encoding")
            self._framed = True
        elif lower == b"content-length":
            if not (value.isdigit() and value.isascii()):
                raise UpstreamProtocolError("invalid Content-Length")
            if int(value) > self.body_bytes_max:
                raise UpstreamProtocolError("upstream answer larger than body_bytes_max")
            self._framed = True
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status == 101 or self._parser.should_upgrade():
            raise UpstreamProtocolError("upstream switched protocols, which the sidecar never asks for")
        if 100 <= status < 200:
            return
        self._status = status
        self._headers_done = True
        if self.head_request:  # no body follows, whatever the headers say; the answer ends here
            self._keep_alive = self._parser.should_keep_alive()
            self._parser_stale = True
            self._complete = True

    def on_body(self, body: bytes) -> None:
        if self.head_request:  # a body after a HEAD answer: bytes that belong to no answer
            raise UpstreamProtocolError("upstream sent a body after a HEAD answer")
        self._body_bytes += len(body)
        if self._body_bytes > self.body_bytes_max:
            raise UpstreamProtocolError("upstream answer larger than body_bytes_max")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._headers_done:  # an interim 1xx answer; the final one follows
            self._interim += 1
            if self._interim > INTERIM_MAX:
                raise UpstreamProtocolError("too many interim (1xx) answers")
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._complete = True

    # -------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._framed and not self._complete and exc is None \
                and self._status not in _NO_BODY_STATUSES:
            # Neither Content-Length nor chunked: the body ends with the connection.
            waiter.set_result(UpstreamResponse(self._status, self._headers, b"".join(self._body)))
            return
        waiter.set_exception(UpstreamError(f"upstream closed the connection ({exc or 'end of stream'})"))

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing asked: an unsolicited byte makes the connection unusable
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._complete:  # a complete answer, then junk: answer it, never reuse the connection
                self._deliver(reusable=False)
                self.close()
                return
            cause = exc.__context__ if isinstance(exc.__context__, UpstreamError) else exc
            self._fail(UpstreamProtocolError(f"malformed upstream answer: {cause}"))
            return
        if self._complete:
            self._deliver(reusable=self._keep_alive)

    def _deliver(self, *, reusable: bool) -> None:
        waiter, self.waiter = self.waiter, None
        self.reusable = reusable
        assert waiter is not None
        if not waiter.done():
            waiter.set_result(UpstreamResponse(self._status, self._headers, b"".join(self._body)))

    # -------------------------------------------------------------- requests

    def send(self, data: bytes, head_request: bool, waiter: asyncio.Future[UpstreamResponse]) -> None:
        assert self.transport is not None and self.waiter is None
        assert not self.closed, "a closed connection is never reused"
        self.waiter = waiter
        self.head_request = head_request
        self.reusable = False
        if self._parser_stale:
            self._parser = httptools.HttpResponseParser(self)
            self._parser_stale = False
        self._begin()
        self.transport.write(data)

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Keep-alive connections to one upstream base URL (http:// or https://)."""

    def __init__(self, base_url: str, *, connections_max: int, connect_timeout_seconds: float,
                 timeout_seconds: float, body_bytes_max: int, idle_seconds: float = 15.0,
                 queue_max: int = 1024, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream URL must be http(s)://host[:port]: {base_url!r}")
        assert connections_max >= 1 and timeout_seconds > 0 and connect_timeout_seconds > 0 and queue_max >= 1
        self.host = parts.hostname
        self.path_prefix = parts.path.rstrip("/")  # a base URL may name a path: it prefixes every target
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default_port else f"{host}:{self.port}"
        self.connections_max = connections_max
        self.connect_timeout = connect_timeout_seconds
        self.timeout = timeout_seconds
        self.body_bytes_max = body_bytes_max
        self.idle_seconds = idle_seconds
        self._idle: collections.deque[_Connection] = collections.deque()
        self._free = connections_max  # connection slots not in use
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._open = 0
        self.queue_max = queue_max

    @property
    def waiting(self) -> int:
        """Requests waiting for a free connection."""
        return len(self._waiters)

    def saturated(self) -> bool:
        """True when a request now would be refused (UpstreamBusy): checked before attestation."""
        return self._free == 0 and len(self._waiters) >= self.queue_max

    async def _wait_for_slot(self, deadline: float) -> None:
        """Wait in the bounded queue for a slot, within the request's deadline (TimeoutError past it)."""
        if len(self._waiters) >= self.queue_max:
            raise UpstreamBusy(f"{len(self._waiters)} requests already wait for an upstream connection")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot just as we gave up: pass it on
            else:
                self._waiters.remove(waiter)  # bounded by queue_max; only on timeout or cancellation
            raise

    def _release(self) -> None:
        """Hand the slot to the first waiter still waiting, else free it."""
        while self._waiters:  # bounded by queue_max
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
        assert self._free <= self.connections_max, self._free

    def encode(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
        """The request as it goes on the wire (one write)."""
        lines = [f"{method} {self.path_prefix}{target} HTTP/1.1\r\nHost: {self.host_header}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        head = "".join(lines).encode("utf-8", "surrogateescape")
        return head + body if body else head

    async def request(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes) -> UpstreamResponse:
        """Send one request and read its answer within the total timeout.

        Raises UpstreamBusy (503, nothing sent), TimeoutError (504),
        UpstreamError or OSError (502). Cancellation
        (the client went away) closes the connection it was using.
        """
        data = self.encode(method, target, headers, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        if self._free and not self._waiters:  # the common case: a free slot, nobody ahead
            self._free -= 1
        else:
            await self._wait_for_slot(deadline)
        try:
            connection = self._take_idle()
            if connection is None:
                connection = await self._connect(loop, deadline)
            waiter: asyncio.Future[UpstreamResponse] = loop.create_future()
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                connection.send(data, method == "HEAD", waiter)
                response = await waiter
            except BaseException:
                connection.close()
                self._open -= 1
                raise
            finally:
                timer.cancel()
            if connection.reusable and not connection.closed:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()
                self._open -= 1
            return response
        finally:
            self._release()

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:  # bounded by the pool size
            connection = self._idle.pop()  # most recently used first: warm, least likely closed
            if not connection.closed and now - connection.idle_since < self.idle_seconds:
                return connection
            connection.close()
            self._open -= 1
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        timeout = min(self.connect_timeout, max(0.0, deadline - loop.time()))
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self.body_bytes_max), self.host, self.port, ssl=self.ssl),
                timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"connect to {self.host_header} timed out") from None
        self._open += 1
        return connection

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
            self._open -= 1


def _expire(waiter: asyncio.Future[UpstreamResponse]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("upstream did not answer within upstream_timeout_seconds"))
