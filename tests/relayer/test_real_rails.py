"""The three real-rail shapes (MTN MoMo, Airtel Money, ISO 20022 RTGS) end to end.

Goal: each new adapter keeps invariant 6 (a retry presents the same handle; one
execution per outbox row) under the same kill -9 and fault tests the invented
rails pass, the handles are the documented derivations of SHA-256(outbox.id),
and the MTN simulator is faithful to the published API: an independent client
library from the package registry (mtnmomo-py) drives it. Method: real
`symphony rail-sim` and `symphony relayer` processes on 127.0.0.1, credentials
from a 0600 file, the simulators' execution counters and the outbox tables.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from relayer import credentials as rail_credentials
from symphony.errors import ConfigError
from symphony.rail_handles import rail_handle, rail_id30, rail_id35, rail_key_hex, rail_uuid
from tests.relayer.conftest import Processes, add_payments, statuses, wait_until

REAL_RAILS = ("mtn_momo", "airtel_money", "iso20022")
SECRETS = {"subscription_key": "sub-key-test", "api_user": str(uuid.UUID(int=7)), "api_key": "api-key-test",
           "client_id": "airtel-client", "client_secret": "airtel-secret", "pin": "ENCRYPTED-PIN",
           "username": "rtgs-user", "password": "rtgs-password"}
ACCOUNT = {"mtn_momo": "256770000001", "airtel_money": "254733000001", "iso20022": "KE00ACC000001"}


def credentials_file(tmp_path: Path) -> Path:
    path = tmp_path / "rail-credentials.json"
    path.write_text(json.dumps(SECRETS))
    path.chmod(0o600)
    return path


def start_rail(processes: Processes, tmp_path: Path, rail: str, *extra: str) -> str:
    return processes.rail_sim(rail, "--credentials-file", str(credentials_file(tmp_path)), *extra)


def relayer_toml(tmp_path: Path) -> str:
    return f'credentials_file = "{credentials_file(tmp_path)}"'


async def _get_json(url: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.json()


async def _set_faults(sim_url: str, **faults: object) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{sim_url}/_sim/faults", json=faults) as r:
        assert r.status == 200, await r.text()


async def _settled(db: asyncpg.Connection) -> bool:
    return await db.fetchval("SELECT count(*) = 0 FROM payment_outbox WHERE status NOT IN ('SUCCESS', 'FAILED')")


async def assert_one_execution_per_row(db: asyncpg.Connection, rail: str, url: str) -> None:
    """At most one execution per handle and per outbox id; exactly one for each SUCCESS row."""
    stats = await _get_json(f"{url}/_sim/stats")
    assert stats["double_executions_by_key"] == {} and stats["double_executions_by_reference"] == {}
    rows = await db.fetch("SELECT id, status::text AS status FROM payment_outbox WHERE rail = $1", rail)
    assert rows, "no rows to check"
    for row in rows:
        executions = stats["executions_per_reference"].get(str(row["id"]), 0)
        assert executions <= 1, row
        if row["status"] == "SUCCESS":
            assert executions == 1, row
            assert stats["executions_per_key"][rail_handle(rail, row["id"])] == 1


def test_handles_are_the_documented_derivations() -> None:
    """Each handle is a fixed function of SHA-256(outbox.id): pinned vectors, formats, and no collision."""
    outbox_id = uuid.UUID("0190a5c0-0000-7000-8000-000000000001")
    assert rail_key_hex(outbox_id) == "0549751a6f57bf1af4bc2691dbe2f2065ff151aee6f3ead12b28afd5483d7269"
    assert str(rail_uuid(outbox_id)) == "0549751a-6f57-4f1a-b4bc-2691dbe2f206"
    assert rail_id35(outbox_id) == "0549751a6f57bf1af4bc2691dbe2f2065ff"
    assert rail_id30(outbox_id) == "0549751a6f57bf1af4bc2691dbe2f2"
    handles = {rail_handle(kind, uuid.uuid4()) for kind in REAL_RAILS for _ in range(2000)}
    assert len(handles) == 6000
    for index in range(200):
        some_id = uuid.UUID(int=index * 7919 + 1)
        derived = rail_uuid(some_id)
        assert derived.version == 4 and derived.variant == uuid.RFC_4122
        assert derived.bytes[:6] == bytes.fromhex(rail_key_hex(some_id))[:6]


def test_fast_iso20022_readers_read_what_the_pyiso20022_decoders_read() -> None:
    """Goal: the dispatch path's xml.etree readers (pacs.008, pacs.028, pacs.002) give exactly the
    pyiso20022 decoders' results, and leave refusals to the decoders. Method: messages built with
    pyiso20022 over varied values (amounts, currencies, XML-special accounts, every status, with and
    without a reason), pretty-printed too; then messages the decoders refuse (two transactions, another
    message, not XML) must raise the decoder's MessageError from the fast reader as well."""
    import datetime as dt
    from decimal import Decimal

    from symphony import iso20022

    for index, (amount, currency, account) in enumerate([(Decimal("12.34"), "KES", "KE00ACC000001"),
                                                         (Decimal("1500"), "UGX", "a&b <c> \"d\""),
                                                         (Decimal("0.125"), "KWD", "")]):
        outbox_id = uuid.uuid4()
        transfer = iso20022.Transfer(msg_id=f"M{index}", tx_id=rail_id35(outbox_id),
                                     end_to_end_id=iso20022.end_to_end_id(outbox_id), uetr=str(rail_uuid(outbox_id)),
                                     amount=amount, currency=currency, debtor_agent_bic="SYMPKENAXXX",
                                     creditor_agent_bic="RTGSKENAXXX", creditor_account=account,
                                     settlement_date=dt.date(2026, 12, 5) + dt.timedelta(days=index))
        built = iso20022.pacs008_build(transfer)
        pretty = built.replace(b"><", b">\n  <")
        for data in (built, pretty):
            assert iso20022.pacs008_read(data) == iso20022.pacs008_parse(data) == \
                iso20022.Transfer(**{**{f: getattr(transfer, f) for f in transfer.__slots__},
                                     "amount": iso20022.pacs008_parse(data).amount})
        request = iso20022.pacs028_build(f"Q{index}", transfer.tx_id)
        assert iso20022.pacs028_read(request) == iso20022.pacs028_parse(request) == transfer.tx_id
    for status in (iso20022.Status("T1", "ACSC", None, "RTGS1"), iso20022.Status("T2", "RJCT", "AC04", None),
                   iso20022.Status("T3", "ACSP", None, None), iso20022.Status("T4", "RJCT", "AM05", "R&4")):
        report = iso20022.pacs002_build("M", "O", "pacs.008.001.08", status)
        for data in (report, report.replace(b"><", b">\n <")):
            assert iso20022.pacs002_read(data) == iso20022.pacs002_parse(data) == status
    two = iso20022.pacs008_build(transfer).replace(b"</CdtTrfTxInf>", b"</CdtTrfTxInf>" + built[
        built.index(b"<CdtTrfTxInf>"):built.index(b"</CdtTrfTxInf>") + len(b"</CdtTrfTxInf>")])
    for reader, data in ((iso20022.pacs008_read, two), (iso20022.pacs008_read, report),
                         (iso20022.pacs002_read, b"<not xml"), (iso20022.pacs028_read, built)):
        with pytest.raises(iso20022.MessageError):
            reader(data)


