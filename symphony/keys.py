"""Ed25519 keys in PEM files: one way to create and to read them.

Private keys are PKCS#8 PEM without a passphrase, written with mode 0600 (the
file is created with it: the key is never readable by others, not even for a
moment); public keys are SubjectPublicKeyInfo PEM. Readers raise ValueError
with what is wrong; each caller turns it into its own operator error.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def write_new_private_key(path: Path, *, overwrite: bool = False) -> Ed25519PrivateKey:
    """A new key, written to `path` (mode 0600); an existing file is an error
    (FileExistsError) unless `overwrite`."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_key_from_pem(data: bytes) -> Ed25519PrivateKey:
    """The Ed25519 private key in `data` (unencrypted PEM); ValueError otherwise."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a PEM private key without a passphrase: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def public_key_from_pem(data: bytes) -> Ed25519PublicKey:
    """The Ed25519 public key in `data` (PEM); ValueError otherwise."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key
