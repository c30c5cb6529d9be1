"""`symphony verify`: check Symphony's evidence offline, with files and public keys only.

    symphony verify checkpoint FILE --policy POLICY
    symphony verify proof FILE --policy POLICY
    symphony verify journal DIR --checkpoint FILE --policy POLICY
    symphony verify gap-statement FILE --key VKEY [--policy POLICY --checkpoint FILE ...]
    symphony verify export DIR --policy POLICY --export-key KEY [--anchor FILE ...]

A journal stream DIR whose first segments were released must hold the
stream's RELEASES file (journal/FORMAT.md F18): each entry is checked against
the policy, and the kept records must fold from the newest entry's frontier
to every witnessed root; a head deleted without such entries is named with
its stream and first missing seq.

POLICY is a c2sp.org/tlog-policy file: the node keys (`log <vkey>`), the
witnesses and the quorum the verifier trusts. Nothing here reads the
operator's database or trusts a key carried by the evidence itself. VKEY is
the repair gap-statement key as a C2SP verifier key (or a file holding it). Exit 0:
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

from symphony import gap_statement
from symphony.errors import EXIT_FINDINGS, EXIT_OK, ConfigError
from symphony.tlog import checkpoint, merkle, note, proof
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
    parser.add_argument("kind", choices=("checkpoint", "proof", "journal", "gap-statement", "export"),
                        help="what to verify")
    parser.add_argument("path", help="the checkpoint note, the .tlog-proof file, the journal stream directory, "
                                     "the gap statement, or the export directory (`symphony export`)")
    parser.add_argument("--policy", metavar="FILE",
                        help="c2sp.org/tlog-policy file: trusted node keys, witnesses and quorum (required except "
                             "for gap-statement, where it checks the named checkpoints are witnessed)")
    parser.add_argument("--checkpoint", metavar="FILE", action="append", default=[],
                        help="journal: the witnessed checkpoint the stream copy must reproduce; gap-statement: a "
                             "cosigned checkpoint note the statement names (repeatable, with --policy)")
    parser.add_argument("--key", metavar="VKEY",
                        help="gap-statement: the repair gap-statement verifier key (C2SP vkey, or a file with it)")
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
    them must be the checkpoint's root). Records released from the head of the
    copy must be accounted for by the stream's release log (FORMAT.md F18),
    each entry anchored on a checkpoint the policy accepts."""
    from journal import JournalError, Reader, verify

    report = Report()
    cp = _checkpoint(policy, signed, report)
    if cp is None:
        return report
    try:
        chain = verify(directory)
        headers = Reader(directory).segments()
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
    if not headers or chain.epoch is None:
        report.fail("journal: the copy holds no segment")
        return report
    start = _start(policy, directory, headers[0], report)
    if start is None:
        return report
    frontier, roots, expected = start
    roots.setdefault(cp.size, []).append((cp.root, "the witnessed root"))
    for seq, (leaf, chain_hash, what) in sorted(expected.items()):
        if not headers[0].first_seq <= seq <= chain.last_seq:
            continue  # released, as recorded, or beyond a tail cut (reported above)
        found = _record(directory, seq)
        if found is not None and (merkle.leaf_hash(found.canonical) != leaf or found.chain_hash != chain_hash):
            report.fail(f"journal: record {seq} is not the last record {what} (leaf or chain hash)")
    _fold(directory, frontier, roots, report)
    if frontier.size < max(roots) and chain.ok and chain.last_seq >= cp.size:
        report.fail(f"journal: tail cut: the copy's tree ends at {frontier.size} records, a witnessed checkpoint "
                    f"covers {max(roots)}")
    report.facts["records_checked"] = frontier.size
    return report


def _fold(directory: Path, frontier: merkle.Frontier, roots: Roots, report: Report) -> None:
    """Append the copy's records from frontier.size + 1 on to `frontier`,
    comparing the root with each witnessed root on the way, and each CHECKPOINT
    record's frontier (F17) with the tree just before it."""
    from journal import Reader, RecordType, parse_checkpoint, parse_genesis

    def check(size: int) -> None:
        for root, what in roots.get(size, []):
            if frontier.root() != root:
                report.fail(f"journal: records 1..{size} do not reproduce {what}: a record was "
                            "altered, removed, inserted or reordered, or the stream was rewritten")

    end = max(roots)
    check(frontier.size)
    for record in Reader(directory).records(from_seq=frontier.size + 1):
        if frontier.size >= end or record.seq != frontier.size + 1:
            break
        if record.seq == 1:
            parse_genesis(record.body)
        if record.type == RecordType.CHECKPOINT:
            try:
                journalled = parse_checkpoint(record.body)  # F17: the tree just before this record
            except ValueError as exc:
                report.fail(f"journal: the CHECKPOINT record at seq {record.seq}: {exc}")
            else:
                if journalled.tree_size != frontier.size or list(journalled.frontier) != frontier.hashes \
                        or _signed_root(journalled.note) != (frontier.size, frontier.root()):
                    report.fail(f"journal: the CHECKPOINT record at seq {record.seq} does not describe the tree "
                                f"of the {frontier.size} records before it")
        frontier.append(merkle.leaf_hash(record.canonical))
        check(frontier.size)


