"""Each example configuration loads and names exactly the config struct's keys.

Method: load relayer/ and payments_service/config.example.toml with
symphony.config.load and compare the TOML keys with the struct fields.
"""

from __future__ import annotations

import tomllib

import msgspec
import pytest

from payments_service.config import ServiceConfig
from relayer.config import RailConfig, RelayerConfig
from symphony import config
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(("path", "struct", "daemon"), [
    ("relayer/config.example.toml", RelayerConfig, "relayer"),
    ("payments_service/config.example.toml", ServiceConfig, "service"),
])
def test_example_matches_struct(path: str, struct: type, daemon: str) -> None:
    example = REPO_ROOT / path
    loaded = config.load(struct, daemon, example, environ={})
    raw = tomllib.loads(example.read_text())
    assert set(raw) == set(struct.__struct_fields__)
    defaults = msgspec.convert({"rails": raw["rails"]} if "rails" in raw else {}, struct)
    for key in struct.__struct_fields__:
        assert getattr(loaded, key) == getattr(defaults, key), key  # the example shows the defaults
    if struct is RelayerConfig:
        for rail in raw["rails"].values():
            assert set(rail) == set(RailConfig.__struct_fields__)
