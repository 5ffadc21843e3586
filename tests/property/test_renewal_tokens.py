"""Renewal: whatever a client puts in the Authorization header (any text, a real JWT with hostile claims,
a real JWT with a segment replaced, a header of any JSON) the answer is a FrontdoorError with a 4xx status
and the certificate is not renewed; never another exception, never a 5xx, and quickly."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from frontdoor_pki import renewal_client
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.model import utcnow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwcrypto import jwk, jwt
from support.crypto import load_cert, make_csr, shared_key

FAST = 0.5  # seconds one refusal may take on a loaded machine (a signature check and a chain validation)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
claim_names = st.sampled_from(["aud", "iat", "exp", "nbf", "jti", "sub", "iss"])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


@pytest.fixture(scope="module")
def current(service):
    key = shared_key("p256", 11)
    _record, secret = service.create_token("default", name="prop-renew", common_name="prop.example.org")
    record = service.redeem("default", secret, make_csr(key, cn="prop.example.org")).certificate
    return record, key, make_csr(key, cn="x")


def refused(service, current, authorization):
    record, _key, csr = current
    started = time.perf_counter()
    with pytest.raises(FrontdoorError) as info:
        service.renew("default", authorization, csr)
    assert 400 <= info.value.status < 500, info.value
    assert time.perf_counter() - started < FAST
    assert service.get_certificate("default", record.id).renewed_by is None
    return info.value


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=300), st.text(max_size=300).map(lambda t: "Bearer " + t)))
def test_any_header_text_is_refused(service, current, header):
    refused(service, current, header)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(claim_names, json_values, max_size=5))
def test_hostile_claims_in_a_validly_signed_jwt_are_refused(service, current, overrides):
    """Signed by the right key with the right certificate: only the claims are hostile. The one combination
    that is valid (every claim right) cannot be drawn, since aud is either missing or replaced."""
    record, key, _csr = current
    now = int(utcnow().timestamp())
    claims = {"iat": now, "exp": now + 60, "jti": uuid.uuid4().hex}
    claims.update(overrides)
    if claims.get("aud") == renewal_client.renewal_path("default"):
        claims["aud"] = "/elsewhere"
    header = {"alg": "ES256", "x5c": renewal_client._x5c([load_cert(record.certificate_pem)])}
    token = jwt.JWT(header=header, claims=claims)
    token.make_signed_token(jwk.JWK.from_pyca(key))
    refused(service, current, "Bearer " + token.serialize())


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2), st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_a_replaced_segment_is_refused(service, current, index, data):
    record, key, _csr = current
    token = renewal_client.make_renewal_token([load_cert(record.certificate_pem)], key, "default")
    parts = token.split(".")
    parts[index] = b64url(data) or "A"
    refused(service, current, "Bearer " + ".".join(parts))


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["alg", "x5c", "typ", "crit", "b64", "jwk", "kid", "zip", "enc"]),
                       json_values, max_size=5),
       st.sampled_from(["ES256", "none", "HS256", "RS256", "EdDSA", None]))
def test_hostile_headers_are_refused(service, current, header, alg):
    """Headers of any JSON, with the real certificate's x5c unless replaced, over a valid payload."""
    record, _key, _csr = current
    full = {"x5c": renewal_client._x5c([load_cert(record.certificate_pem)])}
    if alg is not None:
        full["alg"] = alg
    full.update(header)
    now = int(utcnow().timestamp())
    payload = {"aud": renewal_client.renewal_path("default"), "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex}
    token = ".".join((b64url(json.dumps(full).encode()), b64url(json.dumps(payload).encode()), b64url(b"\x01" * 64)))
    refused(service, current, "Bearer " + token)


def test_alg_none_and_hmac_with_the_public_key_are_refused(service, current):
    """The classic JWT attacks, made with the library: alg none, and HS256 keyed with the certificate's public
    key bytes (a verifier that picks the algorithm from the token would accept it)."""
    record, _key, _csr = current
    cert = load_cert(record.certificate_pem)
    x5c = renewal_client._x5c([cert])
    now = int(utcnow().timestamp())
    claims = {"aud": renewal_client.renewal_path("default"), "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex}
    none = ".".join((b64url(json.dumps({"alg": "none", "x5c": x5c}).encode()), b64url(json.dumps(claims).encode()),
                     ""))
    error = refused(service, current, "Bearer " + none)
    assert error.code == "invalid_renewal_token"
    from cryptography.hazmat.primitives import serialization

    secret = cert.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    token = jwt.JWT(header={"alg": "HS256", "x5c": x5c}, claims=claims)
    token.make_signed_token(jwk.JWK(kty="oct", k=b64url(secret)))
    error = refused(service, current, "Bearer " + token.serialize())
    assert error.code == "invalid_renewal_token" and error.details["reason"] == "alg"


@settings(deadline=None)
@given(st.text(max_size=400), st.sampled_from(["nginx", "envoy"]))
def test_any_proxy_header_value_is_a_certificate_or_invalid_renewal_token(value, kind):
    """What a proxy header may hold (the gateway believes it only from a configured proxy, but reads it all the
    same): a certificate, or invalid_renewal_token; never another exception."""
    from frontdoor_pki.renewal import certificate_from_proxy_header

    try:
        certificate_from_proxy_header(value, kind)
    except FrontdoorError as exc:
        assert exc.code == "invalid_renewal_token" and exc.details["reason"] == "proxy_header"
