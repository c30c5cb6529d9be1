"""Client certificates over real TLS: the participant comes from a verified SPIFFE
URI SAN, never from a header (invariants 9 and 10).

Method: a throwaway PKI (tests/pki.py: a participants' CA, a server certificate
for 127.0.0.1, client certificates from that CA and from another one), one real
`symphony sidecar` process for the module with tls_cert_file, tls_key_file,
tls_client_ca_file, a SPIFFE trust domain and a client certificate lifetime
maximum of 2 h (below the 4 h default, so the setting itself is exercised), and
real HTTPS requests from 127.0.0.1. Each test reads back the journal records
carrying the attestation id it was answered with, and what the upstream got.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from symphony import attestation as att
from symphony import upstream_headers as uh
from symphony.attestation import RecordType
from tests.pki import Authority
from tests.sidecar.conftest import (
    WAIT_SECONDS,
    Keys,
    Sidecar,
    Upstream,
    read_stream,
    wait_until,
)


TRUST_DOMAIN = "symphony.test"
LIFETIME_MAX = dt.timedelta(hours=2)
Pair = tuple[Path, Path]


def _spiffe(participant: str, domain: str = TRUST_DOMAIN) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(f"spiffe://{domain}/participant/{participant}")


@dataclass
class Pki:
    ca: Authority
    server: Pair
    bank_a: Pair  # 1 h, right CA, right trust domain
    long_lived: Pair  # 3 h: above the configured 2 h, below the 4 h default
    foreign_domain: Pair  # right CA, SPIFFE id of another trust domain
    impostor: Pair  # another CA, otherwise a perfect bank-a certificate


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("sidecar-pki")
    ca, rogue = Authority("participants-ca", directory), Authority("rogue-ca", directory)
    return Pki(
        ca=ca,
        server=ca.issue("server", x509.IPAddress(ipaddress.ip_address("127.0.0.1"))),
        bank_a=ca.issue("bank-a", _spiffe("bank-a")),
        long_lived=ca.issue("bank-a-long", _spiffe("bank-a"), lifetime=dt.timedelta(hours=3)),
        foreign_domain=ca.issue("bank-a-elsewhere", _spiffe("bank-a", "elsewhere.test")),
        impostor=rogue.issue("bank-a-rogue", _spiffe("bank-a")),
    )


@pytest.fixture(scope="module")
def sidecar(sidecar_factory: Any, module_database_url: str, upstream: Upstream, pki: Pki) -> Sidecar:
    return sidecar_factory(module_database_url, upstream.url, extra={
        "tls_cert_file": str(pki.server[0]), "tls_key_file": str(pki.server[1]),
        "tls_client_ca_file": str(pki.ca.ca_file), "spiffe_trust_domain": TRUST_DOMAIN,
        "client_cert_lifetime_seconds_max": int(LIFETIME_MAX.total_seconds()),
    })


@dataclass
class Answer:
    status: int | str  # the HTTP status, or the exception's name when TLS refused the connection
    payload: dict[str, Any]
    attestation_id: int


async def _post(sidecar: Sidecar, pki: Pki, client: Pair | None, headers: dict[str, str] | None = None) -> Answer:
    """POST /v1/payments (an executing route) over HTTPS, presenting `client` if given."""
    context = ssl.create_default_context(cafile=str(pki.ca.ca_file))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    timeout = aiohttp.ClientTimeout(total=WAIT_SECONDS)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.post(f"https://127.0.0.1:{sidecar.port}/v1/payments", data=b'{"amount": 1}',
                             headers=headers or {}, ssl=context) as response:
            payload = await response.json(content_type=None)
            return Answer(response.status, payload, int(response.headers.get(uh.ATTESTATION_ID, "0")))
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError) as exc:
        return Answer(type(exc).__name__, {}, 0)


def _fingerprint(pair: Pair) -> str:
    der = x509.load_pem_x509_certificate(pair[0].read_bytes()).public_bytes(Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def _attested(sidecar: Sidecar, attestation_id: int) -> tuple[att.IngressBody, att.OutcomeBody] | None:
    bodies = {r.type: b for r, b in read_stream(sidecar.stream_dir(0)) if r.attestation_id == attestation_id}
    if RecordType.INGRESS in bodies and RecordType.OUTCOME in bodies:
        return bodies[RecordType.INGRESS], bodies[RecordType.OUTCOME]  # type: ignore[return-value]
    return None


def _ingress_bodies(sidecar: Sidecar) -> list[att.IngressBody]:
    return [b for r, b in read_stream(sidecar.stream_dir(0)) if r.type == RecordType.INGRESS]  # type: ignore[misc]


def _forwarded(upstream: Upstream, attestation_id: int) -> list[dict[str, Any]]:
    return [seen for seen in upstream.received if seen["headers"].get(uh.ATTESTATION_ID) == str(attestation_id)]


async def test_a_participant_certificate_is_forwarded_as_that_participant(
        sidecar: Sidecar, upstream: Upstream, keys: Keys, pki: Pki) -> None:
    """Goal: a client certificate from the CA with spiffe://<domain>/participant/bank-a
    on an executing route is forwarded as bank-a, with verifiable attestation
    headers, and the INGRESS record names bank-a and auth method mtls."""
    await wait_until(lambda: sidecar.readyz_status() == 200)
    answer = await _post(sidecar, pki, pki.bank_a, {"Idempotency-Key": "mtls-1"})
    assert answer.status == 201, answer
    assert answer.payload == {"status": "accepted"} and answer.attestation_id > 0

    ingress, outcome = await wait_until(lambda: _attested(sidecar, answer.attestation_id))
    assert (ingress.participant_id, ingress.auth_method, ingress.verdict) == ("bank-a", "mtls", "accepted")
    assert ingress.key_id == _fingerprint(pki.bank_a), "key id is the certificate's SHA-256"
    assert ingress.policy_version == 0 and ingress.executes and ingress.route == "/v1/payments"
    assert (outcome.status, outcome.disposition) == (201, "executed")

    forwarded = _forwarded(upstream, answer.attestation_id)
    assert len(forwarded) == 1
    seen = forwarded[0]
    assert seen["headers"][uh.PARTICIPANT] == "bank-a"
    assert seen["headers"][uh.STREAM].startswith(f"{sidecar.node_id}/0/")
    for name in (uh.POLICY_VERSION, uh.BODY_SHA256, uh.SIGNATURE):
        assert name in seen["headers"], name
    attested = uh.HeaderVerifier([uh.load_public_key(keys.signing_public)]).verify(
        seen["headers"], seen["method"], seen["path"], seen["body"])
    assert (attested.participant_id, attested.attestation_id) == ("bank-a", answer.attestation_id)
    assert attested.policy_version == 1, "a certificate carries no pv: the participant's current one is sent"


async def test_a_certificate_longer_than_the_max_lifetime_is_refused(
        sidecar: Sidecar, upstream: Upstream, pki: Pki) -> None:
    """Goal: a 3 h certificate against a configured 2 h maximum gets 403 with the
    reason, is attested as rejected (participant unknown) and is never forwarded."""
    await wait_until(lambda: sidecar.readyz_status() == 200)
    before = len(upstream.received)
    answer = await _post(sidecar, pki, pki.long_lived)
    assert (answer.status, answer.payload.get("error")) == (403, "certificate_lifetime_exceeds_max"), answer
    ingress, outcome = await wait_until(lambda: _attested(sidecar, answer.attestation_id))
    assert (ingress.participant_id, ingress.auth_method) == ("", "mtls")
    assert ingress.key_id == _fingerprint(pki.long_lived)
    assert ingress.verdict == "certificate_lifetime_exceeds_max"
    assert (outcome.status, outcome.disposition, outcome.reason) == (403, "rejected", "certificate_lifetime_exceeds_max")
    assert len(upstream.received) == before and not _forwarded(upstream, answer.attestation_id)


async def test_a_certificate_of_another_trust_domain_names_no_participant(
        sidecar: Sidecar, upstream: Upstream, pki: Pki) -> None:
    """Goal: the CA alone is not enough; the SPIFFE id must be in the configured trust domain."""
    before = len(upstream.received)
    answer = await _post(sidecar, pki, pki.foreign_domain)
    assert (answer.status, answer.payload.get("error")) == (401, "no_spiffe_participant"), answer
    ingress, outcome = await wait_until(lambda: _attested(sidecar, answer.attestation_id))
    assert (ingress.participant_id, ingress.auth_method) == ("", "mtls")
    assert (outcome.status, outcome.disposition) == (401, "rejected")
    assert len(upstream.received) == before


async def test_no_certificate_and_no_token_is_401(sidecar: Sidecar, upstream: Upstream, pki: Pki) -> None:
    """Goal: TLS without a client certificate and without a token is unauthenticated:
    401 missing_credentials, attested, not forwarded; a raw X-Symphony-Participant
    header does not make it a participant."""
    before = len(upstream.received)
    for headers in ({}, {uh.PARTICIPANT: "bank-a"}):
        answer = await _post(sidecar, pki, None, headers)
        assert (answer.status, answer.payload.get("error")) == (401, "missing_credentials"), (headers, answer)
        ingress, outcome = await wait_until(functools.partial(_attested, sidecar, answer.attestation_id))
        assert (ingress.participant_id, ingress.auth_method, ingress.key_id) == ("", "none", "")
        assert (outcome.status, outcome.disposition) == (401, "rejected")
    assert len(upstream.received) == before


async def test_a_certificate_from_another_ca_is_refused(sidecar: Sidecar, upstream: Upstream, pki: Pki) -> None:
    """Goal: a certificate that does not chain to tls_client_ca_file is refused in the
    handshake (or with 401) and never forwarded, however right its SPIFFE id looks."""
    before = len(upstream.received)
    answer = await _post(sidecar, pki, pki.impostor)
    assert answer.status in (401, "ClientOSError", "ClientConnectorError", "ServerDisconnectedError",
                             "ClientConnectorCertificateError", "SSLError", "ConnectionResetError"), answer
    assert len(upstream.received) == before
    impostor = _fingerprint(pki.impostor)
    assert all(body.key_id != impostor or body.participant_id == "" for body in _ingress_bodies(sidecar))
    # The sidecar is still serving certificates of its own CA afterwards.
    assert (await _post(sidecar, pki, pki.bank_a)).status == 201


async def test_a_participant_header_from_the_client_is_ignored(
        sidecar: Sidecar, upstream: Upstream, keys: Keys, pki: Pki) -> None:
    """Goal: X-Symphony-* headers sent by the client are stripped: bank-a's certificate
    with a spoofed X-Symphony-Participant: mfi-b reaches the upstream as bank-a only."""
    await wait_until(lambda: sidecar.readyz_status() == 200)
    spoofed = {uh.PARTICIPANT: "mfi-b", uh.ATTESTATION_ID: "1", uh.POLICY_VERSION: "99", "X-Symphony-Evil": "1"}
    answer = await _post(sidecar, pki, pki.bank_a, spoofed)
    assert answer.status == 201, answer
    ingress, _ = await wait_until(lambda: _attested(sidecar, answer.attestation_id))
    assert (ingress.participant_id, ingress.auth_method) == ("bank-a", "mtls")
    (seen,) = _forwarded(upstream, answer.attestation_id)
    participants = [value for name, value in seen["header_list"] if name.lower() == uh.PARTICIPANT.lower()]
    assert participants == ["bank-a"], "exactly one participant header, the sidecar's"
    assert not [name for name, _ in seen["header_list"] if name.lower() == "x-symphony-evil"]
    assert [value for name, value in seen["header_list"]
            if name.lower() == uh.ATTESTATION_ID.lower()] == [str(answer.attestation_id)]
    attested = uh.HeaderVerifier([uh.load_public_key(keys.signing_public)]).verify(
        seen["headers"], seen["method"], seen["path"], seen["body"])
    assert attested.participant_id == "bank-a" and attested.policy_version == 1
