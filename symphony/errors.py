"""One error type for every failure an operator can act on, and the exit codes.

The CLI turns a `SymphonyError` into one line on stderr and its exit code, so an
operating error never shows a traceback. Programmer errors (bugs) are left to
propagate: they are assertions, not conditions to handle.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1  # audit/verify found something: the command worked
EXIT_USAGE = 2  # bad flags, bad configuration, bad input
EXIT_STARTUP = 3  # could not start: database unreachable or too old, port in use
EXIT_RUNTIME = 4  # a daemon failed after it had started


class SymphonyError(Exception):
    """An error with a reason an operator can act on, and the exit code to use."""

    exit_code: int = EXIT_RUNTIME

    def __init__(self, reason: str, *, exit_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(SymphonyError):
    """Configuration refused at start: names the key and the reason."""

    exit_code = EXIT_USAGE


class StartupError(SymphonyError):
    """A dependency needed to start (database, port, data dir) is not usable."""

    exit_code = EXIT_STARTUP


class DatabaseError(SymphonyError):
    """The database refused or failed an operation that the caller cannot retry."""

    exit_code = EXIT_RUNTIME
