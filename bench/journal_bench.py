"""Journal benchmark: append rates and durability latency against the machine's limits.

Prints, from one run and side by side:

1. the ceiling: memcpy of the same 264-byte records into a pre-faulted mapping;
2. C-level append (SHA-256 chain + CRC32C, 200-byte body) through the C loop
   entry point jn_bench_append, with per-append p50/p99/p99.9/max, pre-faulted
   segments and, for comparison, segments that are not pre-faulted;
3. Python `Writer.append`, one record per call, durability "none";
4. Python `Writer.append_many` (1000 bodies per call);
5. durability "batch": append rate and p50/p99 time-to-durable (append return
   to the group commit that covers it), then `append_durable` from 256 asyncio
   tasks; both against the fdatasync (and msync) latency measured here;
6. segment preallocation, both ways in the same run (interleaved A B A B…):
   posix_fallocate only (unwritten extents: each first write-back into them is
   a filesystem-journal commit) vs fallocate + zero-fill + one fdatasync (the
   default, as PostgreSQL's wal_init_zero); for each, the batch phase again and
   the time to prepare one segment, beside fdatasync into unwritten vs written
   blocks.

Usage: python bench/journal_bench.py [--dir DIR] [--records N] [--quick]
Targets (issue 3, this 2-core machine): C >= 1.5 M/s (stretch 4 M/s), Python
>= 600 k/s, batched >= 1.2 M/s, batch durability >= 300 k/s with p99
time-to-durable <= 1 ms, C p99.9 <= 5 us.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from journal import RecordType, Writer  # noqa: E402
from journal._files import MappedSegment  # noqa: E402
from journal._journal import ffi, lib  # noqa: E402

BODY = bytes(range(200))
RECORD_BYTES = 264  # 64-byte header + 200-byte body, already 8-aligned
SEGMENT_BYTES = 64 * 1024 * 1024
INGRESS = RecordType.INGRESS


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench_memcpy(workdir: Path, count: int) -> float:
    """Records/s copying a 264-byte record into a pre-faulted mapping (the ceiling)."""
    segment = MappedSegment.create_temporary(workdir, SEGMENT_BYTES, prefault=True)
    try:
        record = bytes(RECORD_BYTES)
        lib.jn_bench_memcpy(segment.base, segment.size, record, RECORD_BYTES, 10_000)  # warm
        started = time.perf_counter()
        lib.jn_bench_memcpy(segment.base, segment.size, record, RECORD_BYTES, count)
        return count / (time.perf_counter() - started)
    finally:
        segment.discard()


def c_append(writer: Writer, count: int, latencies: object | None) -> float:
    """Append `count` records through the C loop; rotate in Python when a segment fills."""
    c_writer = writer.c_writer()
    done, busy = 0, 0.0
    for _ in range(count):  # each pass appends >= 1 record
        out = latencies + done if latencies is not None else ffi.NULL
        started = time.perf_counter()
        appended = lib.jn_bench_append(c_writer, BODY, len(BODY), count - done, out)
        busy += time.perf_counter() - started
        assert appended >= 0
        done += appended
        if done >= count:
            break
        writer._rotate()  # not timed: rotation is a rename of a ready segment
    return count / busy


def bench_c(workdir: Path, count: int, *, prefault: bool) -> tuple[float, list[float]]:
    stream = workdir / f"c-{'warm' if prefault else 'cold'}"
    with Writer(stream, "bench", 0, "none", segment_bytes=SEGMENT_BYTES, prefault=prefault) as writer:
        rate = c_append(writer, count, None) if prefault else 0.0
    shutil.rmtree(stream)
    latencies = ffi.new("uint64_t[]", count)
    with Writer(stream, "bench", 0, "none", segment_bytes=SEGMENT_BYTES, prefault=prefault) as writer:
        time.sleep(0.5)  # let the preparer finish the first spare segment
        c_append(writer, count, latencies)
    shutil.rmtree(stream)
    return rate, sorted(latencies[i] / 1000 for i in range(count))


def bench_python(workdir: Path, count: int) -> tuple[float, float]:
    stream = workdir / "python"
    with Writer(stream, "bench", 0, "none", segment_bytes=SEGMENT_BYTES) as writer:
        append = writer.append
        started = time.perf_counter()
        for i in range(count):
            append(INGRESS, BODY, i)
        single = count / (time.perf_counter() - started)
        bodies, ids = [BODY] * 1000, list(range(1000))
        append_many = writer.append_many
        started = time.perf_counter()
        for _ in range(count // 1000):
            append_many(INGRESS, bodies, ids)
        batched = (count // 1000) * 1000 / (time.perf_counter() - started)
    shutil.rmtree(stream)
    return single, batched


def bench_fdatasync(workdir: Path, repetitions: int, *, zero_filled: bool) -> list[float]:
    """fdatasync after a 4 KiB pwrite into fallocated blocks, in microseconds.

    zero_filled=False: the blocks are only fallocated (unwritten extents), so
    each sync also commits the extent conversion; True: they were written with
    zeros and synced first, so each sync is a pure data write.
    """
    path = workdir / "fsync.probe"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, 4096 * repetitions)
        if zero_filled:
            os.pwrite(fd, bytes(4096 * repetitions), 0)
        os.fsync(fd)
        page = os.urandom(4096)
        fdatasync = []
        for i in range(repetitions):
            os.pwrite(fd, page, 4096 * i)
            started = time.perf_counter()
            os.fdatasync(fd)
            fdatasync.append((time.perf_counter() - started) * 1e6)
    finally:
        os.close(fd)
        path.unlink()
    return sorted(fdatasync)


def bench_fsync(workdir: Path, repetitions: int = 300) -> tuple[list[float], list[float]]:
    """fdatasync after a 4 KiB write (into written blocks), and msync of one dirtied page, in microseconds."""
    fdatasync = bench_fdatasync(workdir, repetitions, zero_filled=True)
    segment = MappedSegment.create_temporary(workdir, 4096 * (repetitions + 1), prefault=True)
    page = os.urandom(4096)
    try:
        msync = []
        for i in range(repetitions):
            ffi.memmove(segment.base + 4096 * i, page, 4096)
            started = time.perf_counter()
            lib.jn_msync(segment.base, segment.size, 4096 * i, 4096 * (i + 1))
            msync.append((time.perf_counter() - started) * 1e6)
    finally:
        segment.discard()
    return fdatasync, sorted(msync)


def bench_batch(workdir: Path, count: int) -> tuple[float, list[float], int]:
    """Append at level batch as fast as one thread can; time-to-durable of sampled records.

    The C flusher logs (durable seq, time) after each sync; a sampled record's
    time-to-durable is the first logged sync covering it minus the time its
    append returned (same CLOCK_MONOTONIC).
    """
    stream = workdir / "batch"
    sample_every = 64
    samples: list[tuple[int, int]] = []
    capacity = 1 << 20
    log = ffi.new("uint64_t[]", 2 * capacity)
    with Writer(stream, "bench", 0, "batch", segment_bytes=SEGMENT_BYTES) as writer:
        time.sleep(0.5)  # spare segment ready
        lib.jn_flusher_set_log(writer._flusher, log, capacity)
        append, clock = writer.append, lib.jn_now_ns
        started = time.perf_counter()
        for i in range(count):
            seq, _ = append(INGRESS, BODY, i)
            if i % sample_every == 0:
                samples.append((seq, clock()))
        rate = count / (time.perf_counter() - started)
        deadline = time.monotonic() + 10
        while writer.durable_seq < writer.next_seq - 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        logged = lib.jn_flusher_log_length(writer._flusher)
        lib.jn_flusher_set_log(writer._flusher, ffi.NULL, 0)
    shutil.rmtree(stream)
    syncs = [(log[2 * i], log[2 * i + 1]) for i in range(logged)]
    durable_seqs = [seq for seq, _ in syncs]
    waits = []
    for seq, appended_at in samples:
        index = bisect.bisect_left(durable_seqs, seq)
        if index < len(syncs):
            waits.append((syncs[index][1] - appended_at) / 1000)
    return rate, sorted(waits), len(syncs)


ALLOCATIONS = {"fallocate": lib.JN_ALLOCATE_FALLOCATE, "zero-fill": lib.JN_ALLOCATE_ZERO}


def bench_prepare(workdir: Path, repetitions: int = 3) -> list[float]:
    """Milliseconds to allocate (and pre-fault) one segment with the current allocation mode."""
    times = []
    for _ in range(repetitions):
        started = time.perf_counter()
        segment = MappedSegment.create_temporary(workdir, SEGMENT_BYTES, prefault=True)
        times.append((time.perf_counter() - started) * 1000)
        segment.discard()
    return sorted(times)


def bench_allocation(workdir: Path, count: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """The batch phase and segment preparation under each allocation mode, interleaved.

    Rounds alternate the modes (A B A B …) so a change in the machine's load
    during the run hits both alike; each mode's time-to-durable samples are
    pooled over its rounds.
    """
    results: dict[str, dict[str, list[float]]] = {
        name: {"rate": [], "waits": [], "syncs": [], "prepare_ms": [], "fdatasync": []} for name in ALLOCATIONS}
    default = lib.jn_allocation()
    try:
        for _ in range(rounds):
            for name, mode in ALLOCATIONS.items():
                lib.jn_set_allocation(mode)
                result = results[name]
                result["fdatasync"] += bench_fdatasync(workdir, 200, zero_filled=mode == lib.JN_ALLOCATE_ZERO)
                result["prepare_ms"] += bench_prepare(workdir, 1)
                rate, waits, syncs = bench_batch(workdir, count)
                result["rate"].append(rate)
                result["waits"] += waits
                result["syncs"].append(syncs)
    finally:
        lib.jn_set_allocation(default)
    for result in results.values():
        for key in ("waits", "prepare_ms", "fdatasync"):
            result[key].sort()
    return results


def bench_append_durable(workdir: Path, count: int, tasks: int = 256) -> tuple[float, list[float]]:
    """append_durable from many asyncio tasks: the sidecar's pattern."""
    stream = workdir / "durable"
    latencies: list[float] = []

    async def run(writer: Writer) -> float:
        per_task = count // tasks

        async def worker() -> None:
            clock = time.perf_counter
            for i in range(per_task):
                started = clock()
                await writer.append_durable(INGRESS, BODY, i)
                latencies.append((clock() - started) * 1e6)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        return per_task * tasks / (time.perf_counter() - started)

    with Writer(stream, "bench", 0, "batch", segment_bytes=SEGMENT_BYTES) as writer:
        time.sleep(0.5)
        rate = asyncio.run(run(writer))
    shutil.rmtree(stream)
    return rate, sorted(latencies)


