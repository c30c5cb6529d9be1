"""The NDJSON attestation mirror: every journal record once, in order, as Vector expects it.

Method: a real sidecar (mirror on, small files, a queue of one record so it
overflows under concurrent load) serves concurrent requests; the mirror files
are then compared line by line with the journal read back by journal.Reader:
the same seqs (gapless from 1, GENESIS included, none twice), types,
attestation ids, chain hashes and canonical bytes. File names, modes and the
directory Vector reads (k8s/config/vector.yaml) are checked, and a restart
continues the copy in new files without a hole or a repeat.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import aiohttp

from symphony import attestation_mirror as fmt
from tests.sidecar.conftest import Keys, Sidecar, Upstream, wait_until


MIRROR_SETTINGS = {"mirror_enabled": True, "mirror_file_bytes_max": 4096, "mirror_queue_records_max": 1}


def _mirror_dir(sidecar: Sidecar) -> Path:
    return sidecar.journal_root / "mirror"


def _mirrored(sidecar: Sidecar) -> list[tuple[str, fmt.ParsedLine]]:
    """(file name, line) of every complete line, files in name order."""
    out = []
    for path in sorted(_mirror_dir(sidecar).glob("*.ndjson")):
        for text in path.read_bytes().splitlines(keepends=True):
            if text.endswith(b"\n"):
                out.append((path.name, fmt.parse_line(text.rstrip(b"\n"))))
    return out


def _journal(sidecar: Sidecar) -> list[Any]:
    import journal

    return list(journal.Reader(sidecar.stream_dir(0)).records(from_seq=1))


def _assert_same(sidecar: Sidecar) -> int:
    records = _journal(sidecar)
    lines = [line for _, line in _mirrored(sidecar)]
    assert [line.seq for line in lines] == [record.seq for record in records], "every seq once, in order"
    for line, record in zip(lines, records):
        assert (line.node, line.stream) == (sidecar.node_id, 0)
        assert (line.record_type, line.attestation_id) == (int(record.type), record.attestation_id)
        assert line.chain_hash == record.chain_hash and line.canonical == record.canonical
    return len(records)


async def _send(sidecar: Sidecar, keys: Keys, http: aiohttp.ClientSession, count: int) -> None:
    token = keys.token("bank-a")

    async def one(index: int) -> None:
        async with http.post(f"{sidecar.url}/v1/payments", data=b'{"amount": 1}',
                             headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"m-{index}"}) as answer:
            assert answer.status == 201, await answer.text()

    await asyncio.gather(*(one(index) for index in range(count)))


def _caught_up(sidecar: Sidecar) -> bool:
    mirrored = _mirrored(sidecar)
    records = _journal(sidecar)
    return bool(mirrored) and mirrored[-1][1].seq >= records[-1].seq


async def _wait_caught_up(sidecar: Sidecar) -> None:
    """Bounded: the mirror reaches the journal's head (HEARTBEATs keep coming, so
    the head is re-read each time)."""
    await wait_until(lambda: _caught_up(sidecar))


async def _metric(http: aiohttp.ClientSession, sidecar: Sidecar, name: str) -> float:
    async with http.get(f"http://127.0.0.1:{sidecar.admin_port}/metrics") as answer:
        text = await answer.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


async def test_mirror_holds_every_record_once_in_order_across_overflow_rotation_and_restart(
        sidecar_factory: Any, module_database_url: str, upstream: Upstream, keys: Keys,
        http: aiohttp.ClientSession, tmp_path: Path) -> None:
    sidecar = sidecar_factory(module_database_url, upstream.url, extra=MIRROR_SETTINGS)
    await _send(sidecar, keys, http, 60)
    await _wait_caught_up(sidecar)
    assert _assert_same(sidecar) >= 121  # GENESIS + 60 INGRESS + 60 OUTCOME (+ HEARTBEATs)

    # Where Vector reads, as it needs it: names, modes, group-readable only.
    directory = _mirror_dir(sidecar)
    vector = (Path(__file__).resolve().parents[2] / "k8s" / "config" / "vector.yaml").read_text()
    # (the k8s sidecar sets mirror_dir to this path; tests/ops/test_vector.py checks the pairing)
    assert "/var/lib/symphony/mirror/*.ndjson" in vector, "the sidecar writes where Vector reads"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o2750
    files = sorted(directory.glob("*.ndjson"))
    assert len(files) > 1, "4 KiB files: rotated"
    assert files[0].name == f"{sidecar.node_id}-0-{1:020d}.ndjson"
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        first = json.loads(path.read_bytes().splitlines()[0])["seq"]
        assert path.name == fmt.file_name(sidecar.node_id, 0, first)

    # GENESIS (written by the journal, not through the request path) came from the journal;
    # metrics are published once per housekeeping tick: wait for the tick that shows it.
    recovered = await wait_until(lambda: _metric(http, sidecar, "symphony_sidecar_mirror_recovered_total"))
    dropped = await _metric(http, sidecar, "symphony_sidecar_mirror_dropped_total")
    recovered = await _metric(http, sidecar, "symphony_sidecar_mirror_recovered_total")  # no older than dropped
    assert recovered >= 1
    assert dropped == 0 or recovered > 1  # drops (queue of one) were read back from the journal

    # A restart continues the copy in new files: no hole, no repeat, old files untouched.
    before = {path.name: path.read_bytes() for path in files}
    assert sidecar.stop() == 0
    restarted = sidecar_factory(module_database_url, upstream.url, extra={
        **MIRROR_SETTINGS, "journal_dir": str(sidecar.journal_root)}, node_id=sidecar.node_id)
    await _send(restarted, keys, http, 10)
    await _wait_caught_up(restarted)
    _assert_same(restarted)
    for name, content in before.items():
        assert (directory / name).read_bytes() == content, "an old file is never rewritten or appended to"
    assert restarted.stop() == 0
