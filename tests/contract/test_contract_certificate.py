"""Contract: what a redeemed certificate contains (issue 2, section 4) and which CSRs are refused.

Every assertion reads the real certificate the backend's CA issued.
"""

from __future__ import annotations

import datetime as _dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from frontdoor_pki.model import utcnow
from support.crypto import load_cert, make_csr, public_key_der, shared_key, subject_values, tamper_signature
from support.helpers import error_of

DAY = _dt.timedelta(days=1)
SLACK = _dt.timedelta(minutes=5)


def redeem_ok(service, secret, csr, frontdoor_id="default"):
    result = service.redeem(frontdoor_id, secret, csr)
    assert result.replayed is False
    return result.certificate, load_cert(result.certificate.certificate_pem)


def test_subject_comes_from_token_and_locked_fields_win(service, token):
    record, secret = token(name="api-service-cert", common_name="api.example.com", organization="Example Corp",
                           organizational_unit="API Services")
    csr = make_csr(shared_key("p256"), cn="evil.example.com", o="Evil Corp", ou="Evil Unit")
    cert_record, cert = redeem_ok(service, secret, csr)
    assert subject_values(cert) == {"CN": ["api.example.com"], "O": ["Example Corp"], "OU": ["API Services"]}
    assert {a.oid for a in cert.subject} == {NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME,
                                             NameOID.ORGANIZATIONAL_UNIT_NAME}
    assert cert_record.subject.as_tuple() == ("api.example.com", "Example Corp", "API Services")
    assert cert_record.token_id == record.id
    assert cert_record.name == "api-service-cert"


def test_unlocked_fields_come_from_the_csr(service, token):
    _, secret = token(common_name="locked-cn")
    _, cert = redeem_ok(service, secret, make_csr(shared_key("p256"), cn="csr-cn", o="CSR Org", ou="CSR Unit"))
    assert subject_values(cert) == {"CN": ["locked-cn"], "O": ["CSR Org"], "OU": ["CSR Unit"]}

    _, secret = token()  # nothing locked: everything from the CSR
    _, cert = redeem_ok(service, secret, make_csr(shared_key("p256"), cn="from-csr", ou="Only OU"))
    assert subject_values(cert) == {"CN": ["from-csr"], "O": [], "OU": ["Only OU"]}


def test_csr_subject_attributes_beyond_cn_o_ou_are_not_copied(service, token):
    _, secret = token(common_name="clean")
    key = shared_key("p256")
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "evil@example.com"),
        x509.NameAttribute(NameOID.COMMON_NAME, "evil"),
    ])).sign(key, hashes.SHA256())
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    _, cert = redeem_ok(service, secret, pem)
    assert [(a.oid, a.value) for a in cert.subject] == [(NameOID.COMMON_NAME, "clean")]


def test_missing_common_name_is_invalid_csr_and_keeps_the_token(service, token):
    _, secret = token(organization="Org Only")
    error = error_of(service.redeem, "default", secret, make_csr(shared_key("p256"), o="CSR Org"))
    assert error.code == "invalid_csr"
    assert error.details["reason"] == "missing_common_name"
    assert "CN" in error.message
    _, cert = redeem_ok(service, secret, make_csr(shared_key("p256"), cn="now-with-cn"))
    assert subject_values(cert)["CN"] == ["now-with-cn"]
    assert subject_values(cert)["O"] == ["Org Only"]


