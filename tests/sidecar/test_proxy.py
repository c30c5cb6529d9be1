"""Attest before forward: every request leaves INGRESS then OUTCOME, durable
before the upstream sees it; the upstream gets signed Symphony headers and
never a spoofed one (invariants 1, 3, 8, 9)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import journal
from ingress_sidecar import hlc, trace
from journal._format import HEADER_SIZE
from symphony import attestation as att
from symphony import upstream_headers as uh
from symphony.attestation import RecordType
from tests.sidecar.conftest import Keys, Sidecar, Upstream, read_stream, wait_until


@pytest.fixture(scope="module")
def sidecar(sidecar_factory: Any, module_database_url: str, upstream: Upstream) -> Sidecar:
    return sidecar_factory(module_database_url, upstream.url)


async def test_every_request_is_attested_and_signed(sidecar: Sidecar, upstream: Upstream, keys: Keys,
                                                   http: aiohttp.ClientSession) -> None:
    """Goal: one INGRESS before forwarding and one OUTCOME after, per request, with
    gapless seqs and a valid chain; the upstream sees verified, unspoofed headers.
    Method: send payments with spoofed X-Symphony-* headers and a caller traceparent,
    then read the journal stream back and verify the upstream's headers."""
    await wait_until(lambda: sidecar.readyz_status() == 200)
    token = keys.token("bank-a")
    caller_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    spoofed = {uh.PARTICIPANT: "mfi-b", uh.ATTESTATION_ID: "1", uh.SIGNATURE: "v1;kid=x;ts=1;sig=AA",
               "x-symphony-evil": "1"}
    answers = []
    upstream.received.clear()
    for index in range(5):
        body = f'{{"amount": {index + 1}}}'.encode()
        async with http.post(f"{sidecar.url}/v1/payments", data=body, headers={
            "Authorization": f"Bearer {token}", "Idempotency-Key": f"k-{index}", "traceparent": caller_trace,
            "Content-Type": "application/json", **spoofed,
        }) as response:
            assert response.status == 201, await response.text()
            answers.append(int(response.headers[uh.ATTESTATION_ID]))
    async with http.get(f"{sidecar.url}/v1/payments/42", headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200
        answers.append(int(response.headers[uh.ATTESTATION_ID]))
    assert answers == sorted(answers) and len(set(answers)) == len(answers)

    verifier = uh.HeaderVerifier([uh.load_public_key(keys.signing_public)])
    assert len(upstream.received) == 6
    for seen in upstream.received:
        attested = verifier.verify(seen["headers"], seen["method"], seen["path"], seen["body"])
        assert attested.participant_id == "bank-a"
        # Header names compare case-insensitively: the caller sent these in lower case.
        names = {name.lower() for name, _ in seen["header_list"]}
        assert "x-symphony-evil" not in names and "authorization" not in names
        # Each X-Symphony-* header the sidecar sets arrives once: the spoofed copies were stripped.
        symphony = [name.lower() for name, _ in seen["header_list"] if name.lower().startswith(uh.PREFIX)]
        assert sorted(symphony) == sorted(set(symphony)), symphony
    assert trace.parse(upstream.received[0]["headers"]["traceparent"])[0] == "0af7651916cd43dd8448eb211c80319c"

    records = await wait_until(lambda: _records_with(sidecar, answers))
    assert [r.seq for r, _ in records] == list(range(1, len(records) + 1)), "stream seqs are gapless from 1"
    assert records[0][0].type == RecordType.GENESIS
    for previous, current in zip(records, records[1:]):
        assert current[0].prev_hash == previous[0].chain_hash
        assert current[0].chain_hash == hashlib.sha256(current[0].prev_hash + current[0].canonical).digest()
    for index, attestation_id in enumerate(answers):
        ingress = [(r, b) for r, b in records if r.attestation_id == attestation_id and r.type == RecordType.INGRESS]
        outcome = [(r, b) for r, b in records if r.attestation_id == attestation_id and r.type == RecordType.OUTCOME]
        assert len(ingress) == 1 and len(outcome) == 1
        (ingress_record, ingress_body), (outcome_record, outcome_body) = ingress[0], outcome[0]
        assert ingress_record.seq < outcome_record.seq and outcome_body.ingress_seq == ingress_record.seq
        assert ingress_body.participant_id == "bank-a" and ingress_body.verdict == "accepted"
        assert outcome_body.disposition == "executed" and outcome_body.status in (200, 201)
        seen = upstream.received[index]
        assert seen["headers"][uh.STREAM] == f"{sidecar.node_id}/0/{ingress_record.seq}"
        assert ingress_body.body_sha256 == hashlib.sha256(seen["body"]).digest()
        assert seen["body"] not in ingress_record.body or not seen["body"], "no payload in attestations"
    assert records[len(records) - 1][1] is not None
    assert hlc.decompose(answers[0])[1] == hlc.decompose(answers[-1])[1], "one worker id per stream"


def _records_with(sidecar: Sidecar, ids: list[int]) -> list[Any] | None:
    records = read_stream(sidecar.stream_dir(0))
    outcomes = {r.attestation_id for r, _ in records if r.type == RecordType.OUTCOME}
    return records if all(i in outcomes for i in ids) else None


async def test_unknown_route_and_bad_scheme_are_attested(sidecar: Sidecar, keys: Keys,
                                                         http: aiohttp.ClientSession) -> None:
    """Goal: a request nobody routes is still on the record. Method: unknown path → 404 attested."""
    async with http.get(f"{sidecar.url}/nowhere", headers={"Authorization": f"Bearer {keys.token()}"}) as response:
        assert response.status == 404
        attestation_id = int(response.headers[uh.ATTESTATION_ID])
    records = await wait_until(lambda: _records_with(sidecar, [attestation_id]))
    bodies = [b for r, b in records if r.attestation_id == attestation_id]
    assert isinstance(bodies[0], att.IngressBody) and bodies[0].verdict == "no_route"
    assert isinstance(bodies[1], att.OutcomeBody) and bodies[1].disposition == "rejected"


def _ingress_end_and_synced(stream_dir: Path, seq: int) -> tuple[int, int]:
    """(offset just past record `seq`, the segment's synced_end) as they are now.

    synced_end is stored only after the msync that made everything below it
    durable (FORMAT.md F12), and it is read first: it only grows."""
    header = max((h for h in journal.Reader(stream_dir).segments() if h.first_seq <= seq),
                 key=lambda h: h.first_seq)
    end = HEADER_SIZE
    for record in journal.Reader(stream_dir).records(from_seq=header.first_seq):
        end += journal.record_size(len(record.body))
        if record.seq == seq:
            return end, header.synced_end
    raise AssertionError(f"record {seq} is not in {stream_dir}")


async def test_the_ingress_is_durable_before_the_upstream_sees_the_request(
        sidecar: Sidecar, upstream: Upstream, keys: Keys, http: aiohttp.ClientSession) -> None:
    """Invariant 1 at level batch (the default): at the moment a request reaches
    the upstream, its INGRESS record lies below the segment's synced_end. A
    sidecar that forwarded before its group commit (or on an append alone,
    the INGRESS being appended lazily) fails this."""
    await wait_until(lambda: sidecar.readyz_status() == 200)
    seen: list[tuple[int, int]] = []

    def at_arrival(request: dict[str, Any]) -> None:
        _, stream_id, seq = request["headers"][uh.STREAM].split("/")
        seen.append(_ingress_end_and_synced(sidecar.stream_dir(int(stream_id)), int(seq)))

    upstream.on_receive = at_arrival
    try:
        token = keys.token("bank-a")
        for index in range(20):
            async with http.post(f"{sidecar.url}/v1/payments", data=b'{"amount": 1}', headers={
                    "Authorization": f"Bearer {token}", "Idempotency-Key": f"durable-{index}",
                    "Content-Type": "application/json"}) as response:
                assert response.status == 201, await response.text()
    finally:
        upstream.on_receive = None
    assert len(seen) == 20
    assert all(end <= synced_end for end, synced_end in seen), seen
