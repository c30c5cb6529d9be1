"""The regulator dashboard in a real browser, against a database with known data.

Method: build two participants' records (bank-a with one ghost, bank-b clean),
run one repair cycle, start `symphony dashboard` as a real process, and check:
it refuses requests without the supervisor token; headless Chromium (Debian's
`chromium`, installed by scripts/ensure_chromium.sh when missing) loads the page
through a local proxy that adds the token (Chromium's command line cannot send
headers), the numbers in the DOM are the known ones, bank-a shows CRITICAL_GAP;
a screenshot is kept in test-artifacts/.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from repair import dashboard, svg
from repair.config import RepairConfig
from tests.conftest import REPO_ROOT, free_port
from tests.repair.browser import chromium_path
from tests.repair.conftest import cycle
from tests.repair.dashboard_helpers import TOKEN, start_dashboard
from tests.repair.helpers import Stream, add_participant, ago, executed_payment

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--window-size=1280,2400"]
BROWSER_TIMEOUT_SECONDS = 120


async def _known_data(db: asyncpg.Connection, settings: RepairConfig) -> None:
    await add_participant(db, "bank-c")  # no traffic at all: still listed, HEALTHY
    stream = Stream(db)
    await stream.genesis()
    for _ in range(3):
        await executed_payment(stream, "bank-a")
    for _ in range(2):
        await executed_payment(stream, "bank-b")
    rejected, seq = await stream.ingress("bank-b")
    await stream.outcome(rejected, seq, "rejected", 403)
    await stream.ingress("bank-a", at=ago(minutes=5))  # the ghost
    await stream.heartbeat(ago(seconds=1))
    await cycle(db, settings)


async def _token_proxy(target_port: int) -> tuple[web.AppRunner, int]:
    """Forwards GETs to the dashboard with the supervisor's bearer token."""
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.Response:
        async with session.get(f"http://127.0.0.1:{target_port}{request.path_qs}",
                               headers={"Authorization": f"Bearer {TOKEN}"}) as upstream:
            return web.Response(status=upstream.status, body=await upstream.read(),
                                content_type=upstream.content_type)

    async def close_session(_: web.Application) -> None:
        await session.close()

    app = web.Application()
    app.router.add_get("/{tail:.*}", forward)
    app.on_cleanup.append(close_session)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def _browser(chromium: str, profile: Path, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=BROWSER_TIMEOUT_SECONDS)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("chromium did not finish within its time bound") from None
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout.decode()


def _cells(dom: str, participant: str) -> dict[str, str]:
    row = re.search(rf'<tr data-participant="{re.escape(participant)}">(.*?)</tr>', dom, re.S)
    assert row, f"no row for {participant}"
    return {m[0]: re.sub(r"<[^>]+>", "", m[1]).strip()
            for m in re.findall(r'<td class="(?:l )?([a-z-]+)">(.*?)</td>', row.group(1), re.S)}


async def test_dashboard_in_headless_chromium(db: asyncpg.Connection, database_url: str, tmp_path: Path,
                                              settings: RepairConfig) -> None:
    chromium = chromium_path()
    await _known_data(db, settings)
    process, port = await start_dashboard(database_url, tmp_path)
    proxy, proxy_port = await _token_proxy(port)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/", allow_redirects=False) as response:
                assert response.status == 303  # never open: a browser goes to the login form
                assert response.headers["Location"] in ("/login?next=%2F", "/login?next=/")
            async with session.get(f"http://127.0.0.1:{port}/api/summary") as response:
                assert response.status == 401  # a tool gets 401
            async with session.get(f"http://127.0.0.1:{port}/", headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
            async with session.post(f"http://127.0.0.1:{port}/",
                                    headers={"Authorization": f"Bearer {TOKEN}"}) as response:
                assert response.status == 405  # read-only
        dom = await _browser(chromium, tmp_path / "profile-dom", "--dump-dom", f"http://127.0.0.1:{proxy_port}/")
        bank_a, bank_b, bank_c = (_cells(dom, p) for p in ("bank-a", "bank-b", "bank-c"))
        assert (bank_a["ingress"], bank_a["executions"], bank_a["handled"], bank_a["ghosts"], bank_a["gap"]) == (
            "4", "3", "0", "1", "1")
        assert bank_a["status"] == "CRITICAL_GAP" and bank_a["score"] == "75.00"
        assert (bank_b["ingress"], bank_b["executions"], bank_b["handled"], bank_b["gap"]) == ("3", "2", "1", "0")
        assert bank_b["status"] == "HEALTHY" and bank_b["score"] == "100.00"
        assert bank_c["ingress"] == "0" and bank_c["status"] == "HEALTHY"
        assert re.search(r'id="total-gap">1<', dom) and re.search(r'id="total-ingress">7<', dom)
        assert "GHOST" in dom and 'data-stream="node-a/0"' in dom
        assert dom.count("<svg") == 5 and "<script" not in dom and "http://" not in dom.split("<body", 1)[1].replace(
            "http://www.w3.org/2000/svg", "")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "regulator-dashboard.png"
        shot.unlink(missing_ok=True)
        await _browser(chromium, tmp_path / "profile-shot", f"--screenshot={shot}", f"http://127.0.0.1:{proxy_port}/")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        # Drill-down: the ghost's incident page shows its evidence chain.
        incident = re.search(r'data-incident="([0-9a-f-]+)"><td class="l"><a href="/incidents/[0-9a-f-]+">GHOST', dom)
        assert incident
        page = await _browser(chromium, tmp_path / "profile-incident", "--dump-dom",
                              f"http://127.0.0.1:{proxy_port}/incidents/{incident.group(1)}")
        assert "Evidence chain" in page and "No outbox row." in page and "same idempotency key" in page
    finally:
        await proxy.cleanup()
        process.terminate()
        process.wait(timeout=20)
    assert process.returncode == 0


async def test_dashboard_refuses_to_start_open(database_url: str) -> None:
    with pytest.raises(Exception, match="never open"):
        dashboard.make_app(RepairConfig(), None, "")  # type: ignore[arg-type]


def test_chart_is_plain_svg() -> None:
    import datetime as dt

    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    chart = svg.bar_chart("Gap <per minute>", [(start + dt.timedelta(minutes=i), i % 3) for i in range(10)])
    assert chart.startswith("<svg") and chart.count("<rect") == 10
    assert "<script" not in chart and "Gap &lt;per minute&gt;" in chart
