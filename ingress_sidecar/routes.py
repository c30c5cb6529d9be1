"""The route table: which upstream serves a path, and whether the route executes.

Matching is pure and precomputed at start: routes are ordered longest prefix
first, so the most specific route wins; a prefix matches only at a path
segment boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingress_sidecar.config import Route


@dataclass(frozen=True, slots=True)
class ResolvedRoute:
    method: str
    prefix: str
    template: str
    upstream: str  # base URL without a trailing slash
    executes: bool


# What the attestation says when no route matched: the request is still
# attested (it knocked on the door) and answered 404.
UNMATCHED = ResolvedRoute(method="*", prefix="", template="<unmatched>", upstream="", executes=False)


class RouteTable:
    def __init__(self, routes: list[Route], default_upstream: str) -> None:
        assert routes, "a route table needs at least one route"
        resolved = [
            ResolvedRoute(
                method=r.method, prefix=r.prefix, template=r.template or r.prefix,
                upstream=(r.upstream or default_upstream).rstrip("/"), executes=r.executes,
            )
            for r in routes
        ]
        # Longest prefix first; a specific method before "*" for equal prefixes.
        resolved.sort(key=lambda r: (-len(r.prefix), r.method == "*"))
        self._routes = tuple(resolved)
        self.upstreams = tuple(sorted({r.upstream for r in resolved}))

    def match(self, method: str, path: str) -> ResolvedRoute | None:
        for route in self._routes:
            if route.method != "*" and route.method != method:
                continue
            if _prefix_matches(route.prefix, path):
                return route
        return None


def _prefix_matches(prefix: str, path: str) -> bool:
    if not path.startswith(prefix):
        return False
    if len(path) == len(prefix) or prefix.endswith("/"):
        return True
    return path[len(prefix)] == "/"
