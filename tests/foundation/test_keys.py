"""symphony.keys: the one way Ed25519 key files are created and read.

Goal: a new private key file has mode 0600 and is never written over unless
asked; what is written reads back as the same key; a file that is not an
unencrypted Ed25519 PEM key is refused with ValueError saying why. Method:
real files in the test's directory, real keys of other kinds.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from symphony.keys import private_key_from_pem, public_key_from_pem, public_key_pem, write_new_private_key


def test_a_new_key_is_private_reads_back_and_is_not_overwritten(tmp_path: Path) -> None:
    """0600, the same key read back (private and public), FileExistsError unless overwrite."""
    path = tmp_path / "node.pem"
    key = write_new_private_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert private_key_from_pem(path.read_bytes()).public_key() == key.public_key()
    assert public_key_from_pem(public_key_pem(key.public_key())) == key.public_key()
    with pytest.raises(FileExistsError):
        write_new_private_key(path)
    assert private_key_from_pem(path.read_bytes()).public_key() == key.public_key()
    replaced = write_new_private_key(path, overwrite=True)
    assert private_key_from_pem(path.read_bytes()).public_key() == replaced.public_key() != key.public_key()


def test_other_files_are_refused_with_the_reason() -> None:
    """Garbage, another curve, a passphrase-protected key: ValueError, never another exception."""
    other = ec.generate_private_key(ec.SECP256R1())
    other_pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    locked = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.BestAvailableEncryption(b"secret"))
    for data, reason in ((b"not a key", "not a PEM private key"), (other_pem, "not an Ed25519 private key"),
                         (locked, "without a passphrase")):
        with pytest.raises(ValueError, match=reason):
            private_key_from_pem(data)
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        public_key_from_pem(public_key_pem(other.public_key()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a PEM public key"):
        public_key_from_pem(b"not a key")
