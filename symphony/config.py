"""Configuration: one TOML file per daemon, overridable by environment variables.

Every daemon declares its settings as a `msgspec.Struct` subclass of `DaemonConfig`
with a default for each key. `load()` reads the file, lays the environment
(`SYMPHONY_<DAEMON>_<KEY>`) over it, and validates the result in one step, so an
invalid value is refused at start with the key and the reason instead of failing
later at first use. Only this module reads the environment for settings.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from symphony.errors import ConfigError

ENV_PREFIX = "SYMPHONY"
DATABASE_URL_ENV = "SYMPHONY_DATABASE_URL"
# A file holding the DSN (one line, mode 0600): for secrets mounted as files.
DATABASE_URL_FILE_ENV = "SYMPHONY_DATABASE_URL_FILE"
DATA_DIR_ENV = "SYMPHONY_DATA_DIR"
DEFAULT_DATA_DIR = Path(".symphony")


class DaemonConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings every daemon shares.

    database_url: where PostgreSQL is; empty means "the embedded server of the
        `symphony up` running on data_dir" (see symphony.db.dsn for precedence).
    data_dir: the Symphony data directory (embedded PostgreSQL lives in data_dir/pg);
        empty means SYMPHONY_DATA_DIR or ./.symphony.
    log_level: debug, info, warning or error.
    """

    database_url: str = ""
    data_dir: str = ""
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ValueError("log_level must be one of debug, info, warning, error")


T = TypeVar("T", bound=DaemonConfig)


def check_range(settings: object, name: str, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, note: str = "", label: str = "") -> None:
    """Refuse `settings.<name>` outside its range, naming the key, the range and the value given.

    The range is [low, high], or (low, high] with `low_open`; a missing bound
    is unbounded on that side. `note` explains the range (e.g. " (0 = one per
    core)"); `label` prefixes the key where it is nested (e.g. "rail"). Called
    from a config's `__post_init__`: the ValueError becomes the one-line
    "invalid <daemon> configuration (<file>): <key> must be …" of `load()`.
    """
    assert low is not None or high is not None, name
    value = getattr(settings, name)
    above = low is None or (value > low if low_open else value >= low)
    inside = above and (high is None or value <= high)
    if inside:
        return
    key = f"{label} {name}" if label else name
    if high is None:
        expected = f"{'>' if low_open else '>='} {_number(low)}"
    elif low is None:
        expected = f"<= {_number(high)}"
    else:
        expected = f"in {'(' if low_open else '['}{_number(low)}, {_number(high)}]"
    raise ValueError(f"{key} must be {expected}{note}, not {value!r}")


def _number(bound: float | None) -> str:
    """A bound as the operator writes it: 86400, not 86400.0 or 8.64e+04."""
    assert bound is not None
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def env_name(daemon: str, key: str) -> str:
    """The environment variable that overrides `key` of `daemon`'s config."""
    return f"{ENV_PREFIX}_{daemon.upper().replace('-', '_')}_{key.upper()}"


def load(
    struct_type: type[T],
    daemon: str,
    path: str | Path | None,
    *,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Read `path` (optional), apply environment overrides, and validate.

    Raises
    ------
    ConfigError
        The file is missing or not TOML, a key is unknown, or a value is invalid;
        the message names the file, the key and the reason.
    """
    environ = os.environ if environ is None else environ
    source = str(path) if path else "defaults"
    raw: dict[str, Any] = _read_toml(Path(path)) if path else {}
    for field in msgspec.structs.fields(struct_type):
        value = environ.get(env_name(daemon, field.name))
        if value is not None:
            raw[field.name] = _parse_env_value(value)
            source = f"{source} + environment"
    shared_url = environ.get(DATABASE_URL_ENV)
    if shared_url and "database_url" not in raw:
        raw["database_url"] = shared_url
    try:
        return msgspec.convert(raw, struct_type, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid {daemon} configuration ({source}): {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except PermissionError:
        raise ConfigError(f"configuration file not readable: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None


def _parse_env_value(value: str) -> Any:
    """Environment values are strings; JSON lets lists and tables be given too.

    A value that is not JSON is kept as a string, and msgspec's lax conversion
    turns "8080" or "true" into the field's type.
    """
    stripped = value.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return msgspec.json.decode(stripped)
        except msgspec.DecodeError:
            return value
    return value


def describe(struct_type: type[DaemonConfig], daemon: str) -> list[tuple[str, str, str]]:
    """(key, environment variable, default) for every setting: used by docs and --help."""
    rows = []
    for field in msgspec.structs.fields(struct_type):
        default = field.default if field.default is not msgspec.NODEFAULT else "(required)"
        if field.default_factory is not msgspec.NODEFAULT:
            default = field.default_factory()
        rows.append((field.name, env_name(daemon, field.name), repr(default)))
    return rows
