"""`symphony audit`: what an auditor asks of the record. Exit 0 when clean,
1 when something is found, 2 on error.

    symphony audit gap [--since T] [--until T] [--participant P] [--json]
    symphony audit ghosts [--older-than SECONDS] [--json]
    symphony audit seq-gaps [--json]
    symphony audit verify-chain [--node N] [--stream S] [--archive-public-key FILE|HEX]
                                [--journal-dir DIR] [--mirror DIR] [--json]
    symphony audit cross-check --mirror DIR [--node N] [--stream S] [--json]
    symphony audit verify-log --checkpoints DIR [--checkpoints DIR ...] --policy FILE [--node N] [--stream S]
                              [--json]
    symphony audit archive [--partition NAME ...] [--hot-days D] [--out DIR] [--signing-key PEM] [--drop]

T is ISO 8601 (`2025-06-01T00:00:00Z`) or a span back from now (`15m`, `2h`, `7d`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import asyncpg

from repair import anchors, archive, common, cross_check, verify, verify_log
from repair.store import QUERIES, TIMEOUT_SECONDS
from symphony import archive_signature
from symphony.errors import EXIT_FINDINGS, EXIT_OK, SymphonyError
from symphony.tlog.policy import Policy, PolicyError

_SPAN = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>[smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
GHOSTS_MAX = 100_000


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 (naive means UTC) or a span back from now: 30s, 15m, 2h, 7d."""
    match = _SPAN.match(text.strip())
    if match:
        seconds = float(match["n"]) * _UNIT_SECONDS[match["unit"]]
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither ISO 8601 nor a span like 15m, 2h, 7d") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_common(parser)
    sub = parser.add_subparsers(dest="check", metavar="CHECK", required=True)
    gap = sub.add_parser("gap", help="ingress - executions - handled (ghosts), and executions without their "
                                     "INGRESS (unattested), per participant and in total")
    gap.add_argument("--since", type=parse_time, help="window start (inclusive); default: the beginning")
    gap.add_argument("--until", type=parse_time, help="window end (exclusive); default: now")
    gap.add_argument("--participant", help="only this participant")
    ghosts = sub.add_parser("ghosts", help="every ghost (received, never executed, never explained) by id")
    ghosts.add_argument("--older-than", type=float, default=0.0, metavar="SECONDS",
                        help="ignore requests younger than this (still in flight)")
    sub.add_parser("seq-gaps", help="holes in each journal stream's numbering")
    chain = sub.add_parser("verify-chain", help="recompute every chain hash from the first record")
    chain.add_argument("--node", help="only streams of this node")
    chain.add_argument("--stream", type=int, help="only this stream id")
    chain.add_argument("--archive-public-key", metavar="FILE|HEX",
                       help="the Ed25519 public key archive rows must be signed with (default: archive_public_key); "
                            "without one, archived seqs are not trusted")
    chain.add_argument("--journal-dir", type=Path, metavar="DIR",
                       help="the node's journal root (<DIR>/<node>/<stream>/): compare each head with it")
    chain.add_argument("--mirror", type=Path, metavar="DIR",
                       help="the write-once NDJSON copy: compare each checkpoint with it")
    arch = sub.add_parser("archive", help="export, sign and record partitions older than the hot window "
                                          "(and drop them with --drop)")
    arch.add_argument("--partition", action="append", default=[], metavar="NAME",
                      help="a partition to archive (repeatable); default: every one older than --hot-days")
    arch.add_argument("--hot-days", type=int, default=7, metavar="D",
                      help="days kept in PostgreSQL (partitions whose day ended more than D days ago go)")
    arch.add_argument("--out", type=Path, metavar="DIR", help="where exports go (default: archive_dir)")
    arch.add_argument("--signing-key", metavar="PEM",
                      help="Ed25519 private key, mode 0600 (default: archive_signing_key, or "
                           "<data-dir>/keys/archive-signing.pem)")
    arch.add_argument("--drop", action="store_true", help="drop each partition once it is archived")
    cross = sub.add_parser("cross-check", help="compare the NDJSON attestation mirror (the write-once copy) "
                                               "with PostgreSQL, record by record")
    cross.add_argument("--mirror", type=Path, required=True, metavar="DIR",
                       help="directory of mirror files (*.ndjson, or Vector's *.ndjson.gz), read at any depth")
    cross.add_argument("--node", help="only streams of this node (default: every node the mirror names)")
    cross.add_argument("--stream", type=int, help="only this stream id")
    log = sub.add_parser("verify-log", help="recompute each stream epoch's Merkle tree from the rows and compare it "
                                            "with witnessed checkpoints kept outside the database")
    log.add_argument("--checkpoints", type=Path, action="append", required=True, metavar="DIR",
                     help="a directory of signed checkpoints (the witness's <state_dir>/logs, a publish_dir, or "
                          "the auditor's copies), read at any depth; repeatable")
    log.add_argument("--policy", type=Path, required=True, metavar="FILE",
                     help="c2sp.org/tlog-policy file: the node keys, the witnesses and the quorum to trust")
    log.add_argument("--node", help="only streams of this node")
    log.add_argument("--stream", type=int, help="only this stream id")
    for child in sub.choices.values():
        child.add_argument("--json", action="store_true", help="machine-readable output")
        common.add_common(child, suppress=True)


