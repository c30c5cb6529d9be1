"""Pure parts of the sidecar, tested in process: ids, routes, trace context,
identity, rate limiting and the documented configuration."""

from __future__ import annotations

import datetime as dt
import logging
import time
import tomllib
from pathlib import Path

import jwt
import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress_sidecar import hlc, trace
from ingress_sidecar.config import Route, SidecarConfig
from ingress_sidecar.identity import CertificateVerifier, Identity, IdentityFailure, JwksKeys, JwtVerifier
from ingress_sidecar.ratelimit import DropCounter, SourceLimiter
from ingress_sidecar.routes import RouteTable
from symphony import config
from symphony.errors import ConfigError
from tests.sidecar.conftest import AUDIENCE, ISSUER, Keys

EXAMPLE = Path(__file__).resolve().parents[2] / "ingress_sidecar" / "config.example.toml"


# -- ids ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_snowflake_layout_round_trips() -> None:
    """Goal: the documented layout (41 | 10 | 12 bits, custom epoch, sign bit 0)."""
    unix_ms = hlc.EPOCH_UNIX_MS + 123_456
    issued = hlc.compose(123_456, 777, 4095)
    assert issued < 2**63 and hlc.decompose(issued) == (unix_ms, 777, 4095)
    assert hlc.EPOCH_UNIX_MS == int(dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)


def test_clock_step_back_within_and_beyond_the_max_offset() -> None:
    """Goal: invariant 5. Method: step an injected clock back by less, then more,
    than the max offset; ids stay monotonic, then the generator refuses, then
    recovers when the wall clock catches up."""
    clock = FakeClock(hlc.EPOCH_UNIX_MS + 10_000)
    generator = hlc.HybridClock(5, offset_ms_max=500, clock=clock)
    first = generator.next_id()
    clock.ms -= 300
    second, third = generator.next_id(), generator.next_id()
    assert first < second < third and generator.offset_ms() == 300
    clock.ms -= 300  # now 600 ms behind the last id
    with pytest.raises(hlc.ClockRefused) as refused:
        generator.next_id()
    assert refused.value.offset_ms == 600
    clock.ms += 700
    assert generator.next_id() > third


def test_counter_overflow_waits_for_next_millisecond() -> None:
    clock = FakeClock(hlc.EPOCH_UNIX_MS + 1)
    generator = hlc.HybridClock(1, clock=clock)
    ids = [generator.next_id() for _ in range(hlc.COUNTER_MAX + 1)]
    with pytest.raises(hlc.CounterExhausted):
        generator.next_id()
    clock.ms += 1
    assert generator.next_id() > ids[-1]


def test_remote_hlc_advances_within_the_max_offset() -> None:
    clock = FakeClock(hlc.EPOCH_UNIX_MS + 50_000)
    generator = hlc.HybridClock(2, offset_ms_max=500, clock=clock)
    remote = hlc.compose(50_000 + 200 , 9, 7)
    assert generator.observe(remote)
    assert generator.next_id() > remote
    far = hlc.compose(50_000 + 10_000, 9, 0)
    assert not generator.observe(far), "a remote clock too far ahead is clamped"
    assert generator.offset_ms() <= 500
    assert generator.next_id() < far


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-400, 400), st.integers(0, 1), st.integers(0, 2**20)), min_size=1, max_size=300))
def test_ids_never_go_backwards(steps: list[tuple[int, int, int]]) -> None:
    """Property: whatever the clock and remote ids do, issued ids strictly increase."""
    clock = FakeClock(hlc.EPOCH_UNIX_MS + 1_000_000)
    generator = hlc.HybridClock(3, offset_ms_max=500, clock=clock)
    last = 0
    for step, observe, remote_delta in steps:
        clock.ms += step
        if observe:
            generator.observe(hlc.compose(1_000_000 + remote_delta % 2000, 1, 0))
        try:
            issued = generator.next_id()
        except (hlc.ClockRefused, hlc.CounterExhausted):
            continue
        assert issued > last
        last = issued


