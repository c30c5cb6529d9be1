"""repair's part in `symphony up`: the repair daemon and the regulator dashboard, each
connecting as its own database role (DSN in the environment, never in argv)."""

from __future__ import annotations

import os
import secrets
import sys

from symphony.components import ChildSpec, UpContext


def dashboard_token(ctx: UpContext) -> str:
    """The supervisor bearer token of this data dir (created once, mode 0600)."""
    path = ctx.path("keys", "dashboard-token")
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return str(path)


def components(ctx: UpContext) -> list[ChildSpec]:
    metrics_port = ctx.free_port()
    dashboard_port = ctx.free_port()
    token_file = dashboard_token(ctx)
    base = [sys.executable, "-m", "symphony"]
    return [
        ChildSpec(
            name="repair",
            argv=[*base, "repair"],
            endpoints={"metrics": f"http://127.0.0.1:{metrics_port}/metrics"},
            wait_port=metrics_port,
            env={"SYMPHONY_DATABASE_URL": ctx.dsn_for("repair"),
                 "SYMPHONY_REPAIR_METRICS_PORT": str(metrics_port),
                 "SYMPHONY_REPAIR_INSTANCE_ID": f"{ctx.node_id}-repair"},
        ),
        ChildSpec(
            name="dashboard",
            argv=[*base, "dashboard", "--port", str(dashboard_port), "--token-file", token_file],
            endpoints={"url": f"http://127.0.0.1:{dashboard_port}/ (bearer token in {token_file})"},
            wait_port=dashboard_port,
            env={"SYMPHONY_DATABASE_URL": ctx.dsn_for("dashboard")},
        ),
    ]
