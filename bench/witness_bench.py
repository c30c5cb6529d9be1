"""Witness benchmark: add-checkpoint calls/s with fsync'd state, against the disk's own limit.

    .venv/bin/python bench/witness_bench.py [--origins 32] [--seconds 5] [--concurrency 32]

In one run:

1. `disk`: the strongest honest baseline for a witness that persists before it
   answers: `--concurrency` threads each doing the witness's own persistence step
   (write a ~300-byte file, fsync, rename over the old one, fsync the directory)
   as fast as they can. No HTTP, no signatures: the rate the disk allows.
2. `witness`: `symphony witness` as a real process on 127.0.0.1; `--origins`
   logs, each submitting checkpoints that grow by one leaf with a consistency
   proof, `--concurrency` requests in flight over keep-alive connections.

Prints calls/s for each and the ratio witness/disk. The issue's target is
>= 1,000 calls/s. Nothing is asserted: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from symphony.files import write_atomically  # noqa: E402
from symphony.tlog import checkpoint, merkle, note  # noqa: E402
from witness.cli import keygen  # noqa: E402

LOG_NAME = "bench.example/node"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def disk_rate(directory: Path, seconds: float, concurrency: int) -> float:
    directory.mkdir(parents=True, exist_ok=True)
    data = os.urandom(300)
    counts = [0] * concurrency
    stop = time.monotonic() + seconds

    def work(slot: int) -> None:
        path = directory / f"origin-{slot}"
        while time.monotonic() < stop:
            write_atomically(path, data)
            counts[slot] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


class Log:
    def __init__(self, signer: note.Signer, origin: str) -> None:
        self.signer, self.origin, self.tree, self.cosigned = signer, origin, merkle.MemoryTree(), 0

    def next_body(self) -> bytes:
        self.tree.append(os.urandom(16))
        size = self.tree.size
        proof = merkle.consistency_proof(self.tree.read, self.cosigned, size) if self.cosigned else []
        cp = checkpoint.Checkpoint(self.origin, size, self.tree.root())
        lines = [f"old {self.cosigned}"] + [base64.b64encode(h).decode() for h in proof]
        return ("\n".join(lines) + "\n\n" + note.sign(cp.text(), self.signer)).encode()


async def drive(url: str, logs: list[Log], seconds: float, concurrency: int) -> tuple[float, dict[int, int]]:
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[Log] = asyncio.Queue()
    for log in logs:
        queue.put_nowait(log)
    stop = time.monotonic() + seconds
    done = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < stop:
            log = await queue.get()
            body = log.next_body()
            async with session.post(url + "/add-checkpoint", data=body) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status == 200:
                    log.cosigned = log.tree.size
                    done += 1
            queue.put_nowait(log)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return done / elapsed, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--origins", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="symphony-witness-bench-"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; state in {work}")
    disk = disk_rate(work / "disk", args.seconds, args.concurrency)
    print(f"disk (write+fsync+rename+fsync dir, {args.concurrency} threads): {disk:,.0f} /s")

    signer = note.Signer(LOG_NAME, Ed25519PrivateKey.generate())
    logs = [Log(signer, f"{LOG_NAME}/{i}/{os.urandom(16).hex()}") for i in range(args.origins)]
    keygen("witness.bench/w1", work / "witness.pem")
    port, admin = free_port(), free_port()
    config = work / "witness.toml"
    config.write_text(f'name = "witness.bench/w1"\nkey_file = "{work / "witness.pem"}"\n'
                      f'state_dir = "{work / "state"}"\ntrusted_logs = ["{LOG_NAME} {signer.verifier.vkey()}"]\n'
                      f"listen_port = {port}\nadmin_port = {admin}\nlog_level = \"warning\"\n")
    process = subprocess.Popen([sys.executable, "-m", "symphony", "witness", "--config", str(config)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the witness did not start")
            time.sleep(0.05)
        rate, statuses = asyncio.run(drive(f"http://127.0.0.1:{port}", logs, args.seconds, args.concurrency))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    print(f"witness add-checkpoint ({args.origins} origins, {args.concurrency} in flight): {rate:,.0f} /s "
          f"(statuses {statuses})")
    print(f"ratio witness/disk: {rate / disk:.2f}; target >= 1,000 /s: {'met' if rate >= 1000 else 'NOT met'}")


if __name__ == "__main__":
    main()
