"""Dashboard sessions: bounded lifetime and count, constant-time secrets, safe redirects."""

from __future__ import annotations

from repair import dashboard_auth as auth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_at_its_lifetime_and_at_logout() -> None:
    """Goal: the lifetime is absolute and logout ends a session. Method: a fake clock."""
    clock = Clock()
    sessions = auth.Sessions(lifetime_seconds=60, count_max=10, clock=clock)
    cookie, session = sessions.create()
    assert sessions.get(cookie) == session and len(session.csrf) >= 32
    clock.now += 59
    assert sessions.get(cookie) == session
    clock.now += 1
    assert sessions.get(cookie) is None and len(sessions) == 0
    other, _ = sessions.create()
    sessions.end(other)
    assert sessions.get(other) is None
    assert sessions.get("") is None and sessions.get("forged") is None


def test_the_number_of_sessions_is_bounded_oldest_first() -> None:
    """Goal: logins cannot grow the table without bound; the oldest session goes."""
    sessions = auth.Sessions(lifetime_seconds=60, count_max=3, clock=Clock())
    cookies = [sessions.create()[0] for _ in range(4)]
    assert len(sessions) == 3
    assert sessions.get(cookies[0]) is None and all(sessions.get(c) for c in cookies[1:])


def test_secrets_and_redirects() -> None:
    """Goal: an empty secret never matches; after login only local paths are followed."""
    assert auth.same("abc", "abc") and not auth.same("abc", "abd") and not auth.same("", "")
    assert auth.safe_next("/incidents/x?y=1") == "/incidents/x?y=1"
    for target in ("//evil.test/", "https://evil.test/", "/\\evil.test", "evil", ""):
        assert auth.safe_next(target) == "/"
