"""What a detector finds: the `Finding`s of one kind, and whether the scan was complete.

Its own small module so that `repair.detectors` (which produces findings) and
`repair.store` (which turns them into incidents) share the type without
importing each other.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

KINDS = ("GHOST", "OUTCOME_MISSING", "ZOMBIE", "STUCK_KEY", "SEQ_GAP", "CHAIN_BREAK", "NODE_SILENT", "DEAD_LETTER",
         "CLOCK_BACKWARDS", "UNATTESTED_EXECUTION")


@dataclass(frozen=True)
class Finding:
    kind: str
    dedup_key: str
    severity: str
    subject: str
    evidence: dict[str, Any]
    participant_id: str | None = None
    node_id: str | None = None
    stream_id: int | None = None

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind
        assert self.severity in ("CRITICAL", "HIGH", "MEDIUM", "LOW"), self.severity
        assert self.dedup_key, "a finding needs a dedup key"


@dataclass
class Findings:
    kind: str
    items: list[Finding] = field(default_factory=list)
    complete: bool = True
    # Incidents about records older than this are not auto-resolved (out of scan).
    scope_since: dt.datetime = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
