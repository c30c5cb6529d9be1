"""`symphony verify`: a journal copy, a proof and a checkpoint checked with files and public keys only.

Goal: with a witnessed checkpoint, every way of hiding or changing records in
a copy of a stream is caught and named, and a proof of one record verifies
offline, while forged or under-witnessed evidence does not. Method: a real
journal written by the Writer; the node key signs a checkpoint of its tree,
a witness key cosigns; a c2sp tlog-policy file names both; the real
`symphony verify` command runs as a subprocess on tampered copies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from journal import Reader, RecordType, Writer
from journal._format import list_segments
from symphony.tlog import checkpoint, merkle, note, origins, proof
from tests import independent_verifier

SEGMENT = 64 * 1024
NODE = "node-a"


class Evidence:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.stream = root / "journal" / NODE / "0"
        self.node_key = note.Signer(origins.log_name("symphony.example/test", NODE), Ed25519PrivateKey.generate())
        self.witness = checkpoint.Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
        with Writer(self.stream, NODE, 0, "none", segment_bytes=SEGMENT) as writer:
            for i in range(800):
                writer.append(RecordType.INGRESS if i % 2 else RecordType.OUTCOME, os.urandom(40 + i % 150), i + 1)
            size, root_hash = writer.tree_size, writer.tree_root()
            self.epoch = writer.epoch
        assert size is not None and root_hash is not None
        self.size = size
        cp = checkpoint.Checkpoint(origins.origin(self.node_key.name, 0, self.epoch), size, root_hash)
        self.cp_text = cp.text()
        self.signed = checkpoint.sign(cp, self.node_key) + self.witness.cosign(cp.text(), 1_700_000_000)
        (root / "checkpoint").write_text(self.signed)
        self.policy(quorum="w1")

    def policy(self, quorum: str, witness: note.Verifier | None = None) -> Path:
        path = self.root / "policy"
        path.write_text(f"log {self.node_key.verifier.vkey()}\n"
                        f"witness w1 {(witness or self.witness.verifier).vkey()}\n"
                        f"quorum {quorum}\n")
        return path

    def copy(self, name: str) -> Path:
        target = self.root / name
        shutil.copytree(self.stream, target)
        return target


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "symphony", "verify", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    return Evidence(tmp_path_factory.mktemp("evidence"))


def test_the_honest_copy_verifies(evidence: Evidence) -> None:
    result = verify("journal", str(evidence.copy("honest")), "--checkpoint", str(evidence.root / "checkpoint"),
                    "--policy", str(evidence.root / "policy"))
    assert result.returncode == 0, result.stderr
    assert f"records_checked: {evidence.size}" in result.stdout and "cosigned_by: ['w1']" in result.stdout


def _flip_byte_of_record(directory: Path, seq: int) -> None:
    """Change one body byte of record `seq` in place (the CRC then fails)."""
    record = next(r for r in Reader(directory).records(from_seq=seq))
    for first_seq, path in reversed(list_segments(directory)):
        if first_seq <= seq:
            data = bytearray(path.read_bytes())
            at = data.find(record.canonical)
            assert at > 0
            data[at + 28] ^= 0x01
            path.write_bytes(bytes(data))
            return


def _rewrite(evidence: Evidence, target: Path, monkeypatch: pytest.MonkeyPatch, change_seq: int) -> None:
    """An insider's rewrite: the same epoch, every record again but one changed,
    every chain hash and CRC recomputed by the real writer."""
    import journal._writer as writer_module

    records = list(Reader(evidence.stream).records(from_seq=2))
    real_urandom = os.urandom
    epochs = [evidence.epoch]  # the first 16 random bytes the writer draws are the new stream's epoch

    def forged_urandom(n: int) -> bytes:
        return epochs.pop() if n == 16 and epochs else real_urandom(n)

    monkeypatch.setattr(writer_module.os, "urandom", forged_urandom)
    with Writer(target, NODE, 0, "none", segment_bytes=SEGMENT) as writer:
        for record in records:
            body = record.body if record.seq != change_seq else b"forged " + record.body
            writer.append(record.type, body, record.attestation_id)


@pytest.mark.parametrize("attack", ["flip_byte", "tail_cut", "last_segment_deleted", "first_segments_deleted",
                                    "rewritten"])
def test_each_attack_on_a_copy_is_named(evidence: Evidence, attack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = evidence.copy(f"copy-{attack}")
    segments = list_segments(copy)
    assert len(segments) >= 3
    expected = {"flip_byte": "seq 300", "tail_cut": "tail cut", "last_segment_deleted": "tail cut",
                "first_segments_deleted": "deleted without a valid release record: first missing seq 1", "rewritten": "do not reproduce the witnessed root"}[attack]
    if attack == "flip_byte":
        _flip_byte_of_record(copy, 300)
    elif attack == "tail_cut":
        # Zero everything after the first record of the last segment: a clean, shorter stream.
        last_first_seq, last_path = segments[-1]
        data = bytearray(last_path.read_bytes())
        first = next(Reader(copy).records(from_seq=last_first_seq))
        end = data.find(first.canonical) + len(first.canonical)
        end = (end + 7) & ~7
        data[end:] = bytes(len(data) - end)
        last_path.write_bytes(bytes(data))
    elif attack == "last_segment_deleted":
        segments[-1][1].unlink()
    elif attack == "first_segments_deleted":
        segments[0][1].unlink()
        segments[1][1].unlink()
    else:
        shutil.rmtree(copy)
        _rewrite(evidence, copy, monkeypatch, change_seq=500)
    result = verify("journal", str(copy), "--checkpoint", str(evidence.root / "checkpoint"),
                    "--policy", str(evidence.root / "policy"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stderr, result.stderr


def _proof_for(evidence: Evidence, seq: int) -> bytes:
    tree = merkle.MemoryTree()
    canonical = b""
    for record in Reader(evidence.stream).records(from_seq=1):
        if record.seq > evidence.size:
            break
        tree.append(record.canonical)
        if record.seq == seq:
            canonical = record.canonical
    path = merkle.inclusion_proof(tree.read, seq - 1, evidence.size)
    return proof.ProofFile(seq - 1, path, evidence.signed.encode(), extra=canonical).text()


def test_a_proof_verifies_offline_and_forgeries_do_not(evidence: Evidence) -> None:
    good = evidence.root / "good.tlog-proof"
    good.write_bytes(_proof_for(evidence, 321))
    result = verify("proof", str(good), "--policy", str(evidence.root / "policy"))
    assert result.returncode == 0, result.stderr
    assert "'seq': 321" in result.stdout
    parsed = proof.ProofFile.parse(good.read_bytes())
    altered = bytearray(parsed.extra or b"")
    altered[-1] ^= 1
    cases = {
        "record altered": proof.ProofFile(parsed.index, parsed.path, parsed.checkpoint, bytes(altered)),
        "another index": proof.ProofFile(parsed.index + 1, parsed.path, parsed.checkpoint, parsed.extra),
        "checkpoint re-signed by an attacker": proof.ProofFile(
            parsed.index, parsed.path,
            checkpoint.sign(checkpoint.Checkpoint.parse(evidence.cp_text),
                            note.Signer(evidence.node_key.name, Ed25519PrivateKey.generate())).encode(),
            parsed.extra),
    }
    for name, case in cases.items():
        path = evidence.root / f"bad-{name.replace(' ', '-')}.tlog-proof"
        path.write_bytes(case.text())
        result = verify("proof", str(path), "--policy", str(evidence.root / "policy"))
        assert result.returncode == 1, name


def test_the_quorum_is_enforced(evidence: Evidence) -> None:
    """The witness's cosignature is required by the policy: another witness key is not enough."""
    other = checkpoint.Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    policy = evidence.policy(quorum="w1", witness=other.verifier)
    result = verify("checkpoint", str(evidence.root / "checkpoint"), "--policy", str(policy))
    assert result.returncode == 1 and "quorum" in result.stderr
    evidence.policy(quorum="w1")
    assert verify("checkpoint", str(evidence.root / "checkpoint"), "--policy", str(evidence.root / "policy")
                  ).returncode == 0


