"""Named SQL blocks loaded from .sql files beside the code that runs them.

A file holds blocks that each start with `-- name: <name>` followed by comment
lines that describe the query; the block runs until the next `-- name:` line.
Code uses `QUERIES["claim_batch"]`: SQL is never assembled from strings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import LiteralString

_NAME = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse(text: str, *, source: str = "<sql>") -> dict[str, LiteralString]:
    """Split `text` into its named blocks; duplicate or empty blocks are errors."""
    matches = list(_NAME.finditer(text))
    assert matches, f"{source}: no '-- name:' blocks"
    blocks: dict[str, LiteralString] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = text[match.end():end].strip()
        name = match.group("name")
        assert name not in blocks, f"{source}: query {name!r} defined twice"
        assert body, f"{source}: query {name!r} is empty"
        blocks[name] = body  # the project's own SQL file: mypy treats LiteralString as str
    return blocks


def load(package: str, filename: str) -> Mapping[str, LiteralString]:
    """Load `filename` from `package` once, at import time of the caller."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    return parse(text, source=f"{package}/{filename}")
