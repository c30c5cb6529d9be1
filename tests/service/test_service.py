"""The payments service as the sidecar meets it: real process, real HTTP, real PostgreSQL.

Goal: invariant 9 (refuses anything not signed by a sidecar key), Stripe-style
idempotency (replay, 422 on a different body, 409 while in progress, recovery
after the TTL), defence-in-depth participant checks, and one transaction for
key + intent + outbox row. Method: sign requests with HeaderSigner as the
sidecar does, call `symphony service` over 127.0.0.1, read the tables.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from symphony.db import connect
from tests.conftest import own_postgres, symphony_cli
from tests.relayer.conftest import Processes, add_participant, free_port, wait_port
from tests.service.conftest import Keys, Service, signed_headers


def _payment(**overrides: object) -> bytes:
    body = {"amount_minor": 2500, "currency": "KES", "rail": "swiftpay", "destination_account": "ACC-1",
            "client_reference": "inv-1"}
    body.update(overrides)
    return json.dumps(body).encode()


async def _post(session: aiohttp.ClientSession, service: Service, keys: Keys, body: bytes, key: str | None,
                participant: str = "bank-a", policy_version: int = 1) -> tuple[int, dict, dict]:
    headers = signed_headers(keys.signer, participant, "POST", "/v1/payments", body, policy_version=policy_version)
    if key is not None:
        headers["Idempotency-Key"] = key
    async with session.post(f"{service.url}/v1/payments", data=body, headers=headers) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_refuses_requests_not_signed_by_a_sidecar(service: Service, keys: Keys, db: asyncpg.Connection,
                                                       tmp_path) -> None:
    body = _payment()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{service.url}/v1/payments", data=body,
                                headers={"Idempotency-Key": "k1", "X-Symphony-Participant": "bank-a"}) as r:
            assert r.status == 401 and r.headers["X-Symphony-Disposition"] == "rejected"
        # Signed for another body: the attested SHA-256 does not match.
        headers = signed_headers(keys.signer, "bank-a", "POST", "/v1/payments", _payment(amount_minor=1))
        async with session.post(f"{service.url}/v1/payments", data=body,
                                headers={**headers, "Idempotency-Key": "k1"}) as r:
            assert r.status == 401
        # Signed by the sidecar's key, then a signed field changed in transit: only
        # the signature check itself can see it (kid known, body hash right).
        headers = signed_headers(keys.signer, "bank-a", "POST", "/v1/payments", body)
        forged = {**{k: v for k, v in headers.items() if k.lower() != "x-symphony-participant"},
                  "X-Symphony-Participant": "mfi-b"}
        assert len(forged) == len(headers)
        async with session.post(f"{service.url}/v1/payments", data=body,
                                headers={**forged, "Idempotency-Key": "k1"}) as r:
            assert r.status == 401 and (await r.json())["error"]["code"] == "NOT_FROM_SIDECAR"
        # Signed by a key that is not a sidecar's.
        from symphony.upstream_headers import write_keypair
        rogue = Keys(tmp_path / "rogue.pem", tmp_path / "rogue.pub.pem")
        write_keypair(rogue.private, rogue.public)
        status, answer, _ = await _post(session, service, rogue, body, "k1")
        assert status == 401 and answer["error"]["code"] == "NOT_FROM_SIDECAR"
    assert await db.fetchval("SELECT count(*) FROM payment_intents") == 0


async def test_create_replay_mismatch_and_status(service: Service, keys: Keys, db: asyncpg.Connection) -> None:
    body = _payment()
    async with aiohttp.ClientSession() as session:
        status, created, headers = await _post(session, service, keys, body, "order-1")
        assert status == 201 and headers["X-Symphony-Disposition"] == "executed"
        status, replay, headers = await _post(session, service, keys, body, "order-1")
        assert status == 201 and headers["X-Symphony-Disposition"] == "replayed" and replay == created
        status, answer, headers = await _post(session, service, keys, _payment(amount_minor=9), "order-1")
        assert status == 422 and answer["error"]["code"] == "IDEMPOTENCY_KEY_MISMATCH"
        assert headers["X-Symphony-Disposition"] == "rejected"
        status, answer, _ = await _post(session, service, keys, body, None)
        assert status == 400
        status, answer, _ = await _post(session, service, keys, _payment(rail="carrier-pigeon"), "order-2")
        assert status == 422 and "rail" in answer["error"]["message"]
        path = f"/v1/payments/{created['payment_id']}"
        get_headers = signed_headers(keys.signer, "bank-a", "GET", path, b"")
        async with session.get(service.url + path, headers=get_headers) as response:
            view = await response.json()
            assert response.status == 200
        assert view["status"] == "PENDING" and view["history"][0]["to"] == "PENDING"
        other = signed_headers(keys.signer, "bank-b", "GET", path, b"")
        async with session.get(service.url + path, headers=other) as response:
            assert response.status == 404  # another participant's payment does not exist for bank-b
    row = await db.fetchrow("SELECT o.status::text, o.attestation_id, o.max_attempts, k.state, k.intent_id "
                            "FROM payment_outbox o JOIN idempotency_keys k ON k.intent_id = o.intent_id")
    assert row["status"] == "PENDING" and row["state"] == "COMPLETED" and row["max_attempts"] == 5
    assert str(row["attestation_id"]) == created["attestation_id"]


async def test_participant_checks_are_repeated_by_the_service(service: Service, keys: Keys,
                                                               db: asyncpg.Connection) -> None:
    await db.execute("UPDATE participants SET per_payment_limit_minor = 5000, window_limit_minor = 6000 "
                     "WHERE participant_id = 'bank-a'")
    async with aiohttp.ClientSession() as session:
        status, answer, _ = await _post(session, service, keys, _payment(amount_minor=5001), "big")
        assert status == 422 and answer["error"]["code"] == "LIMIT_PER_PAYMENT"
        assert (await _post(session, service, keys, _payment(amount_minor=4000), "w1"))[0] == 201
        status, answer, _ = await _post(session, service, keys, _payment(amount_minor=4000), "w2")
        assert status == 422 and answer["error"]["code"] == "LIMIT_WINDOW"
        await db.execute("UPDATE participants SET policy_version = 2 WHERE participant_id = 'bank-a'")
        status, answer, _ = await _post(session, service, keys, _payment(amount_minor=10), "pv")
        assert status == 403 and answer["error"]["code"] == "POLICY_VERSION_STALE"
        await db.execute("UPDATE participants SET status = 'SUSPENDED' WHERE participant_id = 'bank-a'")
        status, answer, _ = await _post(session, service, keys, _payment(amount_minor=10), "s", policy_version=2)
        assert status == 403 and answer["error"]["code"] == "PARTICIPANT_SUSPENDED"
        status, answer, _ = await _post(session, service, keys, _payment(), "x", participant="nobody")
        assert status == 403 and answer["error"]["code"] == "PARTICIPANT_UNKNOWN"
        # A refused request leaves no key behind: the same key works once allowed.
        await db.execute("UPDATE participants SET status = 'ACTIVE', window_limit_minor = 100000 "
                         "WHERE participant_id = 'bank-a'")
        status, _, headers = await _post(session, service, keys, _payment(amount_minor=4000), "w2", policy_version=2)
        assert status == 201 and headers["X-Symphony-Disposition"] == "executed"
    assert await db.fetchval("SELECT count(*) FROM payment_intents") == 2


async def test_in_progress_key_is_409_then_recoverable_after_ttl(service: Service, keys: Keys,
                                                                  db: asyncpg.Connection) -> None:
    """A holder that died after taking the lock: 409 with Retry-After, then recovery (TTL 2 s here)."""
    body = _payment()
    fingerprint = hashlib.sha256(b"POST /v1/payments\n" + body).digest()
    await db.execute("INSERT INTO idempotency_keys (participant_id, idempotency_key, request_fingerprint, "
                     "locked_at, attestation_id, expires_at) VALUES ('bank-a', 'stuck', $1, now(), 1, "
                     "now() + interval '1 day')", fingerprint)
    async with aiohttp.ClientSession() as session:
        status, answer, headers = await _post(session, service, keys, body, "stuck")
        assert status == 409 and answer["error"]["code"] == "IDEMPOTENCY_KEY_IN_PROGRESS"
        assert 1 <= int(headers["Retry-After"]) <= 2
        await db.execute("UPDATE idempotency_keys SET locked_at = now() - interval '3 seconds'")
        status, answer, headers = await _post(session, service, keys, body, "stuck")
        assert status == 201 and headers["X-Symphony-Disposition"] == "executed"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{service.admin_url}/metrics") as response:
            text = await response.text()
    assert "symphony_service_idempotency_keys_recovered_total 1.0" in text


async def test_double_tap_makes_one_intent(service: Service, keys: Keys, db: asyncpg.Connection) -> None:
    """50 concurrent identical requests (each its own attestation, as through a sidecar)."""
    body = _payment()
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(_post(session, service, keys, body, "tap") for _ in range(50)))
    dispositions = [headers["X-Symphony-Disposition"] for _, _, headers in results]
    assert dispositions.count("executed") == 1
    assert all((status, d) in ((201, "executed"), (201, "replayed"), (409, "rejected"))
               for (status, _, _), d in zip(results, dispositions, strict=True))
    assert await db.fetchval("SELECT count(*) FROM payment_intents") == 1
    assert await db.fetchval("SELECT count(*) FROM payment_outbox") == 1


def test_refuses_a_non_loopback_listener_and_an_unreachable_database(tmp_path, keys: Keys) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('listen_host = "0.0.0.0"\n')
    result = symphony_cli("service", "--config", str(config), "--database-url", "postgresql://x@127.0.0.1:1/x")
    assert result.returncode == 2 and "loopback" in result.stderr and "Traceback" not in result.stderr
    config.write_text(f'upstream_public_keys = ["{keys.public}"]\nadmin_port = 0\nlisten_port = 0\n')
    result = symphony_cli("service", "--config", str(config), "--database-url", "postgresql://x@127.0.0.1:1/x")
    assert result.returncode == 3 and "cannot connect" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
async def test_database_down_is_503_with_a_reason_then_recovers(keys: Keys, processes: Processes,
                                                                 tmp_path: Path) -> None:
    """PostgreSQL stopped with `pg_ctl -m immediate` under a running service:
    requests get 503 with a JSON reason and Retry-After (not a bare 500), no
    disposition (the sidecar records upstream_error), /readyz says why; after
    the restart the same service takes payments again."""
    async with own_postgres("service-outage") as (server, url):
        try:
            db = await connect(url)
            await add_participant(db, "bank-a")
            await db.close()
            port, admin_port = free_port(), free_port()
            config = tmp_path / "service.toml"
            config.write_text(f'listen_port = {port}\nadmin_port = {admin_port}\n'
                              f'upstream_public_keys = ["{keys.public}"]\n')
            child = processes.start("service-outage", "service", "--config", str(config), "--database-url", url)
            wait_port(port, child)
            wait_port(admin_port, child)
            service = Service(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}")
            async with aiohttp.ClientSession() as session:
                status, created, _ = await _post(session, service, keys, _payment(), "before")
                assert status == 201
                server.kill()
                for key in ("during-1", "during-2"):
                    status, answer, headers = await _post(session, service, keys, _payment(), key)
                    assert status == 503, answer
                    assert answer["error"]["code"] == "DATABASE_UNAVAILABLE"
                    assert answer["error"]["reason"] in ("connection_lost", "connection_refused", "timeout")
                    assert int(headers["Retry-After"]) >= 1
                    assert "X-Symphony-Disposition" not in headers
                    assert headers["Content-Type"].startswith("application/json")
                path = f"/v1/payments/{created['payment_id']}"
                async with session.get(service.url + path,
                                       headers=signed_headers(keys.signer, "bank-a", "GET", path, b"")) as response:
                    assert response.status == 503
                    assert (await response.json())["error"]["code"] == "DATABASE_UNAVAILABLE"
                    assert "Retry-After" in response.headers
                async with session.get(f"{service.admin_url}/readyz") as response:
                    assert response.status == 503 and "database" in await response.text()
                assert child.poll() is None
                server.restart()
                status, _, headers = await _post(session, service, keys, _payment(), "during-1")
                assert status == 201 and headers["X-Symphony-Disposition"] == "executed"
                async with session.get(f"{service.admin_url}/metrics") as response:
                    text = await response.text()
            unavailable = [line for line in text.splitlines()
                           if line.startswith("symphony_service_database_unavailable_total{")]
            assert sum(float(line.split()[-1]) for line in unavailable) == 3
            db = await connect(url)
            try:
                assert await db.fetchval("SELECT count(*) FROM payment_outbox") == 2
            finally:
                await db.close()
        finally:
            processes.stop_all()


async def test_only_active_iso_4217_currencies_are_paid(service: Service, keys: Keys, db: asyncpg.Connection) -> None:
    """Goal: a payment in anything but an active ISO 4217 currency is refused before any
    key or intent (issue: `ZZZ` and `XXX` were paid on the rail). Method: post
    three-upper-case-letter codes that are not currencies (unknown, no currency,
    test, precious metal, SDR, fund, a unit of account) and real ones, including
    real X-codes, to the running service; read payment_intents."""
    async with aiohttp.ClientSession() as session:
        for index, code in enumerate(("ZZZ", "XXX", "XTS", "XAU", "XDR", "CLF", "XAD", "kes", "KESS")):
            status, answer, headers = await _post(session, service, keys, _payment(currency=code), f"bad-{index}")
            assert (status, answer["error"]["code"]) == (422, "CURRENCY_NOT_ACCEPTED"), code
            assert {k.lower(): v for k, v in headers.items()}["x-symphony-disposition"] == "rejected"
        for index, code in enumerate(("KES", "XOF", "XAF", "EUR", "JPY", "UGX")):
            status, answer, _ = await _post(session, service, keys, _payment(currency=code), f"good-{index}")
            assert status == 201, (code, answer)
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys WHERE idempotency_key LIKE 'bad-%'") == 0
    paid = await db.fetch("SELECT currency FROM payment_intents ORDER BY currency")
    assert [row["currency"] for row in paid] == sorted(["KES", "XOF", "XAF", "EUR", "JPY", "UGX"])


async def test_duplicate_json_keys_are_refused(service: Service, keys: Keys, db: asyncpg.Connection) -> None:
    """Goal: a body naming a member twice is refused with 422 DUPLICATE_JSON_KEY, not
    read as "last one wins" (issue: duplicates were accepted). Method: post raw
    bodies with a repeated key, plainly and through a \\u escape of the same
    name, then the same body without the repeat; read payment_intents."""
    base = '"currency": "KES", "rail": "swiftpay", "destination_account": "ACC-1"'
    bodies = [f'{{"amount_minor": 1, {base}, "amount_minor": 900000}}',
              f'{{"amount_minor": 1, {base}, "r\\u0061il": "swiftpay"}}']
    async with aiohttp.ClientSession() as session:
        for index, text in enumerate(bodies):
            status, answer, _ = await _post(session, service, keys, text.encode(), f"dup-{index}")
            assert status == 422 and answer["error"]["code"] == "DUPLICATE_JSON_KEY", answer
        assert await db.fetchval("SELECT count(*) FROM payment_intents") == 0
        status, _, _ = await _post(session, service, keys, f'{{"amount_minor": 1, {base}}}'.encode(), "dup-ok")
        assert status == 201
    assert await db.fetchval("SELECT count(*) FROM payment_intents") == 1


async def test_replayed_attestation_with_a_new_key_is_409(service: Service, keys: Keys,
                                                          db: asyncpg.Connection) -> None:
    """Goal: the sidecar's signed headers copied and sent straight to the service with
    another Idempotency-Key get 409 ATTESTATION_REPLAYED, never a 500, and leave
    one outbox row and no second intent or key. Method: sign one request, post it
    with key A (executed), then the identical headers and body with keys B and C,
    concurrently; read the tables."""
    body = _payment()
    headers = signed_headers(keys.signer, "bank-a", "POST", "/v1/payments", body)
    async with aiohttp.ClientSession() as session:
        async def post(key: str) -> tuple[int, dict]:
            async with session.post(f"{service.url}/v1/payments", data=body,
                                    headers={**headers, "Idempotency-Key": key}) as response:
                return response.status, await response.json()

        status, created = await post("first")
        assert status == 201
        results = await asyncio.gather(post("copy-1"), post("copy-2"))
        for status, answer in results:
            assert (status, answer["error"]["code"]) == (409, "ATTESTATION_REPLAYED"), answer
        # A retry of the original key is still the idempotent replay of the first answer.
        status, again = await post("first")
        assert status == 201 and again == created
    assert await db.fetchval("SELECT count(*) FROM payment_outbox") == 1
    assert await db.fetchval("SELECT count(*) FROM payment_intents") == 1
    assert [r["idempotency_key"] for r in await db.fetch("SELECT idempotency_key FROM idempotency_keys")] == ["first"]
