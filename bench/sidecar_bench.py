"""Sidecar benchmark: attest-before-forward against plain proxies, side by side.

    .venv/bin/python bench/sidecar_bench.py [--duration 5] [--workers 2] [--connections 64]

In one run, against the same trivial upstream (one aiohttp+uvloop process):

| name | what |
|---|---|
| direct | the upstream itself |
| plain-proxy | aiohttp+uvloop reverse proxy, no attestation (bench/_bench_servers.py) |
| nginx | nginx as a reverse proxy with keep-alive upstream (if installed) |
| sidecar-none / -batch / -always | `symphony sidecar` at each journal durability |
| sync-insert | the naive design: INSERT … COMMIT into PostgreSQL per request, then forward |

Proxies run `--workers` processes. Load comes from wrk (POST with a bearer
token and a small JSON body) at `--connections` and, for the latency-added
comparison, at 1 connection. Every figure depends on the machine and on what
else runs on it; the ratios are the point. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVERS = Path(__file__).resolve().parent / "_bench_servers.py"
LOG = Path(tempfile.gettempdir()) / "symphony-sidecar-bench.log"
BODY = '{"amount_minor": 1500, "currency": "KES", "rail": "mobimoney", "destination_account": "254700000001"}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Processes:
    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        log = open(LOG, "ab")  # noqa: SIM115 - kept by the child
        process = subprocess.Popen(argv, stdout=log, stderr=log, **kwargs)  # type: ignore[call-overload]
        log.close()
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        for process in reversed(self.running):
            self.stop(process)


def wrk(url: str, token: str, connections: int, duration: float, work: Path) -> dict[str, float]:
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(BODY)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    )
    threads = 1 if connections < 4 else 2
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, int(duration))}s", "--latency", "-s", str(script),
                          url + "/v1/payments"], capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": _latency(out, "50%"), "p99_ms": _latency(out, "99%"),
            "non2xx": float(errors.group(1)) if errors else 0.0}


def _latency(out: str, label: str) -> float:
    match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
    assert match, out
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def nginx_config(work: Path, port: int, upstream_port: int, workers: int) -> Path | None:
    if shutil.which("nginx") is None:
        return None
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes {workers};
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    upstream service {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            proxy_pass http://service;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    return conf


async def prepare_database(work: Path) -> tuple[object, str]:
    """An embedded PostgreSQL 18 (fsync on: the synchronous INSERT pays a real commit)."""
    sys.path.insert(0, str(ROOT))
    from symphony.db import connect, migrate
    from symphony.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(work / "pg", fast=False)
    state = server.start()
    conn = await connect(state.dsn)
    try:
        await migrate.apply(conn)
        await conn.execute("INSERT INTO participants (participant_id) VALUES ('bench-bank') ON CONFLICT DO NOTHING")
    finally:
        await conn.close()
    return server, state.dsn


def make_keys(work: Path) -> str:
    """Sidecar signing pair, a JWKS and a token for participant bench-bank."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from symphony.demo import jwks_for
    from symphony.upstream_headers import key_id, write_keypair

    write_keypair(work / "sidecar-upstream.pem", work / "sidecar-upstream.pub.pem")
    issuer = Ed25519PrivateKey.generate()
    (work / "jwks.json").write_text(json.dumps(jwks_for(issuer)))
    now = int(time.time())
    claims = {"iss": "bench", "aud": "symphony-ingress", "sub": "bench-bank", "pv": 1, "iat": now, "exp": now + 3600}
    return jwt.encode(claims, issuer, algorithm="EdDSA", headers={"kid": key_id(issuer.public_key())})


