"""`symphony up` runs one simulator per profile, each with a durable store in
`<data_dir>/rail-sim/`, and writes their URLs to `<data_dir>/rail-sim/endpoints.json`
so the relayer's generated configuration can point at them. `up` prints, for each
real-rail simulator, the URL of its end-of-day statement (`/_sim/statement`).

The real-rail profiles (mtn_momo, airtel_money, iso20022) check credentials: `up`
makes random ones once per data dir in `<data_dir>/rail-sim/credentials.json`
(mode 0600), which the simulators and the generated relayer configuration name by
path; the secrets themselves never appear on a command line."""

from __future__ import annotations

import json
import os
import secrets
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from rail_sim.profiles import PROFILES

if TYPE_CHECKING:
    from symphony.components import ChildSpec, UpContext

ENDPOINTS_FILE = ("rail-sim", "endpoints.json")
# The profiles that publish a statement (GET /_sim/statement, rail_sim/real_rails.py).
STATEMENT_PROFILES = ("mtn_momo", "airtel_money", "iso20022")
CREDENTIALS_FILE = ("rail-sim", "credentials.json")


def ensure_credentials(path: Path) -> Path:
    """Random credentials for every real-rail profile, made once (0600, never overwritten)."""
    if path.exists():
        return path
    values = {"subscription_key": secrets.token_hex(16), "api_user": str(uuid.uuid4()),
              "api_key": secrets.token_hex(16), "client_id": secrets.token_hex(8),
              "client_secret": secrets.token_hex(16), "pin": secrets.token_urlsafe(24),
              "username": "symphony", "password": secrets.token_urlsafe(18)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(values, handle)
    return path


def components(ctx: UpContext) -> list[ChildSpec]:
    from symphony.components import ChildSpec

    specs = []
    endpoints = {}
    credentials = ensure_credentials(ctx.path(*CREDENTIALS_FILE))
    for profile in PROFILES:
        port = ctx.free_port()
        url = f"http://127.0.0.1:{port}"
        endpoints[profile] = url
        argv = [sys.executable, "-m", "symphony", "rail-sim", "--profile", profile, "--port", str(port),
                "--state-dir", str(ctx.path("rail-sim", profile, ".keep").parent),
                "--credentials-file", str(credentials)]
        shown = {"url": url, "stats": f"{url}/_sim/stats"}
        if profile in STATEMENT_PROFILES:
            # The rail's end-of-day statement, for `symphony reconcile` (or the repair schedule's folder).
            shown["statement"] = f"{url}/_sim/statement"
        specs.append(ChildSpec(name=f"rail-sim-{profile}", argv=argv, wait_port=port, endpoints=shown))
    ctx.path(*ENDPOINTS_FILE).write_text(json.dumps(endpoints, indent=2) + "\n")
    ctx.rail_urls = endpoints  # type: ignore[attr-defined]
    return specs
