"""Nothing a client sends decides anything: the HLC header, underscore header
variants and the test clock file, each tried as an attacker would.

The sidecar runs as a real process on 127.0.0.1; requests are sent raw where
a client library could normalise what the attacker sends.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ingress_sidecar import config as sidecar_config
from ingress_sidecar import hlc
from symphony import upstream_headers as uh
from symphony.app import chaos
from symphony.errors import EXIT_USAGE, ConfigError
from tests.sidecar.conftest import WAIT_SECONDS, Keys, Sidecar, Upstream, start_sidecar


AHEAD_MS = 4000  # far enough ahead that the wall clock cannot catch up during a test


@pytest.fixture(scope="module")
def peer_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ed25519PrivateKey, Path]:
    """A peer sidecar's signing key; its public half is configured as an HLC peer."""
    key = Ed25519PrivateKey.generate()
    path = tmp_path_factory.mktemp("peer") / "peer.pub.pem"
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, path


@pytest.fixture(scope="module")
def sidecar(sidecar_factory: Any, module_database_url: str, upstream: Upstream,
            peer_key: tuple[Ed25519PrivateKey, Path]) -> Sidecar:
    return sidecar_factory(module_database_url, upstream.url, extra={
        "hlc_peer_public_key_files": [str(peer_key[1])], "clock_offset_ms_max": 2 * AHEAD_MS})