Expected = dict[int, tuple[bytes, bytes, str]]  # seq -> (leaf hash, chain hash, which release names it)
Roots = dict[int, list[tuple[bytes, str]]]  # tree size -> (root, which checkpoint says so)


def _start(policy: Policy, directory: Path, oldest: Any, report: Report
           ) -> tuple[merkle.Frontier, Roots, Expected] | None:
    """Where the tree computation starts, and what it must reproduce on the way.

    A copy from seq 1 starts from the empty tree. A copy whose first segments
    were released starts from the frontier of the release entry (FORMAT.md
    F18) that ends right before its first record; the entries from seq 1 on
    must be contiguous and each must carry a checkpoint the policy accepts
    (node key and witness quorum) that covers its range, with an inclusion
    proof of its last leaf. The frontier is not trusted on its own: the kept
    records must fold from it to every witnessed root at or after it."""
    from journal import JournalError, read_releases

    label = f"stream {oldest.node_id}/{oldest.stream_id}"
    try:
        log = read_releases(directory)
    except JournalError as exc:
        report.fail(f"{label}: release log: {exc}")
        return None
    accepted, roots, expected = [], {}, {}  # type: ignore[var-annotated]
    covered = 0
    for release in log.for_epoch(oldest.epoch):
        what = f"the release of seqs {release.first_seq}..{release.last_seq}"
        if release.first_seq != covered + 1:
            report.fail(f"{label}: the release log does not account for seqs {covered + 1}.."
                        f"{release.first_seq - 1}")
            break
        problem, cp = _release_problem(policy, release, oldest)
        if cp is None:
            report.fail(f"{label}: {what} is not anchored: {problem}")
            break
        accepted.append(release)
        roots.setdefault(cp.size, []).append((cp.root, f"the root of the checkpoint of {what}"))
        expected[release.last_seq] = (release.last_leaf_hash, release.last_chain_hash, f"of {what}")
        covered = release.last_seq
    report.facts.update(released_through_seq=covered, releases=len(accepted))
    if oldest.first_seq - 1 > covered:
        report.facts["first_missing_seq"] = covered + 1
        report.fail(f"{label}: seqs {covered + 1}..{oldest.first_seq - 1} were deleted without a valid release "
                    f"record: first missing seq {covered + 1}")
        return None
    if oldest.first_seq == 1:
        return merkle.Frontier(), roots, expected
    anchor = next((r for r in accepted if r.last_seq == oldest.first_seq - 1), accepted[-1])
    if anchor.last_seq == oldest.first_seq - 1 and oldest.prev_hash != anchor.last_chain_hash:
        report.fail(f"{label}: the first kept segment does not continue the released records (its prev_hash is "
                    f"not the chain hash of seq {anchor.last_seq} in the release log)")
        return None
    report.facts["verified_from_release_seq"] = anchor.last_seq
    return merkle.Frontier(anchor.last_seq, anchor.frontier), \
        {size: found for size, found in roots.items() if size >= anchor.last_seq}, expected


def _release_problem(policy: Policy, release: Any, oldest: Any) -> tuple[str, checkpoint.Checkpoint | None]:
    """(why not, None) when a release entry does not account for its range;
    ("", its checkpoint) when it does."""
    if (release.node_id, release.stream_id) != (oldest.node_id, oldest.stream_id):
        return f"it names stream {release.node_id}/{release.stream_id}", None
    try:
        cp, _ = policy.verify(release.checkpoint.encode())
    except PolicyError as exc:
        return f"its checkpoint is not accepted: {exc}", None
    if not cp.origin.endswith(f"/{release.stream_id}/{release.epoch.hex()}"):
        return f"its checkpoint is for origin {cp.origin}", None
    if cp.size < release.last_seq:
        return f"its checkpoint covers {cp.size} records, not {release.last_seq}", None
    try:
        merkle.verify_inclusion(release.last_leaf_hash, release.last_seq - 1, cp.size, release.inclusion_proof,
                                cp.root)
        merkle.Frontier(release.last_seq, release.frontier)
    except merkle.ProofError as exc:
        return f"its last leaf or frontier does not match its checkpoint: {exc}", None
    return "", cp


