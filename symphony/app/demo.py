"""Demo helpers: what `symphony up` prepares, demo tokens, and demo traffic.

`prepare(ctx)` (called by `symphony up` before it starts the daemons) creates,
once, in the data dir: the sidecar's upstream signing pair
(keys/sidecar-upstream.pem, keys/sidecar-upstream.pub.pem), the demo JWT
issuer's Ed25519 key and its JWKS (keys/demo-issuer.pem, keys/jwks.json), the
journal/<node_id>/ and logs/ directories, and the demo participants demo-bank-a
and demo-mfi-b (ACTIVE, policy_version 1).

    symphony demo token --participant NAME [--data-dir DIR] [--ttl S]
    symphony demo traffic --requests N --concurrency C [--duplicate-rate R]
                          [--invalid-rate R] [--target URL] [--attestation-ids FILE]

Traffic goes to the sidecar: `--target URL`, else SYMPHONY_DEMO_TARGET, else
the sidecar of the `symphony up` running on the data dir (its `ingress`
endpoint in `<data_dir>/run/up.json`, whatever port `up` chose); with none of
these it stops with exit 2 and says what to give. Each request is a POST
/v1/payments with a demo bearer token and an Idempotency-Key; a duplicate
reuses an earlier request's key and body exactly (it must come back replayed
or 409, never a second execution), an invalid one has amount_minor 0 (it must
come back 422). The summary (JSON on stdout) counts requests by HTTP status and
by X-Symphony-Disposition, and lists the failed ones by reason.
`--attestation-ids FILE` writes the X-Symphony-Attestation-Id of every answer
that carries one, a line each: the id `symphony proof inclusion` proves.

A request failed when it got no HTTP answer (connection refused or reset,
timeout), a 5xx, or any other answer than its plan expects: 2xx or 409 for a
valid payment or its duplicate, 422 for an invalid one (so a 401/403 from a
wrong token or participant, a 429 or a 422 for a valid payment are failures).
Any failed request makes the exit code 1, with a one-line count on stderr;
0 means every request was answered as planned.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from symphony.db import dsn, queries
from symphony.errors import EXIT_FINDINGS, EXIT_RUNTIME, EXIT_USAGE, StartupError, SymphonyError
from symphony.keys import private_key_from_pem, write_new_private_key
from symphony.upstream_headers import ATTESTATION_ID as ATTESTATION_ID_HEADER
from symphony.upstream_headers import key_id, write_keypair

if TYPE_CHECKING:
    from symphony.components import UpContext

DEMO_PARTICIPANTS = ("demo-bank-a", "demo-mfi-b")
JWT_ISSUER = "symphony-demo"
JWT_AUDIENCE = "symphony-ingress"
TARGET_ENV = "SYMPHONY_DEMO_TARGET"
RUN_STATE_FILE = ("run", "up.json")  # written by `symphony up` (symphony/app/up.py)
SIDECAR_CHILD, SIDECAR_ENDPOINT = "sidecar", "ingress"
DEMO_RAILS = ("swiftpay", "mobimoney", "mtn_momo", "airtel_money", "iso20022")
QUERIES = queries.load(__package__, "demo.sql")


# -- files and participants ------------------------------------------------------------


def ensure_keys(data_dir: Path) -> None:
    """Create the demo keys that do not exist yet (never overwrite a key)."""
    keys = data_dir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    if not (keys / "sidecar-upstream.pem").exists():
        write_keypair(keys / "sidecar-upstream.pem", keys / "sidecar-upstream.pub.pem")
    if not (keys / "demo-issuer.pem").exists() or not (keys / "jwks.json").exists():
        private = write_new_private_key(keys / "demo-issuer.pem", overwrite=True)
        (keys / "jwks.json").write_text(json.dumps(jwks_for(private), indent=2) + "\n")


def jwks_for(private: Ed25519PrivateKey) -> dict[str, Any]:
    public = private.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": key_id(public), "alg": "EdDSA", "use": "sig"}]}


async def ensure_participants(database_url: str) -> None:
    from symphony.db import connect

    conn = await connect(database_url)
    try:
        await conn.executemany(
            QUERIES["ensure_participant"],
            [(p, f"Demo participant {p}") for p in DEMO_PARTICIPANTS], timeout=10)
    finally:
        await conn.close()


def ensure_log_key(data_dir: Path, name: str) -> str:
    """The node's checkpoint-signing key (keys/node-log.pem, 0600) and the file
    of logs a witness trusts (keys/trusted-logs.txt: `<log name> <vkey>`);
    returns the node's verifier key."""
    from symphony.tlog import note
    from symphony.upstream_headers import load_private_key

    keys = data_dir / "keys"
    if not (keys / "node-log.pem").exists():
        write_keypair(keys / "node-log.pem", keys / "node-log.pub.pem")
    vkey = note.Signer(name, load_private_key(keys / "node-log.pem")).verifier.vkey()
    (keys / "node-log.vkey").write_text(vkey + "\n")
    (keys / "trusted-logs.txt").write_text(f"# <log name> <vkey>: node keys this deployment's witness trusts\n"
                                           f"{name} {vkey}\n")
    return vkey


