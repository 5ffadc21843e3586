"""The issued-certificate key check: equal SubjectPublicKeyInfo bytes, or else equal key objects
(the same key encoded another way), and a refusal for any other key."""

from __future__ import annotations

import datetime as _dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from frontdoor_pki import der_template
from frontdoor_pki.model import SignRequest, Subject
from frontdoor_pki.service import _key_is
from support.crypto import shared_key

CA = ec.generate_private_key(ec.SECP256R1())


def issued_for(public_key) -> x509.Certificate:
    now = _dt.datetime.now(_dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "cn")])
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public_key)
        .serial_number(7).not_valid_before(now).not_valid_after(now + _dt.timedelta(days=1))
        .sign(CA, hashes.SHA256())
    )


def request_for(public_key, der=None) -> SignRequest:
    now = _dt.datetime.now(_dt.timezone.utc)
    return SignRequest(frontdoor_id="default", csr_pem="", csr=None, subject=Subject("cn"), not_before=now,
                       not_after=now, token_id="t", name="n", public_key=public_key, public_key_der=der)


def with_compressed_point(cert: x509.Certificate) -> x509.Certificate:
    """The same certificate with its EC key written as a compressed point (signature left as is:
    the check reads the key, it does not verify the signature)."""
    tbs = cert.tbs_certificate_bytes
    _tag, start, end = der_template.read_tlv(tbs)
    fields = der_template.children(tbs, start, end)
    spki = fields[6]
    _tag, sstart, send = der_template.read_tlv(spki)
    algorithm = der_template.children(spki, sstart, send)[0]
    point = cert.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    fields[6] = der_template.tlv(0x30, algorithm + der_template.tlv(0x03, b"\x00" + point))
    der = cert.public_bytes(serialization.Encoding.DER)
    _tag, cstart, cend = der_template.read_tlv(der)
    outer = der_template.children(der, cstart, cend)
    return x509.load_der_x509_certificate(der_template.tlv(0x30, der_template.tlv(0x30, b"".join(fields)) + b"".join(outer[1:])))


def test_same_key_same_bytes():
    key = shared_key("p256").public_key()
    assert _key_is(issued_for(key), request_for(key)) is True


def test_same_key_encoded_another_way_is_still_the_same_key():
    key = shared_key("p256").public_key()
    odd = with_compressed_point(issued_for(key))
    assert odd.public_key() == key  # the rebuilt certificate really carries the key, compressed
    assert odd.tbs_certificate_bytes != issued_for(key).tbs_certificate_bytes
    assert _key_is(odd, request_for(key)) is True


def test_another_key_is_refused_whatever_the_request_claims():
    mine, other = shared_key("p256", 0).public_key(), shared_key("p256", 1).public_key()
    assert _key_is(issued_for(other), request_for(mine)) is False
    assert _key_is(with_compressed_point(issued_for(other)), request_for(mine)) is False
    rsa_key = shared_key("rsa2048").public_key()
    assert _key_is(issued_for(rsa_key), request_for(mine)) is False
    assert _key_is(issued_for(rsa_key), request_for(rsa_key)) is True


def test_the_request_der_defaults_to_its_key():
    """Without a DER from the caller, the request encodes its own key (the service passes the DER it
    hashed for the token record, made from the same key object)."""
    mine = shared_key("p256", 0).public_key()
    request = request_for(mine)
    assert request.spki() == mine.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert _key_is(issued_for(mine), request) is True
