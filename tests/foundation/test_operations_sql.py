"""The database-creation SQL of docs/operations.md works as written.

Goal: an operator who pastes the documented SQL into psql as a superuser gets
a database that the documented owner role can migrate, without superuser
rights, on PostgreSQL 18. Method: the ```sql block of "### 5. The database"
taken from docs/operations.md, with the role and database renamed to fresh
names, run against the embedded PostgreSQL 18 (the `\\connect` line as a new
connection); then `symphony migrate` and `symphony migrate --check` as the
owner role, as real processes.
"""

from __future__ import annotations

import re
import uuid

from symphony.db import connect
from tests.conftest import REPO_ROOT, symphony_cli
from tests.conftest import _dsn_for  # the embedded server's DSN for another database


def _documented_sql() -> str:
    text = (REPO_ROOT / "docs" / "operations.md").read_text()
    section = text[text.index("### 5. The database"):]
    return re.search(r"```sql\n(.*?)```", section, re.DOTALL)[1]  # type: ignore[index]


async def test_documented_database_creation_then_migrate_as_owner(pg_state: object) -> None:
    """Create role and database as documented; the owner migrates; the check then passes."""
    role, database = f"o_{uuid.uuid4().hex[:12]}", f"d_{uuid.uuid4().hex[:12]}"
    sql = _documented_sql().replace("symphony_owner", role)
    sql = re.sub(r"\bsymphony\b", database, sql)
    before, _, after = sql.partition(f"\\connect {database}\n")
    assert after, "the documented SQL connects to the new database"
    admin_dsn = pg_state.dsn  # type: ignore[attr-defined]
    admin = await connect(admin_dsn)
    try:
        for statement in filter(str.strip, before.split(";")):
            await admin.execute(statement)
    finally:
        await admin.close()
    superuser = await connect(_dsn_for(pg_state, database))  # type: ignore[arg-type]
    try:
        for statement in filter(str.strip, after.split(";")):
            await superuser.execute(statement)
    finally:
        await superuser.close()
    owner_dsn = re.sub(r"//[^@/]*@", f"//{role}:change-me@", _dsn_for(pg_state, database))  # type: ignore[arg-type]
    if "@" not in owner_dsn:
        owner_dsn = owner_dsn.replace("//", f"//{role}:change-me@", 1)
    try:
        migrated = symphony_cli("migrate", "--database-url", owner_dsn, timeout=180)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        assert "applied 0001_schema_v1.sql" in migrated.stdout
        owner = await connect(owner_dsn)
        try:
            assert await owner.fetchval("SELECT current_user") == role
            assert not await owner.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        finally:
            await owner.close()
        checked = symphony_cli("migrate", "--check", "--database-url", owner_dsn)
        assert checked.returncode == 0, checked.stderr
    finally:
        admin = await connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await admin.close()
