"""The forwarder's part in `symphony up`: one process shipping the node's journal."""

from __future__ import annotations

import sys

from symphony.components import ChildSpec, UpContext


def components(ctx: UpContext) -> list[ChildSpec]:
    admin_port = ctx.free_port()
    journal_dir = ctx.data_dir / "journal"
    journal_dir.mkdir(parents=True, exist_ok=True)
    return [ChildSpec(
        name="forwarder",
        argv=[sys.executable, "-m", "symphony", "forwarder", "--database-url", ctx.database_url],
        endpoints={"metrics": f"http://127.0.0.1:{admin_port}/metrics"},
        wait_port=admin_port,
        env={
            "SYMPHONY_FORWARDER_NODE_ID": ctx.node_id,
            "SYMPHONY_FORWARDER_JOURNAL_DIR": str(journal_dir),
            "SYMPHONY_FORWARDER_ADMIN_PORT": str(admin_port),
            "SYMPHONY_FORWARDER_DATA_DIR": str(ctx.data_dir),
            "SYMPHONY_FORWARDER_LOG_ORIGIN_PREFIX": ctx.log_origin_prefix,
        },
    )]
