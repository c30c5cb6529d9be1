"""Demo helpers: what `symphony up` prepares, demo tokens, and demo traffic.

Method: call symphony.app.demo.prepare on a fresh database and data dir; verify a
`symphony demo token` against the JWKS it wrote; run `symphony demo traffic`
as a process against the service fronted by the in-test signer and compare its
summary with the tables (one intent per executed request, none for the rest).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import jwt

from symphony.app import demo
from symphony.components import UpContext
from tests.conftest import symphony_cli


async def test_prepare_creates_keys_dirs_and_participants(tmp_path: Path, database_url: str,
                                                          db: asyncpg.Connection) -> None:
    ctx = UpContext(data_dir=tmp_path, database_url=database_url, node_id="node-x")
    await asyncio.to_thread(demo.prepare, ctx)
    for name in ("sidecar-upstream.pem", "sidecar-upstream.pub.pem", "demo-issuer.pem", "jwks.json"):
        assert (tmp_path / "keys" / name).exists(), name
    assert (tmp_path / "keys" / "demo-issuer.pem").stat().st_mode & 0o077 == 0
    assert (tmp_path / "journal" / "node-x").is_dir() and (tmp_path / "logs").is_dir()
    first = (tmp_path / "keys" / "jwks.json").read_text()
    await asyncio.to_thread(demo.prepare, ctx)  # idempotent: keys are never replaced
    assert (tmp_path / "keys" / "jwks.json").read_text() == first
    rows = await db.fetch("SELECT participant_id, status, policy_version FROM participants ORDER BY 1")
    assert [tuple(r) for r in rows] == [("demo-bank-a", "ACTIVE", 1), ("demo-mfi-b", "ACTIVE", 1)]


def test_demo_token_verifies_against_the_jwks(tmp_path: Path) -> None:
    demo.ensure_keys(tmp_path)
    result = symphony_cli("demo", "token", "--participant", "demo-mfi-b", "--data-dir", str(tmp_path),
                          "--ttl", "120", env={"SYMPHONY_DATABASE_URL": ""})
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    jwks = jwt.PyJWKSet.from_json((tmp_path / "keys" / "jwks.json").read_text())
    key = jwks[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key.key, algorithms=["EdDSA"], audience="symphony-ingress", issuer="symphony-demo")
    assert claims["sub"] == "demo-mfi-b" and claims["pv"] == 1 and claims["exp"] - claims["iat"] == 120
    missing = symphony_cli("demo", "token", "--participant", "x", "--data-dir", str(tmp_path / "none"),
                           env={"SYMPHONY_DATABASE_URL": ""})
    assert missing.returncode == 2 and "no demo issuer key" in missing.stderr


async def test_demo_traffic_through_a_signing_proxy(signing_proxy: str, tmp_path: Path,
                                                    db: asyncpg.Connection) -> None:
    data_dir = tmp_path / "demo-data"
    demo.ensure_keys(data_dir)
    result = await asyncio.to_thread(
        symphony_cli, "demo", "traffic", "--target", signing_proxy, "--requests", "60", "--concurrency", "6",
        "--duplicate-rate", "0.3", "--invalid-rate", "0.15", "--participant", "bank-a", "--policy-version", "1",
        "--seed", "3", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["sent"] == 60 and summary["transport_errors"] == {}
    by_disposition = summary["by_disposition"]
    assert sum(by_disposition.values()) == 60
    assert by_disposition.get("rejected", 0) > 0 and by_disposition.get("replayed", 0) > 0
    assert await db.fetchval("SELECT count(*) FROM payment_intents") == by_disposition["executed"]
    assert await db.fetchval("SELECT count(*) FROM payment_outbox") == by_disposition["executed"]
