"""Subject Alternative Names from clients: any value is either a normalised SubjectAltNames that cryptography can
put in a certificate, or invalid_request; never another exception, and quickly. Through the HTTP app, any
subjectAltNames body is 201 or 400 invalid_request, never 5xx or 422."""

from __future__ import annotations

import datetime as _dt
import json
import string
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.issued import san_general_names, sans_are
from frontdoor_pki.model import SAN_KINDS, SubjectAltNames
from frontdoor_pki.sans import SANS_MAX, validate_subject_alt_names
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

FAST = 0.05
KEY = ec.generate_private_key(ec.SECP256R1())
ADMIN = "fdk_property_sans_admin_token_0123456789"
TOKENS = "/frontdoor/default/certificate-request-tokens"

# text near each grammar finds the edges; arbitrary Unicode finds the rest
host_like = st.text(alphabet=string.ascii_letters + string.digits + "-.*_ \u00e9\u0131\u212a", max_size=80)
ip_like = st.text(alphabet="0123456789abcdefABCDEF:.%/ \u0663", max_size=50)
uri_like = st.builds(lambda scheme, rest: scheme + rest,
                     st.sampled_from(["", "spiffe:", "spiffe://", "https://", "urn:", "a:", "1a:", "://"]),
                     st.text(alphabet=string.printable + "\u00e9\x00\u2028", max_size=80))
email_like = st.builds(lambda local, at, domain: local + at + domain, st.text(max_size=20), st.sampled_from(["@", "", "@@"]),
                       host_like)
values = st.one_of(st.text(max_size=300), host_like, ip_like, uri_like, email_like,
                   st.integers(1, 5000).map(lambda n: "a" * n), st.sampled_from(["\ud800", "\x00", ",", "a,b.example.com"]))
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
kind_lists = st.one_of(st.lists(values, max_size=6), json_scalars, st.lists(json_scalars, max_size=3),
                       st.integers(95, 105).map(lambda n: ["h%d.example.com" % i for i in range(n)]))
san_bodies = st.one_of(
    st.dictionaries(st.sampled_from(SAN_KINDS), kind_lists, max_size=4),
    st.dictionaries(st.sampled_from(SAN_KINDS) | st.text(max_size=8), kind_lists, max_size=5),
    json_scalars, st.lists(values, max_size=3),
)


@settings(deadline=1000)
@given(san_bodies)
@example({"dns": ["*.example.com"]})
@example({"uri": ["spiffe://example.org/ns/prod/sa/api"], "ip": ["::ffff:10.0.0.1"], "email": ["a@b.example"]})
@example({"dns": ["a." * 126 + "com"]})
@example({"email": ["\u00e9@example.com"]})
@example({"uri": ["http://[::1]:80/x", "a:%", "a:%4", "mailto:a@b.example", "urn:a:b"], "ip": ["::ffff:1.2.3.4"]})
def test_any_san_value_is_normalised_and_encodable_or_invalid_request(data):
    started = time.perf_counter()
    try:
        sans = validate_subject_alt_names(data)
    except FrontdoorError as exc:
        assert exc.code == "invalid_request" and "subjectAltNames" in exc.message, exc
        return
    finally:
        assert time.perf_counter() - started < FAST, "slow on %r" % (data,)
    assert isinstance(sans, SubjectAltNames) and len(sans) <= SANS_MAX
    # normalised: validating again changes nothing, and nothing is there twice
    assert validate_subject_alt_names(sans.to_dict()) == sans
    for kind in SAN_KINDS:
        assert len(set(getattr(sans, kind))) == len(getattr(sans, kind))
    # and cryptography writes every value into a signed certificate (a refusal there would be a 503, not a 400)
    if sans:
        extension = x509.SubjectAlternativeName(san_general_names(sans))
        assert len(list(extension)) == len(sans)
        now = _dt.datetime.now(_dt.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(KEY.public_key())
                .serial_number(1).not_valid_before(now).not_valid_after(now + _dt.timedelta(days=1))
                .add_extension(extension, critical=False).sign(KEY, hashes.SHA256()))
        assert sans_are(x509.load_der_x509_certificate(cert.public_bytes(Encoding.DER)), sans)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from frontdoor_gateway.app import app_factory

    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in __import__("os").environ if k.startswith("FRONTDOOR_")]:
            patch.delenv(name)
        patch.setenv("FRONTDOOR_STATE_DIR", str(tmp_path_factory.mktemp("gw-sans")))
        patch.setenv("FRONTDOOR_ADMIN_TOKEN", ADMIN)
        # every example comes from one address: with limits on, all redemptions after the 30th unknown secret
        # would be 429 and the rest of the run would test nothing else (limits: tests/integration/test_rate_limits_*)
        patch.setenv("FRONTDOOR_RATE_LIMITS", "off")
        app = app_factory()
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@settings(deadline=3000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=san_bodies)
@example(data={"dns": ["ok.example.com"], "ip": ["10.1.2.3"]})
@example(data={"dns": ["\ud800.example.com"], "uri": ["spiffe://x/\ud800"], "email": ["\ud800@example.com"]})
@example(data={"uri": ["spiffe://x/\x00"], "ip": ["\u0663.0.0.1"]})
def test_create_and_patch_with_any_sans_is_201_or_400(client, data):
    headers = {"Authorization": "Bearer " + ADMIN, "Content-Type": "application/json"}
    # json.dumps escapes lone surrogates (\ud800), which a client may send and httpx's own encoder cannot
    body = json.dumps({"name": "prop-sans", "commonName": "x", "subjectAltNames": data})
    created = client.post(TOKENS, content=body, headers=headers)
    assert created.status_code in (201, 400), (created.status_code, created.text[:300], data)
    if created.status_code == 400:
        assert created.json()["error"]["code"] == "invalid_request", created.text
        return
    kept = created.json()["subjectAltNames"]
    assert kept == validate_subject_alt_names(data).to_dict()
    patched = client.patch(TOKENS + "/" + created.json()["id"], content=json.dumps({"subjectAltNames": data}),
                           headers=headers)
    assert patched.status_code == 200 and patched.json()["subjectAltNames"] == kept, patched.text
