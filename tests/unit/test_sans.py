"""Pre-approved SANs: the value rules (sans.py), the model's shape (SubjectAltNames.from_dict/to_dict), and the
check of what a signer returned (issued.sans_are): exactly the token's SANs, none missing, none extra, no other
kind of name; the service hands nothing out otherwise and the token stays redeemable."""

from __future__ import annotations

import datetime as _dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import FrontdoorError
from frontdoor_pki.issued import san_dict, san_general_names, sans_are
from frontdoor_pki.model import NO_SANS, IssuedCertificate, SubjectAltNames
from frontdoor_pki.sans import validate_subject_alt_names
from frontdoor_pki.signers.base import Signer
from support.crypto import make_csr, shared_key

SPIFFE = "spiffe://example.org/ns/prod/sa/api"
CA_KEY = ec.generate_private_key(ec.SECP256R1())

ACCEPTED = {
    "dns": ({"dns": ["API.Example.com", "a-b.c.example"]}, {"dns": ["api.example.com", "a-b.c.example"]}),
    "punycode": ({"dns": ["xn--bcher-kva.example"]}, {"dns": ["xn--bcher-kva.example"]}),
    "ipv4": ({"ip": ["192.0.2.1"]}, {"ip": ["192.0.2.1"]}),
    "ipv6-compressed": ({"ip": ["2001:DB8:0:0:0:0:0:1"]}, {"ip": ["2001:db8::1"]}),
    "spiffe": ({"uri": [SPIFFE]}, {"uri": [SPIFFE]}),
    "uri-scheme-lowered": ({"uri": ["HTTPS://example.com/x?y=1#z"]}, {"uri": ["https://example.com/x?y=1#z"]}),
    "uri-sub-delims-and-escapes": ({"uri": ["spiffe://example.org/a!$&'()*+;=:@%41x?q=1#f"]},
                                   {"uri": ["spiffe://example.org/a!$&'()*+;=:@%41x?q=1#f"]}),
    "urn": ({"uri": ["urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"]},
            {"uri": ["urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"]}),
    "email-domain-lowered": ({"email": ["Ops.Team+x@Example.COM"]}, {"email": ["Ops.Team+x@example.com"]}),
    "null-and-empty-kinds": ({"dns": None, "ip": [], "uri": [SPIFFE]}, {"uri": [SPIFFE]}),
    "none": (None, {}),
    "empty": ({}, {}),
}

REFUSED = {
    "wildcard": {"dns": ["*.example.com"]},
    "single-label": {"dns": ["localhost"]},
    "trailing-dot": {"dns": ["host.example.com."]},
    "double-dot": {"dns": ["a..example.com"]},
    "leading-hyphen": {"dns": ["-a.example.com"]},
    "underscore": {"dns": ["a_b.example.com"]},
    "label-too-long": {"dns": ["a" * 64 + ".example.com"]},
    "name-too-long": {"dns": [("a" * 63 + ".") * 4 + "com"]},
    "unicode-host": {"dns": ["b\u00fccher.example"]},
    "numeric-tld": {"dns": ["10.0.0.1"]},
    "ip-leading-zero": {"ip": ["010.0.0.1"]},
    "ip-zone": {"ip": ["fe80::1%eth0"]},
    "ip-network": {"ip": ["10.0.0.0/8"]},
    "ip-garbage": {"ip": ["not-an-ip"]},
    "ip-v4-mapped": {"ip": ["::ffff:10.0.0.1"]},
    "uri-bad-escape": {"uri": ["spiffe://example.org/%zz"]},
    "uri-brackets": {"uri": ["https://[2001:db8::1]/x"]},
    "uri-relative": {"uri": ["/ns/prod"]},
    "uri-no-scheme": {"uri": ["example.org/x"]},
    "uri-space": {"uri": ["spiffe://example.org/a b"]},
    "uri-unicode": {"uri": ["spiffe://example.org/\u00e9"]},
    "uri-empty-host": {"uri": ["spiffe:///path"]},
    "uri-too-long": {"uri": ["spiffe://example.org/" + "a" * 1100]},
    "email-no-at": {"email": ["ops.example.com"]},
    "email-bad-domain": {"email": ["ops@localhost"]},
    "email-space": {"email": ["o ps@example.com"]},
    "email-double-dot": {"email": ["o..ps@example.com"]},
    "comma": {"dns": ["a.example.com,b.example.com"]},
    "duplicate-after-normalising": {"ip": ["2001:db8::1", "2001:DB8:0::1"]},
    "too-many": {"dns": ["h%d.example.com" % n for n in range(60)], "ip": ["10.0.0.%d" % n for n in range(41)]},
    "unknown-kind": {"dns": ["a.example.com"], "cn": ["x"]},
    "not-a-list": {"dns": "a.example.com"},
    "not-strings": {"ip": [167772161]},
    "not-an-object": ["a.example.com"],
}


@pytest.mark.parametrize("given,kept", ACCEPTED.values(), ids=list(ACCEPTED))
def test_accepted_values_are_normalised(given, kept):
    sans = validate_subject_alt_names(given)
    assert sans.to_dict() == kept
    assert SubjectAltNames.from_dict(sans.to_dict()) == sans  # the stored shape reads back the same value
    assert bool(sans) == bool(kept)


