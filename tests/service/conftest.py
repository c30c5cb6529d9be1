"""Service test fixtures: the real `symphony service` process, and a minimal
in-test stand-in for the sidecar that signs the upstream headers with
HeaderSigner (the real sidecar is another daemon; the contract is the headers).

The stand-in takes the participant from the bearer token's `sub` claim WITHOUT
verifying it: it exists only to exercise the service and `demo traffic`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from symphony import lifecycle
from symphony.upstream_headers import Attested, HeaderSigner, load_private_key, write_keypair
from tests.relayer.conftest import Processes, add_participant, free_port, processes, wait_port  # noqa: F401

_attestation_ids = itertools.count(5_000_000)
_seqs = itertools.count(1)


@dataclass
class Keys:
    private: Path
    public: Path

    @property
    def signer(self) -> HeaderSigner:
        return HeaderSigner(load_private_key(self.private))


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    k = Keys(tmp_path / "keys" / "sidecar-upstream.pem", tmp_path / "keys" / "sidecar-upstream.pub.pem")
    write_keypair(k.private, k.public)
    return k


def signed_headers(signer: HeaderSigner, participant: str, method: str, path: str, body: bytes,
                   *, policy_version: int = 1) -> dict[str, str]:
    attested = Attested(attestation_id=next(_attestation_ids), node_id="node-t", stream_id=0,
                        stream_seq=next(_seqs), participant_id=participant, policy_version=policy_version,
                        body_sha256_hex=hashlib.sha256(body).hexdigest())
    return signer.headers(attested, method, path)


@dataclass
class Service:
    url: str
    admin_url: str


@pytest.fixture
async def service(database_url: str, db: asyncpg.Connection, keys: Keys, processes: Processes,
                  tmp_path: Path) -> Service:
    for participant in ("bank-a", "bank-b"):
        await add_participant(db, participant)
    port, admin_port = free_port(), free_port()
    config = tmp_path / "service.toml"
    config.write_text(f'listen_port = {port}\nadmin_port = {admin_port}\n'
                      f'upstream_public_keys = ["{keys.public}"]\nidempotency_lock_ttl_seconds = 2.0\n'
                      'rails = ["swiftpay", "mobimoney", "mtn_momo", "airtel_money", "iso20022"]\n')
    child = processes.start("service", "service", "--config", str(config), "--database-url", database_url)
    wait_port(port, child)
    wait_port(admin_port, child)
    return Service(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}")


def _unverified_subject(authorization: str) -> str:
    token = authorization.removeprefix("Bearer ").strip()
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


@pytest.fixture
async def signing_proxy(service: Service, keys: Keys) -> AsyncIterator[str]:
    """A minimal signer in front of the service (stand-in for the sidecar)."""
    signer = keys.signer
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        participant = _unverified_subject(request.headers.get("Authorization", ""))
        headers = signed_headers(signer, participant, request.method, request.rel_url.raw_path, body)
        headers["Idempotency-Key"] = request.headers.get("Idempotency-Key", "")
        async with session.request(request.method, service.url + str(request.rel_url), data=body,
                                   headers=headers) as upstream:
            data = await upstream.read()
            keep = {k: v for k, v in upstream.headers.items()
                    if k.lower() in ("x-symphony-disposition", "retry-after", "idempotent-replayed")}
            return web.Response(status=upstream.status, body=data, headers=keep, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{lifecycle.bound_port(runner)}"
    finally:
        await runner.cleanup()
        await session.close()
