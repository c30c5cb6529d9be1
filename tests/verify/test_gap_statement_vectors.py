"""The gap-statement format of docs/verifying.md: reproducible vectors, an outsider's
check from the documentation alone, a strict parser, and `symphony verify gap-statement`.

Goal: the shipped example is what the code produces; a verifier written from
the documentation (hashlib, base64, `cryptography`; nothing of Symphony)
accepts it and agrees with `symphony verify gap-statement` on altered copies;
the parser refuses every body that is not in the one canonical form.
Method: rebuild the vectors in memory; alter the example line by line; run
the CLI as a process.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from symphony import gap_statement
from symphony.tlog import note
from tests.conftest import symphony_cli

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "gap-statement"
SYMPHONY_VECTORS = VECTORS.parent / "symphony"


def _make_vectors() -> dict[str, object]:
    spec = importlib.util.spec_from_file_location("gap_statement_make_vectors", VECTORS / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built: dict[str, object] = module.build()
    return built


def outsider_verify(signed: bytes, vkey: str) -> dict[str, object]:
    """docs/verifying.md "Gap statements", step by step, with no Symphony code:
    returns the tuple per participant; raises on anything that does not hold."""
    name, key_id_hex, material_b64 = vkey.strip().split("+", 2)
    material = base64.b64decode(material_b64)
    assert material[0] == 0x01 and len(material) == 33, "an Ed25519 note key"
    key_id = hashlib.sha256(name.encode() + b"\n" + material).digest()[:4]
    assert key_id.hex() == key_id_hex, "the vkey's key id"
    text = signed.decode("utf-8")
    body, _, signatures = text.rpartition("\n\n")
    body += "\n"
    good = False
    for line in signatures.split("\n")[:-1]:
        assert line.startswith("\u2014 ")
        line_name, blob_b64 = line[2:].split(" ")
        blob = base64.b64decode(blob_b64)
        if line_name == name and blob[:4] == key_id:
            Ed25519PublicKey.from_public_bytes(material[1:]).verify(blob[4:], body.encode())  # raises if forged
            good = True
    assert good, "no signature by the trusted key"
    lines = body.split("\n")[:-1]
    assert lines[0] == "symphony.example/gap-statement/v1"
    participants = {}
    total = None
    for line in lines[3:]:
        words = line.split(" ")
        if words[0] == "participant":
            counts = [int(w) for w in words[2:]]
            assert counts[3] == counts[0] - counts[1] - counts[2]
            participants[words[1]] = counts
        elif words[0] == "total":
            total = [int(w) for w in words[1:]]
    assert total == [sum(c[i] for c in participants.values()) for i in range(5)]
    return {"window": lines[1].split(" ")[1:], "participants": participants}


def test_vectors_are_reproducible_and_verify_independently() -> None:
    v = json.loads((VECTORS / "vectors.json").read_text())
    assert v == json.loads(json.dumps(_make_vectors()))
    signed = (VECTORS / "example.gap-statement").read_bytes()
    assert signed.decode() == v["signed_note"]
    assert (VECTORS / "example.vkey").read_text().strip() == v["vkey"]
    assert bytes.fromhex(v["body_hex"]).decode() == v["body"]
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["private_seed_hex"]))
    assert key.sign(v["body"].encode()).hex() == v["signature_hex"]  # over the body, final newline included
    result = outsider_verify(signed, v["vkey"])
    assert result == {"window": ["2026-12-05T11:00:00Z", "2026-12-05T12:00:00Z"],
                      "participants": {"bank%20b": [1, 0, 1, 0, 0], "bank-a": [3, 2, 0, 1, 0]}}
    statement, body = gap_statement.open_statement(signed, note.Verifier.parse(v["vkey"]))
    assert body == v["body"] and statement.participants["bank b"] == gap_statement.Counts(1, 0, 1, 0, 0)


def _variants() -> dict[str, bytes]:
    text = (VECTORS / "example.gap-statement").read_text()
    return {
        "as shipped": text.encode(),
        "a count changed": text.replace("bank-a 3 2 0 1 0", "bank-a 3 3 0 0 0").encode(),
        "the ghost removed": text.replace("ghost bank-a node-a 0 2 7200000000000001\n", "").encode(),
        "the window moved": text.replace("T11:00:00Z", "T10:00:00Z").encode(),
        "the signature dropped": text[:text.index("\n\n") + 2].encode() + b"\xe2\x80\x94 x AAAAAAAA\n",
        "another key signed": gap_statement.sign(
            gap_statement.parse(text[:text.index("\n\n") + 1]),
            note.Signer("symphony.example/vectors/gap-statements", Ed25519PrivateKey.generate())).encode(),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_outsider_and_symphony_verify_agree(name: str, tmp_path: Path) -> None:
    vkey = (VECTORS / "example.vkey").read_text().strip()
    data = _variants()[name]
    path = tmp_path / "statement"
    path.write_bytes(data)
    try:
        outsider_verify(data, vkey)
        outsider_says = True
    except (AssertionError, InvalidSignature, ValueError):
        outsider_says = False
    result = symphony_cli("verify", "gap-statement", str(path), "--key", vkey)
    assert result.returncode in (0, 1), result.stderr
    assert outsider_says == (result.returncode == 0) == (name == "as shipped"), result.stdout + result.stderr
    if name == "as shipped":
        assert result.stdout.startswith(data.decode().split("\n\n")[0] + "\n")


def test_named_checkpoints_are_checked_against_the_policy(tmp_path: Path) -> None:
    """The example names the cosigned checkpoint of tests/vectors/symphony: given
    that note and the example policy it is witnessed; the bare (uncosigned) note
    does not meet the quorum."""
    v = json.loads((SYMPHONY_VECTORS / "vectors.json").read_text())
    cosigned, bare = tmp_path / "cosigned", tmp_path / "bare"
    cosigned.write_text(v["signed_checkpoint"] + v["cosignature_line"])
    bare.write_text(v["signed_checkpoint"])
    args = ["verify", "gap-statement", str(VECTORS / "example.gap-statement"), "--key",
            str(VECTORS / "example.vkey"), "--policy", str(SYMPHONY_VECTORS / "example.policy")]
    ok = symphony_cli(*args, "--checkpoint", str(cosigned))
    assert ok.returncode == 0 and "checkpoints_witnessed: 1" in ok.stdout, ok.stdout + ok.stderr
    not_witnessed = symphony_cli(*args, "--checkpoint", str(bare))
    assert not_witnessed.returncode == 1 and "quorum" in not_witnessed.stderr
    usage = symphony_cli("verify", "gap-statement", str(VECTORS / "example.gap-statement"))
    assert usage.returncode == 2 and "--key" in usage.stderr


BODY = VECTORS / "vectors.json"


@pytest.mark.parametrize("change, reason", [
    (("symphony.example/gap-statement/v1", "symphony.example/gap-statement/v2"), "first line"),
    (("as-of 2026-12-05T12:05:07Z", "as-of 2026-12-05T12:05:07"), "YYYY-MM-DD"),
    (("total 4 2 1 1 0", "total 5 2 1 2 0"), "not the sum"),
    (("bank-a 3 2 0 1 0", "bank-a 3 2 0 0 0"), "gap is not"),
    (("bank-a 3 2 0 1 0", "bank-a 03 2 0 1 0"), "leading zeros"),
    (("bank%20b", "bank%20B%"), "percent-encoded"),
    (("bank%20b", "bank%2Db"), "one encoded form"),
    (("participant bank%20b 1 0 1 0 0\nparticipant bank-a 3 2 0 1 0",
      "participant bank-a 3 2 0 1 0\nparticipant bank%20b 1 0 1 0 0"), "canonical form"),
    (("total 4 2 1 1 0\nghost", "ghost"), "no total line"),
])
def test_the_parser_refuses_every_other_form(change: tuple[str, str], reason: str) -> None:
    body = json.loads(BODY.read_text())["body"]
    assert change[0] in body
    altered = body.replace(change[0], change[1])
    if reason == "no total line":
        altered = altered.replace("ghost bank-a node-a 0 2 7200000000000001\n", "") + "ghost x y 0 1 2\n"
    with pytest.raises(gap_statement.StatementError, match=reason):
        gap_statement.parse(altered)
    assert gap_statement.parse(body).body() == body


def test_the_cli_tells_a_tampered_file_from_a_wrong_key(tmp_path: Path) -> None:
    """A changed byte: the signature does not verify; a key of another name: no
    trusted signature. Both exit 1 and name it on stderr."""
    signed = (VECTORS / "example.gap-statement").read_bytes()
    path = tmp_path / "s"
    path.write_bytes(signed)
    other = note.Signer("someone.else/gap", Ed25519PrivateKey.generate()).verifier.vkey()
    wrong = symphony_cli("verify", "gap-statement", str(path), "--key", other)
    assert wrong.returncode == 1 and "no signature by a trusted key" in wrong.stderr
    path.write_bytes(signed.replace(b"as-of 2026-12-05T12:05:07Z", b"as-of 2026-12-05T12:05:08Z"))
    tampered = symphony_cli("verify", "gap-statement", str(path), "--key", str(VECTORS / "example.vkey"))
    assert tampered.returncode == 1 and "does not verify" in tampered.stderr
