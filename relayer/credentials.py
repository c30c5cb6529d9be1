"""Rail credentials: from a file or the environment, never from arguments, never logged.

A rail's `credentials_file` holds one JSON object of strings, e.g. for mtn_momo
{"subscription_key": "...", "api_user": "...", "api_key": "..."}. The file must not be
readable by group or others (the loader refuses it otherwise). Any field can be given
or overridden by the environment variable SYMPHONY_RAIL_<RAIL NAME>_<FIELD>, upper
case, '-' as '_' (e.g. SYMPHONY_RAIL_MTN_API_KEY for the rail named "mtn").
The values are kept in a mapping whose repr hides them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

import msgspec

from symphony.errors import ConfigError


class Secrets(Mapping[str, str]):
    """A read-only mapping of credential fields whose repr never shows a value."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets({sorted(self._values)})"


def env_name(rail: str, field: str) -> str:
    return f"SYMPHONY_RAIL_{rail.upper().replace('-', '_')}_{field.upper()}"


def load(rail: str, credentials_file: str, required: tuple[str, ...],
         environ: Mapping[str, str] | None = None) -> Secrets:
    """The credentials of `rail`; ConfigError naming the missing field (never a value)."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    if credentials_file:
        path = Path(credentials_file)
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(f"rail {rail}: credentials file {path} is readable by others; chmod 600 it")
            values = msgspec.json.decode(path.read_bytes(), type=dict[str, str])
        except OSError as exc:
            raise ConfigError(f"rail {rail}: cannot read credentials file {path}: {exc.strerror or exc}") from None
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise ConfigError(f"rail {rail}: credentials file {path} is not a JSON object of strings") from None
    prefix = env_name(rail, "")
    for name, value in environ.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            values[name[len(prefix):].lower()] = value
    missing = [field for field in required if not values.get(field)]
    if missing:
        raise ConfigError(f"rail {rail}: missing credentials {', '.join(missing)} (credentials_file or "
                          f"{env_name(rail, missing[0])})")
    return Secrets(values)
