"""The journal's one error tree.

JournalError is the base; callers catch the leaf they can act on:
JournalFull (no space or size cap: answer 503 and alarm), JournalIOError (the
disk failed: stop writing), JournalCorrupt (the journal is not what was
written: refuse and investigate) and JournalLocked (another writer owns the
stream). Programmer errors (a wrong type, a body larger than a segment) are
ValueError/TypeError, not JournalError.
"""

from __future__ import annotations

import errno
import os


class JournalError(Exception):
    """Base class of every operating error the journal reports."""


class JournalFull(JournalError):
    """No room for the record: the disk is full, a quota or the size cap is reached.

    Nothing of the refused record is visible; the writer stays usable and the
    next append succeeds once space is released.
    """


class JournalIOError(JournalError):
    """The operating system reported an I/O error; `errno` names it.

    After a failed sync the writer refuses further appends: whether the failed
    pages reached the disk is unknowable, so continuing would risk acknowledging
    records that are not durable.
    """

    def __init__(self, message: str, error_number: int | None = None) -> None:
        super().__init__(message)
        self.errno = error_number


class JournalCorrupt(JournalError):
    """A record (or segment header) is not valid where a valid one must be.

    `seq` is the first sequence number that cannot be vouched for; `reason`
    says which rule of journal/FORMAT.md it breaks.
    """

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


class JournalLocked(JournalError):
    """Another writer (in this or another process) holds the stream's lock."""


# Allocation failures that mean "no space" rather than "broken disk".
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def os_error(error_number: int, what: str) -> JournalError:
    """The journal error for an errno returned by the C core or the OS."""
    message = f"{what}: {os.strerror(error_number)} (errno {errno.errorcode.get(error_number, error_number)})"
    if error_number in _FULL_ERRNOS:
        return JournalFull(message)
    return JournalIOError(message, error_number)
