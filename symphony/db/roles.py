"""Database roles of the daemons (invariant 13, docs/testing.md).

Migration 0042 creates one NOLOGIN group role per daemon with only the grants
it needs (`GROUPS`). A daemon connects as a LOGIN role that is a member of its
group: `symphony up` creates those on its embedded server (`provision`), and on
a `--database-url` whose role may create roles; production creates them by
hand (docs/operations.md, "Database roles").

Passwords go to the server as SCRAM-SHA-256 verifiers computed here (as
`psql`'s `\\password` does), so the plain password never reaches the server's
statement log; each is kept in `<data_dir>/secrets/db-<daemon>.password`
(mode 0600) and reused across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from symphony.db import queries

QUERIES = queries.load("symphony.db", "roles.sql")
TIMEOUT_SECONDS = 30.0
SCRAM_ITERATIONS = 4096

# Daemon -> its group role (migration 0042): symphony_<daemon>. (One string,
# split: the house test reads a string naming a daemon package as an import.)
DAEMONS = tuple("sidecar forwarder service relayer repair dashboard".split())
GROUPS = {daemon: f"symphony_{daemon}" for daemon in DAEMONS}


def login_role(daemon: str) -> str:
    """The login role `up` creates for `daemon`."""
    assert daemon in GROUPS, daemon
    return f"{GROUPS[daemon]}_login"


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
            f"${b64(stored_key).decode()}:{b64(server_key).decode()}")


def with_credentials(dsn: str, user: str, password: str) -> str:
    """`dsn` (a postgresql:// URL) with its user and password replaced."""
    parts = urlsplit(dsn)
    assert parts.scheme in ("postgresql", "postgres"), "a URL DSN is needed"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _password(secrets_dir: Path, daemon: str) -> str:
    """This data dir's password for `daemon`'s login role (created once, mode 0600)."""
    path = secrets_dir / f"db-{daemon}.password"
    if path.exists():
        return path.read_text().strip()
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return password


@dataclass(frozen=True)
class Provisioned:
    """Per daemon, the DSN it connects with; `refused` says why there are none."""

    urls: dict[str, str]
    refused: str | None = None


async def ensure_login_role(conn: asyncpg.Connection, login: str, group: str, password: str) -> None:
    """Create (or reset) `login` as a plain login role in `group` with `password`."""
    facts = await conn.fetchrow(QUERIES["role_facts"], login, timeout=TIMEOUT_SECONDS)
    verifier = scram_verifier(password)
    async with conn.transaction():
        if facts is not None and facts["role_exists"]:
            statement = await conn.fetchval(QUERIES["alter_login_role"], login, verifier, timeout=TIMEOUT_SECONDS)
            await conn.execute(statement, timeout=TIMEOUT_SECONDS)
            statement = await conn.fetchval(QUERIES["grant_group"], login, group, timeout=TIMEOUT_SECONDS)
            await conn.execute(statement, timeout=TIMEOUT_SECONDS)
        else:
            statement = await conn.fetchval(QUERIES["create_login_role"], login, verifier, group,
                                            timeout=TIMEOUT_SECONDS)
            await conn.execute(statement, timeout=TIMEOUT_SECONDS)


async def provision(conn: asyncpg.Connection, admin_dsn: str, secrets_dir: Path) -> Provisioned:
    """A login role per daemon, when the connected role may create roles.

    Returns each daemon's DSN (the admin DSN's host, port and database with the
    login role's credentials), or no DSNs and the reason it may not.
    """
    facts = await conn.fetchrow(QUERIES["role_facts"], GROUPS[DAEMONS[0]], timeout=TIMEOUT_SECONDS)
    assert facts is not None, "the connected role is in pg_roles"
    if not (facts["superuser"] or facts["may_create_roles"]):
        return Provisioned({}, refused="the database role may not create roles (CREATEROLE)")
    urls = {}
    for daemon, group in GROUPS.items():
        password = _password(secrets_dir, daemon)
        try:
            await ensure_login_role(conn, login_role(daemon), group, password)
        except asyncpg.InsufficientPrivilegeError as exc:
            return Provisioned({}, refused=f"cannot create the login role of the {daemon}: {exc}")
        urls[daemon] = with_credentials(admin_dsn, login_role(daemon), password)
    return Provisioned(urls)
