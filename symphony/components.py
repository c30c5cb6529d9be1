"""What a daemon tells `symphony up` about itself, and what `up` tells it.

Each daemon package provides a module `<package>.up` with
`components(ctx: UpContext) -> list[ChildSpec]`. The types live in the core so
that a daemon can describe its processes without importing the application
layer (`symphony.app.up`), which imports every daemon.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from symphony.errors import StartupError


@dataclass
class UpContext:
    """What `up` knows that components need to build their command lines."""

    data_dir: Path
    database_url: str
    node_id: str = "node-local"
    log_origin_prefix: str = "symphony.example/local"
    chaos: bool = False
    # Per daemon (symphony.db.roles.GROUPS), the DSN of its own login role;
    # empty when `up` may not create roles (then every daemon gets database_url).
    role_urls: dict[str, str] = field(default_factory=dict)
    _taken: set[int] = field(default_factory=set)

    def dsn_for(self, daemon: str) -> str:
        """The DSN `daemon` connects with: its own role's, else the shared one.

        Give it to the child in its environment (SYMPHONY_DATABASE_URL), never in
        its argv: /proc/<pid>/cmdline is readable by every local user.
        """
        return self.role_urls.get(daemon, self.database_url)

    def free_port(self) -> int:
        """A TCP port on 127.0.0.1 nobody listens on (and `up` has not handed out)."""
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in self._taken:
                self._taken.add(port)
                return port
        raise StartupError("no free TCP port on 127.0.0.1")

    def path(self, *parts: str) -> Path:
        """A path under the data dir, its parent created."""
        target = self.data_dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


@dataclass
class ChildSpec:
    """One daemon process `up` runs."""

    name: str
    argv: list[str]
    endpoints: dict[str, str] = field(default_factory=dict)
    wait_port: int | None = None  # `up` waits until this port accepts connections
    env: dict[str, str] = field(default_factory=dict)