def sidecar_config(work: Path, name: str, port: int, upstream: str, durability: str, workers: int) -> Path:
    config = work / f"{name}.toml"
    config.write_text("\n".join([
        'node_id = "bench"', f"listen_port = {port}", f"admin_port = {free_port()}", f"workers = {workers}",
        f'journal_dir = "{work / name / "journal"}"', f'durability = "{durability}"', f'upstream_url = "{upstream}"',
        f'upstream_signing_key_file = "{work / "sidecar-upstream.pem"}"', f'jwks_file = "{work / "jwks.json"}"',
        'jwt_issuer = "bench"', 'log_level = "warning"', "",
        "[[routes]]", 'method = "POST"', 'prefix = "/v1/payments"', "executes = true", "",
    ]))
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", default="", help="comma-separated subset of configurations")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="symphony-sidecar-bench-"))
    procs = Processes()
    python = sys.executable
    server, dsn = asyncio.run(prepare_database(work))
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        token = make_keys(work)
        upstream_port = free_port()
        procs.start([python, str(SERVERS), "upstream", str(upstream_port)])
        wait_port(upstream_port)
        upstream = f"http://127.0.0.1:{upstream_port}"
        env = {**os.environ, "SYMPHONY_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}
        configs = ["direct", "plain-proxy", "nginx", "sidecar-none", "sidecar-batch", "sidecar-always", "sync-insert"]
        if args.only:
            configs = [c for c in configs if c in args.only.split(",")]
        for name in configs:
            port = free_port()
            started: list[subprocess.Popen[bytes]] = []
            if name == "direct":
                port = upstream_port
            elif name == "plain-proxy":
                started = [procs.start([python, str(SERVERS), "proxy", str(port), upstream]) for _ in range(args.workers)]
            elif name == "sync-insert":
                started = [procs.start([python, str(SERVERS), "insert-proxy", str(port), upstream, dsn])
                           for _ in range(args.workers)]
            elif name == "nginx":
                conf = nginx_config(work, port, upstream_port, args.workers)
                if conf is None:
                    print("nginx: not installed, skipped")
                    continue
                started = [procs.start(["nginx", "-c", str(conf), "-g", "daemon off;"])]
            else:
                config = sidecar_config(work, name, port, upstream, name.split("-")[1], args.workers)
                started = [procs.start([python, "-m", "symphony", "sidecar", "--config", str(config)], env=env, cwd=ROOT)]
            wait_port(port)
            time.sleep(1.0)
            url = f"http://127.0.0.1:{port}"
            wrk(url, token, args.connections, 1.0, work)  # warm-up: connections, caches, JIT-free but page faults
            results[name] = {"c": wrk(url, token, args.connections, args.duration, work),
                             "c1": wrk(url, token, 1, min(args.duration, 3.0), work)}
            for process in started:
                procs.stop(process)
            row = results[name]
            print(f"{name:15s} c={args.connections}: {row['c']['rps']:9.0f} req/s  p50 {row['c']['p50_ms']:7.2f} ms  "
                  f"p99 {row['c']['p99_ms']:7.2f} ms  non-2xx {row['c']['non2xx']:.0f} | c=1: "
                  f"{row['c1']['rps']:7.0f} req/s  p50 {row['c1']['p50_ms']:6.3f} ms  p99 {row['c1']['p99_ms']:6.3f} ms",
                  flush=True)
    finally:
        procs.stop_all()
        server.stop()  # type: ignore[attr-defined]
        shutil.rmtree(work, ignore_errors=True)
    report(results, args)
    return 0


def report(results: dict[str, dict[str, dict[str, float]]], args: argparse.Namespace) -> None:
    print(f"\nratios (workers={args.workers}, {os.cpu_count()} CPUs, wrk on the same machine):")
    batch, plain = results.get("sidecar-batch"), results.get("plain-proxy")
    insert, direct, nginx = results.get("sync-insert"), results.get("direct"), results.get("nginx")
    if batch and plain:
        print(f"  sidecar-batch / plain-proxy req/s at c={args.connections}: "
              f"{batch['c']['rps'] / plain['c']['rps']:.2f} (target >= 0.90)")
        print(f"  sidecar-batch p99 - plain-proxy p99: {batch['c']['p99_ms'] - plain['c']['p99_ms']:+.2f} ms (target <= +1 ms)")
    if batch and insert:
        print(f"  sidecar-batch / sync-insert req/s at c={args.connections}: "
              f"{batch['c']['rps'] / insert['c']['rps']:.2f} (target >= 2)")
        if direct:
            added_batch = batch["c1"]["p50_ms"] - direct["c1"]["p50_ms"]
            added_insert = insert["c1"]["p50_ms"] - direct["c1"]["p50_ms"]
            print(f"  added p50 at c=1 over direct: sidecar-batch {added_batch:.3f} ms, sync-insert {added_insert:.3f} ms "
                  f"(ratio {added_batch / added_insert if added_insert > 0 else float('nan'):.2f}, target <= 0.33)")
    if batch and nginx:
        print(f"  sidecar-batch / nginx req/s: {batch['c']['rps'] / nginx['c']['rps']:.2f} (stretch >= 0.30, >= 10k req/s)")
    for level in ("none", "always"):
        other = results.get(f"sidecar-{level}")
        if other and batch:
            print(f"  sidecar-{level} / sidecar-batch req/s: {other['c']['rps'] / batch['c']['rps']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