def run(args: argparse.Namespace) -> int:
    settings, url = common.settings_and_dsn(args)
    args.settings = settings
    _load_keys(args)  # a bad key is a usage error, found before connecting
    args.unattested_pending_seconds = settings.unattested_pending_seconds
    checks = {"gap": _gap, "ghosts": _ghosts, "seq-gaps": _seq_gaps, "verify-chain": _verify_chain,
              "cross-check": _cross_check, "archive": _archive, "verify-log": _verify_log}
    found, report, text = common.with_connection(url, lambda conn: checks[args.check](conn, args))
    print(json.dumps(report, indent=2, default=str) if args.json else text)
    return EXIT_FINDINGS if found else EXIT_OK


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


async def _gap(conn: asyncpg.Connection, args: argparse.Namespace) -> tuple[bool, dict[str, Any], str]:
    since = args.since or dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    until = args.until or dt.datetime.now(dt.timezone.utc)
    if until <= since:
        raise SymphonyError("--until must be after --since", exit_code=2)
    bound = args.unattested_pending_seconds
    rows = await conn.fetch(QUERIES["audit_gap"], since, until, args.participant, bound, timeout=TIMEOUT_SECONDS)
    participants = [dict(row) for row in rows]
    total: dict[str, Any] = {key: sum(p[key] for p in participants)
                             for key in ("ingress_count", "executions", "handled", "gap", "unattested", "pending")}
    total["pending_age_seconds_max"] = max((p["pending_age_seconds_max"] for p in participants
                                            if p["pending_age_seconds_max"] is not None), default=None)
    total["status"] = "PASS" if total["gap"] == 0 and total["unattested"] == 0 else "FAIL"
    executions = [{key: _iso(value) for key, value in row.items()} for row in await conn.fetch(
        QUERIES["audit_unattested"], since, until, args.participant, bound, GHOSTS_MAX, timeout=TIMEOUT_SECONDS)]
    report = {"window": {"since": args.since.isoformat() if args.since else None, "until": until.isoformat()},
              "unattested_pending_seconds": bound, "participants": participants, "total": total,
              "executions_without_ingress": executions}
    lines = [f"{'participant':<24} {'ingress':>8} {'executed':>8} {'handled':>8} {'gap':>6} {'unattested':>10} "
             f"{'pending':>8}  status"]
    for p in participants + [{"participant_id": "TOTAL", **total}]:
        lines.append(f"{p['participant_id']:<24} {p['ingress_count']:>8} {p['executions']:>8} {p['handled']:>8} "
                     f"{p['gap']:>6} {p['unattested']:>10} {p['pending']:>8}  {p['status']}")
    for e in executions:
        lines.append(f"{e['classification']}: outbox {e['outbox_id']} of {e['participant_id']} names INGRESS "
                     f"{e['node_id']}/{e['stream_id']}/{e['stream_seq']} (attestation {e['attestation_id']}): "
                     f"{e['reason']}, age {e['age_seconds']:.0f} s, {e['rail_attempts']} rail attempt(s)")
    return total["status"] != "PASS", report, "\n".join(lines)


