"""repair's part in `symphony up`: the repair daemon and the regulator dashboard, each
connecting as its own database role (DSN in the environment, never in argv).

It also creates the archive signing key pair of the data dir (once):
`<data_dir>/keys/archive-signing.pem` (mode 0600, the archiver's) and
`archive-signing.pub`, which `up` prints so an auditor can pin it
(`symphony audit verify-chain --archive-public-key`).
"""

from __future__ import annotations

import os
import secrets
import sys

from repair import evidence_cli
from symphony import archive_signature
from symphony.components import ChildSpec, UpContext


def dashboard_token(ctx: UpContext) -> str:
    """The supervisor bearer token of this data dir (created once, mode 0600)."""
    path = ctx.path("keys", "dashboard-token")
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return str(path)


def evidence_key(ctx: UpContext) -> str:
    """The evidence bundle's signing key of this data dir: created once (private
    key mode 0600), its public key beside it; what `up` prints about it."""
    private = ctx.path(*evidence_cli.UP_SIGNING_KEY)
    public = ctx.path(*evidence_cli.UP_PUBLIC_KEY)
    kid, _ = evidence_cli.ensure_key_pair(private, public)
    return f"{public} ({kid}; private key {private}, mode 0600)"


def components(ctx: UpContext) -> list[ChildSpec]:
    metrics_port = ctx.free_port()
    dashboard_port = ctx.free_port()
    token_file = dashboard_token(ctx)
    private_key, public_key, _ = archive_signature.ensure_key_pair(ctx.data_dir)
    evidence_public_key = evidence_key(ctx)
    base = [sys.executable, "-m", "symphony"]
    return [
        ChildSpec(
            name="repair",
            argv=[*base, "repair"],
            endpoints={"metrics": f"http://127.0.0.1:{metrics_port}/metrics",
                       "archive public key": f"{public_key} (pin it: audit verify-chain --archive-public-key)",
                       "evidence public key": evidence_public_key},
            wait_port=metrics_port,
            env={"SYMPHONY_DATABASE_URL": ctx.dsn_for("repair"),
                 "SYMPHONY_REPAIR_METRICS_PORT": str(metrics_port),
                 "SYMPHONY_REPAIR_INSTANCE_ID": f"{ctx.node_id}-repair",
                 "SYMPHONY_REPAIR_ARCHIVE_SIGNING_KEY": str(private_key),
                 "SYMPHONY_REPAIR_ARCHIVE_PUBLIC_KEY": str(public_key)},
        ),
        ChildSpec(
            name="dashboard",
            argv=[*base, "dashboard", "--port", str(dashboard_port), "--token-file", token_file],
            endpoints={"url": f"http://127.0.0.1:{dashboard_port}/ (bearer token in {token_file})"},
            wait_port=dashboard_port,
            env={"SYMPHONY_DATABASE_URL": ctx.dsn_for("dashboard")},
        ),
    ]