def test_credentials_come_from_a_private_file_or_the_environment(tmp_path: Path) -> None:
    """A group-readable file is refused; the environment overrides a field; repr shows no value."""
    path = credentials_file(tmp_path)
    loaded = rail_credentials.load("mtn", str(path), ("api_key",), environ={"SYMPHONY_RAIL_MTN_API_KEY": "from-env"})
    assert loaded["api_key"] == "from-env" and loaded["api_user"] == SECRETS["api_user"]
    assert "from-env" not in repr(loaded) and SECRETS["api_user"] not in repr(loaded)
    with pytest.raises(ConfigError, match="missing credentials pin"):
        rail_credentials.load("airtel", "", ("pin",), environ={})
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="readable by others"):
        rail_credentials.load("mtn", str(path), (), environ={})


async def test_mtn_simulator_speaks_the_api_an_independent_client_expects(processes: Processes,
                                                                         tmp_path: Path) -> None:
    """mtnmomo-py (from the package registry, not ours) gets a token, transfers, and reads the status."""
    from mtnmomo import MoMoClient, MoMoConfig
    from mtnmomo.config import ProductCredentials
    from mtnmomo.errors import MoMoAuthenticationError, MoMoConflictError, MoMoNotFoundError

    url = start_rail(processes, tmp_path, "mtn_momo", "--settle-ms", "0")
    config = MoMoConfig(disbursement=ProductCredentials(SECRETS["subscription_key"], SECRETS["api_user"],
                                                        SECRETS["api_key"]), base_url=url, timeout=5.0)

    def drive() -> tuple[object, ...]:
        with MoMoClient(config) as client:
            api = client.disbursement
            assert api is not None
            token = api.create_access_token()
            reference = str(uuid.uuid4())
            payload = {"amount": "150.00", "currency": "EUR", "externalId": "ext-1",
                       "payee": {"partyIdType": "MSISDN", "partyId": "46733123453"},
                       "payerMessage": "hello", "payeeNote": "note"}
            returned = api.transfer(payload, reference_id=reference)
            result = api.get_transfer_status(reference)
            try:
                api.transfer(payload, reference_id=reference)
                conflict = None
            except MoMoConflictError as exc:
                conflict = exc
            try:
                api.get_transfer_status(str(uuid.uuid4()))
                missing = None
            except MoMoNotFoundError as exc:
                missing = exc
        bad = MoMoConfig(disbursement=ProductCredentials(SECRETS["subscription_key"], "someone", "wrong"),
                         base_url=url, timeout=5.0)
        with MoMoClient(bad) as client:
            assert client.disbursement is not None
            try:
                client.disbursement.create_access_token()
                refused = None
            except MoMoAuthenticationError as exc:
                refused = exc
        return token, reference, returned, result, conflict, missing, refused

    token, reference, returned, result, conflict, missing, refused = await asyncio.to_thread(drive)
    assert getattr(token, "access_token", "") and returned == reference
    assert getattr(result, "status", None) == "SUCCESSFUL" and getattr(result, "amount", None) == "150.00"
    assert getattr(result, "external_id", None) == "ext-1" and getattr(result, "financial_transaction_id", None)
    assert conflict is not None and getattr(conflict, "code", None) == "RESOURCE_ALREADY_EXIST"
    assert missing is not None and refused is not None
    stats = await _get_json(f"{url}/_sim/stats")
    assert stats["executions_per_key"] == {reference: 1}


