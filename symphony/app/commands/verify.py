"""`symphony verify`: check Symphony's evidence offline, with files and public keys only.

    symphony verify checkpoint FILE --policy POLICY
    symphony verify proof FILE --policy POLICY
    symphony verify journal DIR --checkpoint FILE --policy POLICY
    symphony verify export DIR --policy POLICY --export-key KEY

POLICY is a c2sp.org/tlog-policy file: the node keys (`log <vkey>`), the
witnesses and the quorum the verifier trusts. Nothing here reads the
operator's database or trusts a key carried by the evidence itself. Exit 0:
verified; 1: the evidence does not verify (what and where is printed);
2: usage error or unreadable input. docs/verifying.md says what each check
proves, byte for byte, so it can be re-implemented with hashlib and Ed25519.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from symphony.errors import EXIT_FINDINGS, EXIT_OK, ConfigError
from symphony.tlog import checkpoint, merkle, proof
from symphony.tlog.policy import Policy, PolicyError

CANONICAL_HEADER = 28  # body_len u32, seq u64, attestation_id u64, type u16, flags u16, reserved u32
RECORD_TYPES = {1: "GENESIS", 2: "INGRESS", 3: "OUTCOME", 4: "HEARTBEAT", 5: "DROPPED", 6: "CHECKPOINT"}


@dataclass
class Report:
    ok: bool = True
    facts: dict[str, Any] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)

    def fail(self, finding: str) -> None:
        self.ok = False
        self.findings.append(finding)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=("checkpoint", "proof", "journal", "export"), help="what to verify")
    parser.add_argument("path", help="the checkpoint note, the .tlog-proof file, the journal stream directory, "
                                     "or the export directory (`symphony export`)")
    parser.add_argument("--policy", required=True, metavar="FILE",
                        help="c2sp.org/tlog-policy file: trusted node keys, witnesses and quorum")
    parser.add_argument("--checkpoint", metavar="FILE",
                        help="journal: the witnessed checkpoint the stream copy must reproduce")
    parser.add_argument("--export-key", metavar="VKEY",
                        help="export: the manifest signer's note verifier key (<name>+<hex id>+<base64 key>, or a "
                             "file holding it), as `symphony export` prints it under `signer`; or its Ed25519 "
                             "public key as a PEM file (key name symphony-export)")
    parser.add_argument("--anchor", action="append", default=[], metavar="FILE",
                        help="export: a witnessed checkpoint you hold independently (from the witness, or an "
                             "earlier export) that the export must account for (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None


def load_policy(path: str) -> Policy:
    try:
        return Policy.parse(_read(path, "policy").decode("utf-8", errors="strict"))
    except (PolicyError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy {path}: {exc}") from None


def _checkpoint(policy: Policy, signed: bytes, report: Report) -> checkpoint.Checkpoint | None:
    try:
        cp, cosigners = policy.verify(signed)
    except PolicyError as exc:
        report.fail(f"checkpoint: {exc}")
        return None
    report.facts.update(origin=cp.origin, tree_size=cp.size, root=cp.root.hex(), cosigned_by=sorted(cosigners))
    return cp


def parse_canonical(canonical: bytes) -> dict[str, Any]:
    """The fields of a record's canonical bytes (journal/FORMAT.md)."""
    if len(canonical) < CANONICAL_HEADER:
        raise ValueError(f"{len(canonical)} bytes is shorter than a record header")
    body_len, seq, attestation_id, kind, flags, reserved = struct.unpack_from("<IQQHHI", canonical)
    if body_len != len(canonical) - CANONICAL_HEADER or flags or reserved or kind not in RECORD_TYPES:
        raise ValueError("not a record's canonical bytes (length, flags, reserved or type)")
    return {"seq": seq, "attestation_id": attestation_id, "type": RECORD_TYPES[kind], "body_len": body_len}


def verify_proof(policy: Policy, data: bytes) -> Report:
    report = Report()
    try:
        parsed = proof.ProofFile.parse(data)
    except proof.ProofFormatError as exc:
        report.fail(f"proof file: {exc}")
        return report
    cp = _checkpoint(policy, parsed.checkpoint, report)
    if cp is None:
        return report
    if parsed.extra is None:
        report.fail("proof file: no `extra` line with the record's canonical bytes")
        return report
    try:
        record = parse_canonical(parsed.extra)
    except ValueError as exc:
        report.fail(f"record: {exc}")
        return report
    report.facts["record"] = record
    if record["seq"] != parsed.index + 1:
        report.fail(f"record: seq {record['seq']} is not at index {parsed.index} (leaf i is seq i + 1)")
        return report
    try:
        merkle.verify_inclusion(merkle.leaf_hash(parsed.extra), parsed.index, cp.size, parsed.path, cp.root)
    except merkle.ProofError as exc:
        report.fail(f"inclusion: seq {record['seq']} is not in the checkpointed tree: {exc}")
    return report


