"""Sidecar benchmark: attest-before-forward against the strongest honest baselines, in one run.

    .venv/bin/python bench/sidecar_bench.py [--duration 3] [--workers 2] [--connections 64] [--rounds 5]

Needs wrk and nginx (bench only, never a Symphony dependency:
`apt-get install wrk nginx-light`; without nginx that row is skipped).
Every configuration forwards to the same trivial upstream (one aiohttp+uvloop
process) and runs `--workers` worker processes:

| name | what |
|---|---|
| direct | the upstream itself (no proxy) |
| nginx | nginx as a reverse proxy, keep-alive upstream connections |
| plain-proxy | aiohttp's server + the sidecar's own upstream client (UpstreamPool), no attestation |
| sidecar-unattested | the sidecar's worker and handler with the journal replaced by a no-op (bench/_bench_servers.py) |
| sidecar-none / -batch / -always | `symphony sidecar` at each journal durability (no log key: no checkpoints) |
| sidecar-checkpoints | sidecar-batch with a node log key: a signed checkpoint (CHECKPOINT record + published file) every checkpoint_interval_seconds (default 1 s), as `symphony up` runs it |
| sync-insert | the naive design: INSERT … COMMIT into PostgreSQL 18 per request, then forward (same client) |

Every server starts once; then `--rounds` rounds each load every
configuration in turn, each round in a rotated order (a load change on this
shared machine hits each configuration at some point rather than always the
same one). A turn: 1 s warm-up, `--duration` s at `--connections`, 2 s at one
connection. Load is wrk (POST, bearer token, small JSON body) on the same
machine. Figures are medians over the rounds; every ratio is taken within
one round, then its median is shown with the per-round values. The ratios
are the point: absolute figures move with the machine and its other load.
Not a test: it asserts nothing.
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
        process: subprocess.Popen[bytes] = subprocess.Popen(argv, stdout=log, stderr=log,  # type: ignore[call-overload]
                                                            **kwargs)
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
    requests = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "requests": requests, "p50_ms": _latency(out, "50%"), "p99_ms": _latency(out, "99%"),
            "non2xx": float(errors.group(1)) if errors else 0.0}


def _latency(out: str, label: str) -> float:
    match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
    assert match, out
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _stat(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()  # fields from `state` on
    except OSError:
        return None


def tree_cpu_seconds(roots: list[int]) -> tuple[float, float]:
    """User and system CPU seconds of these processes and all their descendants (every thread)."""
    stats = {pid: fields for pid in os.listdir("/proc") if pid.isdigit() and (fields := _stat(pid))}
    children: dict[str, list[str]] = {}
    for pid, fields in stats.items():
        children.setdefault(fields[1], []).append(pid)
    todo, user, system = [str(pid) for pid in roots], 0, 0
    while todo:
        pid = todo.pop()
        if pid in stats:
            user += int(stats[pid][11])
            system += int(stats[pid][12])
        todo.extend(children.get(pid, []))
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def nginx_config(work: Path, port: int, upstream_port: int, workers: int) -> Path:
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
    write_keypair(work / "node-log.pem", work / "node-log.pub.pem")  # signs sidecar-checkpoints' checkpoints
    issuer = Ed25519PrivateKey.generate()
    (work / "jwks.json").write_text(json.dumps(jwks_for(issuer)))
    now = int(time.time())
    claims = {"iss": "bench", "aud": "symphony-ingress", "sub": "bench-bank", "pv": 1, "iat": now, "exp": now + 3600}
    return jwt.encode(claims, issuer, algorithm="EdDSA", headers={"kid": key_id(issuer.public_key())})


def sidecar_config(work: Path, name: str, port: int, upstream: str, durability: str, workers: int,
                   checkpoints: bool = False) -> Path:
    config = work / f"{name}.toml"
    log_key = [f'log_key_file = "{work / "node-log.pem"}"',
               f'checkpoint_publish_dir = "{work / name / "tlog"}"'] if checkpoints else []
    config.write_text("\n".join([*log_key,
        'node_id = "bench"', f"listen_port = {port}", f"admin_port = {free_port()}", f"workers = {workers}",
        f'journal_dir = "{work / name / "journal"}"', f'durability = "{durability}"', f'upstream_url = "{upstream}"',
        f'upstream_signing_key_file = "{work / "sidecar-upstream.pem"}"', f'jwks_file = "{work / "jwks.json"}"',
        'jwt_issuer = "bench"', 'log_level = "warning"', "",
        "[[routes]]", 'method = "POST"', 'prefix = "/v1/payments"', "executes = true", "",
    ]))
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds at --connections per turn")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds over every configuration, each round in another order; figures are medians")
    parser.add_argument("--only", default="", help="comma-separated subset of configurations")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    configs = [c for c in CONFIGS if not args.only or c in args.only.split(",")]
    if "nginx" in configs and shutil.which("nginx") is None:
        print("nginx: not installed (apt-get install nginx-light), skipped")
        configs.remove("nginx")
    work = Path(tempfile.mkdtemp(prefix="symphony-sidecar-bench-"))
    procs = Processes()
    server, dsn = asyncio.run(prepare_database(work))
    rounds: list[dict[str, Row]] = []
    load_before = os.getloadavg()
    try:
        token = make_keys(work)
        upstream_port = free_port()
        procs.start([sys.executable, str(SERVERS), "upstream", str(upstream_port)])
        wait_port(upstream_port)
        env = {**os.environ, "SYMPHONY_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}
        upstream_pid = procs.running[0].pid
        ports = {name: start(name, procs, work, upstream_port, upstream_pid, dsn, env, args) for name in configs}
        for port, _ in ports.values():
            wait_port(port)
        time.sleep(2.0)  # policy caches loaded, pools idle
        for number in range(args.rounds):
            order = configs[number % len(configs):] + configs[:number % len(configs)]
            print(f"round {number + 1}/{args.rounds} (load {os.getloadavg()[0]:.2f})", flush=True)
            rounds.append({name: measure(name, *ports[name], work, token, args) for name in order})
    finally:
        procs.stop_all()
        server.stop()  # type: ignore[attr-defined]
        shutil.rmtree(work, ignore_errors=True)
    report(rounds, args, load_before, os.getloadavg())
    return 0


CONFIGS = ["direct", "nginx", "plain-proxy", "sidecar-unattested", "sidecar-none", "sidecar-batch", "sidecar-checkpoints",
           "sidecar-always", "sync-insert"]
Row = dict[str, dict[str, float]]


def start(name: str, procs: Processes, work: Path, upstream_port: int, upstream_pid: int, dsn: str,
          env: dict[str, str], args: argparse.Namespace) -> tuple[int, list[int]]:
    """Start one configuration's processes; its port and the processes whose CPU time is its own."""
    python, upstream = sys.executable, f"http://127.0.0.1:{upstream_port}"
    if name == "direct":
        return upstream_port, [upstream_pid]
    port = free_port()
    first = len(procs.running)
    if name == "plain-proxy":
        for _ in range(args.workers):
            procs.start([python, str(SERVERS), "proxy", str(port), upstream])
    elif name == "sync-insert":
        for _ in range(args.workers):
            procs.start([python, str(SERVERS), "insert-proxy", str(port), upstream, dsn])
    elif name == "nginx":
        procs.start(["nginx", "-c", str(nginx_config(work, port, upstream_port, args.workers)), "-g", "daemon off;"])
    elif name == "sidecar-unattested":
        config = sidecar_config(work, name, port, upstream, "none", args.workers)
        procs.start([python, str(SERVERS), "unattested", str(config), str(args.workers)], env=env, cwd=ROOT)
    elif name == "sidecar-checkpoints":
        config = sidecar_config(work, name, port, upstream, "batch", args.workers, checkpoints=True)
        procs.start([python, "-m", "symphony", "sidecar", "--config", str(config)], env=env, cwd=ROOT)
    else:
        config = sidecar_config(work, name, port, upstream, name.split("-")[1], args.workers)
        procs.start([python, "-m", "symphony", "sidecar", "--config", str(config)], env=env, cwd=ROOT)
    return port, [process.pid for process in procs.running[first:]]


