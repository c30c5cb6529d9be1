"""symphony.files.write_atomically, the one atomic file writer.

Goal: durable or not, the target ends with exactly the new bytes, with the
requested permissions, and no temporary is left beside it; an existing file
is replaced whole. Method: real files in the test's directory.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from symphony.files import write_atomically


@pytest.mark.parametrize("durable", [True, False])
def test_replaces_whole_and_leaves_no_temporary(tmp_path: Path, durable: bool) -> None:
    """The first write creates the file, the second replaces it; mode and directory are as asked."""
    target = tmp_path / "state.json"
    write_atomically(target, b"old content that is longer\n", 0o600, durable=durable)
    assert target.read_bytes() == b"old content that is longer\n"
    write_atomically(target, b"new\n", 0o600, durable=durable)
    assert target.read_bytes() == b"new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
