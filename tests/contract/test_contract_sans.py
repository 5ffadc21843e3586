"""Pre-approved SANs, the same on every backend (local CA, step-ca, Vault/OpenBao): the real signer writes
exactly the token's SANs whatever the CSR asks, the store reads them back, and a signer made to write other
SANs (the real CA, asked for them by a hook) is caught: nothing handed out or recorded, the token kept."""

from __future__ import annotations

import dataclasses
import ipaddress

from cryptography import x509
from frontdoor_pki.model import SubjectAltNames
from support.crypto import load_cert, make_csr, shared_key
from support.helpers import error_of

SANS = {"dns": ["api.example.com"], "ip": ["10.0.0.7", "2001:db8::7"], "uri": ["spiffe://example.org/ns/prod/sa/api"],
        "email": ["ops@example.com"]}
CSR_SANS = x509.SubjectAlternativeName([
    x509.DNSName("evil.example.net"), x509.IPAddress(ipaddress.ip_address("192.0.2.66")),
    x509.UniformResourceIdentifier("spiffe://example.org/ns/prod/sa/admin"), x509.RFC822Name("root@example.net"),
])


def cert_sans(pem: str) -> dict:
    try:
        names = load_cert(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return {}
    found = {"dns": names.get_values_for_type(x509.DNSName),
             "ip": [ip.compressed for ip in names.get_values_for_type(x509.IPAddress)],
             "uri": names.get_values_for_type(x509.UniformResourceIdentifier),
             "email": names.get_values_for_type(x509.RFC822Name)}
    assert sum(map(len, found.values())) == len(list(names))
    return {kind: sorted(values) for kind, values in found.items() if values}


def test_the_certificate_carries_exactly_the_tokens_sans(backend, service):
    record, secret = service.create_token("default", name="sans", common_name="api.example.com",
                                          subject_alt_names=SANS)
    result = service.redeem("default", secret, make_csr(shared_key("p256", 40), cn="device", extensions=[CSR_SANS]))
    assert cert_sans(result.certificate.certificate_pem) == {k: sorted(v) for k, v in SANS.items()}
    again = backend.new_service()  # another gateway on the same state reads them back
    assert again.get_certificate("default", result.certificate.id).subject_alt_names.to_dict() == SANS
    assert again.get_token("default", record.id).subject_alt_names.to_dict() == SANS
    # the audit log says which SANs were approved and which a certificate got
    lines = [line for line in backend.audit_lines() if line.get("tokenId") == record.id]
    assert [line["subjectAltNames"] for line in lines if line["event"] in ("token.created", "token.redeemed")] == \
        [SANS, SANS]
    # and a token without SANs still gives none, whatever the CSR asks
    _, plain = service.create_token("default", name="plain", common_name="plain.example.com")
    result = service.redeem("default", plain, make_csr(shared_key("p256", 41), cn="device", extensions=[CSR_SANS]))
    assert cert_sans(result.certificate.certificate_pem) == {}


def other_sans(request):
    """``alter`` hook: ask the real CA for one SAN more than the token approved."""
    sans = request.subject_alt_names
    return dataclasses.replace(request, subject_alt_names=SubjectAltNames(
        dns=sans.dns + ("extra.example.com",), ip=sans.ip, uri=sans.uri, email=sans.email))


def test_a_signer_writing_other_sans_is_caught(backend, make_service):
    service = make_service(alter=other_sans)
    record, secret = service.create_token("default", name="sans-extra", common_name="api.example.com",
                                          subject_alt_names=SANS)
    error = error_of(service.redeem, "default", secret, make_csr(shared_key("p256", 42), cn="x"))
    assert error.code == "signer_error" and "subject alternative names" in error.message
    assert service.list_certificates("default").total == 0
    assert service.get_token("default", record.id).status() == "active"
    service.signers["default"].alter = None  # the CA behaves again
    result = service.redeem("default", secret, make_csr(shared_key("p256", 42), cn="x"))
    assert cert_sans(result.certificate.certificate_pem) == {k: sorted(v) for k, v in SANS.items()}
