"""forwarder/config.example.toml documents every key, at its default, and nothing else.

Method: load the example with symphony.config.load and compare it with the
struct's defaults field by field; check that each key has a comment above it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec
import pytest

from forwarder.config import DAEMON, ForwarderConfig
from symphony import config
from symphony.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "forwarder" / "config.example.toml"


def test_example_matches_the_struct_exactly() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    fields = {field.name for field in msgspec.structs.fields(ForwarderConfig)}
    assert set(raw) == fields
    loaded = config.load(ForwarderConfig, DAEMON, EXAMPLE, environ={})
    assert loaded == ForwarderConfig()


def test_every_key_is_commented() -> None:
    """Each key sits in a block (no blank line) that starts with a comment."""
    lines = EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        if not line.strip() or line.startswith("#"):
            continue
        above = index - 1
        while above >= 0 and lines[above].strip() and not lines[above].startswith("#"):
            above -= 1
        assert above >= 0 and lines[above].startswith("#"), f"key without a comment: {line}"


def test_environment_overrides_and_refusals() -> None:
    loaded = config.load(ForwarderConfig, DAEMON, None, environ={"SYMPHONY_FORWARDER_BATCH_ROWS_MAX": "777"})
    assert loaded.batch_rows_max == 777
    with pytest.raises(ConfigError, match="batch_rows_max"):
        config.load(ForwarderConfig, DAEMON, None, environ={"SYMPHONY_FORWARDER_BATCH_ROWS_MAX": "0"})
    with pytest.raises(ConfigError, match="retry_delay"):
        config.load(ForwarderConfig, DAEMON, None, environ={"SYMPHONY_FORWARDER_RETRY_DELAY_MS_INITIAL": "99999"})
