"""C2SP signed notes, checkpoints and cosignatures, against the specifications' own examples.

Goal: what symphony.tlog writes is byte-for-byte what the published
implementations write, and what it accepts is only what they accept. Method:
the signed-note spec's example vkey and note, golang.org/x/mod/sumdb/note's
signing vector (a fixed Ed25519 seed signs to a fixed line), then round trips
and hostile notes; checkpoints and cosignatures signed here and checked by an
independent verification written in this file from the spec's text alone.
"""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from symphony.tlog import checkpoint, note

SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = ("This is an example message.\n\n"
             "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")
# golang.org/x/mod/sumdb/note, note_test.go TestSign: skey, vkey, text and the exact signed note.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIGNED = GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"


def _go_signer() -> note.Signer:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    return note.Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))


def test_spec_example_verifies() -> None:
    verifier = note.Verifier.parse(SPEC_VKEY)
    assert verifier.vkey() == SPEC_VKEY
    text, signed = note.open_note(SPEC_NOTE.encode(), [verifier])
    assert text == "This is an example message.\n" and signed == [verifier]


def test_go_signing_vector_byte_for_byte() -> None:
    signer = _go_signer()
    assert signer.verifier.vkey() == GO_VKEY
    assert note.sign(GO_TEXT, signer) == GO_SIGNED
    assert note.open_note(GO_SIGNED.encode(), [note.Verifier.parse(GO_VKEY)])[0] == GO_TEXT


@pytest.mark.parametrize("hostile", [
    GO_SIGNED.replace("problem is.", "problem is!"),           # text changed: known key fails
    GO_SIGNED[:-1],                                              # no final newline
    GO_SIGNED.replace("\n\n", "\n"),                             # no blank line
    GO_TEXT + "\n",                                              # no signatures
    GO_SIGNED.replace("x08go", "x08g!"),                         # not base64
    GO_SIGNED.replace("answer", "ans\x07wer"),                  # control character
    GO_SIGNED.replace("\u2014 PeterNeumann", "\u2014 Enoch"),    # only an unknown key
])
def test_hostile_notes_refused(hostile: str) -> None:
    with pytest.raises(note.NoteError):
        note.open_note(hostile.encode(), [note.Verifier.parse(GO_VKEY)])


def test_unknown_signatures_are_ignored_and_bad_vkeys_refused() -> None:
    other = note.Signer("EnochRoot", Ed25519PrivateKey.generate())
    both = note.sign(GO_TEXT, _go_signer(), other)
    assert note.open_note(both.encode(), [note.Verifier.parse(GO_VKEY)])[1][0].name == "PeterNeumann"
    for bad in ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",   # wrong id
                "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",   # unknown type
                "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"):  # space in name
        with pytest.raises(note.NoteError):
            note.Verifier.parse(bad)


def _independent_cosignature_check(signed: str, name: str, public: bytes) -> int:
    """tlog-cosignature verified from the spec alone: key id with type 0x04,
    blob = id || u64 BE time || Ed25519 over 'cosignature/v1\\ntime T\\n' + text."""
    text = signed[: signed.rindex("\n\n") + 1]
    line = next(l for l in signed.splitlines() if l.startswith("\u2014 " + name + " "))
    blob = base64.b64decode(line.split(" ")[2])
    assert blob[:4] == hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    (when,) = struct.unpack(">Q", blob[4:12])
    Ed25519PublicKey.from_public_bytes(public).verify(blob[12:], f"cosignature/v1\ntime {when}\n{text}".encode())
    return int(when)


def test_checkpoint_sign_cosign_verify() -> None:
    origin = "symphony.example/dep/node-a/0/0123abcd"
    log = note.Signer(origin, Ed25519PrivateKey.generate())
    witness = checkpoint.Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    cp = checkpoint.Checkpoint(origin, 20852163, base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="))
    assert cp.text() == f"{origin}\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    signed = checkpoint.sign(cp, log) + witness.cosign(cp.text(), 1679315147)
    opened, signatures = checkpoint.open_checkpoint(signed.encode(), log.verifier)
    assert opened == cp
    assert checkpoint.verify_cosignatures(cp.text(), signatures, [witness.verifier]) == {"witness.example/w1": 1679315147}
    assert _independent_cosignature_check(signed, witness.name, note.raw_public_key(witness.private_key.public_key())) \
        == 1679315147
    forged = signed.replace("20852163", "20852164")
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.open_checkpoint(forged.encode(), log.verifier)


@pytest.mark.parametrize("text", ["o\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",   # leading zero
                                  "o\n1\nCsUY\n",                                        # short root
                                  "o\n1\n",                                              # two lines
                                  "o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
                                  "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"])  # empty extension
def test_malformed_checkpoints_refused(text: str) -> None:
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.Checkpoint.parse(text)


def test_tlog_proof_file_round_trip_and_spec_shape() -> None:
    """The spec's example layout: header, extra, index, hashes, blank line, checkpoint."""
    from symphony.tlog.proof import ProofFile, ProofFormatError

    signed = GO_SIGNED.encode()
    proof = ProofFile(73894, [bytes(range(32)), bytes(32)], signed, extra=b"record bytes")
    text = proof.text()
    assert text.startswith(b"c2sp.org/tlog-proof@v1\nextra cmVjb3JkIGJ5dGVz\nindex 73894\n")
    assert ProofFile.parse(text) == proof
    assert ProofFile.parse(ProofFile(0, [], signed).text()).extra is None
    for bad in (text.replace(b"index 73894", b"index 073894"), text.replace(b"@v1", b"@v2"),
                text.replace(b"\n\n", b"\n", 1), text.replace(b"AAECAwQF", b"AAECAwQ!")):
        with pytest.raises(ProofFormatError):
            ProofFile.parse(bad)
