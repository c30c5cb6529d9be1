"""Sidecar fixtures: keys and tokens, a tiny aiohttp upstream, the sidecar as a real process.

The sidecar always runs as `python -m symphony sidecar` (a supervisor plus
worker processes), exactly as an operator starts it, on 127.0.0.1 only. The
upstream runs inside the test's event loop so tests can look at what it
received. Journal streams are read back with `journal.Reader`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from multidict import CIMultiDict
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from symphony import attestation as att
from symphony import upstream_headers as uh
from symphony.db import connect
from tests.conftest import REPO_ROOT, free_port

ISSUER = "symphony-test"
AUDIENCE = "symphony-ingress"
PARTICIPANTS = ("bank-a", "mfi-b")
WAIT_SECONDS = 30.0


def _b64(value: int, length: int | None = None) -> str:
    raw = value.to_bytes(length or (value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class Keys:
    """Key material for one test module: upstream signing pair, JWT issuers, JWKS file."""

    root: Path
    signing_private: Path
    signing_public: Path
    jwks: Path
    ed25519: ed25519.Ed25519PrivateKey
    es256: ec.EllipticCurvePrivateKey
    rs256: rsa.RSAPrivateKey

    def token(self, sub: str = "bank-a", *, pv: int = 1, alg: str = "EdDSA", kid: str | None = None,
              lifetime: int = 600, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "pv": pv, "iat": now, "nbf": now - 5,
                   "exp": now + lifetime, **claims}
        key = {"EdDSA": self.ed25519, "ES256": self.es256, "RS256": self.rs256}[alg]
        return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid or f"test-{alg.lower()}"})

    def write_jwks(self, extra: list[dict[str, Any]] | None = None) -> None:
        ed_pub = self.ed25519.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ec_numbers = self.es256.public_key().public_numbers()
        rsa_numbers = self.rs256.public_key().public_numbers()
        keys = [
            {"kty": "OKP", "crv": "Ed25519", "kid": "test-eddsa", "x": base64.urlsafe_b64encode(ed_pub).rstrip(b"=").decode()},
            {"kty": "EC", "crv": "P-256", "kid": "test-es256", "x": _b64(ec_numbers.x, 32), "y": _b64(ec_numbers.y, 32)},
            {"kty": "RSA", "kid": "test-rs256", "n": _b64(rsa_numbers.n), "e": _b64(rsa_numbers.e)},
        ]
        tmp = self.jwks.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": keys + (extra or [])}))
        tmp.replace(self.jwks)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    root = tmp_path_factory.mktemp("sidecar-keys")
    private, public = root / "sidecar-upstream.pem", root / "sidecar-upstream.pub.pem"
    uh.write_keypair(private, public)
    material = Keys(root, private, public, root / "jwks.json", ed25519.Ed25519PrivateKey.generate(),
                    ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048))
    material.write_jwks()
    return material


@dataclass
class Upstream:
    """A trivial payments service: records what it received and answers."""

    port: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    delay_seconds: float = 0.0
    started: asyncio.Event = field(default_factory=asyncio.Event)
    # Called with each request as it arrives, before the answer: a test's look
    # at the world at the moment the sidecar forwarded.
    on_receive: Callable[[dict[str, Any]], None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        # "headers" keeps the names' case-insensitivity (a CIMultiDict, first value
        # per name); "header_list" has every header as sent, in order.
        self.received.append({"method": request.method, "path": request.path, "headers": CIMultiDict(request.headers),
                              "header_list": list(request.headers.items()), "body": body})
        if self.on_receive is not None:
            self.on_receive(self.received[-1])
        self.started.set()
        delay = float(request.query.get("delay", self.delay_seconds))
        if delay:
            await asyncio.sleep(delay)
        if request.method == "POST":
            return web.json_response({"status": "accepted"}, status=201, headers={uh.DISPOSITION: "executed"})
        return web.json_response({"id": request.path.rsplit("/", 1)[-1]})


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[Upstream]:
    service = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", service.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    service.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield service
    await runner.cleanup()


@pytest.fixture(scope="module")
async def module_database_url(pg_state: Any, template_database: str) -> AsyncIterator[str]:
    """A migrated database shared by one module's tests, with the test participants."""
    from tests.conftest import _dsn_for

    name = f"s_{uuid.uuid4().hex[:16]}"
    admin = await connect(pg_state.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await admin.close()
    url = _dsn_for(pg_state, name)
    conn = await connect(url)
    try:
        for participant in PARTICIPANTS:
            await conn.execute("INSERT INTO participants (participant_id) VALUES ($1)", participant)
    finally:
        await conn.close()
    yield url
    admin = await connect(pg_state.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclass
class Sidecar:
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    journal_root: Path
    node_id: str
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stream_dir(self, stream_id: int = 0) -> Path:
        return self.journal_root / self.node_id / str(stream_id)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def readyz_status(self) -> int | None:
        """The HTTP status of /readyz on the admin port; None if nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def stop(self, timeout: float = WAIT_SECONDS) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def start_sidecar(tmp: Path, *, database_url: str, keys: Keys, upstream_url: str, workers: int = 1,
                  extra: dict[str, Any] | None = None, node_id: str = "node-t", port: int | None = None,
                  admin_port: int | None = None, wait_ready: bool = True) -> Sidecar:
    """Start `symphony sidecar` and wait (bounded) until every worker listens
    (unless `wait_ready` is false: then the caller watches the process)."""
    port, admin_port = port or free_port(), admin_port or free_port()
    settings: dict[str, Any] = {
        "node_id": node_id, "listen_port": port, "admin_port": admin_port, "workers": workers,
        "journal_dir": str(tmp / "journal"), "durability": "batch", "upstream_url": upstream_url,
        "routes": [
            {"method": "POST", "prefix": "/v1/payments", "template": "/v1/payments", "executes": True},
            {"method": "GET", "prefix": "/v1/payments/", "template": "/v1/payments/{id}", "executes": False},
        ],
        "upstream_signing_key_file": str(keys.signing_private), "jwks_file": str(keys.jwks),
        "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, "heartbeat_interval_seconds": 0.5,
        "policy_poll_seconds": 1.0, "upstream_timeout_seconds": 2.0, "shutdown_timeout_seconds": 10.0,
        "jwks_reload_seconds": 0.5, "log_level": "info",
    }
    settings.update(extra or {})
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / f"sidecar-{port}.toml"
    config.write_text(_toml(settings))
    log_path = tmp / f"sidecar-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYMPHONY_")}
    env["SYMPHONY_DATABASE_URL"] = database_url
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "symphony", "sidecar", "--config", str(config)],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=REPO_ROOT, env=env)
    sidecar = Sidecar(process, port, admin_port, Path(settings["journal_dir"]), node_id, log_path)
    if not wait_ready:
        return sidecar
    deadline = time.monotonic() + WAIT_SECONDS
    while "sidecar ready" not in sidecar.log():
        if process.poll() is not None or time.monotonic() > deadline:
            sidecar.stop(5) if process.poll() is None else None
            raise AssertionError(f"sidecar did not start:\n{sidecar.log()[-4000:]}")
        time.sleep(0.05)
    return sidecar


def _toml(settings: dict[str, Any]) -> str:
    lines, tables = [], []
    for key, value in settings.items():
        if key == "routes":
            for route in value:
                tables.append("[[routes]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in route.items()))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n\n" + "\n\n".join(tables) + "\n"


@pytest.fixture(scope="module")
def sidecar_factory(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[Callable[..., Sidecar]]:
    started: list[Sidecar] = []

    def factory(database_url: str, upstream_url: str, **kwargs: Any) -> Sidecar:
        sidecar = start_sidecar(tmp_path_factory.mktemp("sidecar"), database_url=database_url, keys=keys,
                                upstream_url=upstream_url, **kwargs)
        started.append(sidecar)
        return sidecar

    yield factory
    for sidecar in started:
        if sidecar.process.poll() is None:
            sidecar.stop()


def read_stream(stream_dir: Path) -> list[tuple[Any, att.Body]]:
    """Every record of a stream with its decoded body, in seq order."""
    import journal

    return [(record, None if record.type == att.RecordType.GENESIS else att.decode(record.type, record.body))
            for record in journal.Reader(stream_dir).records(from_seq=1)]


async def wait_until(predicate: Callable[[], Any], *, timeout: float = WAIT_SECONDS, interval: float = 0.05) -> Any:
    """Poll `predicate` (plain or async) until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_SECONDS)) as session:
        yield session
