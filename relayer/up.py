"""The relayer's part in `symphony up`: one relayer driving every simulated rail.

Its configuration is generated into <data_dir>/config/relayer.toml from the
simulator URLs that rail_sim.up wrote to <data_dir>/rail-sim/endpoints.json.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from symphony.components import ChildSpec, UpContext


def components(ctx: UpContext) -> list[ChildSpec]:
    from symphony.components import ChildSpec

    endpoints_file = ctx.data_dir / "rail-sim" / "endpoints.json"
    if not endpoints_file.exists():
        return []  # no simulators, no rails to drive
    endpoints: dict[str, str] = json.loads(endpoints_file.read_text())
    admin_port = ctx.free_port()
    lines = [f"admin_port = {admin_port}", 'worker_id = "relayer-up"', "lease_seconds = 30.0"]
    credentials = ctx.data_dir / "rail-sim" / "credentials.json"  # made by rail_sim.up, mode 0600
    for rail, url in sorted(endpoints.items()):
        lines += [f"[rails.{rail}]", f'kind = "{rail}"', f'url = "{url}"', "timeout_seconds = 5.0"]
        if credentials.exists():
            lines.append(f'credentials_file = "{credentials}"')
    config = ctx.path("config", "relayer.toml")
    config.write_text("\n".join(lines) + "\n")
    return [ChildSpec(
        name="relayer",
        argv=[sys.executable, "-m", "symphony", "relayer", "--config", str(config)],
        endpoints={"metrics": f"http://127.0.0.1:{admin_port}/metrics"},
        wait_port=admin_port,
        env={"SYMPHONY_DATABASE_URL": ctx.dsn_for("relayer")},
    )]
