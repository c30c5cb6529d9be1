"""`symphony evidence`: build, sign and verify the regulator evidence bundle.

    symphony evidence bundle --out FILE [--test-results junit.xml] [--signing-key PEM]
    symphony evidence verify FILE (--public-key PEM_FILE|HEX ... | --keyring FILE)
    symphony evidence keygen --private FILE --public FILE

`bundle` writes the signed bundle, then exits 1 when the attestation gap is not
zero (or the chain is broken, a stream has a hole, or the ledger shows an
integrity violation), so CI can gate on it. `verify` exits 0 when schema, hash
and signature hold, 1 when one does not (and says which). It trusts only the
keys given on its command line, never a key the bundle carries. The signing key
defaults to `evidence_signing_key`, then to the one `symphony up` created in
`<data_dir>/keys/evidence-signing.pem`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from repair import common, evidence
from symphony.db import dsn
from symphony.errors import EXIT_FINDINGS, EXIT_OK, SymphonyError

# Where `symphony up` keeps the evidence key pair (repair/up.py creates it).
UP_SIGNING_KEY = ("keys", "evidence-signing.pem")
UP_PUBLIC_KEY = ("keys", "evidence-signing.pub.pem")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_common(parser)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    bundle = sub.add_parser("bundle", help="build and sign the bundle from the live database")
    bundle.add_argument("--out", required=True, help="where to write the bundle (JSON)")
    bundle.add_argument("--test-results", metavar="JUNIT_XML", help="pytest --junitxml output to include")
    bundle.add_argument("--signing-key", metavar="PEM", help="Ed25519 private key (default: evidence_signing_key, "
                        "then <data_dir>/keys/evidence-signing.pem as `symphony up` creates it)")
    bundle.add_argument("--repo", default=".", help="git checkout the bundle describes (default: .)")
    bundle.add_argument("--artifact", action="append", default=[], help="an artifact to list (repeatable)")
    check = sub.add_parser("verify", help="check a bundle's schema, hash and signature")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--public-key", action="append", default=[], metavar="KEY",
                       help="a trusted Ed25519 public key: a PEM file, or the raw key as 64 hex digits (repeatable)")
    check.add_argument("--keyring", metavar="FILE",
                       help="a file of trusted keys, one per line as 64 hex digits (optionally followed by a label)")
    keygen = sub.add_parser("keygen", help="create an Ed25519 signing key pair")
    keygen.add_argument("--private", required=True, metavar="FILE")
    keygen.add_argument("--public", required=True, metavar="FILE")
    for child in (bundle, check, keygen):
        common.add_common(child, suppress=True)


def run(args: argparse.Namespace) -> int:
    if args.action == "verify":
        return _verify(args)
    if args.action == "keygen":
        return _keygen(args)
    settings, url = common.settings_and_dsn(args)
    key_path = args.signing_key or settings.evidence_signing_key or _up_signing_key(args)
    if not key_path:
        raise SymphonyError("no signing key: give --signing-key, set evidence_signing_key, or run `symphony up` "
                            "(it creates <data_dir>/keys/evidence-signing.pem)", exit_code=2)
    private_key = evidence.load_private_key(key_path)
    results = evidence.read_junit(args.test_results)
    artifacts = [os.path.basename(p) for p in [args.test_results, *args.artifact] if p]
    bundle, gates = common.with_connection(url, lambda conn: evidence.build(
        conn, settings, repo=Path(args.repo), results=results, artifacts=artifacts))
    evidence.sign(bundle, private_key)
    problems = evidence.verify(bundle, private_key.public_key())
    assert not problems, problems  # a bundle we build must satisfy our own schema
    Path(args.out).write_text(json.dumps(bundle, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                              encoding="utf-8")
    failed = [f"{name} = {value}" for name, value in (("attestation gap", gates["gap"]),
                                                      ("unattested executions", gates["unattested"]),
                                                      ("chain breaks", gates["breaks"]),
                                                      ("sequence gaps", gates["seq_gaps"]),
                                                      ("ledger integrity violations",
                                                       gates["ledger_integrity_violations"])) if value]
    print(f"evidence bundle {bundle['bundle_id']} written to {args.out} "
          f"(sha256 {bundle['immutability']['bundle_hash']}, key {bundle['immutability']['signature']['key_id']})")
    if failed:
        print(f"evidence: FAIL: {', '.join(failed)}", file=sys.stderr)
        return EXIT_FINDINGS
    return EXIT_OK


def _up_signing_key(args: argparse.Namespace) -> str:
    path = dsn.data_dir_from(getattr(args, "data_dir", None)).joinpath(*UP_SIGNING_KEY)
    return str(path) if path.exists() else ""


def _verify(args: argparse.Namespace) -> int:
    trusted = [evidence.load_public_key(value) for value in args.public_key]
    if args.keyring:
        trusted += evidence.load_keyring(args.keyring)
    if not trusted:
        raise SymphonyError("verify trusts only keys you give: --public-key (PEM file or 64 hex digits) or "
                            "--keyring FILE", exit_code=2)
    try:
        bundle = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SymphonyError(f"cannot read {args.file}: {exc.strerror or exc}", exit_code=2) from None
    except json.JSONDecodeError as exc:
        print(f"{args.file}: not JSON: {exc}")
        return EXIT_FINDINGS
    problems = evidence.verify(bundle, trusted)
    if problems:
        for problem in problems[:20]:
            print(f"{args.file}: {problem}")
        return EXIT_FINDINGS
    print(f"{args.file}: OK (schema, SHA-256 {bundle['immutability']['bundle_hash'][:16]}…, "
          f"signature by {bundle['immutability']['signature']['key_id']})")
    return EXIT_OK


def _keygen(args: argparse.Namespace) -> int:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        fd = os.open(args.private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SymphonyError(f"{args.private} exists; refusing to overwrite a key", exit_code=2) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    Path(args.public).write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    print(f"key {evidence.key_id(key.public_key())}: private {args.private}, public {args.public} "
          f"(raw {evidence.raw_public_key(key.public_key()).hex()})")
    return EXIT_OK


def ensure_key_pair(private: Path, public: Path) -> tuple[str, bool]:
    """The key id of the pair at these paths, created (private 0600) when the
    private key does not exist yet; True when it was created."""
    created = False
    if not private.exists():
        private.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        try:
            fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it meanwhile: use that one
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            created = True
    key = evidence.load_private_key(str(private))
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not public.exists() or public.read_bytes() != pem:
        public.write_bytes(pem)
    return evidence.key_id(key.public_key()), created
