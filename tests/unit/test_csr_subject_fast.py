"""The CSR subject read from DER (the plain encodings) must equal what cryptography's Name gives,
and anything else must be left to cryptography."""

from __future__ import annotations

import random
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from frontdoor_pki import csr as csrmod
from frontdoor_pki.model import Subject
from support.crypto import shared_key

CN, ORG, OU = NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME
OTHER = [NameOID.COUNTRY_NAME, NameOID.LOCALITY_NAME, NameOID.SERIAL_NUMBER, NameOID.DOMAIN_COMPONENT]


def build(rdns) -> x509.CertificateSigningRequest:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        name = x509.Name([x509.RelativeDistinguishedName(r) for r in rdns])
        return x509.CertificateSigningRequestBuilder().subject_name(name).sign(shared_key("p256"), hashes.SHA256())


def attr(oid, value, kind=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # over-long values are part of the point
        if kind is None:
            return x509.NameAttribute(oid, value, _validate=False)
        return x509.NameAttribute(oid, value, kind, _validate=False)


def reference(csr_or_certificate) -> Subject:
    """What cryptography's Name gives: the first CN, O and OU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        name = csr_or_certificate.subject

        def first(oid):
            found = name.get_attributes_for_oid(oid)
            return found[0].value if found else None

        return Subject(first(CN), first(ORG), first(OU))


def test_the_usual_subjects_take_the_der_path_and_agree():
    for rdns in (
        [[attr(CN, "device-1")]],
        [[attr(ORG, "Example Corp")], [attr(OU, "API")], [attr(CN, "api.example.com")]],
        [[attr(NameOID.COUNTRY_NAME, "DE", _ASN1Type.PrintableString)], [attr(CN, "Grüße ✓ 设备")]],
        [[attr(CN, "first")], [attr(CN, "second")], [attr(ORG, "")]],
        [[attr(CN, "x" * 300)]],  # over-long: decide_subject refuses it, reading it must not
        [[attr(CN, "print'able (+,-./:=?) 09", _ASN1Type.PrintableString)]],
        [],
    ):
        csr = build(rdns)
        plain = csrmod._plain_subject(csr)
        assert plain is not None, rdns
        assert plain == reference(csr) == csrmod.csr_subject(csr)


@pytest.mark.parametrize("rdns", [
    [[attr(CN, "multi"), attr(ORG, "valued")]],  # a multi-valued RDN
    [[attr(CN, "ia5", _ASN1Type.IA5String)]],
    [[attr(NameOID.EMAIL_ADDRESS, "me@example.com")], [attr(CN, "mail")]],  # IA5String, another type
    [[attr(CN, "bmp", _ASN1Type.BMPString)]],
    [[attr(CN, "t61", _ASN1Type.T61String)]],
    [[attr(CN, "universal", _ASN1Type.UniversalString)]],
], ids=["multi-valued", "ia5", "email", "bmp", "t61", "universal"])
def test_other_encodings_are_left_to_cryptography_and_agree(rdns):
    csr = build(rdns)
    assert csrmod._plain_subject(csr) is None
    assert csrmod.csr_subject(csr) == reference(csr)


class RawInfo:
    """Just the request info DER: what _plain_subject reads."""

    def __init__(self, der: bytes):
        self.tbs_certrequest_bytes = der


def test_a_printable_string_with_characters_outside_its_set_is_not_read_as_plain():
    """cryptography refuses such a request at load; the DER path must refuse the value as well."""
    from cryptography.hazmat.primitives import serialization

    csr = build([[attr(CN, "underXscore", _ASN1Type.PrintableString)]])
    assert csrmod._plain_subject(RawInfo(csr.tbs_certrequest_bytes)) == Subject("underXscore")
    bent_info = csr.tbs_certrequest_bytes.replace(b"underXscore", b"under_score")
    assert csrmod._plain_subject(RawInfo(bent_info)) is None
    bent = csr.public_bytes(serialization.Encoding.DER).replace(b"underXscore", b"under_score")
    with pytest.raises(ValueError):
        x509.load_der_x509_csr(bent)


def test_random_plain_subjects_agree():
    rng = random.Random(5)
    alphabet = "abcXYZ019 '()+,-./:=?_@é✓"
    for _ in range(200):
        rdns = []
        for _ in range(rng.randint(0, 6)):
            oid = rng.choice([CN, ORG, OU] + OTHER)
            printable = rng.random() < 0.3
            chars = alphabet[:19] if printable else alphabet
            value = "".join(rng.choice(chars) for _ in range(rng.randint(0, 70)))
            if oid == NameOID.COUNTRY_NAME:
                value, printable = "DE", True
            rdns.append([attr(oid, value, _ASN1Type.PrintableString if printable else _ASN1Type.UTF8String)])
        csr = build(rdns)
        assert csrmod._plain_subject(csr) == reference(csr) == csrmod.csr_subject(csr)


def test_truncated_der_is_refused_by_the_fast_path():
    info = build([[attr(CN, "cut")]]).tbs_certrequest_bytes
    for n in range(len(info)):
        assert csrmod._plain_subject(RawInfo(info[:n])) is None
    assert csrmod._plain_subject(RawInfo(b"")) is None


# -- the same reading for issued certificates (the issued-certificate checks) ---------------------

def certificate(rdns) -> x509.Certificate:
    import datetime as _dt

    key = shared_key("p256")
    now = _dt.datetime(2030, 1, 1, tzinfo=_dt.timezone.utc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        name = x509.Name([x509.RelativeDistinguishedName(r) for r in rdns])
        issuer = x509.Name([x509.NameAttribute(CN, "a long issuer name " * 3)])
        return (
            x509.CertificateBuilder().subject_name(name).issuer_name(issuer).public_key(key.public_key())
            .serial_number(1 << 150).not_valid_before(now).not_valid_after(now + _dt.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )


def test_certificate_subjects_agree_with_cryptography():
    rng = random.Random(9)
    plain_seen = other_seen = 0
    for n in range(150):
        rdns = []
        for _ in range(rng.randint(1, 5)):
            oid = rng.choice([CN, ORG, OU, NameOID.LOCALITY_NAME])
            kind = rng.choice([_ASN1Type.UTF8String, _ASN1Type.PrintableString, _ASN1Type.IA5String])
            value = "".join(rng.choice("abcXYZ09 -.") for _ in range(rng.randint(1, 30)))
            rdns.append([attr(oid, value, kind)])
        if n % 10 == 0:
            rdns.append([attr(CN, "multi"), attr(ORG, "valued")])
        cert = certificate(rdns)
        plain = csrmod._plain_certificate_subject(cert)
        expected = reference(cert)
        if plain is None:
            other_seen += 1
        else:
            plain_seen += 1
            assert plain == expected
        assert csrmod.certificate_subject(cert) == expected
    assert plain_seen > 20 and other_seen > 20  # both paths were exercised
