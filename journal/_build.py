"""cffi build script for the journal's C core (API mode only, never ABI mode).

setup.py names this module in `cffi_modules`, so installing the package
compiles `journal/journal_core.c` into the extension `journal._journal`. For
work in a checkout, `python journal/_build.py` builds it in place.

The cdef is not written twice: it is the block between the CDEF markers of
journal_core.h, so the declarations cffi checks are the ones the C compiles.
Only gcc (or clang) is needed: SHA-256 and CRC32C are implemented in the core.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cffi import FFI

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent


def _cdef() -> str:
    header = (_HERE / "journal_core.h").read_text(encoding="utf-8")
    _, _, rest = header.partition("/* CDEF-BEGIN */")
    block, found, _ = rest.partition("/* CDEF-END */")
    assert found, "journal_core.h lost its CDEF markers"
    return block


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "journal._journal",
    '#include "journal_core.h"',
    # setuptools wants sources relative to the project root (it runs this
    # module from there); cffi's in-place compile changes directory, so the
    # __main__ build passes absolute paths.
    sources=[str(_HERE / "journal_core.c") if __name__ == "__main__" else "journal/journal_core.c"],
    include_dirs=[str(_HERE)],
    # -O2 for the hot path; accelerated code paths carry their own
    # target("...") attributes, so no -march: the build runs on any x86-64
    # (or other) CPU and picks SHA-NI / SSE4.2 at run time.
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    # Objects go to build/ (ignored by git); only the extension is copied next
    # to the package so `import journal` finds it.
    os.chdir(_ROOT)
    built = Path(ffibuilder.compile(tmpdir=str(_ROOT / "build" / "cffi"), verbose=False))
    shutil.copy2(built, _HERE / built.name)
    print(_HERE / built.name)
