"""Builds records.json: one record of each type (journal/FORMAT.md, "Record
bodies"), as a five-record stream: GENESIS, INGRESS, OUTCOME, HEARTBEAT, DROPPED.

For each: the fields in wire order with their MessagePack types and values, the
body, the canonical bytes, the chain hash and the full on-disk record (CRC32C,
chain hash, canonical bytes, zero padding), in hex. Built with the project's
own encoders (symphony.attestation, journal.genesis_body); the tests decode the
bodies with a generic MessagePack decoder and check the records with the
outsider's verifier, neither of which knows the project's structs.

    python tests/vectors/journal/make_vectors.py > tests/vectors/journal/records.json
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

from journal._format import genesis_body
from journal._journal import lib  # the journal's CRC32C (FORMAT.md conventions)
from symphony import attestation as att

EPOCH = bytes(range(16))
NODE, STREAM = "node-a", 0
AID = 0x0019_945C_A262_0001  # an attestation id (Snowflake layout), shared by INGRESS and OUTCOME
T0_US = 1_700_000_000_000_000

FIELDS: dict[str, list[tuple[str, str, Any]]] = {
    "INGRESS": [
        ("version", "uint", 1), ("received_at_us", "uint", T0_US), ("participant_id", "str", "bank-a"),
        ("auth_method", "str", "jwt"), ("key_id", "str", "kid-1"), ("policy_version", "uint", 3),
        ("method", "str", "POST"), ("route", "str", "/v1/payments"), ("executes", "bool", True),
        ("body_sha256", "bin (32 bytes)", hashlib.sha256(b'{"amount":"10.00"}').digest()),
        ("idempotency_key_hash", "bin (32 bytes, or 0 bytes when the header was absent)",
         hashlib.sha256(b"key-1").digest()),
        ("traceparent", "str", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("verdict", "str", "accepted"),
    ],
    "OUTCOME": [
        ("version", "uint", 1), ("ingress_seq", "uint", 2), ("completed_at_us", "uint", T0_US + 2500),
        ("status", "uint", 201), ("disposition", "str", "executed"), ("latency_us", "uint", 2400),
        ("reason", "str", ""),
    ],
    "HEARTBEAT": [("version", "uint", 1), ("at_us", "uint", T0_US + 1_000_000)],
    "DROPPED": [
        ("version", "uint", 1), ("window_start_us", "uint", T0_US), ("window_end_us", "uint", T0_US + 1_000_000),
        ("counts", "map str -> uint", {"clock_backwards": 1, "rate_limited": 7}),
    ],
}
STRUCTS = {"INGRESS": att.IngressBody, "OUTCOME": att.OutcomeBody, "HEARTBEAT": att.HeartbeatBody,
           "DROPPED": att.DroppedBody}
TYPES = {"GENESIS": 1, "INGRESS": 2, "OUTCOME": 3, "HEARTBEAT": 4, "DROPPED": 5}


def _show(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


def build() -> dict[str, Any]:
    records = []
    prev = bytes(32)
    for seq, name in enumerate(["GENESIS", "INGRESS", "OUTCOME", "HEARTBEAT", "DROPPED"], start=1):
        if name == "GENESIS":
            body = genesis_body(EPOCH, STREAM, NODE)
            fields = [{"name": "epoch", "type": "16 bytes", "value": EPOCH.hex()},
                      {"name": "stream_id", "type": "u16", "value": STREAM},
                      {"name": "node_id_len", "type": "u8", "value": len(NODE)},
                      {"name": "node_id", "type": "ASCII", "value": NODE}]
            aid = 0
        else:
            body = att.encode(STRUCTS[name](*[value for _, _, value in FIELDS[name]]))
            fields = [{"name": n, "type": t, "value": _show(v)} for n, t, v in FIELDS[name]]
            aid = AID if name in ("INGRESS", "OUTCOME") else 0
        canonical = struct.pack("<IQQHHI", len(body), seq, aid, TYPES[name], 0, 0) + body
        chain = hashlib.sha256(prev + canonical).digest()
        size = (64 + len(body) + 7) & ~7
        tail = chain + canonical + bytes(size - 64 - len(body))
        crc = lib.jn_crc32c(tail, len(tail))
        records.append({"type": name, "type_value": TYPES[name], "seq": seq, "attestation_id": aid,
                        "fields": fields, "body_hex": body.hex(), "canonical_hex": canonical.hex(),
                        "prev_hash_hex": prev.hex(), "chain_hash_hex": chain.hex(),
                        "record_hex": (struct.pack("<I", crc) + tail).hex()})
        prev = chain
    return {"what": "one record of each type as a five-record stream (journal/FORMAT.md, Record bodies)",
            "node_id": NODE, "stream_id": STREAM, "epoch_hex": EPOCH.hex(), "records": records}


if __name__ == "__main__":
    print(json.dumps(build(), indent=2))
