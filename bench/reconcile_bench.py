"""Reconciliation throughput: statement lines matched per second, and peak memory.

Method: N outbox rows on rail `mtn_momo` are bulk-inserted into a fresh
database (embedded PostgreSQL 18, fsync off, unless --database-url), an MTN
transaction-history CSV of N lines is written from their ids (handles derived
as the adapter derives them), and repair.reconcile ingests it: streamed, COPY
batches into a temporary table, matching in SQL. Then the same for a camt.053
of --camt-lines entries (pyiso20022 decodes each entry: far slower).
Peak RSS is read before and after each phase to show that memory does not
grow with the statement. Figures are printed; nothing is asserted.

    .venv/bin/python bench/reconcile_bench.py --lines 300000
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.relayer_bench import bulk_insert, fresh_database  # noqa: E402
from repair import reconcile  # noqa: E402
from symphony import iso20022  # noqa: E402
from symphony.db import connect  # noqa: E402
from symphony.embedded import EmbeddedPostgres  # noqa: E402
from symphony.rail_handles import rail_id35, rail_uuid  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


async def _ids(dsn: str, rail: str) -> list[uuid.UUID]:
    conn = await connect(dsn)
    try:
        return [r["id"] for r in await conn.fetch("SELECT id FROM payment_outbox WHERE rail = $1", rail)]
    finally:
        await conn.close()


def write_mtn_csv(path: Path, ids: list[uuid.UUID]) -> None:
    today = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("Id", "External Transaction Id", "Reference Id", "Date", "Status", "Type", "To", "Amount",
                         "Currency"))
        for index, outbox_id in enumerate(ids):
            writer.writerow((str(10**9 + index), str(outbox_id), str(rail_uuid(outbox_id)), today, "SUCCESSFUL",
                             "TRANSFER", "ACC1", "1.00", "KES"))


def write_camt053(path: Path, ids: list[uuid.UUID]) -> None:
    today = dt.datetime.now(dt.UTC).date()
    entries = [iso20022.StatementEntry(tx_id=rail_id35(i), end_to_end_id=i.hex, amount=Decimal("1.00"),
                                       currency="KES", creditor_account="ACC1", reference=f"R{n}", booked_on=today)
               for n, i in enumerate(ids)]
    path.write_bytes(iso20022.camt053_build("BENCH", "SETTLEMENT", "KES", entries))


async def phase(admin_dsn: str, rail: str, kind: str, lines: int, folder: Path) -> dict[str, object]:
    dsn = await fresh_database(admin_dsn, f"recon_bench_{kind}")
    await bulk_insert(dsn, lines, rail)
    ids = await _ids(dsn, rail)
    path = folder / f"{rail}.statement"
    (write_camt053 if kind == "iso20022" else write_mtn_csv)(path, ids)
    rss_before = peak_rss_mib()
    conn = await connect(dsn)
    try:
        report = await reconcile.reconcile(conn, rail, kind, path, progress=reconcile.Progress(f"reconcile {rail}"))
    finally:
        await conn.close()
    assert report.lines == lines and report.matched == lines and report.clean, report
    return {"lines": report.lines, "matched": report.matched, "seconds": round(report.seconds, 3),
            "lines_per_second": round(report.lines / report.seconds), "statement_mib": round(
                path.stat().st_size / 2**20, 1),
            "peak_rss_mib_before": round(rss_before, 1), "peak_rss_mib_after": round(peak_rss_mib(), 1)}


async def main(args: argparse.Namespace) -> None:
    server = None
    root = Path(tempfile.mkdtemp(prefix="symphony-recon-bench-"))
    admin_dsn = args.database_url
    if not admin_dsn:
        server = EmbeddedPostgres(root / "pg", fast=True)
        admin_dsn = server.start().dsn
    try:
        results: dict[str, object] = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "mtn_momo_csv": await phase(admin_dsn, "mtn_momo", "mtn_momo", args.lines, root),
        }
        if args.camt_lines:
            results["iso20022_camt053"] = await phase(admin_dsn, "iso20022", "iso20022", args.camt_lines, root)
        print(json.dumps(results, indent=2))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="admin DSN of a PostgreSQL 18 (default: embedded, fsync off)")
    parser.add_argument("--lines", type=int, default=300_000, help="lines of the MTN CSV statement")
    parser.add_argument("--camt-lines", type=int, default=5_000, help="entries of the camt.053 (0: skip)")
    asyncio.run(main(parser.parse_args()))
