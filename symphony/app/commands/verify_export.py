"""`symphony verify export DIR`: check an export offline and recompute the attestation gap.

From the export's files and public keys only (the examiner's tlog-policy and
the export signer's verifier key), no database:

1. the manifest is a signed note that the export key verifies; every file it
   lists is there with its size, SHA-256 and item count, and nothing else is;
2. per stream epoch: the records are seqs a..b in order, each canonical and
   chained to the previous one; the tree built from the frontier at a - 1 and
   the records a..b, with the consistency proof b -> n, reproduces the root of
   the checkpoint of size n, which the policy's node key signed and its
   witness quorum cosigned (so the range is complete and contiguous: nothing
   removed, inserted, reordered, altered or rewritten);
3. every outbox row references an exported INGRESS with its attestation id,
   participant and body hash; every event references an exported outbox row,
   and each row's events replay to its status;
4. the attestation gap per participant, as attestation_gap_v3 defines it
   (migrations 0001/0002/0040), over the exported window: INGRESS records of
   executing routes recorded in the window, of which EXECUTED (an outbox row
   with that attestation id and node), HANDLED (else the first OUTCOME of its
   stream says replayed, rejected, upstream_error or client_gone), GHOST
   (neither); plus outbox rows created in the window without their INGRESS
   (unattested). Every ghost is named.

Exit 0: all holds and the gap is zero; 1: findings (each names the file, the
stream and seq, or the row id); 2: usage or unreadable input.
"""

from __future__ import annotations

import binascii
import concurrent.futures
import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from symphony import attestation, exports
from symphony.errors import ConfigError
from symphony.tlog import merkle, note
from symphony.tlog.policy import Policy, PolicyError

HEADER = struct.Struct("<IQQHHI")
RECORD_TYPES = range(1, 7)
UNAUTHENTICATED = "(unauthenticated)"
HANDLED = frozenset(str(d) for d in attestation.HANDLED_DISPOSITIONS)
FINDINGS_LISTED_MAX = 10_000
_INGRESS = msgspec.msgpack.Decoder(attestation.IngressBody)
_OUTCOME = msgspec.msgpack.Decoder(attestation.OutcomeBody)
_sha256 = hashlib.sha256
_CANDIDATE = (1 << 64) - 1


@dataclass
class Tally:
    ingress_count: int = 0
    executions: int = 0
    handled: int = 0
    gap: int = 0
    unattested: int = 0

    def row(self, participant: str) -> dict[str, Any]:
        return {"participant_id": participant, "ingress_count": self.ingress_count, "executions": self.executions,
                "handled": self.handled, "gap": self.gap, "unattested": self.unattested,
                "status": "PASS" if self.gap == 0 and self.unattested == 0 else "FAIL"}


@dataclass
class ExportReport:
    ok: bool = True
    facts: dict[str, Any] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    tallies: dict[str, Tally] = field(default_factory=dict)
    ghosts: list[dict[str, Any]] = field(default_factory=list)
    unattested: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, finding: str) -> None:
        self.ok = False
        if len(self.findings) < FINDINGS_LISTED_MAX:
            self.findings.append(finding)

    def tally(self, participant: str) -> Tally:
        found = self.tallies.get(participant)
        if found is None:
            found = self.tallies[participant] = Tally()
        return found

    def gap_rows(self) -> list[dict[str, Any]]:
        return [self.tallies[p].row(p) for p in sorted(self.tallies)]


