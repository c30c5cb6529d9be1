"""Which database a command talks to, with one precedence everywhere.

1. `--database-url URL`
2. `SYMPHONY_DATABASE_URL`
3. `database_url` in the daemon's configuration file
4. the embedded server of the `symphony up` running on `--data-dir`
   (default `./.symphony`, or `SYMPHONY_DATA_DIR`)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from symphony.config import DATA_DIR_ENV, DATABASE_URL_ENV, DEFAULT_DATA_DIR
from symphony.embedded import EmbeddedState
from symphony.errors import StartupError

_PASSWORD = re.compile(r"(?P<scheme>postgres(?:ql)?://[^:/@]*):[^@/]*@")


def redact(dsn: str) -> str:
    """The DSN without its password, fit for logs and error messages."""
    return _PASSWORD.sub(r"\g<scheme>:***@", dsn)


def data_dir_from(flag: str | None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(flag or environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def resolve(
    *,
    flag_url: str | None,
    flag_data_dir: str | None,
    config_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The DSN to use, or a StartupError that says how to give one."""
    environ = os.environ if environ is None else environ
    for candidate in (flag_url, environ.get(DATABASE_URL_ENV), config_url):
        if candidate:
            return candidate
    data_dir = data_dir_from(flag_data_dir, environ)
    state = EmbeddedState.read(data_dir)
    if state is None:
        raise StartupError(
            f"no database: give --database-url or set {DATABASE_URL_ENV}, or start "
            f"`symphony up --data-dir {data_dir}` (its embedded server is not running)"
        )
    return state.dsn
