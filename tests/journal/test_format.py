"""FORMAT.md is the layout the compiler uses, and it accounts for every byte.

Goal: the documented Offset | Size tables cannot drift from journal_core.h.
Method: parse the tables from FORMAT.md and compare each row with
ffi.offsetof/ffi.sizeof; check that the rows tile each structure exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from journal import RecordType
from journal._format import parse_segment_name, record_size, segment_name
from journal._journal import ffi, lib

FORMAT_MD = Path(__file__).resolve().parents[2] / "journal" / "FORMAT.md"
ROW = re.compile(r"^\| (\d+) \| (\d+) \| `(\w+)` \|", re.MULTILINE)


def _table(title: str) -> list[tuple[int, int, str]]:
    text = FORMAT_MD.read_text()
    section = text.split(f"### {title}", 1)[1].split("\n#", 1)[0]
    return [(int(o), int(s), name) for o, s, name in ROW.findall(section)]


@pytest.mark.parametrize(("title", "ctype", "size"), [
    ("Segment header", "jn_segment_header", 256),
    ("Record header", "jn_record_header", 64),
])
def test_documented_offsets_match_the_compiled_layout(title: str, ctype: str, size: int) -> None:
    rows = _table(title)
    assert rows, f"no table under '### {title}'"
    assert ffi.sizeof(ctype) == size
    position = 0
    for offset, width, field in rows:
        assert offset == position, f"{field}: gap or overlap at {position}"
        assert ffi.offsetof(ctype, field) == offset, field
        member = ffi.typeof(ctype).fields
        ftype = dict(member)[field].type
        assert ffi.sizeof(ftype) == width, field
        position += width
    assert position == size, "the table does not cover the whole structure"
    assert {name for _, _, name in rows} == {name for name, _ in ffi.typeof(ctype).fields}


def test_constants_and_names() -> None:
    """F1, F6: file names and record sizes; record types as documented."""
    assert segment_name(1) == "00000000000000000001.seg"
    assert parse_segment_name("00000000000000000042.seg") == 42
    assert parse_segment_name("42.seg") is None
    assert record_size(0) == 64 and record_size(1) == 72 and record_size(200) == 264
    assert lib.JN_CANONICAL_OFFSET == 36
    assert [(t.name, t.value) for t in RecordType] == [
        ("GENESIS", 1), ("INGRESS", 2), ("OUTCOME", 3), ("HEARTBEAT", 4), ("DROPPED", 5), ("CHECKPOINT", 6)]
    assert "53 59 4D 4A 52 4E 4C 00" in FORMAT_MD.read_text()