async def _ghosts(conn: asyncpg.Connection, args: argparse.Namespace) -> tuple[bool, dict[str, Any], str]:
    rows = await conn.fetch(QUERIES["audit_ghosts"], args.older_than, GHOSTS_MAX, timeout=TIMEOUT_SECONDS)
    ghosts = [{key: _iso(value) for key, value in row.items()} for row in rows]
    lines = [f"{g['node_id']}/{g['stream_id']}/{g['stream_seq']}  attestation {g['attestation_id']}  "
             f"{g['participant_id']}  {g['method']} {g['route']}  {g['recorded_at']}  key sha256 "
             f"{(g['idempotency_key_hash'] or '—')[:16]}" for g in ghosts]
    lines.append(f"{len(ghosts)} ghost(s)")
    return bool(ghosts), {"count": len(ghosts), "ghosts": ghosts}, "\n".join(lines)


async def _seq_gaps(conn: asyncpg.Connection, args: argparse.Namespace) -> tuple[bool, dict[str, Any], str]:
    gaps = [dict(row) for row in await conn.fetch(QUERIES["audit_seq_gaps"], timeout=TIMEOUT_SECONDS)]
    lines = [f"{g['node_id']}/{g['stream_id']}: missing {g['missing_from']}..{g['missing_to']} "
             f"({g['missing_count']} records, {g['position']})" for g in gaps]
    lines.append(f"{len(gaps)} gap(s)")
    return bool(gaps), {"count": len(gaps), "gaps": gaps}, "\n".join(lines)


def _external_anchors(args: argparse.Namespace) -> list[anchors.Anchor]:
    found: list[anchors.Anchor] = []
    if args.journal_dir is not None:
        if not args.journal_dir.is_dir():
            raise SymphonyError(f"--journal-dir {args.journal_dir} is not a directory", exit_code=2)
        found.append(anchors.JournalAnchor(args.journal_dir))
    if args.mirror is not None:
        found.append(anchors.MirrorAnchor(cross_check.read_mirror(args.mirror, args.node, args.stream)))
    # Witnessed checkpoints (issue 13): `audit verify-log`, which recomputes every epoch's tree.
    return found


def _load_keys(args: argparse.Namespace) -> None:
    settings = args.settings
    if args.check == "verify-chain":
        key_text = args.archive_public_key or settings.archive_public_key
        args.archive_key = archive_signature.load_public_key(key_text) if key_text else None
    elif args.check == "verify-log":
        args.log_policy, args.log_anchors = _load_log_anchors(args)
    elif args.check == "archive":
        key_path = args.signing_key or settings.archive_signing_key
        if not key_path and getattr(args, "data_dir", None):
            key_path = str(Path(args.data_dir) / archive_signature.KEYS_DIR / archive_signature.PRIVATE_KEY_FILE)
        if not key_path:
            raise SymphonyError("no archive signing key: give --signing-key, set archive_signing_key, "
                                "or --data-dir", exit_code=2)
        args.archive_key = archive_signature.load_private_key(key_path)


async def _verify_chain(conn: asyncpg.Connection, args: argparse.Namespace) -> tuple[bool, dict[str, Any], str]:
    key = args.archive_key
    external = _external_anchors(args)
    streams = [(node, stream) for node, stream in await verify.list_streams(conn)
               if (args.node is None or node == args.node) and (args.stream is None or stream == args.stream)]
    if not streams and (args.node is not None or args.stream is not None):
        raise SymphonyError("no stream matches --node/--stream", exit_code=2)
    reports = []
    for node, stream in streams:
        reports += [r.as_dict() for r in await verify.verify_epochs(conn, node, stream, archive_key=key,
                                                                     external=external)]
    broken = [r for r in reports if r["status"] != "OK"]
    report = {"status": "BROKEN" if broken else "OK", "streams_verified": len(reports),
              "records_verified": sum(r["records_verified"] for r in reports),
              "anchors": {"archive_key": archive_signature.key_id(key) if key else None,
                          "external": [a.name for a in external]},
              "streams": reports}
    lines = []
    for r in reports:
        where = f"{r['node_id']}/{r['stream_id']}" + (f" (ended epoch {r['epoch']})" if r["ended_epoch"] else "")
        if r["status"] == "BROKEN":
            lines.append(f"{where}: BROKEN at seq {r['first_bad_seq']} ({r['reason']}): {r['detail']}")
        else:
            anchor = f" (anchored at archived seq {r['anchored_at']})" if r["anchored_at"] else ""
            lines.append(f"{where}: {r['status']}, {r['records_verified']} records through seq "
                         f"{r['last_verified_seq']}{anchor}")
        for name, info in r["anchors"].items():
            lines.append(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in info.items()))
        for f in r["findings"]:
            lines.append(f"  FINDING {f['check']}" + (f" at seq {f['seq']}" if f["seq"] is not None else "")
                         + f": {f['detail']}")
    lines.append(f"{report['status']}: {len(reports)} stream(s), {report['records_verified']} record(s) verified")
    if not external:
        lines.append("anchors: PostgreSQL alone (a tail cut with the checkpoint moved back, or a re-chained stream, "
                     "verifies here; compare with --journal-dir and --mirror, or run audit verify-log)")
    return bool(broken), report, "\n".join(lines)