def verify_journal(policy: Policy, signed: bytes, directory: Path) -> Report:
    """A copy of a stream against a witnessed checkpoint: every record the
    checkpoint covers must be there, unchanged, in order (the tree's root over
    them must be the checkpoint's root)."""
    from journal import JournalError, Reader, parse_genesis, verify

    report = Report()
    cp = _checkpoint(policy, signed, report)
    if cp is None:
        return report
    try:
        chain = verify(directory)
    except JournalError as exc:
        report.fail(f"journal: {exc}")
        return report
    report.facts.update(journal_first_seq=chain.first_seq, journal_last_seq=chain.last_seq)
    if not chain.ok:
        report.fail(f"journal: seq {chain.first_bad_seq}: {chain.reason}")
    if chain.epoch is not None and not cp.origin.endswith("/" + chain.epoch.hex()):
        report.fail(f"journal: its epoch {chain.epoch.hex()} is not the checkpoint's origin {cp.origin}")
    if chain.last_seq < cp.size:
        report.fail(f"journal: tail cut: the copy ends at seq {chain.last_seq}, the witnessed checkpoint "
                    f"covers {cp.size} records")
    frontier = _starting_frontier(directory, chain.first_seq, report)
    if frontier is None:
        return report
    for record in Reader(directory).records(from_seq=frontier.size + 1):
        if frontier.size == cp.size or record.seq != frontier.size + 1:
            break
        if record.seq == 1:
            parse_genesis(record.body)
        frontier.append(merkle.leaf_hash(record.canonical))
    if frontier.size == cp.size and frontier.root() != cp.root:
        report.fail(f"journal: records 1..{cp.size} do not reproduce the witnessed root: a record was "
                    "altered, removed, inserted or reordered, or the stream was rewritten")
    report.facts["records_checked"] = frontier.size
    return report


def _starting_frontier(directory: Path, first_seq: int, report: Report) -> merkle.Frontier | None:
    """Where the tree computation starts: empty at seq 1, or, when the first
    segments were released (FORMAT.md F15), the frontier of the copy's first
    CHECKPOINT record (F17). That frontier is not trusted on its own: only if
    the records after it then reproduce the witnessed root is the whole claim
    (frontier and records) proven, because the root commits to both."""
    from journal import Reader, RecordType, parse_checkpoint

    if first_seq == 1:
        return merkle.Frontier()
    for record in Reader(directory).records(from_seq=first_seq):
        if record.type == RecordType.CHECKPOINT:
            body = parse_checkpoint(record.body)
            if body.tree_size != record.seq - 1:
                report.fail(f"journal: the CHECKPOINT at seq {record.seq} claims {body.tree_size} records before it")
                return None
            report.facts["verified_from_checkpoint_seq"] = record.seq
            return merkle.Frontier(body.tree_size, body.frontier)
    report.fail(f"journal: starts at seq {first_seq} (the records before it were released) and holds no "
                "CHECKPOINT record to start the tree from")
    return None


def run(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    if args.kind == "checkpoint":
        report = Report()
        _checkpoint(policy, _read(args.path, "checkpoint"), report)
    elif args.kind == "export":
        return _run_export(args, policy)
    elif args.kind == "proof":
        report = verify_proof(policy, _read(args.path, "proof"))
    else:
        if not args.checkpoint:
            raise ConfigError("verify journal needs --checkpoint FILE (the witnessed checkpoint to check against)")
        directory = Path(args.path)
        if not directory.is_dir():
            raise ConfigError(f"{directory} is not a journal stream directory")
        report = verify_journal(policy, _read(args.checkpoint, "checkpoint"), directory)
    if args.json:
        print(json.dumps({"ok": report.ok, "findings": report.findings, **report.facts}, indent=2))
    else:
        for key, value in report.facts.items():
            print(f"{key}: {value}")
        for finding in report.findings:
            print(f"FAIL {finding}", file=sys.stderr)
        print("OK: verified" if report.ok else "FAILED")
    return EXIT_OK if report.ok else EXIT_FINDINGS


def _run_export(args: argparse.Namespace, policy: Policy) -> int:
    from symphony.app.commands import verify_export

    if not args.export_key:
        raise ConfigError("verify export needs --export-key VKEY (the export signer's verifier key)")
    key = verify_export.parse_export_key(args.export_key)
    directory = Path(args.path)
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not an export directory")
    anchors = [_read(path, "anchor checkpoint") for path in args.anchor]
    report = verify_export.verify_export(directory, policy, key, anchors)
    rows = report.gap_rows()
    if args.json:
        print(json.dumps({"ok": report.ok, "findings": report.findings, **report.facts, "participants": rows,
                          "ghosts": report.ghosts, "unattested_executions": report.unattested}, indent=2))
    else:
        for name, value in report.facts.items():
            print(f"{name}: {value}")
        print(f"{'participant':<24} {'ingress':>8} {'executed':>8} {'handled':>8} {'gap':>6} {'unattested':>10}  status")
        for row in rows:
            print(f"{row['participant_id']:<24} {row['ingress_count']:>8} {row['executions']:>8} {row['handled']:>8} "
                  f"{row['gap']:>6} {row['unattested']:>10}  {row['status']}")
        for ghost in report.ghosts:
            print(f"GHOST {ghost['node_id']}/{ghost['stream_id']} epoch {ghost['epoch']} seq {ghost['seq']} "
                  f"attestation {ghost['attestation_id']} participant {ghost['participant_id']} "
                  f"outcome {ghost['outcome'] or 'none'}")
        for finding in report.findings:
            print(f"FAIL {finding}", file=sys.stderr)
        print("OK: verified" if report.ok else "FAILED")
    return EXIT_OK if report.ok else EXIT_FINDINGS
