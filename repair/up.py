"""repair's part in `symphony up`: the repair daemon and the regulator dashboard, each
connecting as its own database role (DSN in the environment, never in argv).

Repair reconciles the rails' statements on its cycle: `up` points it at
`<data_dir>/statements/<rail>/` for each real-rail simulator it runs.

It also creates the gap-statement key (`<data_dir>/keys/gap-statement.pem`,
mode 0600; its C2SP verifier key in `gap-statement.vkey`, which `up` prints),
and the archive signing key pair of the data dir (once):
`<data_dir>/keys/archive-signing.pem` (mode 0600, the archiver's) and
`archive-signing.pub`, which `up` prints so an auditor can pin it
(`symphony audit verify-chain --archive-public-key`).
"""

from __future__ import annotations

import json
import os
import secrets
import sys


from repair import evidence_cli, statements
from symphony import archive_signature, keys
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


# Rails whose statements repair reads, by the simulator profile `up` runs for them
# (rail_sim/up.py writes <data_dir>/rail-sim/endpoints.json; the rail's name is its profile).
STATEMENT_FORMATS = ("mtn_momo", "airtel_money", "iso20022")


def statement_folders(ctx: UpContext) -> tuple[str, dict[str, str]]:
    """<data_dir>/statements/<rail>/ for every real rail `up` runs: the scheduled reconciliation's folders."""
    endpoints_file = ctx.data_dir / "rail-sim" / "endpoints.json"
    rails = json.loads(endpoints_file.read_text()) if endpoints_file.exists() else {}
    kinds = {rail: rail for rail in sorted(rails) if rail in STATEMENT_FORMATS}
    for rail in kinds:
        ctx.path("statements", rail, ".keep").parent.mkdir(exist_ok=True)
    return str(ctx.data_dir / "statements"), kinds


GAP_STATEMENT_KEY = ("keys", "gap-statement.pem")
GAP_STATEMENT_VKEY = ("keys", "gap-statement.vkey")


def gap_statement_key_name(ctx: UpContext) -> str:
    return f"{ctx.log_origin_prefix}/gap-statements"


def gap_statement_key(ctx: UpContext) -> tuple[str, str]:
    """The gap-statement signing key of this data dir (created once, mode 0600)
    and its C2SP verifier key, written beside it: (private key path, vkey path)."""
    private = ctx.path(*GAP_STATEMENT_KEY)
    if not private.exists():
        keys.write_new_private_key(private)
    signer = statements.load_signer(str(private), gap_statement_key_name(ctx))
    vkey = ctx.path(*GAP_STATEMENT_VKEY)
    vkey.write_text(signer.verifier.vkey() + "\n")
    return str(private), str(vkey)


def components(ctx: UpContext) -> list[ChildSpec]:
    metrics_port = ctx.free_port()
    dashboard_port = ctx.free_port()
    token_file = dashboard_token(ctx)
    private_key, public_key, _ = archive_signature.ensure_key_pair(ctx.data_dir)
    evidence_public_key = evidence_key(ctx)
    statement_dir, statement_kinds = statement_folders(ctx)
    statement_key, statement_vkey = gap_statement_key(ctx)
    base = [sys.executable, "-m", "symphony"]
    return [
        ChildSpec(
            name="repair",
            argv=[*base, "repair"],
            endpoints={"metrics": f"http://127.0.0.1:{metrics_port}/metrics",
                       "archive public key": f"{public_key} (pin it: audit verify-chain --archive-public-key)",
                       "evidence public key": evidence_public_key,
                       "statements": f"{statement_dir}/<rail>/ (a rail's statement file put there is reconciled "
                                     "once, on the next cycle)",
                       "gap statements": f"{ctx.data_dir / 'tlog' / statements.PUBLISH_SUBDIR}/<window start> "
                                         f"(verifier key: {statement_vkey}; symphony verify gap-statement FILE "
                                         f"--key {statement_vkey})"},
            wait_port=metrics_port,
            env={"SYMPHONY_DATABASE_URL": ctx.dsn_for("repair"),
                 "SYMPHONY_REPAIR_METRICS_PORT": str(metrics_port),
                 "SYMPHONY_REPAIR_INSTANCE_ID": f"{ctx.node_id}-repair",
                 "SYMPHONY_REPAIR_ARCHIVE_SIGNING_KEY": str(private_key),
                 "SYMPHONY_REPAIR_ARCHIVE_PUBLIC_KEY": str(public_key),
                 "SYMPHONY_REPAIR_RECONCILE_STATEMENT_DIR": statement_dir,
                 "SYMPHONY_REPAIR_RECONCILE_RAILS": json.dumps(statement_kinds),
                 "SYMPHONY_REPAIR_GAP_STATEMENT_SIGNING_KEY": statement_key,
                 "SYMPHONY_REPAIR_GAP_STATEMENT_KEY_NAME": gap_statement_key_name(ctx),
                 "SYMPHONY_REPAIR_GAP_STATEMENT_PUBLISH_DIR": str(ctx.data_dir / "tlog")},
        ),
        ChildSpec(
            name="dashboard",
            argv=[*base, "dashboard", "--port", str(dashboard_port), "--token-file", token_file],
            endpoints={"url": f"http://127.0.0.1:{dashboard_port}/ (bearer token in {token_file})"},
            wait_port=dashboard_port,
            env={"SYMPHONY_DATABASE_URL": ctx.dsn_for("dashboard")},
        ),
    ]
