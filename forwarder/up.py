"""The forwarder's part in `symphony up`: one process shipping the node's journal."""

from __future__ import annotations

import json
import sys

from symphony.components import ChildSpec, UpContext


def components(ctx: UpContext) -> list[ChildSpec]:
    admin_port = ctx.free_port()
    journal_dir = ctx.data_dir / "journal"
    journal_dir.mkdir(parents=True, exist_ok=True)
    env = {
        # Its own role's DSN, in the environment: never in argv (visible in ps).
        "SYMPHONY_DATABASE_URL": ctx.dsn_for("forwarder"),
        "SYMPHONY_FORWARDER_NODE_ID": ctx.node_id,
        "SYMPHONY_FORWARDER_JOURNAL_DIR": str(journal_dir),
        "SYMPHONY_FORWARDER_ADMIN_PORT": str(admin_port),
        "SYMPHONY_FORWARDER_DATA_DIR": str(ctx.data_dir),
        "SYMPHONY_FORWARDER_LOG_ORIGIN_PREFIX": ctx.log_origin_prefix,
    }
    node_vkey = ctx.data_dir / "keys" / "node-log.vkey"
    if node_vkey.exists():  # written by `up` (symphony.app.demo): checkpoint signatures are checked
        env["SYMPHONY_FORWARDER_LOG_KEY"] = node_vkey.read_text().strip()
    witness_url, witness_vkey = getattr(ctx, "witness_url", ""), getattr(ctx, "witness_vkey", "")
    if witness_url and witness_vkey:  # witness.up comes first in UP_MODULES
        env["SYMPHONY_FORWARDER_WITNESSES"] = json.dumps([f"{witness_url} {witness_vkey}"])
    return [ChildSpec(
        name="forwarder",
        argv=[sys.executable, "-m", "symphony", "forwarder"],
        endpoints={"metrics": f"http://127.0.0.1:{admin_port}/metrics"},
        wait_port=admin_port,
        env=env,
    )]