async def _raw(sidecar: Sidecar, method: str, path: str, headers: list[tuple[str, str]],
               body: bytes = b"") -> tuple[int, dict[str, str]]:
    """One request over a raw socket (header names exactly as given); (status, lower-cased headers)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    try:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{n}: {v}" for n, v in headers),
                 f"Content-Length: {len(body)}", "Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode() + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=WAIT_SECONDS)
    finally:
        writer.close()
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    fields = dict((name.strip().lower(), value.strip()) for name, _, value in (h.partition(":") for h in head[1:]))
    return int(head[0].split()[1]), fields


def _ahead_id() -> int:
    return hlc.compose(time.time_ns() // 1_000_000 + AHEAD_MS - hlc.EPOCH_UNIX_MS, 3, 0)


def _ms(attestation_id: str) -> int:
    return hlc.decompose(int(attestation_id))[0]


async def test_unauthenticated_or_unsigned_hlc_cannot_move_the_clock(
        sidecar: Sidecar, keys: Keys, peer_key: tuple[Ed25519PrivateKey, Path]) -> None:
    """Goal: X-Symphony-HLC counts only after identity and only when a peer sidecar signed it.
    Method: a remote id 4 s ahead is sent (a) without credentials, even with a
    valid peer signature, (b) with a valid token but unsigned, (c) signed by a
    key that is not a peer; the ids issued stay below the remote time. Control
    (d): a valid token and a peer's signature does move the clock, so the
    header is read and the checks are not vacuous."""
    token = f"Bearer {keys.token()}"
    remote = _ahead_id()
    signed = uh.sign_hlc(peer_key[0], remote)
    stranger = uh.sign_hlc(Ed25519PrivateKey.generate(), remote)
    remote_ms = hlc.decompose(remote)[0]
    attempts = [
        [(uh.HLC, str(remote)), (uh.HLC_SIGNATURE, signed)],
        [("Authorization", token), (uh.HLC, str(remote))],
        [("Authorization", token), (uh.HLC, str(remote)), (uh.HLC_SIGNATURE, stranger)],
        [("Authorization", token), ("X_Symphony_HLC", str(remote)), ("x-symphony-hlc-signature", "v1;kid=x;sig=y")],
    ]
    for headers in attempts:
        status, answer = await _raw(sidecar, "GET", "/v1/payments/1", headers)
        assert status in (200, 401), status
        assert _ms(answer["x-symphony-attestation-id"]) < remote_ms, headers
    status, answer = await _raw(sidecar, "GET", "/v1/payments/1", [("Authorization", token)])
    assert status == 200 and _ms(answer["x-symphony-attestation-id"]) < remote_ms
    status, answer = await _raw(sidecar, "GET", "/v1/payments/1",
                                [("Authorization", token), (uh.HLC, str(remote)), (uh.HLC_SIGNATURE, signed)])
    assert status == 200
    assert _ms(answer["x-symphony-attestation-id"]) >= remote_ms + 1, "a peer's signed HLC is observed"


def test_hlc_verifier_refuses_malformed_values(peer_key: tuple[Ed25519PrivateKey, Path]) -> None:
    """Goal: only a decimal, in-range, peer-signed id is returned. Method: a
    valid pair verifies; non-ASCII digits, signs, overflow and tampering give None."""
    key = peer_key[0]
    verifier = uh.HlcVerifier([key.public_key()])
    good = _ahead_id()
    assert verifier.verify(str(good), uh.sign_hlc(key, good)) == good
    signature = uh.sign_hlc(key, good)
    for text in ("²", f"+{good}", f" {good}", str(good + 1), str(1 << 63), "", "0x5"):
        assert verifier.verify(text, signature) is None, text
    assert verifier.verify(str(good), None) is None
    assert verifier.verify(str(good), signature.replace("v1;", "v2;")) is None


async def test_underscore_variants_of_symphony_headers_never_reach_the_upstream(
        sidecar: Sidecar, keys: Keys, upstream: Upstream) -> None:
    """Goal: invariant 9 with header names normalised: `_` variants are stripped too.
    Method: a raw request carries X_Symphony_Participant, x_symphony_stream and
    other spellings with the value 'evil'; the upstream receives the sidecar's
    own signed headers (the real participant) and no header, compared
    case-insensitively with `_` folded to `-`, holding 'evil'."""
    before = len(upstream.received)
    spoofed = [("X_Symphony_Participant", "evil"), ("x_symphony_stream", "evil/0/1"),
               ("X-SYMPHONY_POLICY-VERSION", "evil"), ("X_SYMPHONY_ATTESTATION_ID", "evil"),
               ("x-symphony-participant", "evil"), ("X_Symphony_Signature", "evil")]
    status, _ = await _raw(sidecar, "POST", "/v1/payments",
                           [("Authorization", f"Bearer {keys.token()}"), *spoofed], b"{}")
    assert status == 201
    assert len(upstream.received) == before + 1
    received = upstream.received[-1]["header_list"]
    symphony = [(name.lower().replace("_", "-"), value) for name, value in received
                if name.lower().replace("_", "-").startswith("x-symphony-")]
    assert ("x-symphony-participant", "bank-a") in symphony
    assert not [pair for pair in symphony if "evil" in pair[1]], symphony
    assert len([name for name, _ in symphony if name == "x-symphony-participant"]) == 1


def test_test_clock_file_is_refused_without_the_explicit_flag(tmp_path: Path) -> None:
    """Goal: the test clock cannot be switched on by a stray setting. Method:
    load the configuration with a clock file: ConfigError naming the flag;
    with the flag (as `symphony up` with chaos = true sets it) it loads."""
    clock = tmp_path / "offset"
    clock.write_text("0")
    with pytest.raises(ConfigError) as refused:
        sidecar_config.config.load(sidecar_config.SidecarConfig, "sidecar", None,
                                   environ={"SYMPHONY_SIDECAR_TEST_CLOCK_FILE": str(clock)})
    assert "test_clock_allowed" in refused.value.reason
    loaded = sidecar_config.config.load(sidecar_config.SidecarConfig, "sidecar", None,
                                        environ=chaos.child_environment(tmp_path))
    assert loaded.test_clock_file and loaded.test_clock_allowed


def test_sidecar_with_a_clock_file_but_no_flag_exits_2(tmp_path: Path, module_database_url: str, keys: Keys,
                                                       upstream: Upstream) -> None:
    """Goal: a real sidecar refuses the clock file without the flag. Method:
    start `symphony sidecar` with test_clock_file only: exit 2 and one line
    naming test_clock_allowed, no traceback."""
    clock = tmp_path / "offset"
    clock.write_text("0")
    sidecar = start_sidecar(tmp_path, database_url=module_database_url, keys=keys, upstream_url=upstream.url,
                            extra={"test_clock_file": str(clock)}, wait_ready=False)
    try:
        code = sidecar.process.wait(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        sidecar.stop(5)
        raise AssertionError("sidecar started with a test clock file and no test flag") from None
    assert code == EXIT_USAGE
    assert "test_clock_allowed" in sidecar.log() and "Traceback" not in sidecar.log()