@pytest.mark.parametrize("given", REFUSED.values(), ids=list(REFUSED))
def test_refused_values_are_invalid_request_naming_the_field(given):
    with pytest.raises(FrontdoorError) as info:
        validate_subject_alt_names(given)
    assert info.value.code == "invalid_request" and info.value.status == 400
    assert "subjectAltNames" in info.value.message


def client_cert(public_key, not_after, names=None, subject_cn="cn") -> x509.Certificate:
    """A client certificate with ``names`` (GeneralNames) as its SAN extension (none: no extension)."""
    now = _dt.datetime.now(_dt.timezone.utc)
    builder = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")]))
        .public_key(public_key).serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=1)).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(CA_KEY, hashes.SHA256())


TOKEN = SubjectAltNames(dns=("api.example.com",), ip=("10.0.0.7", "2001:db8::7"), uri=(SPIFFE,),
                        email=("ops@example.com",))
EXACT = san_general_names(TOKEN)
SIGNED = {
    "exact": (EXACT, True),
    "other-order": (list(reversed(EXACT)), True),
    "ipv6-written-long": (EXACT[:2] + [x509.IPAddress(ipaddress.ip_address("2001:db8:0:0:0:0:0:7"))] + EXACT[3:], True),
    "cn-added-as-dns": (EXACT + [x509.DNSName("cn")], False),
    "one-missing": (EXACT[1:], False),
    "one-twice": (EXACT + EXACT[:1], False),
    "csr-uri-added": (EXACT + [x509.UniformResourceIdentifier("spiffe://example.org/ns/prod/sa/admin")], False),
    "other-name-kind": (EXACT + [x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))],
                        False),
    "dns-as-email": ([n if not isinstance(n, x509.DNSName) else x509.RFC822Name(n.value) for n in EXACT], False),
    "no-extension": (None, False),
}


@pytest.mark.parametrize("names,ok", SIGNED.values(), ids=list(SIGNED))
def test_sans_are_exactly_the_tokens(names, ok):
    cert = client_cert(shared_key("p256").public_key(), _dt.datetime.now(_dt.timezone.utc), names)
    assert sans_are(cert, TOKEN) is ok


def test_a_token_without_sans_wants_no_extension_at_all():
    now = _dt.datetime.now(_dt.timezone.utc)
    assert sans_are(client_cert(shared_key("p256").public_key(), now), NO_SANS) is True
    assert sans_are(client_cert(shared_key("p256").public_key(), now, [x509.DNSName("cn")]), NO_SANS) is False


def test_san_dict_reads_a_certificate_back_in_the_api_shape():
    cert = client_cert(shared_key("p256").public_key(), _dt.datetime.now(_dt.timezone.utc), EXACT)
    assert san_dict(cert) == TOKEN.to_dict()
    assert san_dict(client_cert(shared_key("p256").public_key(), _dt.datetime.now(_dt.timezone.utc))) == {}


class _SignerWithSans(Signer):
    """A CA that writes the asked-for subject and the SANs ``names`` gives for the request."""

    kind = "misbehaving"

    def __init__(self, real: Signer, names):
        self.real, self.names = real, names

    def ca_chain(self):
        return self.real.ca_chain()

    def not_after_limit(self):
        return self.real.not_after_limit()

    def sign(self, request):
        cert = client_cert(request.key(), request.not_after, self.names(request), request.subject.common_name)
        return IssuedCertificate(certificate_pem="unused: the service checks the parsed certificate",
                                 ca_chain=self.ca_chain(), serial_number="%x" % cert.serial_number,
                                 not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                                 certificate=cert)


@pytest.fixture
def service(tmp_path):
    svc = build_service(load_config(state_dir=str(tmp_path), env={}))
    yield svc
    svc.close()


BEHAVIOURS = {
    "control": lambda r: san_general_names(r.subject_alt_names),
    "adds-cn": lambda r: san_general_names(r.subject_alt_names) + [x509.DNSName(r.subject.common_name)],
    "drops-one": lambda r: san_general_names(r.subject_alt_names)[1:],
    "none": lambda r: None,
}


@pytest.mark.parametrize("behaviour", BEHAVIOURS.values(), ids=list(BEHAVIOURS))
def test_the_service_hands_out_nothing_when_the_signer_changes_the_sans(service, behaviour):
    real = service.signers["default"]
    service.signers["default"] = _SignerWithSans(real, behaviour)
    record, secret = service.create_token("default", name="sans", common_name="cn", subject_alt_names=TOKEN.to_dict())
    csr = make_csr(shared_key("p256"), cn="x")
    if behaviour is BEHAVIOURS["control"]:  # the double itself is sound
        assert service.redeem("default", secret, csr).certificate.subject_alt_names == TOKEN
        return
    with pytest.raises(FrontdoorError) as info:
        service.redeem("default", secret, csr)
    assert info.value.code == "signer_error" and "subject alternative names" in info.value.message
    assert service.get_token("default", record.id).status() == "active"
    assert service.list_certificates("default").total == 0
    service.signers["default"] = real
    assert service.redeem("default", secret, csr).certificate.subject_alt_names == TOKEN
