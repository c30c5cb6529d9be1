"""The demo's SQL, now in symphony/app/demo.sql, runs against the real schema."""

from __future__ import annotations

import pytest

from symphony.app import demo
from symphony.errors import SymphonyError


async def test_demo_participants_and_their_policy_version(database_url: str) -> None:
    """Goal: the named blocks register the demo participants once and read a policy version back; an
    unknown participant is a usage error. Method: run both against a fresh migrated database, twice."""
    await demo.ensure_participants(database_url)
    await demo.ensure_participants(database_url)  # ON CONFLICT DO NOTHING: idempotent
    for participant in demo.DEMO_PARTICIPANTS:
        assert await demo._policy_version(database_url, participant) == 1
    with pytest.raises(SymphonyError) as caught:
        await demo._policy_version(database_url, "nobody")
    assert caught.value.exit_code == 2
