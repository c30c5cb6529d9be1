"""`symphony export` and `symphony verify export` on a live record.

Goal: an export of a time window, checked offline with files and public keys
only, gives exactly the attestation gap `symphony audit gap` gives on the live
database for the same window, names every ghost, and fails, naming what, when
any item of the export is removed, added or altered (records, outbox rows,
events, checkpoints, cosignatures, the manifest), including the tamper matrix
of issue 13 applied to an export. Method: tests/verify/export_scenario.py
builds a real record once per module (journals shipped by `symphony forwarder`,
cosigned by `symphony witness`, outbox rows and their events in PostgreSQL);
the real CLI exports it; each tamper case copies the export, changes it as an
insider holding the export key would (re-signing the manifest unless the case
is about the manifest) and runs the real `symphony verify export`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from symphony import exports
from symphony.embedded import EmbeddedState
from symphony.tlog import note
from tests import independent_verifier as outsider
from tests.conftest import REPO_ROOT, _dsn_for
from tests.verify.export_scenario import Scenario, build

NODE = "node-p"


def symphony(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "symphony", *argv], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT)


@dataclass
class Built:
    scenario: Scenario
    root: Path
    export: Path
    policy: Path
    signer: note.Signer
    vkey: str
    summary: dict[str, object]

    def outsider(self, directory: Path) -> outsider.ExportCheck:
        """The outsider's verifier (docs alone, no Symphony import) on the same files and keys."""
        return outsider.check_export(directory, self.vkey, self.scenario.key.vkey,
                                     [self.scenario.witness.verifier.vkey()], 1)

    def verify(self, directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return symphony("verify", "export", str(directory), "--policy", str(self.policy), "--export-key", self.vkey,
                        "--json", *extra)


@pytest.fixture(scope="module")
async def built(pg_state: EmbeddedState, template_database: str,
                tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("export")
    name = "t_export_verify"
    admin = await asyncpg.connect(pg_state.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await admin.close()
    scenario = await build(root, _dsn_for(pg_state, name))
    key = Ed25519PrivateKey.generate()
    pem = root / "export-signing.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    out = root / "export"
    done = symphony("export", "--database-url", scenario.database_url, "--out", str(out),
                    "--from", scenario.since.isoformat(), "--to", scenario.until.isoformat(), "--signing-key", str(pem))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""  # progress only on a terminal
    summary = json.loads(done.stdout)
    signer = note.Signer(exports.DEFAULT_KEY_NAME, key)
    assert summary["signer"] == signer.verifier.vkey()
    return Built(scenario, root, out, scenario.policy(root / "policy"), signer, str(summary["signer"]), summary)


def _gap_rows(rows: list[dict[str, object]]) -> dict[str, tuple[object, ...]]:
    return {str(r["participant_id"]): tuple(r[k] for k in ("ingress_count", "executions", "handled", "gap",
                                                           "unattested")) for r in rows}


def test_export_verifies_offline_and_equals_the_audit_gap(built: Built) -> None:
    """The honest export verifies (every check ran: three stream epochs proven
    against cosigned checkpoints, outbox rows and events replayed), and its gap
    per participant equals `symphony audit gap` for the same window; every
    ghost is named, the same ones the scenario made."""
    scenario = built.scenario
    audit = symphony("audit", "gap", "--database-url", scenario.database_url, "--since", scenario.since.isoformat(),
                     "--until", scenario.until.isoformat(), "--json")
    assert audit.returncode == 1, audit.stderr  # the window has ghosts: both must say so
    expected = _gap_rows(json.loads(audit.stdout)["participants"])
    result = built.verify(built.export)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["findings"] == [], report["findings"]
    assert report["streams"] == 3 and len(report["checkpoints"]) == 3
    assert all(c["cosigned_by"] == ["w1"] for c in report["checkpoints"])
    assert 0 < report["outbox_rows"] < len(scenario.outbox_ids)  # the window's, not all
    got = _gap_rows(report["participants"])
    assert got == expected
    independent = built.outsider(built.export)
    assert independent.problems == [] and not independent.ok
    assert independent.gap == got
    assert independent.ghosts == {int(g["attestation_id"]) for g in report["ghosts"]}
    assert {"bank-a", "bank-b", "(unauthenticated)"} <= set(got)
    assert all(sum(row[i] for row in got.values()) > 0 for i in range(4))  # ingress, executed, handled, gap
    in_window = [r for r in scenario.requests if r.executes and
                 exports.to_us(scenario.since) <= r.at_us < exports.to_us(scenario.until)]  # type: ignore[operator]
    ghosts = {r.attestation_id for r in in_window if r.kind.startswith("ghost")}
    assert {int(g["attestation_id"]) for g in report["ghosts"]} == ghosts
    # The export reached past the window: OUTCOMEs after it, INGRESS records before it.
    streams = [json.loads(line) for line in (built.export / exports.STREAMS).read_text().splitlines()]
    assert any(s["ended"] is not None for s in streams)  # the restarted stream's old epoch
    assert any(s["first_seq"] > 1 and s["frontier"] for s in streams)
    assert any(s["consistency"] for s in streams)
    late = [r for r in in_window if r.kind == "replayed" and r.at_us + 1500 >= exports.to_us(scenario.until)]  # type: ignore[operator]
    assert late and not {r.attestation_id for r in late} & ghosts  # their OUTCOMEs, after the window, were exported


def test_a_clean_window_exits_zero_and_a_seq_range_verifies(built: Built) -> None:
    """A window holding only executed and handled requests verifies with exit
    0; a seq range of one stream epoch exports and verifies too."""
    scenario = built.scenario
    first = min(r.at_us for r in scenario.requests)  # request 0 of stream 0
    clean = built.root / "clean"
    since_iso, until_iso = _at(first).isoformat(), _at(first + 3000).isoformat()  # requests 0, 1, 2: executed
    done = symphony("export", "--database-url", scenario.database_url, "--out", str(clean), "--from", since_iso,
                    "--to", until_iso, "--signing-key", str(built.root / "export-signing.pem"))
    assert done.returncode == 0, done.stderr
    result = built.verify(clean)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert sum(p["executions"] for p in report["participants"]) == 3
    independent = built.outsider(clean)
    assert independent.ok and independent.gap == _gap_rows(report["participants"])
    ranged = built.root / "ranged"
    done = symphony("export", "--database-url", scenario.database_url, "--out", str(ranged), "--node", NODE,
                    "--stream", "0", "--from-seq", "40", "--to-seq", "90",
                    "--signing-key", str(built.root / "export-signing.pem"))
    assert done.returncode == 0, done.stderr
    result = built.verify(ranged)
    report = json.loads(result.stdout)
    assert report["findings"] == [] and report["records"] == 51, result.stdout
    assert report["selection"].startswith(f"seq {NODE} 0 ")


def _at(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=us)


# ---------------------------------------------------------------------------------------------------- tampering


def resign(directory: Path, signer: note.Signer) -> None:
    """What an insider holding the export key does after changing files: a new
    manifest over the files as they are now."""
    text, _ = note.split((directory / exports.MANIFEST).read_bytes())
    old = exports.Manifest.parse(text)
    entries = []
    for path in sorted(directory.iterdir()):
        if path.name == exports.MANIFEST:
            continue
        data = path.read_bytes()
        entries.append(exports.FileEntry(path.name, len(data), hashlib.sha256(data).hexdigest(), data.count(b"\n")))
    manifest = exports.Manifest(old.selection, old.created_at, entries)
    (directory / exports.MANIFEST).write_text(note.sign(manifest.text(), signer))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _edit(path: Path, change: Callable[[list[str]], list[str]]) -> None:
    path.write_text("".join(change(_lines(path))))


def _streams(directory: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in _lines(directory / exports.STREAMS)]


def _write_streams(directory: Path, streams: list[dict[str, object]]) -> None:
    (directory / exports.STREAMS).write_text("".join(json.dumps(s) + "\n" for s in streams))


def _record(line: str) -> tuple[bytes, bytes]:
    chain, canonical = line.split()
    return bytes.fromhex(chain), bytes.fromhex(canonical)


def _rechain(lines: list[str], prev: bytes, canonicals: list[bytes]) -> list[str]:
    out = []
    for canonical in canonicals:
        prev = hashlib.sha256(prev + canonical).digest()
        out.append(f"{prev.hex()} {canonical.hex()}\n")
    return out


def _renumber(canonical: bytes, seq: int) -> bytes:
    return canonical[:4] + struct.pack("<Q", seq) + canonical[12:]


def _stream0_ingress_line(directory: Path, after: int = 100) -> int:
    """Index of an INGRESS line of records-0.txt at or after `after`."""
    lines = _lines(directory / "records-0.txt")
    for index in range(after, len(lines)):
        _, canonical = _record(lines[index])
        if struct.unpack_from("<H", canonical, 20)[0] == 2:
            return index
    raise AssertionError("no INGRESS line")


def flip_byte(d: Path) -> None:
    i = _stream0_ingress_line(d)

    def change(lines: list[str]) -> list[str]:
        chain, canonical = lines[i].split()
        at = 64 + 2 * 40  # a hex digit inside the body
        lines[i] = f"{chain} {canonical[:at]}{'0' if canonical[at] != '0' else '1'}{canonical[at + 1:]}\n"
        return lines
    _edit(d / "records-0.txt", change)


def record_deleted(d: Path) -> None:
    i = _stream0_ingress_line(d)
    _edit(d / "records-0.txt", lambda lines: lines[:i] + lines[i + 1:])


def tail_cut(d: Path) -> None:
    _edit(d / "records-0.txt", lambda lines: lines[:-5])


def tail_cut_and_declared(d: Path) -> None:
    tail_cut(d)
    streams = _streams(d)
    streams[0]["last_seq"] = int(streams[0]["last_seq"]) - 5  # type: ignore[call-overload]
    _write_streams(d, streams)


def first_records_removed(d: Path) -> None:
    _edit(d / "records-0.txt", lambda lines: lines[3:])


def _rewrite(d: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    """Records of stream 0 changed, renumbered and re-chained: every hash recomputed."""
    streams = _streams(d)
    lines = _lines(d / "records-0.txt")
    canonicals = change([_record(line)[1] for line in lines])
    first = int(streams[0]["first_seq"])  # type: ignore[call-overload]
    canonicals = [_renumber(c, first + n) for n, c in enumerate(canonicals)]
    (d / "records-0.txt").write_text("".join(_rechain(lines, bytes.fromhex(str(streams[0]["prev_chain_hash"])),
                                                      canonicals)))
    streams[0]["last_seq"] = first + len(canonicals) - 1
    _write_streams(d, streams)


def rewritten(d: Path) -> None:
    def change(canonicals: list[bytes]) -> list[bytes]:
        i = _stream0_ingress_line(d)
        c = canonicals[i]
        canonicals[i] = c[:-1] + bytes([c[-1] ^ 1])  # the last byte of the verdict string
        return canonicals
    _rewrite(d, change)


def forged_row_inserted(d: Path) -> None:
    def change(canonicals: list[bytes]) -> list[bytes]:
        i = _stream0_ingress_line(d)
        return canonicals[:i] + [canonicals[i]] + canonicals[i:]
    _rewrite(d, change)


def rows_swapped(d: Path) -> None:
    i = _stream0_ingress_line(d)

    def change(lines: list[str]) -> list[str]:
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
        return lines
    _edit(d / "records-0.txt", change)


def rows_swapped_and_renumbered(d: Path) -> None:
    def change(canonicals: list[bytes]) -> list[bytes]:
        i = _stream0_ingress_line(d)
        canonicals[i], canonicals[i + 1] = canonicals[i + 1], canonicals[i]
        return canonicals
    _rewrite(d, change)


def _drop_stream(d: Path, index: int) -> None:
    """Remove stream epoch `index` entirely and renumber the others."""
    streams = [s for s in _streams(d) if s["stream"] != index]
    checkpoints = [json.loads(line) for line in _lines(d / exports.CHECKPOINTS)]
    checkpoints = [c for c in checkpoints if c["stream"] != index]
    (d / exports.records_file(index)).unlink()
    for new, s in enumerate(streams):
        old = int(s["stream"])  # type: ignore[call-overload]
        if old != new:
            (d / exports.records_file(old)).rename(d / exports.records_file(new))
            for c in checkpoints:
                if c["stream"] == old:
                    c["stream"] = new
            s["stream"] = new
    _write_streams(d, streams)
    (d / exports.CHECKPOINTS).write_text("".join(json.dumps(c) + "\n" for c in checkpoints))


def _old_epoch_index(d: Path) -> int:
    return next(int(s["stream"]) for s in _streams(d) if s["ended"] is not None)  # type: ignore[call-overload]


def epoch_restarted(d: Path) -> None:
    """The stream restarted and its old epoch hidden from the export."""
    _drop_stream(d, _old_epoch_index(d))


def _outbox(d: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in _lines(d / exports.OUTBOX)]


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def outbox_row_removed(d: Path) -> None:
    rows = _outbox(d)
    _write_jsonl(d / exports.OUTBOX, rows[:5] + rows[6:])


def outbox_row_altered(d: Path) -> None:
    rows = _outbox(d)
    rows[5]["attestation_id"] = int(rows[5]["attestation_id"]) + 1  # type: ignore[call-overload]
    _write_jsonl(d / exports.OUTBOX, rows)


def outbox_row_added(d: Path) -> None:
    rows = _outbox(d)
    forged = dict(rows[5], id="ffffffff-ffff-7fff-bfff-ffffffffffff", ingress_seq=int(rows[5]["ingress_seq"]) + 1)  # type: ignore[call-overload]
    _write_jsonl(d / exports.OUTBOX, rows + [forged])


def _events(d: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in _lines(d / exports.EVENTS)]


def event_removed(d: Path) -> None:
    events = _events(d)
    i = next(n for n, e in enumerate(events) if e["new_status"] == "IN_FLIGHT"
             and events[n + 1]["outbox_id"] == e["outbox_id"])  # one in the middle of a row's events
    _write_jsonl(d / exports.EVENTS, events[:i] + events[i + 1:])


def event_altered(d: Path) -> None:
    events = _events(d)
    i = next(n for n, e in enumerate(events) if e["new_status"] == "SUCCESS")
    events[i]["new_status"] = "FAILED"
    _write_jsonl(d / exports.EVENTS, events)


def event_added(d: Path) -> None:
    events = _events(d)
    forged = dict(events[-1], event_id=10**9, outbox_id="ffffffff-ffff-7fff-bfff-ffffffffffff")
    _write_jsonl(d / exports.EVENTS, events + [forged])


def _checkpoints(d: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in _lines(d / exports.CHECKPOINTS)]


def checkpoint_removed(d: Path) -> None:
    _write_jsonl(d / exports.CHECKPOINTS, _checkpoints(d)[1:])


def checkpoint_altered(d: Path) -> None:
    cps = _checkpoints(d)
    text = str(cps[0]["note"])
    origin, size, rest = text.split("\n", 2)
    cps[0]["note"] = f"{origin}\n{int(size) + 1}\n{rest}"
    _write_jsonl(d / exports.CHECKPOINTS, cps)


def checkpoint_added(d: Path) -> None:
    cps = _checkpoints(d)
    _write_jsonl(d / exports.CHECKPOINTS, cps + [dict(cps[0], stream=len(cps) + 5)])


def cosignature_removed(d: Path) -> None:
    cps = _checkpoints(d)
    cps[0]["cosignatures"] = []
    _write_jsonl(d / exports.CHECKPOINTS, cps)


def cosignature_altered(d: Path) -> None:
    cps = _checkpoints(d)
    line = str(cps[0]["cosignatures"][0])  # type: ignore[index]
    name, blob = line.rstrip("\n").rsplit(" ", 1)
    blob = blob[:-6] + ("AAAA" if blob[-6:-2] != "AAAA" else "BBBB") + blob[-2:]
    cps[0]["cosignatures"] = [f"{name} {blob}\n"]
    _write_jsonl(d / exports.CHECKPOINTS, cps)


def cosignature_added(d: Path) -> None:
    """A second line claiming the same witness, with a signature of another checkpoint."""
    cps = _checkpoints(d)
    cps[0]["cosignatures"] = list(cps[0]["cosignatures"]) + list(cps[1]["cosignatures"])  # type: ignore[call-overload]
    _write_jsonl(d / exports.CHECKPOINTS, cps)


def file_added(d: Path) -> None:
    (d / "records-99.txt").write_text("")


def records_file_removed(d: Path) -> None:
    (d / "records-1.txt").unlink()


def manifest_altered(d: Path) -> None:
    data = bytearray((d / exports.MANIFEST).read_bytes())
    at = data.index(b"file ") + 5
    data[at] = data[at] ^ 0x01
    (d / exports.MANIFEST).write_bytes(bytes(data))


def manifest_removed(d: Path) -> None:
    (d / exports.MANIFEST).unlink()


# (case, mutate, re-signed by the insider, what the verifier must say)
CASES: list[tuple[str, Callable[[Path], None], bool, str]] = [
    ("flip_byte_unsigned", flip_byte, False, "records-0.txt: its SHA-256 or size is not the manifest's"),
    ("flip_byte", flip_byte, True, "does not continue the hash chain"),
    ("record_deleted", record_deleted, True, "was expected (removed, inserted or reordered)"),
    ("tail_cut", tail_cut, True, "(tail cut)"),
    ("tail_cut_and_declared", tail_cut_and_declared, True, "do not reproduce the witnessed checkpoint"),
    ("first_records_removed", first_records_removed, True, "was expected (removed, inserted or reordered)"),
    ("rewritten", rewritten, True, "do not reproduce the witnessed checkpoint"),
    ("forged_row_inserted", forged_row_inserted, True, "do not reproduce the witnessed checkpoint"),
    ("rows_swapped", rows_swapped, True, "was expected (removed, inserted or reordered)"),
    ("rows_swapped_and_renumbered", rows_swapped_and_renumbered, True, "do not reproduce the witnessed checkpoint"),
    ("outbox_row_removed", outbox_row_removed, True, "which is not in the export"),
    ("outbox_row_altered", outbox_row_altered, True, "no exported INGRESS at"),
    ("outbox_row_added", outbox_row_added, True, "outbox row ffffffff-ffff-7fff-bfff-ffffffffffff"),
    ("outbox_unsigned", outbox_row_removed, False, "outbox.jsonl: its SHA-256 or size is not the manifest's"),
    ("event_removed", event_removed, True, "does not follow"),
    ("event_altered", event_altered, True, "is not where its events end"),
    ("event_added", event_added, True, "event 1000000000: refers to outbox row ffffffff"),
    ("checkpoint_removed", checkpoint_removed, True, "has no checkpoint for it"),
    ("checkpoint_altered", checkpoint_altered, True, "checkpoint of size"),
    ("checkpoint_added", checkpoint_added, True, "which the export does not have"),
    ("cosignature_removed", cosignature_removed, True, "quorum"),
    ("cosignature_altered", cosignature_altered, True, "checkpoint of size"),
    ("cosignature_added", cosignature_added, True, "checkpoint of size"),
    ("file_added", file_added, False, "records-99.txt: not in the manifest (added)"),
    ("records_file_removed", records_file_removed, True, "records file records-1.txt"),
    ("manifest_altered", manifest_altered, False, "manifest: its signature does not verify"),
    ("manifest_removed", manifest_removed, False, "manifest: cannot read it"),
]


@pytest.mark.parametrize("case,mutate,signed,expected", CASES, ids=[c[0] for c in CASES])
def test_each_change_to_an_export_is_named(built: Built, case: str, mutate: Callable[[Path], None], signed: bool,
                                           expected: str) -> None:
    """Copy the export, change one kind of item, re-sign the manifest as an
    insider with the export key would (unless the case is about the manifest
    or an unsigned change), and require `symphony verify export` to exit 1
    with a finding that names it."""
    copy = built.root / f"tampered-{case}"
    shutil.copytree(built.export, copy)
    mutate(copy)
    if signed:
        resign(copy, built.signer)
    honest = built.verify(built.export)
    assert json.loads(honest.stdout)["findings"] == []
    result = built.verify(copy)
    assert result.returncode == 1, result.stdout + result.stderr
    findings = json.loads(result.stdout)["findings"]
    assert any(expected in f for f in findings), findings
    independent = built.outsider(copy)
    assert not independent.ok and independent.problems, case  # the outsider fails it too


def test_an_epoch_restart_cannot_hide_the_old_epoch(built: Built) -> None:
    """The stream was wiped and restarted; an insider drops the old epoch from
    the export and re-signs it. On its own the rest still verifies (the export
    is a narrower one); with the old epoch's last witnessed checkpoint (which
    the examiner holds from the witness) the verifier names it, while the
    honest export accounts for it."""
    copy = built.root / "tampered-epoch"
    shutil.copytree(built.export, copy)
    index = _old_epoch_index(copy)
    old = _checkpoints(copy)[index]
    anchor = built.root / "old-epoch.checkpoint"
    anchor.write_text(str(old["note"]) + "".join(old["cosignatures"]))  # type: ignore[call-overload]
    epoch_restarted(copy)
    resign(copy, built.signer)
    honest = built.verify(built.export, "--anchor", str(anchor))
    assert json.loads(honest.stdout)["findings"] == [], honest.stdout
    result = built.verify(copy, "--anchor", str(anchor))
    assert result.returncode == 1
    findings = json.loads(result.stdout)["findings"]
    assert any("anchor checkpoint" in f and "not in the export" in f for f in findings), findings


def test_the_export_key_can_be_a_pem_public_key(built: Built) -> None:
    """The evidence key's public PEM (what `symphony up` writes) names the same signer."""
    pem = built.root / "export-signing.pub.pem"
    pem.write_bytes(built.signer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    result = symphony("verify", "export", str(built.export), "--policy", str(built.policy), "--export-key", str(pem),
                      "--json")
    assert json.loads(result.stdout)["findings"] == [], result.stdout + result.stderr


def test_a_manifest_signed_by_another_key_is_refused(built: Built) -> None:
    """An attacker without the export key re-signs with their own: refused."""
    copy = built.root / "foreign-key"
    shutil.copytree(built.export, copy)
    resign(copy, note.Signer(exports.DEFAULT_KEY_NAME, Ed25519PrivateKey.generate()))
    result = built.verify(copy)
    assert result.returncode == 1
    assert any("manifest: its signature does not verify" in f for f in json.loads(result.stdout)["findings"])


def test_usage_errors_exit_two(built: Built, tmp_path: Path) -> None:
    """No export key, a missing directory, a seq range without its stream: exit 2, one line, no traceback."""
    no_key = symphony("verify", "export", str(built.export), "--policy", str(built.policy))
    assert no_key.returncode == 2 and "--export-key" in no_key.stderr and "Traceback" not in no_key.stderr
    missing = symphony("verify", "export", str(tmp_path / "nothing"), "--policy", str(built.policy),
                       "--export-key", built.vkey)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    half = symphony("export", "--database-url", built.scenario.database_url, "--out", str(tmp_path / "x"),
                    "--node", NODE, "--from-seq", "1", "--to-seq", "2", "--signing-key",
                    str(built.root / "export-signing.pem"))
    assert half.returncode == 2 and "--stream" in half.stderr
