"""The journal's record bodies and segment files, read by a stranger.

Goal: journal/FORMAT.md says enough to decode every record type and to check a
segment file's CRC32C and hash chain without the project's code, and what it
says is what the project writes. Method: the shipped vectors
(tests/vectors/journal/records.json) are rebuilt with the project's encoders
and compared; their bodies are decoded with a generic MessagePack decoder
(msgspec.msgpack.decode with no type) and matched field by field against the
documented order; the outsider's verifier (tests/independent_verifier.py: no
Symphony import, CRC32C from the `crc32c` package) checks the vector records
and real journal streams written by journal.Writer, and must agree with
journal.verify on a clean stream and on altered copies.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import struct
from pathlib import Path

import msgspec
import pytest

from journal import RecordType, Writer, verify
from journal._format import list_segments
from symphony import attestation
from tests import independent_verifier as outsider
from tests.conftest import REPO_ROOT

VECTORS = REPO_ROOT / "tests" / "vectors" / "journal"
# Loaded by path under its own name: tests/vectors/*/ each have a make_vectors.py.
_spec = importlib.util.spec_from_file_location("journal_make_vectors", VECTORS / "make_vectors.py")
assert _spec is not None and _spec.loader is not None
journal_vectors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(journal_vectors)

SEGMENT = 64 * 1024
STRUCTS = {"INGRESS": attestation.IngressBody, "OUTCOME": attestation.OutcomeBody,
           "HEARTBEAT": attestation.HeartbeatBody, "DROPPED": attestation.DroppedBody}


def _vectors() -> dict:
    return json.loads((VECTORS / "records.json").read_text())


def test_record_vectors_are_reproducible_and_documented_in_order() -> None:
    """Goal: the vectors are what the code writes and FORMAT.md lists the same
    fields in the same order. Method: rebuild; compare each type's field names
    with the struct's and with FORMAT.md's table for that type."""
    vectors = _vectors()
    assert vectors == json.loads(json.dumps(journal_vectors.build()))
    format_md = (REPO_ROOT / "journal" / "FORMAT.md").read_text()
    for record in vectors["records"]:
        names = [field["name"] for field in record["fields"]]
        if record["type"] in STRUCTS:
            assert tuple(names) == STRUCTS[record["type"]].__struct_fields__
        section = format_md[format_md.index(f"#### {record['type']} body"):]
        section = section[:section.index("\n#", 1)]
        documented = re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.M)
        assert [name for _, name in documented] == names, record["type"]
        assert [int(i) for i, _ in documented] == list(range(len(names)))
        assert record["body_hex"] in section  # the hex vector is in the docs too


def test_bodies_decode_with_a_generic_msgpack_decoder() -> None:
    """Goal: a body is a plain MessagePack array in the documented order (no
    project struct needed; two hash fields cannot be swapped unnoticed). Method:
    msgspec.msgpack.decode without a type; compare every position and type."""
    for record in _vectors()["records"]:
        body = bytes.fromhex(record["body_hex"])
        if record["type"] == "GENESIS":
            epoch, stream_id, node_len = body[:16], *struct.unpack_from("<HB", body, 16)
            assert [epoch.hex(), stream_id, node_len, body[19:19 + node_len].decode()] == [
                f["value"] for f in record["fields"]] and len(body) == 19 + node_len
            continue
        decoded = msgspec.msgpack.decode(body)
        assert isinstance(decoded, list) and len(decoded) == len(record["fields"])
        for value, field in zip(decoded, record["fields"]):
            if field["type"].startswith("bin"):
                assert isinstance(value, bytes) and value.hex() == field["value"], field["name"]
            elif field["type"] == "bool":
                assert value is field["value"], field["name"]
            else:
                assert value == field["value"] and type(value) is type(field["value"]), field["name"]
        assert decoded[0] == attestation.BODY_VERSION
    ingress = next(r for r in _vectors()["records"] if r["type"] == "INGRESS")
    decoded = msgspec.msgpack.decode(bytes.fromhex(ingress["body_hex"]))
    assert decoded[9] == hashlib.sha256(b'{"amount":"10.00"}').digest()  # body_sha256 is field 9
    assert decoded[10] == hashlib.sha256(b"key-1").digest()  # idempotency_key_hash is field 10


def test_vector_records_check_with_the_outsiders_crc_and_chain(tmp_path: Path) -> None:
    """Goal: the full on-disk records of the vector satisfy F7 as the outsider
    reads it. Method: lay them into a segment file with the documented header
    and run the outsider's stream check; then the project's verify agrees."""
    vectors = _vectors()
    header = bytearray(256)
    node = vectors["node_id"].encode()
    struct.pack_into("<8sIIQQQHB", header, 0, b"SYMJRNL\x00", 1, 256, SEGMENT, 1, 0, vectors["stream_id"], len(node))
    header[48:48 + len(node)] = node
    header[112:128] = bytes.fromhex(vectors["epoch_hex"])
    struct.pack_into("<I", header, 160, outsider.crc32c(bytes(header[:160])))
    records = b"".join(bytes.fromhex(r["record_hex"]) for r in vectors["records"])
    struct.pack_into("<QQ", header, 168, 256 + len(records), len(vectors["records"]))
    stream = tmp_path / "node-a" / "0"
    stream.mkdir(parents=True)
    (stream / "00000000000000000001.seg").write_bytes(bytes(header) + records + bytes(SEGMENT - 256 - len(records)))
    for record in vectors["records"]:
        data = bytes.fromhex(record["record_hex"])
        assert outsider.crc32c(data[4:]) == struct.unpack_from("<I", data)[0]
        assert data[36:36 + len(record["canonical_hex"]) // 2].hex() == record["canonical_hex"]
    check = outsider.check_stream(stream)
    assert check.ok and check.last_seq == 5, check
    assert check.last_hash.hex() == vectors["records"][-1]["chain_hash_hex"]
    ours = verify(stream)
    assert ours.ok and ours.last_seq == 5 and ours.last_hash == check.last_hash


def _real_stream(root: Path) -> Path:
    stream = root / "node-a" / "0"
    with Writer(stream, "node-a", 0, "batch", segment_bytes=SEGMENT) as writer:
        for i in range(700):
            body = attestation.encode(attestation.IngressBody(1, 1_700_000_000_000_000 + i, "bank-a", "jwt", "k", 1,
                                                              "POST", "/v1/payments", True, bytes(32), b"", "",
                                                              "accepted"))
            seq, _ = writer.append(RecordType.INGRESS, body, 1000 + i)
            writer.append(RecordType.OUTCOME, attestation.encode(attestation.OutcomeBody(
                1, seq, 1_700_000_000_000_500 + i, 201, "executed", 10, "")), 1000 + i)
        writer.append(RecordType.HEARTBEAT, attestation.encode(attestation.HeartbeatBody(1, 1)), 0)
        writer.append(RecordType.DROPPED, attestation.encode(attestation.DroppedBody(1, 0, 1, {"x": 2})), 0)
    assert len(list_segments(stream)) >= 3
    return stream


def _record_offset(stream: Path, seq: int) -> tuple[Path, int]:
    """(segment, offset) of record `seq`, found by walking the documented layout."""
    for first, path in reversed(list_segments(stream)):
        if first <= seq:
            data, p, s = path.read_bytes(), 256, first
            while s < seq:
                p += (64 + struct.unpack_from("<I", data, p + 36)[0] + 7) & ~7
                s += 1
            return path, p
    raise AssertionError(seq)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case", ["clean", "flip_sealed_segment", "flip_last_record", "flip_middle_of_last_segment",
                                  "garbage_after_tail", "newest_segment_deleted", "oldest_segment_released"])
def test_outsider_and_journal_verify_agree_on_a_real_stream(tmp_path: Path, case: str) -> None:
    """Goal: the outsider's reading of FORMAT.md gives the same verdict, first
    bad seq, last seq and torn-tail size as journal.verify. Method: a real
    stream of ~1400 records over several 64 KiB segments, altered per case."""
    stream = _real_stream(tmp_path / "orig")
    copy = tmp_path / "copy"
    shutil.copytree(stream, copy)
    segments = list_segments(copy)
    last_seq = verify(copy).last_seq
    if case == "flip_sealed_segment":
        path, offset = _record_offset(copy, 300)
        _flip(path, offset + 70)
    elif case == "flip_last_record":
        path, offset = _record_offset(copy, last_seq)
        _flip(path, offset + 66)
    elif case == "flip_middle_of_last_segment":
        path, offset = _record_offset(copy, segments[-1][0] + 2)
        _flip(path, offset + 66)
    elif case == "garbage_after_tail":
        path, offset = _record_offset(copy, last_seq)
        data = bytearray(path.read_bytes())
        end = offset + ((64 + struct.unpack_from("<I", data, offset + 36)[0] + 7) & ~7)
        struct.pack_into("<Q", data, 184, end)  # synced_end: only what is there is durable
        data[end + 100:end + 103] = b"\x01\x02\x03"
        path.write_bytes(bytes(data))
    elif case == "newest_segment_deleted":
        segments[-1][1].unlink()
    elif case == "oldest_segment_released":
        segments[0][1].unlink()
    ours = verify(copy)
    theirs = outsider.check_stream(copy)
    assert (theirs.ok, theirs.first_bad_seq) == (ours.ok, ours.first_bad_seq), (case, theirs, ours)
    assert theirs.torn_tail_bytes == ours.torn_tail_bytes, (case, theirs, ours)
    if ours.ok:
        assert (theirs.first_seq, theirs.last_seq, theirs.last_hash) == (ours.first_seq, ours.last_seq,
                                                                          ours.last_hash)
    expected_ok = case in ("clean", "garbage_after_tail", "oldest_segment_released", "flip_last_record")
    if case == "flip_last_record":
        expected_ok = False  # its bytes were below synced_end (durable at level batch): corruption, F10
    assert ours.ok == expected_ok, (case, ours)
    if case == "garbage_after_tail":
        assert ours.torn_tail_bytes == 103
    if case == "newest_segment_deleted":
        assert "SEALED" in (ours.reason or "") and ours.first_bad_seq == segments[-1][0]