@pytest.mark.slow
@pytest.mark.parametrize("rail", REAL_RAILS)
async def test_kill_9_after_the_rail_executed_never_strikes_twice(rail: str, database_url: str,
                                                                 db: asyncpg.Connection, processes: Processes,
                                                                 tmp_path: Path) -> None:
    """The simulator SIGKILLs the relayer right after a new execution (answer lost), three times;
    a survivor asks the rail for the same handle and records one execution per row."""
    url = start_rail(processes, tmp_path, rail)
    await add_payments(db, 3, rail=rail, account=ACCOUNT[rail])
    for round_number in range(3):
        relayer, _ = processes.relayer(f"doomed-{rail}-{round_number}", database_url, {rail: (rail, url)},
                                       concurrency=1, wait=False, lease_seconds=5.0,
                                       rail_toml=relayer_toml(tmp_path))
        await _set_faults(url, kill_pid_on_execute=relayer.pid, kill_count=1)
        for _ in range(1200):
            if relayer.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert relayer.returncode == -signal.SIGKILL
    await _set_faults(url, kill_pid_on_execute=0, kill_count=0)
    processes.relayer(f"survivor-{rail}", database_url, {rail: (rail, url)}, lease_seconds=5.0,
                      rail_toml=relayer_toml(tmp_path))
    await wait_until(lambda: _settled(db), what="every row settled after lease expiry")
    assert await statuses(db) == {"SUCCESS": 3}
    await assert_one_execution_per_row(db, rail, url)
    stats = await _get_json(f"{url}/_sim/stats")
    assert stats["executions_total"] == 3 and stats["requests_total"] >= 3


