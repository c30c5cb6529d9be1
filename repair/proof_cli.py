"""`symphony proof`: prove from PostgreSQL that a record is in its stream's log.

    symphony proof inclusion (--attestation-id ID [--node N] | --node N --stream S [--epoch HEX] --seq Q)
                             --out FILE [--unwitnessed] [--wait-seconds N]
    symphony proof consistency --node N --stream S [--epoch HEX] --old-size M --new-size N [--out FILE]

`inclusion` writes a c2sp.org/tlog-proof@v1 file: the record's canonical bytes
(`extra`), its leaf index (seq − 1), the inclusion path and the newest
checkpoint covering it, with the witnesses' cosignature lines; an outsider
checks it with `symphony verify proof FILE --policy POLICY` and nothing else.
`consistency` prints the RFC 9162 consistency proof (base64, one hash a line)
between two tree sizes, followed by the two checkpoints when they were kept.
`--wait-seconds N` waits up to N seconds for the record to be shipped and a
witnessed checkpoint to cover it (a payment sent a moment ago: about one
checkpoint interval), asking again every 0.2 s.
Exit codes: 0 written, 1 nothing to prove (no such record, no witnessed
checkpoint covers it yet, or not within --wait-seconds), 2 usage, 4 database failure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from pathlib import Path

import asyncpg

from repair import common, proofs
from symphony.errors import EXIT_OK, SymphonyError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_common(parser)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    inc = sub.add_parser("inclusion", help="write a c2sp.org/tlog-proof@v1 file for one record")
    inc.add_argument("--attestation-id", type=int, metavar="ID", help="the record of this attestation (its INGRESS)")
    inc.add_argument("--node", metavar="NODE_ID")
    inc.add_argument("--stream", type=int, metavar="STREAM_ID")
    inc.add_argument("--epoch", metavar="HEX", help="the stream epoch (32 hex digits; default: the current one)")
    inc.add_argument("--seq", type=int, metavar="SEQ")
    inc.add_argument("--out", required=True, metavar="FILE", help="where to write the proof")
    inc.add_argument("--unwitnessed", action="store_true",
                     help="use the newest checkpoint even if no witness cosigned it yet")
    inc.add_argument("--wait-seconds", type=float, default=0.0, metavar="N",
                     help="wait up to N seconds (0..3600) for a (witnessed) checkpoint to cover the record "
                          "(default 0: answer at once)")
    con = sub.add_parser("consistency", help="print the consistency proof between two tree sizes")
    con.add_argument("--node", required=True, metavar="NODE_ID")
    con.add_argument("--stream", required=True, type=int, metavar="STREAM_ID")
    con.add_argument("--epoch", metavar="HEX")
    con.add_argument("--old-size", required=True, type=int)
    con.add_argument("--new-size", required=True, type=int)
    con.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    for child in (inc, con):
        common.add_common(child, suppress=True)


def _epoch(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        return proofs.epoch_from_hex(value)
    except ValueError:
        raise SymphonyError(f"--epoch {value!r} is not 32 hex digits", exit_code=2) from None


def _write(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise SymphonyError(f"cannot write {path}: {exc.strerror or exc}", exit_code=2) from None


async def _inclusion(conn: asyncpg.Connection, args: argparse.Namespace, epoch: bytes | None) -> proofs.Inclusion:
    """proofs.inclusion, asked again every 0.2 s while nothing covers the record, up to --wait-seconds."""
    deadline = time.monotonic() + args.wait_seconds
    while True:
        try:
            return await proofs.inclusion(conn, attestation_id=args.attestation_id, node_id=args.node,
                                          stream_id=args.stream, epoch=epoch, seq=args.seq,
                                          unwitnessed=args.unwitnessed)
        except proofs.NotFound:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def run(args: argparse.Namespace) -> int:
    if args.action == "inclusion" and not 0 <= args.wait_seconds <= 3600:
        raise SymphonyError("--wait-seconds must be in 0..3600", exit_code=2)
    _, url = common.settings_and_dsn(args)
    epoch = _epoch(args.epoch)
    if args.action == "inclusion":
        by_id = args.attestation_id is not None
        if by_id == (args.seq is not None) or (not by_id and (args.node is None or args.stream is None)):
            raise SymphonyError("give --attestation-id ID, or --node, --stream and --seq", exit_code=2)
        found = common.with_connection(url, lambda conn: _inclusion(conn, args, epoch))
        _write(args.out, found.file.text())
        print(json.dumps({"written": args.out, **found.summary()}, sort_keys=True))
        return EXIT_OK
    result = common.with_connection(url, lambda conn: proofs.consistency(
        conn, args.node, args.stream, epoch, args.old_size, args.new_size))
    lines = [f"old {result.old_size}", f"new {result.new_size}"]
    lines += [base64.b64encode(h).decode() for h in result.path]
    text = "\n".join(lines) + "\n"
    for label, signed in (("old", result.old_checkpoint), ("new", result.new_checkpoint)):
        if signed is not None:
            text += f"\n{label} checkpoint:\n{signed}"
    if args.out:
        _write(args.out, text.encode())
    else:
        sys.stdout.write(text)
    return EXIT_OK
