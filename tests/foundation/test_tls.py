"""The one TLS server context (symphony.tls) that the sidecar and the dashboard use."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509

from symphony.errors import ConfigError, StartupError
from symphony.tls import server_context
from tests.pki import Authority


def test_client_ca_makes_certificates_optional_but_verified(tmp_path: Path) -> None:
    """Goal: with a client CA, a certificate is optional at the TLS layer and checked against that CA;
    without one, none is asked for. Method: build both contexts from a throwaway PKI and read them."""
    authority = Authority("server-ca", tmp_path)
    cert, key = authority.issue("server", x509.DNSName("localhost"))
    with_ca = server_context(str(cert), str(key), str(authority.ca_file), error=StartupError, label="tls")
    assert with_ca.verify_mode == ssl.CERT_OPTIONAL
    assert len(with_ca.get_ca_certs()) == 1
    assert with_ca.minimum_version >= ssl.TLSVersion.TLSv1_2
    without = server_context(str(cert), str(key), error=StartupError, label="tls")
    assert without.verify_mode == ssl.CERT_NONE
    assert without.get_ca_certs() == []


@pytest.mark.parametrize("error", [StartupError, ConfigError])
def test_unusable_files_raise_the_callers_error_with_its_label(tmp_path: Path, error: type) -> None:
    """Goal: a missing or wrong file is one operator error of the caller's kind (exit code), led by its label.
    Method: a key that is not a key, then a missing certificate."""
    authority = Authority("server-ca", tmp_path)
    cert, _ = authority.issue("server", x509.DNSName("localhost"))
    with pytest.raises(error) as caught:
        server_context(str(cert), str(authority.ca_file), error=error, label="dashboard TLS files")
    assert caught.value.reason.startswith("dashboard TLS files: ")
    with pytest.raises(error) as caught:
        server_context(str(tmp_path / "missing.crt"), str(tmp_path / "missing.key"), error=error, label="TLS")
    assert caught.value.reason.startswith("TLS: ")
