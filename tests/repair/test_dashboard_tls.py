"""The dashboard admits a supervisor by client certificate, over real TLS.

Method: a throwaway PKI (a supervisors' CA, a server certificate for
127.0.0.1, client certificates from that CA and from another one), a real
`symphony dashboard` process with TLS, the client CA and a URI prefix but no
bearer token, and real HTTPS requests from 127.0.0.1. Only a certificate that
the CA signed and whose URI SAN has the configured prefix gets the page.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from tests.pki import Authority
from tests.repair.dashboard_helpers import start_dashboard

SUPERVISORS = "spiffe://symphony.test/supervisor/"


async def _status(port: int, server_ca: Path, client: tuple[Path, Path] | None) -> int | str:
    """The HTTP status of GET /, or the TLS failure's name when the handshake is refused."""
    context = ssl.create_default_context(cafile=str(server_ca))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.get(f"https://127.0.0.1:{port}/", ssl=context) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError) as exc:
        return type(exc).__name__


@pytest.mark.slow
async def test_a_supervisor_certificate_opens_the_dashboard_and_nothing_else_does(
        database_url: str, tmp_path: Path) -> None:
    supervisors = Authority("supervisors-ca", tmp_path)
    rogue = Authority("rogue-ca", tmp_path)
    server = supervisors.issue("server", x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    alice = supervisors.issue("alice", x509.UniformResourceIdentifier(SUPERVISORS + "alice"))
    participant = supervisors.issue("bank-a", x509.UniformResourceIdentifier(
        "spiffe://symphony.test/participant/bank-a"))
    impostor = rogue.issue("mallory", x509.UniformResourceIdentifier(SUPERVISORS + "mallory"))
    env = {"SYMPHONY_REPAIR_DASHBOARD_TLS_CERT": str(server[0]), "SYMPHONY_REPAIR_DASHBOARD_TLS_KEY": str(server[1]),
           "SYMPHONY_REPAIR_DASHBOARD_CLIENT_CA": str(supervisors.ca_file),
           "SYMPHONY_REPAIR_DASHBOARD_CLIENT_URI_PREFIXES": f'["{SUPERVISORS}"]',
           "SYMPHONY_REPAIR_DASHBOARD_TOKEN_FILE": ""}
    process, port = await start_dashboard(database_url, tmp_path, token=None, env=env)
    try:
        assert await _status(port, supervisors.ca_file, alice) == 200
        assert await _status(port, supervisors.ca_file, None) == 401
        assert await _status(port, supervisors.ca_file, participant) == 401  # right CA, not a supervisor
        assert await _status(port, supervisors.ca_file, impostor) != 200  # refused in the handshake or with 401
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0, process.stderr.read().decode()  # type: ignore[union-attr]
