"""Which database a command talks to, with one precedence everywhere.

1. `--database-url URL`
2. `SYMPHONY_DATABASE_URL`
3. `SYMPHONY_DATABASE_URL_FILE`: a file holding the DSN (refused when every
   user may read it), for secrets mounted as files
4. `database_url` in the daemon's configuration file
5. the embedded server of the `symphony up` running on `--data-dir`
   (default `./.symphony`, or `SYMPHONY_DATA_DIR`)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from symphony.config import DATA_DIR_ENV, DATABASE_URL_ENV, DATABASE_URL_FILE_ENV, DEFAULT_DATA_DIR
from symphony.embedded import EmbeddedState
from symphony.errors import StartupError

_PASSWORD = re.compile(r"(?P<scheme>postgres(?:ql)?://[^:/@]*):[^@/]*@")


def redact(dsn: str) -> str:
    """The DSN without its password, fit for logs and error messages."""
    return _PASSWORD.sub(r"\g<scheme>:***@", dsn)


def read_url_file(path: Path) -> str:
    """The DSN in `path` (first line); a file every user may read is refused
    (0600, or 0640 with a group of the daemon's own, as the env files are)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise StartupError(f"{DATABASE_URL_FILE_ENV} {path}: {exc.strerror or exc}") from None
    if mode & 0o007:
        raise StartupError(f"{DATABASE_URL_FILE_ENV} {path}: every user may read it (mode "
                           f"{mode & 0o777:04o}); chmod 0600")
    if not text:
        raise StartupError(f"{DATABASE_URL_FILE_ENV} {path}: the file is empty")
    return text.splitlines()[0].strip()


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
    for candidate in (flag_url, environ.get(DATABASE_URL_ENV)):
        if candidate:
            return candidate
    if environ.get(DATABASE_URL_FILE_ENV):
        return read_url_file(Path(environ[DATABASE_URL_FILE_ENV]))
    if config_url:
        return config_url
    data_dir = data_dir_from(flag_data_dir, environ)
    state = EmbeddedState.read(data_dir)
    if state is None:
        raise StartupError(
            f"no database: give --database-url or set {DATABASE_URL_ENV}, or start "
            f"`symphony up --data-dir {data_dir}` (its embedded server is not running)"
        )
    return state.dsn
