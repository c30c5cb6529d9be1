"""Reconciliation throughput: statement lines matched per second, and peak memory.

Method: for each statement format (MTN MoMo transaction-history CSV, Airtel
Money statement CSV, camt.053.001.08 of the ISO 20022 rail), N outbox rows on
that rail are bulk-inserted into a fresh database (embedded PostgreSQL 18,
fsync off, unless --database-url), a statement of N lines is written from
their ids (handles derived as the adapters derive them; the camt.053 entries in
exactly the layout pyiso20022/xsdata writes, repeated from one rendered entry),
and repair.reconcile ingests it: streamed in 1 MiB chunks, COPY into a temporary
table, matching in SQL. The clock covers the whole reconciliation (hashing the
file, reading, COPY, matching, recording). Peak RSS of this process is read
before and after each phase: it must not grow with the statement. Figures are
printed; the run fails only if a statement does not reconcile clean.

    .venv/bin/python bench/reconcile_bench.py --lines 300000 [--formats mtn_momo,airtel_money,iso20022]
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
from symphony.rail_handles import rail_id30, rail_id35, rail_uuid  # noqa: E402


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


def write_airtel_csv(path: Path, ids: list[uuid.UUID]) -> None:
    today = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("Transaction ID", "Airtel Money ID", "Reference", "Transaction Date", "Status", "MSISDN",
                         "Amount", "Currency"))
        for index, outbox_id in enumerate(ids):
            writer.writerow((rail_id30(outbox_id), f"MP{index:012d}", str(outbox_id), today, "TS", "ACC1", "1.00",
                             "KES"))


def write_camt053(path: Path, ids: list[uuid.UUID]) -> None:
    """A camt.053 in pyiso20022's layout: one entry rendered by it, repeated with each row's identifiers."""
    today = dt.datetime.now(dt.UTC).date()
    marker = iso20022.StatementEntry(tx_id="@TX@", end_to_end_id="@E2E@", amount=Decimal("1.00"), currency="KES",
                                     creditor_account="ACC1", reference="@REF@", booked_on=today)
    document = iso20022.camt053_build("BENCH", "SETTLEMENT", "KES", [marker])
    start, end = document.index(b"<Ntry>"), document.rindex(b"</Ntry>") + len(b"</Ntry>")
    template = document[start:end]
    with path.open("wb") as handle:
        handle.write(document[:start])
        for index, outbox_id in enumerate(ids):
            handle.write(template.replace(b"@TX@", rail_id35(outbox_id).encode())
                         .replace(b"@E2E@", outbox_id.hex.encode()).replace(b"@REF@", b"RTGS%d" % index))
        handle.write(document[end:])


WRITERS = {"mtn_momo": write_mtn_csv, "airtel_money": write_airtel_csv, "iso20022": write_camt053}


async def phase(admin_dsn: str, rail: str, kind: str, lines: int, folder: Path) -> dict[str, object]:
    dsn = await fresh_database(admin_dsn, f"recon_bench_{kind}")
    await bulk_insert(dsn, lines, rail)
    ids = await _ids(dsn, rail)
    path = folder / f"{rail}.statement"
    WRITERS[kind](path, ids)
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
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "load_average_1min_before": round(os.getloadavg()[0], 2)},
        }
        for kind in args.formats.split(","):
            results[kind] = await phase(admin_dsn, kind, kind, args.lines, root)
            print(f"{kind}: {results[kind]}", file=sys.stderr, flush=True)
        results["machine"]["load_average_1min_after"] = round(os.getloadavg()[0], 2)  # type: ignore[index]
        print(json.dumps(results, indent=2))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="admin DSN of a PostgreSQL 18 (default: embedded, fsync off)")
    parser.add_argument("--lines", type=int, default=300_000, help="lines (entries) of each statement")
    parser.add_argument("--formats", default="mtn_momo,airtel_money,iso20022",
                        help="statement formats to measure (comma-separated)")
    asyncio.run(main(parser.parse_args()))
