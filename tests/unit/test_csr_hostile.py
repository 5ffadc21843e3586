"""Hostile CSRs: whatever ASN.1 a client sends, redeeming answers invalid_csr (a 400), never another
error, and a real token stays redeemable.

The requests are DER written with the tests' own writer (support/odd_der.py: pyasn1/asn1crypto are not
installed and cryptography will not encode most of these), then properly signed with the key they carry, so only the odd
part is odd: a subject value of a non-string type, bad UTF-8, an empty RDN, an unknown or broken
public key, trailing bytes, a truncated body.
"""

from __future__ import annotations

import datetime as _dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, x25519
from cryptography.x509.oid import NameOID
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.csr import csr_subject, load_csr_and_key
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.tokens import new_secret
from support.crypto import make_csr, shared_key
from support.odd_der import pem, signed_request, tlv

CN_OID = b"\x06\x03\x55\x04\x03"
UTF8, PRINTABLE, TELETEX, IA5, BMP, UNIVERSAL = 0x0C, 0x13, 0x14, 0x16, 0x1E, 0x1C


def name(*values: bytes, oid: bytes = CN_OID) -> bytes:
    """A Name of one single-attribute RDN per encoded value."""
    return tlv(0x30, b"".join(tlv(0x31, tlv(0x30, oid + value)) for value in values))


