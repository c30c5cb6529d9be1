"""`symphony export`: write a signed export of a window of the record, for an outsider.

    symphony export --out DIR [--from T] [--to T]
    symphony export --out DIR --node N --stream S [--epoch HEX] --from-seq A --to-seq B

The export holds, for every stream epoch the selection touches, the records
(the journal's canonical bytes, as PostgreSQL holds them), the tree material
that proves the exported range complete and contiguous against the witnessed
checkpoint (the compact range before the first record, the consistency proof
after the last), that checkpoint with its cosignatures, the outbox rows and
outbox_events that reference the exported attestations, and a manifest of
every file's SHA-256, signed as a C2SP note. `symphony verify export DIR
--policy POLICY --export-key KEY` checks all of it offline and recomputes the
attestation gap. The format is in docs/verifying.md ("Exports").

Signing key: --signing-key PEM (Ed25519, PKCS#8), else the repair config's
evidence_signing_key, else <data_dir>/keys/evidence-signing.pem (the evidence
key `symphony up` creates). The note key name is --key-name (default
symphony-export); the verifier key to hand to examiners is printed as
`signer` (`<name>+<key id>+<base64 key>`).

Exit codes: 0 written, 1 the database cannot back the export (no checkpoint
covers a range yet, tiles missing), 2 usage, 4 database failure. Progress goes
to stderr only when it is a terminal; the summary (JSON) to stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import asyncpg

from repair import common, evidence
from repair.audit_cli import parse_time
from repair.evidence_cli import UP_SIGNING_KEY
from symphony import exports
from symphony.db import connect, dsn
from symphony.errors import EXIT_OK, SymphonyError
from symphony.tlog import note

# The default window end lies this far back: the sidecar cuts a checkpoint every
# second and the witness cosigns it within about as long, so the window's
# newest records are covered by then.
UNTIL_MARGIN_SECONDS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Write a signed export of a window of the record that an outsider checks offline.\n\n"
        "Time window (--from/--to): every record recorded in [--from, --to) of every stream epoch, extended to\n"
        "the OUTCOMEs of its INGRESS records and to the INGRESS of each selected outbox row, so each stream\n"
        "epoch's range a..b is contiguous. Seq range (--node, --stream, --from-seq, --to-seq): records a..b of\n"
        "one stream epoch. Per stream epoch the export holds the records (the journal's canonical bytes, never\n"
        "re-encoded), the tree's compact range before a and a consistency proof from b to the covering witnessed\n"
        "checkpoint, that checkpoint with its cosignatures; then the outbox rows and outbox_events referencing\n"
        "the exported attestations, and a manifest of every file's SHA-256 signed as a C2SP note.")
    parser.epilog = (
        "Signing key: --signing-key, else the repair config's evidence_signing_key, else\n"
        "<data_dir>/keys/evidence-signing.pem (the evidence key `symphony up` creates). The summary printed on\n"
        "stdout (JSON) names the signer's verifier key. Check an export with\n"
        "  symphony verify export DIR --policy POLICY --export-key VKEY_OR_PUBLIC_PEM\n"
        "File format, byte for byte: docs/verifying.md, \"Exports\". Progress goes to stderr when it is a\n"
        "terminal. Exit codes: 0 written, 1 the database cannot back the export (no checkpoint covers a range\n"
        "yet, tiles missing), 2 usage, 4 database or file-system failure.")
    common.add_common(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) directory to write")
    parser.add_argument("--from", dest="since", type=parse_time, metavar="T",
                        help="window start, inclusive (ISO 8601, naive = UTC, or a span back from now: 15m, 2h)")
    parser.add_argument("--to", dest="until", type=parse_time, metavar="T",
                        help=f"window end, exclusive (default: {UNTIL_MARGIN_SECONDS} s ago, so that a checkpoint "
                             "already covers the window's newest records)")
    parser.add_argument("--node", metavar="NODE_ID", help="seq range: the node")
    parser.add_argument("--stream", type=int, metavar="STREAM_ID", help="seq range: the stream")
    parser.add_argument("--epoch", metavar="HEX", help="seq range: the stream epoch (default: the current one)")
    parser.add_argument("--from-seq", type=int, metavar="A", help="seq range: first seq, inclusive")
    parser.add_argument("--to-seq", type=int, metavar="B", help="seq range: last seq, inclusive")
    parser.add_argument("--signing-key", metavar="PEM",
                        help="Ed25519 private key that signs the manifest (default: evidence_signing_key, then "
                             "<data_dir>/keys/evidence-signing.pem)")
    parser.add_argument("--key-name", default=exports.DEFAULT_KEY_NAME,
                        help=f"the signer's note key name (default {exports.DEFAULT_KEY_NAME})")


def selection_from(args: argparse.Namespace) -> exports.Selection:
    by_seq = [args.node, args.stream, args.from_seq, args.to_seq]
    if any(value is not None for value in by_seq) or args.epoch:
        if any(value is None for value in by_seq) or args.since or args.until:
            raise SymphonyError("a seq range needs --node, --stream, --from-seq and --to-seq (and no --from/--to)",
                                exit_code=2)
        if not 1 <= args.from_seq <= args.to_seq:
            raise SymphonyError("need 1 <= --from-seq <= --to-seq", exit_code=2)
        epoch = args.epoch.lower() if args.epoch else None
        if epoch is not None and (len(epoch) != 32 or any(c not in "0123456789abcdef" for c in epoch)):
            raise SymphonyError(f"--epoch {args.epoch!r} is not 32 hex digits", exit_code=2)
        return exports.Selection(node_id=args.node, stream_id=args.stream, epoch=epoch, first_seq=args.from_seq,
                                 last_seq=args.to_seq)
    until = args.until or dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=UNTIL_MARGIN_SECONDS)
    if args.since and until <= args.since:
        raise SymphonyError("--to must be after --from", exit_code=2)
    # Microseconds, as PostgreSQL keeps timestamps and the manifest writes them.
    return exports.Selection(since=args.since, until=until)


def signer_from(args: argparse.Namespace, configured: str) -> note.Signer:
    path = args.signing_key or configured
    if not path:
        default = dsn.data_dir_from(getattr(args, "data_dir", None)).joinpath(*UP_SIGNING_KEY)
        path = str(default) if default.exists() else ""
    if not path:
        raise SymphonyError("no signing key: give --signing-key, set evidence_signing_key, or run `symphony up` "
                            "(it creates <data_dir>/keys/evidence-signing.pem)", exit_code=2)
    try:
        return note.Signer(args.key_name, evidence.load_private_key(path))
    except note.NoteError as exc:
        raise SymphonyError(f"--key-name: {exc}", exit_code=2) from None


def run(args: argparse.Namespace) -> int:
    from repair import export

    selection = selection_from(args)
    settings, url = common.settings_and_dsn(args)
    signer = signer_from(args, settings.evidence_signing_key)
    async def work(conn: asyncpg.Connection) -> export.Summary:
        # Two more connections write the outbox rows and the events in the same
        # snapshot while this one writes the records.
        helpers = [await connect(url), await connect(url)]
        try:
            return await export.export(conn, selection, Path(args.out), signer, helpers=helpers)
        finally:
            for helper in helpers:
                await helper.close()

    try:
        summary = common.with_connection(url, work)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise SymphonyError(f"database: {type(exc).__name__}: {exc}", exit_code=4) from None
    except OSError as exc:
        raise SymphonyError(f"cannot write the export: {exc.strerror or exc}", exit_code=4) from None
    print(json.dumps(summary.as_dict(), indent=2))
    return EXIT_OK
