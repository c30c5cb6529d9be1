"""The relayer as a real process against real rail simulators over HTTP.

Goal: invariants 6 and 7 under failure. Exactly one rail execution per outbox
row (the simulators count executions per key and per outbox id), nothing stuck
(expired leases reclaimed, budgets end in FAILED + incident), and the breaker,
the drain and several relayers at once behave. Method: insert outbox rows as
the service writes them, run `symphony rail-sim` and `symphony relayer`
processes on 127.0.0.1, inject faults (including the simulator's kill hook that
SIGKILLs the relayer right after the rail executed), and wait, bounded, for the
rows to settle; then compare the tables, outbox_events and simulator stats.
"""

from __future__ import annotations

import asyncio
import signal
import uuid

import aiohttp
import asyncpg
import pytest

from relayer.adapters import rail_key
from symphony.db import connect
from tests.conftest import own_postgres, symphony_cli
from tests.relayer.conftest import Processes, add_payments, statuses, wait_until


async def _get_json(url: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.json()


async def _set_faults(sim_url: str, **faults: object) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{sim_url}/_sim/faults", json=faults) as r:
        assert r.status == 200, await r.text()


async def _metrics(admin_port: int) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{admin_port}/metrics") as r:
        return await r.text()


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


async def _settled(db: asyncpg.Connection) -> bool:
    return await db.fetchval("SELECT count(*) = 0 FROM payment_outbox WHERE status NOT IN ('SUCCESS', 'FAILED')")


async def _assert_events_replay_to_table(db: asyncpg.Connection) -> None:
    """Folding outbox_events per row gives the table's status; each event starts where the last ended."""
    events = await db.fetch("SELECT outbox_id, old_status::text AS o, new_status::text AS n FROM outbox_events "
                            "ORDER BY outbox_id, event_id")
    replayed: dict[uuid.UUID, str] = {}
    for event in events:
        assert event["o"] == replayed.get(event["outbox_id"]), event
        replayed[event["outbox_id"]] = event["n"]
    table = {r["id"]: r["status"] for r in await db.fetch("SELECT id, status::text AS status FROM payment_outbox")}
    assert replayed == table


async def _assert_one_execution_per_success(db: asyncpg.Connection, sims: dict[str, str]) -> None:
    rows = await db.fetch("SELECT id, rail, status::text AS status FROM payment_outbox")
    for rail, url in sims.items():
        stats = await _get_json(f"{url}/_sim/stats")
        assert stats["double_executions_by_key"] == {} and stats["double_executions_by_reference"] == {}
        per_reference = stats["executions_per_reference"]
        for row in rows:
            if row["rail"] != rail:
                continue
            executions = per_reference.get(str(row["id"]), 0)
            assert executions <= 1, row
            if row["status"] == "SUCCESS":
                assert executions == 1, row
                assert stats["executions_per_key"][rail_key(row["id"])] == 1


@pytest.mark.evidence("failure_injection")
@pytest.mark.slow
async def test_kill_9_after_the_rail_executed_never_strikes_twice(database_url: str, db: asyncpg.Connection,
                                                                 processes: Processes) -> None:
    sims = {"swiftpay": processes.rail_sim("swiftpay"), "mobimoney": processes.rail_sim("mobimoney")}
    rails = {"swiftpay": ("swiftpay", sims["swiftpay"]), "mobimoney": ("mobimoney", sims["mobimoney"])}
    await add_payments(db, 3, rail="swiftpay")
    await add_payments(db, 3, rail="mobimoney", account="254700000001")
    for round_number in range(3):
        rail = "swiftpay" if round_number % 2 == 0 else "mobimoney"
        # One call at a time on one rail, so the hook hits a known relayer. The
        # simulator SIGKILLs it right after executing a new key, before the
        # answer leaves: the rail executed, the relayer never knew.
        relayer, _ = processes.relayer(f"doomed-{round_number}", database_url, {rail: rails[rail]},
                                       concurrency=1, wait=False)
        await _set_faults(sims[rail], kill_pid_on_execute=relayer.pid, kill_count=1)
        for _ in range(1200):
            if relayer.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert relayer.returncode == -signal.SIGKILL
    for sim in sims.values():
        await _set_faults(sim, kill_pid_on_execute=0, kill_count=0)
    processes.relayer("survivor", database_url, rails)
    await wait_until(lambda: _settled(db), what="every row settled after lease expiry")
    assert await statuses(db) == {"SUCCESS": 6}
    await _assert_one_execution_per_success(db, sims)
    reclaimed = await db.fetchval("SELECT count(*) FROM outbox_events WHERE old_status = 'IN_FLIGHT' "
                                  "AND new_status = 'RECOVERING' AND response_code = 'AMBIGUOUS_LEASE_EXPIRED'")
    assert reclaimed >= 3
    await _assert_events_replay_to_table(db)


@pytest.mark.evidence("failure_injection")
@pytest.mark.slow
async def test_thirty_percent_transient_faults_on_both_rails(database_url: str, db: asyncpg.Connection,
                                                            processes: Processes) -> None:
    faults = ('{"error_rate": 0.15, "timeout_rate": 0.05, "hang_seconds": 2.0, '
              '"drop_after_execute_rate": 0.10}')
    sims = {"swiftpay": processes.rail_sim("swiftpay", "--faults", faults),
            "mobimoney": processes.rail_sim("mobimoney", "--faults", faults)}
    rails = {name: (name, url) for name, url in sims.items()}
    await add_payments(db, 40, rail="swiftpay")
    await add_payments(db, 40, rail="mobimoney")
    processes.relayer("faulty-1", database_url, rails, extra_toml="batch_size = 20")
    processes.relayer("faulty-2", database_url, rails, extra_toml="batch_size = 20")
    await wait_until(lambda: _settled(db), timeout=120, what="every row SUCCESS or FAILED")
    counts = await statuses(db)
    assert set(counts) <= {"SUCCESS", "FAILED"} and sum(counts.values()) == 80
    assert await db.fetchval("SELECT max(attempt_count) FROM payment_outbox") <= 5
    failed = await db.fetch("SELECT id FROM payment_outbox WHERE status = 'FAILED'")
    incidents = await db.fetch("SELECT dedup_key FROM repair_incidents WHERE kind = 'DEAD_LETTER'")
    assert sorted(str(r["id"]) for r in failed) == sorted(i["dedup_key"] for i in incidents)
    await _assert_one_execution_per_success(db, sims)
    await _assert_events_replay_to_table(db)
    retried = await db.fetchval("SELECT count(*) FROM outbox_events WHERE new_status = 'RECOVERING'")
    assert retried > 0  # the faults did happen


@pytest.mark.evidence("failure_injection")
async def test_poison_payload_dead_letters_while_other_rows_flow(database_url: str, db: asyncpg.Connection,
                                                                processes: Processes) -> None:
    sim = processes.rail_sim("swiftpay")
    rails = {"swiftpay": ("swiftpay", sim)}
    (poison,) = await add_payments(db, 1, rail="swiftpay", max_attempts=3,
                                   payload_override={"currency": "KES", "note": "no amount, no account"})
    good = await add_payments(db, 10, rail="swiftpay")
    relayer, admin_port = processes.relayer("poll-only", database_url, rails, extra_toml="listen = false")
    await wait_until(lambda: _settled(db), what="poison dead-lettered, others done")
    assert relayer.poll() is None  # the worker survived the poison pill
    row = await db.fetchrow("SELECT status::text, attempt_count, last_response_code FROM payment_outbox "
                            "WHERE id = $1", poison)
    assert tuple(row) == ("FAILED", 3, "ADAPTER_ERROR")
    assert await db.fetchval("SELECT count(*) FROM payment_outbox WHERE status = 'SUCCESS' AND id = ANY($1)",
                             good) == 10
    incident = await db.fetchrow("SELECT kind, severity, evidence FROM repair_incidents WHERE dedup_key = $1",
                                 str(poison))
    assert incident["kind"] == "DEAD_LETTER"
    text = await _metrics(admin_port)
    assert _metric(text, "symphony_relayer_dlq_records_entered_total", rail="swiftpay") == 1
    assert _metric(text, "symphony_relayer_listening") == 0
    # The operator fixes the payload and re-drives it deliberately: same row, same key.
    await db.execute("""UPDATE payment_outbox SET payload = '{"amount_minor": 5, "currency": "KES",
                        "destination_account": "ACC-9"}' WHERE id = $1""", poison)
    result = await asyncio.to_thread(symphony_cli, "outbox", "redrive", str(poison), "--note", "payload repaired",
                                     "--actor", "operator:test", "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    await wait_until(lambda: db.fetchval("SELECT status = 'SUCCESS' FROM payment_outbox WHERE id = $1", poison),
                     what="redriven row SUCCESS")
    event = await db.fetchrow("SELECT actor, detail FROM outbox_events WHERE outbox_id = $1 AND old_status = "
                              "'FAILED'", poison)
    assert event["actor"] == "operator:test" and "payload repaired" in event["detail"]
    again = await asyncio.to_thread(symphony_cli, "outbox", "redrive", str(poison), "--note", "x",
                                    "--database-url", database_url)
    assert again.returncode == 2 and "not FAILED" in again.stderr
    stats = await _get_json(f"{sim}/_sim/stats")
    assert stats["executions_per_key"][rail_key(poison)] == 1


@pytest.mark.evidence("failure_injection")
async def test_breaker_opens_on_a_downed_rail_and_recovers(database_url: str, db: asyncpg.Connection,
                                                          processes: Processes) -> None:
    sim = processes.rail_sim("swiftpay", "--faults", '{"down": true}')
    await add_payments(db, 12, rail="swiftpay", max_attempts=100)
    _, admin_port = processes.relayer("breaker", database_url, {"swiftpay": ("swiftpay", sim)})

    async def opened() -> bool:
        return _metric(await _metrics(admin_port), "symphony_relayer_breaker_opens_total", rail="swiftpay") >= 1

    await wait_until(opened, what="breaker open")
    # The breaker lives in the relayer's memory; the dashboard reads it from here.
    await wait_until(lambda: db.fetchval("SELECT state = 'OPEN' AND valid_until > now() AND opened_at IS NOT NULL "
                                         "FROM rail_breaker_reports WHERE rail = 'swiftpay'"),
                     what="breaker reported OPEN in the database")
    assert await db.fetchval("SELECT count(*) FROM payment_outbox WHERE status = 'SUCCESS'") == 0
    await _set_faults(sim, down=False)
    await wait_until(lambda: _settled(db), what="rows flow after the rail is back")
    assert await statuses(db) == {"SUCCESS": 12}

    async def closed() -> bool:
        return _metric(await _metrics(admin_port), "symphony_relayer_breaker_state", rail="swiftpay") == 0

    await wait_until(closed, what="breaker closed")
    await wait_until(lambda: db.fetchval("SELECT state = 'CLOSED' FROM rail_breaker_reports WHERE rail = 'swiftpay'"),
                     what="breaker reported CLOSED in the database")
    await _assert_one_execution_per_success(db, {"swiftpay": sim})


async def test_several_relayers_never_dispatch_one_row_concurrently(database_url: str, db: asyncpg.Connection,
                                                                   processes: Processes) -> None:
    faults = '{"latency_ms_median": 2, "latency_ms_p99": 20}'
    sims = {"swiftpay": processes.rail_sim("swiftpay", "--faults", faults),
            "mobimoney": processes.rail_sim("mobimoney", "--faults", faults)}
    rails = {name: (name, url) for name, url in sims.items()}
    for index in range(3):
        processes.relayer(f"many-{index}", database_url, rails)
    await add_payments(db, 150, rail="swiftpay")
    await add_payments(db, 150, rail="mobimoney")
    await wait_until(lambda: _settled(db), timeout=120, what="300 rows settled")
    assert await statuses(db) == {"SUCCESS": 300}
    # No faults, so every row was claimed exactly once and sent exactly once.
    claims = await db.fetch("SELECT outbox_id, count(*) AS n FROM outbox_events WHERE new_status = 'IN_FLIGHT' "
                            "GROUP BY outbox_id")
    assert len(claims) == 300 and {c["n"] for c in claims} == {1}
    for url in sims.values():
        stats = await _get_json(f"{url}/_sim/stats")
        assert set(stats["requests_per_key"].values()) == {1} and stats["keys"] == 150
    actors = await db.fetch("SELECT DISTINCT actor FROM outbox_events WHERE new_status = 'SUCCESS'")
    assert len(actors) >= 2
    await _assert_events_replay_to_table(db)


async def test_sigterm_drains_and_leaves_nothing_in_flight(database_url: str, db: asyncpg.Connection,
                                                          processes: Processes) -> None:
    sim = processes.rail_sim("swiftpay", "--faults", '{"latency_ms_median": 300, "latency_ms_p99": 400}')
    await add_payments(db, 40, rail="swiftpay")
    # A drain deadline shorter than the calls: what is still running is cancelled,
    # written back as AMBIGUOUS (shielded), and retried later with the same key.
    relayer, _ = processes.relayer("drain", database_url, {"swiftpay": ("swiftpay", sim)}, shutdown_seconds=0.1)
    await wait_until(lambda: db.fetchval("SELECT count(*) > 0 FROM payment_outbox WHERE status = 'IN_FLIGHT'"),
                     what="calls in flight")
    assert await db.fetchval("SELECT count(*) FROM rail_breaker_reports") == 1  # reported while it runs
    relayer.send_signal(signal.SIGTERM)
    returncode = await asyncio.to_thread(relayer.wait, 30)
    assert returncode == 0
    assert await db.fetchval("SELECT count(*) FROM payment_outbox WHERE status = 'IN_FLIGHT'") == 0
    assert await db.fetchval("SELECT count(*) FROM rail_breaker_reports") == 0  # a clean stop forgets its reports
    await _assert_events_replay_to_table(db)
    cut = await db.fetchval("SELECT count(*) FROM outbox_events WHERE response_code = 'AMBIGUOUS_SHUTDOWN'")
    print(f"calls cut by the drain deadline: {cut}")
    # A successor finishes the job without a second strike.
    processes.relayer("successor", database_url, {"swiftpay": ("swiftpay", sim)})
    await wait_until(lambda: _settled(db), what="successor settles the rest")
    assert await statuses(db) == {"SUCCESS": 40}
    await _assert_one_execution_per_success(db, {"swiftpay": sim})


@pytest.mark.evidence("failure_injection")
async def test_sigstop_past_the_lease_then_claimed_again_by_itself(database_url: str, db: asyncpg.Connection,
                                                                  processes: Processes) -> None:
    """A relayer paused (SIGSTOP) longer than its lease, mid-call. On SIGCONT its
    own reclaim re-queues the row and its next claim takes it again while it
    still holds the earlier attempt (outcome not yet written: a completion
    flush of 1 s widens the window the chaos run hit). It must not crash; the
    earlier outcome is fenced off, the newer attempt resends the same key."""
    sim = processes.rail_sim("swiftpay", "--faults", '{"latency_ms_median": 300, "latency_ms_p99": 400}')
    (outbox_id,) = await add_payments(db, 1, rail="swiftpay", max_attempts=100)
    relayer, admin_port = processes.relayer("stalled", database_url, {"swiftpay": ("swiftpay", sim)},
                                            lease_seconds=2.0, extra_toml="completion_flush_seconds = 1.0")
    await wait_until(lambda: db.fetchval("SELECT status = 'IN_FLIGHT' FROM payment_outbox WHERE id = $1",
                                         outbox_id), what="the rail call in progress")
    relayer.send_signal(signal.SIGSTOP)
    try:
        await wait_until(lambda: db.fetchval("SELECT lease_expires_at < now() FROM payment_outbox WHERE id = $1",
                                             outbox_id), what="the stopped relayer's 2 s lease to expire")
    finally:
        relayer.send_signal(signal.SIGCONT)

    async def claimed_again() -> bool:
        try:
            text = await _metrics(admin_port)
        except aiohttp.ClientError:
            raise AssertionError("the relayer's /metrics is gone: it died after SIGCONT (see stalled.log)") from None
        return sum(_metric(text, "symphony_relayer_claimed_again_total", earlier_call=state, rail="swiftpay")
                   for state in ("running", "returned")) >= 1

    await wait_until(claimed_again, what="the row claimed again by the same relayer")
    await wait_until(lambda: _settled(db), what="the row settled")

    async def fenced() -> bool:
        return _metric(await _metrics(admin_port), "symphony_relayer_completions_fenced_total") >= 1

    # Positive evidence that the earlier attempt's delayed outcome write did
    # happen (and was fenced off) before the row's final state is judged.
    await wait_until(fenced, what="the earlier attempt's outcome write to be fenced off")
    assert relayer.poll() is None
    row = await db.fetchrow("SELECT status::text, attempt_count FROM payment_outbox WHERE id = $1", outbox_id)
    assert row["status"] == "SUCCESS" and row["attempt_count"] >= 2
    success = await db.fetchrow("SELECT attempt, actor FROM outbox_events WHERE outbox_id = $1 AND "
                                "new_status = 'SUCCESS'", outbox_id)
    assert success["attempt"] == row["attempt_count"] and success["actor"] == "stalled"
    assert _metric(await _metrics(admin_port), "symphony_relayer_completions_fenced_total") >= 1
    await _assert_one_execution_per_success(db, {"swiftpay": sim})
    await _assert_events_replay_to_table(db)


@pytest.mark.evidence("failure_injection")
@pytest.mark.slow
async def test_survives_a_postgres_crash_and_restart(processes: Processes) -> None:
    """PostgreSQL stopped with `pg_ctl -m immediate` under a running relayer and
    started again: its pooled and LISTEN sessions die mid-query, reconnects are
    refused while the server is down. The relayer must keep running, say so on
    /readyz and /metrics, listen again, and settle every row with one
    execution per key."""
    async with own_postgres("relayer-outage") as (server, url):
        try:
            db = await connect(url)
            sim = processes.rail_sim("swiftpay", "--faults", '{"latency_ms_median": 50, "latency_ms_p99": 100}')
            await add_payments(db, 400, rail="swiftpay")
            relayer, admin_port = processes.relayer("outage", url, {"swiftpay": ("swiftpay", sim)})
            # Killed under load: claims, rail calls and outcome writes in progress.
            await wait_until(lambda: db.fetchval("SELECT count(*) >= 40 FROM payment_outbox WHERE status = 'SUCCESS'"),
                             what="rows flowing")
            await db.close()
            server.kill()

            async def kept_trying() -> bool:
                # Several failed claims: the relayer noticed the outage and kept running through it.
                text = await _metrics(admin_port)
                return (_metric(text, "symphony_relayer_database_errors_total", operation="claim") >= 2
                        and _metric(text, "symphony_relayer_listening") == 0)

            await wait_until(kept_trying, what="claims failing against the dead server")
            assert relayer.poll() is None, "the relayer exited while PostgreSQL was down"
            async with aiohttp.ClientSession() as session, \
                    session.get(f"http://127.0.0.1:{admin_port}/readyz") as answer:
                assert answer.status == 503, await answer.text()
            text = await _metrics(admin_port)
            assert _metric(text, "symphony_relayer_database_errors_total", operation="claim") >= 1
            assert _metric(text, "symphony_relayer_listening") == 0
            server.restart()
            db = await connect(url)
            try:
                await add_payments(db, 20, rail="swiftpay")
                await wait_until(lambda: _settled(db), what="the rows after the restart settled")
                assert await statuses(db) == {"SUCCESS": 420}
                await _assert_one_execution_per_success(db, {"swiftpay": sim})
                await _assert_events_replay_to_table(db)

                async def listening() -> bool:
                    return _metric(await _metrics(admin_port), "symphony_relayer_listening") == 1

                await wait_until(listening, what="LISTEN again after the restart")
            finally:
                await db.close()
            assert relayer.poll() is None
            relayer.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(relayer.wait, 30) == 0
        finally:
            processes.stop_all()


def test_bad_config_exits_2_and_unreachable_database_exits_3(tmp_path) -> None:
    config = tmp_path / "relayer.toml"
    config.write_text('lease_seconds = 1\n[rails.swiftpay]\nkind = "swiftpay"\nurl = "http://127.0.0.1:1"\n')
    result = symphony_cli("relayer", "--config", str(config), "--database-url", "postgresql://x@127.0.0.1:1/x")
    assert result.returncode == 2 and "lease_seconds" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    config.write_text('admin_port = 0\n[rails.swiftpay]\nkind = "swiftpay"\nurl = "http://127.0.0.1:1"\n')
    result = symphony_cli("relayer", "--config", str(config), "--database-url", "postgresql://x@127.0.0.1:1/x")
    assert result.returncode == 3 and "cannot connect" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
