"""`symphony up` runs one simulator per profile, each with a durable store in
`<data_dir>/rail-sim/`, and writes their URLs to `<data_dir>/rail-sim/endpoints.json`
so the relayer's generated configuration can point at them."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from rail_sim.profiles import PROFILES

if TYPE_CHECKING:
    from symphony.components import ChildSpec, UpContext

ENDPOINTS_FILE = ("rail-sim", "endpoints.json")


def components(ctx: UpContext) -> list[ChildSpec]:
    from symphony.components import ChildSpec

    specs = []
    endpoints = {}
    for profile in PROFILES:
        port = ctx.free_port()
        url = f"http://127.0.0.1:{port}"
        endpoints[profile] = url
        argv = [sys.executable, "-m", "symphony", "rail-sim", "--profile", profile, "--port", str(port),
                "--state-dir", str(ctx.path("rail-sim", profile, ".keep").parent)]
        specs.append(ChildSpec(name=f"rail-sim-{profile}", argv=argv, wait_port=port,
                               endpoints={"url": url, "stats": f"{url}/_sim/stats"}))
    ctx.path(*ENDPOINTS_FILE).write_text(json.dumps(endpoints, indent=2) + "\n")
    ctx.rail_urls = endpoints  # type: ignore[attr-defined]
    return specs
