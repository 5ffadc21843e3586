"""Contract: renewal with the current certificate (issue 15, part 2), on every backend.

The JWTs are made the way a client makes them (``renewal_client``, i.e. jwcrypto); the odd ones (wrong
key, wrong audience, too long a life) are real signed JWTs that differ in exactly one respect.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from frontdoor_pki import renewal_client
from frontdoor_pki.model import utcnow
from jwcrypto import jwk, jwt
from support.crypto import load_cert, make_csr, public_key_der, shared_key, subject_values
from support.helpers import error_of

SANS = {"dns": ["renew.example.org"], "uri": ["spiffe://example.org/ns/prod/sa/api"]}


def issued(service, key=None, cn="renew.example.org", sans=SANS, frontdoor_id="default"):
    """A certificate redeemed from a fresh token: (record, key)."""
    key = key or shared_key("p256")
    kwargs = {"subject_alt_names": sans} if sans else {}
    _record, secret = service.create_token(frontdoor_id, name="renew-%s" % uuid.uuid4().hex[:6], common_name=cn,
                                           organization="Example Corp", **kwargs)
    return service.redeem(frontdoor_id, secret, make_csr(key, cn=cn)).certificate, key


def bearer(record, key, frontdoor_id="default", now=None, **claims):
    """A renewal JWT as renewal_client makes it, or with ``claims`` overriding its claims (signed all the same)."""
    certs = [load_cert(record.certificate_pem)]
    if not claims:
        stamp = None if now is None else now.timestamp()
        return "Bearer " + renewal_client.make_renewal_token(certs, key, frontdoor_id, now=stamp)
    now = int((now or utcnow()).timestamp())
    body = {"aud": renewal_client.renewal_path(frontdoor_id), "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex}
    body.update(claims)
    header = {"alg": renewal_client.alg_for(key), "x5c": renewal_client._x5c(certs)}
    token = jwt.JWT(header=header, claims={k: v for k, v in body.items() if v is not None})
    token.make_signed_token(jwk.JWK.from_pyca(key))
    return "Bearer " + token.serialize()


def renew_ok(service, record, key, csr_key=None, frontdoor_id="default"):
    result = service.renew(frontdoor_id, bearer(record, key, frontdoor_id), make_csr(csr_key or key, cn="ignored"))
    assert result.replayed is False
    return result.certificate


def test_renewal_keeps_subject_and_sans_with_a_new_serial(service, backend):
    current, key = issued(service)
    renewed = renew_ok(service, current, key)
    cert = load_cert(renewed.certificate_pem)
    old = load_cert(current.certificate_pem)
    assert renewed.serial_number != current.serial_number and cert.serial_number != old.serial_number
    assert subject_values(cert) == {"CN": ["renew.example.org"], "O": ["Example Corp"], "OU": []}
    assert cert.subject == old.subject
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["renew.example.org"]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/ns/prod/sa/api"]
    assert renewed.subject_alt_names == current.subject_alt_names
    assert public_key_der(cert.public_key()) == public_key_der(old.public_key())  # same key: the CSR's
    # recorded with the link both ways, under the same token and name
    assert renewed.previous_certificate_id == current.id
    assert renewed.token_id == current.token_id and renewed.name == current.name
    assert service.get_certificate("default", current.id).renewed_by == renewed.id
    assert service.get_certificate("default", renewed.id).previous_certificate_id == current.id
    events = [e for e in backend.audit_lines() if e.get("event") == "certificate.renewed"]
    assert [(e["previousCertificateId"], e["certificateId"]) for e in events] == [(current.id, renewed.id)]


def test_renewal_with_a_new_key_and_the_renewed_certificate_renews_next(service):
    current, key = issued(service, key=shared_key("p256", 3))
    new_key = shared_key("p384", 1)
    renewed = renew_ok(service, current, key, csr_key=new_key)
    assert public_key_der(load_cert(renewed.certificate_pem).public_key()) == public_key_der(new_key)
    again = renew_ok(service, renewed, new_key)
    assert again.previous_certificate_id == renewed.id
    assert load_cert(again.certificate_pem).subject == load_cert(current.certificate_pem).subject


def test_missing_or_malformed_authorization_is_invalid_renewal_token(service):
    current, key = issued(service, sans=None)
    csr = make_csr(key, cn="x")
    for header, reason in ((None, "missing"), ("", "missing"), ("Basic abc", "scheme"), ("Bearer a.b", "format"),
                           ("Bearer " + "a" * 40000, "format")):
        error = error_of(service.renew, "default", header, csr)
        assert error.code == "invalid_renewal_token" and error.status == 401
        assert error.details["reason"] == reason


def test_replayed_jwt_is_refused(service):
    current, key = issued(service, sans=None)
    token = bearer(current, key)
    service.renew("default", token, make_csr(key, cn="x"))
    error = error_of(service.renew, "default", token, make_csr(key, cn="x"))
    assert error.code == "renewal_token_replayed" and error.status == 401


def test_jwt_signed_by_another_key_is_refused(service):
    current, key = issued(service, sans=None)
    other = shared_key("p256", 7)
    certs = [load_cert(current.certificate_pem)]
    forged = "Bearer " + renewal_client.make_renewal_token(certs, other, "default")
    error = error_of(service.renew, "default", forged, make_csr(other, cn="x"))
    assert error.code == "invalid_renewal_token" and error.details["reason"] == "signature"
    assert service.get_certificate("default", current.id).renewed_by is None


@pytest.mark.parametrize("claims, reason", [
    ({"aud": "/frontdoor/short/client-certificates/renew"}, "audience"),
    ({"aud": "https://gateway.example/frontdoor/default/client-certificates/renew"}, "audience"),
    ({"aud": None}, "audience"),
    ({"iat": int(utcnow().timestamp()), "exp": int(utcnow().timestamp()) + 301}, "lifetime"),
    ({"iat": int(utcnow().timestamp()) - 600, "exp": int(utcnow().timestamp()) - 400}, "expired"),
    ({"iat": int(utcnow().timestamp()) + 600, "exp": int(utcnow().timestamp()) + 700}, "not_yet_valid"),
    ({"jti": None}, "jti"),
    ({"jti": 42}, "jti"),
    ({"iat": True}, "claims"),
])
def test_claims_are_checked(service, claims, reason):
    current, key = issued(service, sans=None)
    error = error_of(service.renew, "default", bearer(current, key, **claims), make_csr(key, cn="x"))
    assert error.code == "invalid_renewal_token" and error.details["reason"] == reason
    assert error.status == 401


def test_revoked_certificate_is_refused(service, backend):
    if not backend.has("revoke"):
        pytest.skip("this backend's CA cannot revoke")
    current, key = issued(service, sans=None)
    service.revoke_certificate("default", current.id, actor="contract-test")
    error = error_of(service.renew, "default", bearer(current, key), make_csr(key, cn="x"))
    assert error.code == "certificate_revoked" and error.status == 403


def test_expired_certificate_is_refused(service):
    current, key = issued(service, sans=None)
    later = current.not_after + _dt.timedelta(seconds=5)
    service.clock = lambda: later
    error = error_of(service.renew, "default", bearer(current, key, now=later), make_csr(key, cn="x"))
    assert error.code == "certificate_expired" and error.status == 403


def test_certificate_from_another_ca_is_refused(service):
    """Same subject, clientAuth, signed by a CA of its own: not this frontdoor's certificate."""
    current, key = issued(service, sans=None)
    old = load_cert(current.certificate_pem)
    ca_key = shared_key("p256", 9)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "frontdoor.pki intermediate CA for default")])
    now = utcnow()
    forged = (
        x509.CertificateBuilder().subject_name(old.subject).issuer_name(ca_name).public_key(key.public_key())
        .serial_number(old.serial_number).not_valid_before(now - _dt.timedelta(minutes=1))
        .not_valid_after(now + _dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    token = "Bearer " + renewal_client.make_renewal_token([forged], key, "default")
    error = error_of(service.renew, "default", token, make_csr(key, cn="x"))
    assert error.code == "certificate_untrusted" and error.status == 403


def test_certificate_of_another_frontdoor_is_refused(service):
    """Untrusted where each frontdoor has its own issuing CA (local); where frontdoors share one (a Vault
    mount), it chains but this frontdoor has no record of it."""
    current, key = issued(service, sans=None, frontdoor_id="short")
    error = error_of(service.renew, "default", bearer(current, key, "default"), make_csr(key, cn="x"))
    assert error.code in ("certificate_untrusted", "certificate_unknown") and error.status == 403
    assert service.get_certificate("short", current.id).renewed_by is None


def test_one_renewal_per_certificate_and_a_lost_answer_is_recovered(service):
    current, key = issued(service, sans=None)
    renewed = renew_ok(service, current, key)
    # a client that lost the answer: a fresh JWT, the same key -> the same certificate
    again = service.renew("default", bearer(current, key), make_csr(key, cn="x"))
    assert again.replayed is True and again.certificate.id == renewed.id
    # another key -> refused, nothing issued
    error = error_of(service.renew, "default", bearer(current, key), make_csr(shared_key("p256", 5), cn="x"))
    assert error.code == "certificate_already_renewed" and error.details["renewedBy"] == renewed.id
    assert service.list_certificates("default", token_id=current.token_id).total == 2


def _race(n, fn):
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_renewals_with_the_same_jwt_issue_one(make_service, backend):
    services = [make_service() for _ in range(2)]  # two gateways on the same state
    current, key = issued(services[0], sans=None)
    token = bearer(current, key)
    results = _race(6, lambda i: services[i % 2].renew("default", token, make_csr(key, cn="x")))
    wins = [r for r in results if not isinstance(r, Exception)]
    codes = sorted(getattr(r, "code", repr(r)) for r in results if isinstance(r, Exception))
    assert len(wins) == 1 and wins[0].replayed is False, results
    assert set(codes) == {"renewal_token_replayed"}, codes
    assert services[0].list_certificates("default", token_id=current.token_id).total == 2


def test_concurrent_renewals_with_different_jwts_issue_one(make_service):
    services = [make_service() for _ in range(2)]
    current, key = issued(services[0], sans=None)
    tokens = [bearer(current, key) for _ in range(6)]
    keys = [shared_key("p256", 20 + i) for i in range(6)]  # each its own new key: no replay possible
    results = _race(6, lambda i: services[i % 2].renew("default", tokens[i], make_csr(keys[i], cn="x")))
    wins = [r for r in results if not isinstance(r, Exception)]
    codes = {getattr(r, "code", repr(r)) for r in results if isinstance(r, Exception)}
    assert len(wins) == 1, results
    assert codes <= {"renewal_in_progress", "certificate_already_renewed"}, codes
    page = services[0].list_certificates("default", token_id=current.token_id)
    assert page.total == 2
    assert services[0].get_certificate("default", current.id).renewed_by == wins[0].certificate.id


def test_renewal_views_show_the_links(service):
    from frontdoor_pki.views import certificate_view

    current, key = issued(service, sans=None)
    renewed = renew_ok(service, current, key)
    assert certificate_view(service.get_certificate("default", current.id))["renewedBy"] == renewed.id
    view = certificate_view(renewed)
    assert view["previousCertificateId"] == current.id and view["renewedBy"] is None
    json.dumps(view)