def test_file_offset_clock(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    clock = hlc.file_offset_clock(path, base=lambda: 1000)
    assert clock() == 1000
    path.write_text("-250")
    assert clock() == 750


# -- routes and trace ---------------------------------------------------------------


def test_route_table_longest_prefix_at_segment_boundary() -> None:
    table = RouteTable([
        Route(method="POST", prefix="/v1/payments", executes=True),
        Route(method="GET", prefix="/v1/payments/", template="/v1/payments/{id}"),
        Route(method="*", prefix="/v1", upstream="http://other:1"),
    ], "http://svc:8000/")
    assert table.match("POST", "/v1/payments").executes
    assert table.match("GET", "/v1/payments/9").template == "/v1/payments/{id}"
    assert table.match("POST", "/v1/paymentsX").upstream == "http://other:1"
    assert table.match("GET", "/v2") is None
    assert table.match("POST", "/v1/payments").upstream == "http://svc:8000"


def test_traceparent_continued_or_started() -> None:
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    out = trace.continue_or_start(incoming)
    assert out.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and out.endswith("-01")
    assert out.split("-")[2] != "00f067aa0ba902b7"
    for bad in (None, "", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "ff-" + incoming[3:]):
        assert trace.parse(trace.continue_or_start(bad)) is not None
        assert trace.parse(bad) is None


# -- identity -----------------------------------------------------------------------


def _verifier(keys: Keys) -> JwtVerifier:
    jwks = JwksKeys(keys.jwks)
    jwks.reload_if_changed()
    return JwtVerifier(jwks, issuer=ISSUER, audience=AUDIENCE, leeway_seconds=5)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_jwt_accepted_algorithms(keys: Keys, alg: str) -> None:
    result = _verifier(keys).verify(keys.token("mfi-b", pv=3, alg=alg))
    assert result == Identity("mfi-b", "jwt", f"test-{alg.lower()}", 3)


def test_jwt_refusals(keys: Keys) -> None:
    """Goal: forged, expired, wrong-audience, alg=none and HS256-with-public-key
    tokens are refused with their reason (the 401 and the attestation carry it)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives import serialization

    verifier = _verifier(keys)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bank-a", "pv": 1, "exp": now + 60}
    forged = jwt.encode(claims, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "test-eddsa"})
    public_pem = keys.ed25519.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    import hmac, hashlib, base64, json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(json.dumps({"alg": "HS256", "kid": "test-eddsa"}).encode()) + "." + b64(json.dumps(claims).encode())
    hs256 = signing_input + "." + b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    none = b64(json.dumps({"alg": "none", "kid": "test-eddsa"}).encode()) + "." + b64(json.dumps(claims).encode()) + "."
    cases = {
        forged: "bad_signature",
        keys.token(lifetime=-120): "token_expired",
        keys.token(aud="someone-else"): "wrong_audience",
        keys.token(iss="mallory"): "wrong_issuer",
        keys.token(nbf=now + 3600): "token_not_yet_valid",
        none: "unsupported_alg",
        hs256: "unsupported_alg",
        keys.token(kid="nope"): "unknown_kid",
        keys.token(alg="ES256", kid="test-eddsa"): "alg_mismatch",
        keys.token(pv="1"): "invalid_pv",
        "not.a.token": "malformed_token",
    }
    for token, reason in cases.items():
        result = verifier.verify(token)
        assert isinstance(result, IdentityFailure) and result.status == 401, (reason, result)
        assert result.reason == reason, (reason, result)


def test_cached_token_still_expires(keys: Keys) -> None:
    verifier = _verifier(keys)
    token = keys.token(lifetime=10)
    assert isinstance(verifier.verify(token), Identity)
    later = verifier.verify(token, now=time.time() + 60)
    assert isinstance(later, IdentityFailure) and later.reason == "token_expired"


def _certificate(uri: str, lifetime: dt.timedelta) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")])
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    from cryptography.hazmat.primitives import serialization

    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + lifetime)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def test_client_certificate_spiffe_and_lifetime() -> None:
    verifier = CertificateVerifier(trust_domain="symphony.test", lifetime_seconds_max=4 * 3600)
    ok = verifier.verify(_certificate("spiffe://symphony.test/participant/bank-a", dt.timedelta(hours=1)))
    assert isinstance(ok, Identity) and ok.participant_id == "bank-a" and ok.auth_method == "mtls"
    long = verifier.verify(_certificate("spiffe://symphony.test/participant/bank-a", dt.timedelta(hours=24)))
    assert isinstance(long, IdentityFailure) and (long.status, long.reason) == (403, "certificate_lifetime_exceeds_max")
    other = verifier.verify(_certificate("spiffe://elsewhere/participant/bank-a", dt.timedelta(hours=1)))
    assert isinstance(other, IdentityFailure) and other.reason == "no_spiffe_participant"


# -- rate limiting --------------------------------------------------------------------


def test_source_limiter_and_drop_counter() -> None:
    limiter = SourceLimiter(rate_per_second=1.0, burst=3, sources_max=2)
    assert [limiter.allow("a", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("a", now=1.0)
    assert limiter.allow("b", now=1.0) and limiter.allow("c", now=1.0)
    drops = DropCounter()
    drops.add("rate_limited_unauthenticated")
    drops.add("rate_limited_unauthenticated")
    start, end, counts = drops.take()
    assert counts == {"rate_limited_unauthenticated": 2} and start <= end and not drops.pending()


# -- configuration ----------------------------------------------------------------------


def test_config_example_documents_every_key_with_its_default() -> None:
    """Goal: config.example.toml is the documentation; it must match the struct exactly."""
    with EXAMPLE.open("rb") as handle:
        documented = tomllib.load(handle)
    fields = {f.name for f in msgspec.structs.fields(SidecarConfig)}
    assert set(documented) == fields
    loaded = config.load(SidecarConfig, "sidecar", EXAMPLE, environ={})
    assert msgspec.to_builtins(loaded) == msgspec.to_builtins(SidecarConfig())


def test_invalid_config_is_refused_with_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('durability = "sometimes"\n')
    with pytest.raises(ConfigError, match="durability"):
        config.load(SidecarConfig, "sidecar", bad, environ={})
    with pytest.raises(ConfigError, match="clock_offset_ms_max"):
        config.load(SidecarConfig, "sidecar", None, environ={"SYMPHONY_SIDECAR_CLOCK_OFFSET_MS_MAX": "0"})


def test_up_component_runs_the_sidecar_in_front_of_the_service(tmp_path: Path) -> None:
    """Goal: `symphony up` starts the sidecar with the data dir's keys and journal,
    pointed at the service URL that payments_service.up publishes on the context."""
    from ingress_sidecar import up
    from symphony.components import UpContext

    ctx = UpContext(data_dir=tmp_path, database_url="postgresql://u@127.0.0.1:1/db", node_id="node-x")
    ctx.service_url = "http://127.0.0.1:18123"  # type: ignore[attr-defined]
    (spec,) = up.components(ctx)
    assert spec.argv[-3:] == ["sidecar", "--data-dir", str(tmp_path)]
    assert spec.env["SYMPHONY_SIDECAR_UPSTREAM_URL"] == "http://127.0.0.1:18123"
    assert spec.env["SYMPHONY_SIDECAR_NODE_ID"] == "node-x"
    assert spec.wait_port == int(spec.env["SYMPHONY_SIDECAR_LISTEN_PORT"])
    loaded = config.load(SidecarConfig, "sidecar", None, environ=spec.env)
    assert loaded.upstream_url == "http://127.0.0.1:18123" and loaded.workers == 2


# -- bounded logs and caches ------------------------------------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_journal_refusal_log_is_one_line_per_interval_with_a_count() -> None:
    """Goal: a full journal refusing every request does not write a line per request.
    Method: 10,000 refusals within one interval (fake clock) give one line at
    once; after the interval, flush() writes one line saying 9,999; the counts
    of all lines add up to the refusals (nothing uncounted)."""
    from ingress_sidecar.ratelimit import RefusalLog

    now = [100.0]
    logger = logging.getLogger("test.refusals")
    lines = _Lines()
    logger.addHandler(lines)
    try:
        refusals = RefusalLog(logger, "journal refused", interval_seconds=10.0, clock=lambda: now[0])
        for _ in range(10_000):
            refusals.refused("journal_full", detail="no space")
        refusals.flush()
        assert [r.refused for r in lines.records] == [1]  # type: ignore[attr-defined]
        now[0] += 10.0
        refusals.flush()
        refusals.flush()
        refusals.refused("journal_io_error")
        counts = [(r.reason, r.refused) for r in lines.records]  # type: ignore[attr-defined]
        assert counts == [("journal_full", 1), ("journal_full", 9_999), ("journal_io_error", 1)]
        assert sum(count for _, count in counts) == 10_001
    finally:
        logger.removeHandler(lines)


def test_jwt_cache_evicts_least_recently_used_not_everything(keys: Keys) -> None:
    """Goal: a full token cache evicts one entry (the least recently used), never
    empties itself. Method: a 3-entry cache; verify tokens A, B, C, use A again,
    add D: B (least recently used) is gone, A, C, D stay cached (same objects)."""
    jwks = JwksKeys(keys.jwks)
    jwks.reload_if_changed()
    verifier = JwtVerifier(jwks, issuer=ISSUER, audience=AUDIENCE, leeway_seconds=5, cache_entries_max=3)
    tokens = {name: keys.token(sub="bank-a", jti=name) for name in "ABCD"}
    for name in "ABC":
        assert isinstance(verifier.verify(tokens[name]), Identity)
    assert verifier.verify(tokens["A"]) is verifier._cache[tokens["A"]].identity  # noqa: SLF001
    assert isinstance(verifier.verify(tokens["D"]), Identity)
    cached = set(verifier._cache)  # noqa: SLF001
    assert cached == {tokens["A"], tokens["C"], tokens["D"]}


def test_certificate_cache_evicts_least_recently_used() -> None:
    """Goal: the client-certificate cache is bounded the same way. Method: a
    2-entry cache; three distinct (unparseable) certificates: the first is
    evicted after the third, the most recently used stays."""
    verifier = CertificateVerifier(trust_domain="example.org", lifetime_seconds_max=3600, cache_entries_max=2)
    for der in (b"one", b"two", b"one", b"three"):
        assert isinstance(verifier.verify(der), IdentityFailure)
    assert list(verifier._cache) == [b"one", b"three"]  # noqa: SLF001