def spki_of(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def csr_der(subject: bytes, spki: bytes = b"", attributes: bytes = b"\xa0\x00") -> bytes:
    """A PKCS#10 request signed with the shared P-256 key (whose key it carries unless ``spki``)."""
    key = shared_key("p256")
    return signed_request(tlv(0x30, b"\x02\x01\x00" + subject + (spki or spki_of(key)) + attributes), key)


def curve_point_off_the_curve() -> bytes:
    algorithm = tlv(0x30, bytes.fromhex("06072a8648ce3d0201") + bytes.fromhex("06082a8648ce3d030107"))
    return tlv(0x30, algorithm + tlv(0x03, b"\x00\x04" + b"\x01" * 64))


def unknown_key_algorithm() -> bytes:
    return tlv(0x30, tlv(0x30, b"\x06\x03\x2a\x03\x04") + tlv(0x03, b"\x00abc"))


def a_certificate_der() -> bytes:
    key = shared_key("p256")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a certificate")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


GOOD = csr_der(name(tlv(UTF8, b"fine")))

# (id, PEM, reason): subject values cryptography cannot turn into the strings we need
ODD_SUBJECTS = [
    ("bit-string", pem(csr_der(name(tlv(0x03, b"\x00abc")))), "bad_subject"),
    ("integer", pem(csr_der(name(tlv(0x02, b"\x05")))), "bad_subject"),
    ("boolean", pem(csr_der(name(b"\x01\x01\xff"))), "bad_subject"),
    ("null", pem(csr_der(name(b"\x05\x00"))), "bad_subject"),
    ("sequence", pem(csr_der(name(tlv(0x30, b"")))), "bad_subject"),
    ("octet-string-not-utf8", pem(csr_der(name(tlv(0x04, b"\xff\xfe")))), "bad_subject"),
    ("general-string", pem(csr_der(name(tlv(0x1B, b"abc")))), "bad_subject"),
    ("bad-utf8", pem(csr_der(name(tlv(UTF8, b"\xff\xfe")))), "bad_subject"),
    ("teletex-8bit", pem(csr_der(name(tlv(TELETEX, b"\xe9t\xe9")))), "bad_subject"),
    ("ia5-8bit", pem(csr_der(name(tlv(IA5, b"\xe9abc")))), "bad_subject"),
    ("empty-rdn", pem(csr_der(tlv(0x30, tlv(0x31, b"")))), "bad_subject"),
    ("odd-bmp", pem(csr_der(name(tlv(BMP, b"\x00a\x00")))), "undecodable"),
    ("odd-universal", pem(csr_der(name(tlv(UNIVERSAL, b"\x00\x00\x00a\x00")))), "undecodable"),
    ("printable-with-@", pem(csr_der(name(tlv(PRINTABLE, b"a@b")))), "undecodable"),
    ("empty-oid", pem(csr_der(name(tlv(UTF8, b"x"), oid=b"\x06\x00"))), "undecodable"),
]

# (id, PEM, reason): everything else a client can get wrong in the envelope or the key
ODD_REQUESTS = [
    ("trailing-byte", pem(GOOD + b"\x00"), "undecodable"),
    ("truncated-der", pem(GOOD[:-10]), "undecodable"),
    ("only-a-sequence-header", pem(b"\x30\x82\xff\xff"), "undecodable"),
    ("bad-base64", "-----BEGIN CERTIFICATE REQUEST-----\n%%%%\n-----END CERTIFICATE REQUEST-----\n", "undecodable"),
    ("certificate-labelled-as-request", pem(a_certificate_der()), "undecodable"),
    ("attributes-not-attributes", pem(csr_der(name(tlv(UTF8, b"x")), attributes=b"\xa0\x03\x02\x01\x05")),
     "undecodable"),
    ("unknown-key-algorithm", pem(csr_der(name(tlv(UTF8, b"x")), spki=unknown_key_algorithm())), "bad_key"),
    ("ec-point-off-the-curve", pem(csr_der(name(tlv(UTF8, b"x")), spki=curve_point_off_the_curve())), "bad_key"),
    ("dsa-key", pem(csr_der(name(tlv(UTF8, b"x")), spki=spki_of(dsa.generate_private_key(2048)))),
     "unsupported_key"),
    ("x25519-key", pem(csr_der(name(tlv(UTF8, b"x")), spki=spki_of(x25519.X25519PrivateKey.generate()))),
     "unsupported_key"),
    ("key-that-did-not-sign", pem(csr_der(name(tlv(UTF8, b"x")), spki=spki_of(shared_key("p256", 1)))),
     "bad_signature"),
    ("lone-surrogate", "-----BEGIN CERTIFICATE REQUEST-----\n\udc80\n-----END CERTIFICATE REQUEST-----\n",
     "undecodable"),
]

CASES = ODD_SUBJECTS + ODD_REQUESTS


def read(value: str):
    """What the service does with a CSR before it looks a token up."""
    csr, _key = load_csr_and_key(value)
    return csr_subject(csr)


@pytest.fixture
def service(tmp_path):
    svc = build_service(load_config(state_dir=str(tmp_path), env={}))
    yield svc
    svc.close()


def test_the_hand_built_request_is_itself_valid():
    """The builder above makes requests that pass, so each case fails only for its odd part."""
    assert read(pem(GOOD)).common_name == "fine"
    assert read(pem(csr_der(name(tlv(PRINTABLE, b"plain"), tlv(UTF8, b"second"))))).common_name == "plain"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("value, reason", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_engine_refuses_with_invalid_csr(value, reason):
    with pytest.raises(FrontdoorError) as info:
        read(value)
    assert (info.value.code, info.value.status, info.value.details["reason"]) == ("invalid_csr", 400, reason)
    assert "Traceback" not in info.value.message


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("value, reason", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_redeem_refuses_before_looking_the_token_up(service, value, reason):
    """A well-formed secret that belongs to no token still gets invalid_csr, not token_not_found
    (and not a 500): the CSR is judged first."""
    with pytest.raises(FrontdoorError) as info:
        service.redeem("default", new_secret(), value)
    assert (info.value.code, info.value.details["reason"]) == ("invalid_csr", reason)


def test_a_real_token_survives_every_hostile_csr(service):
    record, secret = service.create_token("default", name="hostile", common_name="hostile.example")
    for label, value, reason in CASES:
        with pytest.raises(FrontdoorError) as info:
            service.redeem("default", secret, value)
        assert (info.value.code, info.value.details["reason"]) == ("invalid_csr", reason), label
    assert service.get_token("default", record.id).status() == "active"
    assert service.list_certificates("default").total == 0
    result = service.redeem("default", secret, make_csr(shared_key("p256"), cn="x"))
    assert result.replayed is False and result.certificate.subject.common_name == "hostile.example"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_readable_but_unusable_subject_values_are_refused_by_the_rules(service):
    """Values cryptography reads as text but that cannot be a certificate's CN (empty, a NUL inside)
    are refused when the token leaves the CN open, and the token survives."""
    record, secret = service.create_token("default", name="open-cn")
    for value in (tlv(UTF8, b""), tlv(UTF8, b"a\x00b"), tlv(PRINTABLE, b"")):
        with pytest.raises(FrontdoorError) as info:
            service.redeem("default", secret, pem(csr_der(name(value))))
        assert (info.value.code, info.value.details["reason"]) == ("invalid_csr", "bad_subject")
    assert service.get_token("default", record.id).status() == "active"
    assert service.redeem("default", secret, pem(GOOD)).certificate.subject.common_name == "fine"
