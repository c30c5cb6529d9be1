"""A throwaway PKI for TLS tests: a CA that signs short-lived certificates into PEM files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class Authority:
    """A CA (EC P-256, one hour) whose certificates land as PEM files in `directory`."""

    def __init__(self, name: str, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (self._builder(self.name, self.key.public_key())
                            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                            .sign(self.key, hashes.SHA256()))
        self.ca_file = directory / f"{name}.pem"
        self.ca_file.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey,
                 lifetime: dt.timedelta = dt.timedelta(hours=1)) -> x509.CertificateBuilder:
        start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(start)
                .not_valid_after(start + lifetime))

    def issue(self, filename: str, san: x509.GeneralName, *,
              lifetime: dt.timedelta = dt.timedelta(hours=1)) -> tuple[Path, Path]:
        """A leaf certificate valid from a minute ago for `lifetime` (notAfter - notBefore)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, filename)])
        certificate = (self._builder(subject, key.public_key(), lifetime)
                       .add_extension(x509.SubjectAlternativeName([san]), critical=False)
                       .sign(self.key, hashes.SHA256()))
        cert_file, key_file = self.directory / f"{filename}.crt", self.directory / f"{filename}.key"
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_file, key_file