def parse_export_key(value: str) -> note.Verifier:
    """A note verifier key `<name>+<hex id>+<base64>`, given inline or in a
    file; or an Ed25519 public key in a PEM file (the evidence key's
    `evidence-signing.pub.pem`), taken with the default key name
    `symphony-export`."""
    text = value
    path = Path(value)
    if "+" not in value or path.is_file():
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--export-key {value}: neither a verifier key nor a readable file ({exc})") from None
    if text.startswith("-----BEGIN PUBLIC KEY-----"):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            key = load_pem_public_key(text.encode())
        except ValueError as exc:
            raise ConfigError(f"--export-key {value}: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"--export-key {value}: not an Ed25519 public key")
        return note.Verifier(exports.DEFAULT_KEY_NAME, note.ED25519, note.raw_public_key(key))
    try:
        verifier = note.Verifier.parse(text)
    except note.NoteError as exc:
        raise ConfigError(f"--export-key: {exc}") from None
    if verifier.signature_type != note.ED25519:
        raise ConfigError("--export-key: not an Ed25519 note key (type 0x01)")
    return verifier


def verify_export(directory: Path, policy: Policy, export_key: note.Verifier,
                  anchors: list[bytes] | None = None) -> ExportReport:
    """Check the export in `directory`; `anchors` are witnessed checkpoints the
    examiner holds independently (from the witness, or a previous export):
    each must be accounted for by the export (see `_anchor`)."""
    report = ExportReport()
    manifest = _manifest(directory, export_key, report)
    if manifest is None:
        return report
    # The file hashes are computed on a second thread while the rest runs:
    # hashlib and file reads release the GIL, so on two cores they cost no time.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        hashed = pool.submit(_files, directory, manifest, report)
        _contents(directory, manifest, policy, anchors, report)
        hashed.result()
    if any(t.gap or t.unattested for t in report.tallies.values()):
        report.ok = False
    return report


def _contents(directory: Path, manifest: exports.Manifest, policy: Policy, anchors: list[bytes] | None,
              report: ExportReport) -> None:
    """Checks 2-6 of the module docstring (everything but the file hashes)."""
    streams = _lines(directory / exports.STREAMS, exports.StreamLine, report)
    checkpoints = {c.stream: c for c in _lines(directory / exports.CHECKPOINTS, exports.CheckpointLine, report)}
    listed = {f.name for f in manifest.files}
    for index, stream in enumerate(streams):
        if stream.stream != index:
            report.fail(f"{exports.STREAMS} line {index + 1}: stream {stream.stream} where {index} was expected")
            return
    for number in sorted(set(checkpoints) - set(range(len(streams)))):
        report.fail(f"{exports.CHECKPOINTS}: a checkpoint for stream {number}, which the export does not have")
    gap = _Gap(manifest.selection, report)
    gap.load_outbox(directory / exports.OUTBOX)
    for stream in streams:
        name = exports.records_file(stream.stream)
        if name not in listed:
            report.fail(f"stream {_label(stream)}: its records file {name} is not in the manifest")
        checker = _StreamCheck(stream, gap, report)
        checker.run(directory / name)
        cp = checkpoints.get(stream.stream)
        if cp is None:
            report.fail(f"stream {_label(stream)}: {exports.CHECKPOINTS} has no checkpoint for it")
        else:
            checker.prove(cp, policy)
    gap.finish(directory / exports.OUTBOX, directory / exports.EVENTS)
    for anchor in anchors or []:
        _anchor(anchor, policy, streams, report)
    report.facts.update(format=exports.FORMAT, selection=manifest.selection.line(), created=manifest.created_at,
                        streams=len(streams), records=sum(s.last_seq - s.first_seq + 1 for s in streams))


def _label(stream: exports.StreamLine) -> str:
    return f"{stream.node_id}/{stream.stream_id} epoch {stream.epoch}"


def _manifest(directory: Path, key: note.Verifier, report: ExportReport) -> exports.Manifest | None:
    try:
        signed = (directory / exports.MANIFEST).read_bytes()
    except OSError as exc:
        report.fail(f"manifest: cannot read it ({exc.strerror})")
        return None
    try:
        text, _ = note.open_note(signed, [key])
    except note.NoteError as exc:
        report.fail(f"manifest: its signature does not verify with the export key {key.name}: {exc}")
        return None
    try:
        return exports.Manifest.parse(text)
    except exports.ManifestError as exc:
        report.fail(f"manifest: {exc}")
        return None


def _files(directory: Path, manifest: exports.Manifest, report: ExportReport) -> None:
    """Every listed file with its size, hash and item count; nothing unlisted."""
    listed = {f.name for f in manifest.files}
    for required in (exports.STREAMS, exports.CHECKPOINTS, exports.OUTBOX, exports.EVENTS):
        if required not in listed:
            report.fail(f"manifest: {required} is not listed")
    present = {p.name for p in directory.iterdir() if p.name != exports.MANIFEST}
    for extra in sorted(present - listed):
        report.fail(f"file {extra}: not in the manifest (added)")
    for entry in manifest.files:
        path = directory / entry.name
        digest, size, lines = _sha256(), 0, 0
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    lines += chunk.count(b"\n")
        except OSError:
            report.fail(f"file {entry.name}: listed in the manifest but missing (removed)")
            continue
        if digest.hexdigest() != entry.sha256 or size != entry.size:
            report.fail(f"file {entry.name}: its SHA-256 or size is not the manifest's (altered)")
        if lines != entry.items:
            report.fail(f"file {entry.name}: {lines} items where the manifest says {entry.items}")


def _lines(path: Path, kind: type[Any], report: ExportReport) -> list[Any]:
    decoder = msgspec.json.Decoder(kind)
    out = []
    for number, raw in _read_lines(path, report):
        try:
            out.append(decoder.decode(raw))
        except msgspec.DecodeError as exc:
            report.fail(f"{path.name} line {number}: {exc}")
    return out


def _read_lines(path: Path, report: ExportReport) -> Iterator[tuple[int, bytes]]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return
    with handle:
        for number, raw in enumerate(handle, start=1):
            yield number, raw


class _OutboxKeys(msgspec.Struct, frozen=True):
    """What the first pass over outbox.jsonl needs of a row (the rest is skipped)."""

    id: str
    participant_id: str
    attestation_id: int
    ingress_node_id: str
    ingress_stream_id: int
    ingress_seq: int
    ingress_body_sha256: str | None


class _Gap:
    """The attestation gap over the exported window, with bounded state: the
    outbox keys in sets of integers, INGRESS records waiting for their
    OUTCOME only until it arrives (it follows them closely in their stream)."""

    def __init__(self, selection: exports.Selection, report: ExportReport) -> None:
        self.report = report
        self.since_us, self.until_us = selection.window_us()
        self.by_seq = selection.by_seq
        self.nodes: dict[str, int] = {}
        self.executed: set[int] = set()  # attestation_id << 16 | node index
        # position (node index, stream, seq) -> one integer (memory: one dict entry per outbox row):
        # fingerprint of (attestation id, participant, body hash) << 64 | candidate, where candidate is
        # received_at_us << 1 | matches of the earliest INGRESS seen there (0: none yet). Like
        # execution_attestation_v1, the earliest recorded record at a position is the one that counts.
        self.positions: dict[int, int] = {}
        self.outbox_rows = 0

    def node(self, node_id: str) -> int:
        found = self.nodes.get(node_id)
        if found is None:
            found = self.nodes[node_id] = len(self.nodes)
            if found >= 1 << 16:
                raise ConfigError("more than 65536 nodes in one export")
        return found

    def in_window_us(self, at_us: int) -> bool:
        if self.by_seq:
            return True
        return (self.since_us is None or at_us >= self.since_us) and (self.until_us is None or at_us < self.until_us)

    @staticmethod
    def position(node: int, stream_id: int, seq: int) -> int:
        return (node << 80) | (stream_id << 64) | seq

    @staticmethod
    def fingerprint(attestation_id: int, participant: str, body_hash: bytes) -> int:
        """A 64-bit digest of what an outbox row must share with its INGRESS
        (Python's keyed SipHash of the tuple: stable within this process, not
        predictable by whoever made the export)."""
        return hash((attestation_id, participant, body_hash))

    def load_outbox(self, path: Path) -> None:
        decoder = msgspec.json.Decoder(_OutboxKeys)  # the first pass needs only these fields
        for number, raw in _read_lines(path, self.report):
            try:
                row = decoder.decode(raw)
            except msgspec.DecodeError as exc:
                self.report.fail(f"{exports.OUTBOX} line {number}: {exc}")
                continue
            self.outbox_rows += 1
            node = self.node(row.ingress_node_id)
            self.executed.add(row.attestation_id << 16 | node)
            try:
                body_hash = bytes.fromhex(row.ingress_body_sha256 or "")
            except ValueError:
                self.report.fail(f"outbox row {row.id}: ingress_body_sha256 is not hex")
                continue
            self.positions[self.position(node, row.ingress_stream_id, row.ingress_seq)] = self.fingerprint(
                row.attestation_id, row.participant_id, body_hash) << 64

    def ingress_at(self, node: int, stream_id: int, seq: int, body: attestation.IngressBody, aid: int) -> None:
        """An INGRESS at a position an outbox row points to: does it match the row?"""
        key = self.position(node, stream_id, seq)
        value = self.positions.get(key)
        if value is None:
            return
        wanted, earlier = value >> 64, value & _CANDIDATE
        fingerprint = self.fingerprint
        matches = wanted == fingerprint(aid, body.participant_id, body.body_sha256) or \
            wanted == fingerprint(aid, body.participant_id, b"")
        if earlier == 0 or body.received_at_us < earlier >> 1:
            self.positions[key] = wanted << 64 | body.received_at_us << 1 | matches

    def finish(self, outbox: Path, events: Path) -> None:
        """Name the outbox rows without their INGRESS; check the events against the rows."""
        decoder = msgspec.json.Decoder(exports.OutboxLine)
        event_decoder = msgspec.json.Decoder(exports.EventLine)
        event_lines = _read_lines(events, self.report)
        pending: exports.EventLine | None = None
        previous_id = ""
        rows = 0

        def next_event() -> exports.EventLine | None:
            for number, raw in event_lines:
                try:
                    return event_decoder.decode(raw)
                except msgspec.DecodeError as exc:
                    self.report.fail(f"{exports.EVENTS} line {number}: {exc}")
            return None

        pending = next_event()
        for number, raw in _read_lines(outbox, self.report):
            try:
                row = decoder.decode(raw)
            except msgspec.DecodeError:
                continue  # named by load_outbox
            rows += 1
            if row.id <= previous_id:
                self.report.fail(f"{exports.OUTBOX} line {number}: outbox row {row.id} is out of order or repeated")
            previous_id = row.id
            self._attested(row)
            while pending is not None and pending.outbox_id < row.id:
                self.report.fail(f"event {pending.event_id}: refers to outbox row {pending.outbox_id}, which is not "
                                 "in the export")
                pending = next_event()
            replay: list[exports.EventLine] = []
            while pending is not None and pending.outbox_id == row.id:
                replay.append(pending)
                pending = next_event()
            self._replay(row, replay)
        while pending is not None:
            self.report.fail(f"event {pending.event_id}: refers to outbox row {pending.outbox_id}, which is not in "
                             "the export")
            pending = next_event()
        self.report.facts.update(outbox_rows=rows)

    def _attested(self, row: exports.OutboxLine) -> None:
        node = self.nodes.get(row.ingress_node_id, -1)
        key = self.position(node, row.ingress_stream_id, row.ingress_seq) if node >= 0 else -1
        if self.positions.get(key, 0) & 1:
            return
        where = f"{row.ingress_node_id}/{row.ingress_stream_id} seq {row.ingress_seq}"
        self.report.fail(f"outbox row {row.id}: no exported INGRESS at {where} with attestation id "
                         f"{row.attestation_id}, participant {row.participant_id} and its body hash")
        created = exports.parse_time(row.created_at)
        created_us = exports.to_us(created)
        if created_us is not None and self.in_window_us(created_us) and not self.by_seq:
            self.report.tally(row.participant_id).unattested += 1
            self.report.unattested.append({"outbox_id": row.id, "participant_id": row.participant_id,
                                           "attestation_id": str(row.attestation_id), "position": where})

    def _replay(self, row: exports.OutboxLine, events: list[exports.EventLine]) -> None:
        if not events:
            self.report.fail(f"outbox row {row.id}: has no events (its insert is always one)")
            return
        status: str | None = None
        last = 0
        for event in events:
            if event.event_id <= last or event.old_status != status:
                self.report.fail(f"event {event.event_id} of outbox row {row.id}: {event.old_status} -> "
                                 f"{event.new_status} does not follow {status} (removed, added or reordered)")
                return
            status, last = event.new_status, event.event_id
        if status != row.status:
            self.report.fail(f"outbox row {row.id}: its status {row.status} is not where its events end ({status})")


class _StreamCheck:
    """One stream epoch: records a..b, chained, folded into the tree."""

    def __init__(self, stream: exports.StreamLine, gap: _Gap, report: ExportReport) -> None:
        self.stream = stream
        self.gap = gap
        self.report = report
        self.label = _label(stream)
        self.size = 0
        self.root: bytes | None = None

    def run(self, path: Path) -> None:
        s = self.stream
        try:
            hashes = [bytes.fromhex(h) for h in s.frontier]
            frontier = merkle.Frontier(s.first_seq - 1, hashes)
            prev = bytes.fromhex(s.prev_chain_hash) if s.prev_chain_hash else None
        except (ValueError, merkle.ProofError) as exc:
            self.report.fail(f"stream {self.label}: frontier or chain hash before seq {s.first_seq}: {exc}")
            return
        if s.first_seq < 1 or s.last_seq < s.first_seq or s.checkpoint_size < s.last_seq:
            self.report.fail(f"stream {self.label}: range {s.first_seq}..{s.last_seq} under a checkpoint of size "
                             f"{s.checkpoint_size} is not a range")
            return
        failed = self._fold(path, frontier, prev)
        if failed:
            return
        if frontier.size != s.last_seq:
            self.report.fail(f"stream {self.label}: the records end at seq {frontier.size}, the export declares "
                             f"{s.last_seq} (tail cut)")
            return
        self.size, self.root = frontier.size, frontier.root()

    def _fold(self, path: Path, frontier: merkle.Frontier, prev: bytes | None) -> bool:
        """Fold every record into the tree; True when a record is out of place (named)."""
        s, gap, report = self.stream, self.gap, self.report
        node = gap.node(s.node_id)
        stream_id = s.stream_id
        waiting: dict[int, tuple[str, int]] = {}  # attestation id -> (participant, seq) awaiting its OUTCOME
        hashes, size = frontier.hashes, frontier.size
        executed, tally, tallies = gap.executed, report.tally, report.tallies
        positions, base = gap.positions, node << 80 | stream_id << 64
        low = -1 if gap.by_seq or gap.since_us is None else gap.since_us
        high = 1 << 64 if gap.by_seq or gap.until_us is None else gap.until_us
        unpack = HEADER.unpack_from
        fromhex = binascii.unhexlify
        chain_checked = prev is not None
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError:
            report.fail(f"stream {self.label}: records file {path.name} is missing (removed)")
            return True
        with handle:
            first = size
            for raw in handle:
                expected = size + 1
                number = expected - first  # the line number, while every line so far was in place
                try:
                    chain = fromhex(raw[:64])
                    canonical = fromhex(raw[65:].rstrip(b"\n"))
                    if raw[64] != 32:
                        raise ValueError("no space after the chain hash")
                    body_len, seq, aid, kind, flags, reserved = unpack(canonical)
                except (ValueError, IndexError, binascii.Error, struct.error):
                    report.fail(f"stream {self.label}: {path.name} line {number} (seq {expected}) is not "
                                "`<chain hex> <canonical hex>`")
                    return True
                if seq != expected:
                    report.fail(f"stream {self.label}: {path.name} line {number} holds seq {seq} where seq "
                                f"{expected} was expected (removed, inserted or reordered)")
                    return True
                if body_len != len(canonical) - 28 or flags or reserved or kind not in RECORD_TYPES \
                        or (kind == 1) != (seq == 1):
                    report.fail(f"stream {self.label}: seq {seq} is not a record's canonical bytes")
                    return True
                if chain_checked:
                    if _sha256(prev + canonical).digest() != chain:  # type: ignore[operator]
                        report.fail(f"stream {self.label}: seq {seq} does not continue the hash chain (altered)")
                        chain_checked = False
                    prev = chain
                leaf = _sha256(b"\x00" + canonical).digest()
                h, level = leaf, 0
                while (size >> level) & 1:
                    h = _sha256(b"\x01" + hashes.pop() + h).digest()
                    level += 1
                hashes.append(h)
                size = expected
                if kind == 2:
                    try:
                        body = _INGRESS.decode(canonical[28:])
                    except msgspec.DecodeError:
                        report.fail(f"stream {self.label}: seq {seq}: INGRESS body does not decode")
                        continue
                    if base | seq in positions:
                        gap.ingress_at(node, stream_id, seq, body, aid)
                    if body.executes and low <= body.received_at_us < high:
                        participant = body.participant_id or UNAUTHENTICATED
                        counts = tallies.get(participant) or tally(participant)
                        counts.ingress_count += 1
                        if (aid << 16 | node) in executed:
                            counts.executions += 1
                        else:
                            waiting[aid] = (participant, seq)
                elif kind == 3 and aid in waiting:
                    participant, ingress_seq = waiting.pop(aid)
                    try:
                        disposition = _OUTCOME.decode(canonical[28:]).disposition
                    except msgspec.DecodeError:
                        disposition = ""
                        report.fail(f"stream {self.label}: seq {seq}: OUTCOME body does not decode")
                    if disposition in HANDLED:
                        tally(participant).handled += 1
                    else:
                        self._ghost(participant, ingress_seq, aid, disposition)
                elif kind == 1:
                    self._genesis(canonical[28:])
        frontier.size = size
        for aid, (participant, ingress_seq) in waiting.items():
            self._ghost(participant, ingress_seq, aid, None)
        return False

    def _ghost(self, participant: str, seq: int, aid: int, disposition: str | None) -> None:
        self.report.tally(participant).gap += 1
        self.report.ghosts.append({"participant_id": participant, "node_id": self.stream.node_id,
                                   "stream_id": self.stream.stream_id, "epoch": self.stream.epoch, "seq": seq,
                                   "attestation_id": str(aid), "outcome": disposition})

    def _genesis(self, body: bytes) -> None:
        s = self.stream
        node = s.node_id.encode()
        if body != bytes.fromhex(s.epoch) + struct.pack("<HB", s.stream_id, len(node)) + node:
            self.report.fail(f"stream {self.label}: its GENESIS (seq 1) names another epoch, stream or node")

    def prove(self, cp: exports.CheckpointLine, policy: Policy) -> None:
        """The folded root against the witnessed checkpoint of size n (RFC 9162 consistency b -> n)."""
        s = self.stream
        signed = (cp.note + "".join(cp.cosignatures)).encode()
        try:
            checked, cosigners = policy.verify(signed)
        except PolicyError as exc:
            self.report.fail(f"stream {self.label}: checkpoint of size {cp.tree_size}: {exc}")
            return
        if not checked.origin.endswith(f"/{s.node_id}/{s.stream_id}/{s.epoch}"):
            self.report.fail(f"stream {self.label}: the checkpoint's origin {checked.origin} is another log")
            return
        if checked.size != s.checkpoint_size or cp.tree_size != checked.size:
            self.report.fail(f"stream {self.label}: the checkpoint has size {checked.size}, the export declares "
                             f"{s.checkpoint_size}")
            return
        if self.root is None:
            return  # the records already failed, and were named
        try:
            if self.size == checked.size:
                if self.root != checked.root:
                    raise merkle.ProofError("the root differs")
            else:
                proof = [bytes.fromhex(h) for h in s.consistency]
                merkle.verify_consistency(self.size, checked.size, proof, self.root, checked.root)
        except (ValueError, merkle.ProofError) as exc:
            self.report.fail(f"stream {self.label}: records {s.first_seq}..{s.last_seq} with the frontier do not "
                             f"reproduce the witnessed checkpoint of size {checked.size} (altered, removed, inserted, "
                             f"reordered or rewritten): {exc}")
            return
        self.report.facts.setdefault("checkpoints", []).append(
            {"origin": checked.origin, "tree_size": checked.size, "root": checked.root.hex(),
             "cosigned_by": sorted(cosigners)})


def _anchor(signed: bytes, policy: Policy, streams: list[exports.StreamLine], report: ExportReport) -> None:
    """An examiner's checkpoint must be accounted for: the export holds its
    log (origin) and proves a tree at least as large, cosigned by the same
    witness quorum (which cosigns only trees consistent with every one it
    cosigned before); of the same size, the same root. A stream epoch left
    out of the export (an epoch restarted and the old one hidden), or cut
    below what the witness saw, fails here."""
    try:
        held, _ = policy.verify(signed)
    except PolicyError as exc:
        report.fail(f"anchor checkpoint: {exc}")
        return
    proven = report.facts.get("checkpoints", [])
    same = [c for c in proven if c["origin"] == held.origin]
    label = f"anchor checkpoint {held.origin} size {held.size}"
    if not same:
        listed = any(held.origin.endswith(f"/{s.node_id}/{s.stream_id}/{s.epoch}") for s in streams)
        report.fail(f"{label}: its log is not proven by the export ({'it failed' if listed else 'not in the export'})")
        return
    size = max(c["tree_size"] for c in same)
    if size < held.size:
        report.fail(f"{label}: the export proves only {size} records of it (cut)")
    elif size == held.size and not any(c["root"] == held.root.hex() for c in same):
        report.fail(f"{label}: the export's checkpoint of that size has another root (forked)")
