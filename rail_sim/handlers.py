"""What every simulated rail's route handler is given (rail_sim/profiles.py,
rail_sim/real_rails.py): the simulator, as a Protocol, and the handler type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from rail_sim.store import ExecutionStore


class Simulator(Protocol):
    """What a rail's handlers use of `rail_sim.server.Simulator` (a Protocol, so
    the rail modules need nothing of the server's and it imports them freely)."""

    profile: str
    store: ExecutionStore
    settle_ms: float
    credentials: dict[str, str]
    tokens: dict[str, float]

    async def before_execute(self, request: web.Request, *, error_body: dict[str, object],
                             error_status: int = 503) -> web.StreamResponse | None: ...

    async def after_execute(self, request: web.Request, *, new_execution: bool) -> web.StreamResponse | None: ...


Handler = Callable[[Simulator, web.Request], Awaitable[web.StreamResponse]]