def prepare(ctx: UpContext) -> None:
    from symphony.tlog import origins

    ensure_keys(ctx.data_dir)
    ensure_log_key(ctx.data_dir, origins.log_name(ctx.log_origin_prefix, ctx.node_id))
    (ctx.data_dir / "journal" / ctx.node_id).mkdir(parents=True, exist_ok=True)
    (ctx.data_dir / "logs").mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_participants(ctx.database_url))


# -- tokens ------------------------------------------------------------------------------


def make_token(data_dir: Path, participant: str, *, ttl_seconds: int, policy_version: int = 1,
               now: float | None = None) -> str:
    import jwt

    path = data_dir / "keys" / "demo-issuer.pem"
    try:
        private = private_key_from_pem(path.read_bytes())
    except FileNotFoundError:
        raise SymphonyError(f"no demo issuer key at {path}; run `symphony up --data-dir {data_dir}` once",
                            exit_code=EXIT_USAGE) from None
    except ValueError as exc:
        raise SymphonyError(f"the demo issuer key {path} is {exc}", exit_code=EXIT_USAGE) from None
    issued = int(time.time() if now is None else now)
    claims = {"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": participant, "pv": policy_version,
              "iat": issued, "nbf": issued, "exp": issued + ttl_seconds, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": key_id(private.public_key())})


async def _policy_version(database_url: str, participant: str) -> int:
    from symphony.db import connect

    conn = await connect(database_url)
    try:
        version = await conn.fetchval(QUERIES["policy_version"], participant, timeout=5)
    finally:
        await conn.close()
    if version is None:
        raise SymphonyError(f"participant {participant!r} is not registered", exit_code=EXIT_USAGE)
    return int(version)


def policy_version_for(args: argparse.Namespace, participant: str) -> int:
    """--policy-version, else the participant's current one if the database is reachable, else 1."""
    if args.policy_version is not None:
        return int(args.policy_version)
    try:
        url = dsn.resolve(flag_url=args.database_url, flag_data_dir=args.data_dir)
        return asyncio.run(_policy_version(url, participant))
    except StartupError:
        return 1


# -- traffic -------------------------------------------------------------------------------


def _body(rng: random.Random, invalid: bool) -> bytes:
    rail = rng.choice(DEMO_RAILS)
    mobile = rail in ("mobimoney", "mtn_momo", "airtel_money")
    account = f"2547{rng.randrange(10**7, 10**8)}" if mobile else f"ACC{rng.randrange(10**6)}"
    body = {"amount_minor": 0 if invalid else rng.randrange(100, 500_000), "currency": "KES", "rail": rail,
            "destination_account": account, "client_reference": f"demo-{uuid.uuid4().hex[:12]}"}
    return json.dumps(body, separators=(",", ":")).encode()


def plan_requests(count: int, participants: list[str], duplicate_rate: float, invalid_rate: float,
                  rng: random.Random) -> list[tuple[str, str, bytes]]:
    """(participant, idempotency key, body) per request; duplicates repeat an earlier one exactly."""
    plan: list[tuple[str, str, bytes]] = []
    for _ in range(count):
        if plan and rng.random() < duplicate_rate:
            plan.append(rng.choice(plan))
            continue
        invalid = rng.random() < invalid_rate
        plan.append((rng.choice(participants), f"demo-{uuid.uuid4()}", _body(rng, invalid)))
    return plan


def disposition_of(status: int, headers: Any) -> str:
    """The service's X-Symphony-Disposition when the proxy passes it on; else inferred
    from the answer (a sidecar keeps X-Symphony-* to itself): a replay says
    `Idempotent-Replayed: true`, another 2xx executed, anything else was rejected."""
    explicit = headers.get("X-Symphony-Disposition")
    if explicit:
        return str(explicit)
    if headers.get("Idempotent-Replayed") == "true":
        return "replayed"
    return "executed" if 200 <= status < 300 else "rejected"


def expected_statuses(plan: list[tuple[str, str, bytes]]) -> list[str]:
    """Per planned request, what a correct system answers: "invalid" (422 only) for
    a body with amount_minor 0 (and its duplicates), else "valid" (2xx, or 409
    while a duplicate of it is in progress)."""
    return ["invalid" if json.loads(body)["amount_minor"] == 0 else "valid" for _, _, body in plan]


def failure_of(status: int, expected: str) -> str | None:
    """Why an HTTP answer is a failed request (see the module docstring), or None."""
    if status >= 500:
        return f"status {status}"
    if expected == "invalid":
        return None if status == 422 else f"status {status} for an invalid payment (want 422)"
    if 200 <= status < 300 or status == 409:
        return None
    return f"status {status} for a valid payment"


async def drive(target: str, plan: list[tuple[str, str, bytes]], tokens: dict[str, str], concurrency: int,
                timeout_seconds: float) -> dict[str, Any]:
    import aiohttp

    statuses: Counter[str] = Counter()
    dispositions: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    attestation_ids: list[str] = []
    queue: asyncio.Queue[tuple[tuple[str, str, bytes], str]] = asyncio.Queue()
    for item in zip(plan, expected_statuses(plan), strict=True):
        queue.put_nowait(item)
    url = target.rstrip("/") + "/v1/payments"

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                (participant, key, body), expected = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            headers = {"Authorization": f"Bearer {tokens[participant]}", "Idempotency-Key": key,
                       "Content-Type": "application/json"}
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[str(response.status)] += 1
                    dispositions[disposition_of(response.status, response.headers)] += 1
                    attested = response.headers.get(ATTESTATION_ID_HEADER, "")
                    if attested.isdigit():
                        attestation_ids.append(attested)
                    failure = failure_of(response.status, expected)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                errors[type(exc).__name__] += 1
                failure = f"no answer ({type(exc).__name__})"
            if failure is not None:
                failures[failure] += 1

    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return {"target": url, "sent": len(plan), "elapsed_seconds": round(elapsed, 3),
            "requests_per_second": round(len(plan) / elapsed, 1) if elapsed > 0 else None,
            "by_status": dict(sorted(statuses.items())), "by_disposition": dict(sorted(dispositions.items())),
            "transport_errors": dict(errors), "failed": sum(failures.values()),
            "failures": dict(sorted(failures.items())), "attestation_ids": attestation_ids}


def running_sidecar(data_dir: Path) -> str:
    """The ingress URL of the sidecar of the `symphony up` running on `data_dir`
    (from its run/up.json), or a SymphonyError (exit 2) saying what is missing."""
    path = data_dir.joinpath(*RUN_STATE_FILE)
    hint = f"start `symphony up --data-dir {data_dir}` or give --target URL (or {TARGET_ENV})"
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise SymphonyError(f"no `symphony up` is running on {data_dir} (no {path}); {hint}",
                            exit_code=EXIT_USAGE) from None
    except (OSError, ValueError) as exc:
        raise SymphonyError(f"cannot read {path}: {exc}; {hint}", exit_code=EXIT_USAGE) from None
    up_pid = state.get("up_pid") if isinstance(state, dict) else None
    if not isinstance(up_pid, int) or not _alive(up_pid):
        raise SymphonyError(f"{path} names `symphony up` pid {up_pid}, which is not running (a stale file); "
                            f"{hint}", exit_code=EXIT_USAGE)
    child = state.get("children", {}).get(SIDECAR_CHILD) or {}
    endpoint = child.get("endpoints", {}).get(SIDECAR_ENDPOINT) if isinstance(child, dict) else None
    if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise SymphonyError(f"the `symphony up` on {data_dir} has no sidecar {SIDECAR_ENDPOINT} endpoint in {path} "
                            f"(still starting?); {hint}", exit_code=EXIT_USAGE)
    return endpoint


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


# -- CLI --------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from symphony.arguments import add_database_arguments

    sub = parser.add_subparsers(dest="action", required=True)
    token = sub.add_parser("token", help="print a valid JWT for a demo participant")
    token.add_argument("--participant", required=True)
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--policy-version", type=int, help="pv claim (default: the participant's current one)")
    add_database_arguments(token)
    traffic = sub.add_parser("traffic", help="drive signed payment requests through the sidecar")
    traffic.add_argument("--requests", type=int, required=True)
    traffic.add_argument("--concurrency", type=int, default=8)
    traffic.add_argument("--duplicate-rate", type=float, default=0.0)
    traffic.add_argument("--invalid-rate", type=float, default=0.0)
    traffic.add_argument("--target", help=f"sidecar base URL (env {TARGET_ENV}; default: the sidecar of the "
                                          "`symphony up` running on --data-dir, from its run/up.json)")
    traffic.add_argument("--participant", action="append", help="repeatable; default: both demo participants")
    traffic.add_argument("--policy-version", type=int)
    traffic.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    traffic.add_argument("--seed", type=int)
    traffic.add_argument("--attestation-ids", metavar="FILE",
                         help="write the attestation id of every attested answer (X-Symphony-Attestation-Id) "
                              "to FILE, one a line: what `symphony proof inclusion --attestation-id` takes")
    add_database_arguments(traffic)


def run(args: argparse.Namespace) -> int:
    data_dir = dsn.data_dir_from(args.data_dir)
    if args.action == "token":
        if not 1 <= args.ttl <= 86_400:
            raise SymphonyError("--ttl must be in 1..86400 seconds", exit_code=EXIT_USAGE)
        version = policy_version_for(args, args.participant)
        print(make_token(data_dir, args.participant, ttl_seconds=args.ttl, policy_version=version))
        return 0
    return _traffic(args, data_dir)


def _traffic(args: argparse.Namespace, data_dir: Path) -> int:
    if not 1 <= args.requests <= 1_000_000 or not 1 <= args.concurrency <= 1000:
        raise SymphonyError("--requests must be in 1..1000000 and --concurrency in 1..1000", exit_code=EXIT_USAGE)
    if not 0 <= args.duplicate_rate <= 1 or not 0 <= args.invalid_rate <= 1:
        raise SymphonyError("--duplicate-rate and --invalid-rate must be in [0, 1]", exit_code=EXIT_USAGE)
    target = args.target or os.environ.get(TARGET_ENV) or running_sidecar(data_dir)
    participants = args.participant or list(DEMO_PARTICIPANTS)
    tokens = {p: make_token(data_dir, p, ttl_seconds=3600, policy_version=policy_version_for(args, p))
              for p in participants}
    plan = plan_requests(args.requests, participants, args.duplicate_rate, args.invalid_rate,
                         random.Random(args.seed))
    summary = asyncio.run(drive(target, plan, tokens, args.concurrency, args.timeout))
    attestation_ids = summary.pop("attestation_ids")
    if args.attestation_ids:
        try:
            Path(args.attestation_ids).write_text("".join(f"{i}\n" for i in attestation_ids))
        except OSError as exc:
            raise SymphonyError(f"cannot write {args.attestation_ids}: {exc.strerror or exc}",
                                exit_code=EXIT_USAGE) from None
        summary["attestation_ids_written"] = len(attestation_ids)
    print(json.dumps(summary, indent=2), flush=True)
    if summary["failed"]:
        reasons = ", ".join(f"{count} {reason}" for reason, count in summary["failures"].items())
        print(f"demo traffic: {summary['failed']} of {len(plan)} requests failed against {summary['target']}: "
              f"{reasons}", file=sys.stderr)
        return EXIT_FINDINGS
    return 0
