"""The service's part in `symphony up`: one process on a free loopback port.

It sets `ctx.service_url` on the shared UpContext so the sidecar (started after
it, see UP_MODULES) forwards there; it verifies the sidecar's signatures with
<data_dir>/keys/sidecar-upstream.pub.pem, which symphony.app.demo.prepare created.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from symphony.components import ChildSpec, UpContext


def components(ctx: UpContext) -> list[ChildSpec]:
    from symphony.components import ChildSpec

    port, admin_port = ctx.free_port(), ctx.free_port()
    url = f"http://127.0.0.1:{port}"
    ctx.service_url = url  # type: ignore[attr-defined]  # read by ingress_sidecar.up
    argv = [sys.executable, "-m", "symphony", "service", "--data-dir", str(ctx.data_dir)]
    env = {"SYMPHONY_DATABASE_URL": ctx.dsn_for("service"), "SYMPHONY_SERVICE_LISTEN_PORT": str(port),
           "SYMPHONY_SERVICE_ADMIN_PORT": str(admin_port)}
    if getattr(ctx, "chaos", False):  # `chaos = true` in up.toml: the test-only fault switch (symphony.app.chaos)
        argv.append("--enable-test-faults")
        env["SYMPHONY_SERVICE_TEST_FAULT_FILE"] = str(ctx.path("chaos", "service-faults.json"))
    return [ChildSpec(
        name="service",
        argv=argv,
        endpoints={"api (behind the sidecar)": url, "metrics": f"http://127.0.0.1:{admin_port}/metrics"},
        wait_port=port,
        env=env,
    )]
