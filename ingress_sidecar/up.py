"""The sidecar's part in `symphony up`: one supervisor with two workers in
front of the demo payments service.

The upstream is the payments service that `payments_service.up` started just
before (UP_MODULES order). Coordination: that module sets `ctx.service_url`
(e.g. "http://127.0.0.1:PORT") on the shared UpContext; until it does, the
service's documented default port is used. The sidecar listens on 8080 when
it is free (the default target of `symphony demo traffic`), else on a free
port, which `up` prints.

The check below only chooses a port; it does not reserve it. Ownership is
the sidecar's own exclusive bind (ingress_sidecar/supervisor.py): if another
process takes the port between this check and the sidecar's start, the
sidecar exits 3 ("cannot listen on ...") and `up` reports it; two daemons
never share the port.
"""

from __future__ import annotations

import socket
import sys

from symphony.components import ChildSpec, UpContext

DEMO_PORT = 8080
DEMO_WORKERS = 2
SERVICE_DEFAULT_URL = "http://127.0.0.1:8000"


def _port_free(port: int) -> bool:
    """A preference only (see the module docstring): is nothing bound to `port` now?"""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def components(ctx: UpContext) -> list[ChildSpec]:
    upstream = getattr(ctx, "service_url", "") or SERVICE_DEFAULT_URL
    port = DEMO_PORT if DEMO_PORT not in ctx._taken and _port_free(DEMO_PORT) else ctx.free_port()  # noqa: SLF001
    ctx._taken.add(port)  # noqa: SLF001
    admin_port = ctx.free_port()
    env = {
        "SYMPHONY_DATABASE_URL": ctx.dsn_for("sidecar"),
        "SYMPHONY_SIDECAR_NODE_ID": ctx.node_id,
        "SYMPHONY_SIDECAR_LISTEN_PORT": str(port),
        "SYMPHONY_SIDECAR_ADMIN_PORT": str(admin_port),
        "SYMPHONY_SIDECAR_WORKERS": str(DEMO_WORKERS),
        "SYMPHONY_SIDECAR_UPSTREAM_URL": upstream,
        # The verifiable log: the node key `up` made (keys/node-log.pem) signs each
        # stream's checkpoints, published under <data_dir>/tlog for outsiders.
        "SYMPHONY_SIDECAR_LOG_KEY_FILE": str(ctx.data_dir / "keys" / "node-log.pem"),
        "SYMPHONY_SIDECAR_LOG_ORIGIN_PREFIX": ctx.log_origin_prefix,
        "SYMPHONY_SIDECAR_CHECKPOINT_PUBLISH_DIR": str(ctx.data_dir / "tlog"),
    }
    return [ChildSpec(
        name="sidecar",
        argv=[sys.executable, "-m", "symphony", "sidecar", "--data-dir", str(ctx.data_dir)],
        endpoints={"ingress": f"http://127.0.0.1:{port}", "admin": f"http://127.0.0.1:{admin_port}/metrics",
                   "checkpoints": f"{ctx.data_dir / 'tlog'}/<origin>/checkpoint (node key: "
                                  f"{ctx.data_dir / 'keys' / 'node-log.vkey'})"},
        wait_port=port,
        env=env,
    )]
