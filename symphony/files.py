"""Files that must be whole after a crash: write, fsync, rename, fsync the directory."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace `path` with `data` so that after a crash it is the old content or
    the new, never a mix, and the new content is durable when this returns.

    With durable=False the fsyncs are left out: a reader still never sees a
    torn file, but after a power loss the old content may come back. For files
    rewritten often whose loss is harmless (a snapshot the next tick rewrites,
    a marker allowed to lag)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if not durable:
        return
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
