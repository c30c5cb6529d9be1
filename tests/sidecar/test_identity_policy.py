"""Identity and the kill-switch over real HTTP (invariants 9 and 10).

One sidecar process for the module; each test looks at the journal records
that carry the attestation ids it was answered with."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import urllib.request
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from symphony import attestation as att
from symphony import upstream_headers as uh
from symphony.attestation import RecordType
from symphony.db import connect
from tests.sidecar.conftest import Keys, Sidecar, Upstream, read_stream, wait_until

PROPAGATION_WAIT_SECONDS = 10.0  # a deadline for the wait, not a measured bound


@pytest.fixture(scope="module")
def sidecar(sidecar_factory: Any, module_database_url: str, upstream: Upstream) -> Sidecar:
    return sidecar_factory(module_database_url, upstream.url, extra={
        "rate_limit_unauthenticated_per_second": 1.0, "rate_limit_unauthenticated_burst": 15,
    })


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _attested(sidecar: Sidecar, attestation_id: int) -> tuple[att.IngressBody, att.OutcomeBody] | None:
    bodies = {r.type: b for r, b in read_stream(sidecar.stream_dir(0)) if r.attestation_id == attestation_id}
    if RecordType.INGRESS in bodies and RecordType.OUTCOME in bodies:
        return bodies[RecordType.INGRESS], bodies[RecordType.OUTCOME]  # type: ignore[return-value]
    return None


async def _post(http: aiohttp.ClientSession, sidecar: Sidecar, token: str | None) -> tuple[int, dict[str, Any], int]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with http.post(f"{sidecar.url}/v1/payments", data=b'{"amount": 1}', headers=headers) as response:
        payload = await response.json()
        return response.status, payload, int(response.headers.get(uh.ATTESTATION_ID, "0"))


async def test_bad_tokens_are_refused_and_attested(sidecar: Sidecar, upstream: Upstream, keys: Keys,
                                                   http: aiohttp.ClientSession) -> None:
    """Goal: forged, expired, wrong-audience, alg=none and HS256-with-public-key
    tokens get 401 with the reason, are attested (participant unknown, OUTCOME
    rejected) and never reach the upstream."""
    now = int(time.time())
    claims = {"iss": "symphony-test", "aud": "symphony-ingress", "sub": "bank-a", "pv": 1, "exp": now + 60}
    import jwt

    forged = jwt.encode(claims, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "test-eddsa"})
    public_pem = keys.ed25519.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = _b64(json.dumps({"alg": "HS256", "kid": "test-eddsa"}).encode()) + "." + _b64(json.dumps(claims).encode())
    hs256 = signing_input + "." + _b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    none = _b64(json.dumps({"alg": "none", "kid": "test-eddsa"}).encode()) + "." + _b64(json.dumps(claims).encode()) + "."
    cases = [(forged, "bad_signature"), (keys.token(lifetime=-120), "token_expired"),
             (keys.token(aud="elsewhere"), "wrong_audience"), (none, "unsupported_alg"),
             (hs256, "unsupported_alg"), (None, "missing_credentials")]
    before = len(upstream.received)
    for token, reason in cases:
        status, payload, attestation_id = await _post(http, sidecar, token)
        assert (status, payload["error"]) == (401, reason)
        ingress, outcome = await wait_until(lambda: _attested(sidecar, attestation_id))
        assert ingress.participant_id == "" and ingress.verdict == reason
        assert (outcome.status, outcome.disposition, outcome.reason) == (401, "rejected", reason)
    assert len(upstream.received) == before, "a refused request never reaches the upstream"


async def test_stale_policy_version_and_suspension_are_refused_within_the_bound(
        sidecar: Sidecar, keys: Keys, module_database_url: str, http: aiohttp.ClientSession) -> None:
    """Goal: invariant 10. Method: bump bank-a's policy_version and suspend mfi-b in
    PostgreSQL; poll (with a deadline) until the old token gets 403, and check that
    /metrics observed the propagation. How long it takes is the sidecar's own
    measurement (symphony_sidecar_policy_propagation_seconds), not asserted here."""
    await wait_until(lambda: sidecar.readyz_status() == 200)
    old_token, new_token = keys.token("bank-a", pv=1), keys.token("bank-a", pv=2)
    assert (await _post(http, sidecar, old_token))[0] == 201
    db = await connect(module_database_url)
    try:
        await db.execute("UPDATE participants SET policy_version = 2 WHERE participant_id = 'bank-a'")
        status, payload, attestation_id = await _poll_until_refused(http, sidecar, old_token)
        assert (status, payload["error"]) == (403, "stale_policy_version")
        ingress, outcome = await wait_until(lambda: _attested(sidecar, attestation_id))
        assert ingress.participant_id == "bank-a" and outcome.disposition == "rejected"
        assert (await _post(http, sidecar, new_token))[0] == 201
        await db.execute("UPDATE participants SET status = 'SUSPENDED' WHERE participant_id = 'mfi-b'")
        status, payload, _ = await _poll_until_refused(http, sidecar, keys.token("mfi-b"))
        assert (status, payload["error"]) == (403, "participant_suspended")
    finally:
        await db.execute("UPDATE participants SET status = 'ACTIVE' WHERE participant_id = 'mfi-b'")
        await db.close()
    assert (await _post(http, sidecar, keys.token("nobody")))[1]["error"] == "unknown_participant"

    def propagation_observed() -> bool:
        line = _metric_line(sidecar, "symphony_sidecar_policy_propagation_seconds_count")
        return line is not None and float(line.split()[-1]) >= 1

    await wait_until(propagation_observed, timeout=10)


async def _poll_until_refused(http: aiohttp.ClientSession, sidecar: Sidecar, token: str) -> tuple[int, dict[str, Any], int]:
    deadline = time.monotonic() + PROPAGATION_WAIT_SECONDS
    while True:
        status, payload, attestation_id = await _post(http, sidecar, token)
        if status == 403 or time.monotonic() > deadline:
            return status, payload, attestation_id
        await asyncio.sleep(0.005)


async def test_jwks_rotation_is_picked_up(sidecar: Sidecar, keys: Keys, http: aiohttp.ClientSession) -> None:
    """Goal: a key added to the JWKS file works without a restart."""
    import jwt

    rotated = ed25519.Ed25519PrivateKey.generate()
    raw = rotated.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    now = int(time.time())
    token = jwt.encode({"iss": "symphony-test", "aud": "symphony-ingress", "sub": "bank-a", "pv": 2, "exp": now + 60},
                       rotated, algorithm="EdDSA", headers={"kid": "rotated-1"})
    assert (await _post(http, sidecar, token))[1]["error"] == "unknown_kid"
    keys.write_jwks([{"kty": "OKP", "crv": "Ed25519", "kid": "rotated-1", "x": _b64(raw)}])
    try:
        deadline = time.monotonic() + 10
        while (await _post(http, sidecar, token))[0] != 201:
            assert time.monotonic() < deadline, "rotated key not picked up"
            await asyncio.sleep(0.1)
    finally:
        keys.write_jwks()


async def test_unauthenticated_flood_is_rate_limited_and_counted(sidecar: Sidecar, http: aiohttp.ClientSession) -> None:
    """Goal: a flood without credentials cannot fill the journal, and what is
    refused is still counted. Method: 40 requests without a token; beyond the
    burst they get 429 and a DROPPED record counts them."""
    statuses = [(await _post(http, sidecar, None))[0] for _ in range(40)]
    limited = statuses.count(429)
    assert limited >= 10 and set(statuses) <= {401, 429}

    def dropped() -> int:
        total = 0
        for record, body in read_stream(sidecar.stream_dir(0)):
            if record.type == RecordType.DROPPED:
                total += body.counts.get("rate_limited_unauthenticated", 0)  # type: ignore[union-attr]
        return total if total >= limited else 0

    assert await wait_until(dropped) == limited


def _metric_line(sidecar: Sidecar, name: str) -> str | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{sidecar.admin_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return next((line for line in text.splitlines() if line.startswith(name)), None)
