"""The sidecar's HTTP/1.1 client to its upstreams: pooled keep-alive connections, little per request.

Why not aiohttp's ClientSession: per request it builds a ClientRequest, a
ClientResponse, timer contexts, a payload object and a CIMultiDict, and writes
headers and body in separate steps; in the sidecar that was the largest single
CPU cost, larger than the attestation itself. Here a request is one bytes
object written with one `transport.write`, and the answer is parsed from the
connection's buffer once it is complete. It speaks only what the sidecar
needs from its own services:

- requests carry a `Content-Length` body (possibly empty), never chunked;
- answers are framed by `Content-Length`, `Transfer-Encoding: chunked`, or
  the end of the connection; 1xx interim answers are skipped; HEAD, 204 and
  304 have no body; an answer above `body_bytes_max` is an error;
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

HEADER_BYTES_MAX = 64 * 1024
HEADERS_MAX = 100
_NO_BODY_STATUSES = frozenset({204, 304})


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer with valid HTTP/1.1."""


class UpstreamBusy(Exception):
    """Every connection is in use and `queue_max` requests already wait: refused, never sent."""


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[str, str]]  # as received, in order
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self, body_bytes_max: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.body_bytes_max = body_bytes_max
        self.buffer = bytearray()
        self.waiter: asyncio.Future[UpstreamResponse] | None = None
        self.head_request = False
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        # Parse state of the answer in progress.
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self._framing = ""  # "", "length", "chunked", "close"
        self._length = 0
        self._keep_alive = True
        self._chunks: list[bytes] = []

    # -------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        if self._framing == "close":  # the body ends with the connection
            waiter.set_result(UpstreamResponse(self._status, self._headers, bytes(self.buffer)))
            return
        waiter.set_exception(UpstreamError(f"upstream closed the connection ({exc or 'end of stream'})"))

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing asked: an unsolicited byte makes the connection unusable
            self.close()
            return
        self.buffer += data
        try:
            response = self._parse()
        except UpstreamError as exc:
            self._fail(exc)
            return
        if response is not None:
            waiter, self.waiter = self.waiter, None
            self.reusable = self._keep_alive and not self.buffer
            if not waiter.done():
                waiter.set_result(response)

    # ------------------------------------------------------------------ parse

    def _parse(self) -> UpstreamResponse | None:
        """The complete answer if the buffer holds one, else None (wait for more)."""
        for _ in range(8):  # interim 1xx answers before the final one; bounded
            if not self._framing:
                if not self._parse_head():
                    return None
                if 100 <= self._status < 200:
                    self._framing = ""
                    continue
            if self._framing == "length":
                if len(self.buffer) < self._length:
                    return None
                body = bytes(self.buffer[:self._length])
                del self.buffer[:self._length]
                return UpstreamResponse(self._status, self._headers, body)
            if self._framing == "chunked":
                return self._parse_chunks()
            if len(self.buffer) > self.body_bytes_max:  # "close": the body ends with the connection
                raise UpstreamError("upstream answer larger than body_bytes_max")
            return None
        raise UpstreamError("too many interim (1xx) answers")

    def _parse_head(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > HEADER_BYTES_MAX:
                raise UpstreamError("upstream answer header too large")
            return False
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[:end + 4]
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit() or len(lines) > HEADERS_MAX:
            raise UpstreamError(f"not an HTTP/1.1 answer: {lines[0][:64]!r}")
        self._status = int(code)
        headers: list[tuple[str, str]] = []
        length: int | None = None
        chunked = False
        keep_alive = version == "HTTP/1.1"
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise UpstreamError("malformed upstream header line")
            value = value.strip()
            lower = name.lower()
            if lower == "content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise UpstreamError("invalid Content-Length")
                length = int(value)
            elif lower == "transfer-encoding":
                chunked = value.lower().endswith("chunked")
            elif lower == "connection":
                tokens = value.lower()
                keep_alive = "close" not in tokens and (keep_alive or "keep-alive" in tokens)
            headers.append((name, value))
        self._headers = headers
        self._keep_alive = keep_alive
        if self.head_request or self._status in _NO_BODY_STATUSES or 100 <= self._status < 200:
            self._framing, self._length = "length", 0
        elif chunked:
            self._framing, self._chunks, self._length = "chunked", [], 0
        elif length is not None:
            if length > self.body_bytes_max:
                raise UpstreamError("upstream answer larger than body_bytes_max")
            self._framing, self._length = "length", length
        else:
            self._framing, self._keep_alive = "close", False
        return True

    def _parse_chunks(self) -> UpstreamResponse | None:
        while True:  # each pass consumes one chunk or returns; bounded by the buffer
            if self._length < 0:  # after the last chunk: trailers up to an empty line
                end = self.buffer.find(b"\r\n\r\n") if self.buffer[:2] != b"\r\n" else -2
                if end == -1:
                    return None
                del self.buffer[:end + 4 if end >= 0 else 2]
                return UpstreamResponse(self._status, self._headers, b"".join(self._chunks))
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                return None
            size_text = bytes(self.buffer[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise UpstreamError("invalid chunk size") from None
            if size == 0:
                del self.buffer[:line_end + 2]
                self._length = -1
                continue
            if len(self.buffer) < line_end + 2 + size + 2:
                return None
            self._length += size
            if self._length > self.body_bytes_max:
                raise UpstreamError("upstream answer larger than body_bytes_max")
            start = line_end + 2
            self._chunks.append(bytes(self.buffer[start:start + size]))
            del self.buffer[:start + size + 2]

    # -------------------------------------------------------------- requests

    def send(self, data: bytes, head_request: bool, waiter: asyncio.Future[UpstreamResponse]) -> None:
        assert self.transport is not None and self.waiter is None
        self.waiter = waiter
        self.head_request = head_request
        self.reusable = False
        self._framing = ""
        self.buffer.clear()
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
        self._slots = asyncio.Semaphore(connections_max)
        self._open = 0
        self.queue_max = queue_max
        self.waiting = 0  # requests waiting for a free connection

    def saturated(self) -> bool:
        """True when a request now would be refused (UpstreamBusy): checked before attestation."""
        return self.waiting >= self.queue_max and self._slots.locked()

    async def _acquire(self, deadline: float) -> None:
        """A connection slot, waiting in a bounded queue and within the request's deadline."""
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot: returns at once
            return
        if self.waiting >= self.queue_max:
            raise UpstreamBusy(f"{self.waiting} requests already wait for an upstream connection")
        self.waiting += 1
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        finally:
            self.waiting -= 1

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
        await self._acquire(deadline)
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
            self._slots.release()

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