def measure(name: str, port: int, pids: list[int], work: Path, token: str, args: argparse.Namespace) -> Row:
    """One turn: warm up, load at c=N then at c=1.

    `cpu_us` is the CPU time (user + system, every thread) the configuration's
    own processes spent per request at c=N: the proxy's cost, whatever else
    runs on the machine (the upstream's share is not in it, except for
    `direct`; kernel threads working for it, such as write-back, are not either).
    """
    url = f"http://127.0.0.1:{port}"
    wrk(url, token, args.connections, 1.0, work)  # warm-up: connections, caches, page faults
    user_before, system_before = tree_cpu_seconds(pids)
    row = {"c": wrk(url, token, args.connections, args.duration, work)}
    user_after, system_after = tree_cpu_seconds(pids)
    per_request = 1e6 / max(1.0, row["c"]["requests"])
    row["c"]["cpu_us"] = (user_after - user_before + system_after - system_before) * per_request
    row["c"]["sys_us"] = (system_after - system_before) * per_request
    row["c1"] = wrk(url, token, 1, 2.0, work)
    print(f"  {name:18s} c={args.connections}: {row['c']['rps']:7.0f} req/s  p50 {row['c']['p50_ms']:6.2f} ms  "
          f"p99 {row['c']['p99_ms']:6.2f} ms  {row['c']['cpu_us']:4.0f} µs CPU/req ({row['c']['sys_us']:3.0f} sys)  "
          f"non-2xx {row['c']['non2xx']:.0f} | c=1: "
          f"{row['c1']['rps']:6.0f} req/s  p50 {row['c1']['p50_ms']:6.3f} ms  p99 {row['c1']['p99_ms']:6.3f} ms",
          flush=True)
    return row


