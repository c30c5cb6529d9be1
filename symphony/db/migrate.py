"""Numbered SQL migrations, applied in order, each all-or-nothing.

Files are `symphony/migrations/NNNN_description.sql`. Every file runs in its own
transaction while the session holds an advisory lock, so two processes that
migrate at once apply each file exactly once. A file is recorded in
`schema_migrations` with its SHA-256; an applied file that later changes is
refused rather than silently skipped. A failing statement rolls its whole file
back and the error names the file, the statement number and its first line.

Statements are split here (not sent as one script) so the error can say which
one failed; the splitter understands quotes, comments and dollar-quoting.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

from symphony.db import connect
from symphony.errors import DatabaseError

# Any fixed 64-bit number works; this one is "symphony" in ASCII.
ADVISORY_LOCK_KEY = 0x73796D70686F6E79
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
LOCK_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


class MigrationError(DatabaseError):
    """A migration failed and was rolled back, or the recorded history is inconsistent."""


def discover(directory: Path | None = None) -> list[Migration]:
    """The migrations in `directory` (default: the packaged ones), in order."""
    if directory is None:
        root = resources.files("symphony").joinpath("migrations")
        entries = [(entry.name, entry.read_text(encoding="utf-8")) for entry in root.iterdir()]
    else:
        entries = [(path.name, path.read_text(encoding="utf-8")) for path in directory.iterdir()]
    migrations = []
    for name, text in entries:
        match = _FILE_NAME.match(name)
        if match is None:
            continue
        migrations.append(Migration(int(match["version"]), match["name"], text))
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    assert len(versions) == len(set(versions)), f"two migrations share a number: {versions}"
    return migrations


async def apply(conn: asyncpg.Connection, directory: Path | None = None) -> list[str]:
    """Apply every pending migration; returns the file names applied (empty: no-op)."""
    migrations = discover(directory)
    await conn.execute("SET lock_timeout = '60s'")
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY, timeout=LOCK_TIMEOUT_SECONDS)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                sha256     text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        applied = {row["version"]: row for row in await conn.fetch("SELECT version, name, sha256 FROM schema_migrations")}
        done: list[str] = []
        for migration in migrations:
            recorded = applied.get(migration.version)
            if recorded is not None:
                if recorded["sha256"] != migration.sha256:
                    raise MigrationError(
                        f"migration {migration.filename} was changed after it was applied "
                        "(never edit an applied migration; add a new one)"
                    )
                continue
            await _apply_one(conn, migration)
            done.append(migration.filename)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def apply_url(url: str) -> list[str]:
    """`apply` on a connection of its own to `url` (closed afterwards)."""
    conn = await connect(url)
    try:
        return await apply(conn)
    finally:
        await conn.close()


async def pending(conn: asyncpg.Connection, directory: Path | None = None) -> list[str]:
    """The packaged migrations not yet recorded in schema_migrations (all of them
    on a database never migrated). Read-only: it takes no lock and creates nothing."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied: set[int] = set()
    if exists:
        applied = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
    return [m.filename for m in discover(directory) if m.version not in applied]


async def _apply_one(conn: asyncpg.Connection, migration: Migration) -> None:
    statements = split_statements(migration.sql)
    async with conn.transaction():
        for number, (line, statement) in enumerate(statements, start=1):
            try:
                await conn.execute(statement)
            except asyncpg.PostgresError as exc:
                first_line = statement.strip().splitlines()[0][:120]
                raise MigrationError(
                    f"migration {migration.filename} failed at statement {number} (line {line}: "
                    f"{first_line!r}): {exc}; the file was rolled back, nothing of it was applied"
                ) from None
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
            migration.version, migration.name, migration.sha256,
        )


def split_statements(sql: str) -> list[tuple[int, str]]:
    """Split a script at top-level semicolons: (first line number, statement) pairs."""
    statements: list[tuple[int, str]] = []
    start = 0
    index = 0
    length = len(sql)
    while index < length:
        char = sql[index]
        if sql.startswith("--", index):
            newline = sql.find("\n", index)
            index = length if newline == -1 else newline + 1
            continue
        if sql.startswith("/*", index):
            index = _skip_block_comment(sql, index)
            continue
        if char in ("'", '"'):
            index = _skip_quoted(sql, index, char)
            continue
        if char == "$":
            tag = re.match(r"\$[A-Za-z_]*\$", sql[index:])
            if tag:
                close = sql.find(tag.group(0), index + len(tag.group(0)))
                assert close != -1, f"unterminated dollar quote {tag.group(0)}"
                index = close + len(tag.group(0))
                continue
        if char == ";":
            _append(statements, sql, start, index)
            start = index + 1
        index += 1
    _append(statements, sql, start, length)
    return statements


def _append(statements: list[tuple[int, str]], sql: str, start: int, end: int) -> None:
    text = sql[start:end]
    meaningful = re.sub(r"--[^\n]*", "", text).strip()
    if not meaningful:
        return
    leading = len(text) - len(text.lstrip())
    line = sql.count("\n", 0, start + leading) + 1
    statements.append((line, text.strip()))


def _skip_block_comment(sql: str, index: int) -> int:
    depth = 0
    while index < len(sql):
        if sql.startswith("/*", index):
            depth += 1
            index += 2
        elif sql.startswith("*/", index):
            depth -= 1
            index += 2
            if depth == 0:
                return index
        else:
            index += 1
    raise AssertionError("unterminated block comment")


def _skip_quoted(sql: str, index: int, quote: str) -> int:
    index += 1
    while index < len(sql):
        if sql[index] == quote:
            if sql.startswith(quote * 2, index):
                index += 2
                continue
            return index + 1
        index += 1
    raise AssertionError(f"unterminated {quote} quote")
