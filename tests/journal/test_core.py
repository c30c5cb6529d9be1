"""The C core's SHA-256 and CRC32C: accelerated and portable paths agree with references.

Goal: the SHA-NI and SSE4.2 code paths and the portable fallbacks give the
same results as hashlib and the CRC32C check value. Method: force each path
with jn_set_accel and compare over many lengths (block boundaries included).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from journal import chain_hash
from journal._journal import ffi, lib

ACCEL_CRC, ACCEL_SHA = 1, 2
DETECTED = lib.jn_cpu_features()


@pytest.fixture(params=["accelerated", "portable"])
def accel(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "accelerated" and not DETECTED:
        pytest.skip("this CPU has neither SSE4.2 nor SHA-NI")
    lib.jn_set_accel(0xFF if request.param == "accelerated" else 0)
    try:
        yield request.param
    finally:
        lib.jn_set_accel(0xFF)


def _sha256(data: bytes) -> bytes:
    out = ffi.new("char[32]")
    lib.jn_sha256(data, len(data), out)
    return ffi.unpack(out, 32)


def _crc32c_reference(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


LENGTHS = [*range(0, 130), 183, 191, 192, 200, 255, 256, 1000, 4096, 65537]


def test_sha256_matches_hashlib(accel: str) -> None:
    for length in LENGTHS:
        data = os.urandom(length)
        assert _sha256(data) == hashlib.sha256(data).digest(), (accel, length)


def test_crc32c_check_value_and_reference(accel: str) -> None:
    assert lib.jn_crc32c(b"123456789", 9) == 0xE3069283
    for length in [*range(0, 40), 63, 64, 65, 264, 1001]:
        data = os.urandom(length)
        assert lib.jn_crc32c(data, len(data)) == _crc32c_reference(data), (accel, length)


def test_accelerated_paths_used_when_present() -> None:
    """This build machine has SHA-NI and SSE4.2; the dispatcher must pick them."""
    flags = open("/proc/cpuinfo").read().split()
    if "sha_ni" in flags:
        assert DETECTED & ACCEL_SHA
    if "sse4_2" in flags:
        assert DETECTED & ACCEL_CRC


def test_chain_hash_is_plain_sha256_of_prev_and_canonical() -> None:
    prev, canonical = os.urandom(32), os.urandom(228)
    assert chain_hash(prev, canonical) == hashlib.sha256(prev + canonical).digest()
    with pytest.raises(ValueError):
        chain_hash(b"short", canonical)
