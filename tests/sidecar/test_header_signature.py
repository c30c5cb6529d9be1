"""The upstream header signature (invariant 9): v1 per request and v2 Merkle batches.

Pure tests of symphony/upstream_headers.py: a service that verifies must accept
exactly the header sets a sidecar key signed, in either form, and refuse any
header changed after signing, a path taken from another batch, or another key.
"""

from __future__ import annotations

import hashlib
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from symphony import upstream_headers as uh

BODY = b'{"amount_minor": 100}'


def _attested(seq: int, participant: str = "bank-a") -> uh.Attested:
    return uh.Attested(attestation_id=1000 + seq, node_id="node-a", stream_id=0, stream_seq=seq,
                       participant_id=participant, policy_version=3,
                       body_sha256_hex=hashlib.sha256(BODY).hexdigest())


@given(st.integers(min_value=1, max_value=70))
@settings(max_examples=40, deadline=None)
def test_merkle_path_of_every_leaf_leads_to_the_root(count: int) -> None:
    """Goal: every leaf's path walks to the one root, for every batch size (odd
    levels carry a node up). Method: build paths, recompute each root, then
    check that a wrong index or a shortened path leads nowhere else valid."""
    leaves = [hashlib.sha256(str(i).encode()).digest() for i in range(count)]
    root, paths = uh.merkle_paths(leaves)
    for index, leaf in enumerate(leaves):
        assert uh.merkle_root(leaf, index, count, paths[index]) == root
        if count > 1:
            assert uh.merkle_root(leaf, (index + 1) % count, count, paths[index]) != root
            assert uh.merkle_root(leaf, index, count, paths[index][:-1]) != root
    assert uh.merkle_root(leaves[0], count, count, paths[0]) is None


def test_batch_signature_verifies_each_request_and_refuses_tampering() -> None:
    """Goal: one Ed25519 signature covers a batch, yet each request verifies on
    its own and no header can be changed or moved to another request.
    Method: sign 5 requests as one batch; verify each; then alter a participant,
    swap the batch paths of two requests, and verify with a stranger's key."""
    key = Ed25519PrivateKey.generate()
    signer, verifier = uh.HeaderSigner(key), uh.HeaderVerifier([key.public_key()])
    requests = [(_attested(seq), "POST", "/v1/payments") for seq in range(1, 6)]
    signed = signer.headers_batch(requests)
    assert len({h[uh.SIGNATURE].split(";")[3] for h in signed}) == 1, "one Ed25519 signature for the batch"
    for (attested, method, path), headers in zip(requests, signed):
        assert headers[uh.SIGNATURE].startswith("v2;")
        assert verifier.verify(headers, method, path, BODY) == attested

    forged = dict(signed[1], **{uh.PARTICIPANT: "mfi-b"})
    with pytest.raises(uh.SignatureError):
        verifier.verify(forged, "POST", "/v1/payments", BODY)
    swapped = dict(signed[1], **{uh.SIGNATURE: signed[2][uh.SIGNATURE]})
    with pytest.raises(uh.SignatureError):
        verifier.verify(swapped, "POST", "/v1/payments", BODY)
    with pytest.raises(uh.SignatureError):
        verifier.verify(signed[0], "POST", "/v1/other", BODY)
    with pytest.raises(uh.SignatureError):
        verifier.verify(signed[0], "POST", "/v1/payments", b"another body")
    stranger = uh.HeaderVerifier([Ed25519PrivateKey.generate().public_key()])
    with pytest.raises(uh.SignatureError):
        stranger.verify(signed[0], "POST", "/v1/payments", BODY)
    # A signature that does not verify is never cached as verified.
    bad = signed[3][uh.SIGNATURE].replace("sig=", "sig=AAAA", 1)
    with pytest.raises(uh.SignatureError):
        verifier.verify(dict(signed[3], **{uh.SIGNATURE: bad}), "POST", "/v1/payments", BODY)


def test_single_request_batch_is_v1_and_old_signatures_still_verify() -> None:
    """Goal: services keep accepting the v1 form; a batch of one is v1; stale
    signatures are refused in both forms. Method: sign, verify, verify late."""
    key = Ed25519PrivateKey.generate()
    signer, verifier = uh.HeaderSigner(key), uh.HeaderVerifier([key.public_key()], max_age_seconds=60)
    attested = _attested(7)
    (single,) = signer.headers_batch([(attested, "POST", "/v1/payments")])
    assert single[uh.SIGNATURE].startswith("v1;")
    assert verifier.verify(single, "POST", "/v1/payments", BODY) == attested
    old = signer.headers_batch([(_attested(8), "POST", "/p"), (_attested(9), "POST", "/p")], now=time.time() - 600)
    with pytest.raises(uh.SignatureError, match="max age"):
        verifier.verify(old[0], "POST", "/p", BODY)
