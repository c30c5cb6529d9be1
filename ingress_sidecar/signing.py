"""Upstream header signatures, one Ed25519 signature per event-loop turn.

Requests leave the durability wait together: the journal's group commit
releases all its waiters in one callback, and their tasks resume one after the
other in the same loop turn. Each asks `BatchSigner.sign` for its headers; the
first schedules a flush with `call_soon`, which runs after the other resumed
tasks have queued theirs, and signs the whole batch once (the v2 Merkle form
of symphony/upstream_headers.py; a batch of one is signed as v1). The
signature stays asymmetric Ed25519 with the sidecar's key (invariant 9); only
its cost is shared. A request waits one loop turn at most.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from symphony import upstream_headers as uh

Request = tuple[uh.Attested, str, str]  # (attested, method, path)


class BatchSigner:
    def __init__(self, signer: uh.HeaderSigner, *, batch_max: int = 256,
                 on_batch: Callable[[int], None] = lambda count: None) -> None:
        assert 1 <= batch_max <= uh.BATCH_LEAVES_MAX, batch_max
        self.signer = signer
        self.batch_max = batch_max
        self._pending: list[tuple[Request, asyncio.Future[dict[str, str]]]] = []
        self.on_batch = on_batch  # metrics: one call per Ed25519 signature, with the requests it covers

    def sign(self, attested: uh.Attested, method: str, path: str) -> asyncio.Future[dict[str, str]]:
        """A future of the signed X-Symphony-* headers of one request."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, str]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(((attested, method, path), future))
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.batch_max):
            chunk = [(request, future) for request, future in pending[start:start + self.batch_max]
                     if not future.done()]  # a cancelled request needs no signature
            if not chunk:
                continue
            try:
                signed = self.signer.headers_batch([request for request, _ in chunk])
            except ValueError as exc:  # cryptography's refusal of a key or message: each waiter answers 500
                for _, future in chunk:
                    future.set_exception(exc)
                continue
            self.on_batch(len(chunk))
            for (_, future), headers in zip(chunk, signed):
                future.set_result(headers)
