"""`symphony journal verify|dump`: check or print a journal stream.

Exit codes follow docs/architecture.md: 0 intact, 1 findings (the first bad seq
and the reason on stdout), 2 bad input (missing path, a directory without any
segment, bad arguments; one line on stderr). A reader that stops early
(`symphony journal dump PATH | head`) ends the command quietly with 0: a
closed pipe is not an error. Until the top-level CLI registers this module it
also runs as `python -m journal.cli`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from journal._errors import JournalCorrupt, JournalError
from journal._format import Record, parse_segment_name
from journal._reader import Reader, verify

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="journal_command", metavar="{verify,dump}", required=True)
    check = commands.add_parser("verify", help="check CRC, seq continuity and the hash chain of a stream")
    check.add_argument("path", metavar="PATH", help="stream directory (<journal_dir>/<node_id>/<stream_id>)")
    check.add_argument("--anchor", metavar="SEQ:HEX",
                       help="a (seq, chain hash) held outside the writer, e.g. the forwarder's "
                            "checkpoint: a journal cut before it or rewritten is reported")
    check.add_argument("--json", action="store_true", help="print the result as one JSON object")
    dump = commands.add_parser("dump", help="print the records of a stream")
    dump.add_argument("path", metavar="PATH", help="stream directory")
    dump.add_argument("--from", dest="from_seq", type=int, default=1, metavar="SEQ",
                      help="first seq to print (default 1)")
    dump.add_argument("--json", action="store_true", help="one JSON object per line")


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_dir():
        return _usage(f"no journal stream at {path}")
    if not _has_segments(path) and not (args.journal_command == "verify" and args.anchor):
        # Nothing to check is not "intact": a wrong path (the journal root or a
        # node directory instead of <journal_dir>/<node_id>/<stream_id>) or a
        # wiped stream. With --anchor, a wiped stream is a finding (verify says so).
        return _usage(f"no journal segments (*.seg) in {path}: give a stream directory "
                      "<journal_dir>/<node_id>/<stream_id>")
    try:
        if args.journal_command == "verify":
            anchor = _parse_anchor(args.anchor) if args.anchor else None
            return _verify(path, anchor, as_json=args.json)
        if args.from_seq < 1:
            return _usage("--from must be >= 1")
        return _dump(path, args.from_seq, as_json=args.json)
    except ValueError as error:
        return _usage(str(error))
    except BrokenPipeError:
        return _reader_gone()
    except JournalCorrupt as error:
        print(f"corrupt: first bad seq {error.seq}: {error.reason}")
        return EXIT_FINDINGS
    except (JournalError, OSError) as error:
        return _usage(str(error))


def _has_segments(path: Path) -> bool:
    with os.scandir(path) as entries:
        return any(parse_segment_name(entry.name) is not None for entry in entries)


def _reader_gone() -> int:
    """stdout's reader closed the pipe (`| head`): stop quietly. Point stdout at
    /dev/null so the interpreter's final flush of what is still buffered does
    not report the same broken pipe on the way out."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_OK


def _usage(message: str) -> int:
    print(f"symphony: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _parse_anchor(text: str) -> tuple[int, bytes]:
    seq_text, _, hash_text = text.partition(":")
    try:
        seq, digest = int(seq_text), bytes.fromhex(hash_text)
    except ValueError:
        raise ValueError(f"--anchor must be SEQ:HEX, got {text!r}") from None
    if seq < 1 or len(digest) != 32:
        raise ValueError("--anchor needs a seq >= 1 and a 32-byte (64 hex digit) hash")
    return seq, digest


def _verify(path: Path, anchor: tuple[int, bytes] | None, *, as_json: bool) -> int:
    result = verify(path, anchor)
    if as_json:
        print(json.dumps({
            "ok": result.ok, "first_bad_seq": result.first_bad_seq, "reason": result.reason,
            "first_seq": result.first_seq, "last_seq": result.last_seq,
            "last_hash": result.last_hash.hex(), "records": result.records,
            "segments": result.segments, "epoch": result.epoch.hex() if result.epoch else None,
            "torn_tail_bytes": result.torn_tail_bytes,
        }))
    elif result.ok:
        torn = f", torn tail of {result.torn_tail_bytes} bytes (truncated on next open)" \
            if result.torn_tail_bytes else ""
        print(f"ok: {result.records} records, seq {result.first_seq}..{result.last_seq} in "
              f"{result.segments} segments, head {result.last_hash.hex()}{torn}")
    else:
        print(f"corrupt: first bad seq {result.first_bad_seq}: {result.reason}")
    return EXIT_OK if result.ok else EXIT_FINDINGS


def _dump(path: Path, from_seq: int, *, as_json: bool) -> int:
    out = sys.stdout
    for record in Reader(path).records(from_seq=from_seq):
        out.write((json.dumps(_as_dict(record)) if as_json else _as_line(record)) + "\n")
    return EXIT_OK


def _as_dict(record: Record) -> dict[str, object]:
    return {
        "seq": record.seq, "type": record.type.name, "attestation_id": record.attestation_id,
        "body_len": len(record.body), "body_hex": record.body.hex(),
        "chain_hash": record.chain_hash.hex(), "prev_hash": record.prev_hash.hex(),
    }


def _as_line(record: Record) -> str:
    return (f"{record.seq:>10} {record.type.name:<9} att={record.attestation_id} "
            f"len={len(record.body)} hash={record.chain_hash.hex()[:16]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="symphony journal", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
