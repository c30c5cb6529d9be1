"""Sidecar benchmark: attest-before-forward against plain proxies, side by side.

    .venv/bin/python bench/sidecar_bench.py [--duration 5] [--workers 2] [--connections 64] [--rounds 3]

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
import statistics
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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

    from symphony.app.demo import jwks_for
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
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds over every configuration, each round in another order; figures are medians")
    parser.add_argument("--only", default="", help="comma-separated subset of configurations")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="symphony-sidecar-bench-"))
    procs = Processes()
    server, dsn = asyncio.run(prepare_database(work))
    rounds: list[dict[str, Row]] = []
    try:
        token = make_keys(work)
        upstream_port = free_port()
        procs.start([sys.executable, str(SERVERS), "upstream", str(upstream_port)])
        wait_port(upstream_port)
        env = {**os.environ, "SYMPHONY_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}
        configs = [c for c in CONFIGS if not args.only or c in args.only.split(",")]
        if "nginx" in configs and shutil.which("nginx") is None:
            print("nginx: not installed, skipped")
            configs.remove("nginx")
        for number in range(args.rounds):
            # Rotate the order: a load change on this shared machine then hits
            # every configuration at some point instead of always the same one.
            order = configs[number % len(configs):] + configs[:number % len(configs)]
            print(f"round {number + 1}/{args.rounds}", flush=True)
            rounds.append({name: measure(name, procs, work, token, upstream_port, dsn, env, args) for name in order})
    finally:
        procs.stop_all()
        server.stop()  # type: ignore[attr-defined]
        shutil.rmtree(work, ignore_errors=True)
    report(rounds, args)
    return 0


CONFIGS = ["direct", "plain-proxy", "nginx", "sidecar-none", "sidecar-batch", "sidecar-always", "sync-insert"]
Row = dict[str, dict[str, float]]


def measure(name: str, procs: Processes, work: Path, token: str, upstream_port: int, dsn: str,
            env: dict[str, str], args: argparse.Namespace) -> Row:
    """Start one configuration, warm it up, load it at c=N then c=1, stop it."""
    python, upstream = sys.executable, f"http://127.0.0.1:{upstream_port}"
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
        assert conf is not None
        started = [procs.start(["nginx", "-c", str(conf), "-g", "daemon off;"])]
    else:
        config = sidecar_config(work, name, port, upstream, name.split("-")[1], args.workers)
        started = [procs.start([python, "-m", "symphony", "sidecar", "--config", str(config)], env=env, cwd=ROOT)]
    wait_port(port)
    time.sleep(1.0)
    url = f"http://127.0.0.1:{port}"
    wrk(url, token, args.connections, 1.0, work)  # warm-up: connections, caches, page faults
    row = {"c": wrk(url, token, args.connections, args.duration, work),
           "c1": wrk(url, token, 1, min(args.duration, 3.0), work)}
    for process in started:
        procs.stop(process)
    print(f"  {name:15s} c={args.connections}: {row['c']['rps']:9.0f} req/s  p50 {row['c']['p50_ms']:7.2f} ms  "
          f"p99 {row['c']['p99_ms']:7.2f} ms  non-2xx {row['c']['non2xx']:.0f} | c=1: "
          f"{row['c1']['rps']:7.0f} req/s  p50 {row['c1']['p50_ms']:6.3f} ms  p99 {row['c1']['p99_ms']:6.3f} ms",
          flush=True)
    return row


def report(rounds: list[dict[str, Row]], args: argparse.Namespace) -> None:
    """Medians over the rounds; every ratio is taken within one round, then its median."""

    def median_of(name: str, load: str, key: str) -> float:
        return statistics.median(r[name][load][key] for r in rounds if name in r)

    def ratio(compute: Callable[[dict[str, Row]], float], *needs: str) -> str:
        values = [compute(r) for r in rounds if all(n in r for n in needs)]
        return f"{statistics.median(values):.2f} (rounds: {', '.join(f'{v:.2f}' for v in values)})"

    names = [n for n in CONFIGS if n in rounds[0]]
    print(f"\nmedians of {len(rounds)} rounds (workers={args.workers}, {os.cpu_count()} CPUs, wrk on the same machine):")
    print(f"| configuration | req/s c={args.connections} | p50 ms | p99 ms | p50 ms c=1 |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        print(f"| {name} | {median_of(name, 'c', 'rps'):.0f} | {median_of(name, 'c', 'p50_ms'):.2f} | "
              f"{median_of(name, 'c', 'p99_ms'):.1f} | {median_of(name, 'c1', 'p50_ms'):.3f} |")
    print("\nratios (per round, median):")
    c = args.connections
    if {"sidecar-batch", "plain-proxy"} <= set(names):
        print(f"  sidecar-batch / plain-proxy req/s at c={c}: "
              f"{ratio(lambda r: r['sidecar-batch']['c']['rps'] / r['plain-proxy']['c']['rps'], 'sidecar-batch', 'plain-proxy')}"
              " (target >= 0.90)")
        print(f"  sidecar-batch p99 - plain-proxy p99 (ms): "
              f"{ratio(lambda r: r['sidecar-batch']['c']['p99_ms'] - r['plain-proxy']['c']['p99_ms'], 'sidecar-batch', 'plain-proxy')}"
              " (target <= +1 ms)")
    if {"sidecar-batch", "sync-insert"} <= set(names):
        print(f"  sidecar-batch / sync-insert req/s at c={c}: "
              f"{ratio(lambda r: r['sidecar-batch']['c']['rps'] / r['sync-insert']['c']['rps'], 'sidecar-batch', 'sync-insert')}"
              " (target >= 2)")
    if {"sidecar-batch", "sync-insert", "direct"} <= set(names):
        def added(r: dict[str, Row]) -> float:
            base = r["direct"]["c1"]["p50_ms"]
            return (r["sidecar-batch"]["c1"]["p50_ms"] - base) / max(r["sync-insert"]["c1"]["p50_ms"] - base, 1e-9)
        print(f"  added p50 at c=1 over direct, sidecar-batch / sync-insert: "
              f"{ratio(added, 'sidecar-batch', 'sync-insert', 'direct')} (target <= 0.33)")
    if {"sidecar-batch", "nginx"} <= set(names):
        print(f"  sidecar-batch / nginx req/s: "
              f"{ratio(lambda r: r['sidecar-batch']['c']['rps'] / r['nginx']['c']['rps'], 'sidecar-batch', 'nginx')}"
              " (stretch >= 0.30, and >= 10k req/s)")
    for other in ("sidecar-none", "sidecar-always"):
        if {other, "sidecar-batch"} <= set(names):
            def against_batch(r: dict[str, Row], other: str = other) -> float:
                return r[other]["c"]["rps"] / r["sidecar-batch"]["c"]["rps"]
            print(f"  {other} / sidecar-batch req/s: {ratio(against_batch, other, 'sidecar-batch')}")


if __name__ == "__main__":
    sys.exit(main())
