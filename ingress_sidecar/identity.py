"""Who is calling: a verified JWT or a verified client certificate, never a header.

JWT: the JWKS file (RFC 7517) is the only source of keys; it is re-read when it
changes. Only EdDSA (Ed25519), ES256 (P-256) and RS256 are accepted, and the
algorithm a token names must be the one its key (found by `kid`) is for, so
`alg=none` and HS256 signed with a public key are refused before any
signature check. `iss`, `aud`, `exp` and `nbf` are checked with a small
leeway; `sub` is the participant and `pv` its policy version. A verified token
is cached until it expires (its time claims are checked again on every use),
so a busy participant costs one signature check per token, not per request.
The cache is bounded (TOKEN_CACHE_MAX) and evicts the least recently used
token when full, so a flood of new tokens never empties it for everyone at
once; the certificate cache does the same.

mTLS: the TLS layer verifies the chain against the client CA; here the
participant comes from a URI SAN `spiffe://<trust domain>/participant/<id>`,
and a certificate whose lifetime (notAfter − notBefore) exceeds the configured
maximum is refused (short-lived certificates bound revocation, invariant 10).

Every failure has a short machine-readable reason that the INGRESS record and
the 401/403 answer carry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography import x509

log = logging.getLogger("sidecar.identity")

ALGORITHMS = ("EdDSA", "ES256", "RS256")
TOKEN_CACHE_MAX = 10_000
CERT_CACHE_MAX = 1_000


@dataclass(frozen=True, slots=True)
class Identity:
    participant_id: str
    auth_method: str  # "jwt" or "mtls"
    key_id: str  # JWT kid, or SHA-256 of the client certificate (hex)
    policy_version: int  # the token's pv; 0 for certificates (no claim to compare)


@dataclass(frozen=True, slots=True)
class IdentityFailure:
    reason: str
    status: int  # 401 (no or invalid credentials) or 403 (valid but not acceptable)
    auth_method: str = "none"
    key_id: str = ""


@dataclass(frozen=True, slots=True)
class _CachedToken:
    identity: Identity
    expires_at: float
    not_before: float


def _algorithm_for(jwk: dict[str, object]) -> str | None:
    """The one algorithm a JWK may verify, or None if the key is not acceptable."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "OKP" and crv == "Ed25519":
        expected = "EdDSA"
    elif kty == "EC" and crv == "P-256":
        expected = "ES256"
    elif kty == "RSA":
        expected = "RS256"
    else:
        return None  # symmetric ("oct") and other keys are never trusted
    declared = jwk.get("alg")
    if declared is not None and declared != expected:
        return None
    return expected


class JwksKeys:
    """kid → (algorithm, public key), reloaded when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime_ns = -1
        self.keys: dict[str, tuple[str, jwt.PyJWK]] = {}
        self.generation = 0

    def reload_if_changed(self) -> bool:
        """Re-read the file if its mtime or size changed; keep the old keys on error."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            if self.keys:
                log.warning("JWKS file disappeared; keeping the keys loaded before", extra={"path": str(self.path)})
            return False
        stamp = stat.st_mtime_ns ^ (stat.st_size << 1)
        if stamp == self._mtime_ns:
            return False
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            keys = self._parse(document)
        except (OSError, ValueError, TypeError) as exc:
            log.error("JWKS file not loaded; keeping the previous keys", extra={"path": str(self.path), "error": str(exc)})
            return False
        self._mtime_ns = stamp
        self.keys = keys
        self.generation += 1
        log.info("JWKS loaded", extra={"path": str(self.path), "keys": len(keys)})
        return True

    @staticmethod
    def _parse(document: object) -> dict[str, tuple[str, jwt.PyJWK]]:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWKS document (no 'keys' list)")
        keys: dict[str, tuple[str, jwt.PyJWK]] = {}
        for jwk in document["keys"]:
            if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
                continue
            algorithm = _algorithm_for(jwk)
            if algorithm is None:
                log.warning("JWKS key skipped: not an EdDSA/ES256/RS256 key", extra={"kid": jwk.get("kid")})
                continue
            try:
                keys[jwk["kid"]] = (algorithm, jwt.PyJWK(jwk, algorithm))
            except jwt.exceptions.PyJWKError as exc:
                log.warning("JWKS key skipped", extra={"kid": jwk["kid"], "error": str(exc)})
        return keys


_JWT_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token_expired"),
    (jwt.ImmatureSignatureError, "token_not_yet_valid"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidAlgorithmError, "unsupported_alg"),
)