@pytest.mark.slow
@pytest.mark.parametrize("rail", REAL_RAILS)
async def test_thirty_percent_transient_faults(rail: str, database_url: str, db: asyncpg.Connection,
                                               processes: Processes, tmp_path: Path) -> None:
    """5xx, hangs and executed-then-dropped answers: every row ends SUCCESS or FAILED (dead letter with
    an incident), and no handle executes twice."""
    faults = '{"error_rate": 0.15, "timeout_rate": 0.05, "hang_seconds": 2.0, "drop_after_execute_rate": 0.10}'
    url = start_rail(processes, tmp_path, rail, "--faults", faults)
    await add_payments(db, 30, rail=rail, account=ACCOUNT[rail])
    for index in range(2):
        processes.relayer(f"faulty-{rail}-{index}", database_url, {rail: (rail, url)}, lease_seconds=5.0,
                          extra_toml="batch_size = 10", rail_toml=relayer_toml(tmp_path))
    await wait_until(lambda: _settled(db), timeout=120, what="every row SUCCESS or FAILED")
    counts = await statuses(db)
    assert set(counts) <= {"SUCCESS", "FAILED"} and sum(counts.values()) == 30
    failed = await db.fetch("SELECT id FROM payment_outbox WHERE status = 'FAILED'")
    incidents = await db.fetch("SELECT dedup_key FROM repair_incidents WHERE kind = 'DEAD_LETTER'")
    assert sorted(str(r["id"]) for r in failed) == sorted(i["dedup_key"] for i in incidents)
    await assert_one_execution_per_row(db, rail, url)
    retried = await db.fetchval("SELECT count(*) FROM outbox_events WHERE new_status = 'RECOVERING'")
    assert retried > 0  # the faults did happen


@pytest.mark.parametrize("rail", REAL_RAILS)
async def test_a_refused_payee_fails_for_good(rail: str, database_url: str, db: asyncpg.Connection,
                                              processes: Processes, tmp_path: Path) -> None:
    """A payee the rail refuses ends FAILED with the rail's own code after one execution attempt."""
    url = start_rail(processes, tmp_path, rail)
    account = "closed-account" if rail == "iso20022" else "12"
    (outbox_id,) = await add_payments(db, 1, rail=rail, account=account)
    processes.relayer(f"refused-{rail}", database_url, {rail: (rail, url)}, lease_seconds=5.0,
                      rail_toml=relayer_toml(tmp_path))
    await wait_until(lambda: _settled(db), what="the row settled")
    row = await db.fetchrow("SELECT status::text AS status, last_response_code FROM payment_outbox WHERE id = $1",
                            outbox_id)
    assert row["status"] == "FAILED"
    assert row["last_response_code"] in {"PAYEE_NOT_FOUND", "TF", "RJCT_AC04"}


async def test_wrong_credentials_never_execute(database_url: str, db: asyncpg.Connection, processes: Processes,
                                               tmp_path: Path) -> None:
    """The relayer with the wrong API key gets no token: rows wait (transient), nothing executes."""
    url = start_rail(processes, tmp_path, "mtn_momo")
    await add_payments(db, 2, rail="mtn_momo", account=ACCOUNT["mtn_momo"], max_attempts=100)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**SECRETS, "api_key": "wrong"}))
    wrong.chmod(0o600)
    processes.relayer("wrong-key", database_url, {"mtn_momo": ("mtn_momo", url)}, lease_seconds=5.0,
                      rail_toml=f'credentials_file = "{wrong}"')

    async def refused() -> bool:
        return await db.fetchval("SELECT count(*) FROM outbox_events WHERE response_code = 'RAIL_AUTH_FAILED'") >= 2

    await wait_until(refused, what="two refused attempts")
    stats = await _get_json(f"{url}/_sim/stats")
    assert stats["executions_total"] == 0
    log = "".join(p.read_text(errors="replace") for p in tmp_path.glob("wrong-key*.log"))
    assert "wrong" not in log.replace("wrong-key", "") and SECRETS["subscription_key"] not in log