def line(label: str, value: str, note: str = "") -> None:
    print(f"  {label:<46} {value:>16}  {note}")


def verdict(ok: bool) -> str:
    return "meets target" if ok else "BELOW TARGET"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="where to put the benchmark's files (default: system temp)")
    parser.add_argument("--records", type=int, default=1_000_000, help="records per C/Python run")
    parser.add_argument("--quick", action="store_true", help="a tenth of the records (smoke run)")
    parser.add_argument("--allocation-rounds", type=int, default=3,
                        help="rounds of the fallocate vs zero-fill comparison (each runs the batch phase per mode)")
    parser.add_argument("--only-allocation", action="store_true", help="run only the allocation comparison")
    args = parser.parse_args()
    count = args.records // 10 if args.quick else args.records
    workdir = Path(tempfile.mkdtemp(prefix="journal-bench-", dir=args.dir))
    features = lib.jn_cpu_features()
    try:
        print(f"journal benchmark: {cpu_name()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
              f"Python {platform.python_version()}")
        print(f"  SHA-NI {'on' if features & 2 else 'off'}, SSE4.2 CRC32C {'on' if features & 1 else 'off'}; "
              f"200-byte bodies ({RECORD_BYTES} bytes per record), {SEGMENT_BYTES >> 20} MiB segments, "
              f"files in {workdir}")

        if args.only_allocation:
            print_allocation(bench_allocation(workdir, count, args.allocation_rounds), count)
            return 0
        ceiling = bench_memcpy(workdir, count * 4)
        c_rate, c_warm = bench_c(workdir, count, prefault=True)
        _, c_cold = bench_c(workdir, min(count, 600_000), prefault=False)
        py_rate, many_rate = bench_python(workdir, count)
        fdatasync, msync = bench_fsync(workdir)
        batch_rate, waits, sync_count = bench_batch(workdir, count)
        durable_rate, durable_latency = bench_append_durable(workdir, min(count, 200_000))
        allocation = bench_allocation(workdir, count, args.allocation_rounds)

        print("\nlimits of this machine")
        line("memcpy of a record into a mapping", f"{ceiling / 1e6:.1f} M rec/s",
             f"({ceiling * RECORD_BYTES / 1e9:.1f} GB/s)")
        line("fdatasync after a 4 KiB write p50 / p99", f"{percentile(fdatasync, .5):.0f} / "
             f"{percentile(fdatasync, .99):.0f} us")
        line("msync of one dirty page p50 / p99", f"{percentile(msync, .5):.0f} / "
             f"{percentile(msync, .99):.0f} us")

        print("\nappend")
        line("C append (chain + CRC), pre-faulted", f"{c_rate / 1e6:.2f} M rec/s",
             f"{c_rate / ceiling:.0%} of memcpy; {verdict(c_rate >= 1.5e6)} (>= 1.5 M, stretch 4 M)")
        line("  per append p50 / p99 / p99.9 / max", f"{percentile(c_warm, .5):.2f} / "
             f"{percentile(c_warm, .99):.2f} / {percentile(c_warm, .999):.2f} / {c_warm[-1]:.0f} us",
             f"p99.9 {verdict(percentile(c_warm, .999) <= 5)} (<= 5 us)")
        line("  without pre-faulting: p99.9 / max", f"{percentile(c_cold, .999):.2f} / {c_cold[-1]:.0f} us",
             "(first touch of each page)")
        line("Python append, durability none", f"{py_rate / 1e3:.0f} k rec/s",
             f"{py_rate / c_rate:.0%} of C; {1e6 / py_rate:.2f} us/call; {verdict(py_rate >= 6e5)} (>= 600 k)")
        line("Python append_many (1000 per call)", f"{many_rate / 1e6:.2f} M rec/s",
             f"{many_rate / py_rate:.1f}x single; {verdict(many_rate >= 1.2e6)} (>= 1.2 M)")

        print("\ndurability batch (group commit)")
        p50, p99 = percentile(waits, .5), percentile(waits, .99)
        line("append rate while the flusher syncs", f"{batch_rate / 1e3:.0f} k rec/s",
             f"{verdict(batch_rate >= 3e5)} (>= 300 k); {sync_count} syncs, "
             f"{count / max(sync_count, 1):.0f} rec/sync")
        line("time to durable p50 / p99", f"{p50:.0f} / {p99:.0f} us",
             f"{p99 / percentile(fdatasync, .5):.1f}x fdatasync p50; p99 {verdict(p99 <= 1000)} (<= 1 ms)")
        line("append_durable, 256 asyncio tasks", f"{durable_rate / 1e3:.0f} k rec/s",
             f"latency p50 / p99 {percentile(durable_latency, .5):.0f} / "
             f"{percentile(durable_latency, .99):.0f} us")
        print(f"\n  mean fdatasync {statistics.fmean(fdatasync):.0f} us; time-to-durable includes waiting "
              "for the sync in progress plus its own")
        print_allocation(allocation, count)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def print_allocation(results: dict[str, dict[str, list[float]]], count: int) -> None:
    default = next(name for name, mode in ALLOCATIONS.items() if mode == lib.jn_allocation())
    rounds = len(results[default]["rate"])
    print(f"\nsegment preallocation ({rounds} interleaved rounds of {count} records each; default: {default})")
    for name, result in results.items():
        waits, fdatasync = result["waits"], result["fdatasync"]
        p50, p99 = percentile(waits, .5), percentile(waits, .99)
        rates = ", ".join(f"{rate / 1e3:.0f}" for rate in result["rate"])
        line(f"{name}: batch append rate per round", f"{rates} k/s",
             f"{statistics.fmean(result['syncs']):.0f} syncs per round")
        line(f"{name}: time to durable p50 / p99 / p99.9", f"{p50:.0f} / {p99:.0f} / {percentile(waits, .999):.0f} us",
             f"p99 {verdict(p99 <= 1000)} (<= 1 ms)")
        line(f"{name}: prepare one segment", f"{percentile(result['prepare_ms'], .5):.0f} ms",
             f"fdatasync after 4 KiB into its blocks p50 / p99 {percentile(fdatasync, .5):.0f} / "
             f"{percentile(fdatasync, .99):.0f} us")


if __name__ == "__main__":
    sys.exit(main())