def _signed_root(signed: bytes) -> tuple[int, bytes] | None:
    """(size, root) the note in a CHECKPOINT record claims; None if it is not a checkpoint note."""
    try:
        cp = checkpoint.Checkpoint.parse(note.split(signed)[0])
    except (note.NoteError, checkpoint.CheckpointError, ValueError):
        return None
    return cp.size, cp.root


def _record(directory: Path, seq: int) -> Any:
    from journal import Reader

    scan = Reader(directory).records(from_seq=seq)
    try:
        record = next(scan, None)
    finally:
        getattr(scan, "close")()
    return record if record is not None and record.seq == seq else None


def load_vkey(value: str) -> note.Verifier:
    """A C2SP verifier key given inline, or the file that holds one."""
    text = value
    if "+" not in value or Path(value).is_file():
        text = _read(value, "verifier key").decode("utf-8", errors="replace").strip()
    try:
        return note.Verifier.parse(text)
    except note.NoteError as exc:
        raise ConfigError(f"--key: {exc}") from None


def verify_gap_statement(key: note.Verifier, signed: bytes, policy: Policy | None,
                         checkpoints: list[bytes]) -> tuple[Report, str]:
    """The statement's signature (by `key` only), its body's format, and, with a
    policy, that every checkpoint it names is one of `checkpoints` cosigned by
    the policy's witness quorum. Returns the report and the body."""
    report = Report()
    try:
        statement, body = gap_statement.open_statement(signed, key)
    except gap_statement.StatementError as exc:
        report.fail(f"gap statement: {exc}")
        return report, ""
    total = statement.total
    report.facts.update(window_start=gap_statement.format_time(statement.window_start),
                        window_end=gap_statement.format_time(statement.window_end),
                        signed_by=key.name, participants=len(statement.participants),
                        ingress=total.ingress, executions=total.executions, handled=total.handled, gap=total.gap,
                        unattested=total.unattested, ghosts_listed=len(statement.ghosts),
                        checkpoints_named=len(statement.checkpoints))
    if policy is None:
        return report, body
    if not statement.checkpoints:
        report.fail("gap statement: it names no checkpoint, so nothing anchors it to a witnessed log")
    witnessed: dict[tuple[str, int, bytes], list[str]] = {}
    for data in checkpoints:
        try:
            cp, cosigners = policy.verify(data)
        except PolicyError as exc:
            report.fail(f"checkpoint: {exc}")
            continue
        witnessed[(cp.origin, cp.size, cp.root)] = sorted(cosigners)
    for ref in statement.checkpoints:
        if (ref.origin, ref.size, ref.root) not in witnessed:
            report.fail(f"checkpoint {ref.origin} size {ref.size}: no given checkpoint file with this root "
                        "verifies under the policy's witness quorum")
    report.facts["checkpoints_witnessed"] = sum(
        (ref.origin, ref.size, ref.root) in witnessed for ref in statement.checkpoints)
    return report, body


def run(args: argparse.Namespace) -> int:
    if args.kind == "gap-statement":
        return _run_gap_statement(args)
    if not args.policy:
        raise ConfigError(f"verify {args.kind} needs --policy FILE")
    policy = load_policy(args.policy)
    if args.kind == "checkpoint":
        report = Report()
        _checkpoint(policy, _read(args.path, "checkpoint"), report)
    elif args.kind == "export":
        return _run_export(args, policy)
    elif args.kind == "proof":
        report = verify_proof(policy, _read(args.path, "proof"))
    else:
        if len(args.checkpoint) != 1:
            raise ConfigError("verify journal needs one --checkpoint FILE (the witnessed checkpoint to check against)")
        directory = Path(args.path)
        if not directory.is_dir():
            raise ConfigError(f"{directory} is not a journal stream directory")
        report = verify_journal(policy, _read(args.checkpoint[0], "checkpoint"), directory)
    return _print(report, args.json)


def _run_gap_statement(args: argparse.Namespace) -> int:
    if not args.key:
        raise ConfigError("verify gap-statement needs --key VKEY (the repair gap-statement verifier key)")
    if args.checkpoint and not args.policy:
        raise ConfigError("verify gap-statement: --checkpoint needs --policy (the witnesses to trust)")
    key = load_vkey(args.key)
    policy = load_policy(args.policy) if args.policy else None
    report, body = verify_gap_statement(key, _read(args.path, "gap statement"), policy,
                                        [_read(path, "checkpoint") for path in args.checkpoint])
    if body and not args.json:
        sys.stdout.write(body)
    elif body:
        report.facts["body"] = body
    return _print(report, args.json)


def _print(report: Report, as_json: bool) -> int:
    if as_json:
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
