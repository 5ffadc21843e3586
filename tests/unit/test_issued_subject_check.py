"""The check of what a signer returned: the subject must hold exactly the decided CN, O and OU.

Compared as a multiset of (attribute type, value): RDN order and string type may differ between
signers (Vault writes CN first, as PrintableString where it can), but an extra, duplicated,
missing or different attribute is refused, by ``issued.subject_is`` and by the service, which
then hands nothing out and leaves the token redeemable.
"""

from __future__ import annotations

import datetime as _dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type  # no public way to pick a string type; tests only
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.issued import subject_is
from frontdoor_pki.model import IssuedCertificate, Subject
from frontdoor_pki.signers.base import Signer
from support.crypto import make_csr, shared_key

CA_KEY = ec.generate_private_key(ec.SECP256R1())
ORG, OU, CN, EMAIL = (NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME,
                      NameOID.EMAIL_ADDRESS)


def client_cert(name: x509.Name, public_key, not_after: _dt.datetime) -> x509.Certificate:
    """A client certificate in every way but the subject under test."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(x509.Name([x509.NameAttribute(CN, "test CA")]))
        .public_key(public_key).serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=1)).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(CA_KEY, hashes.SHA256())
    )


def rdns(*attributes) -> x509.Name:
    """One RDN per (oid, value[, string type])."""
    return x509.Name([x509.NameAttribute(*a) for a in attributes])


def cert_with(name: x509.Name) -> x509.Certificate:
    return client_cert(name, shared_key("p256").public_key(), _dt.datetime.now(_dt.timezone.utc))


DECIDED = Subject("cn", "Org", "Unit")

ACCEPTED = {
    "local-ca-order": rdns((ORG, "Org"), (OU, "Unit"), (CN, "cn")),
    "vault-order": rdns((CN, "cn"), (OU, "Unit"), (ORG, "Org")),
    "printable-strings": rdns((ORG, "Org", _ASN1Type.PrintableString), (OU, "Unit", _ASN1Type.PrintableString),
                              (CN, "cn", _ASN1Type.PrintableString)),
    # attributes are compared, not how they are grouped into RDNs
    "one-multi-valued-rdn": x509.Name([x509.RelativeDistinguishedName(
        [x509.NameAttribute(ORG, "Org"), x509.NameAttribute(OU, "Unit"), x509.NameAttribute(CN, "cn")])]),
}

REFUSED = {
    "extra-cn": rdns((ORG, "Org"), (OU, "Unit"), (CN, "cn"), (CN, "admin")),
    "same-cn-twice": rdns((ORG, "Org"), (OU, "Unit"), (CN, "cn"), (CN, "cn")),
    "extra-email": rdns((ORG, "Org"), (OU, "Unit"), (CN, "cn"), (EMAIL, "cn@example.com")),
    "second-ou": rdns((ORG, "Org"), (OU, "Unit"), (OU, "Admins"), (CN, "cn")),
    "extra-country": rdns((NameOID.COUNTRY_NAME, "US"), (ORG, "Org"), (OU, "Unit"), (CN, "cn")),
    "missing-ou": rdns((ORG, "Org"), (CN, "cn")),
    "missing-everything": x509.Name([]),
    "other-cn": rdns((ORG, "Org"), (OU, "Unit"), (CN, "other")),
    "values-swapped": rdns((ORG, "Unit"), (OU, "Org"), (CN, "cn")),
    "case-differs": rdns((ORG, "org"), (OU, "Unit"), (CN, "cn")),
}


@pytest.mark.parametrize("name", ACCEPTED.values(), ids=list(ACCEPTED))
def test_the_decided_attributes_in_any_order_or_encoding_pass(name):
    assert subject_is(cert_with(name), DECIDED) is True


@pytest.mark.parametrize("name", REFUSED.values(), ids=list(REFUSED))
def test_anything_else_is_refused(name):
    assert subject_is(cert_with(name), DECIDED) is False


def test_fields_the_rules_left_empty_must_be_absent():
    assert subject_is(cert_with(rdns((CN, "cn"))), Subject("cn", None, None)) is True
    assert subject_is(cert_with(rdns((ORG, "Org"), (CN, "cn"))), Subject("cn", None, None)) is False
    assert subject_is(cert_with(rdns((CN, "cn"))), Subject("cn", "Org", None)) is False


class _SignerAddingAttributes(Signer):
    """A CA that puts what it was asked for in the subject, plus ``extra`` attributes."""

    kind = "misbehaving"

    def __init__(self, real: Signer, extra):
        self.real, self.extra = real, extra

    def ca_chain(self):
        return self.real.ca_chain()

    def not_after_limit(self):
        return self.real.not_after_limit()

    def sign(self, request):
        asked = [(CN, request.subject.common_name)] + [(ORG, request.subject.organization)] * bool(
            request.subject.organization)
        cert = client_cert(rdns(*asked, *self.extra), request.key(), request.not_after)
        return IssuedCertificate(certificate_pem="unused: the service checks the parsed certificate",
                                 ca_chain=self.ca_chain(), serial_number="%x" % cert.serial_number,
                                 not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                                 certificate=cert)


@pytest.fixture
def service(tmp_path):
    svc = build_service(load_config(state_dir=str(tmp_path), env={}))
    yield svc
    svc.close()


@pytest.mark.parametrize("extra", [[(CN, "admin")], [(EMAIL, "x@example.com")], [(OU, "Admins")], []],
                         ids=["extra-cn", "extra-email", "extra-ou", "control"])
def test_the_service_hands_out_nothing_when_the_signer_adds_attributes(service, extra):
    real = service.signers["default"]
    service.signers["default"] = _SignerAddingAttributes(real, extra)
    record, secret = service.create_token("default", name="extra", common_name="cn", organization="Org")
    csr = make_csr(shared_key("p256"), cn="x")
    if not extra:  # the double itself is sound: with nothing added, its certificate is accepted
        assert service.redeem("default", secret, csr).certificate.subject.as_tuple() == ("cn", "Org", None)
        return
    with pytest.raises(FrontdoorError) as info:
        service.redeem("default", secret, csr)
    assert info.value.code == "signer_error" and "subject differs" in info.value.message
    assert service.get_token("default", record.id).status() == "active"
    assert service.list_certificates("default").total == 0
    service.signers["default"] = real
    assert service.redeem("default", secret, csr).certificate.subject.as_tuple() == ("cn", "Org", None)
