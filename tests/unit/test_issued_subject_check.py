"""The issued-certificate subject check: a byte comparison for the local CA's encoding, a field
comparison for any other, and a refusal for anything that is not exactly the decided subject."""

from __future__ import annotations

import datetime as _dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from frontdoor_pki.model import Subject
from frontdoor_pki.service import _subject_is

KEY = ec.generate_private_key(ec.SECP256R1())


def cert_with(attributes):
    now = _dt.datetime.now(_dt.timezone.utc)
    name = x509.Name(attributes)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(KEY.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + _dt.timedelta(days=1))
        .sign(KEY, hashes.SHA256())
    )


def attr(oid, value, kind=None):
    return x509.NameAttribute(oid, value) if kind is None else x509.NameAttribute(oid, value, kind)


ORG, OU, CN = NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME


@pytest.mark.parametrize("attributes, subject, expected", [
    ([attr(ORG, "Org"), attr(OU, "Unit"), attr(CN, "cn")], Subject("cn", "Org", "Unit"), True),
    ([attr(CN, "cn")], Subject("cn", None, None), True),
    # another signer's encoding (PrintableString) or order: compared field by field
    ([attr(ORG, "Org", _ASN1Type.PrintableString), attr(CN, "cn", _ASN1Type.PrintableString)], Subject("cn", "Org", None), True),
    ([attr(CN, "cn"), attr(ORG, "Org")], Subject("cn", "Org", None), True),
    # not the decided subject
    ([attr(ORG, "Org"), attr(CN, "other")], Subject("cn", "Org", None), False),
    ([attr(ORG, "Org"), attr(OU, "Unit"), attr(CN, "cn")], Subject("cn", "Org", None), False),
    ([attr(CN, "cn")], Subject("cn", "Org", None), False),
    ([attr(ORG, "Org", _ASN1Type.PrintableString), attr(CN, "cn")], Subject("cn", "Org", "Unit"), False),
])
def test_subject_is(attributes, subject, expected):
    assert _subject_is(cert_with(attributes), subject) is expected
