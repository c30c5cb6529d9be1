"""Port ownership (invariant 13): the sidecar's listening and admin ports have exactly one owner.

Each test starts real `symphony sidecar` processes on 127.0.0.1 and holds
ports with real sockets of the test process (a process foreign to the
sidecar). A sidecar that cannot own its port must exit 3 with one clear line,
never serve next to another process.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from symphony import lifecycle
from symphony.errors import EXIT_STARTUP, StartupError
from tests.sidecar.conftest import WAIT_SECONDS, Keys, Sidecar, Upstream, free_port, start_sidecar



def _listener(port: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock


@pytest.fixture
def held_port() -> Iterator[socket.socket]:
    """A port held by this (foreign) process with SO_REUSEPORT set, the most permissive holder."""
    sock = _listener(0, reuse_port=True)
    yield sock
    sock.close()


def _exit_code(sidecar: Sidecar) -> int:
    try:
        return sidecar.process.wait(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        sidecar.stop(5)
        raise AssertionError(f"sidecar kept running on a port it does not own:\n{sidecar.log()[-3000:]}") from None


def _error_lines(sidecar: Sidecar) -> list[str]:
    return [line for line in sidecar.log().splitlines() if "cannot listen on" in line]


def test_foreign_process_on_the_port_makes_the_sidecar_exit_3(tmp_path: Path, module_database_url: str, keys: Keys,
                                                              upstream: Upstream,
                                                              held_port: socket.socket) -> None:
    """Goal: a foreign listener (even one that set SO_REUSEPORT) is never joined.
    Method: hold a port with SO_REUSEPORT in the test process, start a sidecar
    on it; it exits 3 with a 'cannot listen on' line and no traceback."""
    port = held_port.getsockname()[1]
    sidecar = start_sidecar(tmp_path, database_url=module_database_url, keys=keys, upstream_url=upstream.url,
                            port=port, wait_ready=False)
    assert _exit_code(sidecar) == EXIT_STARTUP
    lines = _error_lines(sidecar)
    assert lines and f":{port}" in lines[0], sidecar.log()[-3000:]
    assert "Traceback" not in sidecar.log()


def test_second_sidecar_on_a_live_port_exits_3_and_the_port_stays_exclusive(
        tmp_path: Path, module_database_url: str, keys: Keys, upstream: Upstream) -> None:
    """Goal: two sidecars never share a port, and no other process can join a live sidecar's port.
    Method: start sidecar A (2 workers); start sidecar B on A's port: B exits 3
    with a clear line while A still serves; a socket with SO_REUSEPORT cannot
    bind A's port either."""
    first = start_sidecar(tmp_path / "a", database_url=module_database_url, keys=keys, upstream_url=upstream.url,
                          workers=2)
    try:
        second = start_sidecar(tmp_path / "b", database_url=module_database_url, keys=keys,
                               upstream_url=upstream.url, port=first.port, wait_ready=False)
        assert _exit_code(second) == EXIT_STARTUP
        assert _error_lines(second), second.log()[-3000:]
        with pytest.raises(OSError) as refused:
            _listener(first.port, reuse_port=True).close()
        assert refused.value.errno is not None
        assert first.process.poll() is None
        assert first.readyz_status() is not None  # A's admin port still answers: A was not disturbed
    finally:
        assert first.stop() == 0


def test_admin_port_held_by_another_process_makes_the_sidecar_exit_3(tmp_path: Path, module_database_url: str,
                                                                     keys: Keys, upstream: Upstream,
                                                                     held_port: socket.socket) -> None:
    """Goal: the admin (metrics) port is owned exclusively too.
    Method: hold a port, give it to a sidecar as admin_port: it exits 3 with a
    line naming the admin port, and it released its listening port on the way out."""
    admin_port = held_port.getsockname()[1]
    port = free_port()
    sidecar = start_sidecar(tmp_path, database_url=module_database_url, keys=keys, upstream_url=upstream.url,
                            port=port, admin_port=admin_port, wait_ready=False)
    assert _exit_code(sidecar) == EXIT_STARTUP
    lines = [line for line in sidecar.log().splitlines() if "admin port" in line]
    assert lines and f":{admin_port}" in lines[0], sidecar.log()[-3000:]
    _listener(port, reuse_port=False).close()  # the listening port was released


async def test_every_daemons_admin_server_refuses_a_held_port(held_port: socket.socket) -> None:
    """Goal: `lifecycle.start_admin_server`, which every daemon uses for its admin
    port, never shares a port. Method: call it on a port this process holds with
    SO_REUSEPORT: StartupError (exit 3) naming the port; then on a free port it
    listens, and a SO_REUSEPORT socket cannot join it."""
    from prometheus_client import CollectorRegistry

    port = held_port.getsockname()[1]
    with pytest.raises(StartupError) as refused:
        await lifecycle.start_admin_server("127.0.0.1", port, CollectorRegistry())
    assert refused.value.exit_code == EXIT_STARTUP
    assert f"127.0.0.1:{port}" in refused.value.reason
    runner = await lifecycle.start_admin_server("127.0.0.1", 0, CollectorRegistry())
    try:
        bound = lifecycle.bound_port(runner)
        with pytest.raises(OSError):
            _listener(bound, reuse_port=True).close()
    finally:
        await runner.cleanup()