def _released_stream(tmp_path: Path) -> tuple[Path, note.Signer, checkpoint.Cosigner, merkle.MemoryTree, bytes]:
    """A stream of many small segments with its witnessed checkpoint and policy."""
    node_key = note.Signer(origins.log_name("symphony.example/test", NODE), Ed25519PrivateKey.generate())
    witness = checkpoint.Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    stream = tmp_path / "journal" / NODE / "0"
    tree = merkle.MemoryTree()
    with Writer(stream, NODE, 0, "none", segment_bytes=SEGMENT) as writer:
        for i in range(4000):
            writer.append(RecordType.INGRESS, os.urandom(60), i + 1)
        size, root, epoch = writer.tree_size, writer.tree_root(), writer.epoch
    for record in Reader(stream).records():
        tree.append(record.canonical)
    assert size is not None and root == tree.root()
    cp = checkpoint.Checkpoint(origins.origin(node_key.name, 0, epoch), size, root)
    (tmp_path / "checkpoint").write_text(checkpoint.sign(cp, node_key) + witness.cosign(cp.text(), 1_700_000_000))
    (tmp_path / "policy").write_text(f"log {node_key.verifier.vkey()}\nwitness w1 {witness.verifier.vkey()}\n"
                                     "quorum w1\n")
    return stream, node_key, witness, tree, epoch


