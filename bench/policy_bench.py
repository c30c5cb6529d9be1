"""Revocation benchmark: how long a policy change takes to reach a sidecar.

    .venv/bin/python bench/policy_bench.py [--rounds 20] [--poll-seconds 1.0]

Invariant 10 (bounded revocation) promises that bumping a participant's
policy_version takes effect at every sidecar within a bounded time. The tests
check that it takes effect (tests/sidecar/test_identity_policy.py); this
measures how long it takes. One sidecar (`symphony sidecar`, one worker) in
front of a trivial upstream, the embedded PostgreSQL 18; each round bumps
bank's policy_version with an UPDATE and polls with the old token until the
sidecar answers 403, then issues a token for the new version. It prints the
delays from COMMIT to the first 403 (min, p50, p90, max) and the sidecar's own
histogram (symphony_sidecar_policy_propagation_seconds). The bound to compare
with is the configured policy_poll_seconds (the fallback when a LISTEN
notification is lost). Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PARTICIPANT = "bench-bank"
ISSUER = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(url: str, token: str) -> int:
    request = urllib.request.Request(url, data=b'{"amount": 1}', method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json", "Idempotency-Key": str(time.time_ns())})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def metric_lines(admin_port: int, name: str) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as answer:
        return [line for line in answer.read().decode().splitlines() if line.startswith(name)]


async def run(args: argparse.Namespace, work: Path) -> None:
    import jwt
    from aiohttp import web
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from symphony.app.demo import jwks_for
    from symphony.db import connect, migrate
    from symphony.embedded import EmbeddedPostgres
    from symphony.upstream_headers import key_id, write_keypair

    server = EmbeddedPostgres(work / "pg", fast=True)
    state = server.start()
    sidecar: subprocess.Popen[bytes] | None = None
    runner: web.AppRunner | None = None
    try:
        db = await connect(state.dsn)
        await migrate.apply(db)
        await db.execute("INSERT INTO participants (participant_id) VALUES ($1)", PARTICIPANT)

        async def answer(_: web.Request) -> web.Response:
            return web.json_response({"status": "accepted"}, status=201)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        upstream_port = free_port()
        await web.TCPSite(runner, "127.0.0.1", upstream_port).start()

        write_keypair(work / "up.pem", work / "up.pub.pem")
        issuer = Ed25519PrivateKey.generate()
        (work / "jwks.json").write_text(json.dumps(jwks_for(issuer)))

        def token(version: int) -> str:
            now = int(time.time())
            claims = {"iss": ISSUER, "aud": "symphony-ingress", "sub": PARTICIPANT, "pv": version, "iat": now,
                      "exp": now + 3600}
            return jwt.encode(claims, issuer, algorithm="EdDSA", headers={"kid": key_id(issuer.public_key())})

        port, admin_port = free_port(), free_port()
        config = work / "sidecar.toml"
        config.write_text("\n".join([
            'node_id = "bench"', f"listen_port = {port}", f"admin_port = {admin_port}", "workers = 1",
            f'journal_dir = "{work / "journal"}"', 'durability = "batch"',
            f'upstream_url = "http://127.0.0.1:{upstream_port}"',
            f'upstream_signing_key_file = "{work / "up.pem"}"', f'jwks_file = "{work / "jwks.json"}"',
            f'jwt_issuer = "{ISSUER}"', f"policy_poll_seconds = {args.poll_seconds}", 'log_level = "warning"', "",
            "[[routes]]", 'method = "POST"', 'prefix = "/v1/payments"', "executes = true", "",
        ]))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYMPHONY_")}
        env["SYMPHONY_DATABASE_URL"] = state.dsn
        with (work / "sidecar.log").open("wb") as log:
            sidecar = subprocess.Popen([sys.executable, "-m", "symphony", "sidecar", "--config", str(config)],
                                       stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        url = f"http://127.0.0.1:{port}/v1/payments"
        deadline = time.monotonic() + 60
        while await asyncio.to_thread(post, url, token(1)) != 201:
            if sidecar.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"sidecar did not serve: {(work / 'sidecar.log').read_text()[-2000:]}")
            await asyncio.sleep(0.1)

        delays_ms = []
        for version in range(2, args.rounds + 2):
            old = token(version - 1)
            await db.execute("UPDATE participants SET policy_version = $1 WHERE participant_id = $2",
                             version, PARTICIPANT)
            committed = time.perf_counter()
            while (status := await asyncio.to_thread(post, url, old)) != 403:
                if time.perf_counter() - committed > 10 * args.poll_seconds + 10:
                    raise SystemExit(f"round {version}: still {status} long after the UPDATE")
            delays_ms.append((time.perf_counter() - committed) * 1000)
            while await asyncio.to_thread(post, url, token(version)) != 201:  # the new version is in force
                await asyncio.sleep(0.01)
        await db.close()

        ordered = sorted(delays_ms)
        print(f"policy propagation, UPDATE committed -> first 403, {len(ordered)} rounds "
              f"(policy_poll_seconds = {args.poll_seconds}):")
        print(f"  min {ordered[0]:.1f} ms  p50 {statistics.median(ordered):.1f} ms  "
              f"p90 {ordered[int(0.9 * (len(ordered) - 1))]:.1f} ms  max {ordered[-1]:.1f} ms")
        # The sidecar's own histogram (updated_at -> applied), published once per housekeeping tick.
        name = "symphony_sidecar_policy_propagation_seconds"
        published: list[str] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            published = [line for line in metric_lines(admin_port, name) if "_sum" in line or "_count" in line]
            if any(line.startswith(name + "_count") and float(line.split()[-1]) >= len(ordered) for line in published):
                break
            await asyncio.sleep(0.2)
        for line in published:
            print(f"  sidecar: {line}")
    finally:
        if sidecar is not None and sidecar.poll() is None:
            sidecar.send_signal(signal.SIGTERM)
            try:
                sidecar.wait(30)
            except subprocess.TimeoutExpired:
                sidecar.kill()
        if runner is not None:
            await runner.cleanup()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="the sidecar's policy_poll_seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="symphony-policy-bench-") as tmp:
        asyncio.run(run(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