def _load_log_anchors(args: argparse.Namespace) -> tuple[Policy, verify_log.Anchors]:
    """The policy and the accepted checkpoints: read before connecting, so that
    a bad policy or a directory without one anchor is a usage error (exit 2)."""
    try:
        policy = Policy.parse(args.policy.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SymphonyError(f"--policy {args.policy}: unreadable: {exc}", exit_code=2) from None
    except PolicyError as exc:
        raise SymphonyError(f"--policy {args.policy}: {exc}", exit_code=2) from None
    for directory in args.checkpoints:
        if not directory.is_dir():
            raise SymphonyError(f"--checkpoints {directory} is not a directory", exit_code=2)
    found = verify_log.load_anchors(args.checkpoints, policy)
    if not found.checkpoints:
        reasons = "; ".join(f"{path}: {why}" for path, why in found.ignored[:3])
        raise SymphonyError("no file under --checkpoints is a checkpoint the policy accepts"
                            + (f" ({reasons})" if reasons else ""), exit_code=2)
    return policy, found


async def _verify_log(conn: asyncpg.Connection, args: argparse.Namespace) -> tuple[bool, dict[str, Any], str]:
    report = await verify_log.verify_log(conn, args.log_policy, args.log_anchors, node_id=args.node,
                                         stream_id=args.stream)
    return not report.ok, report.as_dict(), report.text()


async def _archive(conn: asyncpg.Connection, args: argparse.Namespace) -> tuple[bool, dict[str, Any], str]:
    settings = args.settings
    key = args.archive_key
    out_dir = args.out or Path(settings.archive_dir or "archives")
    partitions = args.partition
    if not partitions:
        if not 1 <= args.hot_days <= 3650:
            raise SymphonyError("--hot-days must be in [1, 3650]", exit_code=2)
        before = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=args.hot_days)
        partitions = [row["partition"] for row in
                      await conn.fetch(QUERIES["partitions_older_than"], before, timeout=TIMEOUT_SECONDS)]
    done = []
    for partition in partitions:
        try:
            done += await archive.archive_partition(conn, partition, out_dir, key, drop=args.drop)
        except (asyncpg.PostgresError, OSError) as exc:
            raise SymphonyError(f"archiving {partition} failed, nothing of it recorded: {exc}", exit_code=4) from None
    report = {"partitions": partitions, "key_id": archive_signature.key_id(key.public_key()), "dropped": args.drop,
              "archives": [a.as_dict() for a in done]}
    lines = [f"{a.partition}: {a.node_id}/{a.stream_id} seqs {a.first_seq}..{a.last_seq} -> {a.path}"
             for a in done]
    lines.append(f"{len(done)} archive row(s) from {len(partitions)} partition(s), signed by {report['key_id']}"
                 + (", partitions dropped" if args.drop else ""))
    return False, report, "\n".join(lines)


async def _cross_check(conn: asyncpg.Connection, args: argparse.Namespace) -> tuple[bool, dict[str, Any], str]:
    copy = cross_check.read_mirror(args.mirror, args.node, args.stream)
    if not copy.records and not copy.malformed_count:
        raise SymphonyError(f"--mirror {args.mirror} holds no record of the streams asked for", exit_code=2)
    report = await cross_check.compare(conn, copy, args.node, args.stream)
    return report["status"] != "MATCH", report, cross_check.report_text(report)