class JwtVerifier:
    def __init__(self, keys: JwksKeys, *, issuer: str, audience: str, leeway_seconds: int,
                 cache_entries_max: int = TOKEN_CACHE_MAX) -> None:
        assert cache_entries_max >= 1, cache_entries_max
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway_seconds
        self.cache_entries_max = cache_entries_max
        self._cache: OrderedDict[str, _CachedToken] = OrderedDict()  # least recently used first
        self._cache_generation = keys.generation

    def verify(self, token: str, *, now: float | None = None) -> Identity | IdentityFailure:
        current = time.time() if now is None else now
        if self._cache_generation != self.keys.generation:
            self._cache.clear()  # keys changed: a removed key must stop working now
            self._cache_generation = self.keys.generation
        cached = self._cache.get(token)
        if cached is not None:
            if current > cached.expires_at + self.leeway:
                del self._cache[token]
                return IdentityFailure("token_expired", 401, "jwt", cached.identity.key_id)
            if current < cached.not_before - self.leeway:
                return IdentityFailure("token_not_yet_valid", 401, "jwt", cached.identity.key_id)
            self._cache.move_to_end(token)
            return cached.identity
        result = self._verify_uncached(token)
        if isinstance(result, _CachedToken):
            if len(self._cache) >= self.cache_entries_max:
                self._cache.popitem(last=False)  # the least recently used token only
            self._cache[token] = result
            return result.identity
        return result

    def _verify_uncached(self, token: str) -> _CachedToken | IdentityFailure:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            return IdentityFailure("malformed_token", 401, "jwt")
        algorithm, kid = header.get("alg"), header.get("kid")
        kid_text = kid if isinstance(kid, str) else ""
        if algorithm not in ALGORITHMS:
            return IdentityFailure("unsupported_alg", 401, "jwt", kid_text)
        entry = self.keys.keys.get(kid_text)
        if entry is None:
            return IdentityFailure("unknown_kid", 401, "jwt", kid_text)
        key_algorithm, key = entry
        if key_algorithm != algorithm:
            return IdentityFailure("alg_mismatch", 401, "jwt", kid_text)
        try:
            claims = jwt.decode(
                token, key, algorithms=[key_algorithm], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            return IdentityFailure(_jwt_reason(exc), 401, "jwt", kid_text)
        participant, policy_version = claims.get("sub"), claims.get("pv")
        if not isinstance(participant, str) or not 0 < len(participant) <= 128:
            return IdentityFailure("invalid_sub", 401, "jwt", kid_text)
        if not isinstance(policy_version, int) or isinstance(policy_version, bool) or policy_version < 1:
            return IdentityFailure("invalid_pv", 401, "jwt", kid_text)
        identity = Identity(participant, "jwt", kid_text, policy_version)
        not_before = claims.get("nbf", 0)
        return _CachedToken(identity, float(claims["exp"]), float(not_before) if isinstance(not_before, (int, float)) else 0.0)


def _jwt_reason(exc: Exception) -> str:
    for exc_type, reason in _JWT_REASONS:
        if isinstance(exc, exc_type):
            return reason
    return "invalid_token"


class CertificateVerifier:
    """Participant from a verified client certificate's SPIFFE URI SAN."""

    def __init__(self, *, trust_domain: str, lifetime_seconds_max: int,
                 cache_entries_max: int = CERT_CACHE_MAX) -> None:
        assert cache_entries_max >= 1, cache_entries_max
        self.trust_domain = trust_domain
        self.lifetime_seconds_max = lifetime_seconds_max
        self.cache_entries_max = cache_entries_max
        self._cache: OrderedDict[bytes, Identity | IdentityFailure] = OrderedDict()  # least recently used first

    def verify(self, der: bytes) -> Identity | IdentityFailure:
        cached = self._cache.get(der)
        if cached is None:
            cached = self._verify_uncached(der)
            if len(self._cache) >= self.cache_entries_max:
                self._cache.popitem(last=False)  # the least recently used certificate only
            self._cache[der] = cached
        else:
            self._cache.move_to_end(der)
        return cached

    def _verify_uncached(self, der: bytes) -> Identity | IdentityFailure:
        fingerprint = hashlib.sha256(der).hexdigest()
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            return IdentityFailure("malformed_certificate", 401, "mtls", fingerprint)
        lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        if lifetime.total_seconds() > self.lifetime_seconds_max:
            return IdentityFailure("certificate_lifetime_exceeds_max", 403, "mtls", fingerprint)
        participant = self._participant_from(certificate)
        if participant is None:
            return IdentityFailure("no_spiffe_participant", 401, "mtls", fingerprint)
        return Identity(participant, "mtls", fingerprint, 0)

    def _participant_from(self, certificate: x509.Certificate) -> str | None:
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return None
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            if not uri.startswith("spiffe://"):
                continue
            domain, _, path = uri[len("spiffe://"):].partition("/")
            if self.trust_domain and domain != self.trust_domain:
                continue
            kind, _, participant = path.partition("/")
            if kind == "participant" and participant and "/" not in participant and len(participant) <= 128:
                return participant
        return None
