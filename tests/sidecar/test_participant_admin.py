"""`symphony participant` against a real sidecar: the kill-switch as an operator pulls it (invariant 10)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import aiohttp
import pytest

from symphony.db import connect
from tests.conftest import REPO_ROOT
from tests.sidecar.conftest import Keys, Sidecar, Upstream, wait_until

REFUSAL_DEADLINE_SECONDS = 10.0


@pytest.fixture(scope="module")
def sidecar(sidecar_factory: Any, module_database_url: str, upstream: Upstream) -> Sidecar:
    # A slow poll: only the NOTIFY path can make the refusal quick, but the test
    # asserts no timing, only that the refusal comes (the bench measures it).
    return sidecar_factory(module_database_url, upstream.url, extra={"policy_poll_seconds": 30.0})


async def _cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "symphony", "participant", *args, cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def _post(http: aiohttp.ClientSession, sidecar: Sidecar, token: str) -> tuple[int, str]:
    async with http.post(f"{sidecar.url}/v1/payments", data=b'{"amount": 1}',
                         headers={"Authorization": f"Bearer {token}"}) as response:
        payload = await response.json()
        return response.status, str(payload.get("error", ""))


async def _until_status(http: aiohttp.ClientSession, sidecar: Sidecar, token: str, status: int) -> tuple[int, str]:
    """Send requests until one gets `status`, within a deadline; the last answer."""
    deadline = time.monotonic() + REFUSAL_DEADLINE_SECONDS
    while True:
        answer = await _post(http, sidecar, token)
        if answer[0] == status or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.005)


async def test_suspend_revoke_and_reinstate_through_the_cli(
        sidecar: Sidecar, keys: Keys, module_database_url: str, http: aiohttp.ClientSession) -> None:
    """Goal: a suspension made with `symphony participant suspend` refuses the
    participant's next requests (403 participant_suspended), revoke-tokens refuses
    tokens with the old policy version, reinstate lets the participant in again,
    and each change is in the append-only record. Method: a real sidecar
    process; the CLI as a real process; requests repeated until the expected
    answer, with a deadline and no timing assertion."""
    await wait_until(lambda: sidecar.readyz_status() == 200)
    old_token = keys.token("bank-a", pv=1)
    assert await _post(http, sidecar, old_token) == (201, "")
    url = ("--database-url", module_database_url)

    code, output = await _cli("suspend", "bank-a", "--reason", "test: suspend", "--operator", "tester", *url)
    assert code == 0, output
    assert await _until_status(http, sidecar, old_token, 403) == (403, "participant_suspended")
    assert (await _post(http, sidecar, keys.token("mfi-b")))[0] == 201  # only bank-a is refused

    code, output = await _cli("revoke-tokens", "bank-a", "--reason", "test: revoke", "--operator", "tester", *url)
    assert code == 0, output
    code, output = await _cli("reinstate", "bank-a", "--reason", "test: reinstate", "--operator", "tester", *url)
    assert code == 0, output
    new_token = keys.token("bank-a", pv=2)
    assert await _until_status(http, sidecar, new_token, 201) == (201, "")
    assert await _post(http, sidecar, old_token) == (403, "stale_policy_version")

    db = await connect(module_database_url)
    try:
        actions = [r["action"] for r in await db.fetch(
            "SELECT action FROM participant_admin_events WHERE participant_id = 'bank-a' ORDER BY event_id")]
    finally:
        await db.close()
    assert actions == ["SUSPEND", "REVOKE_TOKENS", "REINSTATE"]