def _release(stream: Path, node_key: note.Signer, witness: checkpoint.Cosigner | None, tree: merkle.MemoryTree,
             epoch: bytes, first: int, last: int, covering: int, read_from: Path | None = None) -> None:
    """Record a release of seqs first..last the way the forwarder does (F18):
    under a checkpoint of `covering` records, cosigned unless witness is None."""
    from journal import Release, append_release

    cp = checkpoint.Checkpoint(origins.origin(node_key.name, 0, epoch), covering, tree.root(covering))
    signed = checkpoint.sign(cp, node_key) + (witness.cosign(cp.text(), 1_700_000_000) if witness else "")
    record = next(Reader(read_from or stream).records(from_seq=last))
    append_release(stream, Release(node_id=NODE, stream_id=0, epoch=epoch, first_seq=first, last_seq=last,
                                   last_leaf_hash=merkle.leaf_hash(record.canonical), last_chain_hash=record.chain_hash,
                                   frontier=merkle.frontier_hashes(tree.read, last),
                                   inclusion_proof=merkle.inclusion_proof(tree.read, last - 1, covering),
                                   checkpoint=signed, released_at_unix_ns=1))


def test_a_copy_whose_first_segments_were_released_verifies_on_its_release_log(tmp_path: Path) -> None:
    """F15/F18: segments released with a release entry (witnessed checkpoint,
    frontier, inclusion proof of the last leaf) verify from that entry: the kept
    records fold from its frontier to every witnessed root. Released without an
    entry, or with one whose checkpoint the policy does not accept, the copy is
    named with the stream and its first missing seq."""
    from journal import release_segments

    stream, node_key, witness, tree, epoch = _released_stream(tmp_path)
    segments = [first for first, _ in list_segments(stream)]
    assert len(segments) > 6
    args = ("--checkpoint", str(tmp_path / "checkpoint"), "--policy", str(tmp_path / "policy"), "--json")

    # Two releases, each under a checkpoint past its range.
    _release(stream, node_key, witness, tree, epoch, 1, segments[2] - 1, segments[3] + 5)
    _release(stream, node_key, witness, tree, epoch, segments[2], segments[4] - 1, segments[4] - 1)
    recorded = tmp_path / "recorded-not-deleted"
    shutil.copytree(stream, recorded)  # a crash between the record and the deletion
    assert release_segments(stream, segments[4] - 1, 0.0)
    assert list_segments(stream)[0][0] == segments[4]
    log_vkey, witness_vkeys = node_key.verifier.vkey(), [witness.verifier.vkey()]

    def outsider(copy: Path) -> tuple[bool, int]:  # docs/verifying.md re-implemented, nothing of Symphony
        return independent_verifier.released_copy_ok(copy, (tmp_path / "checkpoint").read_bytes(), log_vkey,
                                                      witness_vkeys, 1)

    for copy in (stream, recorded):
        result = verify("journal", str(copy), *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert '"released_through_seq": %d' % (segments[4] - 1) in result.stdout
        assert outsider(copy) == (True, 0)
    # Half deleted (a crash in the middle of the deletion): still accounted for.
    half = tmp_path / "half"
    shutil.copytree(recorded, half)
    (half / f"{segments[0]:020d}.seg").unlink()
    assert verify("journal", str(half), *args).returncode == 0
    assert outsider(half) == (True, 0)

    # The head deleted without any release entry: named, with the first missing seq.
    bare = tmp_path / "bare"
    shutil.copytree(stream, bare)
    (bare / "RELEASES").unlink()
    result = verify("journal", str(bare), *args)
    assert result.returncode == 1
    assert f"stream {NODE}/0: seqs 1..{segments[4] - 1} were deleted without a valid release record: " \
           "first missing seq 1" in result.stdout
    assert outsider(bare) == (False, 1)
    # One more segment deleted beyond what the log records.
    beyond = tmp_path / "beyond"
    shutil.copytree(stream, beyond)
    (beyond / f"{segments[4]:020d}.seg").unlink()
    result = verify("journal", str(beyond), *args)
    assert result.returncode == 1 and f"first missing seq {segments[4]}" in result.stdout
    assert outsider(beyond) == (False, segments[4])

    # A forged release: the same ranges under a checkpoint no witness cosigned.
    forged = tmp_path / "forged"
    shutil.copytree(stream, forged)
    (forged / "RELEASES").unlink()
    _release(forged, node_key, None, tree, epoch, 1, segments[4] - 1, segments[4] - 1, read_from=recorded)
    result = verify("journal", str(forged), *args)
    assert result.returncode == 1
    assert "is not anchored: its checkpoint is not accepted" in result.stdout and "first missing seq 1" in result.stdout
    assert outsider(forged) == (False, 1)
    # A release entry whose frontier lies: the kept records do not fold to the witnessed root.
    lying = tmp_path / "lying"
    shutil.copytree(stream, lying)
    lines = (lying / "RELEASES").read_text().splitlines(keepends=True)
    import json

    entry = json.loads(lines[1])
    entry["frontier"][0] = "00" * 32
    (lying / "RELEASES").write_text(lines[0] + json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n")
    result = verify("journal", str(lying), *args)
    assert result.returncode == 1 and "do not reproduce the root" in result.stdout
    assert outsider(lying) == (False, 0)


def test_release_log_is_append_only_continuous_and_survives_a_torn_line(tmp_path: Path) -> None:
    """F18: entries must continue the log of their epoch; a torn last line (a
    crash mid-append) is ignored by readers and cut off by the next append; a
    complete line that is not an entry is an error, not silently skipped."""
    from journal import JournalError, read_releases

    stream, node_key, witness, tree, epoch = _released_stream(tmp_path)
    _release(stream, node_key, witness, tree, epoch, 1, 100, 200)
    with pytest.raises(JournalError, match="does not continue"):
        _release(stream, node_key, witness, tree, epoch, 102, 150, 200)
    with (stream / "RELEASES").open("ab") as log:
        log.write(b'{"checkpoint":"half')
    assert [r.last_seq for r in read_releases(stream).entries] == [100]
    assert read_releases(stream).torn_bytes == len(b'{"checkpoint":"half')
    _release(stream, node_key, witness, tree, epoch, 101, 150, 200)
    log = read_releases(stream)
    assert [(r.first_seq, r.last_seq) for r in log.entries] == [(1, 100), (101, 150)] and log.torn_bytes == 0
    (stream / "RELEASES").write_bytes((stream / "RELEASES").read_bytes() + b"not json\n")
    with pytest.raises(JournalError, match="line 3"):
        read_releases(stream)


def test_a_journalled_checkpoint_that_lies_is_named(tmp_path: Path) -> None:
    """F17: a CHECKPOINT record inside the copy must describe the tree of the
    records before it (size, frontier, and the root its note signs). One whose
    signed note claims another root is named by seq, even though the copy
    reproduces the witnessed root (the record itself is a valid leaf)."""
    node_key = note.Signer(origins.log_name("symphony.example/test", NODE), Ed25519PrivateKey.generate())
    witness = checkpoint.Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    stream = tmp_path / "journal" / NODE / "0"
    cut_seqs = []
    with Writer(stream, NODE, 0, "none", segment_bytes=SEGMENT) as writer:
        for lie in (False, True, False):
            for i in range(200):
                writer.append(RecordType.INGRESS, os.urandom(50), i + 1)

            def sign(size: int, root: bytes, lie: bool = lie) -> bytes:
                cp = checkpoint.Checkpoint(origins.origin(node_key.name, 0, writer.epoch), size,
                                           bytes(32) if lie else root)
                return checkpoint.sign(cp, node_key).encode()

            found = writer.checkpoint(sign)
            assert found is not None
            cut_seqs.append(found.seq)
        size, root, epoch = writer.tree_size, writer.tree_root(), writer.epoch
    assert size is not None and root is not None
    cp = checkpoint.Checkpoint(origins.origin(node_key.name, 0, epoch), size, root)
    (tmp_path / "checkpoint").write_text(checkpoint.sign(cp, node_key) + witness.cosign(cp.text(), 1_700_000_000))
    (tmp_path / "policy").write_text(f"log {node_key.verifier.vkey()}\nwitness w1 {witness.verifier.vkey()}\n"
                                     "quorum w1\n")
    result = verify("journal", str(stream), "--checkpoint", str(tmp_path / "checkpoint"),
                    "--policy", str(tmp_path / "policy"))
    assert result.returncode == 1
    assert f"the CHECKPOINT record at seq {cut_seqs[1]} does not describe the tree" in result.stderr
    assert f"seq {cut_seqs[0]} " not in result.stderr and f"seq {cut_seqs[2]} " not in result.stderr
    assert "do not reproduce" not in result.stderr


def test_a_writer_reads_only_the_tail_of_a_long_release_log(tmp_path: Path) -> None:
    """A release log grows by one entry per release for the life of the stream:
    appending and the forwarder's check read only its tail, whose first
    (partial) line is skipped, and still see the newest entries and a torn end."""
    from journal import read_releases

    stream, node_key, witness, tree, epoch = _released_stream(tmp_path)
    for first in range(1, 4000, 10):
        _release(stream, node_key, witness, tree, epoch, first, first + 9, 4001)
    size = (stream / "RELEASES").stat().st_size
    assert size > 600 * 1024  # longer than the tail a writer reads
    tail = read_releases(stream, tail_bytes=1)
    assert 0 < len(tail.entries) < 400 and tail.entries[-1].last_seq == 4000
    assert [r.first_seq for r in tail.entries] == list(range(tail.entries[0].first_seq, 4000, 10))
    assert len(read_releases(stream).entries) == 400
    with (stream / "RELEASES").open("ab") as log:
        log.write(b'{"half')
    assert read_releases(stream, tail_bytes=1).torn_bytes == 6
    _release(stream, node_key, witness, tree, epoch, 4001, 4001, 4001)
    assert read_releases(stream).entries[-1].first_seq == 4001 and read_releases(stream).torn_bytes == 0
