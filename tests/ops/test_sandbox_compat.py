"""The daemons' code runs under the units' MemoryDenyWriteExecute=yes.

Goal: W^X memory is part of the units' hardening; if any import (cffi, uvloop,
cryptography, ctypes in the sidecar supervisor) needed a writable and
executable mapping, the daemon would crash on an installed host and nowhere
else. Method: Linux 6.3+ offers the same rule per process (prctl PR_SET_MDWE,
inherited across fork and exec); a child Python with it set must refuse a W+X
mapping (proof the rule is on), then import every daemon module that exists,
make the ctypes call the sidecar supervisor makes, and run a uvloop loop.
Skipped on kernels without PR_SET_MDWE.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
MODULES = ("symphony.lifecycle", "symphony.app.cli", "journal", "ingress_sidecar.supervisor",
           "ingress_sidecar.server", "forwarder.server", "relayer.server", "repair.server")

CHILD = r"""
import ctypes, mmap, signal, sys
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X mapping allowed: the rule is not in force")
except PermissionError:
    pass
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
ctypes.CDLL(None, use_errno=True).prctl(1, 0)  # the supervisor's prctl call, harmless flag
callback = ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)
assert callback() == 7
import uvloop
async def main():
    return 3
assert uvloop.run(main()) == 3
print("ok")
"""


def _mdwe_supported() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c",
         "import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"],
        capture_output=True, timeout=30)
    return probe.returncode == 0


def test_daemon_code_runs_with_write_xor_execute_memory() -> None:
    if not _mdwe_supported():
        pytest.skip("kernel has no PR_SET_MDWE (Linux < 6.3)")
    present = [m for m in MODULES if _module_exists(m)]
    assert "symphony.lifecycle" in present
    launcher = (
        "import ctypes, os, sys\n"
        f"assert ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0\n"
        "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1], *sys.argv[2:]])\n"
    )
    result = subprocess.run([sys.executable, "-c", launcher, CHILD, *present],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