def test_certificate_profile(service, token):
    _, secret = token(common_name="profile")
    key = shared_key("p256")
    csr = make_csr(key, cn="profile")
    record, cert = redeem_ok(service, secret, csr)
    # public key from the CSR
    assert public_key_der(cert.public_key()) == public_key_der(key)
    ext = cert.extensions
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    basic = ext.get_extension_for_class(x509.BasicConstraints)
    assert basic.value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature is True
    assert usage.key_encipherment is False  # EC key: no key transport
    assert usage.key_cert_sign is False and usage.crl_sign is False
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    # chain: issued by ca_chain[0], which chains to a self-signed root
    chain = [load_cert(pem) for pem in record.ca_chain]
    assert chain, "the record carries the CA chain"
    cert.verify_directly_issued_by(chain[0])
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    issuer_ski = chain[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == issuer_ski.digest
    for child, parent in zip(chain, chain[1:]):
        child.verify_directly_issued_by(parent)
    assert chain[-1].subject == chain[-1].issuer
    assert service.ca_chain("default") == record.ca_chain
    # record mirrors the certificate
    assert int(record.serial_number, 16) == cert.serial_number
    assert record.not_after == cert.not_valid_after_utc
    assert record.not_before == cert.not_valid_before_utc
    assert record.certificate_pem.strip() == cert.public_bytes(serialization.Encoding.PEM).decode().strip()


def test_rsa_key_gets_key_encipherment(service, token):
    _, secret = token(common_name="rsa-client")
    key = shared_key("rsa2048")
    _, cert = redeem_ok(service, secret, make_csr(key, cn="x"))
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature is True and usage.key_encipherment is True


def test_serials_are_random_and_distinct(service, token):
    serials = []
    for slot in range(3):
        _, secret = token(common_name="serial-%d" % slot)
        record, cert = redeem_ok(service, secret, make_csr(shared_key("p256", slot), cn="x"))
        serials.append(cert.serial_number)
    assert len(set(serials)) == 3
    # >= 64 random bits (CA/B forum); a sequential counter would be tiny
    assert all(serial.bit_length() > 63 for serial in serials)


def test_validity_defaults_to_365_days(service, token):
    _, secret = token(common_name="validity")
    before = utcnow()
    _, cert = redeem_ok(service, secret, make_csr(shared_key("p256"), cn="x"))
    after = utcnow()
    assert cert.not_valid_before_utc <= before + _dt.timedelta(seconds=1)
    assert cert.not_valid_before_utc >= before - SLACK
    assert before + 365 * DAY - SLACK <= cert.not_valid_after_utc <= after + 365 * DAY + SLACK


def test_per_token_certificate_ttl(service, token):
    _, secret = token(common_name="short-lived", certificate_ttl="7d")
    now = utcnow()
    _, cert = redeem_ok(service, secret, make_csr(shared_key("p256"), cn="x"))
    assert abs(cert.not_valid_after_utc - (now + 7 * DAY)) < SLACK


def test_certificate_ttl_bounded_by_frontdoor(service, token):
    # frontdoor "short" has certificateTtl 30d: its default, and the most a token may ask for
    error = error_of(service.create_token, "short", name="too-long", certificate_ttl="31d")
    assert error.code == "invalid_request"
    assert "certificateTtl" in error.message
    _, secret = token("short", common_name="bounded")
    now = utcnow()
    _, cert = redeem_ok(service, secret, make_csr(shared_key("p256"), cn="x"), frontdoor_id="short")
    assert abs(cert.not_valid_after_utc - (now + 30 * DAY)) < SLACK


def test_csr_sans_and_extensions_are_not_copied(service, token):
    _, secret = token(common_name="no-sans")
    custom_oid = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.1")
    csr = make_csr(
        shared_key("p256"), cn="evil.example.com", sans=["evil.example.com", "admin.example.com", "10.0.0.1"],
        extensions=[
            x509.BasicConstraints(ca=True, path_length=None),
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CODE_SIGNING]),
            x509.UnrecognizedExtension(custom_oid, b"\x05\x00"),
        ],
    )
    _, cert = redeem_ok(service, secret, csr)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    oids = {e.oid for e in cert.extensions}
    assert custom_oid not in oids
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = []
    values = {str(getattr(name, "value", name)) for name in sans}
    assert not values & {"evil.example.com", "admin.example.com", "10.0.0.1"}


@pytest.mark.parametrize("kind", ["rsa2048", "p256", "p384", "ed25519"])
def test_allowed_keys(service, token, kind):
    _, secret = token(common_name="key-" + kind)
    key = shared_key(kind)
    _, cert = redeem_ok(service, secret, make_csr(key, cn="x"))
    assert public_key_der(cert.public_key()) == public_key_der(key)


@pytest.mark.parametrize("kind", ["rsa1024", "p521", "secp256k1", "ed448"])
def test_refused_keys_leave_the_token_redeemable(service, token, kind):
    _, secret = token(common_name="weak-" + kind)
    error = error_of(service.redeem, "default", secret, make_csr(shared_key(kind), cn="x"))
    assert error.code == "invalid_csr"
    assert "refused" in error.message and "P-256" in error.message  # says what is allowed
    redeem_ok(service, secret, make_csr(shared_key("p256"), cn="x"))


def test_bad_csr_signature_refused_and_token_still_redeemable(service, token):
    _, secret = token(common_name="pop")
    good = make_csr(shared_key("p256"), cn="x")
    error = error_of(service.redeem, "default", secret, tamper_signature(good))
    assert error.code == "invalid_csr"
    assert error.details["reason"] == "bad_signature"
    redeem_ok(service, secret, good)


@pytest.mark.parametrize(
    "csr_type, value, code",
    [
        ("SPKAC", None, "invalid_request"),
        ("csr", None, "invalid_request"),
        ("CSR", "hello", "invalid_csr"),
        ("CSR", "", "invalid_csr"),
        ("CSR", None, "invalid_csr"),
        ("CSR", 12345, "invalid_csr"),
        ("CSR", "-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgY3Ny\n-----END CERTIFICATE REQUEST-----\n",
         "invalid_csr"),
        ("CSR", "-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * (70 * 1024) + "\n-----END CERTIFICATE REQUEST-----\n",
         "payload_too_large"),
    ],
    ids=["type-spkac", "type-lowercase", "garbage", "empty", "none", "number", "bad-base64-body", "too-large"],
)
def test_bad_requests_refused_and_token_still_redeemable(service, token, csr_type, value, code):
    _, secret = token(common_name="garbage")
    good = make_csr(shared_key("p256"), cn="x")
    if value is None and csr_type != "CSR":
        value = good  # a good PEM with the wrong type
    error = error_of(service.redeem, "default", secret, value, csr_type)
    assert error.code == code
    assert "Traceback" not in error.message
    redeem_ok(service, secret, good)


@pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")
def test_csr_subject_limits_when_the_token_leaves_fields_open(service, token):
    _, secret = token()
    for csr in (make_csr(shared_key("p256"), cn="x" * 65), make_csr(shared_key("p256"), cn="bad\x01cn"),
                make_csr(shared_key("p256"), cn="ok", o="o" * 65)):
        error = error_of(service.redeem, "default", secret, csr)
        assert error.code == "invalid_csr"
    _, cert = redeem_ok(service, secret, make_csr(shared_key("p256"), cn="c" * 64))
    assert subject_values(cert)["CN"] == ["c" * 64]
