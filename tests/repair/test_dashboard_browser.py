"""A supervisor uses the dashboard in a real headless Chromium during a rail outage.

Method: real rows in a fresh database: a payment whose rail call never came
back (IN_FLIGHT, lease long expired, created ten minutes ago), a relayer's
report that the rail's circuit breaker is OPEN, one repair cycle (it opens a
ZOMBIE incident and re-queues the row). `symphony dashboard` runs as a real
process (refresh every second, stuck after 60 s). Chromium, driven over the
DevTools protocol (tests/repair/browser.py), does what a person does: opens
the dashboard, lands on the login form, types the token, submits; sees
ACTION_REQUIRED with the reasons; opens the incident and follows the evidence
links (outbox row, then its attestation). The outage then clears as the
relayer and repair would clear it (breaker CLOSED, the payment SUCCESS, a
repair cycle), and the open page, refreshing itself, shows HEALTHY. Logout
ends the session. On failure a screenshot and the DOM go to test-artifacts/.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from repair.config import RepairConfig
from tests.conftest import REPO_ROOT
from tests.repair.browser import Browser, chromium_path
from tests.repair.conftest import cycle, open_incidents
from tests.repair.dashboard_helpers import TOKEN, form_csrf, login_csrf, start_dashboard
from tests.repair.helpers import Stream, ago, executed_payment

ARTIFACTS = REPO_ROOT / "test-artifacts"
# Refresh the page every second; a payment pending a minute counts as stuck.
DASHBOARD_ENV = {"SYMPHONY_REPAIR_DASHBOARD_REFRESH_SECONDS": "1",
                 "SYMPHONY_REPAIR_DASHBOARD_PENDING_AGE_SECONDS_MAX": "60"}


async def _outage(db: asyncpg.Connection, settings: RepairConfig) -> tuple[Stream, object]:
    """A payment stuck behind an open breaker on rail `mmo`; returns the stream and its outbox id."""
    stream = Stream(db)
    await stream.genesis()
    outbox_id = await executed_payment(stream, "bank-a")
    await db.execute(
        """UPDATE payment_outbox SET status = 'IN_FLIGHT', lease_owner = 'relayer-1', attempt_count = 1,
               lease_expires_at = now() - interval '5 minutes', created_at = now() - interval '10 minutes'
           WHERE id = $1""", outbox_id)
    await db.execute(
        """INSERT INTO rail_breaker_reports (rail, worker_id, state, opened_at, consecutive_failures, valid_until)
           VALUES ('mmo', 'relayer-1', 'OPEN', now() - interval '6 minutes', 5, now() + interval '1 hour')""")
    await stream.heartbeat(ago(seconds=1))
    await cycle(db, settings)
    assert [i["kind"] for i in await open_incidents(db)] == ["ZOMBIE"]
    return stream, outbox_id


async def _recovery(db: asyncpg.Connection, settings: RepairConfig, stream: Stream, outbox_id: object) -> None:
    """What the relayer and repair write once the rail answers again."""
    await db.execute("UPDATE rail_breaker_reports SET state = 'CLOSED', consecutive_failures = 0, "
                     "reported_at = now()")
    await db.execute("UPDATE payment_outbox SET status = 'IN_FLIGHT', lease_owner = 'relayer-1', attempt_count = 2, "
                     "lease_expires_at = now() + interval '30 seconds' WHERE id = $1", outbox_id)
    await db.execute("UPDATE payment_outbox SET status = 'SUCCESS', lease_owner = NULL, lease_expires_at = NULL, "
                     "completed_at = now(), last_response_code = 'OK' WHERE id = $1", outbox_id)
    await stream.heartbeat(ago(seconds=1))
    await cycle(db, settings)
    assert await open_incidents(db) == []


async def test_supervisor_logs_in_and_sees_the_outage_then_health(
        db: asyncpg.Connection, database_url: str, tmp_path: Path, settings: RepairConfig,
        request: pytest.FixtureRequest) -> None:
    chromium_path()  # installs Chromium if needed (or skips where it cannot be installed)
    stream, outbox_id = await _outage(db, settings)
    process, port = await start_dashboard(database_url, tmp_path, env=DASHBOARD_ENV)
    base = f"http://127.0.0.1:{port}"
    browser: Browser | None = None
    try:
        browser = await Browser.start(tmp_path / "profile")
        # Like a person: open the dashboard, get the login form, type the token.
        await browser.goto(base + "/")
        assert await browser.path() == "/login"
        await browser.type_into("#token", TOKEN)
        await browser.click("#login-submit")
        await browser.wait_for("location.pathname === '/' && !!document.getElementById('overall')",
                               what="the overview after login")
        cookies = {c["name"]: c for c in await browser.cookies()}
        session = cookies["__Host-symphony_session"]
        assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
        assert "__Host-symphony_login_csrf" not in cookies  # spent at login

        dom = await browser.dom()
        assert re.search(r'id="overall">Overall: <span class="badge warn">ACTION_REQUIRED</span>', dom), dom[:3000]
        assert 'data-condition="payments_stuck"' in dom and 'data-condition="breaker_open"' in dom
        assert re.search(r'<tr data-rail="mmo">.*?<td class="stuck">1</td>.*?OPEN \(relayer-1\)', dom, re.S)
        assert '<meta http-equiv="refresh" content="1">' in dom

        # The incident, as a page with the evidence chain as links; follow them.
        await browser.click('tr[data-incident] a')
        await browser.wait_for("location.pathname.startsWith('/incidents/') && "
                               "!!document.getElementById('evidence-chain')", what="the incident page")
        page = await browser.dom()
        assert "<pre" not in page and "ZOMBIE" in page and "requeued_as_recovering" in page
        await browser.click("#link-outbox")
        await browser.wait_for(f"location.pathname === '/outbox/{outbox_id}'", what="the outbox row page")
        outbox_page = await browser.dom()
        assert "RECOVERING" in outbox_page and "relayer-1" in outbox_page
        await browser.click("#link-attestation")
        await browser.wait_for("location.pathname.startsWith('/attestations/') && "
                               "document.body.innerText.includes('INGRESS')", what="the attestation page")
        assert "OUTCOME" in await browser.dom()

        # The outage clears; the overview, left open, refreshes itself to HEALTHY.
        await browser.goto(base + "/")
        await _recovery(db, settings, stream, outbox_id)
        await browser.wait_for("document.getElementById('overall') && "
                               "document.getElementById('overall').innerText.includes('HEALTHY')",
                               what="HEALTHY after the outage cleared", timeout=30)
        assert await browser.path() == "/"
        assert "data-condition" not in await browser.dom()

        # Logout (a POST with the session's CSRF token) ends the session.
        await browser.click("#logout button")
        await browser.wait_for("location.pathname === '/login'", what="the login form after logout")
        await browser.goto(base + "/")
        assert await browser.path() == "/login"
    except BaseException:
        if browser is not None:
            ARTIFACTS.mkdir(exist_ok=True)
            name = request.node.name
            await browser.screenshot(ARTIFACTS / f"{name}-failure.png")
            (ARTIFACTS / f"{name}-failure.html").write_text(await browser.dom())
        raise
    finally:
        if browser is not None:
            await browser.close()
        process.terminate()
        process.wait(timeout=20)
    assert process.returncode == 0


async def test_login_and_logout_refuse_forged_forms(database_url: str, tmp_path: Path) -> None:
    """Goal: CSRF and token checks on the two state-changing forms. Method: a
    real dashboard; plain HTTP requests: a login POST without the form's CSRF
    cookie, with a wrong token, then a good one; a logout without its token."""
    process, port = await start_dashboard(database_url, tmp_path, env=DASHBOARD_ENV)
    base = f"http://127.0.0.1:{port}"
    try:
        # Secure cookies over plain HTTP on 127.0.0.1, as browsers allow for loopback.
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[base])
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(base + "/readyz") as r:
                assert r.status == 200 and (await r.json())["checks"] == {"database": "ok"}
            async with http.post(base + "/login", data={"token": TOKEN, "csrf": "forged"},
                                 allow_redirects=False) as r:
                assert r.status == 403  # no CSRF cookie from the form: refused even with the right token
            async with http.get(base + "/login") as r:
                form = await r.text()
                set_cookie = r.headers.getall("Set-Cookie")
            assert any("__Host-symphony_login_csrf=" in c and "Secure" in c and "HttpOnly" in c
                       and "SameSite=Strict" in c and "Path=/" in c for c in set_cookie), set_cookie
            async with http.post(base + "/login", data={"token": "wrong-token-0123456789", "csrf": form_csrf(form)},
                                 allow_redirects=False) as r:
                assert r.status == 401 and "Wrong token" in await r.text()
            async with http.post(base + "/login", data={"token": TOKEN, "csrf": await login_csrf(http, base),
                                                         "next": "//evil.test/"},
                                 allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/"  # never off-site
                session_cookie = [c for c in r.headers.getall("Set-Cookie") if "__Host-symphony_session=" in c]
            assert session_cookie and all(a in session_cookie[0] for a in ("Secure", "HttpOnly", "SameSite=Strict",
                                                                             "Max-Age=28800"))
            async with http.get(base + "/", allow_redirects=False) as r:
                assert r.status == 200
                csrf = re.search(r'id="logout"><input type="hidden" name="csrf" value="([^"]+)"', await r.text())
            assert csrf
            async with http.post(base + "/logout", data={"csrf": "forged"}, allow_redirects=False) as r:
                assert r.status == 403
            async with http.get(base + "/", allow_redirects=False) as r:
                assert r.status == 200  # still logged in
            async with http.post(base + "/logout", data={"csrf": csrf.group(1)}, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/login"
            async with http.get(base + "/", allow_redirects=False) as r:
                assert r.status == 303
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert process.returncode == 0
