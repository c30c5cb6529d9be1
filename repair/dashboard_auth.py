"""How a supervisor gets into the dashboard: bearer token, client certificate, or a session.

A browser cannot send a bearer header, so the token is exchanged once, on the
login form, for a session cookie: `__Host-` prefixed, `Secure; HttpOnly;
SameSite=Strict; Path=/`, with an absolute lifetime (`dashboard_session_seconds`)
and a logout. Sessions live in this process's memory, bounded in number
(`dashboard_sessions_max`, the oldest goes first): a restart logs everyone out,
and each dashboard replica has its own (the Deployment runs one).

CSRF: every state-changing form carries a token that must equal, compared in
constant time, the one the server holds: the login form's is bound to a
short-lived pre-session cookie (double submit), the logout form's to the
session. The dashboard has no other state-changing request.

Lookups never compare secrets byte by byte: the session table is keyed by the
SHA-256 of the cookie value, and tokens are compared with hmac.compare_digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

SESSION_COOKIE = "__Host-symphony_session"
LOGIN_CSRF_COOKIE = "__Host-symphony_login_csrf"
LOGIN_CSRF_SECONDS = 600


def same(given: str, expected: str) -> bool:
    """Constant-time equality of two secrets; an empty secret never matches."""
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def set_cookie(response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
    """A `__Host-` cookie: Secure, HttpOnly, SameSite=Strict, Path=/, no Domain."""
    assert name.startswith("__Host-") and max_age > 0
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="Strict")


def clear_cookie(response: web.StreamResponse, name: str) -> None:
    assert name.startswith("__Host-")
    response.del_cookie(name, path="/", secure=True, httponly=True, samesite="Strict")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Session:
    expires_at: float  # monotonic
    csrf: str


class Sessions:
    """Server-side sessions, keyed by the SHA-256 of the cookie value."""

    def __init__(self, lifetime_seconds: float, count_max: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert lifetime_seconds > 0 and count_max >= 1
        self.lifetime_seconds = lifetime_seconds
        self.count_max = count_max
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    @staticmethod
    def _key(cookie: str) -> str:
        return hashlib.sha256(cookie.encode()).hexdigest()

    def create(self) -> tuple[str, Session]:
        """A new session: (cookie value, session)."""
        self._expire()
        while len(self._sessions) >= self.count_max:
            self._sessions.popitem(last=False)  # the oldest session goes first
        cookie = new_secret()
        session = Session(self._clock() + self.lifetime_seconds, new_secret())
        self._sessions[self._key(cookie)] = session
        assert len(self._sessions) <= self.count_max
        return cookie, session

    def get(self, cookie: str) -> Session | None:
        if not cookie:
            return None
        session = self._sessions.get(self._key(cookie))
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[self._key(cookie)]
            return None
        return session

    def end(self, cookie: str) -> None:
        self._sessions.pop(self._key(cookie), None)

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]

    def __len__(self) -> int:
        return len(self._sessions)


def safe_next(target: str) -> str:
    """Where to go after login: a path on this site only (never //host or a URL)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target and "\n" not in target:
        return target
    return "/"