def report(rounds: list[dict[str, Row]], args: argparse.Namespace, load_before: tuple[float, float, float],
           load_after: tuple[float, float, float]) -> None:
    """Medians over the rounds; every ratio is taken within one round, then its median."""

    def median_of(name: str, load: str, key: str) -> float:
        return statistics.median(r[name][load][key] for r in rounds if name in r)

    def ratio(label: str, compute: Callable[[dict[str, Row]], float], needs: tuple[str, ...], target: str = "",
              met: Callable[[float], bool] | None = None) -> None:
        if not all(n in names for n in needs):
            return
        values = [compute(r) for r in rounds]
        median = statistics.median(values)
        line = f"  {label}: {median:.2f} (rounds: {', '.join(f'{v:.2f}' for v in values)})"
        if target:
            line += f" target {target}"
        if met is not None:
            line += f": median {'met' if met(median) else 'NOT met'}, {sum(map(met, values))} of {len(values)} rounds"
        print(line)

    names = [n for n in CONFIGS if n in rounds[0]]
    c = args.connections
    print(f"\nmedians of {len(rounds)} rounds (workers={args.workers}, {os.cpu_count()} CPUs, wrk on the same "
          f"machine; 1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} after):")
    print(f"| configuration | req/s c={c} | p50 ms | p99 ms | CPU µs/req (of it system) | p50 ms c=1 | p99 ms c=1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        print(f"| {name} | {median_of(name, 'c', 'rps'):.0f} | {median_of(name, 'c', 'p50_ms'):.2f} | "
              f"{median_of(name, 'c', 'p99_ms'):.1f} | {median_of(name, 'c', 'cpu_us'):.0f} ({median_of(name, 'c', 'sys_us'):.0f}) | "
              f"{median_of(name, 'c1', 'p50_ms'):.3f} | {median_of(name, 'c1', 'p99_ms'):.3f} |")

    def rps(a: str, b: str) -> Callable[[dict[str, Row]], float]:
        return lambda r: r[a]["c"]["rps"] / r[b]["c"]["rps"]

    def p99_delta(a: str, b: str) -> Callable[[dict[str, Row]], float]:
        return lambda r: r[a]["c"]["p99_ms"] - r[b]["c"]["p99_ms"]

    def added_c1(r: dict[str, Row]) -> float:
        base = r["direct"]["c1"]["p50_ms"]
        return (r["sidecar-batch"]["c1"]["p50_ms"] - base) / max(r["sync-insert"]["c1"]["p50_ms"] - base, 1e-9)

    print("\nratios (each within a round; median, then every round):")
    ratio(f"sidecar-batch / sidecar-unattested req/s at c={c}", rps("sidecar-batch", "sidecar-unattested"),
          ("sidecar-batch", "sidecar-unattested"), ">= 0.90", lambda v: v >= 0.90)
    ratio("sidecar-batch p99 - sidecar-unattested p99 (ms)", p99_delta("sidecar-batch", "sidecar-unattested"),
          ("sidecar-batch", "sidecar-unattested"), "<= +1 ms", lambda v: v <= 1.0)
    ratio("sidecar-checkpoints / sidecar-batch req/s (checkpoints on / off)", rps("sidecar-checkpoints", "sidecar-batch"),
          ("sidecar-checkpoints", "sidecar-batch"), ">= 0.95", lambda v: v >= 0.95)
    ratio("sidecar-checkpoints / sidecar-batch CPU µs per request (less noisy than req/s on a shared machine)",
          lambda r: r["sidecar-checkpoints"]["c"]["cpu_us"] / r["sidecar-batch"]["c"]["cpu_us"],
          ("sidecar-checkpoints", "sidecar-batch"), "<= 1.05", lambda v: v <= 1.05)
    ratio("sidecar-checkpoints p99 - sidecar-batch p99 (ms)", p99_delta("sidecar-checkpoints", "sidecar-batch"),
          ("sidecar-checkpoints", "sidecar-batch"))
    ratio("sidecar-none / sidecar-unattested req/s", rps("sidecar-none", "sidecar-unattested"),
          ("sidecar-none", "sidecar-unattested"))
    ratio("sidecar-always / sidecar-unattested req/s", rps("sidecar-always", "sidecar-unattested"),
          ("sidecar-always", "sidecar-unattested"))
    ratio("sidecar-unattested / plain-proxy req/s", rps("sidecar-unattested", "plain-proxy"),
          ("sidecar-unattested", "plain-proxy"))
    ratio("sidecar-batch / plain-proxy req/s", rps("sidecar-batch", "plain-proxy"), ("sidecar-batch", "plain-proxy"))
    ratio("sidecar-batch p99 - plain-proxy p99 (ms)", p99_delta("sidecar-batch", "plain-proxy"),
          ("sidecar-batch", "plain-proxy"))
    ratio("plain-proxy / nginx req/s", rps("plain-proxy", "nginx"), ("plain-proxy", "nginx"))
    ratio("sidecar-batch / nginx req/s", rps("sidecar-batch", "nginx"), ("sidecar-batch", "nginx"))
    ratio("sidecar-batch / sync-insert req/s", rps("sidecar-batch", "sync-insert"), ("sidecar-batch", "sync-insert"),
          ">= 2", lambda v: v >= 2.0)
    ratio("added p50 at c=1 over direct, sidecar-batch / sync-insert", added_c1,
          ("sidecar-batch", "sync-insert", "direct"), "<= 0.33", lambda v: v <= 0.33)


if __name__ == "__main__":
    sys.exit(main())
