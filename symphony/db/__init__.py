"""Database access over asyncpg: connections, pools, named queries, migrations.

A thin connector in the manner of procrastinate's: a few verbs, explicit
timeouts, and driver errors mapped to `SymphonyError` with a reason an operator
can act on (and never the password).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import asyncpg

from symphony.db.dsn import redact
from symphony.errors import StartupError

CONNECT_TIMEOUT_SECONDS = 10.0
COMMAND_TIMEOUT_SECONDS = 30.0
MIN_SERVER_VERSION_NUM = 180000

_CONNECT_ERRORS = (
    OSError,
    socket.gaierror,
    asyncio.TimeoutError,
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ClientConfigurationError,
)

# What a running daemon survives by retrying later: the server went away
# (restart, failover, network) or did not answer in time. `connect` reports an
# unreachable server as StartupError, which is fatal only at start-up.
RETRYABLE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError, StartupError)


def _explain(dsn: str, exc: BaseException) -> StartupError:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError):
        reason = f"no answer within {CONNECT_TIMEOUT_SECONDS:.0f} s"
    return StartupError(f"cannot connect to PostgreSQL at {redact(dsn)}: {reason}")


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """One connection, checked to be PostgreSQL 18 or newer."""
    try:
        conn = await asyncpg.connect(
            dsn, timeout=CONNECT_TIMEOUT_SECONDS, command_timeout=COMMAND_TIMEOUT_SECONDS, **kwargs
        )
    except _CONNECT_ERRORS as exc:
        raise _explain(dsn, exc) from None
    except ValueError as exc:  # asyncpg rejects malformed DSNs with ValueError
        raise StartupError(f"invalid database URL {redact(dsn)}: {exc}") from None
    try:
        await check_server_version(conn, dsn)
    except BaseException:
        await conn.close()
        raise
    return conn


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    """A pool whose first connection is checked like `connect()`."""
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, timeout=CONNECT_TIMEOUT_SECONDS,
            command_timeout=COMMAND_TIMEOUT_SECONDS, **kwargs,
        )
    except _CONNECT_ERRORS as exc:
        raise _explain(dsn, exc) from None
    except ValueError as exc:
        raise StartupError(f"invalid database URL {redact(dsn)}: {exc}") from None
    assert pool is not None
    async with pool.acquire() as conn:
        await check_server_version(conn, dsn)
    return pool


async def check_server_version(conn: asyncpg.Connection, dsn: str) -> None:
    """Symphony needs PostgreSQL 18: uuidv7() and RETURNING OLD/NEW."""
    version_num = int(await conn.fetchval("SHOW server_version_num"))
    if version_num < MIN_SERVER_VERSION_NUM:
        version = await conn.fetchval("SHOW server_version")
        raise StartupError(
            f"PostgreSQL at {redact(dsn)} is version {version}; Symphony needs 18 or newer "
            "(it relies on uuidv7() and RETURNING OLD/NEW)"
        )
